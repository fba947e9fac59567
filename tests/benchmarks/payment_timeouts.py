"""The payment-timeout sweep at scale, against a naive per-order loop.

    DATABASE_URL=postgres://... python -m tests.benchmarks payment_timeouts
    DATABASE_URL=postgres://... python -m tests.benchmarks.payment_timeouts

Seeds `<db>_bench` with 50,000 then 200,000 orders (half of them past the deadline,
3 items each over 1,000 products, one open payment transaction each), runs the
set-based sweep over each (one payments.notify_payment_failed outbox intent per chunk,
published right after the chunk's commit, as in production), then runs the naive loop (`order.save()`, `product.save()` per row) over
5,000 expired orders of the 200,000 data set, and prints seconds, orders per second, SQL
queries, peak Python memory (tracemalloc) and the process's peak RSS for each.

The notify task is not part of the sweep (it runs later, on a worker), so it is measured
on its own: `orders_notify_payment_failed` over the 25,000 orders cancelled in the 50,000
data set, 1,000 ids per call like the sweep's messages (payment_failed outbox rows written).
"""

from __future__ import annotations

from datetime import timedelta

import django
import redis
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from tests.benchmarks._support import Measurement, bench_database, counted, peak_rss_mb

PRODUCTS = 1000
ITEMS_PER_ORDER = 3
NAIVE_SAMPLE = 5000
START_STOCK = 1_000_000
TARGET_SPEED_UP = 70  # issue 8: the sweep must stay at least 70 x the naive loop


def seed(*, orders: int, expired: int) -> None:
    """Set-based seeding in SQL: the data `order_place` would have produced, in seconds rather than hours."""
    from core.models import User

    customer, _ = User.objects.get_or_create(username="bench-customer", defaults={"email": "bench@example.com"})
    now = timezone.now()
    with transaction.atomic(), connection.cursor() as cur:
        cur.execute(
            "TRUNCATE payments_orderitem, payments_paymenttransaction, payments_order, payments_product "
            "RESTART IDENTITY CASCADE"
        )
        # The previous run's payment_failed rows and outbox intents (this is the benchmark's own database).
        cur.execute("TRUNCATE notifications_notification, core_outboxintent RESTART IDENTITY")
        cur.execute(
            """
            INSERT INTO payments_product (sku, name, price, currency, stock, created_at, updated_at)
            SELECT 'BENCH-' || g, 'Bench product ' || g, (5 + g %% 50)::numeric(12, 2), 'EUR', %s, %s, %s
            FROM generate_series(1, %s) AS g
            """,
            [START_STOCK, now, now, PRODUCTS],
        )
        # Orders 1..expired are 4 to 5 days old (past the 3-day deadline), the rest 1 day old.
        cur.execute(
            """
            CREATE TEMP TABLE bench_orders ON COMMIT DROP AS
            SELECT g AS n, gen_random_uuid() AS id,
                   CASE WHEN g <= %s THEN %s::timestamptz - interval '4 days' - (g %% 86400) * interval '1 second'
                        ELSE %s::timestamptz - interval '1 day' END AS created_at
            FROM generate_series(1, %s) AS g
            """,
            [expired, now, now, orders],
        )
        cur.execute(
            """
            INSERT INTO payments_order (id, customer_id, status, payment_status, currency, total, created_at,
                                        cancel_reason, updated_at)
            SELECT id, %s, 'pending_payment', 'pending', 'EUR', 0, created_at, '', created_at FROM bench_orders
            """,
            [customer.pk],
        )
        cur.execute(
            """
            INSERT INTO payments_orderitem (order_id, product_id, quantity, unit_price)
            SELECT o.id, ((o.n * 7 + k * 331) %% %s) + 1, 1 + (o.n + k) %% 3, 10
            FROM bench_orders o CROSS JOIN generate_series(0, %s) AS k
            """,
            [PRODUCTS, ITEMS_PER_ORDER - 1],
        )
        cur.execute(
            """
            INSERT INTO payments_paymenttransaction (order_id, provider, provider_reference, amount, currency,
                                                     status, needs_refund, created_at, updated_at)
            SELECT id, 'bench', 'bench-' || n, 0, 'EUR', 'initiated', false, created_at, created_at
            FROM bench_orders
            """
        )
        cur.execute(
            """
            UPDATE payments_product p SET stock = p.stock - r.units
            FROM (SELECT product_id, sum(quantity) AS units FROM payments_orderitem GROUP BY product_id) r
            WHERE r.product_id = p.id
            """
        )
        cur.execute("ANALYZE payments_product, payments_order, payments_orderitem, payments_paymenttransaction")


