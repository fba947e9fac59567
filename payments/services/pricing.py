"""Pricing: recompute expiry discounts, expire stale ones, snapshot prices, and read effective prices.

The price rule itself is `payments.models.pricing.price_quote` (the module's docstring
states the rounding). On PostgreSQL the recompute first finds, in one read-only
statement, the rows that may need a write, then evaluates the rule per chunk of those in
one SQL statement (compute, compare, write only what differs); elsewhere (SQLite for
`make run`) it runs `price_quote` in Python with bulk statements. Tests hold both to the
same results. A run that changes nothing writes no row.

Concurrency: two recomputes at once (the job's lease normally prevents it; a shell call or
a lapsed lease does not) take turns per chunk on a transaction-level advisory lock, so
each chunk sees the other's committed work and writes nothing twice; the unique
constraint "one active discount per batch" backs that up. The sweeps that end discounts
claim their rows with SKIP LOCKED and a conditional UPDATE, and count what they changed.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from django.db import connection, transaction
from django.db.models import Max, OuterRef, Q, QuerySet, Subquery
from django.utils import timezone

from core.errors import Invalid, NotFound
from core.progress import ChunkedProgress, Progress
from payments.models import Batch, Discount, DiscountPolicy, PriceSnapshot, Product
from payments.models.pricing import (
    CURRENCY_MINOR_UNITS,
    PriceQuote,
    Tier,
    price_quote,
    price_slot_start,
    tier_for,
    tiers_from_json,
)

DEFAULT_DAYS_THRESHOLD = 30
MIN_DAYS_THRESHOLD = 1
MAX_DAYS_THRESHOLD = 365
# In-window batches per recompute transaction. With tests/benchmarks/pricing.py (300,000
# batches in the window) a chunk that creates 5,000 discounts takes about 0.15 s with its
# commit, so the advisory lock and the rows it writes are held briefly; a run with nothing
# to change does not depend on it (one planning statement, no chunk).
RECOMPUTE_CHUNK_SIZE = 5000
# Discounts ended per transaction by the sweeps (recompute's removals, the daily cleanup).
EXPIRE_CHUNK_SIZE = 5000
# Batches per price-history INSERT ... SELECT. Measured: 1,000,000 snapshots in 50 chunks
# took 1.33 x one hand-written statement, about 0.65 s a chunk; the rows are new, so the
# only waiter is a batch being deleted (the foreign key's share lock).
SNAPSHOT_CHUNK_SIZE = 20000
# Key of the advisory lock the recompute's chunks take turns on (a stable 32-bit number).
RECOMPUTE_LOCK_KEY = zlib.crc32(b"payments.recompute_all_discounts")
HISTORY_MAX_DAYS = 366


def days_threshold_check(days_threshold: object) -> int:
    """The threshold as an int from 1 to 365 (None: the default, 30); Invalid naming the field otherwise."""
    if days_threshold is None:
        return DEFAULT_DAYS_THRESHOLD
    if isinstance(days_threshold, bool) or not isinstance(days_threshold, int):
        raise Invalid({"days_threshold": [f"A whole number of days is required, got {days_threshold!r}."]})
    if not MIN_DAYS_THRESHOLD <= days_threshold <= MAX_DAYS_THRESHOLD:
        raise Invalid(
            {
                "days_threshold": [
                    f"Must be between {MIN_DAYS_THRESHOLD} and {MAX_DAYS_THRESHOLD} days, got {days_threshold}."
                ]
            }
        )
    return days_threshold


# Policies ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PolicyTerms:
    """A policy parsed once per run: what `price_quote` needs, and the id a discount records (None: built-in)."""

    policy_id: int | None
    tiers: tuple[Tier, ...]
    max_percentage: Decimal
    min_margin_percentage: Decimal

    @classmethod
    def of(cls, policy: DiscountPolicy) -> PolicyTerms:
        return cls(
            policy_id=policy.pk,
            tiers=tuple(tiers_from_json(policy.tiers)),
            max_percentage=Decimal(policy.max_percentage),
            min_margin_percentage=Decimal(policy.min_margin_percentage),
        )

    def quote(self, *, base_price: Decimal, cost: Decimal, currency: str, days_to_expiry: int) -> PriceQuote | None:
        return price_quote(
            tiers=self.tiers,
            max_percentage=self.max_percentage,
            min_margin_percentage=self.min_margin_percentage,
            base_price=base_price,
            cost=cost,
            currency=currency,
            days_to_expiry=days_to_expiry,
        )


def discount_policy_default() -> DiscountPolicy:
    """The default policy row, or the built-in default (unsaved) while none exists."""
    return DiscountPolicy.objects.filter(is_default=True).first() or DiscountPolicy.builtin_default()


def discount_valid_until(expiry_date: date) -> datetime:
    """The end of the expiry day (midnight after it) in the project's time zone."""
    return datetime.combine(expiry_date + timedelta(days=1), time.min, tzinfo=timezone.get_current_timezone())


