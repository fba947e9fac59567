"""Delivery: retries of transient errors only, the dead-letter state, and one send per row."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import pytest
import time_machine
from django.contrib.admin.sites import site
from django.db import connection
from django.test import RequestFactory
from django.utils import timezone
from pytest_httpserver import HTTPServer

from core.models import User
from notifications.admin import NotificationAdmin
from notifications.models import Notification, PushDevice
from notifications.services import notification_deliver, notify
from notifications.services.delivery import RetryLater
from notifications.tasks import deliver
from tests.notifications.conftest import FCM_PATH, TWILIO_PATH

pytestmark = pytest.mark.django_db

TWILIO_OK = {"sid": "SM0001", "status": "queued"}


def _sms(to: str = "+14155552671", key: str = "sms:1") -> Notification:
    return notify(template="raw_sms", to=to, context={"body": "Your code is 1234"}, channels=["sms"], dedupe_key=key)[0]


def _sms_requests(server: HTTPServer) -> list[Any]:
    return [req for req, _ in server.log if req.path == TWILIO_PATH]


def test_a_provider_answering_500_twice_then_200_is_called_three_times_and_the_message_ends_sent(
    twilio: HTTPServer, settings: Any
) -> None:
    # Eager retries run at once, so the backoff is 0 (a countdown not yet due is not claimed)
    settings.NOTIFICATIONS_RETRY_BACKOFF_SECONDS = 0
    # Given Twilio failing twice with a 500 and then accepting
    twilio.expect_oneshot_request(TWILIO_PATH, method="POST").respond_with_data("boom", status=500)
    twilio.expect_oneshot_request(TWILIO_PATH, method="POST").respond_with_data("boom", status=500)
    twilio.expect_request(TWILIO_PATH, method="POST").respond_with_json(TWILIO_OK, status=201)
    row = _sms()
    # When the delivery task runs with its retries
    deliver.apply(args=(row.pk,))
    # Then Twilio was called three times and the row is sent with Twilio's id
    row.refresh_from_db()
    assert len(_sms_requests(twilio)) == 3
    assert (row.status, row.attempts, row.provider, row.provider_message_id) == ("sent", 3, "twilio", "SM0001")
    assert row.sent_at is not None
    assert row.last_error == ""


def test_a_429_with_retry_after_puts_the_row_back_and_retries_no_sooner_than_the_provider_asked(
    twilio: HTTPServer,
) -> None:
    # Given Twilio answering 429 with Retry-After: 7
    twilio.expect_request(TWILIO_PATH, method="POST").respond_with_data(
        "slow down", status=429, headers={"Retry-After": "7"}
    )
    row = _sms()
    before = timezone.now()
    # When delivered with a backoff of 1 second due
    with pytest.raises(RetryLater) as caught:
        notification_deliver(notification_id=row.pk, retry_countdown=1)
    # Then the retry waits for 7 seconds, the row is pending again with the error and the planned time
    assert caught.value.countdown == 7
    row.refresh_from_db()
    assert row.status == Notification.Status.PENDING
    assert "HTTP 429" in row.last_error
    assert before + timedelta(seconds=7) <= row.next_attempt_at <= timezone.now() + timedelta(seconds=7)


def test_retry_after_longer_than_ten_minutes_is_capped_at_ten_minutes_and_the_row_says_so(
    twilio: HTTPServer,
) -> None:
    twilio.expect_request(TWILIO_PATH).respond_with_data("", status=503, headers={"Retry-After": "3600"})
    row = _sms()
    with pytest.raises(RetryLater) as caught:
        notification_deliver(notification_id=row.pk, retry_countdown=30)
    assert caught.value.countdown == 600
    row.refresh_from_db()
    assert "the provider asked to wait 3600s; retrying after 600s" in row.last_error


def test_a_duplicate_message_arriving_before_the_planned_retry_does_not_send(twilio: HTTPServer) -> None:
    # Given a row put back after a 429 asking for 60 seconds
    twilio.expect_oneshot_request(TWILIO_PATH).respond_with_data("", status=429, headers={"Retry-After": "60"})
    twilio.expect_request(TWILIO_PATH).respond_with_json(TWILIO_OK, status=201)
    row = _sms()
    with pytest.raises(RetryLater):
        notification_deliver(notification_id=row.pk, retry_countdown=1)
    # When a second copy of its message is delivered 10 seconds later
    with time_machine.travel(timezone.now() + timedelta(seconds=10)):
        early = notification_deliver(notification_id=row.pk, retry_countdown=1)
    # Then it does nothing; and the retry at the planned time sends it
    assert early == {"notification_id": row.pk, "outcome": "not_due", "status": "pending"}
    assert len(_sms_requests(twilio)) == 1
    with time_machine.travel(timezone.now() + timedelta(seconds=60)):
        assert notification_deliver(notification_id=row.pk, retry_countdown=1)["outcome"] == "sent"
    assert len(_sms_requests(twilio)) == 2


def test_the_task_countdown_follows_the_policy_declared_on_the_task(settings: Any) -> None:
    # Given the declared policy: base NOTIFICATIONS_RETRY_BACKOFF_SECONDS, jitter, retry_backoff_max, 3 retries
    settings.NOTIFICATIONS_RETRY_BACKOFF_SECONDS = 1000
    from notifications.tasks import _next_countdown

    task: Any = deliver
    task.push_request(retries=2)
    try:
        countdowns = {_next_countdown(task) for _ in range(50)}
        # Then a retry waits at most retry_backoff_max, jittered below it
        assert max(countdowns) <= deliver.retry_backoff_max == 600  # type: ignore[attr-defined]
        assert len(countdowns) > 1
    finally:
        task.pop_request()
    task.push_request(retries=deliver.max_retries)
    try:
        assert _next_countdown(task) is None
    finally:
        task.pop_request()


def test_an_error_after_the_claim_is_recorded_instead_of_leaving_the_row_sending(
    twilio: HTTPServer, settings: Any
) -> None:
    # Given an SMS provider name that does not exist (a settings mistake)
    settings.SMS_PROVIDER = "nope"
    row = _sms()
    # When delivered
    summary = notification_deliver(notification_id=row.pk, retry_countdown=1)
    # Then the row is failed with the reason, not stuck in sending
    row.refresh_from_db()
    assert summary["outcome"] == "failed"
    assert (row.status, row.last_error) == (
        "failed",
        "not configured: SMS_PROVIDER='nope'; use one of twilio, msg91, console",
    )


def test_a_redis_error_while_waiting_for_a_rate_slot_releases_the_row_for_a_retry(
    twilio: HTTPServer, settings: Any
) -> None:
    # Given the rate limiter's Redis refusing connections
    settings.NOTIFICATIONS_RATE_LIMITS = {"sms": "10/s"}
    settings.REDIS_URL = "redis://127.0.0.1:9/5"
    row = _sms()
    # When delivered
    with pytest.raises(RetryLater):
        notification_deliver(notification_id=row.pk, retry_countdown=5)
    # Then the row is pending with the error and a planned retry, and nothing was sent
    row.refresh_from_db()
    assert row.status == "pending"
    assert "Connection" in row.last_error or "connect" in row.last_error
    assert row.next_attempt_at is not None
    assert _sms_requests(twilio) == []


@pytest.mark.django_db(transaction=True)
def test_a_slow_worker_cannot_overwrite_the_state_of_a_second_claim(twilio: HTTPServer) -> None:
    # Given a worker that claimed a row and is slow at Twilio, while recovery gave the row to a
    # second worker that claimed it again and is sending it now
    row = _sms()
    second_claim = timezone.now() + timedelta(minutes=6)

    def twilio_slow(request: Any) -> Any:
        from werkzeug import Response

        try:
            Notification.objects.filter(pk=row.pk).update(status="sending", claimed_at=second_claim, attempts=2)
        finally:
            connection.close()
        return Response('{"sid": "SM-first"}', status=201, content_type="application/json")

    twilio.expect_request(TWILIO_PATH).respond_with_handler(twilio_slow)
    # When the first worker's send returns
    notification_deliver(notification_id=row.pk, retry_countdown=1)
    # Then the row is still the second worker's to record
    row.refresh_from_db()
    assert (row.status, row.provider_message_id, row.claimed_at) == ("sending", "", second_claim)


def test_a_400_is_not_retried_and_the_row_fails_with_the_providers_reason(twilio: HTTPServer) -> None:
    # Given Twilio refusing the request for good
    twilio.expect_request(TWILIO_PATH, method="POST").respond_with_json(
        {"code": 21606, "message": "The From phone number is not a valid, SMS-capable number"}, status=400
    )
    row = _sms()
    # When delivered
    deliver.apply(args=(row.pk,))
    # Then it was tried once and failed with the reason
    row.refresh_from_db()
    assert len(_sms_requests(twilio)) == 1
    assert row.status == Notification.Status.FAILED
    assert row.attempts == 1
    assert "Twilio error 21606" in row.last_error


def test_after_the_retries_are_spent_the_row_is_failed_and_the_api_retry_sends_it(
    twilio: HTTPServer, staff_client: Any, django_capture_on_commit_callbacks: Any, settings: Any
) -> None:
    settings.NOTIFICATIONS_RETRY_BACKOFF_SECONDS = 0  # eager retries run at once
    # Given Twilio down for the first try and all three retries
    for _ in range(4):
        twilio.expect_oneshot_request(TWILIO_PATH).respond_with_data("down", status=502)
    row = _sms()
    deliver.apply(args=(row.pk,))
    row.refresh_from_db()
    # Then it was called 1 + 3 times and the row is the dead letter with its error
    assert len(_sms_requests(twilio)) == 4
    assert row.status == Notification.Status.FAILED
    assert row.last_error.startswith("gave up after 4 attempts: HTTP 502")
    # When Twilio is back and staff retries it through the API
    twilio.expect_request(TWILIO_PATH).respond_with_json(TWILIO_OK, status=201)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = staff_client.post(f"/api/v1/admin/notifications/{row.pk}/retry/")
    assert response.status_code == 202
    assert response.json()["status"] == "pending"
    assert len(callbacks) == 1
    deliver.apply(args=(row.pk,))  # what the enqueued message runs
    # Then it is sent
    row.refresh_from_db()
    assert (row.status, row.provider_message_id) == ("sent", "SM0001")
    assert len(_sms_requests(twilio)) == 5


def test_the_admin_retry_action_sends_failed_rows_and_leaves_others_alone(
    twilio: HTTPServer, staff_user: User, django_capture_on_commit_callbacks: Any
) -> None:
    # Given a failed row and a sent one
    failed = _sms(key="a")
    Notification.objects.filter(pk=failed.pk).update(status="failed", last_error="gave up")
    sent = _sms(key="b")
    Notification.objects.filter(pk=sent.pk).update(status="sent")
    twilio.expect_request(TWILIO_PATH).respond_with_json(TWILIO_OK, status=201)
    # When staff selects both and uses the Retry action
    request = RequestFactory().post("/admin/notifications/notification/")
    request.user = staff_user
    request._messages = _Messages()  # type: ignore[attr-defined]
    admin = NotificationAdmin(Notification, site)
    with django_capture_on_commit_callbacks(execute=False):
        admin.retry(request, Notification.objects.filter(pk__in=[failed.pk, sent.pk]))
    # Then only the failed row is queued again, and its delivery sends it
    assert Notification.objects.get(pk=failed.pk).status == "pending"
    assert Notification.objects.get(pk=sent.pk).status == "sent"
    assert request._messages.texts == [  # type: ignore[attr-defined]
        "1 notification queued again.",
        "1 was not failed and was left alone.",
    ]
    deliver.apply(args=(failed.pk,))
    assert Notification.objects.get(pk=failed.pk).status == "sent"


def test_retry_api_answers_404_409_401_and_403_without_changing_anything(
    staff_client: Any, customer_client: Any, anon_client: Any
) -> None:
    row = _sms()
    assert staff_client.post("/api/v1/admin/notifications/999999/retry/").status_code == 404
    response = staff_client.post(f"/api/v1/admin/notifications/{row.pk}/retry/")
    assert response.status_code == 409
    assert response.json()["detail"] == "Only failed notifications can be retried; this one is pending."
    assert anon_client.post(f"/api/v1/admin/notifications/{row.pk}/retry/").status_code == 401
    assert customer_client.post(f"/api/v1/admin/notifications/{row.pk}/retry/").status_code == 403
    assert Notification.objects.get(pk=row.pk).status == "pending"


def test_an_unregistered_fcm_token_fails_at_once_and_deactivates_the_device(
    fcm: HTTPServer, device: PushDevice
) -> None:
    # Given FCM saying the token is unregistered
    fcm.expect_request(FCM_PATH, method="POST").respond_with_json(
        {
            "error": {
                "code": 404,
                "message": "Requested entity was not found.",
                "status": "NOT_FOUND",
                "details": [
                    {"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": "UNREGISTERED"}
                ],
            }
        },
        status=404,
    )
    row = notify(
        template="raw_push",
        user=device.user,
        context={"title": "Hi", "body": "there"},
        channels=["push"],
        dedupe_key="p",
    )[0]
    # When delivered
    deliver.apply(args=(row.pk,))
    # Then one call, the row failed, the device inactive with the reason
    row.refresh_from_db()
    device.refresh_from_db()
    assert len(fcm.log) == 1
    assert row.status == "failed"
    assert "UNREGISTERED" in row.last_error
    assert device.active is False
    assert "no longer valid" in device.deactivated_reason


def test_a_template_that_does_not_render_fails_without_calling_the_provider(twilio: HTTPServer) -> None:
    from notifications.models import NotificationTemplate

    row = _sms()
    NotificationTemplate.objects.filter(key="raw_sms", channel="sms").update(body="{% if %}")
    deliver.apply(args=(row.pk,))
    row.refresh_from_db()
    assert row.status == "failed"
    assert "does not render" in row.last_error
    assert twilio.log == []


def test_a_row_that_is_not_pending_is_not_sent_again(twilio: HTTPServer) -> None:
    row = _sms()
    Notification.objects.filter(pk=row.pk).update(status="sent")
    assert notification_deliver(notification_id=row.pk, retry_countdown=1) == {
        "notification_id": row.pk,
        "outcome": "skipped",
        "status": "sent",
    }
    assert notification_deliver(notification_id=987654, retry_countdown=1)["outcome"] == "not_found"
    assert twilio.log == []


@pytest.mark.django_db(transaction=True)
def test_two_workers_delivering_the_same_row_at_once_send_it_once(twilio: HTTPServer) -> None:
    # Given one pending row and a Twilio that accepts
    twilio.expect_request(TWILIO_PATH).respond_with_json(TWILIO_OK, status=201)
    row = _sms()
    barrier = threading.Barrier(4)
    outcomes: list[str] = []

    def worker() -> None:
        try:
            barrier.wait(timeout=5)
            outcomes.append(notification_deliver(notification_id=row.pk, retry_countdown=1)["outcome"])
        finally:
            connection.close()

    # When four workers deliver it at the same moment
    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=20)
    # Then exactly one sent it and Twilio saw one request
    assert sorted(outcomes) == ["sent", "skipped", "skipped", "skipped"]
    assert len(_sms_requests(twilio)) == 1
    assert Notification.objects.get(pk=row.pk).attempts == 1


class _Messages:
    def __init__(self) -> None:
        self.texts: list[str] = []

    def add(self, level: int, message: str, extra_tags: str = "") -> None:
        self.texts.append(str(message))
