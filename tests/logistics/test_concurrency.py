"""Fifty accepts on one offer while its deadline passes and both expiry paths run: one outcome, no 5xx.

Connections: 25 accept threads, each making two accepts (50 in all), plus 2 expiry threads and
the test's own connection: 28 at once. The PostgreSQL server is shared with the other suites
(max_connections 100), hence the cap of 25 parallel accepts rather than 50.
"""

from __future__ import annotations

import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.db.models.functions import Now
from django.urls import reverse

from logistics import services
from logistics.models import AssignmentOffer, Driver, StockRequest
from tests.support.broker import sent_tasks
from tests.support.factories.logistics import DriverFactory, assigning_request
from tests.support.outbox import intents
from tests.support.personas import client_for

ACCEPT = reverse("logistics:driver-trip-accept")
NOTIFY = "logistics.notify_eic_assignment_expired"  # the one-shot check's notice, one per offer
NOTIFY_CHUNK = "logistics.notify_eic_assignments_expired"  # the sweep's notice, one per chunk
PARALLEL_ACCEPTS = 25
EXPIRY_RUNS = 2


def run_race(*, driver: Driver, others: list[Driver], request: StockRequest, offset_ms: int) -> dict[str, Any]:
    offer = request.offers.get()
    callers = [driver] * 30 + others * 10  # 50 accepts: 30 from the driver, 10 from each other driver
    rounds = [callers[i::PARALLEL_ACCEPTS] for i in range(PARALLEL_ACCEPTS)]  # two accepts per thread

    def set_deadline() -> None:
        # Run by the last thread to arrive, just before all are released: the deadline is
        # `offset_ms` ahead on the database's clock, so it passes during the race.
        AssignmentOffer.objects.filter(pk=offer.pk).update(expires_at=Now() + timedelta(milliseconds=offset_ms))

    start = threading.Barrier(PARALLEL_ACCEPTS + EXPIRY_RUNS, action=set_deadline, timeout=30)

    def accept(whos: list[Driver]) -> list[tuple[int, int, str]]:
        try:
            connection.ensure_connection()  # connect before the start, so the race is the requests
            start.wait()
            out = []
            for who in whos:
                response = client_for(who.user).post(ACCEPT, {"stock_request_id": request.pk}, format="json")
                out.append((who.pk, response.status_code, response.json().get("detail", "")))
            return out
        finally:
            connection.close()

    def expire(run: int) -> dict[str, int]:
        try:
            connection.ensure_connection()
            start.wait()
            if run == 0:
                return services.assignment_offer_expire(stock_request_id=request.pk, offer_id=offer.pk)
            return services.stock_requests_expire_assignments()
        finally:
            connection.close()

    # The expiry runs are submitted first, on their own executor: they cannot queue behind the accepts.
    with (
        ThreadPoolExecutor(max_workers=EXPIRY_RUNS) as expiry_pool,
        ThreadPoolExecutor(max_workers=PARALLEL_ACCEPTS) as accept_pool,
    ):
        expiry = [expiry_pool.submit(expire, run) for run in range(EXPIRY_RUNS)]
        accepts = [accept_pool.submit(accept, whos) for whos in rounds]
        answers = [answer for f in accepts for answer in f.result(timeout=60)]
        sweeps = [f.result(timeout=60) for f in expiry]
    # The safety net after the race. Either an accept won, or every accept of the driver was refused
    # because the deadline had passed on the database's clock: either way there is no waiting to do.
    sweeps.append(services.stock_requests_expire_assignments())
    return {"answers": answers, "sweeps": sweeps}


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("offset_ms", [0, 40, 300])
def test_fifty_accepts_across_the_deadline_give_one_winner_or_none_and_no_5xx(offset_ms: int) -> None:
    # Given an offer to one driver whose deadline will be `offset_ms` away when the race starts, and two other drivers
    driver = DriverFactory()
    others = [DriverFactory(), DriverFactory()]
    request = assigning_request(driver=driver)

    # When 50 accepts arrive at once while the one-shot expiry and the sweep run too
    race = run_race(driver=driver, others=others, request=request, offset_ms=offset_ms)

    answers = race["answers"]
    assert len(answers) == 50
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
    # The notice intents recorded with the expiry, and the messages their commit published, of either path
    recorded = {name: intents(name) for name in (NOTIFY, NOTIFY_CHUNK)}
    notices = {name: sent_tasks("logistics", name) for name in (NOTIFY, NOTIFY_CHUNK)}
    if winners:
        # The accept won: the trip is theirs, nothing expired it, no EIC notice, the rest were told it is closed
        assert (request.status, request.driver_id, offer.outcome) == ("ASSIGNED", driver.pk, "ACCEPTED")
        assert expired_total == 0
        assert recorded == notices == {NOTIFY: [], NOTIFY_CHUNK: []}
        losing = {detail for who, code, detail in answers if who == driver.pk and code != 200}
        assert losing <= {"offer no longer open (it was accepted)", "offer expired"}
    else:
        # The deadline won: expired exactly once, one EIC notice from the path that expired it (the one-shot
        # check's per-offer notice, or a sweep's chunk notice carrying this offer alone), every accept was
        # 409 "offer expired"
        assert (request.status, request.target_driver_id, offer.outcome) == ("PENDING", None, "EXPIRED")
        assert expired_total == 1
        by_one_shot = race["sweeps"][0].get("expired_count", 0) == 1
        path, other = (NOTIFY, NOTIFY_CHUNK) if by_one_shot else (NOTIFY_CHUNK, NOTIFY)
        expected = (
            {"stock_request_id": request.pk, "driver_id": driver.pk, "offer_id": offer.pk}
            if by_one_shot
            else {"offer_ids": [offer.pk]}
        )
        assert len(recorded[path]) == len(notices[path]) == 1 and recorded[other] == notices[other] == []
        assert recorded[path][0].kwargs == notices[path][0].kwargs == expected
        assert notices[path][0].id == str(recorded[path][0].task_id)
        assert {(code, detail) for who, code, detail in answers if who == driver.pk} == {(409, "offer expired")}


