"""The escrow daily summary at scale, against a naive per-user loop.

    DATABASE_URL=postgres://... python -m tests.benchmarks escrow
    ESCROW_BENCH_USERS=20000 ESCROW_BENCH_TRANSACTIONS=50000 python -m tests.benchmarks escrow   # a quick run

Seeds `<db>_bench` in SQL with ESCROW_BENCH_USERS users (200,000) and
ESCROW_BENCH_TRANSACTIONS active escrow transactions (500,000: created, funded, in
progress, disputed; two milestones each; every user is a buyer of at least one, and a
seller), then:

1. runs `escrow_daily_summaries_send()` as the job does: one summary notification row
   per user, written with its delivery intent in each chunk's transaction and published
   after each commit (the messages are dropped from the test broker afterwards);
2. runs it again the same day: nothing is written;
3. runs the naive loop (per user: read their transactions and milestones, `notify()`
   one row in autocommit) over ESCROW_BENCH_NAIVE_USERS users (2,000);
4. runs the summary once more under tracemalloc, at ESCROW_BENCH_TRACED_USERS users
   (20,000; tracemalloc slows it several times, so it is not the timed run), for the
   peak Python memory.

Prints rows per second, queries per chunk, peak memory and the speed-up.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import django
import redis
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from tests.benchmarks._support import Measurement, QueryCounter, bench_database, measure, peak_rss_mb

USERS = int(os.environ.get("ESCROW_BENCH_USERS", "200000"))
TRANSACTIONS = int(os.environ.get("ESCROW_BENCH_TRANSACTIONS", "500000"))
NAIVE_USERS = int(os.environ.get("ESCROW_BENCH_NAIVE_USERS", "2000"))
TRACED_USERS = int(os.environ.get("ESCROW_BENCH_TRACED_USERS", "20000"))
TARGET_SPEED_UP = 50


def seed(*, users: int, transactions: int) -> None:
    """Users 1..`users`, `transactions` active transactions between them, two milestones each: all in SQL."""
    now = timezone.now()
    with transaction.atomic(), connection.cursor() as cur:
        # The benchmark's own database: start from empty users (and everything that refers to them).
        cur.execute("TRUNCATE core_user, core_outboxintent, notifications_notification RESTART IDENTITY CASCADE")
        cur.execute(
            """
            INSERT INTO core_user (password, is_superuser, username, first_name, last_name, email, is_staff,
                                   is_active, date_joined, phone_number)
            SELECT '', false, 'bench-' || g, 'Bench', 'User ' || g, 'bench-' || g || '@example.com', false,
                   true, %s, ''
            FROM generate_series(1, %s) AS g
            """,
            [now, users],
        )
        # Transaction g: buyer (g-1) mod users + 1 (so every user buys), seller a different user;
        # status by g mod 10: 3 created, 3 funded, 3 in progress, 1 disputed.
        cur.execute(
            """
            INSERT INTO payments_escrowtransaction (buyer_id, seller_id, title, description, amount, currency, status,
                                                    created_at, funded_at, dispute_reason, updated_at)
            SELECT b, (b - 1 + 1 + (g::bigint * 7919) %% (%s - 1)) %% %s + 1, 'Bench job ' || g, '',
                   (100 + g %% 900)::numeric(14, 2), 'EUR', s,
                   %s::timestamptz - (g %% 30) * interval '1 day',
                   CASE WHEN s = 'created' THEN NULL ELSE %s::timestamptz - (g %% 20) * interval '1 day' END,
                   '', %s
            FROM (
                SELECT g, (g - 1) %% %s + 1 AS b,
                       CASE WHEN g %% 10 < 3 THEN 'created' WHEN g %% 10 < 6 THEN 'funded'
                            WHEN g %% 10 < 9 THEN 'in_progress' ELSE 'disputed' END AS s
                FROM generate_series(1, %s) AS g
            ) AS t
            """,
            [users, users, now, now, now, users, transactions],
        )
        # Two milestones each, 40 % and 60 %; in progress: the first submitted; disputed: the first approved.
        cur.execute(
            """
            INSERT INTO payments_milestone (transaction_id, title, amount, position, status, submission_count,
                                            rejection_reason, created_at, updated_at)
            SELECT t.id, 'Part ' || p, CASE WHEN p = 1 THEN round(t.amount * 0.4, 2)
                                            ELSE t.amount - round(t.amount * 0.4, 2) END, p,
                   CASE WHEN p = 1 AND t.status = 'in_progress' THEN 'submitted'
                        WHEN p = 1 AND t.status = 'disputed' THEN 'approved' ELSE 'pending' END,
                   CASE WHEN p = 1 AND t.status IN ('in_progress', 'disputed') THEN 1 ELSE 0 END,
                   '', t.created_at, t.created_at
            FROM payments_escrowtransaction AS t CROSS JOIN generate_series(1, 2) AS p
            """
        )
        cur.execute("ANALYZE core_user, payments_escrowtransaction, payments_milestone")


def naive_summaries(user_ids: list[int]) -> int:
    """What a first version typically does: per user, read and add up in Python, then notify() in autocommit."""
    from django.db.models import Q

    from core.models import User
    from notifications.services import notify
    from payments.models import EscrowTransaction, Milestone

    day = timezone.localdate().isoformat()
    written = 0
    for user in User.objects.filter(pk__in=user_ids).order_by("pk"):
        escrows = list(
            EscrowTransaction.objects.filter(Q(buyer=user) | Q(seller=user), status__in=EscrowTransaction.ACTIVE)
        )
        if not escrows:
            continue
        lines: dict[tuple[str, str, str], list[Any]] = {}
        for escrow in escrows:
            role = "buyer" if escrow.buyer_id == user.pk else "seller"
            line = lines.setdefault((role, escrow.status, escrow.currency), [0, 0])
            line[0] += 1
            line[1] += escrow.amount
        working = Milestone.objects.filter(transaction__status__in=EscrowTransaction.WORKING)
        context = {
            "recipient_name": user.get_full_name() or user.get_username(),
            "date": day,
            "lines": [
                {"role": r, "status": s, "count": n, "amount": str(total), "currency": c}
                for (r, s, c), (n, total) in sorted(lines.items())
            ],
            "to_approve": working.filter(transaction__buyer=user, status="submitted").count(),
            "to_release": working.filter(transaction__buyer=user, status="approved").count(),
            "to_deliver": working.filter(transaction__seller=user, status__in=["pending", "rejected"]).count(),
        }
        rows = notify(
            template="escrow_daily_summary",
            user=user,
            context=context,
            channels=["email"],
            dedupe_key=f"naive-summary:{user.pk}:{day}",
        )
        written += len(rows)
    return written


def timed(fn: Callable[[], Any]) -> tuple[Measurement, int]:
    """Wall time and statements of one call, without tracemalloc (which slows it several times)."""
    counter = QueryCounter()
    start = time.perf_counter()
    with connection.execute_wrapper(counter):
        result = fn()
    return Measurement(time.perf_counter() - start, counter.count, 0.0, result), counter.count


def drop_sent_messages() -> None:
    # The runs really published notifications.deliver_batch messages for the rows: drop them, but only
    # from a test broker (db >= 2), never from a developer's.
    url = settings.CELERY_BROKER_URL
    if url.startswith("redis") and int(url.rsplit("/", 1)[-1] or 0) >= 2:
        redis.Redis.from_url(url).delete("notifications")


def check_summaries(expected: int) -> None:
    from notifications.models import Notification
    from tests.support.outbox import delivery_ids

    rows = Notification.objects.filter(template_key="escrow_daily_summary", dedupe_group__startswith="escrow-summary:")
    assert rows.count() == expected, f"{rows.count()} summary rows for {expected} users"
    assert rows.values("user_id").distinct().count() == expected, "a user got two summaries"
    ids = delivery_ids()
    summary_ids = set(rows.values_list("pk", flat=True))
    assert len(ids) == len(set(ids)), f"{len(ids) - len(set(ids))} rows in two delivery batches"
    assert summary_ids <= set(ids), f"{len(summary_ids - set(ids))} summary rows in no delivery batch"
    waiting = len(delivery_ids(published=False))
    assert waiting == 0, f"{waiting} delivery ids left for the relay"


def main() -> None:
    from notifications.services import notification_templates_install_defaults
    from payments.services.escrow_sweeps import CHUNK_SIZE, escrow_daily_summaries_send

    with bench_database():
        notification_templates_install_defaults()
        started = time.perf_counter()
        seed(users=USERS, transactions=TRANSACTIONS)
        print(
            f"seeded {USERS:,} users and {TRANSACTIONS:,} active transactions in {time.perf_counter() - started:.1f} s"
        )
        drop_sent_messages()

        sweep, queries = timed(escrow_daily_summaries_send)
        summary = sweep.result
        drop_sent_messages()
        check_summaries(USERS)
        assert summary["users"] == USERS and summary["notifications_written"] == USERS, summary
        per_chunk = (queries - 1) / summary["chunks"]
        print(
            f"daily summary, {USERS:,} users / {TRANSACTIONS:,} transactions: {sweep.seconds:.2f} s, "
            f"{sweep.rate(USERS):,.0f} rows/s, {queries:,} SQL queries ({summary['chunks']} chunks of {CHUNK_SIZE:,}, "
            f"{per_chunk:.1f} per chunk), process peak RSS so far {peak_rss_mb():.0f} MB",
            flush=True,
        )
        again, again_queries = timed(escrow_daily_summaries_send)
        drop_sent_messages()
        assert again.result["notifications_written"] == 0, again.result
        check_summaries(USERS)
        print(f"the same day again: {again.seconds:.2f} s, {again_queries:,} queries, 0 rows written", flush=True)

        sample = list(range(1, USERS + 1, max(1, USERS // NAIVE_USERS)))[:NAIVE_USERS]
        naive, naive_queries = timed(lambda: naive_summaries(sample))
        drop_sent_messages()
        assert naive.result == len(sample), (naive.result, len(sample))
        print(
            f"naive per-user loop, {len(sample):,} users: {naive.seconds:.2f} s, {naive.rate(len(sample)):,.0f} rows/s, "
            f"{naive_queries:,} SQL queries ({naive_queries / len(sample):.1f} per user)",
            flush=True,
        )
        speed_up = sweep.rate(USERS) / naive.rate(len(sample))

        traced_users = min(TRACED_USERS, USERS)
        seed(users=traced_users, transactions=traced_users * TRANSACTIONS // USERS)
        traced = measure(escrow_daily_summaries_send)
        drop_sent_messages()
        check_summaries(traced_users)
        print(
            f"memory: peak Python memory {traced.peak_memory_mb:.1f} MB for {traced_users:,} users (tracemalloc); "
            f"process peak RSS {peak_rss_mb():.0f} MB over the whole benchmark",
            flush=True,
        )
        print(f"escrow_daily_summary speed-up: {speed_up:.0f} x (target {TARGET_SPEED_UP} x)", flush=True)
        if speed_up < TARGET_SPEED_UP:
            raise SystemExit(f"escrow_daily_summary is only {speed_up:.0f} x faster than the naive loop")


if __name__ == "__main__":
    django.setup()
    main()
