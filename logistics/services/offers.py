"""Offer a request's trip to a driver, the driver's accept or reject, and cancelling the request.

Every state change locks the stock request's row first and is guarded by a conditional
update, so each offer ends exactly once, whichever competing call takes the lock first.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import BooleanField, ExpressionWrapper, Q
from django.db.models.functions import Now

from core.errors import Conflict, Invalid, NotFound
from core.services.outbox import outbox_add
from logistics import selectors
from logistics.models import AssignmentOffer, Driver, Station, StockRequest

Status = StockRequest.Status
Outcome = AssignmentOffer.Outcome

# What a request goes back to when its offer ends unaccepted: the pool, with no trace of the offer on the row.
BACK_TO_POOL: dict[str, Any] = {
    "status": Status.PENDING,
    "target_driver": None,
    "assignment_started_at": None,
    "assignment_mode": "",
}


def assignment_timeout_seconds(timeout_seconds: int | None = None) -> int:
    return int(timeout_seconds if timeout_seconds is not None else settings.DRIVER_ASSIGNMENT_TIMEOUT_SECONDS)


def lock_request(stock_request_id: int) -> StockRequest:
    request = (
        StockRequest.objects.select_for_update(of=("self",))
        .select_related("station")
        .filter(pk=stock_request_id)
        .first()
    )
    if request is None:
        raise NotFound(f"No stock request with id {stock_request_id}.")
    return request


def expiry_check_add(*, stock_request_id: int, offer_id: int, not_before: datetime, dedupe_key: str) -> None:
    """Record the offer's one-shot expiry check in the core outbox, in the current transaction.

    Published at commit with the deadline as its ETA (the deadline holds however long the
    message waits); with the broker down the relay publishes it, and the 60 s sweep
    expires the offer whatever happens to the message.
    """
    outbox_add(
        task="logistics.expire_assignment",
        kwargs={"stock_request_id": stock_request_id, "offer_id": offer_id},
        dedupe_key=dedupe_key,
        not_before=not_before,
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
    from notifications.services import notify

    timeout = assignment_timeout_seconds(timeout_seconds)
    try:
        with transaction.atomic():
            request = lock_request(stock_request_id)
            # Locked: a deactivation committed before this is seen, and one made now waits for this offer.
            driver = Driver.objects.select_for_update(of=("self",)).select_related("user").filter(pk=driver_id).first()
            if driver is None:
                raise Invalid({"target_driver": [f"No driver with id {driver_id}."]})
            if request.station.kind != Station.Kind.DBS:
                raise Conflict(
                    f"Stock request {request.pk} is for {request.station}, which is not a daughter booster "
                    "station: only a DBS's requests can be offered to a driver."
                )
            if request.status != Status.PENDING:
                raise Conflict(f"Stock request {request.pk} is {request.status}, not PENDING: it cannot be offered.")
            if not driver.active:
                raise Conflict(f"Driver {driver.pk} ({driver.name}) is inactive and cannot be offered a trip.")
            offer = AssignmentOffer.objects.create(
                stock_request=request,
                driver=driver,
                offered_by=offered_by if getattr(offered_by, "pk", None) else None,
                mode=mode,
                offered_at=Now(),
                expires_at=Now() + timedelta(seconds=timeout),
            )
            offer.refresh_from_db(fields=["offered_at", "expires_at"])
            StockRequest.objects.filter(pk=request.pk, status=Status.PENDING).update(
                status=Status.ASSIGNING,
                target_driver=driver,
                assignment_started_at=offer.offered_at,
                assignment_mode=mode,
                updated_at=offer.offered_at,
            )
            notify(
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
            expiry_check_add(
                stock_request_id=request.pk,
                offer_id=offer.pk,
                not_before=offer.expires_at,
                dedupe_key=f"offer-expiry:{offer.pk}",
            )
    except IntegrityError as exc:  # the one-open-offer constraint: another EIC user offered it first
        raise Conflict(f"Stock request {stock_request_id} was offered by someone else at the same time.") from exc
    return offer


# Driver's answer -----------------------------------------------------------------


def _answerable_offer(*, request: StockRequest, driver: Driver) -> AssignmentOffer:
    """The driver's latest offer of the locked request, if it is open and before its deadline."""
    offer = (
        AssignmentOffer.objects.filter(stock_request_id=request.pk, driver=driver)
        # Read after the lock: a wait on the lock must not stretch the deadline.
        .annotate(due=ExpressionWrapper(Q(expires_at__lte=Now()), output_field=BooleanField()))
        .order_by("-offered_at", "-pk")
        .first()
    )
    if offer is None:
        # Same answer as a missing request: a driver learns nothing about other drivers' offers.
        raise NotFound(f"No stock request with id {request.pk}.")
    if offer.outcome == Outcome.EXPIRED or (offer.outcome == Outcome.OPEN and offer.due):
        raise Conflict("offer expired")
    if offer.outcome != Outcome.OPEN:
        raise Conflict(f"offer no longer open (it was {offer.get_outcome_display().lower()})")
    return offer


