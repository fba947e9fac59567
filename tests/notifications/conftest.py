"""Fixtures for the notifications tests: users with addresses, devices, providers at a local server."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from django.test import override_settings
from pytest_httpserver import HTTPServer

from core.models import User
from notifications.models import PushDevice


@pytest.fixture
def recipient(db: Any) -> User:
    return User.objects.create_user(
        username="recipient", email="ada@example.com", phone_number="+14155552671", first_name="Ada"
    )


@pytest.fixture
def device(recipient: User) -> PushDevice:
    return PushDevice.objects.create(user=recipient, token="fcm-token-1", platform=PushDevice.Platform.ANDROID)


@pytest.fixture
def twilio(httpserver: HTTPServer) -> Iterator[HTTPServer]:
    with override_settings(
        SMS_PROVIDER="twilio",
        TWILIO_BASE_URL=httpserver.url_for("/"),
        TWILIO_ACCOUNT_SID="AC123",
        TWILIO_AUTH_TOKEN="secret-token",
        TWILIO_FROM_NUMBER="+15005550006",
        TWILIO_MESSAGING_SERVICE_SID="",
        SMS_TIMEOUT_SECONDS=2,
    ):
        yield httpserver


TWILIO_PATH = "/2010-04-01/Accounts/AC123/Messages.json"


@pytest.fixture
def msg91(httpserver: HTTPServer) -> Iterator[HTTPServer]:
    with override_settings(
        SMS_PROVIDER="msg91",
        MSG91_BASE_URL=httpserver.url_for("/"),
        MSG91_AUTH_KEY="msg91-key",
        MSG91_SENDER_ID="MKTPLC",
        MSG91_ROUTE="4",
        MSG91_DLT_TE_ID="",
        SMS_TIMEOUT_SECONDS=2,
    ):
        yield httpserver


@pytest.fixture
def fcm(httpserver: HTTPServer) -> Iterator[HTTPServer]:
    with override_settings(
        PUSH_PROVIDER="fcm",
        FCM_BASE_URL=httpserver.url_for("/"),
        FCM_PROJECT_ID="demo-project",
        FCM_ACCESS_TOKEN="fcm-access-token",
        PUSH_TIMEOUT_SECONDS=2,
    ):
        yield httpserver


FCM_PATH = "/v1/projects/demo-project/messages:send"


class RecordingHandler:
    def __init__(self) -> None:
        self.envelopes: list[Any] = []
        self.reply = "250 OK"
        self.sessions = 0

    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        self.sessions += 1
        session.host_name = hostname
        return responses

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.reply.startswith("250"):
            self.envelopes.append(envelope)
        return self.reply


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def smtp_server() -> Iterator[RecordingHandler]:
    handler = RecordingHandler()
    port = _free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        with override_settings(
            EMAIL_BACKEND="django.core.mail.backends.smtp.EmailBackend",
            EMAIL_HOST="127.0.0.1",
            EMAIL_PORT=port,
            EMAIL_USE_TLS=False,
            EMAIL_USE_SSL=False,
            EMAIL_HOST_USER="",
            EMAIL_HOST_PASSWORD="",
            EMAIL_TIMEOUT=2,
        ):
            yield handler
    finally:
        controller.stop()
