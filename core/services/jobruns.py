"""Writes to core.JobRun. Called by the job-aware task base, never by tasks themselves."""

from __future__ import annotations

import traceback
import uuid
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from core.catalog import Job
from core.models import JobRun, JobState
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


def jobrun_mark_running(
    *, job: Job, task_id: str, source: str, params: dict[str, Any], worker: str, slot: datetime | None = None
) -> JobRun | None:
    """The run is starting (or starting again after a retry or a redelivery).

    Returns None when the run was revoked: a revoke sent while no worker was up
    never reached a worker's memory, so the recorded status is what makes it stick.
    A run whose status comes back `duplicate` (its slot already has a run) or
    `succeeded` (a re-delivered message of a finished slot) must not run.
    """
    defaults = {
        "job_key": job.key,
        "task_name": job.task,
        "source": source,
        "params": params,
        "status": JobRun.Status.RUNNING,
        "started_at": timezone.now(),
        "attempts": 1,
        "worker": worker,
        "slot": slot,
    }
    try:
        with transaction.atomic():
            run, created = JobRun.objects.get_or_create(task_id=task_id, defaults=defaults)
    except IntegrityError:
        first = JobRun.objects.filter(job_key=job.key, slot=slot).only("task_id").first()
        summary = {
            "duplicate": True,
            "slot": slot.isoformat() if slot else None,
            "reason": "this slot already has a run",
            "run_task_id": first.task_id if first else None,
        }
        now = timezone.now()
        defaults.update(status=JobRun.Status.DUPLICATE, slot=None, summary=summary, finished_at=now, duration_ms=0)
        run, _ = JobRun.objects.update_or_create(task_id=task_id, defaults=defaults)
        return run
    if not created:
        if run.status == JobRun.Status.REVOKED:
            return None
        if run.status == JobRun.Status.SUCCEEDED and run.slot is not None:
            return run  # the slot ran to success already: a re-delivered copy runs nothing
        changes: dict[str, Any] = {
            "status": JobRun.Status.RUNNING,
            "started_at": timezone.now(),
            "finished_at": None,
            "attempts": F("attempts") + 1,
            "worker": worker,
        }
        if run.started_at is not None and run.status != JobRun.Status.RETRYING:
            # Started before and did not ask for a retry: the message came back after its worker
            # died (or was lost). Keep what that attempt left, so the final summary covers both.
            earlier = {
                "status": run.status,
                "worker": run.worker,
                "started_at": run.started_at.isoformat(),
                "error": run.error[:500],
            }
            history = list((run.summary or {}).get("earlier_attempts", [])) if isinstance(run.summary, dict) else []
            changes["summary"] = {
                **(run.summary if isinstance(run.summary, dict) else {}),
                "earlier_attempts": [*history, earlier],
            }
        JobRun.objects.filter(pk=run.pk).exclude(status=JobRun.Status.REVOKED).update(**changes)
    return run


_UNFINISHED = (JobRun.Status.QUEUED, JobRun.Status.RUNNING, JobRun.Status.RETRYING)


def _finish(
    task_id: str,
    *,
    status: str,
    summary: Any = None,
    error: str = "",
    only_if_unfinished: bool = False,
    only_from: tuple[str, ...] | None = None,
    progress: tuple[int, int | None] | None = None,
) -> bool:
    """Record the run's outcome; False when there was nothing to change (no run, or its status
    was not one of `only_from`, or not unfinished with `only_if_unfinished`)."""
    now = timezone.now()
    run = JobRun.objects.filter(task_id=task_id).only("started_at", "summary", "job_key").first()
    if run is None:
        return False
    # What beat and earlier attempts recorded on the run stays in its final summary.
    carry: dict[str, Any] = {}
    if isinstance(run.summary, dict):
        if "missed_slots" in run.summary:
            carry["catch_up_for_missed_slots"] = run.summary["missed_slots"]
        if run.summary.get("earlier_attempts"):
            carry.update(redelivered=True, earlier_attempts=run.summary["earlier_attempts"])
    if carry:
        summary = {
            **(summary if isinstance(summary, dict) else {} if summary is None else {"result": summary}),
            **carry,
        }
    duration = int((now - run.started_at).total_seconds() * 1000) if run.started_at else None
    # A revoked run stays revoked; an outcome already recorded is not overwritten by a late one.
    rows = JobRun.objects.filter(task_id=task_id).exclude(status=JobRun.Status.REVOKED)
    if only_if_unfinished:
        rows = rows.filter(status__in=_UNFINISHED)
    if only_from is not None:
        rows = rows.filter(status__in=only_from)
    changes: dict[str, Any] = {
        "status": status,
        "summary": summary,
        "error": error,
        "finished_at": now,
        "duration_ms": duration,
    }
    if progress is not None:  # the run's last report, written with its outcome
        changes.update(progress_done=progress[0], progress_total=progress[1], progress_at=now)
    if not rows.update(**changes):
        return False
    _track_outcome(run.job_key, status, error)
    return True