def naive_cancel(order_ids: list[object]) -> int:
    """What a first version typically does: load, mutate, save() each row; autocommit per statement."""
    from payments.models import Order, PaymentTransaction

    now = timezone.now()
    cancelled = 0
    for order in Order.objects.filter(pk__in=order_ids, status=Order.Status.PENDING_PAYMENT):
        order.status = Order.Status.CANCELLED
        order.payment_status = Order.PaymentStatus.FAILED
        order.cancelled_at = now
        order.cancel_reason = Order.CancelReason.PAYMENT_TIMEOUT.label
        order.save()
        for item in order.items.all():
            product = item.product
            product.stock += item.quantity
            product.save()
        for tx in order.transactions.filter(status__in=PaymentTransaction.NON_TERMINAL):
            tx.status = PaymentTransaction.Status.CANCELLED
            tx.save()
        cancelled += 1
    return cancelled


def check_consistent(expected_cancelled: int) -> None:
    from django.db.models import Sum

    from payments.models import Order, OrderItem, Product

    cancelled = Order.objects.filter(status=Order.Status.CANCELLED).count()
    live_units = OrderItem.objects.exclude(order__status=Order.Status.CANCELLED).aggregate(n=Sum("quantity"))["n"] or 0
    stock = Product.objects.aggregate(n=Sum("stock"))["n"]
    assert cancelled == expected_cancelled, (cancelled, expected_cancelled)
    assert stock + live_units == PRODUCTS * START_STOCK, "stock not conserved"


def check_notified(expected_orders: int) -> None:
    from notifications.models import Notification

    rows = Notification.objects.filter(template_key="payment_failed")
    assert rows.filter(channel="email").count() == expected_orders, "an order's payment_failed email is missing"
    assert rows.count() == 2 * expected_orders, "an order's payment_failed rows are missing"


def check_intents_published(task: str, expected: int) -> None:
    """Every intent of `task` was published by its commit hook: none left for the relay."""
    from core.models import OutboxIntent

    intents = OutboxIntent.objects.filter(task_name=task)
    assert intents.count() == expected, f"{intents.count()} {task} intents, expected {expected}"
    waiting = intents.filter(published_at__isnull=True).count()
    assert waiting == 0, f"{waiting} {task} intents left unpublished"


def check_deliveries_published(template: str) -> None:
    """Every row of `template` is in exactly one published delivery batch: none left for the relay."""
    from notifications.models import Notification
    from tests.support.outbox import delivery_ids

    rows = set(Notification.objects.filter(template_key=template).values_list("pk", flat=True))
    ids = delivery_ids()
    assert len(ids) == len(set(ids)), f"{len(ids) - len(set(ids))} rows in two delivery batches"
    assert rows <= set(ids), f"{len(rows - set(ids))} {template} rows in no delivery batch"
    waiting = len(delivery_ids(published=False))
    assert waiting == 0, f"{waiting} delivery ids left unpublished"


def sent_notices() -> int:
    url = settings.CELERY_BROKER_URL
    return int(redis.Redis.from_url(url).llen("payments")) if url.startswith("redis") else -1


def drop_sent_messages() -> None:
    # The sweep really published a notify_payment_failed per chunk (and the notify task a
    # deliver per notification row) for orders of this bench database: drop them, but only
    # from a test broker (db >= 2), never from a developer's.
    url = settings.CELERY_BROKER_URL
    if url.startswith("redis") and int(url.rsplit("/", 1)[-1] or 0) >= 2:
        redis.Redis.from_url(url).delete("notifications", "payments")


def line(label: str, m: Measurement, queries: int, items: int, *, traced: bool = False) -> str:
    memory = f"peak Python memory {m.peak_memory_mb:.1f} MB (tracemalloc, slows it), " if traced else ""
    return (
        f"{label}: {m.seconds:.2f} s, {m.rate(items):,.0f} orders/s, {queries:,} SQL queries, "
        f"{memory}process peak RSS so far {peak_rss_mb():.0f} MB"
    )


