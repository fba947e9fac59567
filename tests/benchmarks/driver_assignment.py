"""Driver assignment expiry: the sweep over 100,000 ASSIGNING requests, and deadline-to-PENDING latency.

    python -m tests.benchmarks driver_assignment

1. The sweep (`logistics.check_expired_driver_assignments`) with 100,000 requests in
   ASSIGNING, 50,000 of them past their deadline, next to 100,000 delivered ones: seconds,
   queries, peak Python memory (each chunk of 1,000 also records one EIC notice intent,
   `logistics.notify_eic_assignments_expired` with the chunk's offer ids, in the core outbox
   and publishes it at its commit: 50 messages in all, one run's full budget of chunks), and
   the same again when there is nothing left to expire. Then the outbox relay publishing
   those 50 chunk notices as if the broker had been down during the sweep, and the workers'
   side: the notice service over the 50 chunks, for one EIC user with a device (50,000
   pushes and their delivery messages), and once more as a redelivery would (nothing written).
2. Latency from an offer's deadline to its request being PENDING again, over a few
   hundred offers: with the one-shot expiry (the offer's `logistics.expire_assignment`
   intent is published at its commit with the deadline as ETA, and a real `celery worker`
   runs it) and with the sweep alone (every 60 s, as beat runs it).
"""

from __future__ import annotations

import os
import resource
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import redis
from django.conf import settings
from django.db import connection
from django.utils import timezone

from tests.benchmarks._support import Measurement, bench_database, measure
from tests.e2e.conftest import CeleryProcess, process_env, wait_for

NOTIFY_CHUNK = "logistics.notify_eic_assignments_expired"
TOTAL_ASSIGNING = 100_000
EXPIRED = 50_000
DELIVERED = 100_000
LATENCY_OFFERS = 300
LATENCY_TIMEOUT_SECONDS = 5
SWEEP_PERIOD_SECONDS = 60


def _flush_broker() -> None:
    db = int(settings.CELERY_BROKER_URL.rsplit("/", 1)[-1] or 0)
    if db < 2:
        raise SystemExit(f"refusing to flush broker {settings.CELERY_BROKER_URL}: use a test broker database")
    redis.Redis.from_url(settings.CELERY_BROKER_URL).flushdb()


def _timed(fn: Callable[[], Any]) -> Measurement:
    """`measure` without tracemalloc, for runs that publish thousands of messages.

    tracemalloc makes kombu's per-message Python work about five times slower (1,000 messages:
    0.34 s without it, 1.75 s with it, here), which would swamp the figure. Memory is the growth
    of the process's peak RSS instead.
    """
    count = 0

    def counter(execute: Callable[..., Any], sql: str, params: Any, many: bool, context: Any) -> Any:
        nonlocal count
        count += 1
        return execute(sql, params, many, context)

    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with connection.execute_wrapper(counter):
        start = time.perf_counter()
        result = fn()
        seconds = time.perf_counter() - start
    grown_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before
    return Measurement(seconds=seconds, queries=count, peak_memory_mb=grown_kb / 1024, result=result)


@contextmanager
def _publish_timer() -> Iterator[dict[str, float]]:
    """Time spent in the broker publish (core.services.outbox.messages_publish), which runs after each commit."""
    from core.services import outbox

    spent = {"seconds": 0.0, "messages": 0}
    real = outbox.messages_publish

    def timed(messages: Any) -> None:
        start = time.perf_counter()
        try:
            real(messages)
        finally:
            spent["seconds"] += time.perf_counter() - start
            spent["messages"] += len(messages)

    outbox.messages_publish = timed  # a probe, restored below
    try:
        yield spent
    finally:
        outbox.messages_publish = real


def _reset() -> None:
    with connection.cursor() as cur:
        cur.execute(
            "TRUNCATE logistics_assignmentoffer, logistics_stockrequest, logistics_driver, logistics_station, "
            "core_outboxintent CASCADE"
        )
        bench_users = "SELECT id FROM core_user WHERE username LIKE 'bench-driver-%%' OR username LIKE 'bench-eic-%%'"
        for table in ("notifications_notification", "notifications_pushdevice", "core_user_groups"):
            cur.execute(f"DELETE FROM {table} WHERE user_id IN ({bench_users})")
        cur.execute(f"DELETE FROM core_user WHERE id IN ({bench_users})")