REJECT = reverse("logistics:driver-trip-reject")


@pytest.mark.django_db(transaction=True)
def test_accepts_racing_rejects_on_one_offer_end_in_exactly_one_outcome(eic_user: Any) -> None:
    from notifications.models import Notification

    # Given a live offer to a driver, and an EIC user who is told when a driver rejects
    driver = DriverFactory()
    request = assigning_request(driver=driver)
    calls = [ACCEPT, REJECT] * 5
    start = threading.Barrier(len(calls), timeout=30)

    def call(url: str) -> tuple[str, int, str]:
        try:
            connection.ensure_connection()
            start.wait()
            response = client_for(driver.user).post(url, {"stock_request_id": request.pk}, format="json")
            return url, response.status_code, response.json().get("detail", "")
        finally:
            connection.close()

    # When five accepts and five rejects from that driver arrive at once
    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        answers = list(pool.map(call, calls))

    # Then exactly one call won, every other one was told the offer is no longer open, and no 5xx
    winners = [url for url, code, _ in answers if code == 200]
    assert len(winners) == 1, answers
    assert {code for _, code, _ in answers if code != 200} == {409}
    request.refresh_from_db()
    offer = AssignmentOffer.objects.get(stock_request=request)
    rejected_pushes = Notification.objects.filter(template_key="driver_offer_rejected", user=eic_user).count()
    if winners == [ACCEPT]:
        assert (request.status, request.driver_id, offer.outcome) == ("ASSIGNED", driver.pk, "ACCEPTED")
        assert rejected_pushes == 0
    else:
        assert (request.status, request.target_driver_id, offer.outcome) == ("PENDING", None, "REJECTED")
        assert rejected_pushes == 1
