"""An operator retries a dead letter from the admin and a real worker delivers it (Twilio at a local server)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from notifications.models import Notification
from notifications.services import notification_templates_install_defaults, notify
from tests.browser.conftest import AdminBrowser
from tests.e2e.conftest import wait_for

pytestmark = [pytest.mark.browser, pytest.mark.e2e]

TWILIO_PATH = "/2010-04-01/Accounts/AC123/Messages.json"


def _twilio_env(server: HTTPServer) -> dict[str, str]:
    return {
        "SMS_PROVIDER": "twilio",
        "TWILIO_BASE_URL": server.url_for("/"),
        "TWILIO_ACCOUNT_SID": "AC123",
        "TWILIO_AUTH_TOKEN": "secret-token",
        "TWILIO_FROM_NUMBER": "+15005550006",
    }


def test_a_dead_letter_retried_from_the_admin_is_delivered(
    signed_in: AdminBrowser, start_worker: Callable[..., Any], httpserver: HTTPServer
) -> None:
    # Given Twilio refusing our credentials (a permanent error: no automatic retry), then accepting once they are fixed
    notification_templates_install_defaults()
    calls: list[dict[str, str]] = []

    def twilio(request: Request) -> Response:
        calls.append(request.form.to_dict())
        if len(calls) == 1:
            body = '{"code": 20003, "message": "Authenticate"}'
            return Response(body, status=401, content_type="application/json")
        return Response('{"sid": "SM42"}', status=201, content_type="application/json")

    httpserver.expect_request(TWILIO_PATH).respond_with_handler(twilio)
    worker = start_worker(queues="notifications,notifications_retry", **_twilio_env(httpserver))
    row = notify(
        template="raw_sms", to="+14155552671", context={"body": "Order AB12 shipped."}, channels=["sms"], dedupe_key="b"
    )[0]
    wait_for(
        lambda: Notification.objects.filter(pk=row.pk, status="failed").exists(),
        timeout=60,
        message=f"the SMS to fail on Twilio's 401; worker log {worker.log}",
    )

    # When the operator opens the dead letters, they see the row with Twilio's reason
    admin = signed_in
    admin.open("/admin/notifications/deadletter/")
    dead = admin.row("+14155552671", "#result_list tbody tr")
    assert "Twilio error 20003: Authenticate" in dead.text
    admin.shot("dead-letters")
    # And they tick it and run the Retry action
    dead.find_element("css selector", "input[name=_selected_action]").click()
    admin.select("action", "Retry selected failed notifications")
    admin.click_and_wait(admin.find("button[name=index]"))

    # Then the admin says it was queued again, and the worker delivers it through Twilio
    assert "1 notification queued again." in admin.messages()
    sent = wait_for(
        lambda: Notification.objects.filter(pk=row.pk, status="sent").first(),
        timeout=60,
        message=f"the retried SMS to be sent; worker log {worker.log}",
    )
    assert sent.provider_message_id == "SM42"
    assert [c["Body"] for c in calls] == ["Order AB12 shipped."] * 2
    # And it has left the dead letters and shows as sent in the notification list
    admin.open("/admin/notifications/deadletter/")
    assert "+14155552671" not in admin.text("#content")
    admin.open(f"/admin/notifications/notification/?id={row.pk}")
    assert "Sent" in admin.row("+14155552671", "#result_list tbody tr").text
