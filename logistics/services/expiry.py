"""Offer expiry: the one-shot check at each deadline, the 60 s sweep behind it, and the EIC notices.

Each expiry records its EIC notice as an intent in the core outbox, in the transaction that
expires the offer (one `notify_eic_assignment_expired` per one-shot expiry, one
`notify_eic_assignments_expired` per sweep chunk), so the "Driver Assignment Expired" push
is as durable as the expiry itself; the notice is idempotent (one notification per offer
and EIC user), so a relay that publishes it twice sends nothing twice.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from django.db import transaction
from django.db.models import DurationField, Exists, ExpressionWrapper, F, OuterRef, QuerySet
from django.db.models.functions import Now
from django.utils import timezone

from core.progress import ChunkedProgress
from core.services.outbox import outbox_add
from logistics import selectors
from logistics.models import AssignmentOffer, StockRequest
from logistics.services.offers import BACK_TO_POOL, assignment_timeout_seconds, expiry_check_add

logger = logging.getLogger(__name__)

Status = StockRequest.Status
Outcome = AssignmentOffer.Outcome

# Requests expired per transaction by the sweep. At 1,000 a chunk takes about 0.2 s on
# PostgreSQL here (tests/benchmarks/driver_assignment.py), so row locks are held briefly
# and an accept waiting on one of them answers well within a second.
EXPIRY_CHUNK_SIZE = 1000

# At most this many chunks per run (50,000 offers, about 10 s of work): one run ends well
# before the next is due a minute later, and whatever is left waits for it.
MAX_CHUNKS_PER_RUN = 50

Notice = tuple[int, int, int]  # (offer_id, stock_request_id, driver_id)


# The notices ----------------------------------------------------------------------------


def _notice_add(notice: Notice) -> None:
    """The one-shot path: one `notify_eic_assignment_expired` intent for the offer, in the expiring transaction."""
    offer_id, request_id, driver_id = notice
    outbox_add(
        task="logistics.notify_eic_assignment_expired",
        kwargs={"stock_request_id": request_id, "driver_id": driver_id, "offer_id": offer_id},
        dedupe_key=f"offer-expired-notice:{offer_id}",
    )


def _chunk_notices_add(notices: Sequence[Notice]) -> None:
    """The sweep: one `notify_eic_assignments_expired` intent for the whole chunk, as payments does.

    One message for up to 1,000 offers instead of 1,000: publishing each costs the sweep
    about a third of a millisecond of Celery's message building, which 1,000 times over
    took longer than the chunk's database work (tests/benchmarks/driver_assignment.py).
    """
    if notices:
        outbox_add(
            task="logistics.notify_eic_assignments_expired",
            kwargs={"offer_ids": [offer_id for offer_id, _, _ in notices]},
            dedupe_key=f"offers-expired-notice:{uuid.uuid4()}",
        )


def eic_notify_assignment_expired(*, stock_request_id: int, driver_id: int, offer_id: int) -> dict[str, int]:
    """Write "Driver Assignment Expired" for every EIC user to the notifications outbox, once per offer.

    The seed's task: the offer must be expired and belong to that request. Idempotent.
    """
    if not AssignmentOffer.objects.filter(pk=offer_id, stock_request_id=stock_request_id).exists():
        logger.warning("notify_eic_assignment_expired: no offer %s of request %s", offer_id, stock_request_id)
        return {"notified": 0, "missing": 1}
    return eic_notify_assignments_expired(offer_ids=[offer_id])


def eic_notify_assignments_expired(*, offer_ids: Sequence[int]) -> dict[str, int]:
    """The "Driver Assignment Expired" push for each expired offer and every EIC user, in one transaction.

    Idempotent: each (offer, EIC user) message has its own dedupe key, so a repeat (a relay
    publishing twice, two workers) writes nothing more. A constant number of queries
    whatever the number of offers. Summary: `notified` (rows written), `offers`, `missing`
    (unknown or not expired).
    """
    from notifications.services import NotifyRequest, notify_many

    wanted = list(dict.fromkeys(int(pk) for pk in offer_ids))
    offers = list(
        AssignmentOffer.objects.filter(pk__in=wanted, outcome=Outcome.EXPIRED)
        .select_related("driver", "stock_request__station")
        .order_by("pk")
    )
    if len(offers) < len(wanted):
        logger.warning("EIC notices: %d of %d offers unknown or not expired", len(wanted) - len(offers), len(wanted))
    users = list(selectors.eic_users())
    with transaction.atomic():
        written = notify_many(
            NotifyRequest(
                template="driver_assignment_expired",
                user=user,
                context={"driver_name": offer.driver.name, "station_name": offer.stock_request.station.name},
                channels=["push"],
                dedupe_key=f"offer-expired:{offer.pk}:{user.pk}",
            )
            for offer in offers
            for user in users
        )
    return {"notified": written, "offers": len(offers), "missing": len(wanted) - len(offers)}


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
            # Check again once what is left, measured on the database's clock, has passed.
            expiry_check_add(
                stock_request_id=stock_request_id,
                offer_id=offer_id,
                not_before=timezone.now() + max(offer["left"], timedelta(milliseconds=100)),
                dedupe_key=f"offer-expiry:{offer_id}:again:{uuid.uuid4()}",
            )
            return {"expired_count": 0, "rescheduled": 1}
        expired = AssignmentOffer.objects.filter(pk=offer_id, outcome=Outcome.OPEN, expires_at__lte=Now()).update(
            outcome=Outcome.EXPIRED, resolved_at=Now()
        )
        if expired:
            StockRequest.objects.filter(pk=stock_request_id, status=Status.ASSIGNING).update(
                **BACK_TO_POOL, updated_at=Now()
            )
            _notice_add((offer_id, stock_request_id, offer["driver_id"]))
    return {"expired_count": expired}


# The sweep ---------------------------------------------------------------------------------


def _expire_locked_requests(rows: Sequence[tuple[Any, ...]], *, timeout: int) -> int:
    """Put locked ASSIGNING requests (pk, target_driver_id, assignment_started_at, assignment_mode)
    back in the pool, close their open offers as EXPIRED, and record the EIC notices. Four queries."""
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
    _chunk_notices_add(notices)
    return expired


def _sweep(candidates: QuerySet[StockRequest], *, timeout: int, chunk_size: int, max_chunks: int) -> tuple[int, int]:
    """Expire `candidates` chunk by chunk, paging by key; returns (expired, chunks used).

    Each chunk is one short transaction that locks its rows with SKIP LOCKED: a row an
    accept is holding is left to that accept, or to the next run.
    """
    expired = chunks = last = 0
    progress = ChunkedProgress(chunk_size=chunk_size, rest=candidates.count)
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
        progress.advance(len(rows))
        if len(rows) < chunk_size:
            break
        last = rows[-1][0]
    return expired, chunks


def stock_requests_expire_assignments(
    *, timeout_seconds: int | None = None, chunk_size: int = EXPIRY_CHUNK_SIZE, max_chunks: int = MAX_CHUNKS_PER_RUN
) -> dict[str, int]:
    """The safety-net sweep behind the one-shot checks.

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
    if expired:
        logger.info("driver assignment sweep: %d offers expired", expired)
    return {"expired_count": expired}
