"""Shared plumbing for benchmarks: a dedicated PostgreSQL database and measurements.

Benchmarks never touch the test or development databases: `bench_database()` points
Django at `<DATABASE_URL name>_bench`, creating and migrating it when needed.
"""

from __future__ import annotations

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