# Recompute -------------------------------------------------------------------------------------


def discounts_recompute(
    *, days_threshold: int | None = None, chunk_size: int = RECOMPUTE_CHUNK_SIZE, engine: str | None = None
) -> dict[str, Any]:
    """Give every batch with stock that expires within `days_threshold` days its tier's discount.

    Batch ids are walked in ranges holding at most `chunk_size` in-window batches (and as
    many active discounts), one transaction each. For each batch in the window, the
    policy (the product's, else the default) gives a tier; when the active discount
    already records exactly these inputs (policy, tier, maximum, margin, base price, cost,
    currency, validity) it is left alone, arithmetic skipped. Otherwise the price is
    computed and the discount created, changed, or ended when the batch gets no discount
    (no tier, or the floor leaves nothing off). An active discount in the range whose
    batch is not in the window (sold out, past expiry, further out than the threshold) is
    ended, and so, at the end, are those of deleted batches. Batches with stock past their
    expiry are never discounted and are counted in `batches_past_expiry`.

    On PostgreSQL a read-only planning pass first matches the whole window at once and
    finds the id span of the rows that may need a write; only that span is walked, so an
    hour with nothing to change costs one read-only statement.

    `engine`: "sql" (PostgreSQL only; the default there) or "python" (the default elsewhere).
    """
    days = days_threshold_check(days_threshold)
    if engine is None:
        engine = "sql" if connection.vendor == "postgresql" else "python"
    if engine not in ("sql", "python"):
        raise Invalid({"engine": [f"Unknown engine {engine!r}: use 'sql' or 'python'."]})
    if engine == "sql" and connection.vendor != "postgresql":
        raise Invalid(
            {"engine": [f"The 'sql' engine needs PostgreSQL; this database is {connection.vendor} (use 'python')."]}
        )
    now = timezone.now()
    today = timezone.localdate(now)
    horizon = today + timedelta(days=days)
    default = PolicyTerms.of(discount_policy_default())
    summary: dict[str, Any] = {
        "days_threshold": days,
        "today": today.isoformat(),
        "engine": engine,
        "batches_considered": 0,
        "discounts_created": 0,
        "discounts_changed": 0,
        "discounts_unchanged": 0,
        "discounts_removed": 0,
        "batches_without_discount": 0,
        "batches_past_expiry": 0,
        "chunks": 0,
    }
    window = Batch.objects.filter(quantity__gt=0, expiry_date__gte=today, expiry_date__lte=horizon)
    active = Discount.objects.filter(status=Discount.Status.ACTIVE)
    # Discounts of deleted batches: no walk below sees them.
    leftover = active.filter(batch__isnull=True)
    if engine == "sql":
        params = _sql_params(today=today, horizon=horizon, now=now, default=default)
        plan = _recompute_plan(params=params)
        summary["batches_considered"] = plan.considered
        summary["discounts_unchanged"] = plan.unchanged
        summary["batches_without_discount"] = plan.no_tier
        after = plan.first_dirty - 1
        # Progress in batch ids: the chunks cover the span of the rows that may need a write.
        progress = Progress(total=plan.last_dirty - after if plan.dirty else 0)
        while plan.dirty and after < plan.last_dirty:
            end = _recompute_range_end(window=window, active=active, after=after, size=chunk_size)
            last = plan.last_dirty if end is None else min(end, plan.last_dirty)
            _add(summary, _recompute_chunk_sql(params={**params, "after": after, "last": last}))
            progress.advance(last - after)
            after = last
    else:
        start = 0
        progress = Progress(total=window.aggregate(last=Max("id"))["last"] or 0)
        while (stop := _recompute_range_end(window=window, active=active, after=start, size=chunk_size)) is not None:
            _add(
                summary,
                _recompute_chunk_python(
                    batches=window.filter(id__gt=start, id__lte=stop),
                    discounts=active.filter(batch_id__gt=start, batch_id__lte=stop),
                    now=now,
                    default=default,
                ),
            )
            progress.advance(stop - start)
            start = stop
        # Past the window's last batch nothing is in the window: end what is active there.
        leftover = active.filter(Q(batch__isnull=True) | Q(batch_id__gt=start))
    summary["discounts_removed"] += _discounts_end(leftover, now=now)
    summary["batches_past_expiry"] = Batch.objects.filter(quantity__gt=0, expiry_date__lt=today).count()
    return summary


