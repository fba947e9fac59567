"""Driver assignment expiry: the sweep over 100,000 ASSIGNING requests, and deadline-to-PENDING latency.

    python -m tests.benchmarks driver_assignment

1. The sweep (`logistics.check_expired_driver_assignments`) with 100,000 requests in
   ASSIGNING, 50,000 of them past their deadline, next to 100,000 delivered ones: seconds,
   queries, peak Python memory, and the same again when there is nothing left to expire.
2. Latency from an offer's deadline to its request being PENDING again, over a few
   hundred offers: with the one-shot expiry (a real `celery worker` runs the task sent
   with the offer's deadline as eta) and with the sweep alone (every 60 s, as beat runs it).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import redis
from django.conf import settings
from django.db import connection
from django.utils import timezone

from tests.benchmarks._support import bench_database, measure

ROOT = Path(__file__).resolve().parents[2]
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


def _reset() -> None:
    with connection.cursor() as cur:
        cur.execute(
            "TRUNCATE logistics_assignmentoffer, logistics_stockrequest, logistics_driver, logistics_station CASCADE"
        )
        cur.execute(
            "DELETE FROM notifications_notification WHERE user_id IN (SELECT id FROM core_user WHERE username LIKE %s)",
            ["bench-driver-%"],
        )
        cur.execute("DELETE FROM core_user WHERE username LIKE %s", ["bench-driver-%"])


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
    from logistics.models import AssignmentOffer, StockRequest
    from logistics.services import EXPIRY_CHUNK_SIZE, stock_requests_expire_assignments

    _reset()
    started = time.perf_counter()
    _seed_sweep_data()
    print(
        f"seeded {TOTAL_ASSIGNING:,} ASSIGNING ({EXPIRED:,} expired) + {DELIVERED:,} DELIVERED "
        f"in {time.perf_counter() - started:.1f}s",
        flush=True,
    )
    print(f"candidate query plan: {_candidate_plan()}")

    first = measure(stock_requests_expire_assignments)
    assert first.result == {"expired_count": EXPIRED, "notices_requeued": 0}, first.result
    assert StockRequest.objects.filter(status="ASSIGNING").count() == TOTAL_ASSIGNING - EXPIRED
    assert AssignmentOffer.objects.filter(outcome="EXPIRED").count() == EXPIRED
    queued = redis.Redis.from_url(settings.CELERY_BROKER_URL).llen("logistics")
    assert queued == -(-EXPIRED // EXPIRY_CHUNK_SIZE), queued
    chunks = -(-EXPIRED // EXPIRY_CHUNK_SIZE)
    print(
        f"sweep, {EXPIRED:,} to expire: {first.seconds:.2f}s ({first.rate(EXPIRED):,.0f} requests/s), "
        f"{first.queries} queries ({chunks} chunks of {EXPIRY_CHUNK_SIZE}, "
        f"{first.seconds / chunks * 1000:.0f} ms per chunk incl. sending), "
        f"peak memory {first.peak_memory_mb:.1f} MB, {queued:,} fan-out messages queued"
    )
    fan_out = _run_fan_out()
    print(
        f"notice fan-out, run by workers after the sweep: {fan_out['messages']} chunk messages sent "
        f"{fan_out['sent']:,} notify_eic_assignment_expired tasks in {fan_out['seconds']:.1f}s "
        f"({fan_out['sent'] / fan_out['seconds']:,.0f}/s on one process, no tracemalloc)"
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
    _flush_broker()


def _run_fan_out() -> dict[str, float]:
    """Run the queued fan-out messages' task body here, as a worker would, timing the broker sends."""
    import base64
    import json

    from logistics.services import assignment_expired_notices_send

    r = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    chunks = []
    while raw := r.rpop("logistics"):
        message = json.loads(raw)
        if message["headers"]["task"] == "logistics.send_assignment_expired_notices":
            chunks.append(json.loads(base64.b64decode(message["body"]))[0][0])
    started = time.perf_counter()
    sent = sum(assignment_expired_notices_send(offers=offers)["sent"] for offers in chunks)
    return {"messages": len(chunks), "sent": sent, "seconds": time.perf_counter() - started}


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


def _start_worker(log: Path) -> subprocess.Popen[bytes]:
    db = settings.DATABASES["default"]
    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE=os.environ.get("DJANGO_SETTINGS_MODULE", "config.settings.test"),
        DATABASE_URL=f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}",
        LOG_LEVEL="WARNING",
    )
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
    proc = subprocess.Popen(
        argv, cwd=ROOT, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True
    )
    from config.celery import app

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        replies = app.control.ping(timeout=0.5)
        if any("bench-logistics@" in host for reply in replies for host in reply):
            return proc
    proc.terminate()
    raise SystemExit(f"the benchmark worker did not start; see {log}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    import signal

    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)


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
        _stop(worker)
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
