"""Two beats, a killed leader, a beat down across slots: real beat and worker processes."""

from __future__ import annotations

import itertools
import json
import os
import signal
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.utils import timezone
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from core.beat import LEADER_KEY
from core.models import JobRun, JobState
from core.redis import get_redis
from core.scheduler import SchedulerService
from tests.e2e.conftest import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

PERIOD = 5


def every_five_seconds(*keys: str) -> None:
    SchedulerService.setup_default_tasks()
    five = IntervalSchedule.objects.create(every=PERIOD, period=IntervalSchedule.SECONDS)
    PeriodicTask.objects.filter(name__in=keys).update(interval=five, expire_seconds=60)
    PeriodicTask.objects.exclude(name__in=keys).update(enabled=False)


def describe(key: str) -> str:
    return "\n".join(f"{r.slot} {r.status} {r.task_id} {r.error[:200]} {r.summary}" for r in beat_runs(key))


def beat_runs(key: str) -> list[JobRun]:
    return list(JobRun.objects.filter(job_key=key, source="beat").order_by("slot"))


def slot_gaps(runs: list[JobRun]) -> list[float]:
    slots = [r.slot for r in runs if r.slot is not None]
    return [(b - a).total_seconds() for a, b in itertools.pairwise(slots)]


def leader_pid() -> int | None:
    value = get_redis().get(LEADER_KEY)
    return int(json.loads(value)["pid"]) if value else None


def seconds_to_next_slot(offset: float = 0.0) -> float:
    now = time.time()
    return (PERIOD - (now - offset) % PERIOD) % PERIOD


def test_two_beats_run_every_slot_exactly_once(start_worker: Any, start_beat: Any) -> None:
    every_five_seconds("outbox_relay")
    start_worker(queues="default")
    first, second = start_beat("beat-a"), start_beat("beat-b")
    wait_for(lambda: leader_pid() in (first.pid, second.pid), timeout=20, message="a beat to lead")

    time.sleep(60)
    runs = beat_runs("outbox_relay")
    wait_for(
        lambda: all(r.status == "succeeded" for r in beat_runs("outbox_relay")),
        timeout=20,
        message=f"every sent slot to finish:\n{describe('outbox_relay')}",
    )
    assert len(runs) >= 10, [r.slot for r in runs]
    assert slot_gaps(runs) == [PERIOD] * (len(runs) - 1), "a slot missing or sent twice"
    assert len({r.task_id for r in runs}) == len(runs)
    # The standby never sent: one beat's log has every "Sending due task", the other none.
    sends = [p.output().count("Sending due task outbox_relay") for p in (first, second)]
    assert sorted(sends)[0] == 0 and sorted(sends)[1] >= len(runs), sends
    assert not JobRun.objects.filter(job_key="outbox_relay", status="duplicate").exists()


def test_the_standby_takes_over_within_five_seconds_of_the_leader_dying(start_worker: Any, start_beat: Any) -> None:
    every_five_seconds("outbox_relay")
    start_worker(queues="default")
    beats = {p.pid: p for p in (start_beat("beat-a"), start_beat("beat-b"))}
    wait_for(lambda: len(beat_runs("outbox_relay")) >= 2, timeout=30, message="two slots from the leader")

    # Kill just after a slot went out, so the next one is due while nobody leads.
    time.sleep(seconds_to_next_slot() + 0.5)
    leader = leader_pid()
    assert leader in beats
    os.kill(leader, signal.SIGKILL)
    killed_at = datetime.now(UTC)
    beats[leader].proc.wait(timeout=10)
    standby = next(p for pid, p in beats.items() if pid != leader)

    wait_for(lambda: leader_pid() == standby.pid, timeout=10, message="the standby to take the lease")
    next_slot = datetime.fromtimestamp((int(killed_at.timestamp()) // PERIOD + 1) * PERIOD, tz=UTC)
    wait_for(
        lambda: JobRun.objects.filter(job_key="outbox_relay", slot=next_slot).exists(),
        timeout=15,
        message=f"the slot after the kill; standby log:\n{standby.output()[-3000:]}",
    )
    taken = JobRun.objects.get(job_key="outbox_relay", slot=next_slot)
    assert (taken.queued_at - next_slot).total_seconds() <= 5

    time.sleep(2 * PERIOD)
    runs = beat_runs("outbox_relay")
    assert slot_gaps(runs) == [PERIOD] * (len(runs) - 1), "a slot missing or sent twice across the failover"
    wait_for(
        lambda: all(r.status == "succeeded" for r in beat_runs("outbox_relay")),
        timeout=20,
        message=f"every slot to run:\n{describe('outbox_relay')}",
    )


@pytest.mark.parametrize(("key", "policy"), [("outbox_relay", "run_once"), ("beat_heartbeat", "skip")])
def test_beat_down_across_three_slots(start_worker: Any, start_beat: Any, key: str, policy: str) -> None:
    every_five_seconds(key)
    start_worker(queues="default")
    beat = start_beat()
    wait_for(lambda: len(beat_runs(key)) >= 1, timeout=30, message=f"a first slot; log:\n{beat.output()[-2000:]}")
    time.sleep(seconds_to_next_slot() + 0.5)
    beat.stop()
    before = beat_runs(key)
    last_slot = before[-1].slot
    assert last_slot is not None

    # Three slots come due while no beat runs. Beat takes 2-3 s to start: restarted 0.5 s after
    # the third, it finds the third 2.5-3.5 s late (past the 2 s grace of a 5 s period), and the
    # next not yet due; restarted 2.5 s after, the third is long past its grace whatever happens.
    third = last_slot + timedelta(seconds=3 * PERIOD)
    time.sleep(max((third - timezone.now()).total_seconds(), 0) + (0.5 if policy == "run_once" else 2.5))
    restarted_at = timezone.now()
    start_beat("beat-again")
    next_slot = third + timedelta(seconds=PERIOD)
    wait_for(
        lambda: JobRun.objects.filter(job_key=key, slot=next_slot).exists(),
        timeout=15,
        message="the first slot after the restart",
    )
    catch_up = [r for r in beat_runs(key) if last_slot < r.slot < next_slot]
    state = JobState.objects.get(job_key=key)
    if policy == "run_once":
        assert [r.slot for r in catch_up] == [third], "one catch-up run, for the newest missed slot"
        assert (catch_up[0].queued_at - restarted_at).total_seconds() < 5
        assert state.missed_slots == 2
        wait_for(lambda: JobRun.objects.get(pk=catch_up[0].pk).status == "succeeded", timeout=20, message=describe(key))
        assert JobRun.objects.get(pk=catch_up[0].pk).summary["catch_up_for_missed_slots"] == 2
    else:
        assert catch_up == [], "no catch-up under skip"
        assert state.missed_slots == 3