def _recompute_range_end(*, window: QuerySet[Batch], active: QuerySet[Discount], after: int, size: int) -> int | None:
    """The batch id that ends the next chunk `(after, end]`: at most `size` window batches and `size` active discounts.

    The window's side is read from batch_in_stock_by_id without fetching the chunk; the
    discounts' side only within that id range, so neither query depends on the discount
    table's statistics (never gathered yet right after a first run). None once the window
    has no batch after `after`.
    """
    batch_ids = window.filter(id__gt=after).order_by("id").values_list("id", flat=True)
    end = batch_ids[size - 1 : size].first()
    if end is None:  # fewer than `size` left: the last, partial chunk
        end = batch_ids.reverse().first()
        if end is None:
            return None
    crowded = (
        active.filter(batch_id__gt=after, batch_id__lte=end)
        .order_by("batch_id")
        .values_list("batch_id", flat=True)[size - 1 : size]
        .first()
    )
    return min(end, crowded) if crowded is not None else end


def _chunk_last_id(queryset: QuerySet[Batch], *, after: int, size: int) -> int | None:
    """The id that ends the next chunk of `queryset` after `after`, read from the index without fetching the chunk.

    Chunks follow the id (the batches' physical order), so each chunk's rows sit on
    neighbouring pages; a chunk in expiry order would visit a page per row.
    """
    rest = queryset.filter(id__gt=after).order_by("id").values_list("id", flat=True)
    last = rest[size - 1 : size].first()
    if last is None:  # the last, partial chunk
        last = rest.reverse().first()
    return last


def _take_chunk_turn() -> None:
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [RECOMPUTE_LOCK_KEY])


def _counts(
    *, considered: int, unchanged: int, created: int, changed: int, removed: int, without: int
) -> dict[str, int]:
    return {
        "chunks": 1,
        "batches_considered": considered,
        "discounts_created": created,
        "discounts_changed": changed,
        "discounts_unchanged": unchanged,
        "discounts_removed": removed,
        "batches_without_discount": without,
    }


