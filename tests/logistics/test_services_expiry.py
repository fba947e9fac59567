"""The two expiry paths (the 60 s sweep and the one-shot check at the deadline), the EIC notices, and accept racing them.

Every deadline is on the database's clock, which a test cannot move: a test makes time pass
by ageing its rows (`age`) or by making offers that many seconds ago. The work an expiry
causes is an intent in the core outbox, recorded in the expiring transaction; `db` tests
publish it by running the commit hooks (`django_capture_on_commit_callbacks(execute=True)`)
or the relay, and read what reached the broker. The EIC notice is one intent per offer when
the one-shot check expires it, and one intent per chunk (carrying that chunk's offer ids)
when the sweep does.
"""

from __future__ import annotations

import threading
import uuid
from datetime import datetime, timedelta
from typing import Any
from unittest import mock

import pytest
import time_machine
from django.db import OperationalError, connection, transaction
from django.db.models import F
from django.test import override_settings
from django.test.utils import CaptureQueriesContext
from kombu.exceptions import OperationalError as BrokerError

from core.errors import Conflict, NotFound
from core.models import OutboxIntent, User
from core.services.outbox import messages_publish
from logistics import services
from logistics.models import AssignmentOffer, Driver, StockRequest
from logistics.selectors import database_now
from notifications.models import Notification, PushDevice
from tests.e2e.conftest import wait_for
from tests.support.broker import sent_tasks
from tests.support.factories.logistics import DriverFactory, UserFactory, age, assigning_request
from tests.support.outbox import delivery_ids, intents, relay

Status = StockRequest.Status
Outcome = AssignmentOffer.Outcome

EXPIRE = "logistics.expire_assignment"
# The one-shot check records one notice per offer; the sweep records one per chunk it expires.
NOTIFY = "logistics.notify_eic_assignment_expired"
NOTIFY_CHUNK = "logistics.notify_eic_assignments_expired"
Notice = tuple[int, int, int]  # (stock_request_id, driver_id, offer_id)


def _notice(kwargs: dict[str, Any]) -> Notice:
    assert set(kwargs) == {"stock_request_id", "driver_id", "offer_id"}, kwargs
    return (kwargs["stock_request_id"], kwargs["driver_id"], kwargs["offer_id"])


def _offer_ids(kwargs: dict[str, Any]) -> list[int]:
    assert set(kwargs) == {"offer_ids"}, kwargs
    ids = kwargs["offer_ids"]
    assert all(isinstance(pk, int) for pk in ids) and len(set(ids)) == len(ids), ids
    return sorted(ids)


def notice_intents() -> list[Notice]:
    """The one-shot path's EIC notices recorded in the core outbox, published or not."""
    return [_notice(i.kwargs) for i in intents(NOTIFY)]


def notices() -> list[Notice]:
    """The one-shot path's EIC notices that reached the broker's logistics queue."""
    return [_notice(t.kwargs) for t in sent_tasks("logistics", NOTIFY)]


def run_notices() -> list[dict[str, int]]:
    """What a worker does with the one-shot notice messages waiting in the broker."""
    from logistics.tasks import notify_eic_assignment_expired

    return [notify_eic_assignment_expired.apply(kwargs=t.kwargs).result for t in sent_tasks("logistics", NOTIFY)]


def chunk_intents() -> list[list[int]]:
    """The sweep's EIC notices recorded in the core outbox, one per chunk: its offer ids, sorted."""
    return [_offer_ids(i.kwargs) for i in intents(NOTIFY_CHUNK)]


def chunk_notices() -> list[list[int]]:
    """The sweep's EIC notices that reached the broker's logistics queue: each message's offer ids, sorted."""
    return [_offer_ids(t.kwargs) for t in sent_tasks("logistics", NOTIFY_CHUNK)]


def run_chunk_notices() -> list[dict[str, int]]:
    """What a worker does with the sweep's notice messages waiting in the broker."""
    from logistics.tasks import notify_eic_assignments_expired

    return [notify_eic_assignments_expired.apply(kwargs=t.kwargs).result for t in sent_tasks("logistics", NOTIFY_CHUNK)]


