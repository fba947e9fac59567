"""Plans refuse bad prices and currencies (validation and the database); the admin; the demo data."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.test import Client
from django.utils import timezone

from core.models import JobRun, User
from payments.demo import load_demo_data
from payments.models import Cart, Plan, Subscription, SubscriptionCharge
from payments.models.subscriptions import utc_today
from tests.support.broker import BrokerProbe
from tests.support.factories.payments import make_product
from tests.support.factories.subscriptions import make_plan, make_subscription

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"price": Decimal("0")}, "price"),
        ({"price": Decimal("-5.00")}, "price"),
        ({"currency": "XXX"}, "currency"),
        ({"currency": "USD"}, "currency"),  # not the product's currency
        ({"interval": "days"}, "interval_days"),
        ({"interval_days": 3}, "interval_days"),
    ],
)
def test_a_plan_is_refused_by_validation(changes: dict[str, Any], field: str) -> None:
    plan = Plan(name="p", product=make_product(currency="EUR"), quantity=1, price=Decimal("5.00"), currency="EUR")
    for name, value in changes.items():
        setattr(plan, name, value)

    with pytest.raises(ValidationError) as refused:
        plan.full_clean()

    assert field in refused.value.message_dict


@pytest.mark.parametrize(
    ("changes", "constraint"),
    [
        ({"price": Decimal("0")}, "plan_price_positive"),
        ({"price": Decimal("-1")}, "plan_price_positive"),
        ({"currency": "XXX"}, "plan_currency_known"),
        ({"interval": "days", "interval_days": None}, "plan_interval_days_only_for_days"),
    ],
)
def test_the_database_refuses_the_same_plans(changes: dict[str, Any], constraint: str) -> None:
    fields: dict[str, Any] = {
        "name": "p",
        "product": make_product(),
        "quantity": 1,
        "price": Decimal("5"),
        "currency": "EUR",
        **changes,
    }

    with pytest.raises(IntegrityError, match=constraint), transaction.atomic():
        Plan.objects.create(**fields)


def test_a_valid_plan_passes_validation() -> None:
    make_plan(price="5.00").full_clean()


@pytest.fixture
def admin_client(db: Any) -> Client:
    client = Client()
    client.force_login(User.objects.create_superuser("root", "root@example.com", "pw-root-1"))
    return client


def test_every_subscription_and_cart_model_has_an_admin_page(admin_client: Client) -> None:
    load_demo_data()
    sub = Subscription.objects.first()
    assert sub is not None
    SubscriptionCharge.objects.create(
        subscription=sub, period_start=utc_today(), amount=Decimal("1"), currency="EUR", idempotency_key="k"
    )
    cart = Cart.objects.first()
    assert cart is not None
    for name in ("plan", "subscription", "subscriptioncharge", "subscriptionreminder", "cart", "cartitem"):
        assert admin_client.get(f"/admin/payments/{name}/").status_code == 200, name
    page = admin_client.get(f"/admin/payments/subscription/{sub.pk}/change/")
    assert page.status_code == 200
    assert b"subscriptioncharge" in page.content.lower()  # the charges inline
    assert admin_client.get(f"/admin/payments/cart/{cart.pk}/change/").status_code == 200


def test_charge_now_in_the_admin_goes_through_the_job_platform(
    admin_client: Client, broker: BrokerProbe, django_capture_on_commit_callbacks: Any
) -> None:
    subs = [make_subscription() for _ in range(2)]

    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(
            "/admin/payments/subscription/",
            {"action": "charge_now", "_selected_action": [s.pk for s in subs]},
            follow=True,
        )

    assert response.status_code == 200
    run = JobRun.objects.get(job_key="subscription_charge_now")
    assert (run.source, run.params) == ("admin", {"subscription_ids": sorted(s.pk for s in subs)})
    assert [t.name for t in broker.tasks("payments")] == ["payments.charge_subscriptions_now"]
    assert "Queued the charges of 2 subscriptions" in response.content.decode()


def test_pause_and_cancel_are_bulk_updates(admin_client: Client) -> None:
    subs = [make_subscription() for _ in range(3)]

    admin_client.post("/admin/payments/subscription/", {"action": "pause", "_selected_action": [subs[0].pk]})
    admin_client.post("/admin/payments/subscription/", {"action": "cancel", "_selected_action": [subs[1].pk]})

    statuses = dict(Subscription.objects.values_list("pk", "status"))
    assert [statuses[s.pk] for s in subs] == ["paused", "cancelled", "active"]
    assert Subscription.objects.get(pk=subs[1].pk).cancelled_at is not None


def test_the_demo_data_has_a_plan_subscriptions_due_today_and_tomorrow_and_an_old_cart_and_loads_twice() -> None:
    first = load_demo_data()
    second = load_demo_data()

    assert (first["subscriptions_created"], first["old_carts_created"]) == (4, 1)
    assert (second["plans_created"], second["subscriptions_created"], second["old_carts_created"]) == (0, 0, 0)
    dates = set(Subscription.objects.filter(status="active").values_list("next_charge_date", flat=True))
    assert {utc_today(), utc_today() + timedelta(days=1)} <= dates
    assert Cart.objects.filter(updated_at__lt=timezone.now() - timedelta(days=30)).count() == 1
    for plan in Plan.objects.all():
        plan.full_clean()
