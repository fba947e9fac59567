"""Fifty accepts on one offer while its deadline passes and both expiry paths run: one outcome, no 5xx."""

from __future__ import annotations

import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import pytest
import time_machine
from django.db import connection
from django.urls import reverse
from django.utils import timezone

from logistics import services
from logistics.models import AssignmentOffer, Driver, StockRequest
from tests.logistics.broker import sent_tasks
from tests.logistics.conftest import client_for
from tests.logistics.factories import DriverFactory, assigning_request

ACCEPT = reverse("logistics:driver-trip-accept")
# Parallel connections: the PostgreSQL server is shared with other suites (max_connections 100).
PARALLEL = 25


def run_race(*, driver: Driver, others: list[Driver], request: StockRequest, offset_ms: int) -> dict[str, Any]:
    offer = request.offers.get()
    callers = [driver] * 30 + others * 10  # 50 accepts: 30 from the driver, 10 from each other driver
    start = threading.Event()
    sweeps: list[dict[str, int]] = []

    def accept(who: Driver) -> tuple[int, int, str]:
        try:
            start.wait(10)
            response = client_for(who.user).post(ACCEPT, {"stock_request_id": request.pk}, format="json")
            return who.pk, response.status_code, response.json().get("detail", "")
        finally:
            connection.close()

    def expire() -> None:
        try:
            start.wait(10)
            sweeps.append(services.assignment_offer_expire(stock_request_id=request.pk, offer_id=offer.pk))
            sweeps.append(services.stock_requests_expire_assignments())
        finally:
            connection.close()

    # The clock runs from `offset_ms` before the deadline, so the deadline passes during the race.
    with time_machine.travel(offer.expires_at - timedelta(milliseconds=offset_ms), tick=True):
        with ThreadPoolExecutor(max_workers=PARALLEL) as pool:
            futures = [pool.submit(accept, who) for who in callers]
            expiry = [pool.submit(expire) for _ in range(2)]
            start.set()
            answers = [f.result(timeout=60) for f in futures]
            for f in expiry:
                f.result(timeout=60)
        # The safety net runs after the deadline whatever the race did.
        with time_machine.travel(offer.expires_at + timedelta(seconds=1), tick=False):
            sweeps.append(services.stock_requests_expire_assignments())
    return {"answers": answers, "sweeps": sweeps}


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("offset_ms", [0, 40, 300])
def test_fifty_accepts_across_the_deadline_give_one_winner_or_none_and_no_5xx(offset_ms: int) -> None:
    # Given an offer to one driver whose deadline is `offset_ms` away, and two other drivers
    driver = DriverFactory()
    others = [DriverFactory(), DriverFactory()]
    request = assigning_request(driver=driver, started_at=timezone.now())

    # When 50 accepts arrive at once while the one-shot expiry and the sweep run too
    race = run_race(driver=driver, others=others, request=request, offset_ms=offset_ms)

    answers = race["answers"]
    codes = Counter(code for _, code, _ in answers)
    # Then no 5xx, at most one 200, and it went to the driver the offer was for
    assert set(codes) <= {200, 404, 409}, codes
    winners = [who for who, code, _ in answers if code == 200]
    assert len(winners) <= 1 and set(winners) <= {driver.pk}
    # And the other drivers learned nothing: 404, like a missing request
    assert {code for who, code, _ in answers if who != driver.pk} == {404}
    request.refresh_from_db()
    offer = AssignmentOffer.objects.get(stock_request=request)
    expired_total = sum(s.get("expired_count", 0) for s in race["sweeps"])
    notices = [t for t in sent_tasks() if t.name == "logistics.notify_eic_assignment_expired"]
    if winners:
        # The accept won: the trip is theirs, nothing expired it, no EIC notice, the rest were told it is closed
        assert (request.status, request.driver_id, offer.outcome) == ("ASSIGNED", driver.pk, "ACCEPTED")
        assert expired_total == 0 and notices == []
        losing = {detail for who, code, detail in answers if who == driver.pk and code != 200}
        assert losing <= {"offer no longer open (it was accepted)", "offer expired"}
    else:
        # The deadline won: expired exactly once, one EIC notice, every accept was 409 "offer expired"
        assert (request.status, request.target_driver_id, offer.outcome) == ("PENDING", None, "EXPIRED")
        assert expired_total == 1 and len(notices) == 1
        assert {(code, detail) for who, code, detail in answers if who == driver.pk} == {(409, "offer expired")}
