"""Personas for permission tests: staff, a customer, an EIC user, a driver, another driver, anonymous."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import Group
from rest_framework.test import APIClient

from core.models import User
from logistics.models import EIC_GROUP, Driver
from notifications.models import PushDevice
from tests.support.factories.logistics import DriverFactory, UserFactory


@pytest.fixture
def staff_user(db: Any) -> User:
    return User.objects.create_user(username="staff", password="pw-staff-1", is_staff=True, email="staff@example.com")


@pytest.fixture
def customer(db: Any) -> User:
    return User.objects.create_user(username="customer", password="pw-customer-1", email="customer@example.com")


@pytest.fixture
def anon_client() -> APIClient:
    return APIClient()


@pytest.fixture
def staff_client(staff_user: User) -> APIClient:
    client = APIClient()
    client.force_authenticate(staff_user)
    return client


@pytest.fixture
def customer_client(customer: User) -> APIClient:
    client = APIClient()
    client.force_authenticate(customer)
    return client


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
