from __future__ import annotations

from datetime import timedelta

import factory
from django.utils import timezone

from core.models import User
from logistics.models import AssignmentOffer, Driver, Station, StockRequest


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


def assigning_request(
    *, driver: Driver, started_at: timezone.datetime | None = None, timeout: int = 300
) -> StockRequest:
    """An ASSIGNING request with its open offer, as the offer service leaves it, at `started_at`."""
    started_at = started_at or timezone.now()
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
