"""The core outbox: intents recorded in the caller's transaction, published after commit, relayed when missed."""

from __future__ import annotations

import threading
from collections import Counter
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
import time_machine
from django.db import connection, transaction
from django.utils import timezone

from core.errors import Unavailable
from core.models import OutboxIntent
from core.services import outbox
from core.services.outbox import Intent, IntentRefused, outbox_add, outbox_add_many, outbox_prune, outbox_relay
from tests.support.broker import BrokerProbe, sent_tasks

DELIVER = "notifications.deliver"


def _deliveries() -> list[Any]:
    return sent_tasks("notifications", DELIVER)


@pytest.mark.django_db
def test_an_intent_commits_with_the_callers_transaction_and_is_published_right_after(
    broker: BrokerProbe, django_capture_on_commit_callbacks: Any
) -> None:
    # When a service records an intent inside its transaction
    with django_capture_on_commit_callbacks(execute=True), transaction.atomic():
        outbox_add(task=DELIVER, kwargs={"notification_id": 7}, dedupe_key="n:7")
        # Then nothing is on the broker before the commit
        assert _deliveries() == []
    # And after the commit one message carries the intent's kwargs and task id, and the row is marked
    [intent] = OutboxIntent.objects.all()
    [message] = _deliveries()
    assert (message.kwargs, message.id) == ({"notification_id": 7}, str(intent.task_id))
    assert intent.published_at is not None and intent.attempts == 1 and intent.last_error == ""


@pytest.mark.django_db
def test_a_rolled_back_transaction_leaves_no_intent_and_publishes_nothing(
    broker: BrokerProbe, django_capture_on_commit_callbacks: Any
) -> None:
    with django_capture_on_commit_callbacks(execute=True), pytest.raises(RuntimeError), transaction.atomic():
        outbox_add(task=DELIVER, kwargs={"notification_id": 1}, dedupe_key="n:1")
        raise RuntimeError("the caller failed")
    assert OutboxIntent.objects.count() == 0
    assert _deliveries() == []


@pytest.mark.django_db
def test_the_same_dedupe_key_twice_records_and_publishes_one_intent(
    broker: BrokerProbe, django_capture_on_commit_callbacks: Any
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        outbox_add(task=DELIVER, kwargs={"notification_id": 1}, dedupe_key="same")
    with django_capture_on_commit_callbacks(execute=True):
        outbox_add(task=DELIVER, kwargs={"notification_id": 2}, dedupe_key="same")
    assert list(OutboxIntent.objects.values_list("kwargs", flat=True)) == [{"notification_id": 1}]
    assert [m.kwargs for m in _deliveries()] == [{"notification_id": 1}]


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("task", "kwargs", "key", "reason"),
    [
        ("payments.no_such_task", {}, "k", "No task named 'payments.no_such_task'"),
        (DELIVER, {"notification_id": Decimal("1.5")}, "k", "not JSON"),
        (DELIVER, {"at": timezone.now()}, "k", "not JSON"),
        (DELIVER, {"ids": {1, 2}}, "k", "not JSON"),
        (DELIVER, {"x": float("nan")}, "k", "not JSON"),
        (DELIVER, {1: "not a str key"}, "k", "string keys"),
        (DELIVER, {}, "", "dedupe_key"),
    ],
)
def test_an_unknown_task_or_arguments_that_are_not_json_are_refused_and_nothing_is_recorded(
    broker: BrokerProbe, django_capture_on_commit_callbacks: Any, task: str, kwargs: Any, key: str, reason: str
) -> None:
    # Given a batch whose last intent is bad
    good = Intent(task=DELIVER, kwargs={"notification_id": 1}, dedupe_key="good")
    bad = Intent(task=task, kwargs=kwargs, dedupe_key=key)
    # Then it is refused with the reason, and not even the good one is recorded or published
    with django_capture_on_commit_callbacks(execute=True), pytest.raises(IntentRefused, match=reason):
        outbox_add_many([good, bad])
    assert OutboxIntent.objects.count() == 0
    assert _deliveries() == []


