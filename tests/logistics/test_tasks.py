"""The catalog job and the task shells: parameters, JobRun summaries, and the tasks' names and queues."""

from __future__ import annotations

from datetime import datetime
from types import SimpleNamespace

import pytest
from django.test import override_settings

from core.catalog import InvalidJobParams, JobCatalog
from core.models import JobRun
from core.scheduler import SchedulerService
from logistics import services
from logistics.models import Driver, StockRequest
from tests.logistics.broker import sent_tasks
from tests.logistics.factories import assigning_request


def test_the_expiry_job_is_declared_once_with_its_schedule_parameter_and_queue() -> None:
    job = JobCatalog.get("driver_assignment_expiry")
    assert job.task == "logistics.check_expired_driver_assignments"
    assert job.schedule_text() == "every minute"
    assert job.queue == "logistics"
    assert job.expire_seconds is not None and 30 <= job.expire_seconds <= 60
    assert job.lease_seconds <= 60
    [param] = job.param_fields()
    assert (param["name"], param["type"], param["default"]) == ("timeout_seconds", "integer", 300)


def test_the_one_shot_and_notice_tasks_are_registered_but_not_catalog_jobs() -> None:
    from config.celery import app

    for name in ("logistics.expire_assignment", "logistics.notify_eic_assignment_expired"):
        assert name in app.tasks
        assert JobCatalog.for_task(name) is None


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
        {"expired_count": 1, "notices_requeued": 0},
        {},
    )
    assert (second.status, second.summary, second.params) == (
        JobRun.Status.SUCCEEDED,
        {"expired_count": 1, "notices_requeued": 0},
        {"timeout_seconds": 60},
    )
    assert due.offers.get().outcome == ahead.offers.get().outcome == "EXPIRED"
    assert not StockRequest.objects.filter(status=StockRequest.Status.ASSIGNING).exists()


@pytest.mark.django_db
def test_the_notice_task_for_a_request_that_is_gone_says_so_instead_of_retrying() -> None:
    from logistics.tasks import notify_eic_assignment_expired

    result = notify_eic_assignment_expired.apply(args=[424242, 1])
    assert result.successful()
    assert result.result == {"notified": 0, "missing": 1}


class Consumer:
    """What `worker_ready` sends: the worker's consumer, whose app knows the queues it consumes."""

    def __init__(self, *queues: str) -> None:
        self.app = SimpleNamespace(amqp=SimpleNamespace(queues=SimpleNamespace(consume_from=dict.fromkeys(queues))))


@pytest.mark.django_db
def test_a_logistics_worker_starting_resends_the_checks_of_open_offers_still_before_their_deadline(
    driver: Driver, other_driver: Driver
) -> None:
    from celery.signals import worker_ready

    from logistics.tasks import resend_expiries_on_worker_ready

    # Given an open offer with 200 s left, one past its deadline (the sweep's), and an accepted one
    live = assigning_request(driver=driver, started_seconds_ago=100)
    assigning_request(driver=other_driver, started_seconds_ago=400)
    accepted = assigning_request(driver=other_driver, started_seconds_ago=10)
    services.offer_accept(driver=other_driver, stock_request_id=accepted.pk)

    # When a worker that does not consume the logistics queue starts, nothing is sent
    worker_ready.send(sender=Consumer("payments", "default"))
    assert sent_tasks() == []

    # When a logistics worker starts
    replies = worker_ready.send(sender=Consumer("logistics", "notifications"))

    # Then the live offer's check is sent again, for its deadline; nothing else
    assert (resend_expiries_on_worker_ready, {"resent": 1}) in replies
    offer = live.offers.get()
    [check] = sent_tasks()
    assert (check.name, check.args) == ("logistics.expire_assignment", [live.pk, offer.pk])
    assert datetime.fromisoformat(check.eta) == offer.expires_at
