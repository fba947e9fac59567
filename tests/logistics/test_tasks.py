"""The catalog job and the task shells: parameters, JobRun summaries, and the tasks' names and queues."""

from __future__ import annotations

from datetime import datetime

import pytest
from django.test import override_settings

from core.catalog import InvalidJobParams, JobCatalog, queue_for_task
from core.models import JobRun, User
from core.scheduler import SchedulerService
from logistics import services
from logistics.models import Driver, StockRequest
from tests.support.broker import sent_tasks
from tests.support.factories.logistics import assigning_request
from tests.support.outbox import intent_kwargs, intents, relay

EXPIRE = "logistics.expire_assignment"
NOTIFY = "logistics.notify_eic_assignment_expired"
NOTIFY_CHUNK = "logistics.notify_eic_assignments_expired"


def test_the_expiry_job_is_declared_once_with_its_schedule_parameter_and_queue() -> None:
    job = JobCatalog.get("driver_assignment_expiry")
    assert job.task == "logistics.check_expired_driver_assignments"
    assert job.schedule_text() == "every minute"
    assert job.queue == "logistics"
    assert job.expire_seconds is not None and 30 <= job.expire_seconds <= 60
    assert job.lease_seconds <= 60
    [param] = job.param_fields()
    assert (param["name"], param["type"], param["default"]) == ("timeout_seconds", "integer", 300)


def test_the_one_shot_and_notice_tasks_are_registered_on_the_logistics_queue_but_not_catalog_jobs() -> None:
    from config.celery import app

    for name in (EXPIRE, NOTIFY, NOTIFY_CHUNK):
        assert name in app.tasks
        assert JobCatalog.for_task(name) is None
        assert queue_for_task(name) == "logistics"


@pytest.mark.parametrize(
    "bad", [{"timeout_seconds": 0}, {"timeout_seconds": 86401}, {"timeout_seconds": "x"}, {"other": 1}]
)
def test_bad_parameters_are_refused_before_anything_runs(bad: dict[str, object]) -> None:
    with pytest.raises(InvalidJobParams):
        JobCatalog.get("driver_assignment_expiry").validate_params(bad)


@pytest.mark.django_db
@override_settings(DRIVER_ASSIGNMENT_TIMEOUT_SECONDS=120)
def test_a_manual_run_records_the_expired_count_in_its_job_run(driver: Driver, other_driver: Driver) -> None:
    # Given, 200 s ago, one offer with a 120 s deadline and one with a 300 s deadline (made before the setting changed)
    due = assigning_request(driver=driver, started_seconds_ago=200, timeout=120)
    ahead = assigning_request(driver=other_driver, started_seconds_ago=200, timeout=300)

    # When the job runs without parameters, then with a 60 s timeout
    first = SchedulerService.trigger_manual_update("driver_assignment_expiry", sync=True, source="cli")
    second = SchedulerService.trigger_manual_update(
        "driver_assignment_expiry", {"timeout_seconds": 60}, sync=True, source="cli"
    )

    # Then each run says what it expired: each offer's own deadline first, every offer 60 s old second
    assert (first.status, first.summary, first.params) == (
        JobRun.Status.SUCCEEDED,
        {"expired_count": 1},
        {},
    )
    assert (second.status, second.summary, second.params) == (
        JobRun.Status.SUCCEEDED,
        {"expired_count": 1},
        {"timeout_seconds": 60},
    )
    assert due.offers.get().outcome == ahead.offers.get().outcome == "EXPIRED"
    assert not StockRequest.objects.filter(status=StockRequest.Status.ASSIGNING).exists()
    # And each run recorded one EIC notice, for its one chunk, carrying the offer it expired
    assert intent_kwargs(NOTIFY_CHUNK) == [{"offer_ids": [due.offers.get().pk]}, {"offer_ids": [ahead.offers.get().pk]}]
    assert intents(NOTIFY) == []


@pytest.mark.django_db
def test_the_notice_task_for_a_request_that_is_gone_says_so_instead_of_retrying() -> None:
    from logistics.tasks import notify_eic_assignment_expired

    result = notify_eic_assignment_expired.apply(kwargs={"stock_request_id": 424242, "driver_id": 1, "offer_id": 1})
    assert result.successful()
    assert result.result == {"notified": 0, "missing": 1}


