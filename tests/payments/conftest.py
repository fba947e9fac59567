"""Payments fixtures; the factories are in tests/support/factories/payments.py."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from payments.models import Product
from tests.support.factories.payments import FIXTURES, make_product


@pytest.fixture
def ecb_daily_xml() -> bytes:
    return (FIXTURES / "eurofxref-daily.xml").read_bytes()


@pytest.fixture
def product_factory() -> Callable[..., Product]:
    return make_product
