"""Subscriptions at scale: 100,000 due at once, charged through the real fan-out, Redis and worker processes.

    DATABASE_URL=postgres://... CELERY_BROKER_URL=redis://.../8 python -m tests.benchmarks subscriptions
    SUBSCRIPTIONS_BENCH_COUNT=5000 python -m tests.benchmarks subscriptions      # a quick run

Seeds `<db>_bench` with SUBSCRIPTIONS_BENCH_COUNT (100,000) active subscriptions due today
over 1,000 products, and starts a local HTTP server standing in for Razorpay (about 20 ms an
answer, one payment per idempotency key, counting them). Then:

1. the fan-out: `subscriptions_queue_due()` as the `due_subscriptions` job runs it, every
   chunk's intents recorded with outbox_add_many and published after its commit as one
   pipelined batch; its enqueue rate, with the exact payloads kombu pushed captured;
2. raw Redis LPUSH of those same payloads, pipelined 1,000 at a time (the outbox's batch),
   into a scratch key of the same Redis: the floor the fan-out is compared with;
3. SUBSCRIPTIONS_BENCH_WORKERS (1) `celery worker -Q subscriptions -c SUBSCRIPTIONS_BENCH_CONCURRENCY`
   (cores + 1) processes drain the queue: claim, stock check, gateway call, order, period advanced,
   message. Charges per second, end to end = subscriptions / (fan-out + charging), worker
   start-up excluded; the fan-out and the charging do not overlap here, so it is a floor.

Checks printed: periods the gateway charged twice (must be 0) and due subscriptions left
uncharged (must be 0); one order per charge.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import django
import redis
from django.conf import settings
from django.db import connection
from django.utils import timezone

from tests.benchmarks._support import bench_database
from tests.e2e.conftest import CeleryProcess, process_env, wait_for

COUNT = int(os.environ.get("SUBSCRIPTIONS_BENCH_COUNT", "100000"))
WORKERS = int(os.environ.get("SUBSCRIPTIONS_BENCH_WORKERS", "1"))
# Processes per worker: the cores plus one, to overlap the gateway's 20 ms (measured on 2 cores: -c 3
# charged faster than -c 2, and -c 4 oversubscribed the cores: 0.30 s a task against 0.08 s).
CONCURRENCY = int(os.environ.get("SUBSCRIPTIONS_BENCH_CONCURRENCY", str((os.cpu_count() or 1) + 1)))
GATEWAY_SECONDS = 0.02
PRODUCTS = 1000
START_STOCK = 1_000_000
TARGET_RATIO = 10
# No charge delivered for this long means the workers are stuck: stop and report.
STALL_SECONDS = 180
SCRATCH_KEY = "bench:raw-lpush"


def _broker() -> redis.Redis:
    url = settings.CELERY_BROKER_URL
    if not url.startswith("redis") or int(url.rsplit("/", 1)[-1] or 0) < 2:
        raise SystemExit(f"refusing to use broker {url}: use a test broker database (db >= 2)")
    return redis.Redis.from_url(url)


def seed(count: int) -> None:
    """Set-based seeding in SQL: products, one weekly plan each, users and subscriptions due today."""
    now = timezone.now()
    today = now.date()
    with connection.cursor() as cur:
        cur.execute(
            "TRUNCATE payments_subscriptioncharge, payments_subscriptionreminder, payments_subscription, "
            "payments_plan, payments_orderitem, payments_paymenttransaction, payments_order, payments_cartitem, "
            "payments_cart, payments_product RESTART IDENTITY CASCADE"
        )
        cur.execute("TRUNCATE notifications_notification, core_outboxintent RESTART IDENTITY")
        cur.execute("DELETE FROM core_user WHERE username LIKE %s", ["bench-sub-%"])
        cur.execute(
            """
            INSERT INTO payments_product (sku, name, price, currency, stock, created_at, updated_at)
            SELECT 'SUB-' || g, 'Subscription product ' || g, 10, 'EUR', %s, %s, %s FROM generate_series(1, %s) g
            """,
            [START_STOCK, now, now, PRODUCTS],
        )
        cur.execute(
            """
            INSERT INTO payments_plan (name, product_id, quantity, price, currency, interval, interval_days,
                                       is_active, created_at, updated_at)
            SELECT 'Weekly ' || p.sku, p.id, 1 + p.id %% 3, 9.99, 'EUR', 'weekly', NULL, true, %s, %s
            FROM payments_product p
            """,
            [now, now],
        )
        # Email, no phone: each charge writes its email and SMS rows (the SMS cancelled: no number).
        cur.execute(
            """
            INSERT INTO core_user (password, is_superuser, username, first_name, last_name, email, is_staff,
                                   is_active, date_joined, phone_number)
            SELECT '!', false, 'bench-sub-' || g, '', '', 'bench-sub-' || g || '@example.com', false, true, %s, ''
            FROM generate_series(1, %s) g
            """,
            [now, count],
        )
        cur.execute(
            """
            INSERT INTO payments_subscription (user_id, plan_id, status, started_on, current_period_start,
                                               next_charge_date, failed_attempts, gateway_customer_id,
                                               gateway_token_id, cancelled_at, created_at, updated_at)
            SELECT u.id, (SELECT min(id) FROM payments_plan) + (u.id %% %s), 'active', %s::date - 7, NULL, %s,
                   0, 'cust_' || u.id, 'token_' || u.id, NULL, %s, %s
            FROM core_user u WHERE u.username LIKE 'bench-sub-%%'
            """,
            [PRODUCTS, today, today, now, now],
        )
        cur.execute("ANALYZE payments_product, payments_plan, payments_subscription, core_user")


@dataclass
class Probe:
    """What the fan-out pushed: each (queue, payload) core.broker wrote, and the time in the publisher."""

    payloads: list[tuple[str, str]] = field(default_factory=list)
    publish_seconds: float = 0.0


@contextmanager
def probed_publishing() -> Iterator[Probe]:
    """Capture the payloads (the raw baseline pushes exactly these) and time core's messages_publish."""
    from core import broker
    from core.services import outbox

    probe = Probe()
    real_encode, real_publish = broker._encode, outbox.messages_publish

    def encode(message: Any, headers: Any, *, queue: str, context: Any) -> str:
        payload = real_encode(message, headers, queue=queue, context=context)
        probe.payloads.append((queue, payload))
        return payload

    def publish(messages: Any) -> None:
        start = time.perf_counter()
        try:
            real_publish(messages)
        finally:
            probe.publish_seconds += time.perf_counter() - start

    # Probes, restored below; the after-commit hook looks messages_publish up in the module at call time.
    broker._encode = encode
    outbox.messages_publish = publish
    try:
        yield probe
    finally:
        broker._encode = real_encode
        outbox.messages_publish = real_publish