def told(notified: int, offers: int = 1, missing: int = 0) -> dict[str, int]:
    """A notice's summary: pushes written, expired offers found, ids unknown or not expired."""
    return {"notified": notified, "offers": offers, "missing": missing}


def flat(chunks: list[list[int]]) -> list[int]:
    return sorted(pk for chunk in chunks for pk in chunk)


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
        assert summary == {"expired_count": 1}
        old.refresh_from_db()
        assert (old.status, old.target_driver, old.assignment_started_at, old.assignment_mode) == (
            Status.PENDING,
            None,
            None,
            "",
        )
        offer = old.offers.get()
        assert offer.outcome == Outcome.EXPIRED and before <= offer.resolved_at <= database_now()
        young.refresh_from_db()
        assert young.status == Status.ASSIGNING and young.offers.get().outcome == Outcome.OPEN
        # And the EIC users are to be told about that one offer only: the chunk's one intent, carrying
        # that offer, under a key of its own, published at commit as one message
        [intent] = intents(NOTIFY_CHUNK)
        assert intent.kwargs == {"offer_ids": [offer.pk]} and intent.not_before is None
        prefix, _, key = intent.dedupe_key.partition(":")
        assert prefix == "offers-expired-notice" and str(uuid.UUID(key)) == key
        assert intent.published_at is not None
        [message] = sent_tasks("logistics", NOTIFY_CHUNK)
        assert (message.kwargs, message.args, message.id) == (intent.kwargs, [], str(intent.task_id))
        # And no per-offer notice: that is the one-shot path's
        assert intents(NOTIFY) == [] and notices() == []

    def test_an_offer_at_its_deadline_is_expired(self, driver: Driver) -> None:
        request = assigning_request(driver=driver, started_seconds_ago=300)
        assert services.stock_requests_expire_assignments() == {"expired_count": 1}
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
        assert chunk_intents() == [[request.offers.get().pk]]

    def test_running_it_twice_expires_once_and_a_replayed_notice_pushes_each_eic_user_once(
        self, driver: Driver, eic_user: User, second_eic: User, django_capture_on_commit_callbacks: Any
    ) -> None:
        # Given an offer past its deadline, when the sweep runs twice
        request = assigning_request(driver=driver, started_seconds_ago=400)
        with django_capture_on_commit_callbacks(execute=True):
            first = services.stock_requests_expire_assignments()
            second = services.stock_requests_expire_assignments()
        assert (first, second) == ({"expired_count": 1}, {"expired_count": 0})
        assert request.offers.filter(outcome=Outcome.EXPIRED).count() == 1
        # Then one notice was recorded and published, for that offer (the second run recorded none)
        assert chunk_intents() == [[request.offers.get().pk]]
        [notice] = sent_tasks("logistics", NOTIFY_CHUNK)

        # When the same committed expiry's notice is delivered twice (a redelivery)
        from logistics.tasks import notify_eic_assignments_expired

        results = [notify_eic_assignments_expired.apply(kwargs=notice.kwargs).result for _ in "ab"]

        # Then each EIC user got one push: the second run found their messages written
        assert results == [told(2), told(0)]
        pushes = expired_pushes()
        assert sorted((p.user_id, p.to_address, p.status) for p in pushes) == sorted(
            [(eic_user.pk, "eic-device-token", "pending"), (second_eic.pk, "eic2-device-token", "pending")]
        )
        # And each push has one delivery intent
        assert len(delivery_ids()) == 2

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
        assert intents(NOTIFY) == intents(NOTIFY_CHUNK) == []

    def test_each_chunk_records_one_notice_of_its_own_offers_in_its_transaction_published_at_its_commit(
        self, driver: Driver, django_capture_on_commit_callbacks: Any
    ) -> None:
        # Given seven expired offers, swept in chunks of three
        requests = [assigning_request(driver=driver, started_seconds_ago=500) for _ in range(7)]
        offers = [r.offers.get().pk for r in requests]
        with (
            mock.patch("core.services.outbox.messages_publish", wraps=messages_publish) as publish,
            django_capture_on_commit_callbacks(execute=True) as hooks,
        ):
            assert services.stock_requests_expire_assignments(chunk_size=3)["expired_count"] == 7
        # Then each chunk recorded one notice carrying exactly the offers it expired: 3, 3, then 1
        assert chunk_intents() == [sorted(offers[:3]), sorted(offers[3:6]), offers[6:]]
        # And each chunk's commit published its own notice, one message each, in the chunks' order
        assert len(hooks) == 3
        recorded = intents(NOTIFY_CHUNK)
        assert [
            [(m.task, _offer_ids(m.kwargs), m.task_id) for m in call.args[0]] for call in publish.call_args_list
        ] == [[(NOTIFY_CHUNK, _offer_ids(i.kwargs), str(i.task_id))] for i in recorded]
        assert chunk_notices() == chunk_intents()
        assert intents(NOTIFY_CHUNK, published=False) == []
        # And every expired offer is in exactly one notice, under three different keys
        assert flat(chunk_intents()) == sorted(offers)
        assert len({i.dedupe_key for i in recorded}) == 3
        assert intents(NOTIFY) == []

    def test_it_pages_through_several_chunks_and_stops_at_its_chunk_budget(self, driver: Driver) -> None:
        for _ in range(7):
            assigning_request(driver=driver, started_seconds_ago=500)
        # Two chunks of 3 at most: six expire now, the last one on the next run
        assert services.stock_requests_expire_assignments(chunk_size=3, max_chunks=2)["expired_count"] == 6
        assert services.stock_requests_expire_assignments(chunk_size=3, max_chunks=2)["expired_count"] == 1
        assert not StockRequest.objects.filter(status=Status.ASSIGNING).exists()
        assert AssignmentOffer.objects.filter(outcome=Outcome.EXPIRED).count() == 7
        # One notice per chunk: two of three offers from the first run, one of one from the second
        assert [len(chunk) for chunk in chunk_intents()] == [3, 3, 1]
        assert flat(chunk_intents()) == sorted(AssignmentOffer.objects.values_list("pk", flat=True))

    def test_by_default_a_run_expires_at_most_fifty_chunks_and_the_next_run_goes_on(self, driver: Driver) -> None:
        # Given 51 expired offers, swept one per chunk with the default chunk budget
        offers = [assigning_request(driver=driver, started_seconds_ago=500).offers.get().pk for _ in range(51)]
        assert services.MAX_CHUNKS_PER_RUN == 50
        # Then a run expires 50 of them, one notice per chunk, and the next run the last one
        assert services.stock_requests_expire_assignments(chunk_size=1) == {"expired_count": 50}
        assert len(chunk_intents()) == 50 and StockRequest.objects.filter(status=Status.ASSIGNING).count() == 1
        assert services.stock_requests_expire_assignments(chunk_size=1) == {"expired_count": 1}
        assert chunk_intents() == [[pk] for pk in sorted(offers)]

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
        assert chunk_notices() == [[recorded.pk]]
        assert run_chunk_notices() == [told(1)]
        [push] = expired_pushes()
        assert push.context == {"driver_name": "Asha", "station_name": orphan.station.name}


