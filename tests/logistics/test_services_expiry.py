"""The two expiry paths (the 60 s sweep and the one-shot check at the deadline), the EIC notices, and accept racing them.

Every deadline is on the database's clock, which a test cannot move: a test makes time pass
by ageing its rows (`age`) or by making offers that many seconds ago.
"""

from __future__ import annotations

import threading
from datetime import datetime, timedelta
from typing import Any
from unittest import mock

import pytest
import time_machine
from django.db import connection, transaction
from django.db.models import F
from django.test import override_settings
from django.test.utils import CaptureQueriesContext
from kombu.exceptions import OperationalError as BrokerError

from core.models import User
from logistics import services
from logistics.models import AssignmentOffer, Driver, StockRequest
from logistics.selectors import database_now
from notifications.models import Notification, PushDevice
from tests.e2e.conftest import wait_for
from tests.logistics.broker import sent_tasks
from tests.logistics.factories import DriverFactory, UserFactory, age, assigning_request

Status = StockRequest.Status
Outcome = AssignmentOffer.Outcome


def notices() -> list[tuple[int, int, int]]:
    return [
        (t.args[0], t.args[1], t.kwargs["offer_id"])
        for t in sent_tasks()
        if t.name == "logistics.notify_eic_assignment_expired"
    ]


def run_notices() -> list[dict[str, int]]:
    """What a worker does with the notice messages waiting in the broker."""
    from logistics.tasks import notify_eic_assignment_expired

    return [
        notify_eic_assignment_expired.apply(args=t.args, kwargs=t.kwargs).result
        for t in sent_tasks()
        if t.name == "logistics.notify_eic_assignment_expired"
    ]


def expired_pushes() -> list[Notification]:
    return list(Notification.objects.filter(template_key="driver_assignment_expired").order_by("pk"))


@pytest.fixture
def second_eic(eic_user: User) -> User:
    user = UserFactory(username="eic2")
    user.groups.add(eic_user.groups.get())
    PushDevice.objects.create(user=user, token="eic2-device-token", platform="ios")
    return user


