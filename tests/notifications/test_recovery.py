"""The outbox recovery job: rows a lost message or a dead worker left behind are sent after all."""

from __future__ import annotations

import json
import threading
from datetime import timedelta
from typing import Any

import pytest
import time_machine
from django.db import connection
from django.utils import timezone
from pytest_httpserver import HTTPServer

from core.catalog import InvalidJobParams, JobCatalog
from core.models import JobRun, OutboxIntent
from core.scheduler import SchedulerService
from notifications.models import Notification
from notifications.services import notifications_recover_stuck, notify
from notifications.tasks import deliver, redeliver_batch
from tests.notifications.conftest import TWILIO_PATH
from tests.support.broker import test_broker


def _sms(key: str) -> Notification:
    """A row whose delivery message was published, and then lost (the broker probe starts empty)."""
    row = notify(template="raw_sms", to="+14155552671", context={"body": "hi"}, channels=["sms"], dedupe_key=key)[0]
    OutboxIntent.objects.filter(published_at__isnull=True).update(published_at=timezone.now(), publishes=1)
    return row


def test_the_recovery_job_is_in_the_catalog_every_five_minutes_with_a_validated_threshold() -> None:
    job = JobCatalog.get("notification_outbox_recovery")
    assert (job.task, job.schedule_text(), job.queue) == (
        "notifications.recover_outbox",
        "every 5 minutes",
        "notifications",
    )
    assert job.validate_params({"older_than_seconds": 600}) == {"older_than_seconds": 600}
    with pytest.raises(InvalidJobParams, match="older_than_seconds"):
        job.validate_params({"older_than_seconds": 5})


def test_the_threshold_may_not_be_shorter_than_three_provider_timeouts(settings: Any) -> None:
    # Given a 20-second SMS timeout and batches of 50 sent 25 at a time: a live batch may take
    # two rounds of 20 s, three of those 120 s
    settings.SMS_TIMEOUT_SECONDS = 20
    settings.NOTIFICATIONS_BATCH_SIZE, settings.NOTIFICATIONS_SEND_CONCURRENCY = 50, 25
    job = JobCatalog.get("notification_outbox_recovery")
    # Then 100 s is refused and 120 s is fine
    with pytest.raises(InvalidJobParams, match="at least 120"):
        job.validate_params({"older_than_seconds": 100})
    assert job.validate_params({"older_than_seconds": 120}) == {"older_than_seconds": 120}
    with pytest.raises(ValueError, match="at least 120"):
        notifications_recover_stuck(older_than_seconds=100)


@pytest.mark.django_db
def test_a_row_whose_workers_died_mid_send_four_times_is_failed_instead_of_sent_again(
    broker: Any, django_capture_on_commit_callbacks: Any
) -> None:
    # Given a poison row four workers died on, and a row one worker died on
    poison = _sms("poison")
    once = _sms("once")
    an_hour_ago = timezone.now() - timedelta(hours=1)
    Notification.objects.filter(pk=poison.pk).update(status="sending", claimed_at=an_hour_ago, attempts=4)
    Notification.objects.filter(pk=once.pk).update(status="sending", claimed_at=an_hour_ago, attempts=1)
    broker.flush()
    # When recovery runs
    with django_capture_on_commit_callbacks(execute=True):
        summary = notifications_recover_stuck()
    # Then the poison row is failed with the reason and only the other one is re-enqueued
    poison.refresh_from_db()
    assert (poison.status, poison.last_error) == ("failed", "worker lost mid-send 4 times")
    assert (summary["failed_worker_lost"], summary["requeued_sending"]) == (1, 1)
    assert broker.delivery_ids() == [once.pk]