def _drivers(n: int) -> list[int]:
    from core.models import User
    from logistics.models import Driver

    users = User.objects.bulk_create([User(username=f"bench-driver-{i}") for i in range(n)])
    drivers = Driver.objects.bulk_create([Driver(user=u, name=f"Driver {i}") for i, u in enumerate(users)])
    return [d.pk for d in drivers]


def _seed_sweep_data() -> None:
    """100k ASSIGNING (half past the timeout) with their open offers, plus 100k delivered, in a few INSERTs."""
    from logistics.models import Station

    station = Station.objects.create(name="Bench Booster", code="BENCH-DBS", kind=Station.Kind.DBS)
    driver_ids = _drivers(200)
    now = timezone.now()
    timeout = settings.DRIVER_ASSIGNMENT_TIMEOUT_SECONDS
    old, young = now - timedelta(seconds=timeout + 600), now - timedelta(seconds=timeout // 2)
    with connection.cursor() as cur:
        cur.execute(
            """
            INSERT INTO logistics_stockrequest
                (station_id, quantity, status, target_driver_id, assignment_started_at, assignment_mode,
                 created_at, updated_at)
            SELECT %(station)s, 1000, 'ASSIGNING', %(d0)s + (i %% 200),
                   CASE WHEN i <= %(expired)s THEN %(old)s ELSE %(young)s END, 'MANUAL', %(old)s, %(old)s
            FROM generate_series(1, %(total)s) AS i
            """,
            {
                "station": station.pk,
                "d0": driver_ids[0],
                "expired": EXPIRED,
                "old": old,
                "young": young,
                "total": TOTAL_ASSIGNING,
            },
        )
        cur.execute(
            """
            INSERT INTO logistics_stockrequest
                (station_id, quantity, status, driver_id, assignment_mode, created_at, updated_at)
            SELECT %(station)s, 1000, 'DELIVERED', %(d0)s + (i %% 200), 'MANUAL', %(old)s, %(old)s
            FROM generate_series(1, %(total)s) AS i
            """,
            {"station": station.pk, "d0": driver_ids[0], "old": old, "total": DELIVERED},
        )
        cur.execute(
            """
            INSERT INTO logistics_assignmentoffer
                (stock_request_id, driver_id, mode, offered_at, expires_at, outcome)
            SELECT id, target_driver_id, 'MANUAL', assignment_started_at,
                   assignment_started_at + make_interval(secs => %(timeout)s), 'OPEN'
            FROM logistics_stockrequest WHERE status = 'ASSIGNING'
            """,
            {"timeout": timeout},
        )
        cur.execute("ANALYZE logistics_stockrequest")
        cur.execute("ANALYZE logistics_assignmentoffer")


def _candidate_plan() -> str:
    """The plan of one chunk's query: open offers past their deadline, their requests by key (without the lock)."""
    from django.db.models.functions import Now

    from logistics.models import StockRequest

    qs = (
        StockRequest.objects.filter(status="ASSIGNING", offers__outcome="OPEN", offers__expires_at__lte=Now())
        .filter(pk__gt=0)
        .order_by("pk")
        .values_list("pk")[:1000]
    )
    return " / ".join(line.strip() for line in qs.explain().splitlines() if "Index" in line or "Scan" in line)


def bench_sweep() -> None:
    from core.models import OutboxIntent
    from core.services.outbox import outbox_relay
    from logistics.models import AssignmentOffer, StockRequest
    from logistics.services import EXPIRY_CHUNK_SIZE, MAX_CHUNKS_PER_RUN, stock_requests_expire_assignments

    _reset()
    started = time.perf_counter()
    _seed_sweep_data()
    print(
        f"seeded {TOTAL_ASSIGNING:,} ASSIGNING ({EXPIRED:,} expired) + {DELIVERED:,} DELIVERED "
        f"in {time.perf_counter() - started:.1f}s",
        flush=True,
    )
    print(f"candidate query plan: {_candidate_plan()}")

    chunks = -(-EXPIRED // EXPIRY_CHUNK_SIZE)
    assert chunks <= MAX_CHUNKS_PER_RUN, f"{EXPIRED:,} offers need {chunks} chunks, over one run's {MAX_CHUNKS_PER_RUN}"
    with _publish_timer() as publishing:
        first = _timed(stock_requests_expire_assignments)
    assert first.result == {"expired_count": EXPIRED}, first.result
    assert StockRequest.objects.filter(status="ASSIGNING").count() == TOTAL_ASSIGNING - EXPIRED
    expired_ids = set(AssignmentOffer.objects.filter(outcome="EXPIRED").values_list("pk", flat=True))
    assert len(expired_ids) == EXPIRED
    # Each chunk recorded one notice, carrying exactly the offers it expired, and published it at its commit.
    recorded = OutboxIntent.objects.filter(task_name=NOTIFY_CHUNK)
    assert recorded.count() == chunks and not recorded.filter(published_at__isnull=True).exists()
    noticed = [pk for ids in recorded.values_list("kwargs__offer_ids", flat=True) for pk in ids]
    assert len(noticed) == EXPIRED and set(noticed) == expired_ids, "every expired offer in exactly one notice"
    assert not OutboxIntent.objects.filter(task_name="logistics.notify_eic_assignment_expired").exists()
    broker = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    queued = broker.llen("logistics")
    assert queued == chunks == publishing["messages"], (queued, publishing["messages"])
    in_transactions = first.seconds - publishing["seconds"]
    print(
        f"sweep, {EXPIRED:,} to expire: {first.seconds:.2f}s ({first.rate(EXPIRED):,.0f} requests/s), "
        f"{first.queries} queries ({chunks} chunks of {EXPIRY_CHUNK_SIZE}), peak RSS growth "
        f"{first.peak_memory_mb:.1f} MB (no tracemalloc); per chunk {in_transactions / chunks * 1000:.0f} ms "
        f"of database work (the expiring transaction, which records the chunk's notice intent, then the outbox's "
        f"claim and mark) + {publishing['seconds'] / chunks * 1000:.1f} ms publishing its one notice message "
        f"after the commit, outside the requests' row locks; {queued:,} notice messages queued"
    )
    second = measure(stock_requests_expire_assignments)
    print(
        f"sweep again, nothing to expire: {second.seconds * 1000:.1f} ms, {second.queries} queries, "
        f"peak memory {second.peak_memory_mb:.2f} MB, result {second.result} (statistics as before the sweep)"
    )
    with connection.cursor() as cur:  # what autovacuum does soon after a change this big
        cur.execute("ANALYZE logistics_stockrequest")
        cur.execute("ANALYZE logistics_assignmentoffer")
    third = measure(stock_requests_expire_assignments)
    print(
        f"sweep again after ANALYZE: {third.seconds * 1000:.1f} ms, {third.queries} queries; "
        f"candidate query plan: {_candidate_plan()}"
    )

    # As if the broker had been down during the sweep: every chunk's notice left unpublished, for the relay.
    _flush_broker()
    recorded.update(published_at=None)
    relayed = _timed(outbox_relay)
    assert relayed.result["published"] == chunks and relayed.result["waiting"] == 0, relayed.result
    assert broker.llen("logistics") == chunks
    print(
        f"outbox relay, {chunks} chunk notices ({EXPIRED:,} offers) left unpublished: "
        f"{relayed.seconds * 1000:.0f} ms, {relayed.queries} queries ({relayed.result['chunks']} chunks), "
        f"peak RSS growth {relayed.peak_memory_mb:.1f} MB"
    )
    _flush_broker()
    bench_notices([dict(kwargs) for kwargs in recorded.order_by("pk").values_list("kwargs", flat=True)])


def bench_notices(chunks: list[dict[str, Any]]) -> None:
    """The workers' side of the sweep's notices: the service each chunk message runs, for one EIC user."""
    from django.contrib.auth.models import Group

    from core.models import User
    from logistics.models import EIC_GROUP
    from logistics.services import eic_notify_assignments_expired
    from notifications.models import Notification, PushDevice

    eic = User.objects.create(username="bench-eic-1")
    eic.groups.add(Group.objects.get_or_create(name=EIC_GROUP)[0])
    PushDevice.objects.create(user=eic, token="bench-eic-1-device")
    offers = sum(len(kwargs["offer_ids"]) for kwargs in chunks)

    def run_all() -> list[dict[str, int]]:
        return [eic_notify_assignments_expired(offer_ids=kwargs["offer_ids"]) for kwargs in chunks]

    with _publish_timer() as publishing:
        first = _timed(run_all)
    written = sum(r["notified"] for r in first.result)
    assert written == offers and sum(r["missing"] for r in first.result) == 0, first.result[:3]
    assert Notification.objects.filter(user=eic, template_key="driver_assignment_expired").count() == offers
    print(
        f"EIC notices, {len(chunks)} chunk messages for one EIC user: {first.seconds:.2f}s on one process "
        f"({first.rate(offers):,.0f} offers/s, {first.seconds / len(chunks) * 1000:.0f} ms per chunk, of which "
        f"{publishing['seconds'] / len(chunks) * 1000:.0f} ms publishing its {offers // len(chunks):,} delivery "
        f"messages after the commit), {first.queries} queries, {written:,} pushes written, "
        f"peak RSS growth {first.peak_memory_mb:.1f} MB"
    )
    _flush_broker()
    again = _timed(run_all)
    assert sum(r["notified"] for r in again.result) == 0, again.result[:3]
    print(
        f"EIC notices again (a redelivery of all {len(chunks)}): {again.seconds:.2f}s, {again.queries} queries, "
        f"nothing written"
    )
    _flush_broker()


def _percentiles(values: list[float]) -> str:
    values = sorted(values)
    if not values:
        return "no samples"
    p99 = values[min(len(values) - 1, round(0.99 * (len(values) - 1)))]
    return (
        f"p50 {statistics.median(values):.2f}s, p99 {p99:.2f}s, max {values[-1]:.2f}s, "
        f"min {values[0]:.2f}s (n={len(values)})"
    )


def _latencies(offer_ids: list[int]) -> list[float]:
    from logistics.models import AssignmentOffer

    rows = AssignmentOffer.objects.filter(pk__in=offer_ids, outcome="EXPIRED").values_list("expires_at", "resolved_at")
    return [(resolved - deadline).total_seconds() for deadline, resolved in rows]


def _make_offers(n: int) -> list[int]:
    from logistics.models import Station, StockRequest
    from logistics.services import stock_request_offer

    station = Station.objects.get_or_create(code="BENCH-LAT", defaults={"name": "Latency Booster", "kind": "DBS"})[0]
    driver_ids = _drivers(n)
    requests = StockRequest.objects.bulk_create([StockRequest(station=station, quantity=500) for _ in range(n)])
    return [
        stock_request_offer(
            stock_request_id=r.pk, driver_id=driver_ids[i % len(driver_ids)], timeout_seconds=LATENCY_TIMEOUT_SECONDS
        ).pk
        for i, r in enumerate(requests)
    ]


def _start_worker(log: Path) -> CeleryProcess:
    """One worker on the logistics queue, against the benchmark database (process_env reads the live settings)."""
    argv = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "config",
        "worker",
        "-Q",
        "logistics",
        "-c",
        "2",
        "-n",
        "bench-logistics@%h",
        "--without-mingle",
        "--without-gossip",
        "-l",
        "warning",
    ]
    worker = CeleryProcess(argv, process_env(LOG_LEVEL="WARNING"), log)
    from config.celery import app

    try:
        wait_for(
            lambda: any("bench-logistics@" in host for reply in app.control.ping(timeout=0.5) for host in reply),
            timeout=60,
            message=f"the benchmark worker to answer a ping; see {log}",
        )
    except AssertionError:
        worker.stop()
        raise
    return worker


def _wait_all_expired(offer_ids: list[int], timeout: float) -> None:
    from logistics.models import AssignmentOffer

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not AssignmentOffer.objects.filter(pk__in=offer_ids, outcome="OPEN").exists():
            return
        time.sleep(0.5)


def bench_one_shot_latency() -> list[float]:
    _reset()
    _flush_broker()
    log = Path("/tmp") / f"bench-logistics-worker-{os.getpid()}.log"
    worker = _start_worker(log)
    try:
        started = time.perf_counter()
        offer_ids = _make_offers(LATENCY_OFFERS)
        spread = time.perf_counter() - started
        _wait_all_expired(offer_ids, timeout=LATENCY_TIMEOUT_SECONDS + spread + 60)
    finally:
        worker.stop()
    latencies = _latencies(offer_ids)
    print(
        f"one-shot path ({LATENCY_OFFERS} offers made over {spread:.1f}s, {LATENCY_TIMEOUT_SECONDS}s timeout, "
        f"one worker -c 2): deadline to PENDING {_percentiles(latencies)}",
        flush=True,
    )
    if len(latencies) != LATENCY_OFFERS:
        print(f"  warning: {LATENCY_OFFERS - len(latencies)} offers not expired by the one-shot path; see {log}")
    _flush_broker()
    return latencies


def bench_sweep_only_latency() -> list[float]:
    """No worker consumes the one-shot messages; the sweep runs every 60 s as beat would run it."""
    from logistics.models import AssignmentOffer, StockRequest
    from logistics.services import stock_requests_expire_assignments

    _reset()
    _flush_broker()
    offer_ids = _make_offers(LATENCY_OFFERS)
    # Deadlines spread evenly over one sweep period, as offers arrive at any time between two sweeps.
    base = timezone.now() + timedelta(seconds=2)
    offers = list(AssignmentOffer.objects.filter(pk__in=offer_ids).order_by("pk"))
    step = SWEEP_PERIOD_SECONDS / len(offers)
    for i, offer in enumerate(offers):
        offer.expires_at = base + timedelta(seconds=i * step)
        offer.offered_at = offer.expires_at - timedelta(seconds=LATENCY_TIMEOUT_SECONDS)
    AssignmentOffer.objects.bulk_update(offers, ["expires_at", "offered_at"], batch_size=500)
    requests = list(StockRequest.objects.filter(offers__pk__in=offer_ids))
    by_request = {o.stock_request_id: o for o in offers}
    for r in requests:
        r.assignment_started_at = by_request[r.pk].offered_at
    StockRequest.objects.bulk_update(requests, ["assignment_started_at"], batch_size=500)

    sweeps = 0
    next_sweep = time.monotonic() + SWEEP_PERIOD_SECONDS / 2  # beat's phase relative to the offers is arbitrary
    while AssignmentOffer.objects.filter(pk__in=offer_ids, outcome="OPEN").exists() and sweeps < 4:
        time.sleep(max(0.0, next_sweep - time.monotonic()))
        stock_requests_expire_assignments()  # as beat runs it: each offer's own expires_at
        sweeps += 1
        next_sweep += SWEEP_PERIOD_SECONDS
    latencies = _latencies(offer_ids)
    print(
        f"sweep-only path ({LATENCY_OFFERS} deadlines spread over {SWEEP_PERIOD_SECONDS}s, sweep every "
        f"{SWEEP_PERIOD_SECONDS}s, {sweeps} sweeps): deadline to PENDING {_percentiles(latencies)}",
        flush=True,
    )
    _flush_broker()
    return latencies


def main() -> None:
    with bench_database() as name:
        print(f"database {name}, DRIVER_ASSIGNMENT_TIMEOUT_SECONDS={settings.DRIVER_ASSIGNMENT_TIMEOUT_SECONDS}")
        bench_sweep()
        bench_one_shot_latency()
        bench_sweep_only_latency()
        _reset()