def raw_lpush_seconds(payloads: list[tuple[str, str]], *, batch: int = 1000) -> float:
    """Time pipelined LPUSHes of `payloads` into a scratch key, `batch` per round trip (the outbox's CHUNK_SIZE)."""
    client = _broker()
    client.delete(SCRATCH_KEY)
    start = time.perf_counter()
    for i in range(0, len(payloads), batch):
        pipe = client.pipeline(transaction=False)
        for _, payload in payloads[i : i + batch]:
            pipe.lpush(SCRATCH_KEY, payload)
        pipe.execute()
    seconds = time.perf_counter() - start
    assert client.llen(SCRATCH_KEY) == len(payloads)
    client.delete(SCRATCH_KEY)
    return seconds


def start_workers(log_dir: Path, gateway_url: str) -> list[CeleryProcess]:
    from config.celery import app

    env = process_env(
        RAZORPAY_BASE_URL=gateway_url,
        RAZORPAY_KEY_ID="rzp_bench_key",
        RAZORPAY_KEY_SECRET="rzp_bench_secret",
        RAZORPAY_TIMEOUT_SECONDS="10",
        LOG_LEVEL="WARNING",
    )
    workers = []
    for n in range(WORKERS):
        argv = [sys.executable, "-m", "celery", "-A", "config", "worker", "-l", "warning", "-Q", "subscriptions"]
        argv += ["-c", str(CONCURRENCY), "-n", f"bench{n}@%h", "--without-mingle", "--without-gossip"]
        workers.append(CeleryProcess(argv, env, log_dir / f"worker-{n}.log"))
    for n, worker in enumerate(workers):
        wait_for(
            lambda n=n: any(f"bench{n}@" in host for reply in app.control.ping(timeout=0.5) for host in reply),
            timeout=60,
            message=f"bench worker {n}; log {worker.log}",
        )
    return workers


def delivered() -> int:
    from payments.models import SubscriptionCharge

    return SubscriptionCharge.objects.filter(order__isnull=False).count()


def wait_for_charges(expected: int) -> tuple[float, int]:
    """Seconds until `expected` charges are delivered (or progress stalls); drops the notifications queue meanwhile."""
    broker = _broker()
    start = time.perf_counter()
    last, last_change = -1, start
    while True:
        done = delivered()
        now = time.perf_counter()
        # The charged messages' delivery tasks (no notifications worker here): keep Redis small.
        broker.delete("notifications")
        if done >= expected:
            return now - start, done
        if done != last:
            last, last_change = done, now
        elif now - last_change > STALL_SECONDS:
            print(f"  stalled at {done:,} of {expected:,} for {STALL_SECONDS} s", flush=True)
            return now - start, done
        time.sleep(1)


