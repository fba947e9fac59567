"""The outbox against a real refused connection: a broker on a closed port at commit, then the relay."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections import Counter
from datetime import timedelta
from typing import Any

import pytest
import time_machine

from core.models import JobRun, OutboxIntent
from core.services.outbox import outbox_relay
from notifications.models import Notification
from tests.e2e.conftest import ROOT, process_env, wait_for

pytestmark = pytest.mark.e2e

PHONES = ["+14155550101", "+14155550102", "+14155550103"]

# What a web process does: record intents in its transaction and commit. Celery retries the
# publish a few times (about a second), then the after-commit hook gives up and logs it.
RECORD = f"""
from django.db import transaction
from core.services.outbox import Intent, outbox_add_many
with transaction.atomic():
    outbox_add_many(
        Intent(task="notifications.send_sms", kwargs={{"to": to, "body": "order shipped"}}, dedupe_key="e2e:" + to)
        for to in {PHONES!r}
    )
print("committed")
"""


def closed_port_broker() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # The socket is closed again: nothing listens there, so every connection is refused.
    return f"redis://127.0.0.1:{port}/14"


def manage(*argv: str, broker_url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", *argv],
        cwd=ROOT,
        env=process_env(CELERY_BROKER_URL=broker_url),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_intents_committed_while_the_broker_refuses_connections_are_relayed_once_and_run_by_the_worker(
    start_worker: Any,
) -> None:
    # Given a process whose broker is a closed port commits three intents
    result = manage("shell", "-c", RECORD, broker_url=closed_port_broker())
    assert result.returncode == 0, result.stderr
    assert "committed" in result.stdout
    # Then the commit stood, the intents wait unpublished with the refusal recorded, and the hook logged it
    waiting = list(OutboxIntent.objects.order_by("pk"))
    assert len(waiting) == 3 and all(i.published_at is None and i.attempts == 1 for i in waiting)
    assert all("refused" in i.last_error.lower() or "111" in i.last_error for i in waiting), waiting[0].last_error
    assert "could not publish 3 intents after commit" in result.stderr

    # When the broker is back: a worker is up and the relay runs twice
    worker = start_worker(queues="notifications,notifications_retry")
    first, second = outbox_relay(), outbox_relay()

    # Then the first run published each intent once, the second nothing, and the worker ran each once
    assert (first["published"], second["published"]) == (3, 0)
    wait_for(
        lambda: Notification.objects.filter(status="sent").count() == 3,
        timeout=60,
        message=f"the three SMS to be sent; worker log at {worker.log}",
    )
    assert Counter(Notification.objects.values_list("to_address", flat=True)) == dict.fromkeys(PHONES, 1)
    assert not OutboxIntent.objects.filter(published_at__isnull=True).exists()
    # And the worker marked each intent completed, so the relay never publishes them again
    wait_for(
        lambda: not OutboxIntent.objects.filter(task_name="notifications.send_sms", completed_at__isnull=True).exists(),
        timeout=30,
        message="the worker to mark the three intents completed",
    )


def test_messages_lost_with_a_redis_restart_are_published_again_by_the_relay_and_run_once(
    start_worker: Any, settings: Any
) -> None:
    from django.db import transaction
    from django.utils import timezone

    from core.services.outbox import Intent, outbox_add_many
    from tests.support.broker import test_broker

    # Given three intents published at commit while no worker was up
    with transaction.atomic():
        outbox_add_many(
            Intent(task="notifications.send_sms", kwargs={"to": to, "body": "lost"}, dedupe_key="lost:" + to)
            for to in PHONES
        )
    assert OutboxIntent.objects.filter(published_at__isnull=False).count() == 3
    # When Redis restarts empty (no persistence): the messages are gone
    test_broker().flushdb()
    worker = start_worker(queues="notifications,notifications_retry")
    # Then the relay does nothing while they may still be on their way ...
    assert outbox_relay()["redelivered"] == 0
    # ... and publishes them again once they are overdue
    with time_machine.travel(timezone.now() + timedelta(seconds=settings.OUTBOX_REDELIVER_AFTER_SECONDS + 60)):
        assert outbox_relay()["redelivered"] == 3
    wait_for(
        lambda: Notification.objects.filter(status="sent").count() == 3,
        timeout=60,
        message=f"the three SMS to be sent after the redelivery; worker log at {worker.log}",
    )
    assert Counter(Notification.objects.values_list("to_address", flat=True)) == dict.fromkeys(PHONES, 1)
    wait_for(
        lambda: not OutboxIntent.objects.filter(completed_at__isnull=True).exists(),
        timeout=30,
        message="the worker to mark the redelivered intents completed",
    )


def test_the_relay_job_with_the_broker_down_fails_with_the_reason_in_its_run_and_the_rows_stay(
    transactional_db: Any,
) -> None:
    # Given an intent left behind
    OutboxIntent.objects.create(task_name="notifications.deliver", kwargs={"notification_id": 1}, dedupe_key="left")
    # When an operator runs the relay from the CLI while the broker refuses connections
    result = manage("jobs", "run", "outbox_relay", "--sync", broker_url=closed_port_broker())
    # Then the command fails with the reason, the run records it, and the row is still waiting
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Could not reach the broker" in result.stderr
    run = JobRun.objects.get(job_key="outbox_relay")
    assert run.status == JobRun.Status.FAILED and "Could not reach the broker" in run.error
    intent = OutboxIntent.objects.get()
    assert intent.published_at is None and intent.attempts == 1 and intent.last_error