@pytest.mark.django_db
class TestTheSweep:
    def test_it_returns_requests_past_their_deadline_to_pending_and_leaves_younger_ones_alone(
        self, driver: Driver, other_driver: Driver, django_capture_on_commit_callbacks: Any
    ) -> None:
        # Given one offer 301 s old and one 299 s old, both with a 300 s deadline
        old = assigning_request(driver=driver, started_seconds_ago=301)
        young = assigning_request(driver=other_driver, started_seconds_ago=299)

        # When the sweep runs
        before = database_now()
        with django_capture_on_commit_callbacks(execute=True):
            summary = services.stock_requests_expire_assignments()

        # Then only the old one is back in the pool, with no trace of the offer on the row
        assert summary == {"expired_count": 1, "notices_requeued": 0}
        old.refresh_from_db()
        assert (old.status, old.target_driver, old.assignment_started_at, old.assignment_mode) == (
            Status.PENDING,
            None,
            None,
            "",
        )
        offer = old.offers.get()
        assert offer.outcome == Outcome.EXPIRED and before <= offer.resolved_at <= database_now()
        assert offer.eic_notified_at is None
        young.refresh_from_db()
        assert young.status == Status.ASSIGNING and young.offers.get().outcome == Outcome.OPEN
        # And the EIC users are to be told about that one offer only
        assert notices() == [(old.pk, driver.pk, offer.pk)]

    def test_an_offer_at_its_deadline_is_expired(self, driver: Driver) -> None:
        request = assigning_request(driver=driver, started_seconds_ago=300)
        assert services.stock_requests_expire_assignments()["expired_count"] == 1
        request.refresh_from_db()
        assert request.status == Status.PENDING

    @override_settings(DRIVER_ASSIGNMENT_TIMEOUT_SECONDS=60)
    def test_lowering_the_setting_does_not_expire_an_offer_whose_deadline_is_still_ahead(self, driver: Driver) -> None:
        # Given an offer made 90 s ago with the 300 s deadline the driver was shown, then the setting lowered to 60 s
        request = assigning_request(driver=driver, started_seconds_ago=90, timeout=300)
        # When the sweep runs as beat runs it (no parameter), the driver's deadline stands
        assert services.stock_requests_expire_assignments()["expired_count"] == 0
        # And an explicit parameter is an operator's choice by offer age: 120 s leaves it, 60 s expires it
        assert services.stock_requests_expire_assignments(timeout_seconds=120)["expired_count"] == 0
        request.refresh_from_db()
        assert request.status == Status.ASSIGNING
        assert services.stock_requests_expire_assignments(timeout_seconds=60)["expired_count"] == 1
        request.refresh_from_db()
        assert request.status == Status.PENDING

    def test_running_it_twice_expires_once_and_a_replayed_notice_pushes_each_eic_user_once(
        self, driver: Driver, eic_user: User, second_eic: User, django_capture_on_commit_callbacks: Any
    ) -> None:
        # Given an offer past its deadline, when the sweep runs twice
        request = assigning_request(driver=driver, started_seconds_ago=400)
        with django_capture_on_commit_callbacks(execute=True):
            first = services.stock_requests_expire_assignments()
            second = services.stock_requests_expire_assignments()
        assert (first["expired_count"], second["expired_count"]) == (1, 0)
        assert request.offers.filter(outcome=Outcome.EXPIRED).count() == 1
        [notice] = [t for t in sent_tasks() if t.name == "logistics.notify_eic_assignment_expired"]

        # When the same committed expiry's notice is delivered twice (a redelivery)
        from logistics.tasks import notify_eic_assignment_expired

        results = [notify_eic_assignment_expired.apply(args=notice.args, kwargs=notice.kwargs).result for _ in "ab"]

        # Then each EIC user got one push, and the offer is marked notified
        assert results == [{"notified": 2}, {"notified": 0, "already_notified": 1}]
        pushes = expired_pushes()
        assert sorted((p.user_id, p.to_address, p.status) for p in pushes) == sorted(
            [(eic_user.pk, "eic-device-token", "pending"), (second_eic.pk, "eic2-device-token", "pending")]
        )
        assert request.offers.get().eic_notified_at is not None

    def test_it_never_touches_an_accepted_or_cancelled_request(self, driver: Driver, other_driver: Driver) -> None:
        accepted = assigning_request(driver=driver, started_seconds_ago=250)
        cancelled = assigning_request(driver=other_driver, started_seconds_ago=250)
        services.offer_accept(driver=driver, stock_request_id=accepted.pk)
        services.stock_request_cancel(stock_request_id=cancelled.pk)
        # An hour later
        AssignmentOffer.objects.update(expires_at=F("expires_at") - timedelta(hours=1))
        assert services.stock_requests_expire_assignments()["expired_count"] == 0
        assert services.stock_requests_expire_assignments(timeout_seconds=1)["expired_count"] == 0
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
            assigning_request(driver=driver, started_seconds_ago=500) for _ in range(services.NOTICES_INLINE_MAX + 1)
        ]
        with django_capture_on_commit_callbacks(execute=True):
            services.stock_requests_expire_assignments()
        # Then the sweep sent one fan-out message and no notice yet
        [fan_out] = sent_tasks()
        assert fan_out.name == "logistics.send_assignment_expired_notices" and notices() == []
        # When a worker runs it
        assert send_assignment_expired_notices.apply(args=fan_out.args).result == {"sent": len(requests)}
        # Then there is one notice per expired offer
        expected = sorted((r.pk, driver.pk, r.offers.get().pk) for r in requests)
        assert sorted(notices()) == expected

    def test_it_pages_through_several_chunks_and_stops_at_its_chunk_budget(self, driver: Driver) -> None:
        for _ in range(7):
            assigning_request(driver=driver, started_seconds_ago=500)
        # Two chunks of 3 at most: six expire now, the last one on the next run
        assert services.stock_requests_expire_assignments(chunk_size=3, max_chunks=2)["expired_count"] == 6
        assert services.stock_requests_expire_assignments(chunk_size=3, max_chunks=2)["expired_count"] == 1
        assert not StockRequest.objects.filter(status=Status.ASSIGNING).exists()
        assert AssignmentOffer.objects.filter(outcome=Outcome.EXPIRED).count() == 7

    def test_its_queries_grow_with_the_chunks_not_with_the_rows(self, driver: Driver) -> None:
        def queries_to_expire(n: int) -> int:
            for _ in range(n):
                assigning_request(driver=driver, started_seconds_ago=500)
            with CaptureQueriesContext(connection) as ctx:
                assert services.stock_requests_expire_assignments(chunk_size=100)["expired_count"] == n
            return len(ctx.captured_queries)

        assert queries_to_expire(3) == queries_to_expire(40)

    def test_a_request_assigning_without_an_open_offer_is_reset_and_its_driver_named_to_the_eic_users(
        self, driver: Driver, eic_user: User, django_capture_on_commit_callbacks: Any
    ) -> None:
        # Given two ASSIGNING requests written without an offer (outside the services), 400 s and 10 s old
        orphan = assigning_request(driver=driver, started_seconds_ago=400)
        young = assigning_request(driver=driver, started_seconds_ago=10)
        AssignmentOffer.objects.all().delete()

        # When the sweep runs
        with django_capture_on_commit_callbacks(execute=True):
            assert services.stock_requests_expire_assignments()["expired_count"] == 1

        # Then the old one is back in the pool, with the offer it stood for recorded as EXPIRED
        orphan.refresh_from_db()
        assert orphan.status == Status.PENDING
        recorded = orphan.offers.get()
        assert (recorded.driver_id, recorded.outcome) == (driver.pk, Outcome.EXPIRED)
        young.refresh_from_db()
        assert young.status == Status.ASSIGNING
        # And the EIC users are told which driver did not accept
        assert notices() == [(orphan.pk, driver.pk, recorded.pk)]
        assert run_notices() == [{"notified": 1}]
        [push] = expired_pushes()
        assert push.context == {"driver_name": "Asha", "station_name": orphan.station.name}