@pytest.mark.django_db
def test_one_run_looks_at_a_bounded_number_of_rows_oldest_first(
    broker: Any, monkeypatch: pytest.MonkeyPatch, django_capture_on_commit_callbacks: Any
) -> None:
    # Given 8 stuck rows and a bound of 5 per run
    monkeypatch.setattr("notifications.services.operations.RECOVERY_MAX_PER_RUN", 5)
    ids = [_sms(f"b{i}").pk for i in range(8)]
    broker.flush()
    start = timezone.now()
    # When recovery runs twice, the workers taking the first run's messages in between
    with time_machine.travel(start + timedelta(minutes=6)), django_capture_on_commit_callbacks(execute=True):
        first = notifications_recover_stuck()
    taken = broker.delivery_ids()
    broker.flush()
    with time_machine.travel(start + timedelta(minutes=6, seconds=1)), django_capture_on_commit_callbacks(execute=True):
        second = notifications_recover_stuck()
    # Then the first run took 5, the second the other 3
    assert (first["candidates"], second["candidates"]) == (5, 3)
    assert sorted(taken + broker.delivery_ids()) == sorted(ids)


@pytest.mark.django_db
def test_a_row_left_sending_by_a_dead_worker_is_put_back_and_sent_once_by_the_recovery_job(
    twilio: HTTPServer, broker: Any, django_capture_on_commit_callbacks: Any
) -> None:
    # Given a row a worker claimed and then died on, and one whose broker message was lost
    twilio.expect_request(TWILIO_PATH).respond_with_json({"sid": "SM1"}, status=201)
    dead = _sms("dead")
    Notification.objects.filter(pk=dead.pk).update(status="sending", claimed_at=timezone.now(), attempts=1)
    lost = _sms("lost")
    # When the recovery job runs six minutes later
    with time_machine.travel(timezone.now() + timedelta(minutes=6)), django_capture_on_commit_callbacks(execute=True):
        run = SchedulerService.trigger_manual_update("notification_outbox_recovery", sync=True)
    # Then both are pending again and enqueued once each
    assert run.status == JobRun.Status.SUCCEEDED
    assert run.summary == {
        "threshold_seconds": 300,
        "candidates": 2,
        "requeued_pending": 1,
        "requeued_sending": 1,
        "held_back": 0,
        "failed_worker_lost": 0,
    }
    # On the redelivery lane, not in front of fresh messages
    assert sorted(broker.delivery_ids("notifications_retry")) == sorted([dead.pk, lost.pk])
    assert broker.delivery_ids("notifications") == []
    assert set(Notification.objects.values_list("status", flat=True)) == {"pending"}
    # And delivering them sends each once, a late duplicate of the dead worker's message included
    for task in broker.tasks("notifications_retry"):
        redeliver_batch.apply(kwargs=task.kwargs)
    deliver.apply(args=(dead.pk,))
    assert len(twilio.log) == 2
    assert set(Notification.objects.values_list("status", flat=True)) == {"sent"}


@pytest.mark.django_db
def test_fresh_rows_planned_retries_and_finished_rows_are_left_alone(broker: Any) -> None:
    # Given a fresh pending row, a row waiting for a retry in 10 minutes, a failed and a sent row
    _sms("fresh")
    waiting = _sms("waiting")
    later = timezone.now() + timedelta(minutes=10)
    Notification.objects.filter(pk=waiting.pk).update(next_attempt_at=later, enqueued_at=later)
    for key, status in (("f", "failed"), ("s", "sent")):
        Notification.objects.filter(pk=_sms(key).pk).update(
            status=status, claimed_at=timezone.now() - timedelta(hours=1)
        )
    # When recovery runs five and a half minutes later
    with time_machine.travel(timezone.now() + timedelta(seconds=330)):
        summary = notifications_recover_stuck()
    # Then only the fresh row, now stale, is re-enqueued
    assert summary["candidates"] == 1
    assert summary["requeued_pending"] == 1


@pytest.mark.django_db
def test_a_row_re_enqueued_once_is_not_re_enqueued_again_until_it_is_stale_again(
    broker: Any, django_capture_on_commit_callbacks: Any
) -> None:
    row = _sms("again")
    start = timezone.now()
    with time_machine.travel(start + timedelta(minutes=6)), django_capture_on_commit_callbacks(execute=True):
        assert notifications_recover_stuck()["requeued_pending"] == 1
    with time_machine.travel(start + timedelta(minutes=7)), django_capture_on_commit_callbacks(execute=True):
        assert notifications_recover_stuck()["requeued_pending"] == 0
    assert broker.delivery_ids() == [row.pk]


