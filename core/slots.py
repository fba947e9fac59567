"""Scheduled slots: the instants a schedule fires, computed the same way by every beat.

A slot is a fire time, not "whenever beat got round to it": interval schedules fire at
multiples of their period since the Unix epoch (every 30 s means :00 and :30), crontabs
at their matching wall-clock minutes in their own time zone. Two beat processes (or one
restarted) therefore agree on which slot is due, and core.beat records each slot once.

Daylight saving, for a crontab in a zone that has it: a wall-clock time skipped by the
spring change fires at the same instant the clock would have shown it (02:30 in
Europe/Berlin on the last Sunday of March fires at 03:30 CEST); a time repeated by the
autumn change fires once, at its first occurrence. `fire_times` reports both.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, tzinfo
from typing import Any

from celery.schedules import crontab, schedule

# A crontab that matches nothing for this many days in a row never fires (30 February).
_SEARCH_DAYS = 366 * 8


class UnsupportedSchedule(ValueError):
    """Solar and clocked schedules are not slot-based: beat runs them as django-celery-beat does."""


@dataclass(frozen=True)
class Fire:
    at: datetime  # aware, UTC
    local: datetime  # the same instant in the schedule's time zone
    # "skipped": the wall-clock time does not exist that day (fires at `local` instead);
    # "repeated": it happens twice that day (fires at the first).
    dst: str = ""
    wall_clock: str = ""  # the time the crontab asked for, when dst is set


def slot_schedule(value: Any) -> crontab | schedule:
    """The celery schedule of a beat entry, when slots apply to it."""
    if isinstance(value, crontab):
        return value
    if type(value) is schedule:  # an interval, not solar (a subclass)
        return value
    raise UnsupportedSchedule(f"{type(value).__name__} schedules have no fixed slots")


def schedule_zone(value: crontab | schedule) -> tzinfo:
    tz = getattr(value, "tz", None)  # django-celery-beat's TzAwareCrontab
    if tz is not None:
        return tz  # type: ignore[no-any-return]
    app_tz = getattr(getattr(value, "app", None), "timezone", None)
    return app_tz if isinstance(app_tz, tzinfo) else UTC


def fire_times(value: crontab | schedule, after: datetime) -> Iterator[Fire]:
    """Every fire time strictly after `after`, in order (an endless iterator)."""
    after = after.astimezone(UTC)
    if isinstance(value, crontab):
        yield from _crontab_fires(value, after)
        return
    seconds = _interval_seconds(value)
    if seconds <= 0:
        raise UnsupportedSchedule("an interval must be positive")
    zone = schedule_zone(value)
    n = int(after.timestamp() // seconds) + 1
    while True:
        at = datetime.fromtimestamp(n * seconds, tz=UTC)
        yield Fire(at=at, local=at.astimezone(zone))
        n += 1


def period_seconds(value: crontab | schedule, at: datetime) -> float:
    """The gap between the next two fire times after `at`."""
    fires = fire_times(value, at)
    first = next(fires).at
    return (next(fires).at - first).total_seconds()


def next_fire(value: crontab | schedule, after: datetime) -> datetime:
    return next(iter(fire_times(value, after))).at


def due_slot(value: crontab | schedule, last_slot: datetime, now: datetime) -> tuple[datetime | None, int]:
    """The newest slot in (last_slot, now], and how many older ones in that range it leaves out.

    (None, 0) when nothing has come due since `last_slot`.
    """
    if isinstance(value, schedule) and not isinstance(value, crontab):
        seconds = _interval_seconds(value)
        first = int(last_slot.timestamp() // seconds) + 1
        newest = int(now.timestamp() // seconds)
        if newest < first:
            return None, 0
        return datetime.fromtimestamp(newest * seconds, tz=UTC), newest - first
    latest: datetime | None = None
    count = 0
    for fire in fire_times(value, last_slot):
        if fire.at > now:
            break
        latest = fire.at
        count += 1
        if count > 100_000:  # a minute crontab down for ten weeks: stop counting, take the newest
            latest = _latest_before(value, now)
            break
    return latest, max(count - 1, 0)


def _latest_before(value: crontab, now: datetime) -> datetime:
    probe = now - timedelta(days=1)
    latest = probe
    for fire in fire_times(value, probe):
        if fire.at > now:
            return latest
        latest = fire.at
    return latest  # pragma: no cover - fire_times is endless


def _interval_seconds(value: schedule) -> float:
    run_every: timedelta = getattr(value, "run_every")  # noqa: B009 - celery's stubs omit it
    return run_every.total_seconds()


def _field(value: crontab, name: str) -> set[int]:
    """A parsed crontab field (celery sets them as sets of ints; its stubs omit them)."""
    return set(getattr(value, name))


def _day_matches(value: crontab, day: date) -> bool:
    return (
        day.month in _field(value, "month_of_year")
        and day.day in _field(value, "day_of_month")
        and day.isoweekday() % 7 in _field(value, "day_of_week")  # celery: 0 is Sunday
    )


def _crontab_fires(value: crontab, after: datetime) -> Iterator[Fire]:
    zone = schedule_zone(value)
    start = after.astimezone(zone).replace(tzinfo=None)
    # Wall-clock times this far before `after` are past whatever a DST change does to them.
    floor = start - timedelta(hours=3)
    day = floor.date()
    hours = sorted(_field(value, "hour"))
    minutes = sorted(_field(value, "minute"))
    idle = 0
    while idle < _SEARCH_DAYS:
        if not _day_matches(value, day):
            day += timedelta(days=1)
            idle += 1
            continue
        idle = 0
        for hour in hours:
            for minute in minutes:
                wall = datetime(day.year, day.month, day.day, hour, minute)
                if wall < floor:
                    continue
                fire = _resolve(wall, zone)
                if fire.at > after:
                    yield fire
        day += timedelta(days=1)
    raise UnsupportedSchedule(f"the crontab {value!r} never fires")


def _resolve(wall: datetime, zone: tzinfo) -> Fire:
    first = wall.replace(tzinfo=zone, fold=0)
    second = wall.replace(tzinfo=zone, fold=1)
    at = first.astimezone(UTC)
    local = at.astimezone(zone)
    if local.replace(tzinfo=None) != wall:
        return Fire(at=at, local=local, dst="skipped", wall_clock=wall.strftime("%H:%M"))
    if first.utcoffset() != second.utcoffset():
        return Fire(at=at, local=local, dst="repeated", wall_clock=wall.strftime("%H:%M"))
    return Fire(at=at, local=local)


def preview(value: crontab | schedule, now: datetime, count: int = 10) -> list[Fire]:
    """The next `count` fire times after `now`."""
    out = []
    for fire in fire_times(value, now):
        out.append(fire)
        if len(out) >= count:
            break
    return out


def dst_warnings(value: crontab | schedule, now: datetime, days: int = 400) -> list[str]:
    """Plain-language notes on the fire times a daylight-saving change moves, over the next `days`."""
    if not isinstance(value, crontab):
        return []
    end = now + timedelta(days=days)
    notes: list[str] = []
    for fire in fire_times(value, now):
        if fire.at > end or len(notes) >= 4:
            break
        if fire.dst == "skipped":
            notes.append(
                f"{fire.local:%Y-%m-%d}: {fire.wall_clock} does not exist in {fire.local.tzinfo} "
                f"(clocks go forward); this run fires at {fire.local:%H:%M %Z} instead."
            )
        elif fire.dst == "repeated":
            notes.append(
                f"{fire.local:%Y-%m-%d}: {fire.wall_clock} happens twice in {fire.local.tzinfo} "
                f"(clocks go back); this run fires once, at the first ({fire.local:%H:%M %Z})."
            )
    return notes
