"""Runs never hang: a worker killed mid-sweep, its run closed `lost`, the next trigger runs."""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import pytest
from django.db.models import Sum

from core.models import JobRun, User
from core.redis import get_redis
from core.scheduler import SchedulerService
from payments.models import Order, Product
from tests.e2e.conftest import wait_for
from tests.support.factories.payments import make_product, seed_orders

pytestmark = pytest.mark.e2e

STOCK = 100_000


@pytest.fixture
def shopper(transactional_db: Any) -> User:
    return User.objects.create_user(username="shopper", password="pw-shopper-1", email="shopper@example.com")


def test_a_worker_killed_mid_sweep_leaves_a_lost_run_and_the_next_trigger_finishes_the_work(
    start_worker: Any, start_beat: Any, shopper: User
) -> None:
    SchedulerService.setup_default_tasks()
    # Beat only hosts the watchdog here: no schedule may send payment_timeouts meanwhile.
    from django_celery_beat.models import PeriodicTask

    PeriodicTask.objects.update(enabled=False)
    products = [make_product(stock=STOCK) for _ in range(20)]
    expired = seed_orders(shopper, products, count=20000, age_days=5)
    start_beat()
    worker = start_worker(queues="payments", concurrency=1)

    run = SchedulerService.trigger_manual_update("payment_timeouts", source="shell")
    wait_for(
        lambda: Order.objects.filter(status="cancelled").exists(),
        timeout=60,
        interval=0.05,
        message=f"the sweep to commit a first chunk; log:\n{worker.output()[-2000:]}",
    )
    os.kill(worker.pid, signal.SIGKILL)  # the main process; Celery's prefork children die with it
    killed_at = time.monotonic()
    assert JobRun.objects.get(pk=run.pk).status == "running"
    assert get_redis().get("jobs:lease:payment_timeouts") is not None  # the dead run still holds the lease

    wait_for(lambda: JobRun.objects.get(pk=run.pk).status == "lost", timeout=60, message="the run closed lost")
    assert time.monotonic() - killed_at < 60
    lost = JobRun.objects.get(pk=run.pk)
    assert "lost" in lost.error and lost.finished_at is not None
    assert get_redis().get("jobs:lease:payment_timeouts") is None  # released with it, not at its TTL
    cancelled_by_the_dead_run = Order.objects.filter(status="cancelled").count()
    assert 0 < cancelled_by_the_dead_run < len(expired)

    start_worker(queues="payments,notifications,notifications_retry", name="w2")
    again = SchedulerService.trigger_manual_update("payment_timeouts", source="shell")
    wait_for(
        lambda: JobRun.objects.get(pk=again.pk).status in JobRun.FINISHED,
        timeout=120,
        message="the next run to finish",
    )
    again.refresh_from_db()
    assert again.status == "succeeded", (again.status, again.error, again.summary)  # not skipped
    assert again.summary["orders_cancelled"] == len(expired) - cancelled_by_the_dead_run
    # The sweep's invariants: every expired order cancelled once, and all stock back exactly once.
    assert Order.objects.filter(status="cancelled").count() == len(expired)
    assert Product.objects.filter(pk__in=[p.pk for p in products]).aggregate(s=Sum("stock"))["s"] == STOCK * 20