@pytest.mark.django_db
class TestLostNotices:
    def test_when_the_publish_fails_during_expiry_the_next_sweep_still_notifies_once(
        self, driver: Driver, eic_user: User, django_capture_on_commit_callbacks: Any
    ) -> None:
        from logistics.tasks import notify_eic_assignment_expired

        # Given an offer past its deadline, when the sweep expires it while the broker refuses every publish
        request = assigning_request(driver=driver, started_seconds_ago=400)
        refused = BrokerError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")
        with (
            mock.patch.object(notify_eic_assignment_expired, "apply_async", side_effect=refused) as publish,
            django_capture_on_commit_callbacks(execute=True),
        ):
            assert services.stock_requests_expire_assignments()["expired_count"] == 1
        # Then the expiry stands, but nothing was sent and the offer is unnotified
        assert publish.call_count == 1
        offer = request.offers.get()
        assert (offer.outcome, offer.eic_notified_at) == (Outcome.EXPIRED, None)
        assert notices() == [] and expired_pushes() == []

        # And a sweep within the minute leaves it alone: its notice could still be on its way
        assert services.stock_requests_expire_assignments()["notices_requeued"] == 0

        # When the next sweep runs a minute after the expiry
        age(request, services.NOTICE_GRACE_SECONDS + 1)
        assert services.stock_requests_expire_assignments() == {"expired_count": 0, "notices_requeued": 1}

        # Then the notice is sent again, and run (twice, as a redelivery would) it pushes the EIC user once
        assert notices() == [(request.pk, driver.pk, offer.pk)]
        assert run_notices() == [{"notified": 1}]
        assert run_notices() == [{"notified": 0, "already_notified": 1}]
        [push] = expired_pushes()
        assert (push.user_id, push.status) == (eic_user.pk, "pending")
        # And later sweeps send nothing more
        from tests.logistics.broker import broker

        broker().flushdb()
        assert services.stock_requests_expire_assignments()["notices_requeued"] == 0
        assert notices() == []

    def test_a_notice_that_fails_leaves_the_offer_unnotified_for_the_sweep(
        self, driver: Driver, eic_user: User
    ) -> None:
        request = assigning_request(driver=driver, started_seconds_ago=400)
        services.stock_requests_expire_assignments()
        offer = request.offers.get()
        # When writing the outbox rows fails halfway
        with (
            mock.patch("notifications.services.notify_many", side_effect=RuntimeError("boom")),
            pytest.raises(RuntimeError),
        ):
            services.eic_notify_assignment_expired(stock_request_id=request.pk, driver_id=driver.pk, offer_id=offer.pk)
        # Then the claim was rolled back with it
        offer.refresh_from_db()
        assert offer.eic_notified_at is None and expired_pushes() == []
        age(request, services.NOTICE_GRACE_SECONDS + 1)
        assert services.stock_requests_expire_assignments()["notices_requeued"] == 1

    def test_a_notice_for_an_offer_that_is_gone_says_so(self) -> None:
        assert services.eic_notify_assignment_expired(stock_request_id=1, driver_id=1, offer_id=424242) == {
            "notified": 0,
            "missing": 1,
        }


