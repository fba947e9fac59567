"""Runs never hang: close runs whose worker died, and queued runs whose message is gone.

Called by the leader beat every WATCHDOG_SECONDS (core.beat) and by the job_runs_cleanup job.

- A `running` run renews `jobs:alive:<task id>` while it runs (core.leases.RunAlive). Once
  that key has expired, its process is gone: the run is closed `lost` and its job's overlap
  lease released at once (not at the lease's TTL), so the next trigger runs.
- A `queued` run older than its expiry (and at least QUEUED_GRACE_SECONDS) whose message is
  on no queue and reserved by no worker will never start: closed `lost`.

The work itself is resumed by the job's next run: every job is idempotent. If the broker
delivers the killed run's message again later, the run records the new attempt and keeps
the earlier one in its summary (`earlier_attempts`).
"""

from __future__ import annotations

import logging
from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from core.broker import held_task_ids
from core.catalog import JobCatalog, UnknownJob
from core.leases import RUN_ALIVE_SECONDS, lease_release_for, run_alive_key
from core.models import JobRun
from core.redis import get_redis
from core.services.jobruns import jobruns_mark_lost

logger = logging.getLogger(__name__)

QUEUED_GRACE_SECONDS = 600
BATCH = 500


def runs_watchdog() -> dict[str, int]:
    return {"running_lost": _close_dead_running(), "queued_lost": _close_queued_without_message()}


def _close_dead_running() -> int:
    cutoff = timezone.now() - timedelta(seconds=RUN_ALIVE_SECONDS)
    running = list(
        JobRun.objects.filter(status=JobRun.Status.RUNNING, started_at__lt=cutoff).values_list("task_id", "job_key")[
            :BATCH
        ]
    )
    if not running:
        return 0
    client = get_redis()
    with client.pipeline(transaction=False) as pipe:
        for task_id, _ in running:
            pipe.exists(run_alive_key(task_id))
        alive = pipe.execute()
    dead = [(task_id, key) for (task_id, key), up in zip(running, alive, strict=True) if not up]
    # Free the leases first: once a run reads `lost`, its job must already be runnable again.
    for task_id, key in dead:
        if lease_release_for(key, task_id):
            logger.warning("watchdog: released the %s lease held by dead run %s", key, task_id)
    closed = jobruns_mark_lost(
        task_ids=[task_id for task_id, _ in dead],
        reason=f"lost: its worker stopped reporting for {RUN_ALIVE_SECONDS}s (killed or its machine went away)",
        statuses=(JobRun.Status.RUNNING,),
    )
    if closed:
        logger.warning("watchdog: %d run(s) lost with their worker: %s", len(closed), ", ".join(closed))
    return len(closed)


def _expiry_seconds(job_key: str) -> int:
    try:
        expires = JobCatalog.get(job_key).expire_seconds
    except UnknownJob:
        expires = None
    return max(expires or 0, QUEUED_GRACE_SECONDS)


def _close_queued_without_message() -> int:
    now = timezone.now()
    candidates = [
        (task_id, key)
        for task_id, key, queued_at in JobRun.objects.filter(
            status=JobRun.Status.QUEUED, queued_at__lt=now - timedelta(seconds=QUEUED_GRACE_SECONDS)
        ).values_list("task_id", "job_key", "queued_at")[:BATCH]
        if (now - queued_at).total_seconds() > _expiry_seconds(key)
    ]
    if not candidates:
        return 0
    on_broker = held_task_ids(settings.JOB_QUEUES)
    if on_broker is None:
        return 0
    gone = [task_id for task_id, _ in candidates if task_id not in on_broker]
    closed = jobruns_mark_lost(
        task_ids=gone,
        reason="lost: its message is on no queue and held by no worker (the broker lost it)",
        statuses=(JobRun.Status.QUEUED,),
    )
    return len(closed)
