"""The plan: which fault, against what, how many trials; and the trials that are not sweeps (poison, beats)."""

from __future__ import annotations

import os
import signal
import time
import traceback
from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from core.models import JobRun
from core.scheduler import SchedulerService
from tests.e2e.conftest import wait_for
from tests.faults.harness import Harness, Outcome, PlanOver, printed, raw_message
from tests.faults.scenarios import Delivery, PaymentTimeouts, Scenario


def run_plan(h: Harness, *, quick: bool, minutes: float) -> None:
    """Every phase in turn; a phase that breaks is recorded as a violation and the next one runs.

    No new trial starts after `minutes`: the table says how many of each ran.
    """
    n = (lambda full, few=1: few) if quick else (lambda full, few=1: full)
    h.deadline = time.monotonic() + minutes * 60
    h.ensure_processes()
    sweeps = h.scenarios()
    delivery = Delivery(h.providers)

    fan_out = [s for s in sweeps if s.key in ("due_subscriptions", "payment_timeouts")]

    def one_round() -> None:
        """One trial of every fault against every target it is aimed at."""
        for s in [*sweeps, delivery]:
            h.run_trial("SIGKILL pool children", [s], h.kill_pool_children)
            h.run_trial("PostgreSQL connections terminated", [s], h.terminate_connections)
        for s in [*fan_out, delivery]:
            h.run_trial("Redis restarted empty", [s], h.restart_redis)
        h.run_trial("SIGKILL worker main process", sweeps, h.kill_worker_main)
        h.run_trial("SIGKILL worker main process", [delivery], h.kill_worker_main)

    def process_faults() -> None:
        # Round after round until the budget is spent, so each fault gets its share of the trials
        # whatever the machine's speed (a plan of whole phases would starve the last ones).
        for number in range(n(12)):
            print(f"  -- round {number + 1}", flush=True)
            one_round()

    def time_limits() -> None:
        for _ in range(n(4)):
            for s in sweeps:
                window = max(h.calibrated[s.title] / 2, 0.1)
                limit = round(h.random.uniform(0.05, window), 2)
                h.run_trial("soft time limit", [s], None, trigger_options={"soft_time_limit": limit})
                h.run_trial("hard time limit", [s], None, trigger_options={"time_limit": limit})

    def poison() -> None:
        for _ in range(n(10)):
            for kind in POISON:
                poison_trial(h, kind)

    phases = [
        ("calibration (fault-free runs)", lambda: h.calibrate([*sweeps, delivery])),
        ("poison messages", poison),
        ("soft and hard time limits hit mid-sweep", time_limits),
        ("two beats, the leader SIGKILLed", lambda: beat_phase(h, trials=n(15, 2))),
        (
            "in rounds: SIGKILL of every pool child mid-job, pg_terminate_backend of every connection "
            "mid-chunk, Redis killed and restarted empty during fan-out and delivery, SIGKILL of the "
            "worker's main process (every sweep in flight at once)",
            process_faults,
        ),
    ]
    for title, phase in phases:
        with printed(title):
            try:
                phase()
            except PlanOver:
                print("   time budget spent: no more trials", flush=True)
                return
            except Exception as exc:  # recorded: the table must show a phase that broke
                traceback.print_exc()
                h.row(title, "the phase itself").add(
                    Outcome(violations=[f"{type(exc).__name__}: {exc}"]), 0.0, landed=False
                )


# -- poison -----------------------------------------------------------------------------------


def _poison(h: Harness, kind: str) -> None:
    from config.celery import app

    if kind == "undecodable body":
        h.broker().lpush("default", raw_message(task="core.sleep", body=b"\x80\x81 not json {"))
    elif kind == "pickle body (refused content type)":
        h.broker().lpush(
            "default",
            raw_message(task="core.sleep", body=b"\x80\x04K\x01.", content_type="application/x-python-serialize"),
        )
    elif kind == "unknown task":
        app.send_task("faults.no_such_task", kwargs={"x": 1}, queue="default")
    elif kind == "arguments of the wrong shape":
        app.send_task(
            "payments.cancel_expired_order", args=[1, 2, 3], kwargs={"order_id": {"x": [1]}}, queue="payments"
        )
        app.send_task("payments.check_payment_timeouts", kwargs={"older_than_days": "abc"}, queue="payments")
        app.send_task("core.sleep", args=["not", "a", "number"], queue="default")


POISON = ("undecodable body", "pickle body (refused content type)", "unknown task", "arguments of the wrong shape")


def poison_trial(h: Harness, kind: str) -> None:
    """A poison message, then a good one behind it: the worker stays up, the good one runs, nothing loops."""
    h.check_budget()
    h.reset()
    h.ensure_processes()
    assert h.worker is not None
    pid = h.worker.pid
    _poison(h, kind)
    if kind == "arguments of the wrong shape":
        # One of these is a `sleep` run (core.sleep with bad arguments): while it holds the job's
        # lease a canary `sleep` run is rightly `skipped`, so this canary goes once they have run.
        wait_for(
            lambda: (
                not JobRun.objects.filter(status__in=("queued", "running", "retrying")).exists()
                and sum(int(h.broker().llen(q)) for q in settings.JOB_QUEUES) == 0
            ),
            timeout=60,
            interval=0.1,
            message="the wrong-shape messages taken and their runs finished",
        )
    sent = time.monotonic()
    canary = SchedulerService.trigger_manual_update("sleep", {"seconds": 0}, source="shell")
    out = Outcome()
    try:
        wait_for(lambda: JobRun.objects.get(pk=canary.pk).status in JobRun.FINISHED, timeout=60, interval=0.1)
    except AssertionError:
        out.lost += 1
    recovery = time.monotonic() - sent
    if JobRun.objects.get(pk=canary.pk).status != "succeeded":
        out.lost += 1
    time.sleep(0.5)
    if h.worker.proc.poll() is not None or h.worker.pid != pid:
        out.violations.append("the worker died of a poison message")
    left = sum(int(h.broker().llen(q)) for q in settings.JOB_QUEUES) + int(h.broker().hlen("unacked"))
    if left:
        out.violations.append(f"{left} messages left queued or unacknowledged (a poison message loops)")
    stuck = JobRun.objects.filter(status__in=("queued", "running", "retrying")).count()
    if stuck:
        out.violations.append(f"{stuck} runs left running/queued")
    h.row("poison message", kind).add(out, recovery, landed=True)
    print(f"  poison {kind}: good message ran {recovery:.1f}s after", flush=True)


