"""The job catalog: every schedulable or triggerable job, declared once in its app's jobs.py.

An app's `jobs.py` defines `JOBS: list[Job]`. From those declarations come the beat
entries, the REST trigger, the CLI, the shell service, the admin "Run now" and
docs/jobs.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from importlib import import_module
from typing import Any
from zoneinfo import ZoneInfo

from celery.schedules import crontab as celery_crontab
from django.apps import apps
from django.utils.module_loading import module_has_submodule
from rest_framework import serializers

from core.errors import Invalid, NotFound


class UnknownJob(NotFound):
    def __init__(self, key: str) -> None:
        super().__init__(f"Unknown job {key!r}. Run `python manage.py jobs list` to see the catalog.")
        self.key = key


class InvalidJobParams(Invalid):
    def __init__(self, key: str, errors: dict[str, Any]) -> None:
        self.key = key
        super().__init__(errors, detail=f"Invalid parameters for {key}: {_flatten(errors)}")


def _flatten(errors: dict[str, Any]) -> str:
    parts = []
    for name, reasons in errors.items():
        text = "; ".join(str(r) for r in reasons) if isinstance(reasons, list) else str(reasons)
        parts.append(f"{name}: {text}")
    return ", ".join(parts)


@dataclass(frozen=True)
class Crontab:
    minute: str = "*"
    hour: str = "*"
    day_of_week: str = "*"
    day_of_month: str = "*"
    month_of_year: str = "*"
    timezone: str = "UTC"

    def describe(self) -> str:
        return describe_crontab(
            self.minute, self.hour, self.day_of_week, self.day_of_month, self.month_of_year, self.timezone
        )

    def period_seconds(self) -> int:
        """The gap between two consecutive runs, measured from a fixed reference."""
        schedule = celery_crontab(
            minute=self.minute,
            hour=self.hour,
            day_of_week=self.day_of_week,
            day_of_month=self.day_of_month,
            month_of_year=self.month_of_year,
        )
        # remaining_estimate() measures from the schedule's "now", so move it along.
        now = [datetime(2025, 1, 6, tzinfo=ZoneInfo(self.timezone))]
        schedule.nowfun = lambda: now[0]  # type: ignore[attr-defined]
        first = now[0] + schedule.remaining_estimate(now[0])
        now[0] = first
        second = first + schedule.remaining_estimate(first)
        return int((second - first).total_seconds())


@dataclass(frozen=True)
class Every:
    seconds: int

    def describe(self) -> str:
        return describe_interval(self.seconds)

    def period_seconds(self) -> int:
        return self.seconds


Schedule = Crontab | Every
MISFIRE_POLICIES = ("run_once", "skip")


@dataclass(frozen=True)
class Job:
    """One catalog entry.

    `expires`: a queued periodic message older than this is dropped, so a backlog
    never runs stale duplicates; defaults to the schedule's period.
    `lease_seconds`: the overlap guard's lease, renewed while the job runs; it is
    how long a dead worker keeps the job blocked.
    `pause_after_failures`: beat stops sending a job that failed this many times in a row,
    recording why, until someone resumes it (None: never). `critical`: /health/ answers 503
    while the job is late (its last run started more than its period plus grace ago).
    `misfire`: what beat does when it was down across one or more slots: "run_once" (one
    catch-up run for all of them, the default) or "skip" (wait for the next slot). A slot
    sent less than `misfire_grace` seconds late is on time under either policy; the
    default grace is half the period, at most five minutes.
    """

    key: str
    task: str
    description: str
    schedule: Schedule | None
    enabled: bool = True
    params: type[serializers.Serializer[Any]] | None = None
    expires: int | None = None
    lease_seconds: int = 60
    allow_overlap: bool = False
    misfire: str = "run_once"
    misfire_grace: int | None = None
    # Failed runs in a row after which beat stops sending the job (None: never pause).
    pause_after_failures: int | None = 5
    # A critical job that is late turns /health/ to 503.
    critical: bool = False
    app_label: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if self.misfire not in MISFIRE_POLICIES:
            raise ValueError(f"job {self.key}: misfire must be one of {', '.join(MISFIRE_POLICIES)}")

    def grace_seconds(self, period_seconds: float | None = None) -> float:
        """How late a slot may be sent and still count as on time; `period_seconds` is the live
        schedule's (an operator may have changed it in the admin), else the catalog's."""
        if self.misfire_grace is not None:
            return self.misfire_grace
        if period_seconds is None:
            period_seconds = self.schedule.period_seconds() if self.schedule else 600
        return max(1.0, min(period_seconds / 2, 300.0))

    @property
    def expire_seconds(self) -> int | None:
        if self.expires is not None:
            return self.expires
        return self.schedule.period_seconds() if self.schedule else None

    @property
    def queue(self) -> str:
        return queue_for_task(self.task)

    def schedule_text(self) -> str:
        if self.schedule is None:
            return "manual only"
        return self.schedule.describe()

    def param_fields(self) -> list[dict[str, Any]]:
        if self.params is None:
            return []
        out = []
        for name, f in self.params().fields.items():
            default = f.default if f.default is not serializers.empty else None
            out.append(
                {
                    "name": name,
                    "type": type(f).__name__.replace("Field", "").lower(),
                    "required": f.required,
                    "default": default() if callable(default) else default,
                    "help_text": str(f.help_text or ""),
                }
            )
        return out

    def validate_params(self, params: dict[str, Any] | None) -> dict[str, Any]:
        """Validated, JSON-ready keyword arguments for the task, or InvalidJobParams."""
        if params is None:
            params = {}
        if not isinstance(params, dict):
            raise InvalidJobParams(self.key, {"params": ["Must be an object."]})
        allowed = set(self.params().fields) if self.params else set()
        unknown = sorted(set(params) - allowed)
        if unknown:
            hint = f"Accepted: {', '.join(sorted(allowed))}." if allowed else "This job takes no parameters."
            raise InvalidJobParams(self.key, {name: [f"Unknown parameter. {hint}"] for name in unknown})
        if self.params is None:
            return {}
        serializer = self.params(data=params)
        if not serializer.is_valid():
            raise InvalidJobParams(self.key, dict(serializer.errors))
        # Only what the caller passed: omitted parameters fall back to settings in the worker.
        return {k: v for k, v in serializer.validated_data.items() if k in params}


class JobCatalog:
    """The jobs declared in each installed app's jobs.py, loaded once per process."""

    _jobs: dict[str, Job] | None = None
    _by_task: dict[str, Job] = {}

    @classmethod
    def _load(cls) -> dict[str, Job]:
        if cls._jobs is None:
            jobs: dict[str, Job] = {}
            by_task: dict[str, Job] = {}
            for config in apps.get_app_configs():
                if not module_has_submodule(config.module, "jobs"):
                    continue
                # Register the app's tasks in this process too (a shell or the web, not only a worker).
                if module_has_submodule(config.module, "tasks"):
                    import_module(f"{config.name}.tasks")
                module = import_module(f"{config.name}.jobs")
                for job in getattr(module, "JOBS", []):
                    if job.key in jobs:
                        raise RuntimeError(f"job key {job.key!r} is declared twice")
                    if job.task in by_task:
                        raise RuntimeError(f"task {job.task!r} backs two jobs; runs would be recorded ambiguously")
                    object.__setattr__(job, "app_label", config.label)
                    jobs[job.key] = job
                    by_task[job.task] = job
            # Set the task index first: another thread sees _jobs only once both are complete.
            cls._by_task = by_task
            cls._jobs = jobs
        return cls._jobs

    @classmethod
    def all(cls) -> list[Job]:
        return list(cls._load().values())

    @classmethod
    def get(cls, key: str) -> Job:
        try:
            return cls._load()[key]
        except KeyError:
            raise UnknownJob(key) from None

    @classmethod
    def for_task(cls, task_name: str) -> Job | None:
        """The job a task backs; called for every task run and publish, so a dict lookup."""
        cls._load()
        return cls._by_task.get(task_name)


