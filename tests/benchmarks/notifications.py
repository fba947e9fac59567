"""Notification delivery at scale, against one plain Celery task per message.

    DATABASE_URL=postgres://... python -m tests.benchmarks notifications
    NOTIFICATIONS_BENCH_COUNT=4000 python -m tests.benchmarks notifications     # a quick run
    NOTIFICATIONS_BENCH_POOLS=threads,prefork,gevent ...                        # compare worker pools

A local threaded HTTP server stands in for Twilio: 50 ms an answer (NOTIFICATIONS_BENCH_LATENCY),
keep-alive, counting the requests for each message body, so a message sent twice shows. Runs:

1. ours: NOTIFICATIONS_BENCH_COUNT (20,000) SMS written through `notify_many` in transactions
   of 1,000 (as a sweep writes them), delivered by the Procfile's notifications worker
   (`-Q notifications,notifications_retry`, prefork with a process per core, each sending
   NOTIFICATIONS_SEND_CONCURRENCY (32) at once on its thread pool; rate limit off), timed
   from the first commit to the last row sent; then each other Celery pool in
   NOTIFICATIONS_BENCH_POOLS (threads; gevent when it is installed and asked for);
2. the first again with the stand-in answering 5 % of requests with a 500 (retry backoff base
   1 s, so the retries land within the run);
4. the baseline: NOTIFICATIONS_BENCH_BASELINE_COUNT (2,000) plain tasks, each POSTing one SMS to
   the same stand-in, on a default prefork worker (`-c` = cores), timed from the first send to
   the last request answered.

Prints messages per second for each, `notifications speed-up: N x` (target 5 x), the provider-bound
limit (connections ÷ latency) and how close run 1 gets, Redis commands per message (the broker
server's command count before and after), and lost / sent twice (both must be 0 without faults).
"""

from __future__ import annotations

import importlib.util
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import django
import redis
from django.conf import settings
from django.db import connection, transaction
from django.db.models import Count

from tests.benchmarks._support import bench_database
from tests.e2e.conftest import CeleryProcess, process_env, wait_for
from tests.support.sms_stand_in import TWILIO_ACCOUNT, TWILIO_PATH, SmsStandIn, serve

COUNT = int(os.environ.get("NOTIFICATIONS_BENCH_COUNT", "20000"))
BASELINE_COUNT = int(os.environ.get("NOTIFICATIONS_BENCH_BASELINE_COUNT", "2000"))
LATENCY = float(os.environ.get("NOTIFICATIONS_BENCH_LATENCY", "0.05"))
# The first is the configuration the Procfile runs (prefork, a process per core, each sending on its
# own thread pool); the others are measured beside it.
POOLS = [p for p in os.environ.get("NOTIFICATIONS_BENCH_POOLS", "prefork,threads").split(",") if p]
SEND_CONCURRENCY = int(os.environ.get("NOTIFICATIONS_BENCH_SEND_CONCURRENCY", "32"))
WORKER_CONCURRENCY = {"threads": 4, "prefork": os.cpu_count() or 1, "gevent": 4}
TARGET = 5
STALL_SECONDS = 120


def _broker() -> redis.Redis:
    url = settings.CELERY_BROKER_URL
    if not url.startswith("redis") or int(url.rsplit("/", 1)[-1] or 0) < 2:
        raise SystemExit(f"refusing to use broker {url}: use a test broker database (db >= 2)")
    return redis.Redis.from_url(url)


def redis_commands() -> int:
    stats = _broker().info("commandstats")
    return sum(int(v["calls"]) for v in stats.values())