# `price_quote` in SQL, in two steps. First each window batch in the id range gets its
# policy and tier (the default policy's from arrays indexed by days to expiry, a
# product's own from jsonb) and is matched with the active discount of the range: when
# that discount records exactly these inputs it is kept, and nothing more is computed
# for it, so a run with nothing to change does little more than read both ranges. The
# rest is priced (round() on numeric rounds half away from zero: half-up for prices;
# the floor's and the maximum's round-ups are ceil(x * units) / units with units = 10^minor places, from
# arrays of the currencies that do not have 2) and planned: create, change, end, none;
# then only those writes run, by primary key. Both sides are read as index ranges and
# FULL JOINed, which PostgreSQL can only hash or merge, so no plan depends on statistics.
_MATCH_CTES = """
chunk AS (
    SELECT b.id, b.product_id, b.cost, b.base_price, b.currency, b.expiry_date - %(today)s::date AS days,
           (b.expiry_date + 1)::timestamp AT TIME ZONE %(tz)s AS valid_until
    FROM {batch} b
    WHERE b.quantity > 0 AND b.expiry_date >= %(today)s AND b.expiry_date <= %(horizon)s
      AND b.id > %(after)s AND b.id <= %(last)s
),
terms AS (
    SELECT c.*, p.tiers AS own_tiers,
           CASE WHEN p.id IS NULL THEN %(default_id)s::bigint ELSE p.id END AS policy_id,
           COALESCE(p.max_percentage, %(default_max)s) AS max_percentage,
           COALESCE(p.min_margin_percentage, %(default_margin)s) AS min_margin_percentage,
           CASE
               WHEN p.id IS NULL THEN (%(tier_days)s::int[])[c.days + 1]
               ELSE (SELECT min((e->>'days')::int) FROM jsonb_array_elements(p.tiers) AS e
                     WHERE (e->>'days')::int >= c.days)
           END AS tier_days
    FROM chunk c
    LEFT JOIN {policy} p ON p.product_id = c.product_id
),
tiered AS (
    SELECT t.*,
           CASE
               WHEN t.own_tiers IS NULL THEN (%(tier_percentages)s::numeric[])[t.days + 1]
               ELSE (SELECT max((e->>'percentage')::numeric) FROM jsonb_array_elements(t.own_tiers) AS e
                     WHERE (e->>'days')::int = t.tier_days)
           END AS tier_percentage
    FROM terms t
),
cur AS (
    SELECT d.id AS discount_id, d.batch_id, d.policy_id, d.tier_days, d.tier_percentage, d.max_percentage,
           d.min_margin_percentage, d.base_price, d.cost, d.currency, d.valid_until
    FROM {discount} d
    WHERE d.status = 'active' AND d.batch_id > %(after)s AND d.batch_id <= %(last)s
),
matched AS (
    SELECT t.id, t.policy_id, t.tier_days, t.tier_percentage, t.max_percentage, t.min_margin_percentage,
           t.base_price, t.cost, t.currency, t.valid_until, cur.discount_id, cur.batch_id AS discount_batch_id,
           (t.id IS NOT NULL AND cur.discount_id IS NOT NULL
            AND (cur.policy_id, cur.tier_days, cur.tier_percentage, cur.max_percentage, cur.min_margin_percentage,
                 cur.base_price, cur.cost, cur.currency, cur.valid_until)
                IS NOT DISTINCT FROM
                (t.policy_id, t.tier_days, t.tier_percentage, t.max_percentage, t.min_margin_percentage,
                 t.base_price, t.cost, t.currency, t.valid_until)) AS unchanged
    FROM tiered t
    FULL JOIN cur ON cur.batch_id = t.id
)
"""

# The planning pass: the same matching over the whole window in one read-only statement.
# It returns the totals, and how many rows may need a write (a window batch whose discount
# does not record today's inputs, an active discount whose batch is not in the window) and
# the span of their batch ids.
_PLAN_SQL = (
    "WITH "  # noqa: S608 - the tables are named by the models (format below), every value is a parameter
    + _MATCH_CTES
    + """,
flagged AS (
    -- state: 1 unchanged, 2 in the window without a tier nor a discount (nothing to do), 0 dirty.
    -- OFFSET 0 keeps the row comparison from being inlined, and evaluated, once per aggregate.
    SELECT COALESCE(m.id, m.discount_batch_id) AS key, m.id IS NOT NULL AS in_window,
           CASE WHEN m.unchanged THEN 1
                WHEN m.id IS NOT NULL AND m.discount_id IS NULL AND m.tier_days IS NULL THEN 2
                ELSE 0 END AS state
    FROM matched m
    OFFSET 0
)
SELECT count(*) FILTER (WHERE in_window), count(*) FILTER (WHERE state = 1), count(*) FILTER (WHERE state = 2),
       count(*) FILTER (WHERE state = 0), min(key) FILTER (WHERE state = 0), max(key) FILTER (WHERE state = 0)
FROM flagged
"""
)

