"""Offer expiry: the one-shot check at each deadline, the 60 s sweep behind it, and the EIC notices.

An expired offer's "Driver Assignment Expired" push is durable: the offer is committed
EXPIRED with `eic_notified_at` NULL; the notice task writes the outbox rows and sets
`eic_notified_at` in one transaction; and every sweep re-sends the notice of any offer
still unnotified a minute after it expired (its message was lost, or its worker died).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence
from datetime import timedelta
from typing import Any

from django.db import transaction
from django.db.models import DurationField, Exists, ExpressionWrapper, F, OuterRef, QuerySet
from django.db.models.functions import Now

from core.transactions import on_commit_robust
from logistics import selectors
from logistics.models import AssignmentOffer, StockRequest
from logistics.services.offers import BACK_TO_POOL, assignment_timeout_seconds, schedule_expiry

logger = logging.getLogger(__name__)

Status = StockRequest.Status
Outcome = AssignmentOffer.Outcome

# Requests expired per transaction by the sweep. At 1,000 a chunk takes about 0.1-0.2 s on
# PostgreSQL here (tests/benchmarks/driver_assignment.py), so row locks are held briefly
# and an accept waiting on one of them answers well within a second.
EXPIRY_CHUNK_SIZE = 1000

# At most this many chunks per run (100,000 offers, a few seconds of work): one run stays well
# inside its 30 s lease, and whatever is left waits for the next run a minute later.
MAX_CHUNKS_PER_RUN = 100

# Up to this many expiry notices are sent straight from the committing process (tens of ms);
# more go through one `logistics.send_assignment_expired_notices` message per chunk.
NOTICES_INLINE_MAX = 50

# A notice normally runs within a second of its offer's expiry. One still unwritten after this
# long was lost on the way (broker error, dead worker), and the sweep sends it again.
NOTICE_GRACE_SECONDS = 60

Notice = tuple[int, int, int]  # (offer_id, stock_request_id, driver_id)


# Sending the notices ------------------------------------------------------------------


def _enqueue_expiry_notices(notices: list[Notice]) -> None:
    from logistics.tasks import send_assignment_expired_notices as fan_out_task

    if len(notices) <= NOTICES_INLINE_MAX:
        assignment_expired_notices_send(offers=notices)
    else:
        # One message for the chunk: a big sweep's time stays in its own transactions, not in
        # thousands of broker round trips (about 1 ms each here), and workers share the fan-out.
        fan_out_task.delay([list(n) for n in notices])


def _enqueue_on_commit(notices: list[Notice]) -> None:
    # A failed send must not undo the expiry: the offers stay unnotified and the sweep re-sends.
    if notices:
        on_commit_robust(lambda: _enqueue_expiry_notices(notices), name="enqueue_expiry_notices")


def assignment_expired_notices_send(*, offers: Iterable[Sequence[int]]) -> dict[str, int]:
    """Send `logistics.notify_eic_assignment_expired` for each (offer, request, driver), on one broker connection.

    Safe to repeat: a notice whose offer is already notified does nothing.
    """
    from config.celery import app
    from logistics.tasks import notify_eic_assignment_expired as notify_task

    sent = 0
    with app.producer_or_acquire() as producer:
        for offer_id, request_id, driver_id in offers:
            notify_task.apply_async(args=(request_id, driver_id), kwargs={"offer_id": offer_id}, producer=producer)
            sent += 1
    return {"sent": sent}


def eic_notify_assignment_expired(
    *, stock_request_id: int, driver_id: int, offer_id: int | None = None
) -> dict[str, int]:
    """Write "Driver Assignment Expired" for every EIC user to the outbox, once per offer.

    The outbox rows and `eic_notified_at` commit together: a run that fails leaves the
    offer unnotified for the sweep to re-send; a repeated run finds it notified and stops.
    """
    from notifications.services import NotifyRequest, notify_many

    expired = AssignmentOffer.objects.filter(outcome=Outcome.EXPIRED)
    if offer_id is None:  # a message sent before notices carried the offer's id
        offer_id = (
            expired.filter(stock_request_id=stock_request_id, driver_id=driver_id)
            .order_by("-resolved_at", "-pk")
            .values_list("pk", flat=True)
            .first()
        )
    if offer_id is None:
        logger.warning(
            "notify_eic_assignment_expired: no expired offer of request %s to %s", stock_request_id, driver_id
        )
        return {"notified": 0, "missing": 1}
    with transaction.atomic():
        # The claim: a concurrent run of the same notice waits on this row, then updates nothing.
        claimed = expired.filter(pk=offer_id, eic_notified_at__isnull=True).update(eic_notified_at=Now())
        if not claimed:
            if expired.filter(pk=offer_id).exists():
                return {"notified": 0, "already_notified": 1}
            logger.warning(
                "notify_eic_assignment_expired: no expired offer %s (request %s)", offer_id, stock_request_id
            )
            return {"notified": 0, "missing": 1}
        offer = AssignmentOffer.objects.select_related("driver", "stock_request__station").get(pk=offer_id)
        context = {"driver_name": offer.driver.name, "station_name": offer.stock_request.station.name}
        users = list(selectors.eic_users())
        notify_many(
            NotifyRequest(
                template="driver_assignment_expired",
                user=user,
                context=context,
                channels=["push"],
                dedupe_key=f"offer-expired:{offer.pk}:{user.pk}",
            )
            for user in users
        )
    return {"notified": len(users)}


# The one-shot check ---------------------------------------------------------------------


def assignment_offer_expire(*, stock_request_id: int, offer_id: int) -> dict[str, int]:
    """The check sent for an offer's deadline. A no-op once the offer has ended any other way."""
    with transaction.atomic():
        locked = StockRequest.objects.select_for_update(of=("self",)).filter(pk=stock_request_id).exists()
        offer = (
            AssignmentOffer.objects.filter(pk=offer_id, stock_request_id=stock_request_id)
            .annotate(left=ExpressionWrapper(F("expires_at") - Now(), output_field=DurationField()))
            .values("outcome", "driver_id", "left")
            .first()
        )
        if not locked or offer is None:
            logger.info("expire_assignment: request %s / offer %s no longer exists", stock_request_id, offer_id)
            return {"expired_count": 0, "missing": 1}
        if offer["outcome"] != Outcome.OPEN:
            return {"expired_count": 0, "already_closed": 1}
        if offer["left"] > timedelta(0):
            # Early by the database's clock: the worker's clock, which timed the eta, is ahead of it.
            # Wait out what is left, measured on the database's clock.
            countdown = max(0.1, math.ceil(offer["left"].total_seconds() * 10) / 10)
            schedule_expiry(stock_request_id=stock_request_id, offer_id=offer_id, countdown=countdown)
            return {"expired_count": 0, "rescheduled": 1}
        expired = AssignmentOffer.objects.filter(pk=offer_id, outcome=Outcome.OPEN, expires_at__lte=Now()).update(
            outcome=Outcome.EXPIRED, resolved_at=Now()
        )
        if expired:
            StockRequest.objects.filter(pk=stock_request_id, status=Status.ASSIGNING).update(
                **BACK_TO_POOL, updated_at=Now()
            )
            _enqueue_on_commit([(offer_id, stock_request_id, offer["driver_id"])])
    return {"expired_count": expired}


