"""Batch delivery under faults, with real worker processes: a flaky provider, a shared rate limit, a killed
worker, and a Redis of the test's own killed and restarted empty mid-delivery."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
import time_machine
from django.conf import settings
from django.db import transaction
from django.test import override_settings
from django.utils import timezone

from core import broker as publisher
from notifications.models import Notification
from notifications.services import NotifyRequest, notifications_recover_stuck, notify_many
from notifications.services.templates import notification_templates_install_defaults
from tests.e2e.conftest import CeleryProcess, wait_for
from tests.support.redis_server import RedisServer, private_redis
from tests.support.sms_stand_in import SmsStandIn, serve

pytestmark = pytest.mark.e2e

LANES = "notifications,notifications_retry"


@pytest.fixture(autouse=True)
def templates(transactional_db: Any) -> None:
    notification_templates_install_defaults()


@pytest.fixture
def stand_in() -> Iterator[SmsStandIn]:
    provider = SmsStandIn(latency=0.02)
    with serve(provider):
        yield provider


def _env(stand_in: SmsStandIn, **extra: str) -> dict[str, str]:
    return {
        **stand_in.env(),
        "NOTIFICATIONS_SMS_RATE_LIMIT": "",
        "NOTIFICATIONS_RETRY_BACKOFF_SECONDS": "1",
        "NOTIFICATIONS_SEND_CONCURRENCY": "8",
        **extra,
    }


def _write(count: int, tag: str) -> None:
    for start in range(0, count, 500):
        with transaction.atomic():
            notify_many(
                NotifyRequest(
                    template="raw_sms",
                    to="+14155552671",
                    context={"body": f"{tag} {n}"},
                    channels=["sms"],
                    dedupe_key=f"{tag}:{n}",
                )
                for n in range(start, min(start + 500, count))
            )


def _finished(tag: str = "") -> int:
    rows = Notification.objects.filter(status__in=["sent", "failed"])
    return rows.filter(context__body__startswith=tag).count() if tag else rows.count()


def test_2000_messages_against_a_provider_failing_5_percent_end_sent_or_failed_as_the_policy_says_none_twice(
    start_worker: Callable[..., CeleryProcess], stand_in: SmsStandIn
) -> None:
    # Given a provider answering 5 % of requests with a 500, and one notifications worker
    stand_in.failure_rate = 0.05
    worker = start_worker(queues=LANES, **_env(stand_in))
    # When 2,000 SMS are written through the outbox
    _write(2000, "flaky")
    wait_for(lambda: _finished() == 2000, timeout=240, interval=1, message=f"2,000 finished; log {worker.log}")
    # Then every row ended sent, or failed after four tries; attempts match what the provider saw
    rows = list(Notification.objects.values_list("status", "attempts", "last_error"))
    assert {status for status, _, _ in rows} <= {"sent", "failed"}
    assert all(a == 4 and e.startswith("gave up after 4 attempts") for s, a, e in rows if s == "failed")
    assert all(1 <= a <= 4 for _, a, _ in rows)
    assert sum(a for _, a, _ in rows) == stand_in.requests
    retried = sum(1 for _, a, _ in rows if a > 1)
    assert 40 <= retried <= 200, retried  # about 5 % of 2,000 needed a second try
    # And none was sent twice
    assert stand_in.sent_twice() == 0
    assert sum(stand_in.accepted.values()) == sum(1 for s, _, _ in rows if s == "sent")


def test_a_10_per_minute_limit_is_shared_by_three_worker_processes(
    start_worker: Callable[..., CeleryProcess], stand_in: SmsStandIn
) -> None:
    # Given SMS at 10 a minute and three worker processes taking from the same queues
    env = _env(stand_in, NOTIFICATIONS_SMS_RATE_LIMIT="10/m")
    for n in range(3):
        start_worker(queues=LANES, concurrency=1, name=f"w{n}", **env)
    # When 40 SMS are written at once
    started = time.time()
    _write(40, "limited")
    # Then 10 are sent, and the other 30 wait for the next minute: none goes out before it
    wait_for(lambda: _finished() == 10, timeout=60, message="the first 10 sent")
    time.sleep(10)
    assert _finished() == 10 and len(stand_in.times) == 10
    waiting = Notification.objects.filter(status="pending")
    assert waiting.count() == 30
    assert set(waiting.values_list("attempts", flat=True)) == {0}
    first_slot = min(stand_in.times)
    soonest = min(waiting.values_list("next_attempt_at", flat=True))
    assert soonest.timestamp() >= first_slot + 59
    assert max(stand_in.times) - started < 60


def test_a_worker_killed_mid_batch_has_its_rows_recovered_and_sent_duplicates_bounded_by_the_batch(
    start_worker: Callable[..., CeleryProcess], stand_in: SmsStandIn
) -> None:
    # Given a worker sending a batch whose provider holds a request open, so the batch is in flight
    stand_in.latency = 0.05
    doomed = start_worker(queues=LANES, pool="solo", name="doomed", **_env(stand_in))
    stand_in.hold.set()
    _write(50, "killed")
    assert stand_in.held.wait(timeout=30), f"no request reached the provider; log {doomed.log}"
    time.sleep(0.2)  # the batch's other requests go out meanwhile
    # When its process is SIGKILLed by its PID, mid-batch
    os.kill(doomed.pid, signal.SIGKILL)
    doomed.proc.wait(timeout=10)
    stand_in.hold.clear()
    time.sleep(0.5)  # the requests that reached the provider before the kill finish there
    accepted_before = sum(stand_in.accepted.values())
    assert Notification.objects.filter(status="sending").count() > 0
    # And the recovery job runs past its threshold, with a fresh worker up
    fresh = start_worker(queues=LANES, name="fresh", **_env(stand_in))
    with time_machine.travel(timezone.now() + timedelta(minutes=6)):
        summary = notifications_recover_stuck()
    assert summary["requeued_sending"] > 0
    # Then every row of the batch is sent
    wait_for(lambda: _finished() == 50, timeout=60, message=f"the batch recovered and sent; log {fresh.log}")
    assert Notification.objects.filter(status="sent").count() == 50
    # And the duplicates are the messages the provider took before the kill (Twilio has no idempotency
    # key): at most the sends in flight, NOTIFICATIONS_SEND_CONCURRENCY (8 here), never above the batch
    duplicates = stand_in.sent_twice()
    assert duplicates <= accepted_before <= 8 <= int(settings.NOTIFICATIONS_BATCH_SIZE)
    assert sum(stand_in.accepted.values()) == 50 + duplicates


# Provider timeouts of 1 s in this process allow the recovery job a threshold of 6 s (three times
# the longest a batch takes), so it runs on the real clock: no row gets a time-travelled timestamp.
SHORT_TIMEOUTS = {"SMS_TIMEOUT_SECONDS": 1, "EMAIL_TIMEOUT": 1, "PUSH_TIMEOUT_SECONDS": 1}


def _recover() -> dict[str, Any]:
    """The recovery job's run over rows waiting for more than 6 s (what the restarts took, among others)."""
    time.sleep(6.5)
    with override_settings(**SHORT_TIMEOUTS):
        return notifications_recover_stuck(older_than_seconds=6)


