"""A beat you can run twice: one leader sends, each scheduled slot is sent once.

    CELERY_BEAT_SCHEDULER = "core.beat:LeaderScheduler"   (config/settings/celery.py)

Any number of `celery -A config beat` processes may run. Each tick, a beat takes or
renews the leader lease, a Redis key set with NX and a TTL of BEAT_LEADER_TTL_SECONDS
(3 s), renewed at least every second by the leader's own loop. Only the leader sends;
the others poll the lease every second. A leader that dies (or stalls: the lease is
renewed by the loop that sends, not by a side thread) stops renewing, and a standby
takes over within TTL + 1 s. Why Redis and not a PostgreSQL advisory lock: beat already
needs the broker, the lease needs no connection held open for hours through poolers and
failovers, and it is the same compare-and-set the job leases use (core.leases).

The lease is not the safety: slots are. A catalog job's entry fires at its slots
(core.slots: fixed instants every beat computes alike), and before sending one the
leader advances core.JobState.last_slot with a compare-and-set and records the run with
its slot, in one transaction. A slot is therefore sent at most once, even by two beats
that both believe they lead (a stalled leader waking up) or a new leader that never saw
the old one's in-memory state; the message carries the slot in its headers, and a
worker recording a second run for a slot marks it `duplicate` and runs nothing.

After beat was down across slots, the job's `misfire` policy decides: `run_once` sends
one catch-up run (the newest slot) for all of them, `skip` sends nothing unless the
newest slot is within the job's grace; either way the missed slots are counted on
JobState and shown by `jobs status`, the admin and the API.

Entries that are not catalog jobs, and solar, clocked, one-off or start/expiry-bound
entries, run exactly as django-celery-beat runs them (leader only).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from datetime import UTC, datetime
from typing import Any

from celery import schedules
from celery.beat import event_t
from django.conf import settings
from django_celery_beat.schedulers import DatabaseScheduler

from core.catalog import Job, JobCatalog
from core.redis import get_redis
from core.slots import UnsupportedSchedule, due_slot, next_fire, period_seconds, slot_schedule
from core.task_base import SLOT_HEADER

logger = logging.getLogger(__name__)

LEADER_KEY = "core:beat:leader"
STANDBY_POLL_SECONDS = 1.0
# The leader's loop comes round at least this often, renewing the lease each time.
LEADER_TICK_SECONDS = 1.0
STATE_REFRESH_SECONDS = 5.0
WATCHDOG_SECONDS = 10.0

_HOLD = (
    "if redis.call('set', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end "
    "if redis.call('get', KEYS[1]) == ARGV[1] then redis.call('pexpire', KEYS[1], ARGV[2]) return 1 end return 0"
)
_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"


def utcnow() -> datetime:
    return datetime.now(UTC)


class BeatLeadership:
    """The leader lease: this process's token in LEADER_KEY, with a TTL."""

    def __init__(self, ttl_seconds: float | None = None) -> None:
        ttl = ttl_seconds if ttl_seconds is not None else settings.BEAT_LEADER_TTL_SECONDS
        self.ttl_ms = int(ttl * 1000)
        self.token = json.dumps(
            {"host": socket.gethostname(), "pid": os.getpid(), "since": round(time.time(), 3)}, sort_keys=True
        )

    def hold(self) -> bool:
        """Take the lease when it is free, renew it when it is ours; False when another beat leads."""
        return bool(get_redis().eval(_HOLD, 1, LEADER_KEY, self.token, self.ttl_ms))

    def release(self) -> None:
        try:
            get_redis().eval(_RELEASE, 1, LEADER_KEY, self.token)
        except Exception:  # it lapses on its own within the TTL
            logger.warning("could not release the beat leader lease", exc_info=True)


def beat_leader() -> dict[str, Any] | None:
    """Who leads now: host, pid, since (epoch seconds) and the lease's remaining ms; None when nobody."""
    client = get_redis()
    value = client.get(LEADER_KEY)
    if value is None:
        return None
    try:
        leader = dict(json.loads(value))
    except ValueError:
        leader = {"token": str(value)}
    leader["lease_ms"] = int(client.pttl(LEADER_KEY))
    return leader


def beat_leader_text() -> str:
    try:
        leader = beat_leader()
    except Exception as exc:  # Redis down: say so rather than fail the whole report
        return f"unknown (Redis: {exc})"
    if leader is None:
        return "none (no beat is running, or none has taken the lease yet)"
    return f"{leader.get('host')} pid {leader.get('pid')} (lease {leader.get('lease_ms')} ms left)"


def _since(state: Any, entry: Any) -> datetime:
    """Where the entry's slots are counted from: its last slot, or its last change if later.

    An operator who edits a schedule (60 s to 2 s, say) starts it afresh: the slots the new
    schedule would have had before the edit were never due, so they are not missed either.
    """
    changed = getattr(entry.model, "date_changed", None)
    if changed is not None and changed > state.last_slot:
        return changed  # type: ignore[no-any-return]
    return state.last_slot  # type: ignore[no-any-return]