@pytest.mark.django_db
def test_work_due_soon_is_published_at_commit_with_its_eta_and_later_work_waits_for_the_relay(
    broker: BrokerProbe, django_capture_on_commit_callbacks: Any, settings: Any
) -> None:
    settings.OUTBOX_ETA_HORIZON_SECONDS = 900
    now = timezone.now()
    soon, later = now + timedelta(seconds=30), now + timedelta(hours=2)
    # When two intents are recorded, one due in 30 seconds and one in two hours
    with django_capture_on_commit_callbacks(execute=True):
        outbox_add(task=DELIVER, kwargs={"notification_id": 1}, dedupe_key="soon", not_before=soon)
        outbox_add(task=DELIVER, kwargs={"notification_id": 2}, dedupe_key="later", not_before=later)
    # Then only the first is on the broker, with its time as the ETA
    [message] = _deliveries()
    assert message.kwargs == {"notification_id": 1}
    assert message.eta is not None and abs((timezone.datetime.fromisoformat(message.eta) - soon).total_seconds()) < 1
    assert outbox_relay()["published"] == 0
    # When the relay runs once the second comes within the horizon
    with time_machine.travel(later - timedelta(seconds=899)):
        summary = outbox_relay()
    # Then it is published, with its own ETA
    assert summary["published"] == 1 and summary["waiting"] == 0
    assert [m.kwargs for m in _deliveries()] == [{"notification_id": 1}, {"notification_id": 2}]


