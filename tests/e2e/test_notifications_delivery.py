"""Notifications end to end: real worker processes, real Redis and PostgreSQL, Twilio at a local server."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
import time_machine
from django.utils import timezone
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from core.models import JobRun
from core.scheduler import SchedulerService
from notifications.models import Notification
from notifications.services import notification_templates_install_defaults, notify
from notifications.tasks import send_sms
from tests.e2e.conftest import wait_for
from tests.support.outbox import delivery_ids

pytestmark = pytest.mark.e2e


@pytest.fixture(autouse=True)
def templates(transactional_db: Any) -> None:
    # A transactional test truncates every table afterwards, data-migration rows included.
    notification_templates_install_defaults()


TWILIO_PATH = "/2010-04-01/Accounts/AC123/Messages.json"


def _twilio_env(server: HTTPServer) -> dict[str, str]:
    return {
        "SMS_PROVIDER": "twilio",
        "TWILIO_BASE_URL": server.url_for("/"),
        "TWILIO_ACCOUNT_SID": "AC123",
        "TWILIO_AUTH_TOKEN": "secret-token",
        "TWILIO_FROM_NUMBER": "+15005550006",
        # Backoff base of 1 s (tries wait at most 1, 2, 4 s) so the test sees every retry quickly.
        "NOTIFICATIONS_RETRY_BACKOFF_SECONDS": "1",
    }


def _row(status: str) -> Callable[[], Notification | None]:
    return lambda: Notification.objects.filter(status=status).first()


def test_a_seed_send_sms_call_is_retried_through_two_500s_and_sent_by_a_real_worker(
    start_worker: Callable[..., Any], httpserver: HTTPServer
) -> None:
    # Given a worker on the notifications queue and Twilio failing twice before accepting
    httpserver.expect_oneshot_request(TWILIO_PATH).respond_with_data("boom", status=500)
    httpserver.expect_oneshot_request(TWILIO_PATH).respond_with_data("boom", status=500)
    httpserver.expect_request(TWILIO_PATH).respond_with_json({"sid": "SM777"}, status=201)
    worker = start_worker(queues="notifications,notifications_retry", **_twilio_env(httpserver))
    # When a seed system calls the task by name, as from `manage.py shell`
    send_sms.delay("+14155552671", "Your order has shipped.")
    # Then the row ends sent after three calls to Twilio
    row = wait_for(_row("sent"), timeout=40, message=f"the SMS to be sent; worker log at {worker.log}")
    assert (row.attempts, row.provider_message_id) == (3, "SM777")
    bodies = [req.form["Body"] for req, _ in httpserver.log]
    assert bodies == ["Your order has shipped."] * 3


def test_a_429_retry_after_is_honoured_by_the_worker(start_worker: Callable[..., Any], httpserver: HTTPServer) -> None:
    # Given Twilio asking to wait 3 seconds once (longer than the 1-second backoff the worker would pick)
    stamps: list[float] = []

    def twilio(request: Request) -> Response:
        stamps.append(time.monotonic())
        if len(stamps) == 1:
            return Response("slow down", status=429, headers={"Retry-After": "3"})
        return Response('{"sid": "SM1"}', status=201, content_type="application/json")

    httpserver.expect_request(TWILIO_PATH).respond_with_handler(twilio)
    worker = start_worker(queues="notifications,notifications_retry", **_twilio_env(httpserver))
    # When a message is sent
    notify(template="raw_sms", to="+14155552671", context={"body": "hi"}, channels=["sms"], dedupe_key="e2e-429")
    # Then the second try came no sooner than Retry-After said
    wait_for(_row("sent"), timeout=30, message=f"the SMS to be sent; worker log at {worker.log}")
    assert len(stamps) == 2
    assert stamps[1] - stamps[0] >= 3


def test_a_worker_killed_mid_send_leaves_the_row_sending_and_the_recovery_job_sends_it(
    start_worker: Callable[..., Any], httpserver: HTTPServer
) -> None:
    # Given Twilio holding the first request open, so the worker is killed while the row is `sending`
    received = threading.Event()
    release = threading.Event()
    calls: list[dict[str, str]] = []

    def twilio(request: Request) -> Response:
        calls.append(request.form.to_dict())
        if len(calls) == 1:
            received.set()
            release.wait(timeout=30)
        return Response(f'{{"sid": "SM{len(calls)}"}}', status=201, content_type="application/json")

    httpserver.expect_request(TWILIO_PATH).respond_with_handler(twilio)
    doomed = start_worker(
        queues="notifications,notifications_retry", pool="solo", name="doomed", **_twilio_env(httpserver)
    )
    row = notify(
        template="raw_sms", to="+14155552671", context={"body": "order AB12 paid"}, channels=["sms"], dedupe_key="kill"
    )[0]
    assert received.wait(timeout=30), f"the worker never called Twilio; log at {doomed.log}"

    # When the worker process is killed with SIGKILL by its pid, mid-send
    os.kill(doomed.pid, signal.SIGKILL)
    doomed.proc.wait(timeout=10)
    release.set()
    row.refresh_from_db()
    assert row.status == Notification.Status.SENDING

    # And, with a fresh worker up, the recovery job runs past the stuck threshold
    fresh = start_worker(queues="notifications,notifications_retry", name="fresh", **_twilio_env(httpserver))
    with time_machine.travel(timezone.now() + timedelta(minutes=6)):
        run = SchedulerService.trigger_manual_update("notification_outbox_recovery", sync=True, source="cli")
    assert run.status == JobRun.Status.SUCCEEDED
    assert run.summary["requeued_sending"] == 1

    # Then the message is sent. Twilio has no idempotency key for sends, so the design errs towards
    # at-least-once: the request the dead worker had started reached Twilio too, and the customer may
    # get the same text twice rather than never (docs/notifications.md, "Recovery").
    sent = wait_for(_row("sent"), timeout=30, message=f"the recovered SMS to be sent; log at {fresh.log}")
    assert sent.pk == row.pk
    assert sent.provider_message_id == "SM2"
    assert calls == [{"To": "+14155552671", "Body": "order AB12 paid", "From": "+15005550006"}] * 2


def test_rows_written_in_a_callers_transaction_are_published_through_the_core_outbox_and_sent_once(
    start_worker: Callable[..., Any], httpserver: HTTPServer
) -> None:
    # Given 20 customers and a worker on the notifications queue
    from django.db import transaction

    from core.models import OutboxIntent, User
    from notifications.services import NotifyRequest, notify_many

    httpserver.expect_request(TWILIO_PATH).respond_with_json({"sid": "SM1"}, status=201)
    customers = [
        User.objects.create_user(username=f"c{i}", email=f"c{i}@example.com", phone_number="+14155552671")
        for i in range(20)
    ]
    worker = start_worker(queues="notifications,notifications_retry", **_twilio_env(httpserver))
    # When a caller writes an email and an SMS for each in its own transaction and commits
    with transaction.atomic():
        written = notify_many(
            NotifyRequest(
                template="payment_failed",
                user=c,
                context={"order_number": f"AB{i}", "total": "9.00", "currency": "EUR", "items": []},
                channels=["email", "sms"],
                dedupe_key=f"e2e:{c.pk}",
            )
            for i, c in enumerate(customers)
        )
    # Then all 40 rows (email and SMS) end sent, each once, in a few published batches (one per channel and id block)
    assert written == 40
    wait_for(
        lambda: Notification.objects.filter(status="sent").count() == 40,
        timeout=60,
        message=f"the 40 notifications to be sent; worker log at {worker.log}",
    )
    assert len(httpserver.log) == 20
    # (SMS at 10 a second: the second ten waited for their slots, in a message of their own)
    assert set(delivery_ids(published=True)) == set(Notification.objects.values_list("pk", flat=True))
    assert OutboxIntent.objects.filter(task_name="notifications.deliver_batch").count() <= 8
