"""SchedulerService: the one way to set up, trigger and inspect catalog jobs.

Usable from `manage.py shell`:

    >>> from core.scheduler import SchedulerService
    >>> SchedulerService.setup_default_tasks()
    >>> SchedulerService.trigger_manual_update("payment_timeouts")
    >>> SchedulerService.get_task_status()
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import transaction
from django.db.models import Count, OuterRef, Subquery
from django.utils import timezone
from django_celery_beat.models import CrontabSchedule, IntervalSchedule, PeriodicTask, PeriodicTasks

from core.broker import Message
from core.catalog import Crontab, Every, Job, JobCatalog
from core.errors import Unavailable
from core.models import JobRun, JobState
from core.services import jobruns
from core.services.audit import audit_record
from core.services.outbox import BROKER_ERRORS, messages_publish
from core.slots import dst_warnings, next_fire, period_seconds, preview, schedule_zone, slot_schedule
from core.task_base import SOURCE_HEADER
from core.transactions import on_commit_robust


class BrokerUnavailable(Unavailable):
    """The trigger could not reach the broker: the run is recorded failed with the reason."""


def _schedule_row(job: Job) -> dict[str, Any]:
    schedule = job.schedule
    # filter().first() rather than get_or_create(): django-celery-beat has no unique
    # constraint, and an operator may well have created the same schedule twice.
    if isinstance(schedule, Every):
        every: dict[str, Any] = {"every": schedule.seconds, "period": IntervalSchedule.SECONDS}
        interval = IntervalSchedule.objects.filter(**every).order_by("pk").first()
        return {"interval": interval or IntervalSchedule.objects.create(**every), "crontab": None}
    assert isinstance(schedule, Crontab)
    fields = {
        "minute": schedule.minute,
        "hour": schedule.hour,
        "day_of_week": schedule.day_of_week,
        "day_of_month": schedule.day_of_month,
        "month_of_year": schedule.month_of_year,
        "timezone": schedule.timezone,
    }
    cron = CrontabSchedule.objects.filter(**fields).order_by("pk").first()
    return {"interval": None, "crontab": cron or CrontabSchedule.objects.create(**fields)}


def _periodic_defaults(job: Job) -> dict[str, Any]:
    return {
        "task": job.task,
        "enabled": job.enabled,
        "description": job.description,
        "expire_seconds": job.expire_seconds,
        "args": "[]",
        "kwargs": "{}",
        "solar": None,
        "clocked": None,
        "one_off": False,
        **_schedule_row(job),
    }


def describe_periodic_task(task: PeriodicTask) -> str:
    if task.interval_id:
        return _interval_text(task.interval)
    if task.crontab_id:
        c = task.crontab
        from core.catalog import describe_crontab

        return describe_crontab(c.minute, c.hour, c.day_of_week, c.day_of_month, c.month_of_year, str(c.timezone))
    return "one-off or solar schedule"


def _interval_text(interval: IntervalSchedule) -> str:
    from core.catalog import describe_interval

    seconds = {
        IntervalSchedule.DAYS: 86400,
        IntervalSchedule.HOURS: 3600,
        IntervalSchedule.MINUTES: 60,
        IntervalSchedule.SECONDS: 1,
        IntervalSchedule.MICROSECONDS: 0,
    }[interval.period]
    return describe_interval(interval.every * seconds) if seconds else f"every {interval.every} µs"


def _slot_timing(task: PeriodicTask) -> tuple[Any, float] | None:
    """The entry's slot schedule and period (core.slots), or None for solar and clocked ones."""
    try:
        schedule = slot_schedule(task.schedule)
        return schedule, period_seconds(schedule, timezone.now())
    except Exception:
        return None


def job_lateness(job: Job, entry: PeriodicTask | None, state: JobState | None, last: JobRun | None) -> float | None:
    """Seconds past due when the job's last run started more than its period plus grace ago, else None.

    Only for an enabled, not paused, slot-scheduled job; a job that never ran counts from
    when its schedule was last changed.
    """
    if entry is None or not entry.enabled or (state is not None and state.paused_at is not None):
        return None
    timing = _slot_timing(entry)
    if timing is None:
        return None
    _, period = timing
    reference = (last.started_at or last.queued_at) if last else entry.date_changed
    if reference is None:
        return None
    overdue = (timezone.now() - reference).total_seconds() - period - job.grace_seconds(period)
    return overdue if overdue > 0 else None


def schedule_preview(task: PeriodicTask, count: int = 10) -> dict[str, Any] | None:
    """The next `count` fire times in the schedule's time zone and in UTC, and DST warnings."""
    timing = _slot_timing(task)
    if timing is None:
        return None
    schedule = timing[0]
    now = timezone.now()
    fires = preview(schedule, now, count)
    return {
        "timezone": str(schedule_zone(schedule)),
        "next_fire_times": [
            {"local": f.local.isoformat(), "utc": f.at.isoformat().replace("+00:00", "Z"), "dst": f.dst} for f in fires
        ],
        "warnings": dst_warnings(schedule, now),
    }


