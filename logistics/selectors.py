"""Reads for the logistics app: each returns a queryset or a small value, never writes."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.contrib.auth import get_user_model
from django.db import connection
from django.db.models import QuerySet
from django.utils import timezone

from logistics.models import EIC_GROUP, AssignmentOffer, Driver


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


def database_now() -> datetime:
    """The database's clock, which every deadline is set and checked on (what `Now()` reads).

    PostgreSQL's is STATEMENT_TIMESTAMP(). SQLite (`make run`) has no such function: its `Now()`
    is the host's UTC clock, the one this process reads, since the database is a local file.
    """
    if connection.vendor != "postgresql":
        return timezone.now()
    with connection.cursor() as cursor:
        cursor.execute("SELECT STATEMENT_TIMESTAMP()")
        row = cursor.fetchone()
    return row[0]  # type: ignore[no-any-return]


def driver_pending_offers(*, driver: Driver, now: datetime) -> QuerySet[AssignmentOffer]:
    """The driver's open offers whose deadline has not passed at `now` (the database's clock), soonest first."""
    return (
        AssignmentOffer.objects.filter(driver=driver, outcome=AssignmentOffer.Outcome.OPEN, expires_at__gt=now)
        .select_related("stock_request__station")
        .order_by("expires_at", "pk")
    )