@pytest.mark.django_db
class TestTheOneShotExpiry:
    def test_delivered_before_the_deadline_on_the_databases_clock_it_waits_out_the_rest(
        self, driver: Driver, django_capture_on_commit_callbacks: Any
    ) -> None:
        # Given an offer with 299 s left on the database's clock (a worker whose clock is ahead ran its check early)
        request = assigning_request(driver=driver, started_seconds_ago=1)
        offer = request.offers.get()
        sent_at = datetime.now().astimezone()
        with django_capture_on_commit_callbacks(execute=True):
            summary = services.assignment_offer_expire(stock_request_id=request.pk, offer_id=offer.pk)
        # Then nothing changes and the check is sent again for what is left, measured on the database's clock
        assert summary == {"expired_count": 0, "rescheduled": 1}
        request.refresh_from_db()
        assert request.status == Status.ASSIGNING
        [again] = sent_tasks()
        assert again.name == "logistics.expire_assignment" and again.args == [request.pk, offer.pk]
        wait = (datetime.fromisoformat(again.eta) - sent_at).total_seconds()
        assert 297 <= wait <= 300.5, wait

    def test_at_the_deadline_it_expires_the_offer_once_whichever_path_runs_first(
        self, driver: Driver, django_capture_on_commit_callbacks: Any
    ) -> None:
        request = assigning_request(driver=driver, started_seconds_ago=300)
        offer = request.offers.get()
        with django_capture_on_commit_callbacks(execute=True):
            one_shot = services.assignment_offer_expire(stock_request_id=request.pk, offer_id=offer.pk)
            sweep = services.stock_requests_expire_assignments()
            one_shot_again = services.assignment_offer_expire(stock_request_id=request.pk, offer_id=offer.pk)
        assert one_shot == {"expired_count": 1}
        assert sweep["expired_count"] == 0
        assert one_shot_again == {"expired_count": 0, "already_closed": 1}
        assert notices() == [(request.pk, driver.pk, offer.pk)]

    def test_it_does_nothing_once_the_offer_was_accepted(self, driver: Driver) -> None:
        request = assigning_request(driver=driver, started_seconds_ago=290)
        offer = request.offers.get()
        services.offer_accept(driver=driver, stock_request_id=request.pk)
        age(request, 20)
        summary = services.assignment_offer_expire(stock_request_id=request.pk, offer_id=offer.pk)
        assert summary == {"expired_count": 0, "already_closed": 1}
        request.refresh_from_db()
        assert request.status == Status.ASSIGNED

    def test_an_older_offers_check_does_not_expire_the_requests_new_offer(
        self, driver: Driver, other_driver: Driver
    ) -> None:
        # Given an offer that was rejected, then a new offer of the same request to another driver
        request = assigning_request(driver=driver, started_seconds_ago=300)
        first = request.offers.get()
        AssignmentOffer.objects.filter(pk=first.pk).update(outcome=Outcome.REJECTED, resolved_at=database_now())
        now = database_now()
        StockRequest.objects.filter(pk=request.pk).update(target_driver=other_driver, assignment_started_at=now)
        AssignmentOffer.objects.create(
            stock_request=request,
            driver=other_driver,
            mode="MANUAL",
            offered_at=now,
            expires_at=now + timedelta(seconds=300),
        )
        # When the first offer's check fires at its deadline
        summary = services.assignment_offer_expire(stock_request_id=request.pk, offer_id=first.pk)
        # Then the second offer is still live
        assert summary == {"expired_count": 0, "already_closed": 1}
        request.refresh_from_db()
        assert (request.status, request.target_driver_id) == (Status.ASSIGNING, other_driver.pk)

    def test_a_request_that_no_longer_exists_is_reported_not_retried(self) -> None:
        assert services.assignment_offer_expire(stock_request_id=987654, offer_id=1) == {
            "expired_count": 0,
            "missing": 1,
        }