# The sweep ---------------------------------------------------------------------------------


def _expire_locked_requests(rows: Sequence[tuple[Any, ...]], *, timeout: int) -> int:
    """Put locked ASSIGNING requests (pk, target_driver_id, assignment_started_at, assignment_mode)
    back in the pool, close their open offers as EXPIRED, and queue the EIC notices. Four queries."""
    request_ids = [row[0] for row in rows]
    notices: list[Notice] = list(
        AssignmentOffer.objects.filter(stock_request_id__in=request_ids, outcome=Outcome.OPEN).values_list(
            "pk", "stock_request_id", "driver_id"
        )
    )
    with_offer = {request_id for _, request_id, _ in notices}
    orphans = [
        AssignmentOffer(
            stock_request_id=pk,
            driver_id=driver_id,
            mode=mode or StockRequest.AssignmentMode.MANUAL,
            offered_at=started,
            expires_at=started + timedelta(seconds=timeout),
        )
        for pk, driver_id, started, mode in rows
        if pk not in with_offer
    ]
    if orphans:
        # ASSIGNING without an open offer (written outside these services): record the offer the
        # row stood for, so its history shows it and its EIC notice is as durable as any other.
        logger.warning("expiry sweep: %d ASSIGNING requests had no open offer", len(orphans))
        notices += [(o.pk, o.stock_request_id, o.driver_id) for o in AssignmentOffer.objects.bulk_create(orphans)]
    expired = AssignmentOffer.objects.filter(pk__in=[n[0] for n in notices], outcome=Outcome.OPEN).update(
        outcome=Outcome.EXPIRED, resolved_at=Now()
    )
    StockRequest.objects.filter(pk__in=request_ids, status=Status.ASSIGNING).update(**BACK_TO_POOL, updated_at=Now())
    _enqueue_on_commit(notices)
    return expired


