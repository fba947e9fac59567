"""Prometheus metrics at /metrics, computed from the database and Redis at scrape time.

Why at scrape time rather than prometheus-client's multiprocess mode: runs happen in
worker pool children, beat and web processes that come and go (max-tasks-per-child,
restarts, several machines); a multiprocess directory is per machine and loses a dead
child's samples unless carefully collected. The JobRun table already holds every run, so a
scrape reads it with a few aggregate queries and every web process answers the same. The
cost: run counts are those still kept (JOBRUN_RETENTION_DAYS), so the cleanup job shows
as a counter reset, which Prometheus' rate() tolerates.

Apps add their own families with `register_collector(fn)` from their AppConfig.ready()
(notifications adds its dead letters), so core imports no domain app.
"""

from __future__ import annotations

import base64
import hmac
import logging
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from django.conf import settings
from django.db.models import Count, Max, Min, Q, Sum
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

logger = logging.getLogger(__name__)

DURATION_BUCKETS = (0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 1800.0)

_extra: list[Callable[[], Iterable[Metric]]] = []


def register_collector(fn: Callable[[], Iterable[Metric]]) -> None:
    """Add a function yielding metric families to every scrape (idempotent)."""
    if fn not in _extra:
        _extra.append(fn)


def _job_metrics() -> Iterator[Metric]:
    from core.models import JobRun
    from core.scheduler import SchedulerService

    runs = CounterMetricFamily("jobs_runs", "Runs of each catalog job by outcome (runs kept)", labels=["job", "status"])
    for row in JobRun.objects.values("job_key", "status").annotate(n=Count("id")).order_by("job_key", "status"):
        runs.add_metric([row["job_key"], row["status"]], row["n"])
    yield runs

    finished = JobRun.objects.filter(duration_ms__isnull=False, status__in=["succeeded", "failed"])
    buckets = {f"b{i}": Count("id", filter=Q(duration_ms__lte=b * 1000)) for i, b in enumerate(DURATION_BUCKETS)}
    histogram = HistogramMetricFamily("jobs_run_duration_seconds", "Duration of finished runs", labels=["job"])
    for aggregate in finished.values("job_key").annotate(total=Count("id"), ms=Sum("duration_ms"), **buckets):
        values: dict[str, Any] = dict(aggregate)
        points = [(str(b), values[f"b{i}"]) for i, b in enumerate(DURATION_BUCKETS)] + [("+Inf", values["total"])]
        histogram.add_metric([values["job_key"]], points, sum_value=(values["ms"] or 0) / 1000)
    yield histogram

    success = GaugeMetricFamily(
        "jobs_last_success_timestamp_seconds", "When each job last succeeded (Unix time)", labels=["job"]
    )
    for newest in JobRun.objects.filter(status="succeeded").values("job_key").annotate(at=Max("finished_at")):
        if newest["at"] is not None:
            success.add_metric([newest["job_key"]], newest["at"].timestamp())
    yield success

    status = SchedulerService.get_task_status()
    assert isinstance(status, list)
    late = GaugeMetricFamily(
        "jobs_late", "1 while the job's last run started more than period + grace ago", labels=["job"]
    )
    paused = GaugeMetricFamily("jobs_paused", "1 while beat does not send the job (repeated failures)", labels=["job"])
    missed = CounterMetricFamily("jobs_missed_slots", "Slots that came due while no beat sent", labels=["job"])
    for r in status:
        if r["scheduled"]:
            late.add_metric([r["key"]], 1 if r["late"] else 0)
            paused.add_metric([r["key"]], 1 if r["paused"] else 0)
            missed.add_metric([r["key"]], r["missed_slots"])
    yield late
    yield paused
    yield missed


def _platform_metrics() -> Iterator[Metric]:
    from core.beat import beat_leader
    from core.models import OutboxIntent

    backlog = OutboxIntent.objects.filter(published_at__isnull=True).aggregate(n=Count("id"), oldest=Min("created_at"))
    yield GaugeMetricFamily("outbox_backlog", "Outbox intents not yet published", value=backlog["n"])
    age = (timezone.now() - backlog["oldest"]).total_seconds() if backlog["oldest"] else 0.0
    yield GaugeMetricFamily("outbox_oldest_age_seconds", "Age of the oldest unpublished intent", value=age)

    import redis as redis_lib

    queues = GaugeMetricFamily("celery_queue_length", "Messages waiting in each queue", labels=["queue"])
    try:
        broker = redis_lib.Redis.from_url(settings.CELERY_BROKER_URL, socket_timeout=2)
        with broker.pipeline(transaction=False) as pipe:
            for queue in settings.JOB_QUEUES:
                pipe.llen(queue)
            lengths = pipe.execute()
        for queue, length in zip(settings.JOB_QUEUES, lengths, strict=True):
            queues.add_metric([queue], int(length))
    except (redis_lib.RedisError, ValueError) as exc:  # a non-Redis broker or an outage: no sample
        logger.warning("metrics: queue lengths unavailable: %s", exc)
    yield queues

    leader = GaugeMetricFamily("beat_leader", "1 for the beat holding the leader lease", labels=["host", "pid"])
    try:
        current = beat_leader()
    except Exception:  # Redis down: no leader sample
        current = None
    if current is not None:
        leader.add_metric([str(current.get("host", "")), str(current.get("pid", ""))], 1)
    yield leader
    yield GaugeMetricFamily("beat_leader_present", "1 while some beat holds the lease", value=1 if current else 0)


class DatabaseCollector(Collector):
    def collect(self) -> Iterable[Metric]:
        yield from _job_metrics()
        yield from _platform_metrics()
        for fn in list(_extra):
            yield from fn()


def metrics_text() -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DatabaseCollector())
    return generate_latest(registry)


def _authorized(request: HttpRequest) -> bool:
    header = request.headers.get("Authorization", "")
    token = settings.METRICS_TOKEN
    if token and header.startswith("Bearer "):
        return hmac.compare_digest(header.removeprefix("Bearer ").strip(), token)
    basic = settings.METRICS_BASIC_AUTH
    if basic and header.startswith("Basic "):
        try:
            given = base64.b64decode(header.removeprefix("Basic ").strip()).decode()
        except (ValueError, UnicodeDecodeError):
            return False
        return hmac.compare_digest(given, basic)
    return False


def metrics_view(request: HttpRequest) -> HttpResponse:
    """GET /metrics: Prometheus text format; a bearer token (METRICS_TOKEN) or basic auth (METRICS_BASIC_AUTH)."""
    if not (settings.METRICS_TOKEN or settings.METRICS_BASIC_AUTH):
        return HttpResponse(
            "Metrics are off: set METRICS_TOKEN or METRICS_BASIC_AUTH (user:password).\n",
            status=403,
            content_type="text/plain",
        )
    if not _authorized(request):
        response = HttpResponse("Credentials required.\n", status=401, content_type="text/plain")
        response["WWW-Authenticate"] = 'Basic realm="metrics"'
        return response
    return HttpResponse(metrics_text(), content_type="text/plain; version=0.0.4; charset=utf-8")
