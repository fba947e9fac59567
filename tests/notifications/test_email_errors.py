"""Email errors: which ones the deliver task retries (transient) and which fail the row (permanent)."""

from __future__ import annotations

import json
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


# Batches ------------------------------------------------------------------------------------

BATCH = [
    OutboundMessage(
        channel="email", to=f"user{n}@example.com", subject=f"Summary {n}", body=f"Body {n}", reference=f"r:{n}"
    )
    for n in range(3)
]


def test_a_sendgrid_batch_is_one_api_call_with_a_personalization_per_message(httpserver: HTTPServer) -> None:
    # Given SendGrid at a local server
    httpserver.expect_request("/v3/mail/send", method="POST").respond_with_data("", status=202)
    anymail = {"SENDGRID_API_KEY": "SG.k", "SENDGRID_API_URL": httpserver.url_for("/v3/")}
    # When three different messages go out as one batch
    with override_settings(EMAIL_BACKEND="anymail.backends.sendgrid.EmailBackend", ANYMAIL=anymail):
        outcomes = get_provider("email").send_many(BATCH)  # type: ignore[attr-defined]
    # Then one request carried them, each recipient with its own subject, body and reference
    assert len(httpserver.log) == 1
    payload = json.loads(httpserver.log[0][0].data)
    assert payload["subject"] == ":notification_subject"
    assert payload["content"] == [{"type": "text/plain", "value": ":notification_body"}]
    personalizations = payload["personalizations"]
    assert [p["to"] for p in personalizations] == [[{"email": m.to}] for m in BATCH]
    assert [p["substitutions"] for p in personalizations] == [
        {":notification_subject": m.subject, ":notification_body": m.body} for m in BATCH
    ]
    assert [p["headers"]["X-Notification-Reference"] for p in personalizations] == ["r:0", "r:1", "r:2"]
    # And each message has its own id
    assert all(isinstance(o, str) and o for o in outcomes) and len(set(outcomes)) == 3


def test_two_messages_to_one_address_in_a_sendgrid_batch_go_in_two_calls(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/v3/mail/send", method="POST").respond_with_data("", status=202)
    anymail = {"SENDGRID_API_KEY": "SG.k", "SENDGRID_API_URL": httpserver.url_for("/v3/")}
    twice = [*BATCH, OutboundMessage(channel="email", to="USER0@example.com", subject="Again", body="2nd")]
    with override_settings(EMAIL_BACKEND="anymail.backends.sendgrid.EmailBackend", ANYMAIL=anymail):
        outcomes = get_provider("email").send_many(twice)  # type: ignore[attr-defined]
    assert len(httpserver.log) == 2
    second = json.loads(httpserver.log[1][0].data)["personalizations"]
    assert [p["substitutions"][":notification_body"] for p in second] == ["2nd"]
    assert all(isinstance(o, str) for o in outcomes)


def test_a_sendgrid_outage_fails_every_message_of_the_batch_as_transient(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/v3/mail/send").respond_with_json({"errors": [{"message": "down"}]}, status=503)
    anymail = {"SENDGRID_API_KEY": "SG.k", "SENDGRID_API_URL": httpserver.url_for("/v3/")}
    with override_settings(EMAIL_BACKEND="anymail.backends.sendgrid.EmailBackend", ANYMAIL=anymail):
        outcomes = get_provider("email").send_many(BATCH)  # type: ignore[attr-defined]
    assert [type(o) for o in outcomes] == [TransientProviderError] * 3


def test_an_ses_batch_with_a_stored_template_is_one_bulk_call_mapped_back_per_message(ses: HTTPServer) -> None:
    ses.expect_request("/v2/email/outbound-bulk-emails", method="POST").respond_with_json(
        {
            "BulkEmailEntryResults": [
                {"Status": "SUCCESS", "MessageId": "ses-a"},
                {"Status": "MESSAGE_REJECTED", "Error": "Email address is not verified."},
                {"Status": "SUCCESS", "MessageId": "ses-c"},
            ]
        }
    )
    with override_settings(NOTIFICATIONS_SES_TEMPLATE="notification"):
        outcomes = get_provider("email").send_many(BATCH)  # type: ignore[attr-defined]
    assert len(ses.log) == 1
    payload = json.loads(ses.log[0][0].data)
    assert payload["DefaultContent"]["Template"]["TemplateName"] == "notification"
    assert [
        json.loads(e["ReplacementEmailContent"]["ReplacementTemplate"]["ReplacementTemplateData"])
        for e in payload["BulkEmailEntries"]
    ] == [{"subject": m.subject, "body": m.body} for m in BATCH]
    assert outcomes[0] == "ses-a" and outcomes[2] == "ses-c"
    assert isinstance(outcomes[1], PermanentProviderError)


def test_without_a_stored_template_ses_sends_a_batch_one_call_per_message(ses: HTTPServer) -> None:
    ses.expect_request(SES_PATH, method="POST").respond_with_json({"MessageId": "ses-1"})
    outcomes = get_provider("email").send_many(BATCH)  # type: ignore[attr-defined]
    assert outcomes == ["ses-1"] * 3
    assert len(ses.log) == 3
