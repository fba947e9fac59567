"""After-commit side effects that must never undo or interrupt the caller's work."""

from __future__ import annotations

from collections.abc import Callable

from django.db import transaction


def on_commit_robust(func: Callable[[], object], *, name: str) -> None:
    """Call `func` once the current transaction commits (at once outside one).

    Robust: an exception is logged under `name` and swallowed, so a broker outage never
    rolls back or stops the caller. Each caller has its own way to catch up on a lost
    send (the outbox recovery job, the sweeps' re-sends). `name` is what the log shows:
    Django reports a failed callback by its __qualname__, which a lambda or a partial
    cannot give usefully.
    """

    def callback() -> None:
        func()

    callback.__name__ = callback.__qualname__ = name
    transaction.on_commit(callback, robust=True)