@pytest.mark.django_db
class TestLostNotices:
    def test_when_the_broker_refuses_the_publish_at_commit_the_relay_publishes_the_chunks_notice_once(
        self, driver: Driver, other_driver: Driver, eic_user: User, django_capture_on_commit_callbacks: Any
    ) -> None:
        # Given two offers past their deadline, when the sweep expires them while the broker refuses every publish
        requests = [assigning_request(driver=d, started_seconds_ago=400) for d in (driver, other_driver)]
        refused = BrokerError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")
        with (
            mock.patch("core.services.outbox.messages_publish", side_effect=refused) as publish,
            django_capture_on_commit_callbacks(execute=True),
        ):
            assert services.stock_requests_expire_assignments() == {"expired_count": 2}

        # Then the expiry stands, and the chunk's notice is recorded but unpublished, with the broker's error
        assert publish.call_count == 1
        offers = sorted(r.offers.get().pk for r in requests)
        assert AssignmentOffer.objects.filter(pk__in=offers, outcome=Outcome.EXPIRED).count() == 2
        [intent] = intents(NOTIFY_CHUNK)
        assert (intent.published_at, intent.attempts) == (None, 1)
        assert "Connection refused" in intent.last_error
        assert chunk_notices() == [] and expired_pushes() == []
        # And a later sweep neither expires them again nor records a second notice
        assert services.stock_requests_expire_assignments() == {"expired_count": 0}
        assert chunk_intents() == [offers]

        # When the relay runs with the broker back
        assert relay()["published"] == 1

        # Then the notice is on the queue once, and the next relay publishes nothing more
        assert chunk_notices() == [offers]
        assert relay()["published"] == 0
        assert chunk_notices() == [offers]
        intent.refresh_from_db()
        assert intent.published_at is not None and intent.last_error == ""
        # And run (twice, as a redelivery would) it pushes the EIC user once per offer
        assert run_chunk_notices() == [told(2, offers=2)]
        assert run_chunk_notices() == [told(0, offers=2)]
        assert [(p.user_id, p.status) for p in expired_pushes()] == [(eic_user.pk, "pending")] * 2
        assert intents(NOTIFY) == []

    def test_a_relay_that_publishes_a_chunks_notice_twice_still_pushes_each_eic_user_once_per_offer(
        self, driver: Driver, eic_user: User, second_eic: User
    ) -> None:
        # Given a chunk of three expiries whose after-commit publish was lost (a process that died right after its commit)
        requests = [assigning_request(driver=driver, started_seconds_ago=400) for _ in range(3)]
        assert services.stock_requests_expire_assignments() == {"expired_count": 3}
        offers = sorted(r.offers.get().pk for r in requests)
        assert chunk_intents() == [offers] and intents(NOTIFY_CHUNK, published=False) != []
        assert chunk_notices() == []
        # When the relay publishes it, dies before marking the row published, and the next relay publishes it again
        assert relay()["published"] == 1
        OutboxIntent.objects.filter(task_name=NOTIFY_CHUNK).update(published_at=None)
        assert relay()["published"] == 1

        # Then the broker holds the notice twice, under one task id
        first, second = sent_tasks("logistics", NOTIFY_CHUNK)
        assert first.id == second.id and first.kwargs == second.kwargs
        assert chunk_notices() == [offers] * 2
        # And a worker running both pushes each EIC user once per offer: 3 offers x 2 EIC users
        assert run_chunk_notices() == [told(6, offers=3), told(0, offers=3)]
        pushes = expired_pushes()
        assert len(pushes) == 6
        assert sorted(p.dedupe_group for p in pushes) == sorted(
            f"offer-expired:{offer}:{user.pk}" for offer in offers for user in (eic_user, second_eic)
        )

    def test_a_chunks_notice_that_fails_halfway_writes_nothing_and_its_retry_pushes_once(
        self, driver: Driver, other_driver: Driver, eic_user: User
    ) -> None:
        for d in (driver, other_driver):
            assigning_request(driver=d, started_seconds_ago=400)
        services.stock_requests_expire_assignments()
        [offer_ids] = chunk_intents()
        # When the connection is lost after the push rows were inserted, before their delivery intents
        with (
            mock.patch(
                "notifications.services.outbox.deliveries_record", side_effect=OperationalError("connection lost")
            ),
            pytest.raises(OperationalError),
        ):
            services.eic_notify_assignments_expired(offer_ids=offer_ids)
        # Then the rows of the whole chunk went with the transaction: nothing is half-written, so the retry is not blocked
        assert expired_pushes() == [] and delivery_ids() == []
        # When the task's retry runs it, the EIC user's push for each offer is written once, with its delivery intent
        assert services.eic_notify_assignments_expired(offer_ids=offer_ids) == told(2, offers=2)
        pushes = expired_pushes()
        assert sorted(p.context["driver_name"] for p in pushes) == sorted([driver.name, other_driver.name])
        assert sorted(delivery_ids()) == sorted(p.pk for p in pushes)

    def test_a_notice_for_an_offer_that_is_gone_says_so(self) -> None:
        assert services.eic_notify_assignment_expired(stock_request_id=1, driver_id=1, offer_id=424242) == {
            "notified": 0,
            "missing": 1,
        }
        assert services.eic_notify_assignments_expired(offer_ids=[424242]) == told(0, offers=0, missing=1)
        assert services.eic_notify_assignments_expired(offer_ids=[]) == told(0, offers=0)

    def test_a_notice_for_an_offer_that_is_not_expired_writes_nothing(self, driver: Driver, eic_user: User) -> None:
        request = assigning_request(driver=driver, started_seconds_ago=10)
        offer = request.offers.get()
        summary = services.eic_notify_assignment_expired(
            stock_request_id=request.pk, driver_id=driver.pk, offer_id=offer.pk
        )
        assert summary == told(0, offers=0, missing=1)
        assert services.eic_notify_assignments_expired(offer_ids=[offer.pk]) == told(0, offers=0, missing=1)
        assert expired_pushes() == []

    def test_a_chunks_notice_pushes_its_expired_offers_once_each_and_counts_the_rest_as_missing(
        self, driver: Driver, other_driver: Driver, eic_user: User
    ) -> None:
        # Given two expired offers and one still open
        expired = [assigning_request(driver=d, started_seconds_ago=400) for d in (driver, other_driver)]
        services.stock_requests_expire_assignments()
        live = assigning_request(driver=driver, started_seconds_ago=10).offers.get()
        first, second = (r.offers.get() for r in expired)
        # When a notice names them with one twice, the open one, and an unknown id
        summary = services.eic_notify_assignments_expired(offer_ids=[first.pk, second.pk, first.pk, live.pk, 424242])
        # Then each expired offer is pushed once, and the open and unknown ones are counted as missing
        assert summary == told(2, offers=2, missing=2)
        assert sorted(p.dedupe_group for p in expired_pushes()) == sorted(
            f"offer-expired:{o.pk}:{eic_user.pk}" for o in (first, second)
        )

    def test_the_seed_notice_needs_the_offer_to_be_that_requests(
        self, driver: Driver, other_driver: Driver, eic_user: User
    ) -> None:
        # Given two expired offers
        one, two = (assigning_request(driver=d, started_seconds_ago=400) for d in (driver, other_driver))
        services.stock_requests_expire_assignments()
        offer = one.offers.get()
        # A seed message naming the offer with another request writes nothing
        assert services.eic_notify_assignment_expired(
            stock_request_id=two.pk, driver_id=driver.pk, offer_id=offer.pk
        ) == {"notified": 0, "missing": 1}
        assert expired_pushes() == []
        # With its own request it pushes once, through the same service as the sweep's notices
        assert services.eic_notify_assignment_expired(
            stock_request_id=one.pk, driver_id=driver.pk, offer_id=offer.pk
        ) == told(1)
        assert services.eic_notify_assignments_expired(offer_ids=[offer.pk]) == told(0)
        [push] = expired_pushes()
        assert push.dedupe_group == f"offer-expired:{offer.pk}:{eic_user.pk}"