def run_sweep(orders: int, *, traced: bool = False) -> tuple[Measurement, int]:
    from payments.services.orders import orders_cancel_expired

    expired = orders // 2
    seed(orders=orders, expired=expired)
    drop_sent_messages()
    m, queries = counted(lambda: orders_cancel_expired(), traced=traced)
    summary = m.result
    check_consistent(expired)
    check_intents_published("payments.notify_payment_failed", summary["chunks"])
    notices = sent_notices()
    assert notices in (-1, summary["chunks"]), f"{notices} notify messages for {summary['chunks']} chunks"
    drop_sent_messages()
    assert summary["orders_cancelled"] == expired
    label = f"sweep, {orders:,} orders ({expired:,} expired)" + (", memory run" if traced else "")
    print(line(label, m, queries, expired, traced=traced), flush=True)
    print(
        f"  {summary['chunks']} chunks, {(queries - 1) / summary['chunks']:.1f} queries per chunk, "
        f"{summary['units_restored']:,} units restored, {summary['transactions_cancelled']:,} transactions cancelled",
        flush=True,
    )
    return m, expired


def run_notify(expected: int) -> None:
    """The notify task's service over the orders the last sweep cancelled, 1,000 ids per call."""
    from core.models import OutboxIntent
    from payments.services.orders import SWEEP_CHUNK_SIZE, orders_notify_payment_failed

    # Exactly what the sweep's intents carry: one call per published intent.
    calls = [
        list(kwargs["order_ids"])
        for kwargs in OutboxIntent.objects.filter(task_name="payments.notify_payment_failed")
        .order_by("pk")
        .values_list("kwargs", flat=True)
    ]
    assert sum(len(c) for c in calls) == expected, (sum(len(c) for c in calls), expected)
    m, queries = counted(lambda: [orders_notify_payment_failed(order_ids=c) for c in calls], traced=False)
    assert sum(r["notified"] for r in m.result) == expected
    # A relay publishing every intent again (after a crash) writes nothing more.
    again = [orders_notify_payment_failed(order_ids=c)["notifications_written"] for c in calls]
    assert sum(again) == 0, f"{sum(again)} notification rows written twice"
    check_notified(expected)
    check_deliveries_published("payment_failed")
    drop_sent_messages()
    print(line(f"notify task, {expected:,} cancelled orders in {len(calls)} calls", m, queries, expected), flush=True)
    print(f"  {queries / len(calls):.1f} queries per call of {SWEEP_CHUNK_SIZE:,} orders", flush=True)
    print(f"  exactly one payment_failed email per cancelled order: {expected:,} of {expected:,}", flush=True)


def main() -> None:
    with bench_database():
        _, expired_50k = run_sweep(50_000)
        run_notify(expired_50k)
        sweep, expired = run_sweep(200_000)

        from payments.models import Order

        seed(orders=200_000, expired=100_000)
        sample = list(
            Order.objects.filter(status=Order.Status.PENDING_PAYMENT, created_at__lt=timezone.now() - timedelta(days=3))
            .order_by("created_at")
            .values_list("pk", flat=True)[:NAIVE_SAMPLE]
        )
        naive, naive_queries = counted(lambda: naive_cancel(sample), traced=False)
        check_consistent(NAIVE_SAMPLE)
        label = f"naive per-order loop, {NAIVE_SAMPLE:,} of the expired orders"
        print(line(label, naive, naive_queries, NAIVE_SAMPLE), flush=True)
        print(f"  {naive_queries / NAIVE_SAMPLE:.1f} queries per order", flush=True)

        speed_up = sweep.rate(expired) / naive.rate(NAIVE_SAMPLE)
        traced, _ = run_sweep(50_000, traced=True)
        print(
            f"memory: peak Python memory {traced.peak_memory_mb:.1f} MB at 50,000 orders (tracemalloc); "
            f"process peak RSS {peak_rss_mb():.0f} MB over the whole benchmark"
        )
        print(f"payment_timeouts speed-up: {speed_up:.0f} x (target {TARGET_SPEED_UP} x)", flush=True)
        if speed_up < TARGET_SPEED_UP:
            raise SystemExit(f"payment_timeouts is only {speed_up:.0f} x faster than the naive loop")


if __name__ == "__main__":
    django.setup()
    main()
