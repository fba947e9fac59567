"""Every catalog job, run once inline on `make run`'s SQLite configuration, over the demo data.

Each job runs as the shell runs it (`SchedulerService.trigger_manual_update(key, sync=True)`),
committing as a worker would (no test transaction around it), after what `make run` loads.
The outside world is a local server: the exchange-rate feed and the Razorpay stand-in.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pytest
from celery import current_app
from django.core.management import call_command
from django.db.models import Max
from pytest_httpserver import HTTPServer

from core.catalog import JobCatalog
from core.models import JobRun, OutboxIntent
from core.scheduler import SchedulerService
from logistics.models import Driver
from payments.models import Subscription
from tests.support.factories.logistics import assigning_request
from tests.support.factories.payments import FIXTURES
from tests.support.factories.subscriptions import GatewayStandIn

FEED_PATH = "/stats/eurofxref/eurofxref-daily.xml"

# Parameters for jobs whose defaults would not make a quick, meaningful run; every other job runs
# with its defaults, so a new catalog job is covered with no change here.
PARAMS: dict[str, Callable[[], dict[str, Any]]] = {
    "sleep": lambda: {"seconds": 0},
    "subscription_charge_now": lambda: {
        "subscription_ids": list(
            Subscription.objects.filter(status=Subscription.Status.ACTIVE).order_by("pk").values_list("pk", flat=True)
        )
    },
}


def _offer_past_its_deadline() -> None:
    driver = Driver.objects.get(user__username="driver_demo1")
    assigning_request(driver=driver, started_seconds_ago=400, timeout=300)


# Rows a job needs to have work on SQLite that the demo data does not hold, and what it must report.
GIVEN: dict[str, Callable[[], None]] = {"driver_assignment_expiry": _offer_past_its_deadline}
EXPECTED: dict[str, dict[str, Any]] = {"driver_assignment_expiry": {"expired_count": 1}}


@pytest.fixture
def outside_world(httpserver: HTTPServer, settings: Any) -> GatewayStandIn:
    httpserver.expect_request(FEED_PATH).respond_with_data(
        (FIXTURES / "eurofxref-daily.xml").read_bytes(), content_type="text/xml"
    )
    settings.EXCHANGE_RATES_URL = httpserver.url_for(FEED_PATH)
    settings.RAZORPAY_BASE_URL = httpserver.url_for("/")
    settings.RAZORPAY_KEY_ID = "rzp_test_smoke"
    settings.RAZORPAY_KEY_SECRET = "rzp_test_smoke_secret"
    stand_in = GatewayStandIn()
    stand_in.install(httpserver)
    return stand_in


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("key", [job.key for job in JobCatalog.all()])
def test_the_job_runs_to_success_on_sqlite_over_the_demo_data(key: str, outside_world: GatewayStandIn) -> None:
    # Given what `make run` sets up before it starts the processes
    call_command("jobs", "setup", verbosity=0)
    with open(os.devnull, "w") as quiet:
        call_command("load_demo_data", stdout=quiet)
    if key in GIVEN:
        GIVEN[key]()
    params = PARAMS[key]() if key in PARAMS else None
    before = OutboxIntent.objects.aggregate(last=Max("pk"))["last"] or 0

    # When the job runs inline, as `manage.py jobs run KEY --sync` runs it
    run = SchedulerService.trigger_manual_update(key, params, sync=True)

    # Then its run is recorded as succeeded, with the service's summary
    run.refresh_from_db()
    assert run.status == JobRun.Status.SUCCEEDED, f"{key}: {run.status} {run.error}"
    assert run.finished_at is not None and isinstance(run.summary, dict) and run.summary, run.summary
    assert run.summary.items() >= EXPECTED.get(key, {}).items(), run.summary

    # And the work it handed on (outbox intents: messages, per-item charges) runs to success too,
    # as the worker would run it
    for intent in OutboxIntent.objects.filter(pk__gt=before).order_by("pk"):
        result = current_app.tasks[intent.task_name].apply(kwargs=intent.kwargs, task_id=str(intent.task_id))
        assert result.successful(), f"{key} -> {intent.task_name}({intent.kwargs}): {result.state} {result.traceback}"