_RECOMPUTE_SQL = (
    "WITH "  # noqa: S608 - the tables are named by the models (format below), every value is a parameter
    + _MATCH_CTES
    + """,
priced AS MATERIALIZED (
    SELECT m.*,
           CASE WHEN m.id IS NOT NULL AND m.tier_days IS NOT NULL THEN
               LEAST(
                   GREATEST(
                       round(m.base_price * (100 - LEAST(m.tier_percentage, m.max_percentage)) * 0.01,
                             COALESCE((%(places)s::int[])[array_position(%(codes)s::text[], m.currency::text)], 2)),
                       ceil(m.cost * (100 + m.min_margin_percentage) * 0.01
                            * COALESCE((%(units)s::numeric[])[array_position(%(codes)s::text[], m.currency::text)], 100))
                       / COALESCE((%(units)s::numeric[])[array_position(%(codes)s::text[], m.currency::text)], 100),
                       ceil(m.base_price * (100 - m.max_percentage) * 0.01
                            * COALESCE((%(units)s::numeric[])[array_position(%(codes)s::text[], m.currency::text)], 100))
                       / COALESCE((%(units)s::numeric[])[array_position(%(codes)s::text[], m.currency::text)], 100)
                   ),
                   m.base_price
               )
           END AS price
    FROM matched m
    WHERE NOT m.unchanged
),
decided AS (
    SELECT p.*,
           CASE WHEN p.price < p.base_price THEN round((p.base_price - p.price) * 100 / p.base_price, 2) END
               AS percentage,
           CASE
               WHEN p.id IS NULL THEN 'end'
               WHEN p.price IS NULL OR p.price >= p.base_price THEN
                   CASE WHEN p.discount_id IS NULL THEN 'none' ELSE 'end' END
               WHEN p.discount_id IS NULL THEN 'create'
               ELSE 'change'
           END AS action
    FROM priced p
),
changed AS (
    UPDATE {discount} d
    SET policy_id = p.policy_id, tier_days = p.tier_days, tier_percentage = p.tier_percentage,
        max_percentage = p.max_percentage, min_margin_percentage = p.min_margin_percentage,
        base_price = p.base_price, cost = p.cost, currency = p.currency, percentage = p.percentage,
        discounted_price = p.price, valid_from = %(now)s, valid_until = p.valid_until, updated_at = %(now)s
    FROM decided p
    WHERE p.action = 'change' AND d.id = p.discount_id AND d.status = 'active'
    RETURNING d.id
),
ended AS (
    UPDATE {discount} d
    SET status = 'expired', ended_at = %(now)s, updated_at = %(now)s
    FROM decided p
    WHERE p.action = 'end' AND d.id = p.discount_id AND d.status = 'active'
    RETURNING d.id
),
created AS (
    INSERT INTO {discount} (batch_id, policy_id, tier_days, tier_percentage, max_percentage, min_margin_percentage,
                            base_price, cost, currency, percentage, discounted_price, valid_from, valid_until,
                            status, created_at, updated_at)
    SELECT p.id, p.policy_id, p.tier_days, p.tier_percentage, p.max_percentage, p.min_margin_percentage,
           p.base_price, p.cost, p.currency, p.percentage, p.price, %(now)s, p.valid_until,
           'active', %(now)s, %(now)s
    FROM decided p
    WHERE p.action = 'create'
    ORDER BY p.id
    ON CONFLICT (batch_id) WHERE status = 'active' DO NOTHING
    RETURNING id
)
SELECT (SELECT count(*) FROM decided
        WHERE id IS NOT NULL AND action IN ('none', 'end') AND NOT (tier_days IS NULL AND discount_id IS NULL)),
       (SELECT count(*) FROM created), (SELECT count(*) FROM changed), (SELECT count(*) FROM ended)
"""
)
_TABLES = {"batch": Batch._meta.db_table, "policy": DiscountPolicy._meta.db_table, "discount": Discount._meta.db_table}
# Table names come from the models; every value is a parameter.
_PLAN_SQL = _PLAN_SQL.format(**_TABLES)
_RECOMPUTE_SQL = _RECOMPUTE_SQL.format(**_TABLES)


def _sql_params(*, today: date, horizon: date, now: datetime, default: PolicyTerms) -> dict[str, Any]:
    # The default policy's tier for each number of days to expiry, 0 to the threshold.
    tiers = [tier_for(default.tiers, days) for days in range((horizon - today).days + 1)]
    return {
        "today": today,
        "horizon": horizon,
        "tz": timezone.get_current_timezone_name(),
        "default_id": default.policy_id,
        "default_max": default.max_percentage,
        "default_margin": default.min_margin_percentage,
        "tier_days": [tier.days if tier else None for tier in tiers],
        "tier_percentages": [tier.percentage if tier else None for tier in tiers],
        "codes": list(CURRENCY_MINOR_UNITS),
        "places": list(CURRENCY_MINOR_UNITS.values()),
        "units": [10**places for places in CURRENCY_MINOR_UNITS.values()],
        "now": now,
    }


_WHOLE_RANGE = {"after": 0, "last": 2**63 - 1}