def _close_open_offer(*, offer: AssignmentOffer, outcome: str) -> None:
    # The deadline is checked again in the write: it may have passed since the read.
    closed = AssignmentOffer.objects.filter(pk=offer.pk, outcome=Outcome.OPEN, expires_at__gt=Now()).update(
        outcome=outcome, resolved_at=Now()
    )
    if closed != 1:
        raise Conflict("offer expired")


def offer_accept(*, driver: Driver, stock_request_id: int) -> StockRequest:
    """The driver takes the trip, if the offer is theirs, still open, and before its deadline."""
    with transaction.atomic():
        request = lock_request(stock_request_id)
        offer = _answerable_offer(request=request, driver=driver)
        if not Driver.objects.filter(pk=driver.pk, active=True).exists():
            raise Conflict("driver is inactive")
        _close_open_offer(offer=offer, outcome=Outcome.ACCEPTED)
        updated = StockRequest.objects.filter(pk=request.pk, status=Status.ASSIGNING, target_driver=driver).update(
            status=Status.ASSIGNED, driver=driver, assigned_at=Now(), updated_at=Now()
        )
        if updated != 1:  # unreachable while the request row is locked; refuse rather than half-accept
            raise Conflict("offer no longer open")
    request.refresh_from_db()
    return request


def offer_reject(*, driver: Driver, stock_request_id: int) -> StockRequest:
    """The driver declines: the request is back in the pool at once and the EIC users are told."""
    from notifications.services import NotifyRequest, notify_many

    with transaction.atomic():
        request = lock_request(stock_request_id)
        offer = _answerable_offer(request=request, driver=driver)
        _close_open_offer(offer=offer, outcome=Outcome.REJECTED)
        updated = StockRequest.objects.filter(pk=request.pk, status=Status.ASSIGNING, target_driver=driver).update(
            **BACK_TO_POOL, updated_at=Now()
        )
        if updated != 1:
            raise Conflict("offer no longer open")
        context = {"driver_name": driver.name, "station_name": request.station.name}
        # One bulk write for all EIC users, so the row lock is not held for a round trip per user.
        notify_many(
            NotifyRequest(
                template="driver_offer_rejected",
                user=user,
                context=context,
                channels=["push"],
                dedupe_key=f"offer-rejected:{offer.pk}:{user.pk}",
            )
            for user in selectors.eic_users()
        )
    request.refresh_from_db()
    return request


# Cancel ---------------------------------------------------------------------------


def stock_request_cancel(*, stock_request_id: int) -> StockRequest:
    with transaction.atomic():
        request = lock_request(stock_request_id)
        if request.status not in StockRequest.CANCELLABLE:
            raise Conflict(f"Stock request {request.pk} is {request.status} and can no longer be cancelled.")
        AssignmentOffer.objects.filter(stock_request=request, outcome=Outcome.OPEN).update(
            outcome=Outcome.CANCELLED, resolved_at=Now()
        )
        StockRequest.objects.filter(pk=request.pk, status__in=StockRequest.CANCELLABLE).update(
            status=Status.CANCELLED,
            target_driver=None,
            assignment_started_at=None,
            assignment_mode="",
            cancelled_at=Now(),
            updated_at=Now(),
        )
    request.refresh_from_db()
    return request
