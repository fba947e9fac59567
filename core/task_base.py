"""The Celery base task for the whole project (config/celery.py sets it as task_cls).

A task named in the job catalog records each run in core.JobRun (queued → running →
succeeded | failed | retrying, or skipped when another copy holds the job's lease).
Every other task runs exactly as a plain Celery task.
"""

from __future__ import annotations

import inspect
from datetime import datetime
from typing import Any, ClassVar

from celery import Task, states
from celery.exceptions import Ignore, Retry

SOURCE_HEADER = "job_source"
# Set by the outbox on every message it publishes: the intent's id, marked completed when the task ends.
OUTBOX_HEADER = "outbox_intent"
# Set by beat (core.beat) on a scheduled job's message: the slot it was sent for, ISO 8601.
SLOT_HEADER = "job_slot"


def _slot(value: object) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(str(value))
    except ValueError:
        return None


def job_source(*, explicit: object, periodic_task_name: object) -> str:
    """Who started a run: the trigger's header, else beat's own header, else a bare .delay()."""
    if explicit:
        return str(explicit)
    return "beat" if periodic_task_name else "shell"


def request_header(request: Any, name: str) -> Any:
    """A custom message header: a worker merges it into the request, an eager `.apply()` keeps it in `headers`."""
    value = getattr(request, name, None)
    if value is None:
        value = (getattr(request, "headers", None) or {}).get(name)
    return value


class JobAwareTask(Task[Any, Any]):
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        intent = request_header(self.request, OUTBOX_HEADER)
        try:
            result = self._run(args, kwargs)
        except Retry:
            raise  # not finished: Celery sends it again
        except BaseException:
            if intent:
                _intent_completed(intent)
            raise
        if intent:
            _intent_completed(intent)
        return result

    def _run(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        from core.catalog import JobCatalog

        task_id = self.request.id
        job = JobCatalog.for_task(self.name) if task_id else None
        if job is None or task_id is None:
            return super().__call__(*args, **kwargs)
        return self._run_recorded(job, task_id, args, kwargs)

    def _source(self) -> str:
        return job_source(
            explicit=request_header(self.request, SOURCE_HEADER),
            periodic_task_name=getattr(self.request, "periodic_task_name", None),
        )

    def _run_recorded(self, job: Any, task_id: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        from core import progress
        from core.leases import JobLease, RunAlive
        from core.models import JobRun
        from core.services import jobruns

        run = jobruns.jobrun_mark_running(
            job=job,
            task_id=task_id,
            source=self._source(),
            params=kwargs,
            worker=self.request.hostname or "",
            slot=_slot(request_header(self.request, SLOT_HEADER)),
        )
        if run is None:
            # Revoked while no worker was listening: record it as Celery would, run nothing.
            self.update_state(state=states.REVOKED)
            raise Ignore()
        if run.status in (JobRun.Status.DUPLICATE, JobRun.Status.SUCCEEDED):
            # A second run for a slot that has one, or a finished slot's message re-delivered.
            return run.summary
        lease = JobLease(job.key, task_id, job.lease_seconds) if not job.allow_overlap else None
        acquired = False
        alive = RunAlive(task_id)
        alive.start()
        tracker: progress.Tracker | None = None
        try:
            if lease is not None:
                acquired = lease.acquire()
                if not acquired:
                    return jobruns.jobrun_mark_skipped(task_id=task_id, holder=lease.holder())
            with progress.tracking(task_id, write_at_end=False) as tracker:
                result = super().__call__(*args, **kwargs)
            jobruns.jobrun_mark_succeeded(task_id=task_id, result=result, progress=tracker.values())
            return result
        except Retry as exc:
            jobruns.jobrun_mark_retrying(task_id=task_id, reason=str(exc.exc or exc))
            raise
        except BaseException as exc:
            reported = tracker.values() if tracker is not None else None
            jobruns.jobrun_mark_failed(task_id=task_id, exc=exc, progress=reported)
            raise
        finally:
            alive.stop()
            if lease is not None and acquired:
                lease.release()

    def on_failure(self, exc: Exception, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
        # Also called in the worker's main process when the pool child was killed (hard
        # time limit, SIGKILL), where __call__ never got to record the outcome.
        from core.catalog import JobCatalog
        from core.services import jobruns

        if JobCatalog.for_task(self.name) is not None:
            jobruns.jobrun_mark_failed(task_id=task_id, exc=exc, only_if_unfinished=True)


class BodyRedactingTask(JobAwareTask):
    """Publishes the message text of its arguments as a length only.

    With `result_extended`, django-celery-results stores each task's arguments from the
    message's `argsrepr` / `kwargsrepr` (Flower shows them too). This task class writes
    those without the fields named in `redacted`, so the subject and body of an email are
    never kept outside the notifications outbox.
    """

    redacted: ClassVar[frozenset[str]] = frozenset()

    # Celery's signature has a dozen options; they pass through untouched.
    def apply_async(self, args: Any = None, kwargs: Any = None, *more: Any, **options: Any) -> Any:
        names = list(inspect.signature(self.run).parameters)
        positional = list(args or ())
        options.setdefault(
            "argsrepr",
            repr([self._hide(names[i] if i < len(names) else "", v) for i, v in enumerate(positional)]),
        )
        options.setdefault("kwargsrepr", repr({k: self._hide(k, v) for k, v in (kwargs or {}).items()}))
        return super().apply_async(args, kwargs, *more, **options)

    def _hide(self, name: str, value: Any) -> Any:
        if name in self.redacted and isinstance(value, str):
            return f"<{len(value)} characters>"
        return value


def _intent_completed(intent: object) -> None:
    """The outbox intent behind this message ran to an end: the relay must not publish it again."""
    from core.services.outbox import outbox_mark_completed

    try:
        outbox_mark_completed(intent_id=int(str(intent)))
    except ValueError:
        return  # not an id we set: a message from elsewhere that borrowed the header name
