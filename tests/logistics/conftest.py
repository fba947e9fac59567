"""Logistics fixtures: a daughter booster station and a pending request; the personas are in tests/support."""

from __future__ import annotations

from typing import Any

import pytest

from logistics.models import Station, StockRequest
from tests.support.broker import BrokerProbe
from tests.support.factories.logistics import StationFactory, StockRequestFactory


@pytest.fixture
def station(db: Any) -> Station:
    return StationFactory(name="Booster North", code="DBS-N")


@pytest.fixture
def pending_request(station: Station) -> StockRequest:
    return StockRequestFactory(station=station, quantity=1200)


@pytest.fixture(autouse=True)
def empty_broker(broker: BrokerProbe) -> BrokerProbe:
    """Every logistics test starts and ends with an empty test broker, so the messages it reads are its own."""
    return broker
