"""The two expiry paths (the 60 s sweep and the one-shot check at the deadline) and accept racing them."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import time_machine
from django.db import connection, transaction
from django.test import override_settings

from logistics import services
from logistics.models import AssignmentOffer, Driver, StockRequest
from tests.logistics.broker import sent_tasks
from tests.logistics.factories import assigning_request

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
Status = StockRequest.Status
Outcome = AssignmentOffer.Outcome


def notices() -> list[tuple[int, int, int]]:
    return [
        (t.args[0], t.args[1], t.kwargs["offer_id"])
        for t in sent_tasks()
        if t.name == "logistics.notify_eic_assignment_expired"
    ]


@pytest.mark.django_db
class TestTheSweep:
    def test_it_returns_requests_past_the_timeout_to_pending_and_leaves_younger_ones_alone(
        self, driver: Driver, other_driver: Driver, django_capture_on_commit_callbacks: Any
    ) -> None:
        # Given one offer 301 s old and one 299 s old, with the default 300 s timeout
        old = assigning_request(driver=driver, started_at=T0 - timedelta(seconds=301))
        young = assigning_request(driver=other_driver, started_at=T0 - timedelta(seconds=299))

        # When the sweep runs at T0
        with time_machine.travel(T0, tick=False), django_capture_on_commit_callbacks(execute=True):
            summary = services.stock_requests_expire_assignments()

        # Then only the old one is back in the pool, with no trace of the offer on the row
        assert summary == {"expired_count": 1}
        old.refresh_from_db()
        assert (old.status, old.target_driver, old.assignment_started_at, old.assignment_mode) == (
            Status.PENDING,
            None,
            None,
            "",
        )
        offer = old.offers.get()
        assert (offer.outcome, offer.resolved_at) == (Outcome.EXPIRED, T0)
        young.refresh_from_db()
        assert young.status == Status.ASSIGNING and young.offers.get().outcome == Outcome.OPEN
        # And the EIC users are to be told about that one offer only
        assert notices() == [(old.pk, driver.pk, offer.pk)]

    def test_an_offer_exactly_at_its_deadline_is_expired(self, driver: Driver) -> None:
        request = assigning_request(driver=driver, started_at=T0 - timedelta(seconds=300))
        with time_machine.travel(T0, tick=False):
            assert services.stock_requests_expire_assignments() == {"expired_count": 1}
        request.refresh_from_db()
        assert request.status == Status.PENDING

    @override_settings(DRIVER_ASSIGNMENT_TIMEOUT_SECONDS=60)
    def test_it_reads_the_timeout_from_the_setting_and_a_parameter_overrides_it(self, driver: Driver) -> None:
        request = assigning_request(driver=driver, started_at=T0 - timedelta(seconds=90), timeout=60)
        with time_machine.travel(T0, tick=False):
            assert services.stock_requests_expire_assignments(timeout_seconds=120) == {"expired_count": 0}
            assert services.stock_requests_expire_assignments() == {"expired_count": 1}
        request.refresh_from_db()
        assert request.status == Status.PENDING

    def test_running_it_twice_expires_each_offer_once_and_notifies_once(
        self, driver: Driver, django_capture_on_commit_callbacks: Any
    ) -> None:
        request = assigning_request(driver=driver, started_at=T0 - timedelta(seconds=400))
        with time_machine.travel(T0, tick=False), django_capture_on_commit_callbacks(execute=True):
            first = services.stock_requests_expire_assignments()
            second = services.stock_requests_expire_assignments()
        assert (first, second) == ({"expired_count": 1}, {"expired_count": 0})
        assert len(notices()) == 1
        assert request.offers.filter(outcome=Outcome.EXPIRED).count() == 1

    def test_it_never_touches_an_accepted_or_cancelled_request(self, driver: Driver, other_driver: Driver) -> None:
        accepted = assigning_request(driver=driver, started_at=T0 - timedelta(seconds=250))
        cancelled = assigning_request(driver=other_driver, started_at=T0 - timedelta(seconds=250))
        with time_machine.travel(T0, tick=False):
            services.offer_accept(driver=driver, stock_request_id=accepted.pk)
            services.stock_request_cancel(stock_request_id=cancelled.pk)
        with time_machine.travel(T0 + timedelta(seconds=3600), tick=False):
            assert services.stock_requests_expire_assignments() == {"expired_count": 0}
        accepted.refresh_from_db()
        cancelled.refresh_from_db()
        assert (accepted.status, accepted.driver_id) == (Status.ASSIGNED, driver.pk)
        assert accepted.offers.get().outcome == Outcome.ACCEPTED
        assert cancelled.status == Status.CANCELLED and cancelled.offers.get().outcome == Outcome.CANCELLED

    def test_a_big_chunk_sends_one_fan_out_message_that_sends_one_notice_per_offer(
        self, driver: Driver, django_capture_on_commit_callbacks: Any
    ) -> None:
        from logistics.tasks import send_assignment_expired_notices

        # Given more expired offers than are sent inline
        requests = [
            assigning_request(driver=driver, started_at=T0 - timedelta(seconds=500))
            for _ in range(services.NOTICES_INLINE_MAX + 1)
        ]
        with time_machine.travel(T0, tick=False), django_capture_on_commit_callbacks(execute=True):
            services.stock_requests_expire_assignments()
        # Then the sweep sent one fan-out message and no notice yet
        [fan_out] = sent_tasks()
        assert fan_out.name == "logistics.send_assignment_expired_notices" and notices() == []
        # When a worker runs it (twice, as a redelivery would: each notice deduplicates when it runs)
        assert send_assignment_expired_notices.apply(args=fan_out.args).result == {"sent": len(requests)}
        # Then there is one notice per expired offer
        expected = sorted((r.pk, driver.pk, r.offers.get().pk) for r in requests)
        assert sorted(notices()) == expected

    def test_it_works_through_several_chunks(self, driver: Driver) -> None:
        for _ in range(7):
            assigning_request(driver=driver, started_at=T0 - timedelta(seconds=500))
        with time_machine.travel(T0, tick=False):
            assert services.stock_requests_expire_assignments(chunk_size=3) == {"expired_count": 7}
        assert not StockRequest.objects.filter(status=Status.ASSIGNING).exists()
        assert AssignmentOffer.objects.filter(outcome=Outcome.EXPIRED).count() == 7


@pytest.mark.django_db
class TestTheOneShotExpiry:
    def test_before_the_deadline_it_changes_nothing_and_looks_again_at_the_deadline(
        self, driver: Driver, django_capture_on_commit_callbacks: Any
    ) -> None:
        request = assigning_request(driver=driver, started_at=T0)
        offer = request.offers.get()
        with (
            time_machine.travel(T0 + timedelta(seconds=299), tick=False),
            django_capture_on_commit_callbacks(execute=True),
        ):
            summary = services.assignment_offer_expire(stock_request_id=request.pk, offer_id=offer.pk)
        assert summary == {"expired_count": 0, "rescheduled": 1}
        request.refresh_from_db()
        assert request.status == Status.ASSIGNING
        [again] = sent_tasks()
        assert again.name == "logistics.expire_assignment" and again.args == [request.pk, offer.pk]
        assert datetime.fromisoformat(again.eta) == offer.expires_at

    def test_at_the_deadline_it_expires_the_offer_once_whichever_path_runs_first(
        self, driver: Driver, django_capture_on_commit_callbacks: Any
    ) -> None:
        request = assigning_request(driver=driver, started_at=T0)
        offer = request.offers.get()
        with (
            time_machine.travel(T0 + timedelta(seconds=300), tick=False),
            django_capture_on_commit_callbacks(execute=True),
        ):
            one_shot = services.assignment_offer_expire(stock_request_id=request.pk, offer_id=offer.pk)
            sweep = services.stock_requests_expire_assignments()
            one_shot_again = services.assignment_offer_expire(stock_request_id=request.pk, offer_id=offer.pk)
        assert one_shot == {"expired_count": 1}
        assert sweep == {"expired_count": 0}
        assert one_shot_again == {"expired_count": 0, "already_closed": 1}
        assert notices() == [(request.pk, driver.pk, offer.pk)]

    def test_it_does_nothing_once_the_offer_was_accepted(self, driver: Driver) -> None:
        request = assigning_request(driver=driver, started_at=T0)
        offer = request.offers.get()
        with time_machine.travel(T0 + timedelta(seconds=299), tick=False):
            services.offer_accept(driver=driver, stock_request_id=request.pk)
        with time_machine.travel(T0 + timedelta(seconds=300), tick=False):
            summary = services.assignment_offer_expire(stock_request_id=request.pk, offer_id=offer.pk)
        assert summary == {"expired_count": 0, "already_closed": 1}
        request.refresh_from_db()
        assert request.status == Status.ASSIGNED

    def test_an_older_offers_check_does_not_expire_the_requests_new_offer(
        self, driver: Driver, other_driver: Driver
    ) -> None:
        # Given an offer that was rejected, then a new offer of the same request to another driver
        request = assigning_request(driver=driver, started_at=T0)
        first = request.offers.get()
        with time_machine.travel(T0 + timedelta(seconds=10), tick=False):
            AssignmentOffer.objects.filter(pk=first.pk).update(outcome=Outcome.REJECTED, resolved_at=T0)
            StockRequest.objects.filter(pk=request.pk).update(
                target_driver=other_driver, assignment_started_at=T0 + timedelta(seconds=10)
            )
            AssignmentOffer.objects.create(
                stock_request=request,
                driver=other_driver,
                mode="MANUAL",
                offered_at=T0 + timedelta(seconds=10),
                expires_at=T0 + timedelta(seconds=310),
            )
        # When the first offer's check fires at its deadline
        with time_machine.travel(T0 + timedelta(seconds=300), tick=False):
            summary = services.assignment_offer_expire(stock_request_id=request.pk, offer_id=first.pk)
        # Then the second offer is still live
        assert summary == {"expired_count": 0, "already_closed": 1}
        request.refresh_from_db()
        assert (request.status, request.target_driver_id) == (Status.ASSIGNING, other_driver.pk)

    def test_a_request_that_no_longer_exists_is_reported_not_retried(self, driver: Driver) -> None:
        assert services.assignment_offer_expire(stock_request_id=987654, offer_id=1) == {
            "expired_count": 0,
            "missing": 1,
        }


@pytest.mark.django_db
class TestAcceptAgainstTheDeadline:
    def test_one_second_before_the_deadline_the_driver_gets_the_trip(self, driver: Driver) -> None:
        request = assigning_request(driver=driver, started_at=T0)
        with time_machine.travel(T0 + timedelta(seconds=299), tick=False):
            accepted = services.offer_accept(driver=driver, stock_request_id=request.pk)
        assert (accepted.status, accepted.driver_id, accepted.assigned_at) == (
            Status.ASSIGNED,
            driver.pk,
            T0 + timedelta(seconds=299),
        )
        assert request.offers.get().outcome == Outcome.ACCEPTED

    def test_at_the_deadline_before_any_expiry_ran_accepting_is_refused_and_nothing_changes(
        self, driver: Driver
    ) -> None:
        request = assigning_request(driver=driver, started_at=T0)
        with (
            time_machine.travel(T0 + timedelta(seconds=300), tick=False),
            pytest.raises(services.Conflict, match="offer expired"),
        ):
            services.offer_accept(driver=driver, stock_request_id=request.pk)
        request.refresh_from_db()
        assert (request.status, request.target_driver_id) == (Status.ASSIGNING, driver.pk)
        assert request.offers.get().outcome == Outcome.OPEN

    def test_after_the_sweep_expired_it_accepting_says_offer_expired(self, driver: Driver) -> None:
        request = assigning_request(driver=driver, started_at=T0)
        with time_machine.travel(T0 + timedelta(seconds=360), tick=False):
            services.stock_requests_expire_assignments()
            with pytest.raises(services.Conflict, match="offer expired"):
                services.offer_accept(driver=driver, stock_request_id=request.pk)

    def test_rejecting_at_the_deadline_is_refused_too_and_leaves_the_offer_to_expire(self, driver: Driver) -> None:
        request = assigning_request(driver=driver, started_at=T0)
        with time_machine.travel(T0 + timedelta(seconds=300), tick=False):
            with pytest.raises(services.Conflict, match="offer expired"):
                services.offer_reject(driver=driver, stock_request_id=request.pk)
            assert services.stock_requests_expire_assignments() == {"expired_count": 1}
        assert request.offers.get().outcome == Outcome.EXPIRED

    def test_a_second_accept_says_offer_no_longer_open(self, driver: Driver) -> None:
        request = assigning_request(driver=driver, started_at=T0)
        with time_machine.travel(T0 + timedelta(seconds=5), tick=False):
            services.offer_accept(driver=driver, stock_request_id=request.pk)
            with pytest.raises(services.Conflict, match="offer no longer open"):
                services.offer_accept(driver=driver, stock_request_id=request.pk)

    def test_another_driver_cannot_tell_the_offer_from_a_missing_request(
        self, driver: Driver, other_driver: Driver
    ) -> None:
        request = assigning_request(driver=driver, started_at=T0)
        with time_machine.travel(T0 + timedelta(seconds=5), tick=False):
            with pytest.raises(services.NotFound) as theirs:
                services.offer_accept(driver=other_driver, stock_request_id=request.pk)
            with pytest.raises(services.NotFound) as missing:
                services.offer_accept(driver=other_driver, stock_request_id=request.pk + 1000)
        assert str(theirs.value).replace(str(request.pk), "N") == str(missing.value).replace(
            str(request.pk + 1000), "N"
        )
        request.refresh_from_db()
        assert request.status == Status.ASSIGNING


@pytest.mark.django_db(transaction=True)
class TestOnPostgresWithRealLocks:
    def test_two_sweeps_at_once_expire_each_offer_exactly_once(self, driver: Driver) -> None:
        # Given 250 expired offers, several chunks' worth
        past = T0 - timedelta(seconds=900)
        requests = [assigning_request(driver=driver, started_at=past) for _ in range(250)]
        assert len(requests) == 250
        results: list[dict[str, int]] = []
        barrier = threading.Barrier(2)

        def sweep() -> None:
            try:
                barrier.wait()
                results.append(services.stock_requests_expire_assignments(chunk_size=20))
            finally:
                connection.close()

        # When two workers sweep at the same moment
        with time_machine.travel(T0, tick=True):
            threads = [threading.Thread(target=sweep) for _ in range(2)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(30)

        # Then between them they expired each offer once, and one notice went out per offer
        assert sum(r["expired_count"] for r in results) == 250
        assert AssignmentOffer.objects.filter(outcome=Outcome.EXPIRED).count() == 250
        sent = notices()
        assert len(sent) == 250 and len({offer for _, _, offer in sent}) == 250

    def test_the_sweep_skips_a_request_an_accept_is_holding_and_the_accept_wins(self, driver: Driver) -> None:
        # Given an offer whose accept has locked the row just before the deadline
        request = assigning_request(driver=driver, started_at=T0 - timedelta(seconds=299))
        locked = threading.Event()
        release = threading.Event()
        outcome: dict[str, Any] = {}

        def slow_accept() -> None:
            try:
                with transaction.atomic():
                    StockRequest.objects.select_for_update().get(pk=request.pk)
                    locked.set()
                    release.wait(10)
                    outcome["request"] = services.offer_accept(driver=driver, stock_request_id=request.pk)
            finally:
                connection.close()

        with time_machine.travel(T0 - timedelta(seconds=0.5), tick=False):
            thread = threading.Thread(target=slow_accept)
            thread.start()
            assert locked.wait(10)
            # When the sweep runs meanwhile at a time past the deadline
            with time_machine.travel(T0 + timedelta(seconds=1), tick=False):
                summary = services.stock_requests_expire_assignments()
            release.set()
            thread.join(10)

        # Then the sweep skipped the locked row instead of waiting or expiring it, and the accept stands
        assert summary == {"expired_count": 0}
        assert outcome["request"].status == Status.ASSIGNED
        with time_machine.travel(T0 + timedelta(seconds=120), tick=False):
            assert services.stock_requests_expire_assignments() == {"expired_count": 0}