@pytest.mark.django_db
class TestAcceptAgainstTheDeadline:
    def test_before_the_deadline_the_driver_gets_the_trip(self, driver: Driver) -> None:
        request = assigning_request(driver=driver, started_seconds_ago=290)
        before = database_now()
        accepted = services.offer_accept(driver=driver, stock_request_id=request.pk)
        assert (accepted.status, accepted.driver_id) == (Status.ASSIGNED, driver.pk)
        assert before <= accepted.assigned_at <= database_now()
        assert request.offers.get().outcome == Outcome.ACCEPTED

    def test_at_the_deadline_before_any_expiry_ran_accepting_is_refused_and_nothing_changes(
        self, driver: Driver
    ) -> None:
        request = assigning_request(driver=driver, started_seconds_ago=300)
        with pytest.raises(services.Conflict, match="offer expired"):
            services.offer_accept(driver=driver, stock_request_id=request.pk)
        request.refresh_from_db()
        assert (request.status, request.target_driver_id) == (Status.ASSIGNING, driver.pk)
        assert request.offers.get().outcome == Outcome.OPEN

    @pytest.mark.parametrize("skew", [timedelta(hours=-1), timedelta(hours=1)])
    def test_the_deadline_is_on_the_databases_clock_whatever_this_processs_clock_says(
        self, driver: Driver, other_driver: Driver, skew: timedelta
    ) -> None:
        # Given one offer 10 s before its deadline and one 10 s after, on the database's clock
        live = assigning_request(driver=driver, started_seconds_ago=290)
        late = assigning_request(driver=other_driver, started_seconds_ago=310)
        # When this process's clock is an hour behind or ahead
        with time_machine.travel(datetime.now().astimezone() + skew, tick=True):
            assert services.offer_accept(driver=driver, stock_request_id=live.pk).status == Status.ASSIGNED
            with pytest.raises(services.Conflict, match="offer expired"):
                services.offer_accept(driver=other_driver, stock_request_id=late.pk)
            # And the sweep expires exactly the late one
            assert services.stock_requests_expire_assignments()["expired_count"] == 1
        late.refresh_from_db()
        assert late.status == Status.PENDING

    def test_after_the_sweep_expired_it_accepting_says_offer_expired(self, driver: Driver) -> None:
        request = assigning_request(driver=driver, started_seconds_ago=360)
        services.stock_requests_expire_assignments()
        with pytest.raises(services.Conflict, match="offer expired"):
            services.offer_accept(driver=driver, stock_request_id=request.pk)

    def test_rejecting_at_the_deadline_is_refused_too_and_leaves_the_offer_to_expire(self, driver: Driver) -> None:
        request = assigning_request(driver=driver, started_seconds_ago=300)
        with pytest.raises(services.Conflict, match="offer expired"):
            services.offer_reject(driver=driver, stock_request_id=request.pk)
        assert services.stock_requests_expire_assignments()["expired_count"] == 1
        assert request.offers.get().outcome == Outcome.EXPIRED

    def test_a_second_accept_says_offer_no_longer_open(self, driver: Driver) -> None:
        request = assigning_request(driver=driver, started_seconds_ago=5)
        services.offer_accept(driver=driver, stock_request_id=request.pk)
        with pytest.raises(services.Conflict, match="offer no longer open"):
            services.offer_accept(driver=driver, stock_request_id=request.pk)

    def test_another_driver_cannot_tell_the_offer_from_a_missing_request(
        self, driver: Driver, other_driver: Driver
    ) -> None:
        request = assigning_request(driver=driver, started_seconds_ago=5)
        with pytest.raises(services.NotFound) as theirs:
            services.offer_accept(driver=other_driver, stock_request_id=request.pk)
        with pytest.raises(services.NotFound) as missing:
            services.offer_accept(driver=other_driver, stock_request_id=request.pk + 1000)
        assert str(theirs.value).replace(str(request.pk), "N") == str(missing.value).replace(
            str(request.pk + 1000), "N"
        )
        request.refresh_from_db()
        assert request.status == Status.ASSIGNING


