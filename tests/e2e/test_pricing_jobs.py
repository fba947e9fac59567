"""Pricing jobs end to end: the seed's `recompute_all_discounts.delay()` on a real worker, beat, the API trigger."""

from __future__ import annotations

from typing import Any

import pytest
from django_celery_beat.models import IntervalSchedule, PeriodicTask
from rest_framework.test import APIClient

from core.models import JobRun, User
from core.scheduler import SchedulerService
from payments.models import Discount, PriceSnapshot
from payments.tasks import recompute_all_discounts, update_price_history
from tests.e2e.conftest import wait_for
from tests.support.factories.pricing import BatchFactory, default_policy

pytestmark = pytest.mark.e2e


@pytest.fixture
def batches(transactional_db: Any) -> list[Any]:
    default_policy()
    return [BatchFactory(days=days) for days in (40, 20, 7, 1)]


def test_recompute_all_discounts_delay_runs_on_a_real_worker_and_records_the_run(
    start_worker: Any, batches: list[Any]
) -> None:
    start_worker(queues="payments")

    result = recompute_all_discounts.delay()
    summary = result.get(timeout=60)

    assert (summary["batches_considered"], summary["discounts_created"]) == (3, 3)
    assert Discount.objects.filter(status="active").count() == 3
    run = JobRun.objects.get(task_id=result.id)
    assert (run.job_key, run.source, run.status) == ("discount_recompute", "shell", "succeeded")
    again = recompute_all_discounts.delay(days_threshold=30).get(timeout=60)
    assert (again["discounts_created"], again["discounts_unchanged"]) == (0, 3)
    history = update_price_history.delay().get(timeout=60)
    assert history["snapshots_created"] == 4 == PriceSnapshot.objects.count()


def test_the_seeds_async_curl_is_picked_up_by_the_worker_and_its_status_url_reports_success(
    start_worker: Any, batches: list[Any]
) -> None:
    staff = User.objects.create_user(username="ops", password="pw-ops-1", is_staff=True)
    client = APIClient()
    client.force_authenticate(staff)
    start_worker(queues="payments")

    accepted = client.post("/api/v1/admin/discounts/trigger-recompute?days_threshold=30&async_task=true")

    assert accepted.status_code == 202
    status_url = accepted.json()["status_url"]

    def done() -> Any:
        body = client.get(status_url).json()
        return body if body["state"] == "SUCCESS" else None

    body = wait_for(done, timeout=60, message="the recompute's status to be SUCCESS")
    assert body["result"]["discounts_created"] == 3
    assert body["job_run"]["source"] == "api"


def test_beat_sends_the_recompute_on_its_schedule(start_worker: Any, start_beat: Any, batches: list[Any]) -> None:
    SchedulerService.setup_default_tasks()
    entry = PeriodicTask.objects.get(name="discount_recompute")
    entry.crontab = None
    entry.interval = IntervalSchedule.objects.create(every=2, period=IntervalSchedule.SECONDS)
    entry.save()  # an operator's change in the admin (the default is hourly at :00); beat picks it up
    PeriodicTask.objects.exclude(name="discount_recompute").update(enabled=False)
    start_worker(queues="payments")
    start_beat()

    wait_for(
        lambda: JobRun.objects.filter(job_key="discount_recompute", source="beat", status="succeeded").exists(),
        timeout=60,
        message="a beat-started discount_recompute run",
    )
    assert Discount.objects.filter(status="active").count() == 3