@pytest.mark.django_db
def test_the_notice_task_needs_the_offer_id() -> None:
    from logistics.tasks import notify_eic_assignment_expired

    # A message of the old shape (positional ids, no offer) is refused, not guessed at
    result = notify_eic_assignment_expired.apply(args=[424242, 1])
    assert result.failed() and isinstance(result.result, TypeError)


@pytest.mark.django_db
def test_the_sweeps_notice_task_reports_offers_it_cannot_find_and_needs_their_ids() -> None:
    from logistics.tasks import notify_eic_assignments_expired

    result = notify_eic_assignments_expired.apply(kwargs={"offer_ids": [424242, 424243]})
    assert result.successful()
    assert result.result == {"notified": 0, "offers": 0, "missing": 2}
    # A message of another shape is refused, not guessed at
    refused = notify_eic_assignments_expired.apply(kwargs={"offer_id": 424242})
    assert refused.failed() and isinstance(refused.result, TypeError)


@pytest.mark.django_db
def test_both_notice_tasks_push_the_eic_user_once_per_offer(eic_user: User, driver: Driver) -> None:
    from logistics.tasks import notify_eic_assignment_expired, notify_eic_assignments_expired
    from notifications.models import Notification

    # Given an offer the one-shot check expired and two the sweep expired
    one_shot = assigning_request(driver=driver, started_seconds_ago=400)
    one_shot_offer = one_shot.offers.get()
    assert services.assignment_offer_expire(stock_request_id=one_shot.pk, offer_id=one_shot_offer.pk) == {
        "expired_count": 1
    }
    swept = [assigning_request(driver=driver, started_seconds_ago=400) for _ in range(2)]
    assert services.stock_requests_expire_assignments() == {"expired_count": 2}
    [seed] = intent_kwargs(NOTIFY)
    [chunk] = intent_kwargs(NOTIFY_CHUNK)
    assert seed["offer_id"] == one_shot_offer.pk
    assert sorted(chunk["offer_ids"]) == sorted(r.offers.get().pk for r in swept)

    # When each notice task runs its recorded arguments twice
    seed_runs = [notify_eic_assignment_expired.apply(kwargs=seed).result for _ in "ab"]
    chunk_runs = [notify_eic_assignments_expired.apply(kwargs=chunk).result for _ in "ab"]

    # Then each summary says what it wrote, and each offer was pushed to the EIC user once
    assert seed_runs == [{"notified": 1, "offers": 1, "missing": 0}, {"notified": 0, "offers": 1, "missing": 0}]
    assert chunk_runs == [{"notified": 2, "offers": 2, "missing": 0}, {"notified": 0, "offers": 2, "missing": 0}]
    pushed = Notification.objects.filter(template_key="driver_assignment_expired", user=eic_user)
    assert sorted(pushed.values_list("dedupe_group", flat=True)) == sorted(
        f"offer-expired:{pk}:{eic_user.pk}" for pk in [one_shot_offer.pk, *chunk["offer_ids"]]
    )


@pytest.mark.django_db
def test_an_offers_check_whose_publish_was_lost_is_published_by_the_relay_with_its_deadline(
    eic_user: User, driver: Driver, pending_request: StockRequest
) -> None:
    # Given an offer whose commit hook never ran (the web process died right after the commit)
    offer = services.stock_request_offer(stock_request_id=pending_request.pk, driver_id=driver.pk, offered_by=eic_user)
    [check] = intents(EXPIRE, published=False)
    assert sent_tasks("logistics") == []

    # When the outbox relay job runs
    run = SchedulerService.trigger_manual_update("outbox_relay", sync=True, source="cli")

    # Then it published the check, for the offer's deadline, once (and the delivery of the driver's push)
    assert (run.status, run.summary["published"], run.summary["waiting"]) == (JobRun.Status.SUCCEEDED, 2, 0)
    [message] = sent_tasks("logistics", EXPIRE)
    assert message.kwargs == {"stock_request_id": pending_request.pk, "offer_id": offer.pk}
    assert datetime.fromisoformat(message.eta) == offer.expires_at
    assert message.id == str(check.task_id)
    assert intents(EXPIRE, published=False) == []
    assert relay()["published"] == 0 and len(sent_tasks("logistics", EXPIRE)) == 1