@pytest.mark.django_db
class TestTheOneShotExpiry:
    def test_an_offer_records_one_check_for_its_deadline_published_at_commit_with_that_eta(
        self, eic_user: User, driver: Driver, pending_request: StockRequest, django_capture_on_commit_callbacks: Any
    ) -> None:
        # When an EIC user offers a pending request to a driver
        with django_capture_on_commit_callbacks(execute=True):
            offer = services.stock_request_offer(
                stock_request_id=pending_request.pk, driver_id=driver.pk, offered_by=eic_user
            )

        # Then exactly one expiry check is recorded, keyed by the offer, not before its deadline
        [check] = intents(EXPIRE)
        assert check.kwargs == {"stock_request_id": pending_request.pk, "offer_id": offer.pk}
        assert (check.dedupe_key, check.not_before) == (f"offer-expiry:{offer.pk}", offer.expires_at)
        # And the commit published it to the logistics queue, with the deadline as its ETA
        assert check.published_at is not None
        [message] = sent_tasks("logistics", EXPIRE)
        assert message.kwargs == check.kwargs and message.args == []
        assert datetime.fromisoformat(message.eta) == offer.expires_at
        assert message.id == str(check.task_id)
        # And the relay leaves it alone: it is published
        assert relay()["published"] == 0
        assert len(sent_tasks("logistics", EXPIRE)) == 1

    def test_delivered_before_the_deadline_on_the_databases_clock_it_checks_again_once_the_rest_has_passed(
        self, driver: Driver, django_capture_on_commit_callbacks: Any
    ) -> None:
        # Given an offer with 299 s left on the database's clock (a worker whose clock is ahead ran its check early)
        request = assigning_request(driver=driver, started_seconds_ago=1)
        offer = request.offers.get()
        sent_at = datetime.now().astimezone()
        # When its check is delivered early, twice (a redelivery)
        with django_capture_on_commit_callbacks(execute=True):
            summaries = [services.assignment_offer_expire(stock_request_id=request.pk, offer_id=offer.pk) for _ in "ab"]

        # Then nothing changes
        assert summaries == [{"expired_count": 0, "rescheduled": 1}] * 2
        request.refresh_from_db()
        assert request.status == Status.ASSIGNING and request.offers.get().outcome == Outcome.OPEN
        # And each delivery recorded a new check under a fresh key, for what is left on the database's clock
        checks = intents(EXPIRE)
        assert len(checks) == 2 and len({c.dedupe_key for c in checks}) == 2
        for check in checks:
            assert check.dedupe_key.startswith(f"offer-expiry:{offer.pk}:again:")
            assert check.kwargs == {"stock_request_id": request.pk, "offer_id": offer.pk}
            wait = (check.not_before - sent_at).total_seconds()
            assert 297 <= wait <= 300.5, wait
        # And each was published at commit with its ETA
        sent = sent_tasks("logistics", EXPIRE)
        assert sorted((t.id, datetime.fromisoformat(t.eta)) for t in sent) == sorted(
            (str(c.task_id), c.not_before) for c in checks
        )
        assert all(t.kwargs == {"stock_request_id": request.pk, "offer_id": offer.pk} for t in sent)

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
        assert sweep == {"expired_count": 0}
        assert one_shot_again == {"expired_count": 0, "already_closed": 1}
        request.refresh_from_db()
        assert (request.status, request.target_driver_id) == (Status.PENDING, None)
        # One notice, recorded by the one-shot check in its transaction and published at its commit: the
        # offer's own, keyed by the offer (the sweep, finding nothing to expire, recorded none)
        [intent] = intents(NOTIFY)
        assert intent.dedupe_key == f"offer-expired-notice:{offer.pk}" and intent.not_before is None
        assert intent.kwargs == {"stock_request_id": request.pk, "driver_id": driver.pk, "offer_id": offer.pk}
        [message] = sent_tasks("logistics", NOTIFY)
        assert message.id == str(intent.task_id)
        assert notices() == [(request.pk, driver.pk, offer.pk)]
        assert intents(NOTIFY_CHUNK) == [] and intents(EXPIRE) == []

    def test_the_task_message_runs_the_check(self, driver: Driver) -> None:
        from logistics.tasks import expire_assignment

        request = assigning_request(driver=driver, started_seconds_ago=301)
        offer = request.offers.get()
        result = expire_assignment.apply(kwargs={"stock_request_id": request.pk, "offer_id": offer.pk})
        assert result.successful() and result.result == {"expired_count": 1}
        assert notice_intents() == [(request.pk, driver.pk, offer.pk)]
        assert intents(NOTIFY_CHUNK) == []

    def test_its_notice_pushes_each_eic_user_once_however_often_it_runs(
        self, driver: Driver, eic_user: User, second_eic: User, django_capture_on_commit_callbacks: Any
    ) -> None:
        # Given an offer the one-shot check expired, its notice published at the commit
        request = assigning_request(driver=driver, started_seconds_ago=301)
        offer = request.offers.get()
        with django_capture_on_commit_callbacks(execute=True):
            assert services.assignment_offer_expire(stock_request_id=request.pk, offer_id=offer.pk) == {
                "expired_count": 1
            }
        assert notices() == [(request.pk, driver.pk, offer.pk)]
        # When a worker runs it twice (a redelivery), each EIC user is pushed once
        assert run_notices() == [told(2)]
        assert run_notices() == [told(0)]
        assert sorted(p.dedupe_group for p in expired_pushes()) == sorted(
            f"offer-expired:{offer.pk}:{user.pk}" for user in (eic_user, second_eic)
        )
        [push, _] = expired_pushes()
        assert push.context == {"driver_name": driver.name, "station_name": request.station.name}

    def test_when_the_broker_refuses_its_notice_at_commit_the_relay_publishes_it_once(
        self, driver: Driver, eic_user: User, django_capture_on_commit_callbacks: Any
    ) -> None:
        request = assigning_request(driver=driver, started_seconds_ago=301)
        offer = request.offers.get()
        refused = BrokerError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")
        with (
            mock.patch("core.services.outbox.messages_publish", side_effect=refused),
            django_capture_on_commit_callbacks(execute=True),
        ):
            services.assignment_offer_expire(stock_request_id=request.pk, offer_id=offer.pk)
        # The expiry stands; the offer's notice waits, unpublished, for the relay
        assert request.offers.get().outcome == Outcome.EXPIRED
        [intent] = intents(NOTIFY, published=False)
        assert "Connection refused" in intent.last_error and notices() == []
        assert relay()["published"] == 1 and relay()["published"] == 0
        assert notices() == [(request.pk, driver.pk, offer.pk)]
        assert run_notices() == [told(1)]

    def test_it_does_nothing_once_the_offer_was_accepted(self, driver: Driver) -> None:
        request = assigning_request(driver=driver, started_seconds_ago=290)
        offer = request.offers.get()
        services.offer_accept(driver=driver, stock_request_id=request.pk)
        age(request, 20)
        summary = services.assignment_offer_expire(stock_request_id=request.pk, offer_id=offer.pk)
        assert summary == {"expired_count": 0, "already_closed": 1}
        request.refresh_from_db()
        assert request.status == Status.ASSIGNED
        assert intents() == []

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
        with pytest.raises(Conflict, match="offer expired"):
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
            with pytest.raises(Conflict, match="offer expired"):
                services.offer_accept(driver=other_driver, stock_request_id=late.pk)
            # And the sweep expires exactly the late one
            assert services.stock_requests_expire_assignments()["expired_count"] == 1
        late.refresh_from_db()
        assert late.status == Status.PENDING

    def test_after_the_sweep_expired_it_accepting_says_offer_expired(self, driver: Driver) -> None:
        request = assigning_request(driver=driver, started_seconds_ago=360)
        services.stock_requests_expire_assignments()
        with pytest.raises(Conflict, match="offer expired"):
            services.offer_accept(driver=driver, stock_request_id=request.pk)

    def test_rejecting_at_the_deadline_is_refused_too_and_leaves_the_offer_to_expire(self, driver: Driver) -> None:
        request = assigning_request(driver=driver, started_seconds_ago=300)
        with pytest.raises(Conflict, match="offer expired"):
            services.offer_reject(driver=driver, stock_request_id=request.pk)
        assert services.stock_requests_expire_assignments()["expired_count"] == 1
        assert request.offers.get().outcome == Outcome.EXPIRED

    def test_a_second_accept_says_offer_no_longer_open(self, driver: Driver) -> None:
        request = assigning_request(driver=driver, started_seconds_ago=5)
        services.offer_accept(driver=driver, stock_request_id=request.pk)
        with pytest.raises(Conflict, match="offer no longer open"):
            services.offer_accept(driver=driver, stock_request_id=request.pk)

    def test_another_driver_cannot_tell_the_offer_from_a_missing_request(
        self, driver: Driver, other_driver: Driver
    ) -> None:
        request = assigning_request(driver=driver, started_seconds_ago=5)
        with pytest.raises(NotFound) as theirs:
            services.offer_accept(driver=other_driver, stock_request_id=request.pk)
        with pytest.raises(NotFound) as missing:
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
    def test_two_sweeps_at_once_expire_and_notify_each_offer_exactly_once(self, driver: Driver, eic_user: User) -> None:
        # Given 250 expired offers, several chunks' worth
        requests = [assigning_request(driver=driver, started_seconds_ago=900) for _ in range(250)]
        offers = sorted(AssignmentOffer.objects.filter(stock_request__in=requests).values_list("pk", flat=True))
        assert len(offers) == 250
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

        # Then both sweeps finished without error, between them they expired each offer once, and each
        # chunk recorded one notice of the offers it expired, published at its commit: every offer is
        # in exactly one notice
        assert len(results) == 2
        assert sum(r["expired_count"] for r in results) == 250
        assert AssignmentOffer.objects.filter(outcome=Outcome.EXPIRED).count() == 250
        recorded = chunk_intents()
        assert flat(recorded) == offers and all(1 <= len(chunk) <= 20 for chunk in recorded)
        assert intents(NOTIFY_CHUNK, published=False) == [] and intents(NOTIFY) == []
        assert sorted(chunk_notices()) == sorted(recorded)
        # And running every notice pushes the EIC user once per offer
        summaries = run_chunk_notices()
        assert sum(r["notified"] for r in summaries) == sum(r["offers"] for r in summaries) == 250
        assert sum(r["missing"] for r in summaries) == 0
        assert sorted(p.dedupe_group for p in expired_pushes()) == sorted(
            f"offer-expired:{pk}:{eic_user.pk}" for pk in offers
        )

    def test_each_chunks_notice_is_published_at_that_chunks_commit_before_the_next_chunk_runs(
        self, driver: Driver
    ) -> None:
        # Given seven expired offers, swept in chunks of three, with real commits
        offers = [assigning_request(driver=driver, started_seconds_ago=500).offers.get().pk for _ in range(7)]
        published: list[tuple[list[list[int]], int]] = []

        def publish(messages: Any) -> None:
            # What is being published, and how many offers have committed as expired at that moment
            expired = AssignmentOffer.objects.filter(outcome=Outcome.EXPIRED).count()
            published.append(([_offer_ids(m.kwargs) for m in messages], expired))
            messages_publish(messages)

        with mock.patch("core.services.outbox.messages_publish", side_effect=publish):
            assert services.stock_requests_expire_assignments(chunk_size=3) == {"expired_count": 7}

        # Then each chunk's notice went out right after its commit, one message carrying that chunk's offers
        assert published == [
            ([sorted(offers[:3])], 3),
            ([sorted(offers[3:6])], 6),
            ([offers[6:]], 7),
        ]
        assert chunk_notices() == chunk_intents() == [chunk for [chunk], _ in published]
        assert intents(NOTIFY_CHUNK, published=False) == []

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
            except Conflict as exc:
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
            except Conflict as exc:
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
        # Given the sweep's notice for an expired offer, delivered to two workers at once
        request = assigning_request(driver=driver, started_seconds_ago=400)
        services.stock_requests_expire_assignments()
        offer = request.offers.get()
        [notice] = intents(NOTIFY_CHUNK)
        assert _offer_ids(notice.kwargs) == [offer.pk]
        barrier = threading.Barrier(2)
        results: list[dict[str, int]] = []

        def run() -> None:
            try:
                barrier.wait()
                results.append(services.eic_notify_assignments_expired(**notice.kwargs))
            finally:
                connection.close()

        threads = [threading.Thread(target=run) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        # Both runs finished; between them they wrote the EIC user's push once, with one delivery intent.
        # (Not asserted: which run says it wrote it. notify_many counts a row that lost the race on the
        # unique key, skipped by ON CONFLICT DO NOTHING, as written, so both may say {"notified": 1}.)
        assert len(results) == 2 and all(r["offers"] == 1 and r["missing"] == 0 for r in results), results
        assert all(r["notified"] in (0, 1) for r in results), results
        [push] = expired_pushes()
        assert delivery_ids() == [push.pk]
