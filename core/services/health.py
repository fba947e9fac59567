"""What /health/ reports: database, broker, workers and beat, each up or down with a reason."""

from __future__ import annotations

import time
from typing import Any

from django.conf import settings
from django.db import connection

from core.redis import get_redis

BEAT_FIRED_KEY = "core:beat:last_fired"


def beat_fired_record() -> None:
    """Called in the beat process each time it sends the heartbeat job."""
    get_redis().set(BEAT_FIRED_KEY, repr(time.time()))


def beat_heartbeat_record() -> dict[str, float]:
    """The heartbeat job's body, on a worker: its run record proves beat → broker → worker end to end."""
    return {"recorded_at": time.time()}


def beat_heartbeat_age() -> float | None:
    value = get_redis().get(BEAT_FIRED_KEY)
    return None if value is None else time.time() - float(value)


def _check_database() -> dict[str, Any]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return {"ok": True}


def _check_broker() -> dict[str, Any]:
    from kombu import Connection

    # A fresh connection, not the pool's: a pooled one can hide a broker that went away.
    with Connection(settings.CELERY_BROKER_URL, connect_timeout=2) as conn:
        conn.ensure_connection(max_retries=1, timeout=2)
    return {"ok": True}


def _check_workers() -> dict[str, Any]:
    from celery import current_app as app

    replies = app.control.ping(timeout=1.0) or []
    workers = sorted(name for reply in replies for name in reply)
    if not workers:
        return {"ok": False, "error": "no worker answered a ping within 1 second"}
    return {"ok": True, "workers": workers}


def _check_beat() -> dict[str, Any]:
    age = beat_heartbeat_age()
    limit = settings.BEAT_HEARTBEAT_MAX_AGE_SECONDS
    if age is None:
        return {"ok": False, "error": "beat has never recorded a heartbeat (is `celery beat` running?)"}
    from core.beat import beat_leader

    leader = beat_leader()
    if age > limit:
        return {
            "ok": False,
            "error": f"last heartbeat {age:.0f}s ago (limit {limit}s)",
            "age_seconds": round(age),
            "leader": leader,
        }
    return {"ok": True, "age_seconds": round(age, 1), "leader": leader}


def _check_jobs() -> dict[str, Any]:
    """Late and paused jobs; down only while a critical job is late."""
    from core.scheduler import SchedulerService

    rows = SchedulerService.get_task_status()
    assert isinstance(rows, list)
    late = [{"job": r["key"], "seconds_late": r["late_seconds"], "critical": r["critical"]} for r in rows if r["late"]]
    paused = [{"job": r["key"], "reason": r["pause_reason"]} for r in rows if r["paused"]]
    critical = [entry["job"] for entry in late if entry["critical"]]
    part: dict[str, Any] = {"ok": not critical, "late": late, "paused": paused}
    if critical:
        part["error"] = f"critical job(s) late: {', '.join(critical)}"
    return part


CHECKS = {
    "database": _check_database,
    "broker": _check_broker,
    "workers": _check_workers,
    "beat": _check_beat,
    "jobs": _check_jobs,
}


def health_report() -> dict[str, Any]:
    """The report, computed at most once per HEALTH_CACHE_SECONDS across all web processes.

    Each computation broadcasts a ping and waits a second for workers: a load balancer
    polling every web process must not turn into a ping storm.
    """
    from django.core.cache import cache

    ttl = settings.HEALTH_CACHE_SECONDS
    if ttl:
        cached = cache.get("core:health:report")
        if cached is not None:
            return dict(cached)
    report = _health_report_compute()
    if ttl:
        cache.set("core:health:report", report, ttl)
    return report


def _health_report_compute() -> dict[str, Any]:
    parts: dict[str, Any] = {}
    for name, check in CHECKS.items():
        try:
            parts[name] = check()
        except Exception as exc:
            parts[name] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    down = [name for name, part in parts.items() if not part["ok"]]
    return {"status": "ok" if not down else "down", "down": down, "checks": parts}