def _track_outcome(job_key: str, status: str, error: str) -> None:
    """Count failed runs in a row; pause the job at its catalog limit, with the reason."""
    from core.catalog import JobCatalog, UnknownJob

    if status == JobRun.Status.SUCCEEDED:
        JobState.objects.filter(job_key=job_key, consecutive_failures__gt=0).update(consecutive_failures=0)
        return
    if status not in (JobRun.Status.FAILED, JobRun.Status.LOST):
        return
    try:
        limit = JobCatalog.get(job_key).pause_after_failures
    except UnknownJob:
        return
    now = timezone.now()
    JobState.objects.get_or_create(job_key=job_key, defaults={"last_slot": now})
    JobState.objects.filter(job_key=job_key).update(consecutive_failures=F("consecutive_failures") + 1)
    if limit:
        last_line = error.strip().splitlines()[-1][:500] if error.strip() else "no error recorded"
        JobState.objects.filter(job_key=job_key, paused_at__isnull=True, consecutive_failures__gte=limit).update(
            paused_at=now, pause_reason=f"paused after {limit} failed runs in a row; the last: {last_line}"
        )


def jobstate_resume(*, job_key: str) -> bool:
    """Resume a paused job: beat sends it again from its next slot (one catch-up under run_once)."""
    return bool(
        JobState.objects.filter(job_key=job_key, paused_at__isnull=False).update(
            paused_at=None, pause_reason="", consecutive_failures=0
        )
    )


def jobrun_mark_succeeded(*, task_id: str, result: Any, progress: tuple[int, int | None] | None = None) -> None:
    summary = result if isinstance(result, dict) else {"result": result}
    _finish(task_id, status=JobRun.Status.SUCCEEDED, summary=summary, progress=progress)


def jobrun_mark_failed(
    *,
    task_id: str,
    exc: BaseException,
    only_if_unfinished: bool = False,
    progress: tuple[int, int | None] | None = None,
) -> None:
    text = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    _finish(
        task_id,
        status=JobRun.Status.FAILED,
        error=text[:5000],
        only_if_unfinished=only_if_unfinished,
        progress=progress,
    )


def jobruns_mark_lost(*, task_ids: list[str], reason: str, statuses: tuple[str, ...]) -> list[str]:
    """Close runs that will never report (their worker died, or their message is gone) as `lost`."""
    # The status guard is the UPDATE's own condition: a run that finished or started again
    # meanwhile is left alone and not reported closed.
    return [
        task_id for task_id in task_ids if _finish(task_id, status=JobRun.Status.LOST, error=reason, only_from=statuses)
    ]


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
    """Runs still `running` long after the hard time limit lost their worker: close them (the watchdog's backstop)."""
    cutoff = timezone.now() - timedelta(seconds=older_than_seconds)
    return JobRun.objects.filter(status=JobRun.Status.RUNNING, started_at__lt=cutoff).update(
        status=JobRun.Status.LOST, error="lost: no outcome recorded (worker died?)", finished_at=timezone.now()
    )


def jobruns_delete_old(*, older_than_days: int) -> int:
    """Delete finished runs older than the retention period, a chunk at a time."""
    cutoff = timezone.now() - timedelta(days=older_than_days)
    return delete_in_chunks(JobRun.objects.filter(queued_at__lt=cutoff, status__in=JobRun.FINISHED))


def jobstates_for(keys: Iterable[str], *, start: datetime) -> dict[str, JobState]:
    """Beat's state of each job, created at `start` for jobs beat has never sent (no catch-up for those)."""
    keys = list(keys)
    JobState.objects.bulk_create(
        [JobState(job_key=key, last_slot=start) for key in keys], ignore_conflicts=True, batch_size=500
    )
    return {state.job_key: state for state in JobState.objects.filter(job_key__in=keys)}


def jobstate_claim_slot(*, job: Job, slot: datetime, missed: int, send: bool) -> str | None:
    """Advance the job's last slot to `slot`, if no beat has yet; record the run when `send`.

    Returns the new run's task id ("" when the slot is skipped), or None when the slot (or
    a later one) was already claimed: by another beat, or by this one before a restart.
    """
    now = timezone.now()
    changes: dict[str, Any] = {"last_slot": slot}
    if send:
        changes["last_sent_at"] = now
    if missed:
        changes["missed_slots"] = F("missed_slots") + missed
        changes["last_missed_at"] = now
    task_id = str(uuid.uuid4()) if send else ""
    try:
        with transaction.atomic():
            if not JobState.objects.filter(job_key=job.key, last_slot__lt=slot).update(**changes):
                return None
            if send:
                JobRun.objects.create(
                    job_key=job.key,
                    task_name=job.task,
                    task_id=task_id,
                    source=JobRun.Source.BEAT,
                    status=JobRun.Status.QUEUED,
                    slot=slot,
                    summary={"missed_slots": missed} if missed else None,
                )
    except IntegrityError:  # the slot has a run already (its state was reset): it is not sent again
        return None
    return task_id
