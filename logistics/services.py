"""Writes for driver assignment: offer, accept, reject, cancel, and the two expiry paths.

Every state change happens with the stock request's row locked and is guarded by a
conditional update, so each offer ends exactly once: accepted, rejected, expired or
cancelled, whichever of the competing calls takes the lock first.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from logistics import selectors
from logistics.models import AssignmentOffer, Driver, StockRequest

logger = logging.getLogger(__name__)

Status = StockRequest.Status
Outcome = AssignmentOffer.Outcome

# Requests expired per transaction by the sweep. At 1,000 a chunk takes about 0.1-0.2 s on
# PostgreSQL here (tests/benchmarks/driver_assignment.py), so row locks are held briefly
# and an accept waiting on one of them answers well within a second.
EXPIRY_CHUNK_SIZE = 1000

# Up to this many expiry notices are sent straight from the committing process (tens of ms);
# more go through one `logistics.send_assignment_expired_notices` message per chunk.
NOTICES_INLINE_MAX = 50

# What an expired request goes back to: the pool, with no trace of the offer on the row.
_BACK_TO_POOL: dict[str, Any] = {
    "status": Status.PENDING,
    "target_driver": None,
    "assignment_started_at": None,
    "assignment_mode": "",
}


class LogisticsError(Exception):
    """Base of the errors the API turns into responses; the message is shown to the caller."""


class NotFound(LogisticsError):
    pass


class Conflict(LogisticsError):
    pass


class InvalidInput(LogisticsError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def assignment_timeout_seconds(timeout_seconds: int | None = None) -> int:
    return int(timeout_seconds if timeout_seconds is not None else settings.DRIVER_ASSIGNMENT_TIMEOUT_SECONDS)


def _notify(**kwargs: Any) -> None:
    # Imported here so logistics loads on its own; notify() writes outbox rows in our
    # transaction and sends them once it commits.
    from notifications.services import notify

    notify(**kwargs)


def _notify_eic_users(*, template: str, context: dict[str, Any], event: str) -> int:
    count = 0
    for user in selectors.eic_users():
        _notify(template=template, user=user, context=context, channels=["push"], dedupe_key=f"{event}:{user.pk}")
        count += 1
    return count


def _lock_request(stock_request_id: int) -> StockRequest:
    request = (
        StockRequest.objects.select_for_update(of=("self",))
        .select_related("station")
        .filter(pk=stock_request_id)
        .first()
    )
    if request is None:
        raise NotFound(f"No stock request with id {stock_request_id}.")
    return request


def _schedule_expiry(offer: AssignmentOffer) -> None:
    from logistics.tasks import expire_assignment as expire_assignment_task

    offer_id, request_id, deadline = offer.pk, offer.stock_request_id, offer.expires_at
    # eta rather than countdown: the deadline holds however long the message waits in the broker.
    # robust: with the broker down the offer still stands (logged), and the 60 s sweep expires it.
    transaction.on_commit(
        lambda: expire_assignment_task.apply_async(args=(request_id, offer_id), eta=deadline), robust=True
    )


# Offer -------------------------------------------------------------------------


def stock_request_offer(
    *,
    stock_request_id: int,
    driver_id: int,
    mode: str = StockRequest.AssignmentMode.MANUAL,
    offered_by: Any = None,
    timeout_seconds: int | None = None,
) -> AssignmentOffer:
    """Offer a PENDING request's trip to an active driver; push the offer and schedule its expiry."""
    timeout = assignment_timeout_seconds(timeout_seconds)
    driver = Driver.objects.select_related("user").filter(pk=driver_id).first()
    if driver is None:
        raise InvalidInput("target_driver", f"No driver with id {driver_id}.")
    try:
        with transaction.atomic():
            request = _lock_request(stock_request_id)
            if request.status != Status.PENDING:
                raise Conflict(f"Stock request {request.pk} is {request.status}, not PENDING: it cannot be offered.")
            if not driver.active:
                raise Conflict(f"Driver {driver.pk} ({driver.name}) is inactive and cannot be offered a trip.")
            now = timezone.now()
            StockRequest.objects.filter(pk=request.pk, status=Status.PENDING).update(
                status=Status.ASSIGNING,
                target_driver=driver,
                assignment_started_at=now,
                assignment_mode=mode,
                updated_at=now,
            )
            offer = AssignmentOffer.objects.create(
                stock_request=request,
                driver=driver,
                offered_by=offered_by if getattr(offered_by, "pk", None) else None,
                mode=mode,
                offered_at=now,
                expires_at=now + timedelta(seconds=timeout),
            )
            _notify(
                template="driver_trip_offer",
                user=driver.user,
                context={
                    "station_name": request.station.name,
                    "quantity": request.quantity,
                    "seconds_to_accept": timeout,
                    "stock_request_id": request.pk,
                    # The push's data payload: what the app opens when the driver taps it.
                    "data": {"type": "driver_trip_offer", "stock_request_id": request.pk, "offer_id": offer.pk},
                },
                channels=["push"],
                dedupe_key=f"offer:{offer.pk}:{driver.user_id}",
            )
            _schedule_expiry(offer)
    except IntegrityError as exc:  # the one-open-offer constraint: another EIC user offered it first
        raise Conflict(f"Stock request {stock_request_id} was offered by someone else at the same time.") from exc
    return offer


