"""Writes to core.JobRun. Called by the job-aware task base, never by tasks themselves."""

from __future__ import annotations

import traceback
from datetime import timedelta
from typing import Any

from django.db.models import F
from django.utils import timezone

from core.catalog import Job
from core.models import JobRun
from core.services.bulk import delete_in_chunks


def jobrun_create_queued(
    *, job: Job, task_id: str, source: str, params: dict[str, Any], user_id: int | None = None
) -> JobRun:
    return JobRun.objects.create(
        job_key=job.key,
        task_name=job.task,
        task_id=task_id,
        source=source,
        status=JobRun.Status.QUEUED,
        params=params,
        triggered_by_id=user_id,
    )


def jobrun_mark_running(*, job: Job, task_id: str, source: str, params: dict[str, Any], worker: str) -> JobRun | None:
    """The run is starting (or starting again after a retry or a redelivery).

    Returns None when the run was revoked: a revoke sent while no worker was up
    never reached a worker's memory, so the recorded status is what makes it stick.
    """
    run, created = JobRun.objects.get_or_create(
        task_id=task_id,
        defaults={
            "job_key": job.key,
            "task_name": job.task,
            "source": source,
            "params": params,
            "status": JobRun.Status.RUNNING,
            "started_at": timezone.now(),
            "attempts": 1,
            "worker": worker,
        },
    )
    if not created:
        if run.status == JobRun.Status.REVOKED:
            return None
        JobRun.objects.filter(pk=run.pk).exclude(status=JobRun.Status.REVOKED).update(
            status=JobRun.Status.RUNNING,
            started_at=timezone.now(),
            finished_at=None,
            attempts=F("attempts") + 1,
            worker=worker,
        )
    return run


_UNFINISHED = (JobRun.Status.QUEUED, JobRun.Status.RUNNING, JobRun.Status.RETRYING)


def _finish(
    task_id: str, *, status: str, summary: Any = None, error: str = "", only_if_unfinished: bool = False
) -> None:
    now = timezone.now()
    run = JobRun.objects.filter(task_id=task_id).only("started_at").first()
    if run is None:
        return
    duration = int((now - run.started_at).total_seconds() * 1000) if run.started_at else None
    # A revoked run stays revoked; an outcome already recorded is not overwritten by a late one.
    rows = JobRun.objects.filter(task_id=task_id).exclude(status=JobRun.Status.REVOKED)
    if only_if_unfinished:
        rows = rows.filter(status__in=_UNFINISHED)
    rows.update(status=status, summary=summary, error=error, finished_at=now, duration_ms=duration)


def jobrun_mark_succeeded(*, task_id: str, result: Any) -> None:
    summary = result if isinstance(result, dict) else {"result": result}
    _finish(task_id, status=JobRun.Status.SUCCEEDED, summary=summary)


def jobrun_mark_failed(*, task_id: str, exc: BaseException, only_if_unfinished: bool = False) -> None:
    text = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    _finish(task_id, status=JobRun.Status.FAILED, error=text[:5000], only_if_unfinished=only_if_unfinished)


def jobrun_mark_skipped(*, task_id: str, holder: str | None) -> dict[str, Any]:
    summary = {"skipped": True, "reason": "another run of this job is in progress", "running_task_id": holder}
    _finish(task_id, status=JobRun.Status.SKIPPED, summary=summary)
    return summary


def jobrun_mark_retrying(*, task_id: str, reason: str) -> None:
    JobRun.objects.filter(task_id=task_id).update(status=JobRun.Status.RETRYING, error=reason[:5000])


def jobrun_mark_revoked(*, task_id: str, running_too: bool = False) -> int:
    """Close a run that will not execute. A running one only when it was terminated."""
    statuses = [JobRun.Status.QUEUED, JobRun.Status.RETRYING]
    if running_too:
        statuses.append(JobRun.Status.RUNNING)
    return JobRun.objects.filter(task_id=task_id, status__in=statuses).update(
        status=JobRun.Status.REVOKED, finished_at=timezone.now()
    )


def jobruns_close_lost(*, older_than_seconds: int) -> int:
    """Runs still `running` long after the hard time limit lost their worker: close them."""
    cutoff = timezone.now() - timedelta(seconds=older_than_seconds)
    return JobRun.objects.filter(status=JobRun.Status.RUNNING, started_at__lt=cutoff).update(
        status=JobRun.Status.FAILED, error="lost: no outcome recorded (worker died?)", finished_at=timezone.now()
    )


def jobruns_delete_old(*, older_than_days: int) -> int:
    """Delete finished runs older than the retention period, a chunk at a time."""
    cutoff = timezone.now() - timedelta(days=older_than_days)
    return delete_in_chunks(JobRun.objects.filter(queued_at__lt=cutoff, status__in=JobRun.FINISHED))
