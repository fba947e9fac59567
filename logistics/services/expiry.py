"""Offer expiry: the one-shot check at each deadline, the 60 s sweep behind it, and the EIC notices.

Each expiry records a `logistics.notify_eic_assignment_expired` intent in the core outbox
in the transaction that expires the offer, so the "Driver Assignment Expired" push is as
durable as the expiry itself; the notice is idempotent (one outbox row per offer and EIC
user), so a relay that publishes it twice sends nothing twice.
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

from core.services.outbox import Intent, outbox_add_many
from logistics import selectors
from logistics.models import AssignmentOffer, StockRequest
from logistics.services.offers import BACK_TO_POOL, assignment_timeout_seconds, expiry_check_add

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

Notice = tuple[int, int, int]  # (offer_id, stock_request_id, driver_id)


# The notices ----------------------------------------------------------------------------


def _notices_add(notices: Sequence[Notice]) -> None:
    """Record one EIC notice intent per expired offer, in the expiring transaction (one INSERT)."""
    outbox_add_many(
        Intent(
            task="logistics.notify_eic_assignment_expired",
            kwargs={"stock_request_id": request_id, "driver_id": driver_id, "offer_id": offer_id},
            dedupe_key=f"offer-expired-notice:{offer_id}",
        )
        for offer_id, request_id, driver_id in notices
    )


def eic_notify_assignment_expired(*, stock_request_id: int, driver_id: int, offer_id: int) -> dict[str, int]:
    """Write "Driver Assignment Expired" for every EIC user to the notifications outbox, once per offer.

    Idempotent: each (offer, EIC user) message has its own dedupe key, so a repeat writes nothing.
    """
    from notifications.services import NotifyRequest, notify_many

    offer = (
        AssignmentOffer.objects.filter(pk=offer_id, stock_request_id=stock_request_id, outcome=Outcome.EXPIRED)
        .select_related("driver", "stock_request__station")
        .first()
    )
    if offer is None:
        logger.warning("notify_eic_assignment_expired: no expired offer %s of request %s", offer_id, stock_request_id)
        return {"notified": 0, "missing": 1}
    context = {"driver_name": offer.driver.name, "station_name": offer.stock_request.station.name}
    with transaction.atomic():
        written = notify_many(
            NotifyRequest(
                template="driver_assignment_expired",
                user=user,
                context=context,
                channels=["push"],
                dedupe_key=f"offer-expired:{offer.pk}:{user.pk}",
            )
            for user in selectors.eic_users()
        )
    return {"notified": written}


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
            _notices_add([(offer_id, stock_request_id, offer["driver_id"])])
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
    _notices_add(notices)
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