@pytest.mark.django_db(transaction=True)
def test_two_recovery_runs_at_once_re_enqueue_each_row_once(broker: Any) -> None:
    # Given 30 rows stuck in sending
    ids = [_sms(f"k{i}").pk for i in range(30)]
    Notification.objects.filter(pk__in=ids).update(status="sending", claimed_at=timezone.now() - timedelta(hours=1))
    broker.flush()  # their first delivery messages are the ones "lost"
    barrier = threading.Barrier(2)
    summaries: list[dict[str, Any]] = []

    def run() -> None:
        try:
            barrier.wait(timeout=5)
            summaries.append(notifications_recover_stuck())
        finally:
            connection.close()

    # When two recovery jobs run at the same moment
    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    # Then both runs finished, and every row was put back and enqueued exactly once
    assert len(summaries) == 2
    assert sum(s["requeued_sending"] for s in summaries) == 30
    assert sorted(broker.delivery_ids()) == sorted(ids)


@pytest.mark.django_db
def test_a_row_whose_message_still_waits_on_a_queue_or_in_a_worker_is_held_back_not_copied(
    broker: Any, django_capture_on_commit_callbacks: Any
) -> None:
    # Given three stale pending rows: one whose message is lost, one whose message a worker holds
    # reserved (kombu's unacked hash), and one whose message was never published (the relay's)
    lost, reserved = _sms("lost"), _sms("reserved")
    held = OutboxIntent.objects.get(kwargs__notification_ids=[reserved.pk])
    unacked = {"headers": {"id": str(held.task_id), "task": "notifications.deliver_batch"}}
    test_broker().hset("unacked", "tag-1", json.dumps([unacked, "", "notifications"]))
    unpublished = notify(
        template="raw_sms", to="+14155552671", context={"body": "hi"}, channels=["sms"], dedupe_key="u"
    )[0]
    # When recovery runs six minutes later
    with time_machine.travel(timezone.now() + timedelta(minutes=6)), django_capture_on_commit_callbacks(execute=True):
        summary = notifications_recover_stuck()
    # Then only the lost one is queued again
    assert (summary["requeued_pending"], summary["held_back"]) == (1, 2)
    assert broker.delivery_ids("notifications_retry") == [lost.pk]
    assert Notification.objects.get(pk=unpublished.pk).status == "pending"


@pytest.mark.django_db
def test_a_row_whose_message_waits_behind_a_backlog_is_held_back_and_the_others_are_not(
    broker: Any, django_capture_on_commit_callbacks: Any
) -> None:
    # Given two stale rows, one whose message is still waiting on the fresh lane behind others
    waiting, lost = _sms("behind"), _sms("lost")
    intent = OutboxIntent.objects.get(kwargs__notification_ids=[waiting.pk])
    test_broker().lpush("notifications", json.dumps({"headers": {"id": str(intent.task_id)}}), "another message")
    with time_machine.travel(timezone.now() + timedelta(minutes=6)), django_capture_on_commit_callbacks(execute=True):
        summary = notifications_recover_stuck()
    assert (summary["requeued_pending"], summary["held_back"]) == (1, 1)
    assert broker.delivery_ids("notifications_retry") == [lost.pk]


@pytest.mark.django_db
def test_a_queue_too_long_to_read_holds_every_waiting_row_back(
    broker: Any, monkeypatch: pytest.MonkeyPatch, django_capture_on_commit_callbacks: Any
) -> None:
    monkeypatch.setattr("notifications.services.operations.RECOVERY_SCAN_LIMIT", 2)
    _sms("a")
    test_broker().lpush("notifications", "1", "2", "3")
    with time_machine.travel(timezone.now() + timedelta(minutes=6)), django_capture_on_commit_callbacks(execute=True):
        summary = notifications_recover_stuck()
    assert (summary["requeued_pending"], summary["held_back"]) == (0, 1)
