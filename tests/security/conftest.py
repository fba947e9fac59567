"""The security suite's world: every persona with an API token, and one object of each kind they act on."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from django.contrib.auth.models import Group
from rest_framework.authtoken.models import Token

from core.models import User
from logistics.models import EIC_GROUP, StockRequest
from payments.models import Milestone, SellerVerification
from tests.support.factories.escrow import make_escrow, make_user, milestones_of
from tests.support.factories.logistics import DriverFactory, StationFactory, StockRequestFactory, assigning_request
from tests.support.factories.payments import make_product

# Every persona of the fuzzing and the authorization matrix, in the matrix's column order.
PERSONAS = ("anonymous", "customer", "buyer", "seller", "driver", "eic", "staff")


@dataclass
class World:
    """Who calls (a token per persona) and what they call on (ids of real rows)."""

    tokens: dict[str, str] = field(default_factory=dict)
    ids: dict[str, Any] = field(default_factory=dict)

    def headers(self, persona: str) -> dict[str, str]:
        """The Authorization header of a persona; none for anonymous."""
        token = self.tokens.get(persona)
        return {"Authorization": f"Token {token}"} if token else {}

    def environ(self, persona: str) -> dict[str, str]:
        """The same header for Django's test client."""
        token = self.tokens.get(persona)
        return {"HTTP_AUTHORIZATION": f"Token {token}"} if token else {}


def build_world() -> World:
    """Persona users and their objects, written straight to the database (no outbox, no notifications)."""
    users: dict[str, User] = {
        "customer": make_user("sec-customer"),
        "buyer": make_user("sec-buyer"),
        "seller": make_user("sec-seller"),
        "staff": make_user("sec-staff", is_staff=True),
        "eic": make_user("sec-eic"),
    }
    users["eic"].groups.add(Group.objects.get_or_create(name=EIC_GROUP)[0])
    driver = DriverFactory(user=make_user("sec-driver"), name="Asha")
    users["driver"] = driver.user
    world = World(tokens={name: Token.objects.create(user=user).key for name, user in users.items()})

    product = make_product(stock=50)
    escrow = make_escrow(
        users["buyer"],
        users["seller"],
        status="in_progress",
        milestone_statuses=(Milestone.Status.SUBMITTED, Milestone.Status.PENDING),
    )
    submitted, pending = milestones_of(escrow)
    verification = SellerVerification.objects.create(user=users["seller"], documents=["id-card.pdf"])
    station = StationFactory(name="Booster Security", code="DBS-SEC")
    open_request = StockRequestFactory(station=station, quantity=500)
    offered = assigning_request(driver=driver)
    world.ids.update(
        product=product.pk,
        escrow=escrow.pk,
        milestone_submitted=submitted.pk,
        milestone_pending=pending.pk,
        verification=verification.pk,
        stock_request=open_request.pk,
        offered_request=offered.pk,
        driver=driver.pk,
    )
    assert StockRequest.objects.filter(pk=offered.pk, status=StockRequest.Status.ASSIGNING).exists()
    return world


@pytest.fixture
def world(db: Any) -> World:
    return build_world()


@pytest.fixture(autouse=True)
def offline_providers(settings: Any) -> None:
    """No job run inline by a staff request reaches the outside world: every provider URL is a closed local port."""
    closed = "http://127.0.0.1:9/"
    settings.EXCHANGE_RATES_URL = closed + "eurofxref-daily.xml"
    settings.RAZORPAY_BASE_URL = closed
    # A secret is set, so fuzzed webhook calls reach the signature check itself.
    settings.RAZORPAY_WEBHOOK_SECRET = "security-suite-webhook-secret"
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"


@pytest.fixture
def raised_throttles(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every DRF throttle scope at a rate no test reaches (the classes read their rates at import)."""
    from rest_framework.throttling import SimpleRateThrottle

    from payments.apis.pricing import PriceAnonRateThrottle, PriceUserRateThrottle

    scopes = {"anon", "user", PriceAnonRateThrottle.scope, PriceUserRateThrottle.scope, "webhook"}
    monkeypatch.setattr(SimpleRateThrottle, "THROTTLE_RATES", dict.fromkeys(scopes, "1000000/min"))


@pytest.fixture
def wsgi_in_test_transaction() -> Iterator[None]:
    """Requests through the real WSGI handler keep the test's connection (and its transaction) open.

    Django's handler closes the database connection when a request starts and ends; its test
    client avoids that the same way, for the duration of each request.
    """
    from django.core.signals import request_finished, request_started
    from django.db import close_old_connections

    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@pytest.fixture
def quiet_4xx_log() -> Iterator[None]:
    """Thousands of expected 4xx answers are not logged one by one; a 500 still is (ERROR)."""
    import logging

    logger = logging.getLogger("django.request")
    level = logger.level
    logger.setLevel(logging.ERROR)
    yield
    logger.setLevel(level)
