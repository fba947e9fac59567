"""Each provider against a local server: the exact request it makes and how it reads the answer."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from django.test import override_settings
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from notifications.exceptions import InvalidAddress, PermanentProviderError, TransientProviderError
from notifications.providers import OutboundMessage, get_provider
from notifications.providers.console import ConsoleProvider
from tests.notifications.conftest import FCM_PATH, TWILIO_PATH, RecordingHandler

pytestmark = pytest.mark.filterwarnings("ignore::anymail.exceptions.AnymailNotSupportedWarning")

SMS = OutboundMessage(channel="sms", to="+14155552671", body="Order AB12 has shipped.", reference="shipped:1:sms")


def test_twilio_posts_the_form_with_basic_auth_and_returns_the_message_sid(twilio: HTTPServer) -> None:
    twilio.expect_request(
        TWILIO_PATH,
        method="POST",
        data="To=%2B14155552671&Body=Order+AB12+has+shipped.&From=%2B15005550006",
        headers={"Authorization": "Basic " + base64.b64encode(b"AC123:secret-token").decode()},
    ).respond_with_json({"sid": "SM42"}, status=201)

    assert get_provider("sms").send(SMS) == "SM42"
    twilio.check_assertions()
    assert len(twilio.log) == 1


def test_twilio_uses_the_messaging_service_when_one_is_set(twilio: HTTPServer) -> None:
    twilio.expect_request(TWILIO_PATH, method="POST").respond_with_json({"sid": "SM43"}, status=201)
    with override_settings(TWILIO_MESSAGING_SERVICE_SID="MG9"):
        get_provider("sms").send(SMS)
    form = twilio.log[0][0].form
    assert form.to_dict() == {"To": "+14155552671", "Body": "Order AB12 has shipped.", "MessagingServiceSid": "MG9"}


def test_twilio_invalid_number_is_a_permanent_invalid_address(twilio: HTTPServer) -> None:
    twilio.expect_request(TWILIO_PATH).respond_with_json(
        {"code": 21211, "message": "The 'To' number +1415 is not a valid phone number."}, status=400
    )
    with pytest.raises(InvalidAddress, match="Twilio error 21211"):
        get_provider("sms").send(SMS)


def test_msg91_posts_json_with_the_authkey_and_returns_the_request_id(msg91: HTTPServer) -> None:
    msg91.expect_request(
        "/api/v2/sendsms",
        method="POST",
        json={
            "sender": "MKTPLC",
            "route": "4",
            "country": "0",
            "unicode": 1,
            "sms": [{"message": "Order AB12 has shipped.", "to": ["14155552671"]}],
        },
        headers={"authkey": "msg91-key"},
    ).respond_with_json({"message": "3763646c3058313530393438", "type": "success"})

    assert get_provider("sms").send(SMS) == "3763646c3058313530393438"
    msg91.check_assertions()


def test_msg91_error_in_a_200_body_is_permanent(msg91: HTTPServer) -> None:
    msg91.expect_request("/api/v2/sendsms").respond_with_json({"message": "Invalid mobile number", "type": "error"})
    with pytest.raises(PermanentProviderError, match="MSG91 error: Invalid mobile number"):
        get_provider("sms").send(SMS)


def test_fcm_posts_the_v1_message_with_the_bearer_token_and_returns_its_name(fcm: HTTPServer) -> None:
    fcm.expect_request(
        FCM_PATH,
        method="POST",
        json={
            "message": {
                "token": "fcm-token-1",
                "notification": {"title": "New trip offer", "body": "Trip to North: 3 units."},
                "data": {"stock_request_id": "7"},
                "android": {"collapse_key": "offer:1:push:3"},
                "apns": {"headers": {"apns-collapse-id": "offer:1:push:3"}},
            }
        },
        headers={"Authorization": "Bearer fcm-access-token"},
    ).respond_with_json({"name": "projects/demo-project/messages/0:1500415314455276%31bd1c9631bd1c96"})

    message = OutboundMessage(
        channel="push",
        to="fcm-token-1",
        subject="New trip offer",
        body="Trip to North: 3 units.",
        data={"stock_request_id": "7"},
        reference="offer:1:push:3",
    )
    assert get_provider("push").send(message).startswith("projects/demo-project/messages/")
    fcm.check_assertions()


@pytest.mark.parametrize(
    ("status", "headers", "retry_after"),
    [(500, {}, None), (503, {"Retry-After": "12"}, 12.0), (429, {"Retry-After": "3"}, 3.0)],
)
def test_http_5xx_and_429_are_transient_with_the_providers_retry_after(
    fcm: HTTPServer, status: int, headers: dict[str, str], retry_after: float | None
) -> None:
    fcm.expect_request(FCM_PATH).respond_with_data("{}", status=status, headers=headers)
    with pytest.raises(TransientProviderError) as caught:
        get_provider("push").send(OutboundMessage(channel="push", to="t", subject="s", body="b"))
    assert caught.value.retry_after == retry_after


def test_an_fcm_401_drops_the_cached_access_token_and_is_retried(fcm: HTTPServer, settings: Any) -> None:
    # Given a minted access token cached in Redis that FCM no longer accepts
    from core.redis import get_redis
    from notifications.providers.push import _TOKEN_CACHE_KEY

    settings.FCM_ACCESS_TOKEN = ""
    settings.FCM_SERVICE_ACCOUNT_FILE = "/nonexistent/only-read-when-no-token-is-cached.json"
    get_redis().set(_TOKEN_CACHE_KEY, "revoked-token", ex=3300)
    fcm.expect_request(FCM_PATH, headers={"Authorization": "Bearer revoked-token"}).respond_with_json(
        {"error": {"code": 401, "status": "UNAUTHENTICATED", "message": "Request had invalid credentials."}},
        status=401,
    )
    # When a push is sent
    with pytest.raises(TransientProviderError, match="401"):
        get_provider("push").send(OutboundMessage(channel="push", to="t", subject="s", body="b"))
    # Then the cached token is gone, so the retry mints a fresh one
    assert get_redis().get(_TOKEN_CACHE_KEY) is None


def test_an_fcm_sender_id_mismatch_is_a_dead_token(fcm: HTTPServer) -> None:
    fcm.expect_request(FCM_PATH).respond_with_json(
        {
            "error": {
                "code": 403,
                "status": "PERMISSION_DENIED",
                "message": "SenderId mismatch",
                "details": [
                    {"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": "SENDER_ID_MISMATCH"}
                ],
            }
        },
        status=403,
    )
    with pytest.raises(PermanentProviderError) as caught:
        get_provider("push").send(OutboundMessage(channel="push", to="t", subject="s", body="b"))
    assert caught.value.deactivate_device is True


def test_a_provider_that_does_not_answer_in_time_is_a_transient_timeout(twilio: HTTPServer) -> None:
    import threading

    release = threading.Event()

    def slow(request: Request) -> Response:
        release.wait(timeout=5)
        return Response("{}", status=201)

    twilio.expect_request(TWILIO_PATH).respond_with_handler(slow)
    try:
        with override_settings(SMS_TIMEOUT_SECONDS=0.3), pytest.raises(TransientProviderError, match="timeout"):
            get_provider("sms").send(SMS)
    finally:
        release.set()


def test_a_provider_that_refuses_connections_is_transient() -> None:
    with (
        override_settings(SMS_PROVIDER="twilio", TWILIO_BASE_URL="http://127.0.0.1:9", TWILIO_ACCOUNT_SID="AC1"),
        pytest.raises(TransientProviderError, match="connection error"),
    ):
        get_provider("sms").send(SMS)


def test_smtp_delivers_to_the_server_with_subject_body_and_reference(smtp_server: RecordingHandler) -> None:
    message = OutboundMessage(
        channel="email", to="ada@example.com", subject="Order AB12 confirmed", body="Thank you.", reference="oc:1:email"
    )
    message_id = get_provider("email").send(message)

    assert len(smtp_server.envelopes) == 1
    envelope = smtp_server.envelopes[0]
    assert envelope.mail_from == "noreply@example.com"
    assert envelope.rcpt_tos == ["ada@example.com"]
    content = envelope.content.decode()
    assert "Subject: Order AB12 confirmed" in content
    assert "X-Notification-Reference: oc:1:email" in content
    assert "Thank you." in content
    assert message_id.startswith("<")  # the Message-ID Django generated


def test_smtp_4xx_is_transient_and_5xx_permanent(smtp_server: RecordingHandler) -> None:
    message = OutboundMessage(channel="email", to="ada@example.com", subject="s", body="b")
    smtp_server.reply = "451 Try again later"
    with pytest.raises(TransientProviderError):
        get_provider("email").send(message)
    smtp_server.reply = "554 Transaction failed"
    with pytest.raises(PermanentProviderError):
        get_provider("email").send(message)


def test_smtp_server_down_is_transient(db: Any) -> None:
    with (
        override_settings(
            EMAIL_BACKEND="django.core.mail.backends.smtp.EmailBackend",
            EMAIL_HOST="127.0.0.1",
            EMAIL_PORT=9,
            EMAIL_TIMEOUT=1,
        ),
        pytest.raises(TransientProviderError),
    ):
        get_provider("email").send(OutboundMessage(channel="email", to="a@example.com", subject="s", body="b"))


def test_sendgrid_through_anymail_posts_the_v3_mail_send_request(httpserver: HTTPServer) -> None:
    httpserver.expect_request(
        "/v3/mail/send", method="POST", headers={"Authorization": "Bearer SG.test-key"}
    ).respond_with_data("", status=202, headers={"X-Message-Id": "sg-msg-1"})
    anymail = {"SENDGRID_API_KEY": "SG.test-key", "SENDGRID_API_URL": httpserver.url_for("/v3/")}
    message = OutboundMessage(
        channel="email", to="ada@example.com", subject="Payment failed", body="Sorry.", reference="pf:1:email"
    )
    with override_settings(EMAIL_BACKEND="anymail.backends.sendgrid.EmailBackend", ANYMAIL=anymail):
        message_id = get_provider("email").send(message)

    httpserver.check_assertions()
    payload = json.loads(httpserver.log[0][0].data)
    assert payload["from"] == {"email": "noreply@example.com"}
    assert payload["subject"] == "Payment failed"
    assert payload["content"] == [{"type": "text/plain", "value": "Sorry."}]
    assert payload["personalizations"][0]["to"] == [{"email": "ada@example.com"}]
    assert payload["headers"]["X-Notification-Reference"] == "pf:1:email"
    assert message_id  # anymail's own id, stored as the provider message id


@pytest.mark.parametrize(("status", "error"), [(500, TransientProviderError), (400, PermanentProviderError)])
def test_sendgrid_5xx_is_transient_and_4xx_permanent(httpserver: HTTPServer, status: int, error: type) -> None:
    httpserver.expect_request("/v3/mail/send").respond_with_json({"errors": [{"message": "nope"}]}, status=status)
    anymail = {"SENDGRID_API_KEY": "SG.k", "SENDGRID_API_URL": httpserver.url_for("/v3/")}
    with (
        override_settings(EMAIL_BACKEND="anymail.backends.sendgrid.EmailBackend", ANYMAIL=anymail),
        pytest.raises(error),
    ):
        get_provider("email").send(OutboundMessage(channel="email", to="a@example.com", subject="s", body="b"))


def test_console_providers_log_the_message_instead_of_sending_it(caplog: Any) -> None:
    with override_settings(SMS_PROVIDER="console"), caplog.at_level("INFO", logger="notifications.console"):
        provider = get_provider("sms")
        message_id = provider.send(SMS)
    assert isinstance(provider, ConsoleProvider)
    assert message_id.startswith("console-")
    assert "Order AB12 has shipped." in caplog.text


def test_an_smtp_batch_goes_over_one_connection_one_message_each(smtp_server: RecordingHandler) -> None:
    batch = [OutboundMessage(channel="email", to=f"u{n}@example.com", subject=f"S{n}", body=f"B{n}") for n in range(3)]
    outcomes = get_provider("email").send_many(batch)  # type: ignore[attr-defined]
    assert [e.rcpt_tos for e in smtp_server.envelopes] == [[m.to] for m in batch]
    assert smtp_server.sessions == 1
    assert all(isinstance(o, str) and o.startswith("<") for o in outcomes)