def waiting_on_a_lock() -> bool:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        return bool(cursor.fetchone()[0])


@pytest.mark.django_db(transaction=True)
class TestOnPostgresWithRealLocks:
    def test_two_sweeps_at_once_expire_each_offer_exactly_once(self, driver: Driver) -> None:
        # Given 250 expired offers, several chunks' worth
        requests = [assigning_request(driver=driver, started_seconds_ago=900) for _ in range(250)]
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
        threads = [threading.Thread(target=sweep) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)

        # Then both sweeps finished without error, between them they expired each offer
        # once, and one notice went out per offer
        assert len(results) == 2
        assert sum(r["expired_count"] for r in results) == 250
        assert AssignmentOffer.objects.filter(outcome=Outcome.EXPIRED).count() == 250
        sent = notices()
        assert len(sent) == 250 and len({offer for _, _, offer in sent}) == 250

    def test_the_sweep_skips_a_request_an_accept_is_holding_pages_past_it_and_the_accept_wins(
        self, driver: Driver, other_driver: Driver
    ) -> None:
        # Given three offered requests; an accept has locked the middle one, 10 s before its deadline
        first = assigning_request(driver=other_driver, started_seconds_ago=400)
        held = assigning_request(driver=driver, started_seconds_ago=290)
        last = assigning_request(driver=other_driver, started_seconds_ago=400)
        locked, release = threading.Event(), threading.Event()
        outcome: dict[str, Any] = {}

        def slow_accept() -> None:
            try:
                with transaction.atomic():
                    StockRequest.objects.select_for_update().get(pk=held.pk)
                    locked.set()
                    release.wait(10)
                    outcome["request"] = services.offer_accept(driver=driver, stock_request_id=held.pk)
            finally:
                connection.close()

        thread = threading.Thread(target=slow_accept)
        thread.start()
        assert locked.wait(10)
        # When an operator's sweep (every request offered 60 s ago or more) runs meanwhile, one row per chunk
        summary = services.stock_requests_expire_assignments(timeout_seconds=60, chunk_size=1)
        release.set()
        thread.join(10)

        # Then it skipped the held row instead of waiting or expiring it, and went on to the next one
        assert summary["expired_count"] == 2
        for request, status in ((first, Status.PENDING), (last, Status.PENDING)):
            request.refresh_from_db()
            assert request.status == status
        assert outcome["request"].status == Status.ASSIGNED

    def test_an_accept_that_waited_on_the_lock_past_the_deadline_is_refused(self, driver: Driver) -> None:
        # Given an offer 10 s before its deadline whose row another transaction holds
        request = assigning_request(driver=driver, started_seconds_ago=290)
        locked, release = threading.Event(), threading.Event()
        outcome: dict[str, Any] = {}

        def holder() -> None:
            try:
                with transaction.atomic():
                    StockRequest.objects.select_for_update().get(pk=request.pk)
                    locked.set()
                    release.wait(10)
            finally:
                connection.close()

        def accept() -> None:
            try:
                outcome["request"] = services.offer_accept(driver=driver, stock_request_id=request.pk)
            except services.Conflict as exc:
                outcome["refused"] = str(exc)
            finally:
                connection.close()

        threads = [threading.Thread(target=holder), threading.Thread(target=accept)]
        threads[0].start()
        assert locked.wait(10)
        # When the driver accepts, waits on the lock, and the deadline passes meanwhile
        threads[1].start()
        wait_for(waiting_on_a_lock, timeout=10, message="the accept waiting on the row lock")
        age(request, 20)
        release.set()
        for t in threads:
            t.join(10)

        # Then the deadline is checked after the lock: the accept is refused
        assert outcome == {"refused": "offer expired"}
        request.refresh_from_db()
        assert request.status == Status.ASSIGNING

    def test_an_offer_to_a_driver_being_deactivated_waits_for_it_and_is_refused(
        self, eic_user: User, pending_request: StockRequest
    ) -> None:
        driver = DriverFactory()
        deactivating, release = threading.Event(), threading.Event()
        outcome: dict[str, Any] = {}

        def deactivate() -> None:
            try:
                with transaction.atomic():
                    Driver.objects.filter(pk=driver.pk).update(active=False)
                    deactivating.set()
                    release.wait(10)
            finally:
                connection.close()

        def offer() -> None:
            try:
                outcome["offer"] = services.stock_request_offer(
                    stock_request_id=pending_request.pk, driver_id=driver.pk
                )
            except services.Conflict as exc:
                outcome["refused"] = str(exc)
            finally:
                connection.close()

        # Given an admin deactivating the driver, not yet committed
        threads = [threading.Thread(target=deactivate), threading.Thread(target=offer)]
        threads[0].start()
        assert deactivating.wait(10)
        # When an EIC user offers them a trip meanwhile, and the deactivation then commits
        threads[1].start()
        wait_for(lambda: waiting_on_a_lock() or outcome, timeout=10, message="the offer to wait or finish")
        release.set()
        for t in threads:
            t.join(10)

        # Then the offer saw the committed deactivation and was refused
        assert "inactive" in outcome.get("refused", ""), outcome
        pending_request.refresh_from_db()
        assert pending_request.status == Status.PENDING and not AssignmentOffer.objects.exists()

    def test_two_workers_running_the_same_notice_at_once_push_each_eic_user_once(
        self, driver: Driver, eic_user: User
    ) -> None:
        request = assigning_request(driver=driver, started_seconds_ago=400)
        services.stock_requests_expire_assignments()
        offer = request.offers.get()
        barrier = threading.Barrier(2)
        results: list[dict[str, int]] = []

        def run() -> None:
            try:
                barrier.wait()
                results.append(
                    services.eic_notify_assignment_expired(
                        stock_request_id=request.pk, driver_id=driver.pk, offer_id=offer.pk
                    )
                )
            finally:
                connection.close()

        threads = [threading.Thread(target=run) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        assert sorted(r["notified"] for r in results) == [0, 1]
        assert len(expired_pushes()) == 1
