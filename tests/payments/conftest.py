"""Payments fixtures; the helpers themselves are in tests/payments/factories.py."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from django.conf import settings

from payments.models import Product
from tests.payments.factories import FIXTURES, BrokerQueue, make_product


@pytest.fixture
def ecb_daily_xml() -> bytes:
    return (FIXTURES / "eurofxref-daily.xml").read_bytes()


@pytest.fixture
def notifications_queue() -> Iterator[BrokerQueue]:
    assert int(settings.CELERY_BROKER_URL.rsplit("/", 1)[-1]) >= 2, "refusing to flush a non-test broker"
    queue = BrokerQueue("notifications")
    queue.client.delete(queue.name)
    yield queue
    queue.client.delete(queue.name)


@pytest.fixture
def payments_queue() -> Iterator[BrokerQueue]:
    assert int(settings.CELERY_BROKER_URL.rsplit("/", 1)[-1]) >= 2, "refusing to flush a non-test broker"
    queue = BrokerQueue("payments")
    queue.client.delete(queue.name)
    yield queue
    queue.client.delete(queue.name)


@pytest.fixture
def product_factory() -> Callable[..., Product]:
    return make_product