def main() -> None:
    import payments.tasks  # noqa: F401  # registers the task the fan-out's intents name
    from payments.models import Order, Subscription, SubscriptionCharge
    from payments.models.subscriptions import utc_today
    from payments.services.subscriptions import subscriptions_queue_due
    from tests.support.factories.subscriptions import GatewayStandIn, serve

    with bench_database():
        print(f"seeding {COUNT:,} subscriptions due today over {PRODUCTS:,} products ...", flush=True)
        seed(COUNT)
        broker = _broker()
        broker.delete("subscriptions", "notifications", SCRATCH_KEY)
        stand_in = GatewayStandIn(delay_seconds=GATEWAY_SECONDS)

        # 1. The fan-out, nobody consuming yet.
        with probed_publishing() as probe:
            start = time.perf_counter()
            summary = subscriptions_queue_due()
            fan_out = time.perf_counter() - start
        payloads = probe.payloads
        queued = int(broker.llen("subscriptions"))
        assert summary["queued"] == COUNT == queued == len(payloads), (summary, queued, len(payloads))
        size = sum(len(p) for _, p in payloads) / len(payloads)
        print(
            f"fan-out: {COUNT:,} subscriptions in {fan_out:.2f} s = {COUNT / fan_out:,.0f} enqueued/s, "
            f"{summary['chunks']} chunks of 1,000; payloads {size:,.0f} bytes on average",
            flush=True,
        )
        print(
            f"  of which core's messages_publish (protocol-2 envelopes, one LPUSH per queue per chunk): "
            f"{probe.publish_seconds:.2f} s ({probe.publish_seconds / fan_out:.0%}, "
            f"{probe.publish_seconds / COUNT * 1e6:,.0f} us a message); the database (page, dedupe and paid reads, "
            f"INSERT of the intents, commit, claim and mark published): {fan_out - probe.publish_seconds:.2f} s",
            flush=True,
        )

        # 2. Raw LPUSH of the same payloads.
        raw = raw_lpush_seconds(payloads)
        del payloads[:]
        ratio = (COUNT / raw) / (COUNT / fan_out)
        print(
            f"raw Redis LPUSH of the same payloads, pipelined 1,000 a round trip: {raw:.2f} s = "
            f"{COUNT / raw:,.0f}/s; the fan-out is {ratio:.1f} x slower (target within {TARGET_RATIO} x)",
            flush=True,
        )

        # 3. The workers charge them.
        with serve(stand_in) as url, tempfile.TemporaryDirectory(prefix="subs-bench-") as logs:
            workers = start_workers(Path(logs), url)
            try:
                charging, done = wait_for_charges(COUNT)
            finally:
                for worker in workers:
                    worker.stop()
                tail = "" if done >= COUNT else workers[0].output()[-3000:]
        broker.delete("subscriptions", "notifications")
        if tail:
            print(tail)

        per_period = stand_in.charges_per_period()
        charged_twice = sum(1 for n in per_period.values() if n > 1)
        due_left = Subscription.objects.filter(next_charge_date__lte=utc_today(), status="active").count()
        uncharged = COUNT - done
        orders = Order.objects.count()
        charges = SubscriptionCharge.objects.filter(status="succeeded").count()
        end_to_end = fan_out + charging
        print(
            f"charging: {done:,} charges in {charging:.1f} s = {done / charging:,.0f} charges/s on {WORKERS} worker(s) "
            f"x {CONCURRENCY} processes (gateway {GATEWAY_SECONDS * 1000:.0f} ms a call, "
            f"{sum(stand_in.calls_per_key().values()):,} calls)",
            flush=True,
        )
        print(f"end to end (fan-out + charging): {end_to_end:.1f} s = {done / end_to_end:,.0f} charges/s", flush=True)
        print(
            f"periods charged twice: {charged_twice} (must be 0); due subscriptions left uncharged: {uncharged} "
            f"(must be 0; {due_left} still due); orders {orders:,} for {charges:,} charges",
            flush=True,
        )
        if charged_twice or uncharged or due_left or orders != charges:
            raise SystemExit("subscriptions: a period was charged twice or a due subscription was left uncharged")
        if ratio > TARGET_RATIO:
            print(f"WARNING: the fan-out's enqueue rate is {ratio:.1f} x below raw LPUSH (target {TARGET_RATIO} x)")


if __name__ == "__main__":
    django.setup()
    main()