@dataclass(frozen=True)
class _Plan:
    considered: int
    unchanged: int
    no_tier: int
    dirty: int
    first_dirty: int
    last_dirty: int


def _recompute_plan(*, params: dict[str, Any]) -> _Plan:
    """Totals of the window, and the rows where something may need a write (how many, and their id span).

    Read-only: one snapshot, no lock. The hash join of the whole window with every active
    discount gets memory enough not to spill (about 100 bytes a row: 64 MB covers 600,000),
    and no JIT: its cost estimate is past jit_above_cost, and compiling took 1.0 s of a
    1.5 s statement at 300,000 batches (measured).
    """
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL work_mem = '64MB'")
        cursor.execute("SET LOCAL jit = off")
        cursor.execute(_PLAN_SQL, {**params, **_WHOLE_RANGE})
        considered, unchanged, no_tier, dirty, first, last = cursor.fetchone()
    return _Plan(
        considered=considered,
        unchanged=unchanged,
        no_tier=no_tier,
        dirty=dirty,
        first_dirty=first or 0,
        last_dirty=last or 0,
    )


def _recompute_chunk_sql(*, params: dict[str, Any]) -> dict[str, int]:
    """The window's batches with `after < id <= last` (and that range's discounts) in one statement."""
    with transaction.atomic(), connection.cursor() as cursor:
        _take_chunk_turn()
        cursor.execute(_RECOMPUTE_SQL, params)
        without, created, changed, removed = cursor.fetchone()
    return {
        "chunks": 1,
        "discounts_created": created,
        "discounts_changed": changed,
        "discounts_removed": removed,
        "batches_without_discount": without,
    }


def _add(summary: dict[str, Any], counts: dict[str, int]) -> None:
    for name, value in counts.items():
        summary[name] += value


# The inputs a discount records; equal inputs mean an equal price.
_INPUTS = (
    "policy_id",
    "tier_days",
    "tier_percentage",
    "max_percentage",
    "min_margin_percentage",
    "base_price",
    "cost",
    "currency",
    "valid_until",
)
_OUTPUTS = ("percentage", "discounted_price")


def _recompute_chunk_python(
    *, batches: QuerySet[Batch], discounts: QuerySet[Discount], now: datetime, default: PolicyTerms
) -> dict[str, int]:
    """The same chunk with `price_quote` in Python and bulk statements (SQLite, and the reference in tests)."""
    today = timezone.localdate(now)
    with transaction.atomic():
        _take_chunk_turn()
        rows = list(batches.values_list("id", "product_id", "expiry_date", "cost", "base_price", "currency"))
        own = {
            p.product_id: PolicyTerms.of(p)
            for p in DiscountPolicy.objects.filter(product_id__in={row[1] for row in rows})
        }
        current = {d.batch_id: d for d in discounts}
        create: list[Discount] = []
        change: list[Discount] = []
        unchanged = without = 0
        for batch_id, product_id, expiry_date, cost, base_price, currency in rows:
            terms = own.get(product_id, default)
            days = (expiry_date - today).days
            tier = tier_for(terms.tiers, days)
            existing = current.pop(batch_id, None)
            inputs = {
                "policy_id": terms.policy_id,
                "tier_days": tier.days if tier else None,
                "tier_percentage": tier.percentage if tier else None,
                "max_percentage": terms.max_percentage,
                "min_margin_percentage": terms.min_margin_percentage,
                "base_price": base_price,
                "cost": cost,
                "currency": currency,
                "valid_until": discount_valid_until(expiry_date),
            }
            if existing is not None and all(getattr(existing, name) == value for name, value in inputs.items()):
                unchanged += 1
                continue
            quote = terms.quote(base_price=base_price, cost=cost, currency=currency, days_to_expiry=days)
            if quote is None:
                without += 1
                if existing is not None:
                    current[batch_id] = existing  # ended below
                continue
            wanted = {**inputs, "percentage": quote.percentage, "discounted_price": quote.price}
            if existing is None:
                create.append(Discount(batch_id=batch_id, valid_from=now, created_at=now, updated_at=now, **wanted))
            else:
                for name, value in {**wanted, "valid_from": now, "updated_at": now}.items():
                    setattr(existing, name, value)
                change.append(existing)
        Discount.objects.bulk_create(create, ignore_conflicts=True)
        Discount.objects.bulk_update(change, [*_INPUTS, *_OUTPUTS, "valid_from", "updated_at"])
        # What is left: discounts of batches that get none now, or that are not in the window.
        removed = Discount.objects.filter(
            pk__in=[d.pk for d in current.values()], status=Discount.Status.ACTIVE
        ).update(status=Discount.Status.EXPIRED, ended_at=now, updated_at=now)
    return _counts(
        considered=len(rows),
        unchanged=unchanged,
        created=len(create),
        changed=len(change),
        removed=removed,
        without=without,
    )