def _alive(worker: CeleryProcess) -> bool:
    return worker.proc.poll() is None


def test_a_redis_restarted_empty_five_times_mid_delivery_loses_nothing_and_fresh_messages_go_first(
    start_worker: Callable[..., CeleryProcess], stand_in: SmsStandIn
) -> None:
    with private_redis() as broker_server:
        _deliver_through_restarts(start_worker, stand_in, broker_server)


def _deliver_through_restarts(
    start_worker: Callable[..., CeleryProcess], stand_in: SmsStandIn, broker_server: RedisServer
) -> None:
    # Given a worker whose broker is a Redis of this test's own, and 2,000 SMS published to it
    url = broker_server.url(0)
    worker = start_worker(queues=LANES, name="survivor", CELERY_BROKER_URL=url, **_env(stand_in))
    with override_settings(CELERY_BROKER_URL=url):
        publisher.reset()
        try:
            _write(2000, "backlog")
            # When Redis is killed and restarted empty five times while the worker delivers (the
            # recovery job re-queueing, each time, what the last restart took with it)
            for n in range(5):
                if n:
                    _recover()
                done = _finished()
                wait_for(lambda d=done: _finished() > d + 20, timeout=60, message=f"progress; log {worker.log}")
                broker_server.restart_empty()
                time.sleep(2)
                # Then the worker is still up after each
                assert _alive(worker), worker.output()[-3000:]
            # And fresh messages written after the last restart are delivered within a minute,
            # while recovery re-queues the backlog the restarts lost onto the retry lane
            fresh_at = time.monotonic()
            _write(100, "fresh")
            recovered = _recover()
            wait_for(lambda: _finished("fresh") == 100, timeout=60, message=f"fresh sent; log {worker.log}")
            assert time.monotonic() - fresh_at < 60
            # And everything the restarts lost is sent in the end, none lost (each recovery run
            # re-queues only rows whose message is not on the broker, so it adds no copies)
            deadline = time.monotonic() + 240
            while _finished() < 2100 and time.monotonic() < deadline:
                _recover()
            assert _finished() == 2100, f"{_finished()} of 2100; log {worker.log}"
        finally:
            publisher.reset()
    assert recovered["requeued_pending"] + recovered["requeued_sending"] > 0, recovered
    assert Notification.objects.filter(status="sent").count() == 2100
    assert _alive(worker)
    assert broker_server.restarts == 5
    # And none was sent twice: a batch in flight at a restart runs on and records its outcome (its
    # acknowledgement is lost; the claim makes the redelivered copy a no-op)
    assert stand_in.sent_twice() == 0
