"""The fault-injection harness: real worker and beat processes, a Redis and a database of its own, many trials.

Run by `python -m tests.faults` (tests/faults/__main__.py), which creates the database and the
Redis and sets the environment before Django starts. Each trial resets the domain tables,
seeds a few hundred rows, starts the job(s), injects one fault at a random point, then
recovers as production would (the supervisor restarts a dead worker, beat's next slot
triggers the job again, the leader beat's watchdog closes lost runs, the notification
recovery job and the outbox relay re-send what a dead process or an emptied broker lost) and
checks the scenario's invariants. The clock is never moved for the workers; only the
outbox relay's "published but never ran" cutoff is reached by travelling the harness's clock
past OUTBOX_REDELIVER_AFTER_SECONDS, once the system is idle.
"""

from __future__ import annotations

import base64
import json
import os
import random
import signal
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import redis
import time_machine
from django.conf import settings
from django.db import connection
from django.utils import timezone

from core.models import JobRun
from core.scheduler import SchedulerService
from tests.e2e.conftest import CeleryProcess, process_env, wait_for
from tests.e2e.test_subscriptions_e2e import pool_children
from tests.faults.providers import Providers
from tests.faults.scenarios import (
    CartsCleanup,
    DiscountRecompute,
    DriverExpiry,
    DueSubscriptions,
    EscrowReminders,
    Outcome,
    PaymentTimeouts,
    Scenario,
)
from tests.support.redis_server import RedisServer

UNFINISHED = (JobRun.Status.QUEUED, JobRun.Status.RUNNING, JobRun.Status.RETRYING)
KEEP_TABLES = ("django_migrations", "django_content_type", "auth_permission", "django_celery_beat_")
RECOVERY_DEADLINE = 180.0


@dataclass
class Row:
    fault: str
    target: str
    trials: int = 0
    landed: int = 0
    lost: int = 0
    duplicated: int = 0
    violations: int = 0
    worst_recovery: float = 0.0
    past_expiry: int = 0
    examples: list[str] = field(default_factory=list)

    def add(self, outcome: Outcome, recovery: float, *, landed: bool, past_expiry: bool = False) -> None:
        self.trials += 1
        self.landed += landed
        self.past_expiry += past_expiry
        self.lost += outcome.lost
        self.duplicated += outcome.duplicated
        self.violations += len(outcome.violations)
        self.worst_recovery = max(self.worst_recovery, recovery)
        for text in outcome.violations:
            if len(self.examples) < 3:
                self.examples.append(text)


class PlanOver(Exception):
    """The run's time budget is spent."""


