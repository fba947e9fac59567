"""The pricing jobs through the job platform: catalog, beat entries, shell service, CLI, admin, demo data."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command
from django.test import Client
from django_celery_beat.models import PeriodicTask

from core.catalog import InvalidJobParams, JobCatalog
from core.models import JobRun, User
from core.scheduler import SchedulerService
from payments.demo import load_pricing_demo
from payments.models import Batch, Discount, DiscountPolicy, PriceSnapshot, Product
from payments.services.pricing import discounts_recompute, price_history_snapshot, product_price_effective
from tests.support.factories.pricing import BatchFactory, DiscountPolicyFactory, ProductFactory, default_policy

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def policy() -> Any:
    return default_policy()


def test_the_catalog_declares_the_three_pricing_jobs_with_the_seeds_schedules_and_queues() -> None:
    recompute = JobCatalog.get("discount_recompute")
    history = JobCatalog.get("price_history")
    cleanup = JobCatalog.get("expired_discounts_cleanup")

    assert (recompute.task, recompute.schedule_text(), recompute.queue) == (
        "payments.recompute_all_discounts",
        "hourly at :00 UTC",
        "payments",
    )
    assert (history.task, history.schedule_text(), history.queue) == (
        "payments.update_price_history",
        "every 6 hours at :00 UTC",
        "payments",
    )
    assert (cleanup.task, cleanup.schedule_text(), cleanup.queue) == (
        "maintenance.cleanup_expired_discounts",
        "daily at 02:00 UTC",
        "maintenance",
    )
    [param] = recompute.param_fields()
    assert (param["name"], param["default"]) == ("days_threshold", 30)


def test_setup_default_tasks_creates_the_beat_entries_at_the_seeds_times() -> None:
    SchedulerService.setup_default_tasks()

    entries = {
        t.name: (t.task, t.crontab.minute, t.crontab.hour, t.expire_seconds)
        for t in PeriodicTask.objects.filter(
            name__in=["discount_recompute", "price_history", "expired_discounts_cleanup"]
        ).select_related("crontab")
    }
    assert entries == {
        "discount_recompute": ("payments.recompute_all_discounts", "0", "*", 3600),
        "price_history": ("payments.update_price_history", "0", "*/6", 21600),
        "expired_discounts_cleanup": ("maintenance.cleanup_expired_discounts", "0", "2", 86400),
    }


def test_triggering_the_recompute_from_the_shell_records_the_summary_in_jobrun() -> None:
    BatchFactory(days=5)

    run = SchedulerService.trigger_manual_update("discount_recompute", {"days_threshold": 10}, sync=True)

    assert run.status == JobRun.Status.SUCCEEDED, run.error
    assert run.params == {"days_threshold": 10}
    assert run.summary is not None and (run.summary["days_threshold"], run.summary["discounts_created"]) == (10, 1)


@pytest.mark.parametrize("days", [0, 366, "thirty", 1.5, True])
def test_the_catalog_refuses_a_bad_threshold_before_anything_is_recorded(days: Any) -> None:
    with pytest.raises(InvalidJobParams, match="days_threshold"):
        SchedulerService.trigger_manual_update("discount_recompute", {"days_threshold": days})
    assert not JobRun.objects.exists()


def test_the_cli_runs_the_recompute_inline(capsys: pytest.CaptureFixture[str]) -> None:
    BatchFactory(days=2)

    call_command("jobs", "run", "discount_recompute", "--param", "days_threshold=30", "--sync")

    assert '"discounts_created": 1' in capsys.readouterr().out


def test_the_cli_refuses_a_bad_threshold_with_exit_code_2() -> None:
    with pytest.raises(CommandError, match="days_threshold") as refused:
        call_command("jobs", "run", "discount_recompute", "--param", "days_threshold=0", "--sync")

    assert refused.value.returncode == 2
    assert not JobRun.objects.exists()


def test_the_cleanup_and_history_jobs_run_through_the_catalog() -> None:
    BatchFactory(days=3)
    discounts_recompute()

    cleanup = SchedulerService.trigger_manual_update("expired_discounts_cleanup", sync=True)
    history = SchedulerService.trigger_manual_update("price_history", sync=True)

    assert cleanup.summary == {"expired_past_validity": 0, "expired_batch_gone": 0, "still_active": 1}
    assert history.summary is not None and history.summary["snapshots_created"] == 1
    assert PriceSnapshot.objects.count() == 1


# Admin ------------------------------------------------------------------------------------------------


@pytest.fixture
def admin_client() -> Client:
    User.objects.create_superuser(username="root", password="pw-root-1", email="root@example.com")
    client = Client()
    client.login(username="root", password="pw-root-1")
    return client


def _policy_form(**changes: str) -> dict[str, str]:
    product = ProductFactory()
    return {
        "name": "Dairy",
        "product": str(product.pk),
        "tiers": "14: 20\n7: 35\n2: 60",
        "max_percentage": "60",
        "min_margin_percentage": "10",
        **changes,
    }


def test_the_admin_saves_a_policy_typed_as_lines_of_days_and_percentage(admin_client: Client) -> None:
    response = admin_client.post("/admin/payments/discountpolicy/add/", _policy_form())

    assert response.status_code == 302, response.content.decode()[:2000]
    saved = DiscountPolicy.objects.get(name="Dairy")
    assert saved.tiers == [
        {"days": 2, "percentage": "60.00"},
        {"days": 7, "percentage": "35.00"},
        {"days": 14, "percentage": "20.00"},
    ]
    page = admin_client.get(f"/admin/payments/discountpolicy/{saved.pk}/change/").content.decode()
    assert "2: 60.00\n7: 35.00\n14: 20.00" in page


@pytest.mark.parametrize(
    ("tiers", "reason"),
    [
        ("7: 35\n7: 40", "overlap"),
        ("7: 120", "at most 100"),
        ("7 days 35", "days: percentage"),
        ("3: 10\n7: 35", "must not cost more"),
    ],
)
def test_the_admin_form_refuses_tiers_that_overlap_or_exceed_100_percent(
    admin_client: Client, tiers: str, reason: str
) -> None:
    response = admin_client.post("/admin/payments/discountpolicy/add/", _policy_form(tiers=tiers))

    assert response.status_code == 200
    assert reason in response.content.decode()
    assert not DiscountPolicy.objects.filter(name="Dairy").exists()


def test_the_admin_refuses_a_second_default_policy(admin_client: Client) -> None:
    response = admin_client.post(
        "/admin/payments/discountpolicy/add/", _policy_form(is_default="on", product="", name="Another default")
    )

    assert response.status_code == 200
    assert "There is already a default policy" in response.content.decode()


def test_the_model_validation_refuses_a_policy_over_100_percent() -> None:
    policy = DiscountPolicyFactory.build(product=ProductFactory(), max_percentage=Decimal("120"))
    policy.tiers = [{"days": 3, "percentage": "150"}]

    with pytest.raises(ValidationError) as refused:
        policy.full_clean()

    assert set(refused.value.message_dict) >= {"tiers", "max_percentage"}


def test_a_batch_must_be_in_its_products_currency_and_minor_units() -> None:
    yen = ProductFactory(currency="JPY")
    foreign = BatchFactory.build(product=yen, currency="EUR", base_price=Decimal("10"), cost=Decimal("4"))
    fractional = BatchFactory.build(product=yen, currency="JPY", base_price=Decimal("10.5"), cost=Decimal("4"))

    with pytest.raises(ValidationError) as wrong_currency:
        foreign.full_clean()
    with pytest.raises(ValidationError) as wrong_unit:
        fractional.full_clean()

    assert set(wrong_currency.value.message_dict) == {"currency"}
    assert wrong_unit.value.message_dict == {"base_price": ["JPY amounts have 0 decimal places; got 10.5."]}


@pytest.mark.parametrize("model", ["batch", "discountpolicy", "discount", "pricesnapshot"])
def test_every_pricing_model_has_a_working_admin_list_with_search_and_filters(admin_client: Client, model: str) -> None:
    load_pricing_demo()
    discounts_recompute()
    price_history_snapshot()

    listing = admin_client.get(f"/admin/payments/{model}/")
    searched = admin_client.get(f"/admin/payments/{model}/", {"q": "DEMO"})

    assert listing.status_code == 200 and searched.status_code == 200
    assert b'id="changelist-filter"' in listing.content


def test_the_product_page_shows_its_batches_and_a_price_chart(admin_client: Client) -> None:
    load_pricing_demo()
    discounts_recompute()
    price_history_snapshot()
    yoghurt = Product.objects.get(sku="DEMO-YOG-001")

    page = admin_client.get(f"/admin/payments/product/{yoghurt.pk}/change/").content.decode()

    assert "<svg" in page and "<polyline" in page
    assert "DEMO-YOG-001-D1" in page  # a batch in the inline and in the legend
    assert "Price over time" in page


# Demo data ---------------------------------------------------------------------------------------------


def test_the_demo_data_loads_once_and_a_recompute_shows_the_tiers() -> None:
    first, second = load_pricing_demo(), load_pricing_demo()

    assert (first["pricing_products_created"], first["batches_created"]) == (3, 12)
    assert (second["pricing_products_created"], second["batches_created"], second["discount_policies_created"]) == (
        0,
        0,
        0,
    )
    discounts_recompute()
    yoghurt = {
        b.lot_code: b.discounts.filter(status="active").values_list("percentage", flat=True).first()
        for b in Batch.objects.filter(product__sku="DEMO-YOG-001")
    }
    assert yoghurt == {
        "DEMO-YOG-001-D40": None,
        "DEMO-YOG-001-D20": Decimal("10.00"),
        "DEMO-YOG-001-D7": Decimal("35.00"),
        "DEMO-YOG-001-D1": Decimal("50.00"),
    }
    bread = Product.objects.get(sku="DEMO-BRD-001")
    assert Discount.objects.filter(batch__product=bread, status="active").count() == 1  # its own policy: <= 3 days
    assert product_price_effective(product_id=bread.pk).price == Decimal("2.250")
