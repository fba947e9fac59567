"""Payments jobs end to end: real `celery worker` (and beat) processes, PostgreSQL and Redis."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from django_celery_beat.models import IntervalSchedule, PeriodicTask
from pytest_httpserver import HTTPServer

from core.models import JobRun, User
from core.scheduler import SchedulerService
from payments.models import ExchangeRate, Order, Product
from payments.tasks import cancel_expired_order
from tests.e2e.conftest import wait_for
from tests.support.broker import BrokerProbe
from tests.support.factories.payments import make_product, payment_failed_rows, seed_orders
from tests.support.outbox import intents

pytestmark = pytest.mark.e2e

ECB_XML = (Path(__file__).parents[1] / "payments" / "fixtures" / "eurofxref-daily.xml").read_bytes()


def finished(run: JobRun, timeout: float = 60) -> JobRun:
    wait_for(
        lambda: JobRun.objects.filter(pk=run.pk, status__in=JobRun.FINISHED).exists(),
        timeout=timeout,
        message=f"{run.job_key} run {run.task_id} to finish",
    )
    run.refresh_from_db()
    return run


@pytest.fixture
def shopper(transactional_db: Any) -> User:
    return User.objects.create_user(username="shopper", password="pw-shopper-1", email="shopper@example.com")


def test_payment_timeouts_triggered_from_the_shell_runs_on_the_payments_worker_and_the_customers_are_told(
    start_worker: Any, shopper: User
) -> None:
    products = [make_product(stock=1000) for _ in range(4)]
    expired = seed_orders(shopper, products, count=30, age_days=5)
    fresh = seed_orders(shopper, products, count=5, age_days=1)
    start_worker(queues="payments,notifications,notifications_retry")

    run = finished(SchedulerService.trigger_manual_update("payment_timeouts"))

    assert run.status == JobRun.Status.SUCCEEDED, run.error
    assert run.summary is not None
    assert (run.summary["orders_cancelled"], run.summary["units_restored"], run.summary["transactions_cancelled"]) == (
        30,
        180,
        30,
    )
    assert Order.objects.filter(status="cancelled").count() == 30
    assert set(Order.objects.filter(pk__in=[o.pk for o in fresh]).values_list("status", flat=True)) == {
        "pending_payment"
    }
    status = SchedulerService.get_task_status("payment_timeouts")
    assert isinstance(status, dict) and status["last_status"] == "succeeded"
    # The chunk recorded one payments.notify_payment_failed intent, published at commit; the worker
    # wrote each customer's rows (no phone: SMS skipped), and the notifications queue delivered the emails.
    expected = {
        **{(str(o.pk), "email"): "sent" for o in expired},
        **{(str(o.pk), "sms"): "cancelled" for o in expired},
    }
    wait_for(lambda: payment_failed_rows() == expected, timeout=60, message="the 30 payment_failed emails sent")
    assert intents(published=False) == []


def test_exchange_rates_triggered_from_the_shell_fetches_the_feed_from_the_worker(
    start_worker: Any, httpserver: HTTPServer
) -> None:
    httpserver.expect_request("/eurofxref-daily.xml").respond_with_data(ECB_XML, content_type="text/xml")
    start_worker(queues="payments", EXCHANGE_RATES_URL=httpserver.url_for("/eurofxref-daily.xml"))

    run = finished(SchedulerService.trigger_manual_update("exchange_rates"))
    again = finished(SchedulerService.trigger_manual_update("exchange_rates"))

    assert run.status == JobRun.Status.SUCCEEDED, run.error
    assert run.summary is not None and run.summary["created"] == 30
    assert again.summary is not None and (again.summary["created"], again.summary["unchanged"]) == (0, 30)
    assert ExchangeRate.objects.count() == 30


def test_cancel_expired_order_sent_twice_per_order_to_two_workers_cancels_each_once(
    start_worker: Any, shopper: User
) -> None:
    products = [make_product(stock=1000) for _ in range(3)]
    orders = seed_orders(shopper, products, count=60, age_days=4, units=(2, 1))
    start_worker(queues="payments", concurrency=2, name="w1")
    start_worker(queues="payments", concurrency=2, name="w2")

    results = [cancel_expired_order.delay(str(o.pk)) for o in orders for _ in range(2)]

    outcomes = Counter(r.get(timeout=60)["outcome"] for r in results)
    assert outcomes == {"cancelled": 60, "not_pending": 60}
    assert set(Product.objects.values_list("stock", flat=True)) == {1000}
    # Each cancellation recorded its notify intent for the same workers: one row per order and
    # channel (payment_failed_rows refuses duplicates), each email row published for delivery once.
    expected = {
        **{(str(o.pk), "email"): "pending" for o in orders},
        **{(str(o.pk), "sms"): "cancelled" for o in orders},
    }
    wait_for(lambda: payment_failed_rows() == expected, timeout=60, message="the 60 orders' payment_failed rows")
    announced = Counter(BrokerProbe().delivery_ids())
    assert len(announced) == 60 and set(announced.values()) == {1}


def test_beat_runs_payment_timeouts_on_its_schedule(start_worker: Any, start_beat: Any, shopper: User) -> None:
    seed_orders(shopper, [make_product(stock=100) for _ in range(3)], count=3, age_days=4)
    SchedulerService.setup_default_tasks()
    entry = PeriodicTask.objects.get(name="payment_timeouts")
    entry.crontab = None
    entry.interval = IntervalSchedule.objects.create(every=2, period=IntervalSchedule.SECONDS)
    entry.save()  # an operator's change in the admin; beat picks it up
    PeriodicTask.objects.exclude(name="payment_timeouts").update(enabled=False)
    start_worker(queues="payments")
    start_beat()

    wait_for(
        lambda: JobRun.objects.filter(job_key="payment_timeouts", source="beat", status="succeeded").exists(),
        timeout=60,
        message="a beat-started payment_timeouts run",
    )
    assert Order.objects.filter(status="cancelled").count() == 3