# Driver's answer -----------------------------------------------------------------


def _open_offer_for(*, request: StockRequest, driver: Driver, now: datetime) -> AssignmentOffer:
    offer = selectors.driver_latest_offer(driver=driver, stock_request_id=request.pk)
    if offer is None:
        # Same answer as a missing request: a driver learns nothing about other drivers' offers.
        raise NotFound(f"No stock request with id {request.pk}.")
    if offer.outcome == Outcome.EXPIRED or (offer.outcome == Outcome.OPEN and now >= offer.expires_at):
        raise Conflict("offer expired")
    if offer.outcome != Outcome.OPEN:
        raise Conflict(f"offer no longer open (it was {offer.get_outcome_display().lower()})")
    return offer


def _close_offer(*, offer: AssignmentOffer, outcome: str, now: datetime) -> None:
    closed = AssignmentOffer.objects.filter(pk=offer.pk, outcome=Outcome.OPEN).update(outcome=outcome, resolved_at=now)
    if closed != 1:  # unreachable while the request row is locked; refuse rather than double-close
        raise Conflict("offer no longer open")


def offer_accept(*, driver: Driver, stock_request_id: int) -> StockRequest:
    """The driver takes the trip, if the offer is theirs, still open, and before its deadline."""
    with transaction.atomic():
        request = _lock_request(stock_request_id)
        now = timezone.now()  # read after the lock: a wait on the lock must not stretch the deadline
        offer = _open_offer_for(request=request, driver=driver, now=now)
        if not Driver.objects.filter(pk=driver.pk, active=True).exists():
            raise Conflict("driver is inactive")
        updated = StockRequest.objects.filter(pk=request.pk, status=Status.ASSIGNING, target_driver=driver).update(
            status=Status.ASSIGNED, driver=driver, assigned_at=now, updated_at=now
        )
        if updated != 1:
            raise Conflict("offer no longer open")
        _close_offer(offer=offer, outcome=Outcome.ACCEPTED, now=now)
    request.refresh_from_db()
    return request


def offer_reject(*, driver: Driver, stock_request_id: int) -> StockRequest:
    """The driver declines: the request is back in the pool at once and the EIC users are told."""
    with transaction.atomic():
        request = _lock_request(stock_request_id)
        now = timezone.now()
        offer = _open_offer_for(request=request, driver=driver, now=now)
        updated = StockRequest.objects.filter(pk=request.pk, status=Status.ASSIGNING, target_driver=driver).update(
            **_BACK_TO_POOL, updated_at=now
        )
        if updated != 1:
            raise Conflict("offer no longer open")
        _close_offer(offer=offer, outcome=Outcome.REJECTED, now=now)
        _notify_eic_users(
            template="driver_offer_rejected",
            context={"driver_name": driver.name, "station_name": request.station.name},
            event=f"offer-rejected:{offer.pk}",
        )
    request.refresh_from_db()
    return request


# Cancel ---------------------------------------------------------------------------


def stock_request_cancel(*, stock_request_id: int) -> StockRequest:
    with transaction.atomic():
        request = _lock_request(stock_request_id)
        if request.status not in StockRequest.CANCELLABLE:
            raise Conflict(f"Stock request {request.pk} is {request.status} and can no longer be cancelled.")
        now = timezone.now()
        AssignmentOffer.objects.filter(stock_request=request, outcome=Outcome.OPEN).update(
            outcome=Outcome.CANCELLED, resolved_at=now
        )
        StockRequest.objects.filter(pk=request.pk, status__in=StockRequest.CANCELLABLE).update(
            status=Status.CANCELLED,
            target_driver=None,
            assignment_started_at=None,
            assignment_mode="",
            cancelled_at=now,
            updated_at=now,
        )
    request.refresh_from_db()
    return request


# Expiry ---------------------------------------------------------------------------


def _expire_locked_requests(*, request_ids: Sequence[int], now: datetime) -> int:
    """Put locked ASSIGNING requests back in the pool, close their offers, and queue the EIC notices."""
    offers = list(
        AssignmentOffer.objects.filter(stock_request_id__in=request_ids, outcome=Outcome.OPEN).values_list(
            "pk", "stock_request_id", "driver_id"
        )
    )
    expired = StockRequest.objects.filter(pk__in=request_ids, status=Status.ASSIGNING).update(
        **_BACK_TO_POOL, updated_at=now
    )
    AssignmentOffer.objects.filter(pk__in=[pk for pk, _, _ in offers], outcome=Outcome.OPEN).update(
        outcome=Outcome.EXPIRED, resolved_at=now
    )
    if offers:
        transaction.on_commit(lambda: _enqueue_expiry_notices(offers), robust=True)
    return expired


