"""Delivery in batches: one claim, concurrent sends, one write per outcome kind, per-row retries and dead letters."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import pytest
import time_machine
from django.contrib.admin.sites import site
from django.db import connection
from django.test import RequestFactory
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from core.models import OutboxIntent, User
from notifications.admin import NotificationAdmin
from notifications.models import Notification, PushDevice
from notifications.services import RetryPolicy, notifications_deliver_batch, notify
from notifications.services.outbox import REDELIVER_TASK
from notifications.tasks import deliver, deliver_batch, delivery_policy
from tests.notifications.conftest import FCM_PATH, TWILIO_PATH

pytestmark = pytest.mark.django_db

TWILIO_OK = {"sid": "SM0001", "status": "queued"}
# No backoff: a retry is due at once (the next whole second, within the claim's tolerance).
NOW = RetryPolicy(max_retries=3, backoff_seconds=0)


def _sms(to: str = "+14155552671", key: str = "sms:1") -> Notification:
    return notify(template="raw_sms", to=to, context={"body": "Your code is 1234"}, channels=["sms"], dedupe_key=key)[0]


def _sms_requests(server: HTTPServer) -> list[Any]:
    return [req for req, _ in server.log if req.path == TWILIO_PATH]


def _deliver(rows: Sequence[Notification], policy: RetryPolicy = NOW, channel: str = "sms") -> dict[str, Any]:
    return notifications_deliver_batch(
        channel=channel, notification_ids=[r.pk for r in rows], policy=policy, retry_task=REDELIVER_TASK
    )


def test_a_provider_answering_500_twice_then_200_is_called_three_times_and_the_message_ends_sent(
    twilio: HTTPServer,
) -> None:
    # Given Twilio failing twice with a 500 and then accepting
    twilio.expect_oneshot_request(TWILIO_PATH, method="POST").respond_with_data("boom", status=500)
    twilio.expect_oneshot_request(TWILIO_PATH, method="POST").respond_with_data("boom", status=500)
    twilio.expect_request(TWILIO_PATH, method="POST").respond_with_json(TWILIO_OK, status=201)
    row = _sms()
    # When its batch is delivered, then each retry the policy plans
    outcomes = [_deliver([row]) for _ in range(3)]
    # Then Twilio was called three times and the row is sent with Twilio's id
    row.refresh_from_db()
    assert [(o["sent"], o["retrying"]) for o in outcomes] == [(0, 1), (0, 1), (1, 0)]
    assert len(_sms_requests(twilio)) == 3
    assert (row.status, row.attempts, row.provider, row.provider_message_id) == ("sent", 3, "twilio", "SM0001")
    assert row.sent_at is not None
    assert row.last_error == ""
    # And each retry was queued on the redelivery lane, carrying the row
    retries = OutboxIntent.objects.filter(task_name=REDELIVER_TASK).order_by("pk")
    assert [i.kwargs for i in retries] == [{"channel": "sms", "notification_ids": [row.pk]}] * 2


def test_a_429_with_retry_after_puts_the_row_back_and_retries_no_sooner_than_the_provider_asked(
    twilio: HTTPServer,
) -> None:
    # Given Twilio answering 429 with Retry-After: 7
    twilio.expect_request(TWILIO_PATH, method="POST").respond_with_data(
        "slow down", status=429, headers={"Retry-After": "7"}
    )
    row = _sms()
    before = timezone.now()
    # When delivered with a policy whose backoff would be 1 second
    summary = _deliver([row], RetryPolicy(max_retries=3, backoff_seconds=1, jitter=False))
    # Then the row is pending again with the error, planned 7 seconds on (to the whole second)
    assert summary["retrying"] == 1
    row.refresh_from_db()
    assert row.status == Notification.Status.PENDING
    assert "HTTP 429" in row.last_error
    assert before + timedelta(seconds=7) <= row.next_attempt_at <= timezone.now() + timedelta(seconds=8)
    assert row.enqueued_at == row.next_attempt_at
    # And its next delivery message is not to be published before then
    intent = OutboxIntent.objects.get(task_name=REDELIVER_TASK)
    assert intent.not_before == row.next_attempt_at


def test_retry_after_longer_than_ten_minutes_is_capped_at_ten_minutes_and_the_row_says_so(
    twilio: HTTPServer,
) -> None:
    twilio.expect_request(TWILIO_PATH).respond_with_data("", status=503, headers={"Retry-After": "3600"})
    row = _sms()
    before = timezone.now()
    _deliver([row], RetryPolicy(max_retries=3, backoff_seconds=30))
    row.refresh_from_db()
    assert "the provider asked to wait 3600s; retrying after 600s" in row.last_error
    assert row.next_attempt_at <= before + timedelta(seconds=602)


def test_a_duplicate_message_arriving_before_the_planned_retry_does_not_send(twilio: HTTPServer) -> None:
    # Given a row put back after a 429 asking for 60 seconds
    twilio.expect_oneshot_request(TWILIO_PATH).respond_with_data("", status=429, headers={"Retry-After": "60"})
    twilio.expect_request(TWILIO_PATH).respond_with_json(TWILIO_OK, status=201)
    row = _sms()
    _deliver([row])
    # When a second copy of its message is delivered 10 seconds later
    with time_machine.travel(timezone.now() + timedelta(seconds=10)):
        early = _deliver([row])
    # Then it does nothing; and the retry at the planned time sends it
    assert (early["claimed"], early["sent"]) == (0, 0)
    assert len(_sms_requests(twilio)) == 1
    with time_machine.travel(timezone.now() + timedelta(seconds=61)):
        assert _deliver([row])["sent"] == 1
    assert len(_sms_requests(twilio)) == 2


def test_the_policy_declared_for_the_task_backs_off_with_jitter_up_to_ten_minutes_and_stops_after_3_retries(
    settings: Any,
) -> None:
    settings.NOTIFICATIONS_RETRY_BACKOFF_SECONDS = 1000
    policy = delivery_policy()
    countdowns = {policy.countdown(attempts=3) for _ in range(50)}
    assert all(c is not None and 0 <= c <= 600 for c in countdowns)
    assert len(countdowns) > 1  # jittered
    assert policy.countdown(attempts=4) is None  # the first try and three retries
    assert (policy.countdown(attempts=1, retry_after=30) or 0) >= 30  # the provider's Retry-After wins
    assert policy.countdown(attempts=1, retry_after=3600) == 600  # but ten minutes at most


def test_a_provider_that_is_not_configured_fails_the_row_with_the_reason(twilio: HTTPServer, settings: Any) -> None:
    settings.SMS_PROVIDER = "nope"
    row = _sms()
    summary = _deliver([row])
    row.refresh_from_db()
    assert summary["failed"] == 1
    assert (row.status, row.last_error) == (
        "failed",
        "not configured: SMS_PROVIDER='nope'; use one of twilio, msg91, console",
    )


def test_a_redis_error_while_taking_rate_slots_releases_the_rows_for_a_retry_and_sends_nothing(
    twilio: HTTPServer, settings: Any
) -> None:
    settings.NOTIFICATIONS_RATE_LIMITS = {"sms": "10/s"}
    settings.REDIS_URL = "redis://127.0.0.1:9/5"
    row = _sms()
    summary = _deliver([row], RetryPolicy(max_retries=3, backoff_seconds=5))
    row.refresh_from_db()
    assert summary["retrying"] == 1
    assert row.status == "pending"
    assert "rate limiter unreachable" in row.last_error
    assert row.next_attempt_at is not None
    assert _sms_requests(twilio) == []


@pytest.mark.django_db(transaction=True)
def test_a_slow_worker_cannot_overwrite_the_state_of_a_second_claim(twilio: HTTPServer) -> None:
    # Given a worker that claimed a row and is slow at Twilio, while recovery gave the row to a
    # second worker that claimed it again and is sending it now
    row = _sms()
    second_claim = timezone.now() + timedelta(minutes=6)

    def twilio_slow(request: Request) -> Response:
        try:
            Notification.objects.filter(pk=row.pk).update(status="sending", claimed_at=second_claim, attempts=2)
        finally:
            connection.close()
        return Response('{"sid": "SM-first"}', status=201, content_type="application/json")

    twilio.expect_request(TWILIO_PATH).respond_with_handler(twilio_slow)
    # When the first worker's send returns
    _deliver([row])
    # Then the row is still the second worker's to record
    row.refresh_from_db()
    assert (row.status, row.provider_message_id, row.claimed_at) == ("sending", "", second_claim)


def test_a_400_is_not_retried_and_the_row_fails_with_the_providers_reason(twilio: HTTPServer) -> None:
    twilio.expect_request(TWILIO_PATH, method="POST").respond_with_json(
        {"code": 21606, "message": "The From phone number is not a valid, SMS-capable number"}, status=400
    )
    row = _sms()
    deliver_batch.apply(kwargs={"channel": "sms", "notification_ids": [row.pk]})
    row.refresh_from_db()
    assert len(_sms_requests(twilio)) == 1
    assert (row.status, row.attempts) == (Notification.Status.FAILED, 1)
    assert "Twilio error 21606" in row.last_error
    assert not OutboxIntent.objects.filter(task_name=REDELIVER_TASK).exists()


def test_after_the_retries_are_spent_the_row_is_failed_and_the_api_retry_sends_it(
    twilio: HTTPServer, staff_client: Any, django_capture_on_commit_callbacks: Any
) -> None:
    # Given Twilio down for the first try and all three retries
    for _ in range(4):
        twilio.expect_oneshot_request(TWILIO_PATH).respond_with_data("down", status=502)
    row = _sms()
    for _ in range(4):
        _deliver([row])
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
    intent = OutboxIntent.objects.filter(task_name=REDELIVER_TASK).latest("pk")
    assert intent.kwargs == {"channel": "sms", "notification_ids": [row.pk]}
    # Then what the queued message runs sends it, with a fresh budget of tries
    _deliver([row])
    row.refresh_from_db()
    assert (row.status, row.provider_message_id, row.attempts) == ("sent", "SM0001", 1)
    assert len(_sms_requests(twilio)) == 5


def test_the_admin_retry_action_sends_failed_rows_and_leaves_others_alone(
    twilio: HTTPServer, staff_user: User, django_capture_on_commit_callbacks: Any
) -> None:
    failed = _sms(key="a")
    Notification.objects.filter(pk=failed.pk).update(status="failed", last_error="gave up")
    sent = _sms(key="b")
    Notification.objects.filter(pk=sent.pk).update(status="sent")
    twilio.expect_request(TWILIO_PATH).respond_with_json(TWILIO_OK, status=201)
    request = RequestFactory().post("/admin/notifications/notification/")
    request.user = staff_user
    request._messages = _Messages()  # type: ignore[attr-defined]
    admin = NotificationAdmin(Notification, site)
    with django_capture_on_commit_callbacks(execute=False):
        admin.retry(request, Notification.objects.filter(pk__in=[failed.pk, sent.pk]))
    assert Notification.objects.get(pk=failed.pk).status == "pending"
    assert Notification.objects.get(pk=sent.pk).status == "sent"
    assert request._messages.texts == [  # type: ignore[attr-defined]
        "1 notification queued again.",
        "1 was not failed and was left alone.",
    ]
    _deliver([failed])
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
    _deliver([row], channel="push")
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
    _deliver([row])
    row.refresh_from_db()
    assert row.status == "failed"
    assert "does not render" in row.last_error
    assert twilio.log == []


def test_rows_that_are_not_pending_or_not_of_the_channel_are_not_sent(twilio: HTTPServer) -> None:
    row = _sms()
    Notification.objects.filter(pk=row.pk).update(status="sent")
    other = _sms(key="other")
    summary = notifications_deliver_batch(
        channel="email", notification_ids=[row.pk, other.pk, 987654], policy=NOW, retry_task=REDELIVER_TASK
    )
    assert (summary["requested"], summary["claimed"]) == (3, 0)
    assert twilio.log == []


def test_the_single_row_task_of_earlier_messages_still_delivers_and_says_when_the_row_is_gone(
    twilio: HTTPServer,
) -> None:
    twilio.expect_request(TWILIO_PATH).respond_with_json(TWILIO_OK, status=201)
    row = _sms()
    assert deliver.apply(args=(row.pk,)).get()["sent"] == 1
    assert deliver.apply(args=(987654,)).get() == {"notification_id": 987654, "outcome": "not_found"}


@pytest.mark.django_db(transaction=True)
def test_two_workers_delivering_the_same_row_at_once_send_it_once(twilio: HTTPServer) -> None:
    twilio.expect_request(TWILIO_PATH).respond_with_json(TWILIO_OK, status=201)
    row = _sms()
    barrier = threading.Barrier(4)
    sent: list[int] = []

    def worker() -> None:
        try:
            barrier.wait(timeout=5)
            sent.append(_deliver([row])["sent"])
        finally:
            connection.close()

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=20)
    assert sorted(sent) == [0, 0, 0, 1]
    assert len(_sms_requests(twilio)) == 1
    assert Notification.objects.get(pk=row.pk).attempts == 1


def test_a_batch_is_sent_concurrently_and_recorded_in_one_statement_per_outcome_kind(settings: Any) -> None:
    # Given 40 SMS in one batch, a Twilio answering each request in its own thread after 100 ms
    # and refusing 4 of them with a 500, 8 sends at once, no rate limit
    settings.NOTIFICATIONS_SEND_CONCURRENCY = 8
    settings.NOTIFICATIONS_RATE_LIMITS = {"sms": ""}
    in_flight = [0, 0]  # now, most at once
    lock = threading.Lock()

    def twilio_answer(request: Request) -> Response:
        with lock:
            in_flight[0] += 1
            in_flight[1] = max(in_flight)
        time.sleep(0.1)
        with lock:
            in_flight[0] -= 1
        if request.form["To"].endswith(("10", "20", "30", "39")):
            return Response("boom", status=500)
        return Response(f'{{"sid": "SM{request.form["To"][-2:]}"}}', status=201, content_type="application/json")

    twilio = HTTPServer(threaded=True)
    twilio.start()
    twilio.expect_request(TWILIO_PATH).respond_with_handler(twilio_answer)
    settings.SMS_PROVIDER, settings.TWILIO_BASE_URL = "twilio", twilio.url_for("/")
    settings.TWILIO_ACCOUNT_SID, settings.TWILIO_AUTH_TOKEN, settings.TWILIO_FROM_NUMBER = "AC123", "t", "+15005550006"
    rows = [_sms(to=f"+141555500{n:02d}", key=f"batch:{n}") for n in range(40)]
    # When the batch is delivered
    started = time.monotonic()
    with CaptureQueriesContext(connection) as queries:
        summary = _deliver(rows, RetryPolicy(max_retries=3, backoff_seconds=60))
    elapsed = time.monotonic() - started
    # Then 36 were sent and 4 wait for a retry, sent eight at a time (not forty times 100 ms)
    assert (summary["claimed"], summary["sent"], summary["retrying"], summary["failed"]) == (40, 36, 4, 0)
    assert in_flight[1] == 8
    assert elapsed < 2.0
    statuses = dict(Notification.objects.filter(pk__in=[r.pk for r in rows]).values_list("to_address", "status"))
    assert sorted(to for to, status in statuses.items() if status == "pending") == [
        f"+141555500{n}" for n in (10, 20, 30, 39)
    ]
    assert Notification.objects.get(to_address="+14155550007").provider_message_id == "SM07"
    # And the outcomes were written with one UPDATE per kind (plus the claim's), the retries' intent with them
    updates = [q["sql"] for q in queries.captured_queries if q["sql"].startswith('UPDATE "notifications_notification"')]
    assert len(updates) == 3
    assert OutboxIntent.objects.filter(task_name=REDELIVER_TASK).count() >= 1
    twilio.stop()


def test_a_batch_takes_the_slots_it_can_and_the_rest_wait_for_the_next_free_slot_without_spending_a_try(
    twilio: HTTPServer, settings: Any
) -> None:
    settings.NOTIFICATIONS_RATE_LIMITS = {"sms": "10/m"}
    twilio.expect_request(TWILIO_PATH).respond_with_json(TWILIO_OK, status=201)
    rows = [_sms(to=f"+141555501{n:02d}", key=f"rl:{n}") for n in range(25)]
    summary = _deliver(rows)
    assert (summary["sent"], summary["rate_limited"]) == (10, 15)
    assert len(_sms_requests(twilio)) == 10
    waiting = Notification.objects.filter(status="pending")
    assert waiting.count() == 15
    assert set(waiting.values_list("attempts", flat=True)) == {0}
    first = waiting.first()
    assert first is not None and first.next_attempt_at is not None
    assert timezone.now() + timedelta(seconds=50) < first.next_attempt_at <= timezone.now() + timedelta(seconds=61)
    # Their delivery messages (one per id block, on the lane they came on) bring the 15 back when their slots free
    again = OutboxIntent.objects.filter(task_name=REDELIVER_TASK)
    assert len(again) <= 2
    assert sorted(pk for i in again for pk in i.kwargs["notification_ids"]) == sorted(r.pk for r in rows[10:])


class _Messages:
    def __init__(self) -> None:
        self.texts: list[str] = []

    def add(self, level: int, message: str, extra_tags: str = "") -> None:
        self.texts.append(str(message))
