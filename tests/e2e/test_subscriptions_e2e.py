"""Subscriptions end to end: real `celery worker` processes, PostgreSQL, Redis, and the gateway on a local server."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Iterator
from datetime import timedelta
from itertools import count
from pathlib import Path
from typing import Any

import pytest
from django.db import connection
from django.db.models import Sum
from pytest_httpserver import HTTPServer

from core.models import JobRun, OutboxIntent
from maintenance.tasks import cleanup_expired_carts
from payments.models import Cart, CartItem, Order, Product, Subscription, SubscriptionCharge
from payments.models.subscriptions import utc_today
from payments.services.subscriptions import subscriptions_queue_due
from payments.tasks import process_due_subscriptions, process_single_subscription, send_subscription_renewal_reminders
from tests.e2e.conftest import CeleryProcess, wait_for
from tests.support.factories.payments import make_product
from tests.support.factories.subscriptions import (
    GatewayStandIn,
    make_plan,
    make_subscriber,
    make_subscription,
    seed_due_subscriptions,
)

pytestmark = pytest.mark.e2e

SUBSCRIPTIONS = 2000
CHARGE = "payments.process_single_subscription"


@pytest.fixture
def gateway_server() -> Iterator[HTTPServer]:
    # Threaded: several worker processes call it at once, and one request may be held on purpose.
    server = HTTPServer(host="127.0.0.1", port=0, threaded=True)
    server.start()
    yield server
    server.clear()
    server.stop()


def gateway_env(server: HTTPServer) -> dict[str, str]:
    return {
        "RAZORPAY_BASE_URL": server.url_for("/").rstrip("/"),
        "RAZORPAY_KEY_ID": "rzp_test_key",
        "RAZORPAY_KEY_SECRET": "rzp_test_secret",
        "RAZORPAY_TIMEOUT_SECONDS": "5",
    }


def pool_children(worker: CeleryProcess) -> list[int]:
    """The PIDs of the worker's prefork pool processes (their parent is the worker's main process)."""
    children = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid ...: comm may hold spaces, so split after its closing parenthesis.
        if int(stat.rsplit(")", 1)[1].split()[1]) == worker.pid:
            children.append(int(entry.name))
    return children


def delivered() -> int:
    return SubscriptionCharge.objects.filter(order__isnull=False).count()


def run_sweeps_at_once(count: int) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    errors: list[BaseException] = []

    def sweep() -> None:
        try:
            results.append(subscriptions_queue_due())
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=sweep) for _ in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    return results


def test_every_period_is_charged_exactly_once_with_two_sweeps_at_once_a_third_after_and_a_worker_killed(
    start_worker: Callable[..., CeleryProcess], gateway_server: HTTPServer
) -> None:
    # Given 2,000 subscriptions due today over 20 products, and a gateway taking 30 ms a call that
    # holds one call mid-way (the 600th) until a worker has been killed
    products = [make_product(stock=500) for _ in range(20)]
    plans = [make_plan(product=p, price="9.99") for p in products]
    subs = seed_due_subscriptions(plans, count=SUBSCRIPTIONS, prefix="e2e")
    today = utc_today()
    held, release = threading.Event(), threading.Event()
    numbers = count(1)

    def hold_one(key: str) -> None:
        if next(numbers) == 600:  # next() on a count is atomic: exactly one call is held
            held.set()
            release.wait(timeout=20)

    stand_in = GatewayStandIn(delay_seconds=0.03, on_call=hold_one)
    stand_in.install(gateway_server)
    doomed = start_worker(queues="subscriptions", concurrency=2, name="doomed", **gateway_env(gateway_server))
    start_worker(queues="subscriptions", concurrency=2, name="steady", **gateway_env(gateway_server))

    # When two fan-outs run at once
    sweeps = run_sweeps_at_once(2)

    # And, mid-way, the doomed worker's pool processes are SIGKILLed by their PIDs, calls in flight
    assert held.wait(timeout=120), f"the gateway never got 600 calls; log: {doomed.output()[-3000:]}"
    killed = pool_children(doomed)
    assert killed, "no pool processes found to kill"
    for pid in killed:
        os.kill(pid, signal.SIGKILL)
    release.set()

    # Then every subscription is charged and delivered, the killed tasks redelivered and finished elsewhere
    wait_for(lambda: delivered() == SUBSCRIPTIONS, timeout=300, interval=1, message="2,000 charges delivered")

    # And a third fan-out, after, finds nothing due and queues nothing
    third = subscriptions_queue_due()
    assert (third["due"], third["queued"]) == (0, 0)
    assert sorted(s["queued"] + s["already_queued"] for s in sweeps) == [SUBSCRIPTIONS, SUBSCRIPTIONS]
    assert sum(s["queued"] for s in sweeps) >= SUBSCRIPTIONS
    assert OutboxIntent.objects.filter(task_name=CHARGE).count() == SUBSCRIPTIONS

    # Every period was charged once by the gateway (its count per key), one order per charge
    per_period = stand_in.charges_per_period()
    assert len(per_period) == SUBSCRIPTIONS
    assert set(per_period.values()) == {1}, [k for k, n in per_period.items() if n > 1][:10]
    assert sum(stand_in.calls_per_key().values()) >= SUBSCRIPTIONS
    assert Order.objects.filter(status="paid").count() == SUBSCRIPTIONS
    assert SubscriptionCharge.objects.filter(status="succeeded").values("order").distinct().count() == SUBSCRIPTIONS
    assert Product.objects.aggregate(n=Sum("stock"))["n"] == 20 * 500 - SUBSCRIPTIONS
    assert set(Subscription.objects.values_list("next_charge_date", flat=True)) == {today + timedelta(days=7)}
    assert Subscription.objects.filter(pk__in=[s.pk for s in subs], current_period_start=today).count() == SUBSCRIPTIONS
    assert "WorkerLostError" in doomed.output() or "SIGKILL" in doomed.output()


def test_the_seeds_calls_as_written_run_on_a_worker_started_with_the_subscriptions_queue(
    start_worker: Callable[..., CeleryProcess], gateway_server: HTTPServer
) -> None:
    # Given a subscription due today, one due tomorrow, and a cart untouched for 40 days
    stand_in = GatewayStandIn()
    stand_in.install(gateway_server)
    today = utc_today()
    due = make_subscription()
    make_subscription(next_charge_date=today + timedelta(days=1))
    old_cart = Cart.objects.create(user=make_subscriber())
    CartItem.objects.create(cart=old_cart, product=make_product(), quantity=1)
    Cart.objects.filter(pk=old_cart.pk).update(updated_at=old_cart.updated_at - timedelta(days=40))
    start_worker(queues="subscriptions,maintenance", **gateway_env(gateway_server))

    # When the guide's calls are made, as written
    fan_out = process_due_subscriptions.delay().get(timeout=60)
    wait_for(lambda: delivered() == 1, timeout=60, message="the due subscription charged")
    again = process_single_subscription.delay(due.pk, today.isoformat()).get(timeout=60)
    reminders = send_subscription_renewal_reminders.delay().get(timeout=60)
    cleanup = cleanup_expired_carts.delay(days_old=30).get(timeout=60)

    # Then each ran on the worker and said what it did
    assert (fan_out["due"], fan_out["queued"]) == (1, 1)
    assert again["outcome"] == "already_charged"
    assert reminders["reminded"] == 1
    assert (cleanup["carts_deleted"], cleanup["items_deleted"]) == (1, 1)
    assert len(stand_in.captured()) == 1
    sources = dict(JobRun.objects.values_list("job_key", "source"))
    assert sources == {
        "due_subscriptions": "shell",
        "subscription_reminders": "shell",
        "expired_carts_cleanup": "shell",
    }
