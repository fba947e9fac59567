"""The escrow guide's three scheduled jobs, set-based and chunked.

Each chunk is one short transaction: a constant number of queries selects and
aggregates the chunk, and `notify_many` writes its messages (rows and delivery intents)
in that same transaction. A crash loses no message (a committed chunk's rows and
intents are durable; the relay publishes what its hook missed), and a re-run sends none
twice: each message's dedupe key names its period (the day, or the ISO week), so the
unique key refuses a second row.

| job | service | once per |
| --- | --- | --- |
| escrow_daily_summary | escrow_daily_summaries_send | user and day |
| escrow_funding_reminders | escrow_funding_reminders_send | transaction and day |
| escrow_overdue_milestones | escrow_overdue_milestones_notify | milestone and ISO week |

"The day" and "the week" are those of TIME_ZONE at the time of the run.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Count, Max, Q, QuerySet, Sum
from django.utils import timezone

from core.errors import Invalid
from core.models import User
from core.progress import Progress
from notifications.models import Channel
from notifications.services import NotifyRequest, notify_many
from payments.models import EscrowTransaction, Milestone
from payments.services.escrow_notices import name_of

Status = EscrowTransaction.Status
MilestoneStatus = Milestone.Status

# 1,000 users, transactions or milestones per chunk: notify_many's own chunk, so a chunk is one
# INSERT of notification rows and one of their delivery intents, and its transaction (its locks,
# for the reminders) lasts under a second. Measured with tests/benchmarks/escrow.py over 20,000
# users: 500, 1,000 and 2,000 were within the run-to-run noise of each other (25-32 s each).
CHUNK_SIZE = 1000
MIN_DAYS, MAX_DAYS = 1, 365
# What waits on whom in the daily summary: the buyer approves and releases, the seller delivers.
BUYER_WAITING: dict[str, str] = {MilestoneStatus.SUBMITTED: "to_approve", MilestoneStatus.APPROVED: "to_release"}
SELLER_WAITING = (MilestoneStatus.PENDING, MilestoneStatus.REJECTED)


def _days(value: int | None, default: int) -> int:
    days = default if value is None else int(value)
    if not MIN_DAYS <= days <= MAX_DAYS:
        raise Invalid({"older_than_days": [f"Must be between {MIN_DAYS} and {MAX_DAYS}, got {days}."]})
    return days


def _rows_for_update(queryset: QuerySet[Any]) -> QuerySet[Any]:
    # A chunk another run (or an API call) holds is left to it, never waited for.
    return queryset.select_for_update(skip_locked=True, of=("self",))


# escrow_daily_summary -----------------------------------------------------------------------------


def escrow_parties_page(*, after: int, limit: int) -> list[int]:
    """The next `limit` ids of users who are buyer or seller of an active transaction, ascending.

    Two index scans (the partial indexes on buyer and on seller of active transactions),
    each stopping after `limit` distinct ids past `after`; their merge is the page.
    """
    active = EscrowTransaction.objects.filter(status__in=EscrowTransaction.ACTIVE)
    buyers = active.filter(buyer_id__gt=after).order_by("buyer_id").values_list("buyer_id", flat=True).distinct()
    sellers = active.filter(seller_id__gt=after).order_by("seller_id").values_list("seller_id", flat=True).distinct()
    return sorted({*buyers[:limit], *sellers[:limit]})[:limit]


def escrow_daily_summaries_send(*, chunk_size: int = CHUNK_SIZE) -> dict[str, Any]:
    """One summary email per user with active transactions, at most one per user and day.

    Per chunk of users (a key range): the page (two index scans), three aggregates (their
    transactions as buyer, as seller; the milestones waiting on them), the users, and
    notify_many's statements, all in the chunk's transaction.
    """
    now = timezone.now()
    day = timezone.localdate(now)
    summary: dict[str, Any] = {"date": day.isoformat(), "users": 0, "notifications_written": 0, "chunks": 0}
    after = 0
    # Progress in user ids: the pages are key ranges, and counting the parties would cost a scan.
    progress = Progress(total=User.objects.aggregate(last=Max("id"))["last"] or 0)
    while page := escrow_parties_page(after=after, limit=chunk_size):
        first, last = after, page[-1]
        after = last
        with transaction.atomic():
            requests = list(_summary_requests(page, first=first, last=last, day=day))
            summary["notifications_written"] += notify_many(requests)
        summary["users"] += len(page)
        summary["chunks"] += 1
        progress.advance(last - first)
    progress.advance(max(progress.total - progress.done, 0))
    return summary


def _summary_requests(user_ids: list[int], *, first: int, last: int, day: date) -> Iterator[NotifyRequest]:
    """The summaries of the users in the key range (first, last], who are exactly `user_ids`.

    Three aggregates whatever the chunk's size: the active transactions by buyer, and by
    seller (each on its partial index), and the milestones of the range's transactions in
    work, joined from those transactions to the milestones' foreign-key index. (Filtering
    milestones by status as well let PostgreSQL scan every submitted milestone of the
    table for each chunk instead, measured: a cost that grows with the table.)
    """
    active = EscrowTransaction.objects.filter(status__in=EscrowTransaction.ACTIVE)
    lines: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for role, column in (("buyer", "buyer_id"), ("seller", "seller_id")):
        grouped = (
            active.filter(**{f"{column}__gt": first, f"{column}__lte": last})
            .values_list(column, "status", "currency")
            .annotate(count=Count("id"), total=Sum("amount"))
            .order_by(column, "status", "currency")
        )
        for user_id, status, currency, count, total in grouped:
            lines[user_id].append(
                {"role": role, "status": status, "count": count, "amount": str(total), "currency": currency}
            )
    waiting: dict[int, dict[str, int]] = defaultdict(lambda: {"to_approve": 0, "to_release": 0, "to_deliver": 0})
    in_range = Q(transaction__buyer_id__gt=first, transaction__buyer_id__lte=last) | Q(
        transaction__seller_id__gt=first, transaction__seller_id__lte=last
    )
    milestones = (
        Milestone.objects.filter(in_range, transaction__status__in=EscrowTransaction.WORKING)
        .values_list("transaction__buyer_id", "transaction__seller_id", "status")
        .annotate(count=Count("id"))
        .order_by()
    )
    for buyer_id, seller_id, status, count in milestones:
        if status in BUYER_WAITING and first < buyer_id <= last:
            waiting[buyer_id][BUYER_WAITING[status]] += count
        elif status in SELLER_WAITING and first < seller_id <= last:
            waiting[seller_id]["to_deliver"] += count
    users = User.objects.filter(pk__in=user_ids).only("pk", "username", "first_name", "last_name", "email")
    for user in users.order_by("pk"):
        yield NotifyRequest(
            template="escrow_daily_summary",
            user=user,
            context={
                "recipient_name": name_of(user),
                "date": day.isoformat(),
                "lines": lines.get(user.pk, []),
                **waiting[user.pk],
            },
            channels=[Channel.EMAIL],
            dedupe_key=f"escrow-summary:{user.pk}:{day.isoformat()}",
        )


# escrow_funding_reminders ----------------------------------------------------------------------------


def escrow_funding_reminders_send(
    *, older_than_days: int | None = None, chunk_size: int = CHUNK_SIZE
) -> dict[str, Any]:
    """Remind the buyer of each transaction created more than `older_than_days` ago and still unfunded.

    At most one reminder per transaction and day. Pages by (created_at, id) over the
    partial index `escrow_unfunded_by_age`; each chunk locks its transactions with SKIP
    LOCKED (a concurrent run or a funding in flight keeps them) and writes the reminders.
    """
    days = _days(older_than_days, settings.ESCROW_FUNDING_REMINDER_DAYS)
    now = timezone.now()
    day = timezone.localdate(now)
    cutoff = now - timedelta(days=days)
    summary: dict[str, Any] = {
        "older_than_days": days,
        "cutoff": cutoff.isoformat(),
        "date": day.isoformat(),
        "transactions": 0,
        "notifications_written": 0,
        "skipped": 0,
        "chunks": 0,
    }
    after: tuple[datetime, int] | None = None
    unfunded = EscrowTransaction.objects.filter(status=Status.CREATED, created_at__lt=cutoff)
    progress = Progress(total=unfunded.count())
    while True:
        page_query = unfunded
        if after is not None:
            page_query = page_query.filter(created_at__gte=after[0]).filter(
                Q(created_at__gt=after[0]) | Q(created_at=after[0], id__gt=after[1])
            )
        page = list(page_query.order_by("created_at", "id").values_list("created_at", "id")[:chunk_size])
        if not page:
            break
        after = page[-1]
        with transaction.atomic():
            chunk = list(
                _rows_for_update(unfunded.filter(pk__in=[pk for _, pk in page]))
                .select_related("buyer", "seller")
                .order_by("pk")
            )
            summary["notifications_written"] += notify_many(
                NotifyRequest(
                    template="escrow_funding_reminder",
                    user=escrow.buyer,
                    context={
                        "transaction_id": escrow.pk,
                        "title": escrow.title,
                        "amount": str(escrow.amount),
                        "currency": escrow.currency,
                        "seller_name": name_of(escrow.seller),
                        "recipient_name": name_of(escrow.buyer),
                        "created_on": timezone.localdate(escrow.created_at).isoformat(),
                        "days_waiting": (now - escrow.created_at).days,
                    },
                    channels=[Channel.EMAIL],
                    dedupe_key=f"escrow-funding-reminder:{escrow.pk}:{day.isoformat()}",
                )
                for escrow in chunk
            )
        summary["transactions"] += len(chunk)
        summary["skipped"] += len(page) - len(chunk)
        summary["chunks"] += 1
        progress.advance(len(page))
    return summary


# escrow_overdue_milestones ---------------------------------------------------------------------------


def escrow_overdue_milestones_notify(
    *, older_than_days: int | None = None, chunk_size: int = CHUNK_SIZE
) -> dict[str, Any]:
    """Tell the seller of each milestone still pending `older_than_days` after its transaction was funded.

    A milestone is pending from the funding on (the seller cannot start before). At most
    one notice per milestone and ISO week. Pages by milestone id over the partial index
    `milestone_pending`; each chunk locks its milestones with SKIP LOCKED.
    """
    days = _days(older_than_days, settings.ESCROW_OVERDUE_MILESTONE_DAYS)
    now = timezone.now()
    iso_year, iso_week, _ = timezone.localdate(now).isocalendar()
    week = f"{iso_year}-W{iso_week:02d}"
    cutoff = now - timedelta(days=days)
    summary: dict[str, Any] = {
        "older_than_days": days,
        "cutoff": cutoff.isoformat(),
        "week": week,
        "milestones": 0,
        "notifications_written": 0,
        "skipped": 0,
        "chunks": 0,
    }
    overdue = Milestone.objects.filter(
        status=MilestoneStatus.PENDING,
        transaction__status__in=EscrowTransaction.WORKING,
        transaction__funded_at__lt=cutoff,
    )
    after = 0
    progress = Progress(total=overdue.count())
    while page := list(overdue.filter(pk__gt=after).order_by("pk").values_list("pk", flat=True)[:chunk_size]):
        after = page[-1]
        with transaction.atomic():
            chunk = list(
                _rows_for_update(overdue.filter(pk__in=page))
                .select_related("transaction", "transaction__buyer", "transaction__seller")
                .order_by("pk")
            )
            summary["notifications_written"] += notify_many(
                NotifyRequest(
                    template="escrow_milestone_overdue",
                    user=milestone.transaction.seller,
                    context=_overdue_context(milestone, now),
                    channels=[Channel.EMAIL],
                    dedupe_key=f"escrow-milestone-overdue:{milestone.pk}:{week}",
                )
                for milestone in chunk
            )
        summary["milestones"] += len(chunk)
        summary["skipped"] += len(page) - len(chunk)
        summary["chunks"] += 1
        progress.advance(len(page))
    return summary


def _overdue_context(milestone: Milestone, now: datetime) -> dict[str, Any]:
    escrow = milestone.transaction
    since = escrow.funded_at or milestone.created_at
    return {
        "transaction_id": escrow.pk,
        "title": escrow.title,
        "currency": escrow.currency,
        "buyer_name": name_of(escrow.buyer),
        "recipient_name": name_of(escrow.seller),
        "milestone_id": milestone.pk,
        "milestone_title": milestone.title,
        "milestone_position": milestone.position,
        "milestone_amount": str(milestone.amount),
        "days_pending": (now - since).days,
        "due_date": milestone.due_date.isoformat() if milestone.due_date else "",
    }