def start_worker(log: Path, url: str, *, pool: str, extra: list[str] | None = None, **env: str) -> CeleryProcess:
    from config.celery import app

    environment = process_env(
        SMS_PROVIDER="twilio",
        TWILIO_BASE_URL=url,
        TWILIO_ACCOUNT_SID=TWILIO_ACCOUNT,
        TWILIO_AUTH_TOKEN="token",
        TWILIO_FROM_NUMBER="+15005550006",
        NOTIFICATIONS_SMS_RATE_LIMIT="",
        NOTIFICATIONS_SEND_CONCURRENCY=str(SEND_CONCURRENCY),
        NOTIFICATIONS_RETRY_BACKOFF_SECONDS="1",
        LOG_LEVEL="WARNING",
        **env,
    )
    name = f"bench-{pool}-{int(time.time() * 1000)}"
    argv = [sys.executable, "-m", "celery", "-A", "config", "worker", "-l", "warning", "-n", f"{name}@%h"]
    argv += ["--without-mingle", "--without-gossip", *(extra or [])]
    worker = CeleryProcess(argv, environment, log)
    wait_for(
        lambda: any(name in host for reply in app.control.ping(timeout=0.5) for host in reply),
        timeout=60,
        message=f"the {pool} worker; log {log}",
    )
    return worker


def reset_tables() -> None:
    with connection.cursor() as cur:
        cur.execute("TRUNCATE notifications_notification, core_outboxintent RESTART IDENTITY CASCADE")
    _broker().delete("notifications", "notifications_retry", "bench")


def write_messages(count: int, tag: str) -> None:
    """`count` SMS through notify_many, 1,000 per transaction: published at each commit, as a sweep does."""
    from notifications.services import NotifyRequest, notify_many

    for start in range(0, count, 1000):
        with transaction.atomic():
            notify_many(
                NotifyRequest(
                    template="raw_sms",
                    to="+14155552671",
                    context={"body": f"{tag} message {n}"},
                    channels=["sms"],
                    dedupe_key=f"bench:{tag}:{n}",
                )
                for n in range(start, min(start + 1000, count))
            )


def wait_until_done(count: int) -> dict[str, int]:
    """Poll until `count` rows are sent or failed (or progress stalls); the rows per status."""
    from notifications.models import Notification

    last, last_change = -1, time.perf_counter()
    while True:
        done = Notification.objects.filter(status__in=["sent", "failed"]).count()
        now = time.perf_counter()
        if done >= count:
            break
        if done != last:
            last, last_change = done, now
        elif now - last_change > STALL_SECONDS:
            print(f"  stalled at {done:,} of {count:,}", flush=True)
            break
        time.sleep(0.25)
    return dict(Notification.objects.values_list("status").annotate(n=Count("id")))


def run_ours(stand_in: SmsStandIn, url: str, logs: Path, *, pool: str, failure_rate: float) -> dict[str, Any]:
    from notifications.models import Notification

    reset_tables()
    stand_in.reset(failure_rate=failure_rate)
    concurrency = WORKER_CONCURRENCY.get(pool, 4)
    worker = start_worker(
        logs / f"ours-{pool}-{failure_rate}.log",
        url,
        pool=pool,
        extra=["-Q", "notifications,notifications_retry", "-P", pool, "-c", str(concurrency)],
    )
    try:
        before = redis_commands()
        started = time.perf_counter()
        write_messages(COUNT, f"{pool}-{failure_rate}")
        counts = wait_until_done(COUNT)
        seconds = time.perf_counter() - started
        commands = redis_commands() - before
    finally:
        worker.stop()
    attempts = Counter(Notification.objects.values_list("attempts", flat=True))
    sent_twice = sum(1 for n in stand_in.accepted.values() if n > 1)
    lost = COUNT - counts.get("sent", 0) - counts.get("failed", 0)
    return {
        "pool": pool,
        "concurrency": concurrency,
        "seconds": seconds,
        "rate": COUNT / seconds,
        "counts": counts,
        "attempts": dict(sorted(attempts.items())),
        "requests": stand_in.requests,
        "sent_twice": sent_twice,
        "lost": lost,
        "redis_per_message": commands / COUNT,
    }