class Harness:
    deadline = float("inf")

    def check_budget(self) -> None:
        if time.monotonic() > self.deadline:
            raise PlanOver

    def __init__(self, *, redis_server: RedisServer, log_dir: Path, seed: int) -> None:
        self.redis_server = redis_server
        self.log_dir = log_dir
        self.random = random.Random(seed)
        self.providers = Providers()
        from tests.support.factories.subscriptions import GatewayStandIn

        self.gateway = GatewayStandIn()
        self.rows: dict[tuple[str, str], Row] = {}
        self.worker: CeleryProcess | None = None
        self.beats: list[CeleryProcess] = []
        self.started = 0
        self.calibrated: dict[str, float] = {}
        self.env: dict[str, str] = {}
        self.past_expiry = False

    # -- processes ---------------------------------------------------------------------------

    def start_worker(self) -> CeleryProcess:
        self.started += 1
        name = f"faults{self.started}"
        argv = [sys.executable, "-m", "celery", "-A", "config", "worker", "-l", "info", "-c", "8"]
        argv += ["-Q", ",".join(settings.JOB_QUEUES), "-n", f"{name}@%h", "--without-mingle", "--without-gossip"]
        proc = CeleryProcess(argv, process_env(**self.env), self.log_dir / f"worker-{name}.log")
        wait_for(lambda: " ready." in proc.output(), timeout=60, message=f"worker {name} ready; log {proc.log}")
        self.worker = proc
        return proc

    def start_beat(self) -> CeleryProcess:
        self.started += 1
        name = f"beat{self.started}"
        argv = [sys.executable, "-m", "celery", "-A", "config", "beat", "-l", "info"]
        argv += ["--pidfile", str(self.log_dir / f"{name}.pid"), "-s", str(self.log_dir / f"{name}-schedule")]
        proc = CeleryProcess(argv, process_env(**self.env), self.log_dir / f"{name}.log")
        self.beats.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in [*self.beats, *([self.worker] if self.worker else [])]:
            proc.stop()

    def ensure_processes(self) -> None:
        if self.worker is None or self.worker.proc.poll() is not None:
            self.start_worker()
        self.beats = [b for b in self.beats if b.proc.poll() is None]
        if not self.beats:
            self.start_beat()

    # -- data --------------------------------------------------------------------------------

    def broker(self) -> redis.Redis:
        return redis.Redis.from_url(settings.CELERY_BROKER_URL)

    def quiesce(self, timeout: float = 60) -> None:
        def idle() -> bool:
            queued = sum(int(self.broker().llen(q)) for q in settings.JOB_QUEUES)
            return queued == 0 and not JobRun.objects.filter(status__in=UNFINISHED).exists()

        # Reset regardless after the timeout: the leftovers belong to a trial already counted.
        with suppress(AssertionError):
            wait_for(idle, timeout=timeout, interval=0.2, message="the system idle before the next trial")
        time.sleep(0.3)

    def reset(self) -> None:
        self.quiesce()
        with connection.cursor() as cur:
            cur.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
            tables = [t for (t,) in cur.fetchall() if not t.startswith(KEEP_TABLES)]
            cur.execute("TRUNCATE " + ", ".join(f'"{t}"' for t in tables) + " RESTART IDENTITY CASCADE")
        from django.contrib.auth.models import Group

        from logistics.models import EIC_GROUP
        from notifications.services import notification_templates_install_defaults

        notification_templates_install_defaults()
        Group.objects.get_or_create(name=EIC_GROUP)
        redis.Redis.from_url(settings.REDIS_URL).flushdb()
        # Messages a dead worker had taken (the broker redelivers them only after the 2-hour
        # visibility timeout) belong to the trial just counted.
        self.broker().delete(*settings.JOB_QUEUES, "unacked", "unacked_index")

    # -- faults ------------------------------------------------------------------------------

    def kill_pool_children(self) -> None:
        assert self.worker is not None
        for pid in pool_children(self.worker):
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def kill_worker_main(self) -> None:
        assert self.worker is not None
        os.kill(self.worker.pid, signal.SIGKILL)
        self.worker.proc.wait(timeout=10)
        self.worker.stop()
        self.start_worker()  # what the supervisor (systemd, docker) does: part of the recovery time

    def terminate_connections(self) -> int:
        with connection.cursor() as cur:
            cur.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
            return int(cur.fetchone()[0])

    def restart_redis(self) -> None:
        self.redis_server.restart_empty(down_seconds=0.3)

    # -- recovery ----------------------------------------------------------------------------

    def trigger(self, scenario: Scenario, **options: Any) -> JobRun | None:
        if not scenario.key:
            return None
        if options:
            return self._send_with_options(scenario.key, options)
        return SchedulerService.trigger_manual_update(scenario.key, source="shell")

    def _send_with_options(self, key: str, options: dict[str, Any]) -> JobRun | None:
        from config.celery import app
        from core.catalog import JobCatalog

        job = JobCatalog.get(key)
        task_id = str(uuid.uuid4())
        app.send_task(job.task, kwargs={}, task_id=task_id, queue=job.queue, **options)
        return None

    def _fingerprint(self, scenarios: list[Scenario]) -> tuple[Any, ...]:
        """What progress looks like: rows changing state, intents running, runs finishing, work owed.

        Not the runs: the harness triggers a pending job every 2 s (beat's next slot), and a
        run that finds nothing to do (its charges' messages held by a dead worker, or lost
        with the broker) must not count as progress, or the relay would never be given the
        idle time it needs to re-send them.
        """
        from core.models import OutboxIntent
        from notifications.models import Notification

        statuses = tuple(sorted(Notification.objects.values_list("status").annotate(n=models_count())))
        intents = OutboxIntent.objects.filter(completed_at__isnull=False).count()
        return (statuses, intents, tuple(s.check().lost for s in scenarios))

    def _close_queued_without_message(self) -> int:
        """The leader's watchdog, for a `queued` run whose message the broker lost (Redis restarted
        between the publish and the fetch): it closes such a run only once it is older than its job's
        expiry (10 minutes at least; a day for the daily jobs), so the harness runs that pass with its
        clock past the expiry, and the trial is counted in `past_expiry` (in production its work
        waits that long)."""
        from core.services.watchdog import QUEUED_GRACE_SECONDS, _expiry_seconds, runs_watchdog

        queued = list(JobRun.objects.filter(status=JobRun.Status.QUEUED).values_list("job_key", flat=True))
        if not queued:
            return 0
        ahead = max(_expiry_seconds(key) for key in queued) + QUEUED_GRACE_SECONDS + 1
        with time_machine.travel(timezone.now() + timedelta(seconds=ahead), tick=True):
            return runs_watchdog()["queued_lost"]

    def recover(self, scenarios: list[Scenario]) -> list[str]:
        """Bring the system back as production would; return what did not come back by the deadline."""
        from core.services.outbox import outbox_relay
        from notifications.services import notifications_recover_stuck

        deadline = time.monotonic() + RECOVERY_DEADLINE
        last_trigger: dict[str, float] = {}
        last_change = time.monotonic()
        last_print: tuple[Any, ...] = ()
        idle_actions = 0
        while time.monotonic() < deadline:
            self.ensure_processes()
            unfinished = set(JobRun.objects.filter(status__in=UNFINISHED).values_list("job_key", flat=True))
            outcomes = [s.check() for s in scenarios]
            pending = [s for s in scenarios if s.pending()]
            queued = sum(int(self.broker().llen(q)) for q in settings.JOB_QUEUES)
            if not unfinished and not pending and all(o.settled for o in outcomes) and queued == 0:
                return []
            for s in pending:
                if s.key and s.key not in unfinished and time.monotonic() - last_trigger.get(s.key, 0) > 2:
                    self.trigger(s)  # beat's next slot
                    last_trigger[s.key] = time.monotonic()
            fingerprint = self._fingerprint(scenarios)
            if fingerprint != last_print:
                last_print, last_change = fingerprint, time.monotonic()
            elif time.monotonic() - last_change > 2 and queued == 0:
                # Idle with work left: what the notification recovery job and the relay do on their schedule.
                notifications_recover_stuck(older_than_seconds=int(settings.NOTIFICATIONS_STUCK_AFTER_SECONDS))
                outbox_relay()
                if self._close_queued_without_message():
                    self.past_expiry = True
                if idle_actions % 2 == 1:
                    later = timezone.now() + timedelta(seconds=settings.OUTBOX_REDELIVER_AFTER_SECONDS + 1)
                    with time_machine.travel(later, tick=True):
                        outbox_relay()
                idle_actions += 1
                last_change = time.monotonic()
            time.sleep(0.25)
        left = JobRun.objects.filter(status__in=UNFINISHED).count()
        owed = ", ".join(f"{s.title}: {s.check().lost} lost" for s in scenarios if s.pending() or s.check().lost)
        queued = sum(int(self.broker().llen(q)) for q in settings.JOB_QUEUES)
        return [
            f"not recovered after {RECOVERY_DEADLINE:.0f}s ({left} runs unfinished, {queued} messages queued; "
            f"{owed or 'no scenario owes work'})"
        ]

    # -- trials ------------------------------------------------------------------------------

    def row(self, fault: str, target: str) -> Row:
        return self.rows.setdefault((fault, target), Row(fault, target))

    def scenarios(self) -> list[Scenario]:
        return [
            PaymentTimeouts(),
            DriverExpiry(),
            DiscountRecompute(),
            DueSubscriptions(self.gateway),
            EscrowReminders(),
            CartsCleanup(),
        ]

    def calibrate(self, scenarios: list[Scenario]) -> None:
        """One fault-free run of each: its duration (where faults are aimed) and its correct outcome."""
        for s in scenarios:
            self.reset()
            s.seed()
            started = time.monotonic()
            self.trigger(s)
            problems = self.recover([s])
            self.calibrated[s.title] = time.monotonic() - started
            s.calibrate()
            outcome = s.check()
            assert not problems and outcome.settled and not outcome.violations, (s.title, problems, outcome)
            print(f"  calibrated {s.title}: {self.calibrated[s.title]:.2f}s fault-free", flush=True)

    def run_trial(
        self,
        fault: str,
        scenarios: list[Scenario],
        inject: Callable[[], object] | None,
        *,
        trigger_options: Any = None,
    ) -> None:
        self.check_budget()
        begun = time.monotonic()
        self.ensure_processes()  # a worker the last trial's fault ended is back, as its supervisor would have it
        self.reset()
        for s in scenarios:
            s.seed()
        runs = [self.trigger(s, **(trigger_options or {})) for s in scenarios]
        window = max(self.calibrated.get(s.title, 1.0) for s in scenarios)
        time.sleep(self.random.uniform(0.02, window))
        # The fault hit work in progress when the job still owed some (else it tested recovery of nothing).
        landed = any(s.pending() for s in scenarios)
        del runs
        if inject is not None:
            inject()
        faulted = time.monotonic()
        self.past_expiry = False
        problems = self.recover(scenarios)
        recovery = time.monotonic() - faulted
        for s in scenarios:
            outcome = s.check()
            outcome.violations.extend(problems)
            left = JobRun.objects.filter(status__in=UNFINISHED).count()
            if left:
                outcome.violations.append(f"{left} runs left running/queued after recovery")
            self.row(fault, s.title).add(outcome, recovery, landed=landed, past_expiry=self.past_expiry)
        titles = ", ".join(s.title for s in scenarios)
        print(f"  {fault} x {titles}: recovered in {recovery:.1f}s (trial {time.monotonic() - begun:.1f}s)", flush=True)


def models_count() -> Any:
    from django.db.models import Count

    return Count("id")


# -- poison, time limits, beats ------------------------------------------------------------------


def raw_message(*, task: str, body: bytes, content_type: str = "application/json", queue: str = "default") -> bytes:
    """A kombu Redis envelope around `body`, as a producer would LPUSH it (headers of task protocol 2)."""
    task_id = str(uuid.uuid4())
    return json.dumps(
        {
            "body": base64.b64encode(body).decode(),
            "content-encoding": "utf-8",
            "content-type": content_type,
            "headers": {"lang": "py", "task": task, "id": task_id, "root_id": task_id, "retries": 0},
            "properties": {
                "correlation_id": task_id,
                "delivery_mode": 2,
                "delivery_info": {"exchange": queue, "routing_key": queue},
                "priority": 0,
                "body_encoding": "base64",
                "delivery_tag": str(uuid.uuid4()),
            },
        }
    ).encode()


@contextmanager
def printed(title: str) -> Iterator[None]:
    print(f"== {title}", flush=True)
    started = time.monotonic()
    yield
    print(f"   ({time.monotonic() - started:.0f}s)", flush=True)