class LeaderScheduler(DatabaseScheduler):  # type: ignore[misc]
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._leadership = BeatLeadership()
        self._leading = False
        self._state: dict[str, Any] = {}
        self._state_read_at = 0.0
        self._watched_at = 0.0
        super().__init__(*args, **kwargs)

    # -- leadership --------------------------------------------------------------------------

    def tick(self, *args: Any, **kwargs: Any) -> float:
        try:
            leading = self._leadership.hold()
        except Exception as exc:  # Redis down: nobody can lead; sending would fail anyway
            if self._leading:
                logger.error("beat: lost the leader lease (Redis: %s); standing by", exc)
            self._leading = False
            return STANDBY_POLL_SECONDS
        if not leading:
            if self._leading:
                logger.warning("beat: another beat took the leader lease; standing by")
            self._leading = False
            return STANDBY_POLL_SECONDS
        if not self._leading:
            self._on_elected()
        self._watch()
        delay = super().tick(*args, **kwargs)
        return float(min(delay, LEADER_TICK_SECONDS))

    def _on_elected(self) -> None:
        logger.info("beat: leading (%s)", self._leadership.token)
        self._leading = True
        # Start from what the database says, not from this process's memory: the previous
        # leader may have sent slots since this one last looked.
        self._initial_read = True
        self._heap = None
        self._read_state(force=True)

    def _watch(self) -> None:
        """Every WATCHDOG_SECONDS, close the runs whose worker died (core.services.watchdog)."""
        if time.monotonic() - self._watched_at < WATCHDOG_SECONDS:
            return
        self._watched_at = time.monotonic()
        from core.services.watchdog import runs_watchdog

        try:
            runs_watchdog()
        except Exception:  # the database or Redis is away: try again next time
            logger.warning("beat: the run watchdog failed", exc_info=True)

    def close(self) -> None:
        if self._leading:
            self._leadership.release()
        super().close()

    # -- slots -----------------------------------------------------------------------------

    def _slot_job(self, entry: Any) -> tuple[Job | None, Any]:
        job = JobCatalog.for_task(entry.task)
        model = getattr(entry, "model", None)
        if job is None or model is None or model.one_off or model.start_time or model.expires:
            return None, None
        try:
            return job, slot_schedule(entry.schedule)
        except UnsupportedSchedule:
            return None, None

    def _read_state(self, *, force: bool = False) -> None:
        from core.services.jobruns import jobstates_for

        if not force and time.monotonic() - self._state_read_at < STATE_REFRESH_SECONDS:
            return
        keys = sorted({job.key for job in JobCatalog.all() if job.schedule is not None})
        self._state = jobstates_for(keys, start=utcnow())
        self._state_read_at = time.monotonic()

    def populate_heap(self, *args: Any, **kwargs: Any) -> None:
        # As Celery's, but asking our is_due, so slot-based entries start at their slot.
        import heapq

        heap: list[Any] = []
        for entry in self.schedule.values():
            try:
                is_due, delay = self.is_due(entry)
            except Exception:
                is_due, delay = self._is_due_failed(entry)
            heap.append(event_t(self._when(entry, 0 if is_due else delay) or 0, 5, entry))
        heapq.heapify(heap)
        self._heap = heap  # type: ignore[assignment]  # celery declares it None at class level

    def is_due(self, entry: Any) -> Any:
        job, schedule = self._slot_job(entry)
        if job is None:
            return entry.is_due()
        if not entry.model.enabled:
            return schedules.schedstate(False, 5.0)
        self._read_state()
        state = self._state.get(job.key)
        if state is None or state.paused_at is not None:  # paused: looked at again in 5 s
            return schedules.schedstate(False, STATE_REFRESH_SECONDS)
        now = utcnow()
        since = _since(state, entry)
        slot, _ = due_slot(schedule, since, now)
        if slot is None:
            wait = (next_fire(schedule, since) - now).total_seconds()
            return schedules.schedstate(False, max(wait, 0.05))
        return schedules.schedstate(True, max((next_fire(schedule, now) - now).total_seconds(), 0.05))

    def apply_async(self, entry: Any, producer: Any = None, advance: bool = True, **kwargs: Any) -> Any:
        job, schedule = self._slot_job(entry)
        if job is None:
            return super().apply_async(entry, producer=producer, advance=advance, **kwargs)
        from core.services import jobruns

        entry = self.reserve(entry) if advance else entry
        state = self._state.get(job.key)
        if state is None or state.paused_at is not None:
            return None
        now = utcnow()
        slot, older = due_slot(schedule, _since(state, entry), now)
        if slot is None:
            return None
        late = (now - slot).total_seconds()
        send = job.misfire == "run_once" or late <= job.grace_seconds(period_seconds(schedule, slot))
        missed = older + (0 if send else 1)
        claim = jobruns.jobstate_claim_slot(job=job, slot=slot, missed=missed, send=send)
        if claim is None:
            logger.info("beat: %s slot %s was already sent by another beat", job.key, slot.isoformat())
            self._read_state(force=True)
            return None
        state.last_slot = slot
        if missed:
            logger.warning(
                "beat: %s missed %d slot(s) while no beat was sending; %s",
                job.key,
                missed,
                "one catch-up run" if send else f"skipped (misfire=skip, {late:.0f}s late)",
            )
        if not send:
            return None
        options = entry.options
        headers = {**options.get("headers", {}), SLOT_HEADER: slot.isoformat()}
        entry.options = {**options, "task_id": claim, "headers": headers}  # this send only
        try:
            return super().apply_async(entry, producer=producer, advance=False)
        except Exception as exc:  # recorded, so the run does not stay `queued`
            jobruns.jobrun_mark_failed(task_id=claim, exc=exc)
            raise
        finally:
            entry.options = options
