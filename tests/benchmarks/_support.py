"""Shared plumbing for benchmarks: a dedicated PostgreSQL database and measurements.

Benchmarks never touch the test or development databases: `bench_database()` points
Django at `<DATABASE_URL name>_bench`, creating and migrating it when needed.
"""

from __future__ import annotations

import resource
import time
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import psycopg
from django.conf import settings
from django.core.management import call_command
from django.db import connection, connections


@contextmanager
def bench_database() -> Iterator[str]:
    db = settings.DATABASES["default"]
    if db["ENGINE"] != "django.db.backends.postgresql":
        raise SystemExit("Benchmarks need PostgreSQL: set DATABASE_URL=postgres://... (make bench does)")
    name = f"{db['NAME']}_bench"
    admin = psycopg.connect(
        host=db["HOST"] or "127.0.0.1",
        port=db["PORT"] or 5432,
        user=db["USER"],
        dbname="postgres",
        password=db.get("PASSWORD") or None,
        autocommit=True,
    )
    with admin:
        exists = admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
        if not exists:
            admin.execute(f'CREATE DATABASE "{name}"')
    connections.close_all()
    db["NAME"] = name
    call_command("migrate", verbosity=0, interactive=False)
    yield name
    connections.close_all()


@dataclass
class Measurement:
    seconds: float
    queries: int
    peak_memory_mb: float
    result: Any

    def rate(self, items: int) -> float:
        return items / self.seconds if self.seconds else float("inf")


def measure(fn: Callable[[], Any]) -> Measurement:
    """Wall time, SQL queries and peak Python memory (tracemalloc) of one call.

    Queries are counted with an execute wrapper, not Django's query log, which keeps
    only the last 9,000 and would hold every statement's text in memory.
    """
    count = 0

    def counter(execute: Callable[..., Any], sql: str, params: Any, many: bool, context: Any) -> Any:
        nonlocal count
        count += 1
        return execute(sql, params, many, context)

    tracemalloc.start()
    with connection.execute_wrapper(counter):
        start = time.perf_counter()
        result = fn()
        seconds = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return Measurement(seconds=seconds, queries=count, peak_memory_mb=peak / 2**20, result=result)


class QueryCounter:
    """Counts every statement; measure()'s query log keeps only the last 9,000, too few for a naive loop."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, execute: Callable[..., Any], sql: str, params: Any, many: bool, context: Any) -> Any:
        self.count += 1
        return execute(sql, params, many, context)


def counted(fn: Callable[[], Any], *, traced: bool = False) -> tuple[Measurement, int]:
    """Run `fn` counting its statements; with `traced`, also its peak Python memory (tracemalloc).

    Timed runs are not traced: tracemalloc hooks every allocation and slowed the payment sweep
    3.9 x and its naive loop 2.5 x (measured), so both are timed untraced, the same way, and the
    memory is taken in a separate traced run.
    """
    counter = QueryCounter()

    def run() -> Any:
        with connection.execute_wrapper(counter):
            return fn()

    if traced:
        return measure(run), counter.count
    start = time.perf_counter()
    result = run()
    return Measurement(seconds=time.perf_counter() - start, queries=0, peak_memory_mb=0.0, result=result), counter.count


def peak_rss_mb() -> float:
    """The process's peak resident set so far (ru_maxrss is in KiB on Linux): it never goes down."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