def _sweep(candidates: QuerySet[StockRequest], *, timeout: int, chunk_size: int, max_chunks: int) -> tuple[int, int]:
    """Expire `candidates` chunk by chunk, paging by key; returns (expired, chunks used).

    Each chunk is one short transaction that locks its rows with SKIP LOCKED: a row an
    accept is holding is left to that accept, or to the next run.
    """
    expired = chunks = last = 0
    while chunks < max_chunks:
        chunks += 1
        with transaction.atomic():
            rows = list(
                candidates.select_for_update(skip_locked=True, of=("self",))
                .filter(pk__gt=last)
                .order_by("pk")
                .values_list("pk", "target_driver_id", "assignment_started_at", "assignment_mode")[:chunk_size]
            )
            if rows:
                expired += _expire_locked_requests(rows, timeout=timeout)
        if len(rows) < chunk_size:
            break
        last = rows[-1][0]
    return expired, chunks


def _requeue_lost_notices(*, chunk_size: int, max_chunks: int) -> int:
    requeued = last = 0
    for _ in range(max_chunks):
        notices = selectors.assignment_offers_unnotified(
            older_than_seconds=NOTICE_GRACE_SECONDS, after_pk=last, limit=chunk_size
        )
        if notices:
            _enqueue_expiry_notices(notices)
            requeued += len(notices)
        if len(notices) < chunk_size:
            break
        last = notices[-1][0]
    return requeued


def stock_requests_expire_assignments(
    *, timeout_seconds: int | None = None, chunk_size: int = EXPIRY_CHUNK_SIZE, max_chunks: int = MAX_CHUNKS_PER_RUN
) -> dict[str, int]:
    """The safety-net sweep behind the one-shot checks, then the re-send of lost EIC notices.

    Without `timeout_seconds`, each open offer expires at its own `expires_at`: the deadline
    the driver was shown, whatever the setting says now. With it, every ASSIGNING request
    offered `timeout_seconds` ago or more expires (an operator's explicit choice).
    """
    assigning = StockRequest.objects.filter(status=Status.ASSIGNING)
    if timeout_seconds is None:
        timeout = assignment_timeout_seconds()
        due = assigning.filter(offers__outcome=Outcome.OPEN, offers__expires_at__lte=Now())
        expired, used = _sweep(due, timeout=timeout, chunk_size=chunk_size, max_chunks=max_chunks)
        # ASSIGNING with no open offer can never be accepted: reset once the setting's timeout has passed.
        orphans = assigning.filter(
            ~Exists(AssignmentOffer.objects.filter(stock_request=OuterRef("pk"), outcome=Outcome.OPEN)),
            assignment_started_at__lte=Now() - timedelta(seconds=timeout),
        )
        if used < max_chunks:
            more, used_more = _sweep(orphans, timeout=timeout, chunk_size=chunk_size, max_chunks=max_chunks - used)
            expired, used = expired + more, used + used_more
    else:
        timeout = int(timeout_seconds)
        started_before = assigning.filter(assignment_started_at__lte=Now() - timedelta(seconds=timeout))
        expired, used = _sweep(started_before, timeout=timeout, chunk_size=chunk_size, max_chunks=max_chunks)
    if used >= max_chunks:
        logger.warning("driver assignment sweep: stopped after %d chunks; the next run goes on", used)
    requeued = _requeue_lost_notices(chunk_size=chunk_size, max_chunks=max_chunks)
    if expired or requeued:
        logger.info("driver assignment sweep: %d offers expired, %d lost EIC notices re-sent", expired, requeued)
    return {"expired_count": expired, "notices_requeued": requeued}


# After a worker restart -------------------------------------------------------------------


def assignment_expiries_resend(
    *, chunk_size: int = EXPIRY_CHUNK_SIZE, max_chunks: int = MAX_CHUNKS_PER_RUN
) -> dict[str, int]:
    """Send `expire_assignment` again for every open offer whose deadline is still ahead.

    A worker that dies holding eta messages gives them back only after the broker's
    visibility timeout (2 h); a fresh copy keeps their deadlines to the second. Duplicates
    are harmless: the second check finds the offer closed.
    """
    from config.celery import app
    from logistics.tasks import expire_assignment as expire_assignment_task

    sent = last = 0
    for _ in range(max_chunks):
        rows = list(
            AssignmentOffer.objects.filter(outcome=Outcome.OPEN, expires_at__gt=Now(), pk__gt=last)
            .order_by("pk")
            .values_list("pk", "stock_request_id", "expires_at")[:chunk_size]
        )
        with app.producer_or_acquire() as producer:
            for offer_id, request_id, deadline in rows:
                expire_assignment_task.apply_async(args=(request_id, offer_id), eta=deadline, producer=producer)
        sent += len(rows)
        if len(rows) < chunk_size:
            break
        last = rows[-1][0]
    return {"resent": sent}
