"""Email errors: which ones the deliver task retries (transient) and which fail the row (permanent)."""

from __future__ import annotations

import smtplib
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, ReadTimeoutError
from django.test import override_settings
from pytest_httpserver import HTTPServer

from notifications.exceptions import PermanentProviderError, TransientProviderError
from notifications.providers import OutboundMessage, get_provider
from notifications.providers.emails import classify_email_error

MESSAGE = OutboundMessage(channel="email", to="ada@example.com", subject="s", body="b", reference="pf:1:email")
SES_PATH = "/v2/email/outbound-emails"


def _ses(endpoint_url: str) -> Any:
    return override_settings(
        EMAIL_BACKEND="anymail.backends.amazon_ses.EmailBackend",
        ANYMAIL={
            "AMAZON_SES_CLIENT_PARAMS": {
                "endpoint_url": endpoint_url,
                "region_name": "us-east-1",
                "aws_access_key_id": "AKIDTEST",
                "aws_secret_access_key": "secret",
                "config": {"connect_timeout": 1, "read_timeout": 1, "retries": {"total_max_attempts": 1}},
            }
        },
    )


@pytest.fixture
def ses(httpserver: HTTPServer) -> Iterator[HTTPServer]:
    with _ses(httpserver.url_for("/")):
        yield httpserver


def test_ses_sends_through_the_local_endpoint_and_returns_the_message_id(ses: HTTPServer) -> None:
    ses.expect_request(SES_PATH, method="POST").respond_with_json({"MessageId": "ses-1"})
    assert get_provider("email").send(MESSAGE) == "ses-1"


@pytest.mark.parametrize(
    ("status", "code", "error"),
    [
        (503, "ServiceUnavailable", TransientProviderError),
        (500, "InternalFailure", TransientProviderError),
        (400, "ThrottlingException", TransientProviderError),
        (429, "TooManyRequestsException", TransientProviderError),
        (400, "MessageRejected", PermanentProviderError),
    ],
)
def test_ses_5xx_and_throttling_are_retried_and_rejections_are_not(
    ses: HTTPServer, status: int, code: str, error: type[Exception]
) -> None:
    # Given SES answering with an error (the code in the header, as AWS's REST-JSON APIs do)
    ses.expect_request(SES_PATH).respond_with_json(
        {"message": "no"}, status=status, headers={"x-amzn-ErrorType": f"{code}:http://internal.amazon.com/"}
    )
    # Then the provider raises the right kind
    with pytest.raises(error):
        get_provider("email").send(MESSAGE)


def test_ses_unreachable_is_transient() -> None:
    with _ses("http://127.0.0.1:9"), pytest.raises(TransientProviderError):
        get_provider("email").send(MESSAGE)


def _anymail_wrapping(cause: Exception) -> Exception:
    from anymail.exceptions import AnymailAPIError

    try:
        raise AnymailAPIError(str(cause)) from cause
    except AnymailAPIError as exc:
        return exc


@pytest.mark.parametrize(
    ("cause", "error"),
    [
        (EndpointConnectionError(endpoint_url="https://email.us-east-1.amazonaws.com"), TransientProviderError),
        (ReadTimeoutError(endpoint_url="https://email.us-east-1.amazonaws.com"), TransientProviderError),
        (
            ClientError({"Error": {"Code": "Throttling"}, "ResponseMetadata": {"HTTPStatusCode": 400}}, "SendEmail"),
            TransientProviderError,
        ),
        (
            ClientError({"Error": {"Code": "Whatever"}, "ResponseMetadata": {"HTTPStatusCode": 502}}, "SendEmail"),
            TransientProviderError,
        ),
        (
            ClientError(
                {"Error": {"Code": "AccountSendingPausedException"}, "ResponseMetadata": {"HTTPStatusCode": 400}},
                "SendEmail",
            ),
            PermanentProviderError,
        ),
        (ValueError("anymail's own payload error"), PermanentProviderError),
    ],
)
def test_an_anymail_api_error_is_classified_by_the_boto_error_it_wraps(cause: Exception, error: type) -> None:
    assert isinstance(classify_email_error(_anymail_wrapping(cause)), error)


@pytest.mark.parametrize(
    ("exc", "error"),
    [
        (smtplib.SMTPServerDisconnected("gone"), TransientProviderError),
        (smtplib.SMTPConnectError(421, b"busy"), TransientProviderError),
        (smtplib.SMTPDataError(451, b"later"), TransientProviderError),
        (smtplib.SMTPDataError(554, b"rejected"), PermanentProviderError),
        (smtplib.SMTPNotSupportedError("SMTPUTF8 not supported"), PermanentProviderError),
        (smtplib.SMTPAuthenticationError(535, b"bad credentials"), PermanentProviderError),
        (smtplib.SMTPException("something else"), PermanentProviderError),
        (ConnectionRefusedError(111, "refused"), TransientProviderError),
        (TimeoutError("timed out"), TransientProviderError),
    ],
)
def test_smtp_errors_are_classified_before_the_network_errors_they_subclass(exc: Exception, error: type) -> None:
    assert isinstance(classify_email_error(exc), error)