# -- beats ------------------------------------------------------------------------------------


def beat_phase(h: Harness, *, trials: int) -> None:
    """beat_heartbeat every second, two beats; each trial SIGKILLs the leader at a random point."""
    from django_celery_beat.models import IntervalSchedule, PeriodicTask, PeriodicTasks

    from core.beat import beat_leader
    from core.models import JobState

    h.reset()
    SchedulerService.setup_default_tasks()
    every_second, _ = IntervalSchedule.objects.get_or_create(every=1, period=IntervalSchedule.SECONDS)
    PeriodicTask.objects.exclude(name="beat_heartbeat").update(enabled=False)
    PeriodicTask.objects.filter(name="beat_heartbeat").update(enabled=True, interval=every_second, crontab=None)
    PeriodicTasks.update_changed()
    h.ensure_processes()
    while len(h.beats) < 2:
        h.start_beat()
    wait_for(lambda: beat_leader() is not None, timeout=30, message="a leader beat")
    time.sleep(3)
    for _ in range(trials):
        h.check_budget()
        h.ensure_processes()
        while len(h.beats) < 2:
            h.start_beat()
        time.sleep(h.random.uniform(1.0, 4.0))
        leader = beat_leader()
        doomed = next((b for b in h.beats if leader and b.pid == leader.get("pid")), None)
        out = Outcome()
        if doomed is None:
            out.violations.append(f"no running beat holds the lease ({leader})")
            h.row("leader beat SIGKILLed (two beats)", "beat_heartbeat every 1 s").add(out, 0.0, landed=False)
            continue
        state = JobState.objects.filter(job_key="beat_heartbeat").first()
        missed_before = state.missed_slots if state else 0
        window_start = timezone.now()
        os.kill(doomed.pid, signal.SIGKILL)
        doomed.proc.wait(timeout=10)
        doomed.stop()
        h.beats.remove(doomed)
        killed = time.monotonic()

        def resumed(window_start: object = window_start) -> bool:
            return JobRun.objects.filter(
                job_key="beat_heartbeat", queued_at__gt=window_start + timedelta(seconds=1)
            ).exists()

        try:
            wait_for(resumed, timeout=20, interval=0.1)
            recovery = time.monotonic() - killed
        except AssertionError:
            recovery = time.monotonic() - killed
            out.lost += 1
            out.violations.append("no beat sent a slot within 20 s of the leader's death")
        h.start_beat()  # the supervisor brings the dead one back, as a standby
        time.sleep(3)
        window_end = timezone.now() - timedelta(seconds=2)
        out.lost += _slot_gaps(window_start, window_end, missed_before)
        per_slot = _runs_per_slot(window_start - timedelta(seconds=5), timezone.now())
        twice = sum(n - 1 for n in per_slot.values() if n > 1)
        if twice:
            out.duplicated += twice
            out.violations.append(f"{twice} slots ran twice")
        refused = JobRun.objects.filter(job_key="beat_heartbeat", status="duplicate", queued_at__gte=window_start)
        out.duplicated += refused.count()  # sent twice and refused by the worker: counted, not an effect
        if recovery > settings.BEAT_LEADER_TTL_SECONDS + 3:
            out.violations.append(f"the standby took {recovery:.1f}s to send (design: within 5 s)")
        h.row("leader beat SIGKILLed (two beats)", "beat_heartbeat every 1 s").add(out, recovery, landed=True)
        print(f"  leader beat killed: next slot sent {recovery:.1f}s after", flush=True)
    PeriodicTask.objects.update(enabled=False)
    PeriodicTasks.update_changed()


def _runs_per_slot(start: object, end: object) -> dict[object, int]:
    from collections import Counter

    rows = JobRun.objects.filter(
        job_key="beat_heartbeat", slot__gte=start, slot__lte=end, status="succeeded"
    ).values_list("slot", flat=True)
    return dict(Counter(rows))


def _slot_gaps(start: object, end: object, missed_before: int) -> int:
    """Slots in the window that neither ran nor were counted missed (and caught up by the misfire policy)."""
    from core.models import JobState

    slots = set(
        JobRun.objects.filter(job_key="beat_heartbeat", slot__gte=start, slot__lte=end).values_list("slot", flat=True)
    )
    if not slots:
        return 0
    first, last = min(slots), max(slots)
    expected = int((last - first).total_seconds()) + 1
    state = JobState.objects.get(job_key="beat_heartbeat")
    return max(0, expected - len(slots) - (state.missed_slots - missed_before))


__all__ = ["PaymentTimeouts", "Scenario", "run_plan"]
