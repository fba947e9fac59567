"""Pricing at scale: the discount recompute against a naive per-batch loop, and the price history.

    DATABASE_URL=postgres://.../pricing_dev python -m tests.benchmarks pricing
    PRICING_BENCH_BATCHES=100000 DATABASE_URL=... python -m tests.benchmarks pricing   # a quick run

Seeds `<db>_bench` (see _support.py) with PRICING_BENCH_BATCHES batches (default
1,000,000) over a tenth as many products, with set-based SQL (generate_series): 30 % of
the batches have stock and expire within the 30-day threshold (spread over days 0-30, so
every tier is hit), the rest expire 31-330 days out. Then it prints, for each step:
seconds, batches per second, SQL statements, and peak Python memory (a separate run
under tracemalloc, which slows what it traces):

1. `discounts_recompute` on fresh data (every in-window batch gets its discount);
2. the same again with nothing to change (target: at most a tenth of step 1's time,
   and no row written: the discount rows' xmin, PostgreSQL's row version, is unchanged);
3. a naive loop (`for batch in ...: discount.save()`) over a sample of NAIVE_SAMPLE
   batches, and the speed-up of 1 over it (target: at least 100 x);
4. the memory of the recompute at a quarter of the scale and at full scale (flat);
5. `price_history_snapshot` over every active batch, against one hand-written
   `INSERT ... SELECT` of the same rows (target: within 2 x).
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

import django
from django.db import connection, transaction
from django.utils import timezone

from tests.benchmarks._support import Measurement, bench_database, counted, peak_rss_mb

BATCHES = int(os.environ.get("PRICING_BENCH_BATCHES", "1000000"))
BATCHES_PER_PRODUCT = 10
IN_WINDOW_SHARE = 0.3
NAIVE_SAMPLE = int(os.environ.get("PRICING_BENCH_NAIVE_SAMPLE", "5000"))
TARGET_SPEED_UP = 100
TARGET_NOOP_SHARE = 0.1
TARGET_HISTORY_RATIO = 2.0


def seed(*, batches: int) -> int:
    """`batches` batches over batches / 10 products; returns how many are in the 30-day window."""
    products = max(batches // BATCHES_PER_PRODUCT, 1)
    now = timezone.now()
    today = timezone.localdate(now)
    with transaction.atomic(), connection.cursor() as cur:
        cur.execute(
            "TRUNCATE payments_pricesnapshot, payments_discount, payments_batch, payments_discountpolicy, "
            "payments_orderitem, payments_paymenttransaction, payments_order, payments_product "
            "RESTART IDENTITY CASCADE"
        )
        cur.execute(
            """
            INSERT INTO payments_product (sku, name, price, currency, stock, created_at, updated_at)
            SELECT 'BENCH-' || g, 'Bench product ' || g, (5 + g %% 50)::numeric(12, 2), 'EUR', 100, %s, %s
            FROM generate_series(1, %s) AS g
            """,
            [now, now, products],
        )
        # Batch g: product 1 + g % products; g % 10 < 3 (30 %) expires within 0-30 days, the
        # rest 31-330 days out. Cost is 40 % of the base price, so the floor (cost + 10 %)
        # stays below every default tier's price and each in-window batch gets a discount.
        cur.execute(
            """
            INSERT INTO payments_batch (product_id, lot_code, quantity, expiry_date, cost, base_price, currency,
                                        created_at, updated_at)
            SELECT 1 + g %% %s, 'LOT-' || g, 1 + g %% 40,
                   %s::date + CASE WHEN g %% 10 < 3 THEN (g / 10) %% 31 ELSE 31 + g %% 300 END,
                   round((5 + g %% 50 + (g %% 4) * 0.25) * 0.4, 2), (5 + g %% 50 + (g %% 4) * 0.25), 'EUR', %s, %s
            FROM generate_series(1, %s) AS g
            """,
            [products, today, now, now, batches],
        )
        cur.execute("SELECT count(*) FROM payments_batch WHERE expiry_date <= %s::date + 30", [today])
        in_window = int(cur.fetchone()[0])
    with connection.cursor() as cur:
        cur.execute("VACUUM ANALYZE payments_batch")
        cur.execute("VACUUM ANALYZE payments_product")
    return in_window


def line(label: str, m: Measurement, queries: int, items: int, *, unit: str = "batches") -> str:
    memory = f", peak Python memory {m.peak_memory_mb:.1f} MB (tracemalloc)" if m.peak_memory_mb else ""
    return (
        f"{label}: {m.seconds:.2f} s, {m.rate(items):,.0f} {unit}/s, {queries:,} SQL queries{memory}, "
        f"process peak RSS so far {peak_rss_mb():.0f} MB"
    )


def discount_versions() -> tuple[int, str]:
    """(rows, digest of every row's id and xmin): both unchanged when nothing wrote to the table.

    Computed in the database, so the check adds nothing to this process's memory.
    """
    with connection.cursor() as cur:
        cur.execute(
            "SELECT count(*), md5(string_agg(id::text || ':' || xmin::text, ',' ORDER BY id)) FROM payments_discount"
        )
        rows, digest = cur.fetchone()
        return int(rows), str(digest)


def truncate(*tables: str) -> None:
    with connection.cursor() as cur:
        cur.execute(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY")


def naive_recompute(batch_ids: list[int]) -> int:
    """What a first version typically does: per batch, look up its policy and discount, compute, save()."""
    from payments.models import Batch, Discount, DiscountPolicy
    from payments.services.pricing import discount_policy_default, discount_valid_until

    today = timezone.localdate()
    now = timezone.now()
    default = discount_policy_default()
    saved = 0
    for batch in Batch.objects.filter(pk__in=batch_ids).order_by("pk"):
        policy = DiscountPolicy.objects.filter(product_id=batch.product_id).first() or default
        quote = policy.quote(
            base_price=batch.base_price,
            cost=batch.cost,
            currency=batch.currency,
            days_to_expiry=(batch.expiry_date - today).days,
        )
        discount = Discount.objects.filter(batch=batch, status=Discount.Status.ACTIVE).first()
        if quote is None:
            if discount is not None:
                discount.status = Discount.Status.EXPIRED
                discount.ended_at = now
                discount.save()
            continue
        if discount is None:
            discount = Discount(batch=batch, valid_from=now)
        discount.policy_id = policy.pk
        discount.tier_days = quote.tier.days
        discount.tier_percentage = quote.tier.percentage
        discount.max_percentage = policy.max_percentage
        discount.min_margin_percentage = policy.min_margin_percentage
        discount.base_price = batch.base_price
        discount.cost = batch.cost
        discount.currency = batch.currency
        discount.percentage = quote.percentage
        discount.discounted_price = quote.price
        discount.valid_until = discount_valid_until(batch.expiry_date)
        discount.save()
        saved += 1
    return saved


def sample_discounts(batch_ids: list[int]) -> dict[int, tuple[Any, ...]]:
    from payments.models import Discount

    rows = Discount.objects.filter(batch_id__in=batch_ids, status=Discount.Status.ACTIVE).values_list(
        "batch_id", "tier_days", "percentage", "discounted_price", "valid_until"
    )
    return {batch_id: tuple(rest) for batch_id, *rest in rows}


HAND_WRITTEN_SNAPSHOT = """
INSERT INTO payments_pricesnapshot (batch_id, product_id, slot, price, base_price, percentage, currency, created_at)
SELECT b.id, b.product_id, %(slot)s, COALESCE(d.discounted_price, b.base_price), b.base_price,
       COALESCE(d.percentage, 0), b.currency, %(now)s
FROM payments_batch b
LEFT JOIN payments_discount d ON d.batch_id = b.id AND d.status = 'active' AND d.valid_until > %(now)s
WHERE b.quantity > 0 AND b.expiry_date >= %(today)s
ON CONFLICT (batch_id, slot) DO NOTHING
"""


def hand_written_snapshot() -> int:
    from payments.models.pricing import price_slot_start

    now = timezone.now()
    with transaction.atomic(), connection.cursor() as cur:
        cur.execute(
            HAND_WRITTEN_SNAPSHOT, {"slot": price_slot_start(now), "now": now, "today": timezone.localdate(now)}
        )
        return int(cur.rowcount)


def run_memory(batches: int) -> Measurement:
    """A fresh recompute under tracemalloc at this scale."""
    from payments.services.pricing import discounts_recompute

    seed(batches=batches)
    m, _ = counted(lambda: discounts_recompute(days_threshold=30), traced=True)
    return m


def main() -> None:
    from payments.services.pricing import discounts_recompute, price_history_snapshot

    with bench_database():
        quarter = max(BATCHES // 4, 1000)
        small = run_memory(quarter)

        in_window = seed(batches=BATCHES)
        print(
            f"seeded {BATCHES:,} batches over {BATCHES // BATCHES_PER_PRODUCT:,} products, {in_window:,} within 30 days"
        )
        first, q1 = counted(lambda: discounts_recompute(days_threshold=30))
        assert first.result["discounts_created"] == in_window, first.result
        print(line(f"recompute, fresh, {in_window:,} batches in the window", first, q1, in_window), flush=True)
        before = discount_versions()
        second, q2 = counted(lambda: discounts_recompute(days_threshold=30))
        assert discount_versions() == before, "the run with nothing to change wrote rows"
        assert second.result["discounts_unchanged"] == in_window, second.result
        print(line("recompute, nothing to change", second, q2, in_window) + ", 0 rows written", flush=True)
        share = second.seconds / first.seconds
        print(f"  nothing-to-change run: {share:.3f} of the fresh run (target at most {TARGET_NOOP_SHARE})", flush=True)

        # The naive loop over a sample of in-window batches whose discounts it must create again.
        from payments.models import Batch, Discount

        today = timezone.localdate()
        sample = list(
            Batch.objects.filter(quantity__gt=0, expiry_date__gte=today, expiry_date__lte=today + timedelta(days=30))
            .order_by("id")
            .values_list("id", flat=True)[:NAIVE_SAMPLE]
        )
        expected = sample_discounts(sample)
        Discount.objects.filter(batch_id__in=sample).delete()
        naive, nq = counted(lambda: naive_recompute(sample))
        assert sample_discounts(sample) == expected, "the naive loop priced differently"
        print(line(f"naive per-batch loop, {len(sample):,} batches", naive, nq, len(sample)), flush=True)
        print(f"  {nq / len(sample):.1f} queries per batch", flush=True)
        speed_up = first.rate(in_window) / naive.rate(len(sample))

        full = run_memory(BATCHES)
        print(
            f"memory: peak Python memory of a fresh recompute {small.peak_memory_mb:.1f} MB at {quarter:,} batches, "
            f"{full.peak_memory_mb:.1f} MB at {BATCHES:,} (tracemalloc); process peak RSS {peak_rss_mb():.0f} MB",
            flush=True,
        )

        # Price history: every active batch, against one hand-written INSERT ... SELECT.
        active = Batch.objects.filter(quantity__gt=0, expiry_date__gte=today).count()
        truncate("payments_pricesnapshot")
        history, hq = counted(price_history_snapshot)
        assert history.result["snapshots_created"] == active, history.result
        print(line(f"price history, {active:,} active batches", history, hq, active, unit="rows"), flush=True)
        again, _ = counted(price_history_snapshot)
        assert again.result["snapshots_created"] == 0
        print(f"  the same slot again: {again.seconds:.2f} s, 0 rows added", flush=True)
        truncate("payments_pricesnapshot")
        hand, _ = counted(hand_written_snapshot)
        assert hand.result == active
        print(line("one hand-written INSERT ... SELECT", hand, 1, active, unit="rows"), flush=True)
        ratio = history.seconds / hand.seconds

        print(f"discount_recompute speed-up: {speed_up:.0f} x (target {TARGET_SPEED_UP} x)", flush=True)
        print(f"price_history against one INSERT ... SELECT: {ratio:.2f} x (target within {TARGET_HISTORY_RATIO} x)")
        failures = []
        if speed_up < TARGET_SPEED_UP:
            failures.append(f"recompute only {speed_up:.0f} x the naive loop")
        if share > TARGET_NOOP_SHARE:
            failures.append(f"a run with nothing to change took {share:.2f} of the fresh run")
        if ratio > TARGET_HISTORY_RATIO:
            failures.append(f"price history {ratio:.2f} x the hand-written statement")
        if failures:
            raise SystemExit("pricing benchmark missed its targets: " + "; ".join(failures))


if __name__ == "__main__":
    django.setup()
    main()
