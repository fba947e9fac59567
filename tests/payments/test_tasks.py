"""The payments jobs through the job platform: catalog, shell service, CLI, REST, JobRun."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django_celery_beat.models import PeriodicTask
from pytest_httpserver import HTTPServer
from rest_framework.test import APIClient

from core.catalog import InvalidJobParams, JobCatalog
from core.models import JobRun, User
from core.scheduler import SchedulerService
from payments.models import ExchangeRate, Order
from payments.tasks import cancel_expired_order
from tests.support.factories.payments import make_product, place, stock_of

pytestmark = pytest.mark.django_db

FEED_PATH = "/eurofxref-daily.xml"


def test_the_catalog_declares_both_payments_jobs_with_their_schedules_and_queue() -> None:
    timeouts, rates = JobCatalog.get("payment_timeouts"), JobCatalog.get("exchange_rates")

    assert (timeouts.task, timeouts.schedule_text(), timeouts.queue) == (
        "payments.check_payment_timeouts",
        "hourly at :00 UTC",
        "payments",
    )
    assert (rates.task, rates.schedule_text(), rates.queue) == (
        "payments.update_exchange_rates",
        "daily at 00:00 UTC",
        "payments",
    )
    assert timeouts.param_fields()[0]["name"] == "older_than_days"
    assert timeouts.param_fields()[0]["default"] == 3
    assert rates.param_fields() == []
    assert JobCatalog.for_task("payments.cancel_expired_order") is None


def test_setup_installs_the_two_beat_entries_with_an_expiry_near_their_period() -> None:
    SchedulerService.setup_default_tasks()

    timeouts = PeriodicTask.objects.get(name="payment_timeouts")
    rates = PeriodicTask.objects.get(name="exchange_rates")
    assert (timeouts.crontab.minute, timeouts.crontab.hour, timeouts.expire_seconds) == ("0", "*", 3600)
    assert (rates.crontab.minute, rates.crontab.hour, rates.expire_seconds) == ("0", "0", 86400)


def test_triggering_payment_timeouts_from_the_shell_records_the_summary_in_jobrun(customer: User) -> None:
    tea = make_product(stock=10)
    expired = place(customer, {tea: 4}, age_days=4)

    run = SchedulerService.trigger_manual_update("payment_timeouts", sync=True)

    assert run.status == JobRun.Status.SUCCEEDED, run.error
    assert run.summary is not None
    assert (run.summary["orders_cancelled"], run.summary["units_restored"], run.summary["older_than_days"]) == (
        1,
        4,
        3,
    )
    assert Order.objects.get(pk=expired.pk).status == Order.Status.CANCELLED
    assert stock_of(tea) == [10]
    status = SchedulerService.get_task_status("payment_timeouts")
    assert isinstance(status, dict)
    assert status["last_status"] == "succeeded" and status["last_summary"]["orders_cancelled"] == 1


def test_older_than_days_passed_to_the_trigger_reaches_the_sweep(customer: User) -> None:
    place(customer, {make_product(): 1}, age_days=2)

    run = SchedulerService.trigger_manual_update("payment_timeouts", {"older_than_days": 1}, sync=True)

    assert run.params == {"older_than_days": 1}
    assert run.summary is not None and run.summary["orders_cancelled"] == 1


@pytest.mark.parametrize("days", [0, 366, "three"])
def test_an_out_of_range_timeout_is_refused_before_anything_is_recorded(days: Any) -> None:
    with pytest.raises(InvalidJobParams, match="older_than_days"):
        SchedulerService.trigger_manual_update("payment_timeouts", {"older_than_days": days})
    assert not JobRun.objects.exists()


def test_the_exchange_rates_job_takes_no_parameters_so_no_url_can_be_injected() -> None:
    with pytest.raises(InvalidJobParams, match="takes no parameters"):
        SchedulerService.trigger_manual_update("exchange_rates", {"url": "http://169.254.169.254/"})


def test_the_cli_refuses_a_bad_timeout_with_the_reason(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(CommandError, match="older_than_days"):
        call_command("jobs", "run", "payment_timeouts", "--param", "older_than_days=0", "--sync")
    assert not JobRun.objects.exists()


def test_the_cli_runs_the_sweep_inline(customer: User, capsys: pytest.CaptureFixture[str]) -> None:
    place(customer, {make_product(): 2}, age_days=5)

    call_command("jobs", "run", "payment_timeouts", "--param", "older_than_days=3", "--sync")

    assert "orders_cancelled" in capsys.readouterr().out
    assert Order.objects.get().status == Order.Status.CANCELLED


def test_the_api_answers_400_for_a_bad_timeout_and_200_with_the_summary_inline(
    staff_client: APIClient, customer: User
) -> None:
    place(customer, {make_product(): 1}, age_days=4)

    bad = staff_client.post(
        "/api/v1/admin/jobs/payment_timeouts/trigger/", {"params": {"older_than_days": 0}}, format="json"
    )
    ok = staff_client.post(
        "/api/v1/admin/jobs/payment_timeouts/trigger/",
        {"params": {"older_than_days": 3}, "async": False},
        format="json",
    )

    assert bad.status_code == 400 and "older_than_days" in str(bad.json())
    assert ok.status_code == 200, ok.content
    assert ok.json()["summary"]["orders_cancelled"] == 1


def test_the_api_refuses_anonymous_and_non_staff_callers(anon_client: APIClient, customer_client: APIClient) -> None:
    assert anon_client.post("/api/v1/admin/jobs/payment_timeouts/trigger/", {}, format="json").status_code == 401
    assert customer_client.post("/api/v1/admin/jobs/payment_timeouts/trigger/", {}, format="json").status_code == 403


def test_exchange_rates_job_stores_the_feed_and_records_the_summary(
    httpserver: HTTPServer, settings: Any, ecb_daily_xml: bytes
) -> None:
    settings.EXCHANGE_RATES_URL = httpserver.url_for(FEED_PATH)
    httpserver.expect_request(FEED_PATH).respond_with_data(ecb_daily_xml, content_type="text/xml")

    run = SchedulerService.trigger_manual_update("exchange_rates", sync=True)

    assert run.status == JobRun.Status.SUCCEEDED, run.error
    assert run.summary == {
        "as_of": "2026-11-20",
        "days": 1,
        "currencies": 30,
        "created": 30,
        "updated": 0,
        "unchanged": 0,
    }
    assert ExchangeRate.objects.count() == 30


def test_exchange_rates_job_fails_at_once_with_the_reason_when_the_feed_is_garbage(
    httpserver: HTTPServer, settings: Any
) -> None:
    settings.EXCHANGE_RATES_URL = httpserver.url_for(FEED_PATH)
    httpserver.expect_request(FEED_PATH).respond_with_data("<html>maintenance</html>", content_type="text/html")

    run = SchedulerService.trigger_manual_update("exchange_rates", sync=True)

    assert run.status == JobRun.Status.FAILED
    assert "ExchangeRateFeedError" in run.error and "not a gesmes:Envelope" in run.error
    assert run.attempts == 1
    assert len(httpserver.log) == 1  # not retried
    assert not ExchangeRate.objects.exists()


def test_exchange_rates_job_retries_a_server_error_then_fails_with_the_reason(
    httpserver: HTTPServer, settings: Any
) -> None:
    settings.EXCHANGE_RATES_URL = httpserver.url_for(FEED_PATH)
    httpserver.expect_request(FEED_PATH).respond_with_data("down", status=503)

    run = SchedulerService.trigger_manual_update("exchange_rates", sync=True)

    assert run.status == JobRun.Status.FAILED
    assert "HTTP 503" in run.error
    assert len(httpserver.log) == 4  # the first try and three retries
    assert not ExchangeRate.objects.exists()


def test_exchange_rates_job_recovers_when_a_retry_succeeds(
    httpserver: HTTPServer, settings: Any, ecb_daily_xml: bytes
) -> None:
    settings.EXCHANGE_RATES_URL = httpserver.url_for(FEED_PATH)
    httpserver.expect_ordered_request(FEED_PATH).respond_with_data("down", status=502)
    httpserver.expect_ordered_request(FEED_PATH).respond_with_data(ecb_daily_xml, content_type="text/xml")

    run = SchedulerService.trigger_manual_update("exchange_rates", sync=True)

    assert run.status == JobRun.Status.SUCCEEDED, run.error
    assert ExchangeRate.objects.count() == 30


def test_cancel_expired_order_task_returns_a_summary_for_an_unknown_id_without_retrying() -> None:
    order_id = str(uuid.uuid4())

    result = cancel_expired_order.apply(args=[order_id])

    assert result.successful()
    assert result.result["outcome"] == "not_found" and result.result["orders_cancelled"] == 0


def test_cancel_expired_order_task_cancels_one_order(customer: User) -> None:
    tea = make_product(stock=5)
    order = place(customer, {tea: 5}, age_days=4)

    result = cancel_expired_order.apply(args=[str(order.pk)])

    assert result.result["outcome"] == "cancelled"
    assert stock_of(tea) == [5]


def test_get_task_status_lists_both_payments_jobs() -> None:
    SchedulerService.setup_default_tasks()

    status = SchedulerService.get_task_status()

    assert isinstance(status, list)
    by_key = {s["key"]: s for s in status}
    assert by_key["payment_timeouts"]["schedule"] == "hourly at :00 UTC" and by_key["payment_timeouts"]["enabled"]
    assert by_key["exchange_rates"]["schedule"] == "daily at 00:00 UTC"
    assert by_key["payment_timeouts"]["next_run_at"] is not None