# Ending discounts --------------------------------------------------------------------------------


def _discounts_end(candidates: QuerySet[Discount], *, now: datetime, chunk_size: int = EXPIRE_CHUNK_SIZE) -> int:
    """Mark the active discounts among `candidates` expired, a chunk per transaction; returns how many.

    Each chunk locks its rows with SKIP LOCKED (rows another worker holds are its own to
    end) and updates them on condition they are still active, so two sweeps at once end
    each discount once between them.
    """
    ended = 0
    active = candidates.filter(status=Discount.Status.ACTIVE)
    progress = ChunkedProgress(chunk_size=chunk_size, rest=active.count)
    while True:
        with transaction.atomic():
            ids = list(
                active.select_for_update(skip_locked=True, of=("self",)).values_list("pk", flat=True)[:chunk_size]
            )
            if ids:
                ended += Discount.objects.filter(pk__in=ids, status=Discount.Status.ACTIVE).update(
                    status=Discount.Status.EXPIRED, ended_at=now, updated_at=now
                )
        progress.advance(len(ids))
        if not ids:
            return ended


def discounts_expire_stale(*, chunk_size: int = EXPIRE_CHUNK_SIZE) -> dict[str, int]:
    """The daily cleanup: end active discounts past their validity, or whose batch is gone (deleted or sold out).

    Idempotent: a second run finds nothing left to end.
    """
    now = timezone.now()
    past = _discounts_end(
        Discount.objects.filter(status=Discount.Status.ACTIVE, valid_until__lte=now), now=now, chunk_size=chunk_size
    )
    gone = _discounts_end(
        Discount.objects.filter(status=Discount.Status.ACTIVE).filter(Q(batch__isnull=True) | Q(batch__quantity=0)),
        now=now,
        chunk_size=chunk_size,
    )
    return {"expired_past_validity": past, "expired_batch_gone": gone, "still_active": _active_count()}


def _active_count() -> int:
    return Discount.objects.filter(status=Discount.Status.ACTIVE).count()


# Price history ------------------------------------------------------------------------------------

_SNAPSHOT_SQL = """
INSERT INTO {snapshot} (batch_id, product_id, slot, price, base_price, percentage, currency, created_at)
SELECT b.id, b.product_id, %(slot)s, COALESCE(d.discounted_price, b.base_price), b.base_price,
       COALESCE(d.percentage, 0), b.currency, %(now)s
FROM {batch} b
LEFT JOIN {discount} d ON d.batch_id = b.id AND d.status = 'active' AND d.valid_until > %(now)s
WHERE b.quantity > 0 AND b.expiry_date >= %(today)s AND b.id > %(after)s AND b.id <= %(last)s
ON CONFLICT (batch_id, slot) DO NOTHING
""".format(snapshot=PriceSnapshot._meta.db_table, **_TABLES)


def price_history_snapshot(*, at: datetime | None = None, chunk_size: int = SNAPSHOT_CHUNK_SIZE) -> dict[str, Any]:
    """Record the effective price of every active batch (stock left, not past expiry) for the current 6-hour slot.

    One `INSERT ... SELECT ... ON CONFLICT DO NOTHING` per chunk of batches (PostgreSQL and
    SQLite alike): a second run in the same slot, or two at once, adds nothing.
    """
    now = at or timezone.now()
    slot = price_slot_start(now)
    today = timezone.localdate(now)
    active = Batch.objects.filter(quantity__gt=0, expiry_date__gte=today)
    ops = connection.ops
    summary: dict[str, Any] = {"slot": slot.isoformat(), "batches": 0, "snapshots_created": 0, "chunks": 0}
    after = 0
    progress = Progress(total=active.count())
    while (last := _chunk_last_id(active, after=after, size=chunk_size)) is not None:
        params = {
            "slot": ops.adapt_datetimefield_value(slot),
            "now": ops.adapt_datetimefield_value(now),
            "today": ops.adapt_datefield_value(today),
            "after": after,
            "last": last,
        }
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(_SNAPSHOT_SQL, params)
            summary["snapshots_created"] += max(cursor.rowcount, 0)
        summary["chunks"] += 1
        after = last
        progress.advance(min(chunk_size, progress.total - progress.done))
    summary["batches"] = active.count()
    return summary