@pytest.mark.django_db
def test_the_relay_publishes_what_a_lost_commit_hook_left_and_records_a_broker_outage_on_the_rows(
    broker: BrokerProbe, django_capture_on_commit_callbacks: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given three intents whose after-commit hook never ran (a web process killed after its commit)
    with django_capture_on_commit_callbacks(execute=False):
        outbox_add_many(Intent(task=DELIVER, kwargs={"notification_id": i}, dedupe_key=f"n:{i}") for i in range(3))
    assert _deliveries() == []

    # When the relay runs while the broker refuses connections
    def refused(messages: Any) -> None:
        raise outbox.KombuOperationalError("[Errno 111] Connection refused")

    monkeypatch.setattr(outbox, "messages_publish", refused)
    with pytest.raises(Unavailable, match="Connection refused"):
        outbox_relay()
    # Then the rows stay unpublished with the reason, and nothing was sent
    assert [(i.published_at, i.attempts) for i in OutboxIntent.objects.order_by("pk")] == [(None, 1)] * 3
    assert all("Connection refused" in i.last_error for i in OutboxIntent.objects.all())

    # When the broker is back: the next run publishes each once, and the run after it nothing
    monkeypatch.undo()
    assert outbox_relay()["published"] == 3
    assert outbox_relay()["published"] == 0
    assert sorted(m.kwargs["notification_id"] for m in _deliveries()) == [0, 1, 2]


@pytest.mark.django_db
def test_one_relay_run_is_bounded_and_the_next_run_goes_on(broker: BrokerProbe) -> None:
    OutboxIntent.objects.bulk_create(
        OutboxIntent(task_name=DELIVER, kwargs={"notification_id": i}, dedupe_key=f"n:{i}") for i in range(25)
    )
    first = outbox_relay(chunk_size=10, max_chunks=2)
    second = outbox_relay(chunk_size=10, max_chunks=2)
    assert (first["published"], first["waiting"]) == (20, 5)
    assert (second["published"], second["waiting"]) == (5, 0)
    assert len(_deliveries()) == 25


@pytest.mark.django_db
def test_published_intents_are_pruned_after_the_retention_and_unpublished_ones_never(
    broker: BrokerProbe, settings: Any
) -> None:
    settings.OUTBOX_RETENTION_DAYS = 7
    now = timezone.now()
    OutboxIntent.objects.bulk_create(
        [
            OutboxIntent(task_name=DELIVER, kwargs={}, dedupe_key="old", published_at=now - timedelta(days=8)),
            OutboxIntent(task_name=DELIVER, kwargs={}, dedupe_key="recent", published_at=now - timedelta(days=6)),
            OutboxIntent(task_name=DELIVER, kwargs={}, dedupe_key="unpublished", not_before=now + timedelta(days=30)),
        ]
    )
    OutboxIntent.objects.filter(dedupe_key="unpublished").update(created_at=now - timedelta(days=60))
    assert outbox_prune() == 1
    assert sorted(OutboxIntent.objects.values_list("dedupe_key", flat=True)) == ["recent", "unpublished"]


@pytest.mark.django_db(transaction=True)
def test_two_relays_at_once_over_5000_due_intents_publish_each_once(broker: BrokerProbe) -> None:
    # Given 5,000 intents left unpublished
    OutboxIntent.objects.bulk_create(
        (OutboxIntent(task_name=DELIVER, kwargs={"notification_id": i}, dedupe_key=f"n:{i}") for i in range(5000)),
        batch_size=5000,
    )
    barrier = threading.Barrier(2)
    results: list[dict[str, int]] = []
    errors: list[BaseException] = []

    def relay() -> None:
        try:
            barrier.wait(timeout=10)
            results.append(outbox_relay(chunk_size=500))
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    # When two relays run at the same moment, each on its own connection
    threads = [threading.Thread(target=relay) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    # Then both finished, between them they published 5,000, and each intent is on the broker once
    assert errors == [] and len(results) == 2
    assert sum(r["published"] for r in results) == 5000
    sent = Counter(m.id for m in _deliveries())
    assert len(sent) == 5000 and set(sent.values()) == {1}
    assert set(sent) == {str(t) for t in OutboxIntent.objects.values_list("task_id", flat=True)}
    assert not OutboxIntent.objects.filter(published_at__isnull=True).exists()
    assert set(OutboxIntent.objects.values_list("attempts", flat=True)) == {1}


def test_the_relay_is_in_the_catalog_every_15_seconds() -> None:
    from core.catalog import Every, JobCatalog

    job = JobCatalog.get("outbox_relay")
    assert (job.task, job.schedule, job.queue) == ("core.relay_outbox", Every(seconds=15), "default")


# Messages the broker lost after taking them ------------------------------------------------


def _published_intent(key: str, *, minutes_ago: float, publishes: int = 1) -> OutboxIntent:
    at = timezone.now() - timedelta(minutes=minutes_ago)
    return OutboxIntent.objects.create(
        task_name=DELIVER,
        kwargs={"notification_id": 999_999},
        dedupe_key=key,
        published_at=at,
        attempts=publishes,
        publishes=publishes,
    )


@pytest.mark.django_db
def test_a_task_that_ran_to_an_end_marks_its_intent_completed_and_a_retrying_one_does_not(
    broker: BrokerProbe, django_capture_on_commit_callbacks: Any
) -> None:
    from notifications.tasks import deliver

    with django_capture_on_commit_callbacks(execute=True):
        outbox_add(task=DELIVER, kwargs={"notification_id": 999_999}, dedupe_key="gone")
    intent = OutboxIntent.objects.get()
    [message] = _deliveries()
    # When the worker runs the message (its body here, with the headers the outbox sent)
    result = deliver.apply(kwargs=message.kwargs, task_id=message.id, headers={"outbox_intent": intent.pk}).get()
    # Then the task ended (the row does not exist: said, not retried) and the intent is completed
    assert result["outcome"] == "not_found"
    intent.refresh_from_db()
    assert intent.completed_at is not None
    # And a run without the header (a bare .delay()) touches no intent
    deliver.apply(kwargs={"notification_id": 999_999})
    assert OutboxIntent.objects.filter(completed_at__isnull=True).count() == 0


@pytest.mark.django_db
def test_the_relay_publishes_again_what_the_broker_lost_and_leaves_running_and_finished_work_alone(
    broker: BrokerProbe, settings: Any
) -> None:
    settings.OUTBOX_REDELIVER_AFTER_SECONDS = 3600
    settings.OUTBOX_MAX_PUBLISHES = 5
    # Given a message taken 2 hours ago and never run (Redis restarted empty), one published a
    # minute ago (still running), one that completed, and one already published five times
    lost = _published_intent("lost", minutes_ago=120)
    _published_intent("running", minutes_ago=1)
    done = _published_intent("done", minutes_ago=120)
    OutboxIntent.objects.filter(pk=done.pk).update(completed_at=timezone.now())
    _published_intent("poison", minutes_ago=120, publishes=5)
    # When the relay runs
    summary = outbox_relay()
    # Then only the lost one is published again, with its own task id
    assert (summary["redelivered"], summary["held_back"]) == (1, 0)
    [message] = _deliveries()
    assert message.id == str(lost.task_id)
    lost.refresh_from_db()
    assert lost.publishes == 2 and lost.published_at > timezone.now() - timedelta(minutes=1)
    # And the next run leaves it alone until it is overdue again
    assert outbox_relay()["redelivered"] == 0


@pytest.mark.django_db
def test_the_relay_holds_back_redelivery_while_the_tasks_queue_has_a_backlog(
    broker: BrokerProbe, settings: Any
) -> None:
    settings.OUTBOX_REDELIVER_AFTER_SECONDS = 3600
    _published_intent("maybe-still-queued", minutes_ago=120)
    # Given the notifications queue is still working through a backlog
    from tests.support.broker import test_broker

    test_broker().lpush("notifications", b"{}")
    # Then the relay does not add a duplicate behind it
    assert (outbox_relay()["redelivered"], outbox_relay()["held_back"]) == (0, 1)
    # Once the queue is drained, it publishes it again
    test_broker().delete("notifications")
    assert outbox_relay()["redelivered"] == 1
