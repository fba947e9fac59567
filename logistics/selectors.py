"""Reads for the logistics app: each returns a queryset or a small value, never writes."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.contrib.auth import get_user_model
from django.db.models import QuerySet

from logistics.models import EIC_GROUP, AssignmentOffer, Driver, StockRequest


def driver_for_user(*, user: Any) -> Driver | None:
    if not getattr(user, "is_authenticated", False):
        return None
    return Driver.objects.filter(user_id=user.pk).first()


def user_is_eic(*, user: Any) -> bool:
    if not getattr(user, "is_authenticated", False):
        return False
    return bool(user.groups.filter(name=EIC_GROUP).exists())


def eic_users() -> QuerySet[Any]:
    return get_user_model().objects.filter(groups__name=EIC_GROUP, is_active=True).order_by("pk")


def driver_pending_offers(*, driver: Driver, now: datetime) -> QuerySet[AssignmentOffer]:
    """The driver's open offers whose deadline has not passed, soonest deadline first."""
    return (
        AssignmentOffer.objects.filter(driver=driver, outcome=AssignmentOffer.Outcome.OPEN, expires_at__gt=now)
        .select_related("stock_request__station")
        .order_by("expires_at", "pk")
    )


def driver_latest_offer(*, driver: Driver, stock_request_id: int) -> AssignmentOffer | None:
    return (
        AssignmentOffer.objects.filter(stock_request_id=stock_request_id, driver=driver)
        .order_by("-offered_at", "-pk")
        .first()
    )


def stock_requests_expired_assignment_ids(*, cutoff: datetime) -> list[int]:
    """Ids of ASSIGNING requests offered at or before `cutoff` (the partial index logistics_sr_assigning_idx)."""
    return list(
        StockRequest.objects.filter(status=StockRequest.Status.ASSIGNING, assignment_started_at__lte=cutoff)
        .order_by("pk")
        .values_list("pk", flat=True)
    )