def run_baseline(stand_in: SmsStandIn, url: str, logs: Path) -> dict[str, Any]:
    from celery import current_app

    reset_tables()
    stand_in.reset()
    worker = start_worker(
        logs / "baseline.log",
        url,
        pool="prefork",
        extra=["-Q", "bench", "--include", "tests.benchmarks._baseline_tasks"],
    )
    try:
        started = time.perf_counter()
        with current_app.producer_or_acquire() as producer:
            for n in range(BASELINE_COUNT):
                current_app.send_task(
                    "bench.plain_sms",
                    kwargs={"url": url + TWILIO_PATH, "to": "+14155552671", "body": f"baseline {n}"},
                    queue="bench",
                    producer=producer,
                )
        wait_for(lambda: sum(stand_in.accepted.values()) >= BASELINE_COUNT, timeout=3600, interval=0.25)
        seconds = stand_in.last_answer - started
    finally:
        worker.stop()
    return {"seconds": seconds, "rate": BASELINE_COUNT / seconds, "processes": os.cpu_count() or 1}


def main() -> None:
    import notifications.tasks  # noqa: F401  # registers the tasks the intents name

    with bench_database(), tempfile.TemporaryDirectory(prefix="notifications-bench-") as tmp:
        from notifications.services.templates import notification_templates_install_defaults

        notification_templates_install_defaults()
        logs = Path(tmp)
        stand_in = SmsStandIn(latency=LATENCY)
        with serve(stand_in) as url:
            results = []
            for pool in POOLS:
                if pool == "gevent" and importlib.util.find_spec("gevent") is None:
                    print("gevent pool: skipped (pip install gevent to measure it)", flush=True)
                    continue
                print(f"ours, {pool} pool: {COUNT:,} SMS through the outbox ...", flush=True)
                results.append(run_ours(stand_in, url, logs, pool=pool, failure_rate=0.0))
                r = results[-1]
                print(
                    f"  {r['seconds']:.1f} s = {r['rate']:,.0f} messages/s end to end "
                    f"(-P {pool} -c {r['concurrency']}, {SEND_CONCURRENCY} sends at once); {r['counts']}; "
                    f"Redis commands per message {r['redis_per_message']:.2f}; lost {r['lost']}, "
                    f"sent twice {r['sent_twice']}",
                    flush=True,
                )
            print(f"ours, {POOLS[0]} pool, the stand-in answering 5 % of requests with a 500 ...", flush=True)
            flaky = run_ours(stand_in, url, logs, pool=POOLS[0], failure_rate=0.05)
            print(
                f"  {flaky['seconds']:.1f} s = {flaky['rate']:,.0f} messages/s; {flaky['counts']}; attempts "
                f"{flaky['attempts']}; {flaky['requests']:,} requests; lost {flaky['lost']}, "
                f"sent twice {flaky['sent_twice']}",
                flush=True,
            )
            print(
                f"baseline: {BASELINE_COUNT:,} plain Celery tasks, one HTTP call each, default prefork ...", flush=True
            )
            base = run_baseline(stand_in, url, logs)
            print(
                f"  {base['seconds']:.1f} s = {base['rate']:,.1f} messages/s on {base['processes']} processes",
                flush=True,
            )
        best = results[0]
        connections = SEND_CONCURRENCY * (best["concurrency"] if best["pool"] == "prefork" else 1)
        bound = connections / LATENCY
        print(f"notifications speed-up: {best['rate'] / base['rate']:.1f} x (target {TARGET} x)", flush=True)
        print(
            f"provider-bound limit: {connections} connections / {LATENCY * 1000:.0f} ms = {bound:,.0f}/s; "
            f"ours reaches {best['rate'] / bound:.0%} of it (the rest is CPU: {os.cpu_count()} cores for the "
            "worker, PostgreSQL, Redis, the stand-in and the writer)",
            flush=True,
        )
        problems = [r for r in [*results, flaky] if r["lost"] or (r is not flaky and r["sent_twice"])]
        if problems:
            raise SystemExit(f"notifications: messages lost or sent twice: {problems}")
        if best["rate"] / base["rate"] < TARGET:
            print(f"WARNING: the speed-up is below the {TARGET} x target")


if __name__ == "__main__":
    django.setup()
    main()