# Reads: the effective price, the history ------------------------------------------------------------


@dataclass(frozen=True)
class EffectivePrice:
    """What one unit of a product costs now, and where that number comes from.

    `source`: "discount" (the first-shipping batch's active discount), "batch" (that
    batch's base price) or "product" (no batch with stock: the product's own price).
    """

    product_id: int
    price: Decimal
    currency: str
    base_price: Decimal
    percentage: Decimal
    source: str
    batch_id: int | None = None
    lot_code: str | None = None
    expiry_date: date | None = None
    discount_id: int | None = None
    valid_until: datetime | None = None


def products_price_effective(*, product_ids: Iterable[int], at: datetime | None = None) -> dict[int, EffectivePrice]:
    """The effective price of each product that exists among `product_ids`, in three queries.

    The batch that ships first is the one with the earliest expiry (then the lowest id)
    among those with stock, not past expiry, and in the product's currency.
    """
    now = at or timezone.now()
    today = timezone.localdate(now)
    first_batch = (
        Batch.objects.filter(
            product_id=OuterRef("pk"), quantity__gt=0, expiry_date__gte=today, currency=OuterRef("currency")
        )
        .order_by("expiry_date", "id")
        .values("pk")[:1]
    )
    products = list(
        Product.objects.filter(pk__in=list(product_ids))
        .annotate(first_batch_id=Subquery(first_batch))
        .values_list("pk", "price", "currency", "first_batch_id")
    )
    batch_ids = [row[3] for row in products if row[3] is not None]
    batches = {b.pk: b for b in Batch.objects.filter(pk__in=batch_ids)}
    discounts = {
        d.batch_id: d
        for d in Discount.objects.filter(batch_id__in=batch_ids, status=Discount.Status.ACTIVE, valid_until__gt=now)
    }
    prices: dict[int, EffectivePrice] = {}
    for product_id, product_price, currency, batch_id in products:
        batch = batches.get(batch_id) if batch_id is not None else None
        if batch is None:
            prices[product_id] = EffectivePrice(
                product_id=product_id,
                price=product_price,
                currency=currency,
                base_price=product_price,
                percentage=Decimal("0.00"),
                source="product",
            )
            continue
        discount = discounts.get(batch.pk)
        prices[product_id] = EffectivePrice(
            product_id=product_id,
            price=discount.discounted_price if discount else batch.base_price,
            currency=batch.currency,
            base_price=batch.base_price,
            percentage=discount.percentage if discount else Decimal("0.00"),
            source="discount" if discount else "batch",
            batch_id=batch.pk,
            lot_code=batch.lot_code,
            expiry_date=batch.expiry_date,
            discount_id=discount.pk if discount else None,
            valid_until=discount.valid_until if discount else None,
        )
    return prices


def product_price_effective(*, product_id: int, at: datetime | None = None) -> EffectivePrice:
    """The effective price of one product; NotFound when there is no such product."""
    price = products_price_effective(product_ids=[product_id], at=at).get(product_id)
    if price is None:
        raise NotFound(f"No product with id {product_id}.")
    return price


def product_price_history(*, product_id: int, start: datetime, end: datetime) -> list[PriceSnapshot]:
    """The snapshots of a product's batches with `start <= slot <= end`, oldest first; NotFound for no product."""
    if not Product.objects.filter(pk=product_id).exists():
        raise NotFound(f"No product with id {product_id}.")
    if start > end:
        raise Invalid({"from": ["Must not be after `to`."]})
    if end - start > timedelta(days=HISTORY_MAX_DAYS):
        raise Invalid({"to": [f"Ask for at most {HISTORY_MAX_DAYS} days at a time."]})
    return list(
        PriceSnapshot.objects.filter(product_id=product_id, slot__gte=start, slot__lte=end)
        .select_related("batch")
        .order_by("slot", "batch_id")
    )