# Schedules in words --------------------------------------------------------------

_DAYS = ["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"]


def describe_interval(seconds: int) -> str:
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds % size == 0:
            n = seconds // size
            return f"every {unit}" if n == 1 else f"every {n} {unit}s"
    return f"every {seconds} seconds"


def describe_crontab(minute: str, hour: str, day_of_week: str, day_of_month: str, month_of_year: str, tz: str) -> str:
    if minute.isdigit() and hour == "*" and day_of_week == day_of_month == month_of_year == "*":
        text = f"hourly at :{int(minute):02d}"
    elif minute.isdigit() and hour.startswith("*/") and day_of_week == day_of_month == month_of_year == "*":
        text = f"every {hour[2:]} hours at :{int(minute):02d}"
    elif minute.isdigit() and hour.isdigit() and day_of_month == month_of_year == "*":
        at = f"{int(hour):02d}:{int(minute):02d}"
        if day_of_week == "*":
            text = f"daily at {at}"
        elif day_of_week.isdigit():
            text = f"{_DAYS[int(day_of_week) % 7]}s at {at}"
        else:
            text = f"at {at} on days of week {day_of_week}"
    else:
        text = f"cron '{minute} {hour} {day_of_month} {month_of_year} {day_of_week}'"
    return f"{text} {tz}"


def queue_for_task(task: str) -> str:
    """The queue `task_routes` sends `task` to: an exact name first in order, else a `prefix.*` pattern."""
    from django.conf import settings

    for pattern, route in settings.CELERY_TASK_ROUTES.items():
        if pattern == task or (pattern.endswith("*") and task.startswith(pattern[:-1])):
            return str(route["queue"])
    return str(settings.CELERY_TASK_DEFAULT_QUEUE)
