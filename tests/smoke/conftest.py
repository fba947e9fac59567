"""The SQLite smoke suite: `make run`'s configuration (config.settings.smoke.test), run by `make test`.

The PostgreSQL run (config.settings.test) does not collect this folder, and this folder runs
only under the smoke settings: each suite exercises the database it was written for.

The API tests share one world, built once per session on the in-memory SQLite database:
what `make run` installs (beat entries, the demo data, an admin user) plus the few rows the
success paths need (an open driver offer, a failed run, a paused job, a pending seller
verification, an approved milestone). Each test then runs inside a transaction that is rolled
back, so every (endpoint, persona) pair starts from the same world.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

SMOKE_SETTINGS = "config.settings.smoke.test"
PERSONAS = ("staff", "eic", "driver", "customer", "buyer", "seller", "anonymous")


def pytest_configure(config: pytest.Config) -> None:
    # make run serves static files through WhiteNoise from STATIC_ROOT, which tests never collect.
    config.addinivalue_line("filterwarnings", "ignore:No directory at:UserWarning")


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    # The PostgreSQL run skips this folder (its tests need make run's SQLite settings); the
    # smoke run (make test's second pytest) collects it. os.environ, set by pytest-django
    # from the ini or the command line before collection, names the settings in use.
    if os.environ.get("DJANGO_SETTINGS_MODULE") != SMOKE_SETTINGS and collection_path.name.startswith("test_"):
        return True
    return None


@pytest.fixture(autouse=True)
def _on_make_run_settings(settings: Any, tmp_path: Path) -> None:
    assert settings.DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3"
    assert settings.SETTINGS_MODULE == SMOKE_SETTINGS
    # Uploaded evidence goes to a scratch folder, not the checkout's media/.
    settings.MEDIA_ROOT = str(tmp_path / "media")


@dataclass(frozen=True)
class World:
    """Ids of what the endpoints act on; users by persona."""

    users: dict[str, Any]
    offered_request_id: int
    pending_request_id: int
    other_driver_id: int
    failed_run_id: str
    task_id: str
    paused_job: str
    failed_notification_id: int
    cart_product_id: int
    priced_product_id: int
    escrow_created_id: int
    escrow_in_progress_id: int
    escrow_approved_id: int
    approved_milestone_id: int
    pending_milestone_id: int
    submitted_milestone_id: int
    seller_id: int
    pending_verification_id: int


def _build_world() -> World:
    from django.core.management import call_command
    from django.utils import timezone

    from core.models import JobRun, JobState, User
    from core.scheduler import SchedulerService
    from logistics.models import Driver, StockRequest
    from logistics.services import stock_request_offer
    from notifications.models import Notification
    from payments.models import EscrowTransaction, Milestone, Product, SellerVerification
    from tests.support.factories.escrow import make_escrow

    # What `make run` does before starting the processes (Makefile `run`).
    call_command("jobs", "setup", verbosity=0)
    call_command("load_demo_data", stdout=open(os.devnull, "w"))  # noqa: SIM115 - closed with the process
    staff = User.objects.create_superuser("smoke-admin", "admin@example.com", "smoke-admin-pw")

    users = {
        "staff": staff,
        "eic": User.objects.get(username="eic_demo"),
        "driver": User.objects.get(username="driver_demo1"),
        "customer": User.objects.get(username="demo-customer"),
        "buyer": User.objects.get(username="demo-buyer"),
        "seller": User.objects.get(username="demo-seller"),
        "anonymous": None,
    }
    driver = Driver.objects.get(user=users["driver"])
    other_driver = Driver.objects.get(user__username="driver_demo2")
    first, second = StockRequest.objects.filter(status=StockRequest.Status.PENDING).order_by("pk")[:2]
    stock_request_offer(stock_request_id=first.pk, driver_id=driver.pk, mode="MANUAL", offered_by=users["eic"])

    # A run that failed (the feed is unreachable: a closed port), to retry; and one that succeeded.
    with _settings(EXCHANGE_RATES_URL="http://127.0.0.1:9/eurofxref-daily.xml", EXCHANGE_RATES_TIMEOUT_SECONDS=1):
        failed = SchedulerService.trigger_manual_update("exchange_rates", sync=True)
    assert failed.status == JobRun.Status.FAILED, failed.status
    done = SchedulerService.trigger_manual_update("discount_recompute", sync=True)
    JobState.objects.update_or_create(
        job_key="price_history",
        defaults={"last_slot": timezone.now(), "paused_at": timezone.now(), "pause_reason": "smoke: 5 failures"},
    )

    failed_notification = Notification.objects.filter(status=Notification.Status.FAILED).first()
    if failed_notification is None:  # the demo's malformed SMS, failed the way a worker would fail it
        failed_notification = Notification.objects.filter(channel="sms").order_by("-pk").first()
        assert failed_notification is not None
        Notification.objects.filter(pk=failed_notification.pk).update(
            status=Notification.Status.FAILED, last_error="smoke: invalid phone number"
        )

    buyer, seller = users["buyer"], users["seller"]
    approved = make_escrow(
        buyer,
        seller,
        status=EscrowTransaction.Status.IN_PROGRESS,
        milestone_statuses=(Milestone.Status.APPROVED, Milestone.Status.PENDING),
        title="Smoke: approved milestone",
    )
    in_progress = EscrowTransaction.objects.get(title="Demo: mobile app MVP")
    copywriting = EscrowTransaction.objects.get(title="Demo: product copywriting")
    applicant = User.objects.create_user("smoke-applicant", "applicant@example.com")
    verification = SellerVerification.objects.create(
        user=applicant,
        status=SellerVerification.Status.PENDING,
        documents=[{"kind": "business_registration", "reference": "SMOKE-1"}],
        submitted_at=timezone.now(),
    )
    return World(
        users=users,
        offered_request_id=first.pk,
        pending_request_id=second.pk,
        other_driver_id=other_driver.pk,
        failed_run_id=str(failed.pk),
        task_id=done.task_id,
        paused_job="price_history",
        failed_notification_id=failed_notification.pk,
        cart_product_id=Product.objects.get(sku="DEMO-TEA-001").pk,
        priced_product_id=Product.objects.get(sku="DEMO-YOG-001").pk,
        escrow_created_id=EscrowTransaction.objects.get(title="Demo: logo design").pk,
        escrow_in_progress_id=in_progress.pk,
        escrow_approved_id=approved.pk,
        approved_milestone_id=approved.milestones.get(status=Milestone.Status.APPROVED).pk,
        pending_milestone_id=in_progress.milestones.filter(status=Milestone.Status.PENDING).order_by("pk")[0].pk,
        submitted_milestone_id=copywriting.milestones.get(status=Milestone.Status.SUBMITTED).pk,
        seller_id=seller.pk,
        pending_verification_id=verification.pk,
    )


class _settings:
    """override_settings for code that runs outside a test (the session's world)."""

    def __init__(self, **values: Any) -> None:
        from django.test import override_settings

        self._override = override_settings(**values)

    def __enter__(self) -> None:
        self._override.enable()

    def __exit__(self, *exc: object) -> None:
        self._override.disable()


@pytest.fixture(scope="session")
def smoke_world(django_db_setup: None, django_db_blocker: Any) -> Iterator[World]:
    from core.redis import get_redis

    with django_db_blocker.unblock():
        get_redis().flushdb()
        yield _build_world()


@pytest.fixture
def world(smoke_world: World, db: None) -> World:
    return smoke_world
