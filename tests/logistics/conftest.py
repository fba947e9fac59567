"""Personas for the logistics API: an EIC user, the target driver, another driver, a customer, anonymous."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import Group
from rest_framework.test import APIClient

from core.models import User
from logistics.models import EIC_GROUP, Driver, Station, StockRequest
from notifications.models import PushDevice
from tests.logistics.factories import DriverFactory, StationFactory, StockRequestFactory, UserFactory


@pytest.fixture
def eic_user(db: Any) -> User:
    user = UserFactory(username="eic", phone_number="+14155550100")
    # The data migration creates the group; a transactional test elsewhere may have flushed it.
    user.groups.add(Group.objects.get_or_create(name=EIC_GROUP)[0])
    PushDevice.objects.create(user=user, token="eic-device-token", platform="android")
    return user


@pytest.fixture
def driver(db: Any) -> Driver:
    driver = DriverFactory(user=UserFactory(username="driver"), name="Asha")
    PushDevice.objects.create(user=driver.user, token="driver-device-token", platform="android")
    return driver


@pytest.fixture
def other_driver(db: Any) -> Driver:
    return DriverFactory(user=UserFactory(username="other-driver"), name="Ravi")


@pytest.fixture
def station(db: Any) -> Station:
    return StationFactory(name="Booster North", code="DBS-N")


@pytest.fixture
def pending_request(station: Station) -> StockRequest:
    return StockRequestFactory(station=station, quantity=1200)


def client_for(user: User) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


@pytest.fixture
def eic_client(eic_user: User) -> APIClient:
    return client_for(eic_user)


@pytest.fixture
def driver_client(driver: Driver) -> APIClient:
    return client_for(driver.user)


@pytest.fixture
def other_driver_client(other_driver: Driver) -> APIClient:
    return client_for(other_driver.user)


@pytest.fixture(autouse=True)
def empty_broker() -> Any:
    """Each test starts and ends with an empty test broker, so the messages it reads are its own."""
    from tests.logistics.broker import broker

    broker().flushdb()
    yield
    broker().flushdb()