def _next_run(task: PeriodicTask) -> datetime | None:
    if not task.enabled:
        return None
    timing = _slot_timing(task)
    if timing is not None:
        return next_fire(timing[0], timezone.now())
    schedule = task.schedule
    last = task.last_run_at or task.start_time or task.date_changed or timezone.now()
    try:
        remaining = schedule.remaining_estimate(last)
    except Exception:
        return None
    nxt = timezone.now() + remaining if remaining.total_seconds() > 0 else timezone.now()
    return nxt


class SchedulerService:
    @staticmethod
    def setup_default_tasks(reset: bool = False) -> dict[str, list[str]]:
        """Create the beat entries that are missing; keep what an operator changed unless `reset`.

        Entries are matched on their name, which is the job key, and updated in
        place: never deleted and recreated, so run counts and history survive.
        """
        created: list[str] = []
        reset_keys: list[str] = []
        kept: list[str] = []
        with transaction.atomic():
            for job in JobCatalog.all():
                if job.schedule is None:
                    continue
                existing = PeriodicTask.objects.select_for_update().filter(name=job.key).first()
                if existing is None:
                    entry = PeriodicTask.objects.create(name=job.key, **_periodic_defaults(job))
                    created.append(job.key)
                    audit_record(
                        action="schedule.create",
                        source="setup",
                        target=f"schedule:{entry.pk} {job.key}",
                        after={"schedule": describe_periodic_task(entry), "enabled": entry.enabled},
                    )
                elif reset:
                    before = {"schedule": describe_periodic_task(existing), "enabled": existing.enabled}
                    for attr, value in _periodic_defaults(job).items():
                        setattr(existing, attr, value)
                    existing.save()
                    reset_keys.append(job.key)
                    audit_record(
                        action="schedule.reset",
                        source="setup",
                        target=f"schedule:{existing.pk} {job.key}",
                        before=before,
                        after={"schedule": describe_periodic_task(existing), "enabled": existing.enabled},
                    )
                else:
                    kept.append(job.key)
            if created or reset_keys:
                PeriodicTasks.update_changed()
        return {"created": created, "reset": reset_keys, "kept": kept}

    @staticmethod
    def trigger_manual_update(
        key: str,
        params: dict[str, Any] | None = None,
        sync: bool = False,
        source: str = "shell",
        user_id: int | None = None,
        audit_action: str | None = "job.trigger",
        audit_data: dict[str, Any] | None = None,
    ) -> JobRun:
        """Validate `params`, then enqueue the job on its queue (or run it inline when `sync`).

        Raises UnknownJob or InvalidJobParams before anything is recorded or sent. The
        trigger is audited (core.AuditLog) as `audit_action`, unless None.
        """
        job = JobCatalog.get(key)
        kwargs = job.validate_params(params)
        if source not in JobRun.Source.values:
            raise ValueError(f"source must be one of {', '.join(JobRun.Source.values)}")
        from celery import current_app

        task = current_app.tasks[job.task]
        task_id = str(uuid.uuid4())
        run = jobruns.jobrun_create_queued(job=job, task_id=task_id, source=source, params=kwargs, user_id=user_id)
        if audit_action and source != JobRun.Source.BEAT:
            audit_record(
                action=audit_action,
                source=source,
                actor=user_id,
                target=f"job:{key}",
                params=kwargs,
                task_id=task_id,
                job_run_id=str(run.pk),
                inline=sync,
                **(audit_data or {}),
            )
        headers = {SOURCE_HEADER: source}
        if sync:
            task.apply(kwargs=kwargs, task_id=task_id, headers=headers, throw=False)
            run.refresh_from_db()
            return run

        message = Message(task=job.task, kwargs=kwargs, task_id=task_id, headers=headers)

        def send() -> None:
            try:
                messages_publish([message])
            except BROKER_ERRORS as exc:  # the broker is down: say so rather than leave a run "queued" forever
                jobruns.jobrun_mark_failed(task_id=task_id, exc=exc)
                raise BrokerUnavailable(f"Could not reach the broker to enqueue {key}: {exc}") from exc

        if transaction.get_connection().in_atomic_block:
            # Inside the caller's transaction: send after it commits, and never let a
            # broker failure stop the caller's other on-commit hooks (the run records it).
            on_commit_robust(send, name=f"enqueue_job_{key}")
        else:
            send()
        return run

    @staticmethod
    def get_task_status(key: str | None = None) -> list[dict[str, Any]] | dict[str, Any]:
        """Per job: enabled, schedule in words, last and next run, run count, last outcome."""
        jobs = [JobCatalog.get(key)] if key else JobCatalog.all()
        keys = [j.key for j in jobs]
        periodic = {t.name: t for t in PeriodicTask.objects.filter(name__in=keys).select_related("interval", "crontab")}
        stats: dict[str, dict[str, Any]] = {
            row["job_key"]: dict(row)
            for row in JobRun.objects.filter(job_key__in=keys).values("job_key").annotate(runs=Count("id"))
        }
        # Each job's newest run in one query (a correlated subquery, portable to SQLite).
        newest = JobRun.objects.filter(job_key=OuterRef("job_key")).order_by("-queued_at").values("pk")[:1]
        last_runs = {run.job_key: run for run in JobRun.objects.filter(job_key__in=keys, pk=Subquery(newest))}
        states = {state.job_key: state for state in JobState.objects.filter(job_key__in=keys)}
        out = []
        for job in jobs:
            entry = periodic.get(job.key)
            last = last_runs.get(job.key)
            state = states.get(job.key)
            nxt = _next_run(entry) if entry else None
            if state is not None and state.paused_at is not None:
                nxt = None
            late = job_lateness(job, entry, state, last)
            out.append(
                {
                    "key": job.key,
                    "task": job.task,
                    "queue": job.queue,
                    "description": job.description,
                    "scheduled": entry is not None,
                    "enabled": bool(entry and entry.enabled),
                    "schedule": describe_periodic_task(entry) if entry else job.schedule_text(),
                    "default_schedule": job.schedule_text(),
                    "last_run_at": (entry.last_run_at if entry else None) or (last.queued_at if last else None),
                    "total_run_count": entry.total_run_count if entry else 0,
                    "runs_recorded": stats.get(job.key, {}).get("runs", 0),
                    "next_run_at": nxt,
                    "last_status": last.status if last else None,
                    "last_summary": last.summary if last else None,
                    "last_error": last.error if last else "",
                    "last_task_id": last.task_id if last else None,
                    "params": job.param_fields(),
                    "misfire": job.misfire,
                    "critical": job.critical,
                    "late": late is not None,
                    "late_seconds": round(late) if late is not None else None,
                    "paused": bool(state and state.paused_at),
                    "paused_at": state.paused_at if state else None,
                    "pause_reason": state.pause_reason if state else "",
                    "consecutive_failures": state.consecutive_failures if state else 0,
                    "missed_slots": state.missed_slots if state else 0,
                    "last_slot": state.last_slot if state and entry else None,
                }
            )
        return out[0] if key else out

    @staticmethod
    def get_job_detail(key: str) -> dict[str, Any]:
        """The status of one job, with the next 10 fire times of its live schedule."""
        detail = dict(SchedulerService.get_task_status(key))  # type: ignore[arg-type]
        entry = PeriodicTask.objects.filter(name=key).select_related("interval", "crontab").first()
        detail["preview"] = schedule_preview(entry) if entry else None
        return detail

    @staticmethod
    def retry_run(run_id: str, *, source: str = "shell", user_id: int | None = None) -> JobRun:
        """Run a failed (or revoked, lost) run's job again with the same parameters, as a new run linked to it."""
        from core.errors import Conflict, NotFound

        try:
            previous = JobRun.objects.get(pk=run_id)
        except (JobRun.DoesNotExist, ValueError, DjangoValidationError):
            raise NotFound(f"No job run {run_id}.") from None
        if previous.status not in (JobRun.Status.FAILED, JobRun.Status.REVOKED, JobRun.Status.LOST):
            raise Conflict(f"Run {run_id} is {previous.status}; only failed, lost or revoked runs are retried.")
        # Audited where a trigger is, before its message is sent: a retry the broker refused is on record too.
        run = SchedulerService.trigger_manual_update(
            previous.job_key,
            previous.params,
            source=source,
            user_id=user_id,
            audit_action="job.retry",
            audit_data={"before": {"job_run_id": str(previous.pk), "status": previous.status}},
        )
        JobRun.objects.filter(pk=run.pk).update(retry_of=previous)
        run.retry_of = previous
        return run

    @staticmethod
    def resume(key: str, *, source: str = "shell", user_id: int | None = None) -> bool:
        """Resume a job paused after repeated failures; False when it was not paused."""
        JobCatalog.get(key)
        state = JobState.objects.filter(job_key=key).only("paused_at", "pause_reason").first()
        if not jobruns.jobstate_resume(job_key=key):
            return False
        audit_record(
            action="job.resume",
            source=source,
            actor=user_id,
            target=f"job:{key}",
            before={
                "paused_at": state.paused_at if state else None,
                "pause_reason": state.pause_reason if state else "",
            },
        )
        return True
