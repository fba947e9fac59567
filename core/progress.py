"""Progress of the running job: a service reports done / total per chunk, the run shows it.

    progress = Progress(total=candidates.count())
    for chunk in chunks:
        ...                      # the chunk's transaction commits
        progress.advance(len(chunk))

The job-aware task base (core.task_base) opens a tracker around each recorded run;
outside one (a service called from a shell or a test) reporting does nothing. The
tracker writes the JobRun at most once a second, never inside the caller's
transaction (it would hold the run's row lock for the whole chunk), and once more
when the run ends, so the admin, the API and `manage.py jobs run --wait` read it
from the database while a `--sync` run draws it in-process through a listener.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.db import DatabaseError, transaction
from django.utils import timezone

logger = logging.getLogger(__name__)

WRITE_INTERVAL_SECONDS = 1.0

Listener = Callable[[int, int | None], None]


@dataclass
class Tracker:
    task_id: str
    listener: Listener | None = None
    done: int = 0
    total: int | None = None
    written: tuple[int, int | None] | None = None
    # Counted from the start: a run shorter than the interval writes nothing until it ends,
    # when its outcome UPDATE carries the last value (core.services.jobruns._finish).
    last_write: float = field(default_factory=lambda: time.monotonic())
    # The transactions open when the run started (a test's, or a caller's around an inline run):
    # deeper than that is the service's own chunk transaction, which a write must not join.
    depth: int = 0
    reported: bool = False

    def report(self, done: int, total: int | None) -> None:
        done, total = _clamped(done, total)
        self.done, self.total, self.reported = done, total, True
        if self.listener is not None:
            self.listener(done, total)
        now = time.monotonic()
        if now - self.last_write >= WRITE_INTERVAL_SECONDS:
            self.flush(now=now)

    def values(self) -> tuple[int, int | None] | None:
        """The last report, or None when the run reported nothing."""
        return (self.done, self.total) if self.reported else None

    def flush(self, *, now: float | None = None) -> None:
        if self.written == (self.done, self.total) or (self.written is None and not self.reported):
            return
        if _depth() > self.depth:
            return  # written by a later report or the final flush, outside the chunk's transaction
        from core.models import JobRun

        try:
            # In a savepoint when the run itself is inside a transaction (an inline run in a
            # caller's): a failed write must not break the caller's transaction.
            with transaction.atomic() if self.depth else nullcontext():
                JobRun.objects.filter(task_id=self.task_id).update(
                    progress_done=self.done, progress_total=self.total, progress_at=timezone.now()
                )
        except DatabaseError:  # progress is advisory: the job's own work must not fail on it
            logger.warning("could not record progress of run %s", self.task_id, exc_info=True)
            return
        self.written = (self.done, self.total)
        self.last_write = time.monotonic() if now is None else now


def _depth() -> int:
    return len(transaction.get_connection().atomic_blocks)


def _clamped(done: int, total: int | None) -> tuple[int, int | None]:
    if total is not None and total < 0:
        logger.warning("progress total %s is negative; recorded as unknown", total)
        total = None
    if done < 0:
        logger.warning("progress %s is negative; recorded as 0", done)
        done = 0
    if total is not None and done > total:
        logger.warning("progress %s is beyond its total %s; recorded as %s", done, total, total)
        done = total
    return done, total


_current: ContextVar[Tracker | None] = ContextVar("job_progress", default=None)
# A listener registered for the next run started in this context (manage.py jobs run --sync).
_listener: ContextVar[Listener | None] = ContextVar("job_progress_listener", default=None)


@contextmanager
def tracking(task_id: str, *, write_at_end: bool = True) -> Iterator[Tracker]:
    """Around one recorded run: reports inside go to this run.

    The task base (core.task_base) passes `write_at_end=False` and hands the last value
    to the run's outcome UPDATE instead, so the end costs no statement of its own.
    """
    tracker = Tracker(task_id=task_id, listener=_listener.get(), depth=_depth())
    token = _current.set(tracker)
    try:
        yield tracker
    finally:
        _current.reset(token)
        if write_at_end:
            tracker.flush()


@contextmanager
def listening(listener: Listener) -> Iterator[None]:
    """Call `listener(done, total)` on every report of runs started inline in this block."""
    token = _listener.set(listener)
    try:
        yield
    finally:
        _listener.reset(token)


def report_progress(done: int, total: int | None) -> None:
    """The running job has done `done` of `total` units (total None: unknown). No-op outside a run."""
    tracker = _current.get()
    if tracker is not None:
        tracker.report(done, total)


class Progress:
    """One phase of a chunked sweep: `Progress(total=n)` when it starts, `advance(k)` after each committed chunk.

    Phases of one run add up: a cleanup that sweeps three tables reports one bar whose
    total is the three counts (each added as its phase starts).
    """

    def __init__(self, total: int) -> None:
        if total < 0:
            logger.warning("progress phase total %s is negative; counted as 0", total)
        self.done = 0
        self.total = max(total, 0)
        tracker = _current.get()
        if tracker is not None:
            tracker.report(tracker.done, (tracker.total or 0) + self.total)

    def advance(self, n: int = 1) -> None:
        tracker = _current.get()
        grow = max(self.done + n - self.total, 0)  # rows that came due while the sweep ran
        self.done += n
        self.total += grow
        if tracker is not None:
            tracker.report(tracker.done + n, (tracker.total or 0) + grow)


class ChunkedProgress:
    """A sweep's phase whose total is counted only once its first chunk came back full.

    The usual run of a sweep every few seconds fits one chunk and costs no count query;
    behind a full first chunk, `rest()` counts what is left (after that chunk was done).
    Call `advance(len(chunk))` after each chunk, the first one too, even when empty.
    """

    def __init__(self, *, chunk_size: int, rest: Callable[[], int]) -> None:
        self.chunk_size = chunk_size
        self.rest = rest
        self.phase: Progress | None = None

    def advance(self, n: int) -> None:
        if self.phase is None:
            self.phase = Progress(total=n + (self.rest() if n >= self.chunk_size else 0))
        self.phase.advance(n)


def progress_view(
    *, done: int | None, total: int | None, status: str, started_at: datetime | None, finished: bool
) -> dict[str, Any] | None:
    """Progress as the API and admin show it: done, total, percent and an estimate of the time left."""
    if done is None and total is None:
        return None
    done = done or 0
    # What was reported, also once finished: a bounded sweep that stopped at its chunk limit
    # (a backlog left for the next run) shows how far it got, not 100%.
    percent = round(100 * done / total, 1) if total else (100.0 if total == 0 else None)
    eta: float | None = None
    if not finished and total and done and started_at is not None:
        elapsed = (timezone.now() - started_at).total_seconds()
        eta = round(max(elapsed * (total - done) / done, 0.0), 1)
    return {"done": done, "total": total, "percent": percent, "eta_seconds": eta}