def _enqueue_expiry_notices(offers: list[tuple[int, int, int]]) -> None:
    from logistics.tasks import send_assignment_expired_notices as fan_out_task

    if len(offers) <= NOTICES_INLINE_MAX:
        assignment_expired_notices_send(offers=offers)
    else:
        # One message for the chunk: a big sweep's time stays in its own transactions, not in
        # thousands of broker round trips (about 1 ms each here), and workers share the fan-out.
        fan_out_task.delay([list(o) for o in offers])


def assignment_expired_notices_send(*, offers: Iterable[Sequence[int]]) -> dict[str, int]:
    """Send `logistics.notify_eic_assignment_expired` for each (offer, request, driver), on one broker connection.

    Safe to repeat: each notice is deduplicated per offer and EIC user when it runs.
    """
    from config.celery import app
    from logistics.tasks import notify_eic_assignment_expired as notify_task

    sent = 0
    with app.producer_or_acquire() as producer:
        for offer_id, request_id, driver_id in offers:
            notify_task.apply_async(args=(request_id, driver_id), kwargs={"offer_id": offer_id}, producer=producer)
            sent += 1
    return {"sent": sent}


def stock_requests_expire_assignments(
    *, timeout_seconds: int | None = None, chunk_size: int = EXPIRY_CHUNK_SIZE
) -> dict[str, int]:
    """The safety-net sweep: every ASSIGNING request offered `timeout_seconds` ago or more goes back to PENDING.

    Chunked, one short transaction per chunk; rows another transaction holds (an accept
    in flight) are skipped and left for that transaction or the next sweep.
    """
    timeout = assignment_timeout_seconds(timeout_seconds)
    cutoff = timezone.now() - timedelta(seconds=timeout)
    ids = selectors.stock_requests_expired_assignment_ids(cutoff=cutoff)
    expired = 0
    for start in range(0, len(ids), chunk_size):
        chunk = ids[start : start + chunk_size]
        with transaction.atomic():
            locked = list(
                StockRequest.objects.select_for_update(skip_locked=True)
                .filter(pk__in=chunk, status=Status.ASSIGNING, assignment_started_at__lte=cutoff)
                .values_list("pk", flat=True)
            )
            if locked:
                expired += _expire_locked_requests(request_ids=locked, now=timezone.now())
    if expired:
        logger.info("driver assignment sweep: %d offers expired (timeout %ss)", expired, timeout)
    return {"expired_count": expired}


def assignment_offer_expire(*, stock_request_id: int, offer_id: int) -> dict[str, int]:
    """The one-shot check sent for an offer's deadline. A no-op once the offer has ended any other way."""
    with transaction.atomic():
        request = StockRequest.objects.select_for_update().filter(pk=stock_request_id).first()
        offer = AssignmentOffer.objects.filter(pk=offer_id, stock_request_id=stock_request_id).first()
        if request is None or offer is None:
            logger.info("expire_assignment: request %s / offer %s no longer exists", stock_request_id, offer_id)
            return {"expired_count": 0, "missing": 1}
        if offer.outcome != Outcome.OPEN:
            return {"expired_count": 0, "already_closed": 1}
        now = timezone.now()
        if now < offer.expires_at:
            # Delivered early (a worker's clock ahead of ours): look again at the deadline.
            _schedule_expiry(offer)
            return {"expired_count": 0, "rescheduled": 1}
        return {"expired_count": _expire_locked_requests(request_ids=[request.pk], now=now)}


def eic_notify_assignment_expired(
    *, stock_request_id: int, driver_id: int, offer_id: int | None = None
) -> dict[str, int]:
    """Push "Driver Assignment Expired" to every EIC user, once per offer whatever the retries."""
    request = StockRequest.objects.select_related("station").filter(pk=stock_request_id).first()
    driver = Driver.objects.filter(pk=driver_id).first()
    if request is None or driver is None:
        logger.warning("notify_eic_assignment_expired: request %s or driver %s is gone", stock_request_id, driver_id)
        return {"notified": 0, "missing": 1}
    if offer_id is None:
        last = (
            AssignmentOffer.objects.filter(stock_request=request, driver=driver, outcome=Outcome.EXPIRED)
            .order_by("-resolved_at", "-pk")
            .first()
        )
        offer_id = last.pk if last else None
    event = f"offer-expired:{offer_id}" if offer_id else f"offer-expired:r{request.pk}:d{driver.pk}"
    with transaction.atomic():
        notified = _notify_eic_users(
            template="driver_assignment_expired",
            context={"driver_name": driver.name, "station_name": request.station.name},
            event=event,
        )
    return {"notified": notified}
