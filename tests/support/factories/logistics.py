from __future__ import annotations

from datetime import timedelta

import factory
from django.db.models import F

from core.models import User
from logistics.models import AssignmentOffer, Driver, Station, StockRequest
from logistics.selectors import database_now


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = User
        django_get_or_create = ("username",)

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda u: f"{u.username}@example.com")


class StationFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Station

    name = factory.Sequence(lambda n: f"Booster Station {n}")
    code = factory.Sequence(lambda n: f"DBS-{n:03d}")
    kind = Station.Kind.DBS


class DriverFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Driver

    user = factory.SubFactory(UserFactory)
    name = factory.Sequence(lambda n: f"Driver {n}")
    phone = factory.Sequence(lambda n: f"+9198000{n:05d}")
    active = True


class StockRequestFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = StockRequest

    station = factory.SubFactory(StationFactory)
    quantity = 1000


def assigning_request(*, driver: Driver, started_seconds_ago: float = 0, timeout: int = 300) -> StockRequest:
    """An ASSIGNING request with its open offer, as the offer service leaves it.

    Times are on the database's clock, which every deadline is checked on: the offer was
    made `started_seconds_ago` before the database's now and lasts `timeout` seconds.
    """
    started_at = database_now() - timedelta(seconds=started_seconds_ago)
    request = StockRequestFactory(
        status=StockRequest.Status.ASSIGNING,
        target_driver=driver,
        assignment_started_at=started_at,
        assignment_mode=StockRequest.AssignmentMode.MANUAL,
    )
    AssignmentOffer.objects.create(
        stock_request=request,
        driver=driver,
        mode=StockRequest.AssignmentMode.MANUAL,
        offered_at=started_at,
        expires_at=started_at + timedelta(seconds=timeout),
    )
    return request


def age(request: StockRequest, seconds: float) -> None:
    """As if `seconds` had passed on the database's clock since the request was offered (its clock cannot be moved)."""
    shift = timedelta(seconds=seconds)
    StockRequest.objects.filter(pk=request.pk, assignment_started_at__isnull=False).update(
        assignment_started_at=F("assignment_started_at") - shift
    )
    AssignmentOffer.objects.filter(stock_request=request).update(
        offered_at=F("offered_at") - shift,
        expires_at=F("expires_at") - shift,
        resolved_at=F("resolved_at") - shift,
    )
