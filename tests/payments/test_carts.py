"""Carts: the signed-in user's API (stock checked, not reserved) and the cleanup of abandoned carts."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.db import IntegrityError, transaction
from django.utils import timezone
from rest_framework.test import APIClient

from core.errors import Invalid
from core.models import JobRun, User
from core.scheduler import SchedulerService
from maintenance.tasks import cleanup_expired_carts
from payments.models import Cart, CartItem, Product
from payments.services.carts import carts_delete_expired
from tests.support.broker import BrokerProbe
from tests.support.factories.payments import make_product

pytestmark = pytest.mark.django_db

CART = "/api/v1/cart/"
ITEMS = "/api/v1/cart/items/"


def item_url(product: Product) -> str:
    return f"{ITEMS}{product.pk}/"


def test_a_new_user_has_an_empty_cart(customer_client: APIClient) -> None:
    response = customer_client.get(CART)

    assert response.status_code == 200
    assert (response.json()["items"], response.json()["totals"]) == ([], {})


def test_adding_accumulates_within_the_stock_and_reserves_nothing(customer_client: APIClient, customer: User) -> None:
    tea = make_product(stock=5, price="4.50")

    first = customer_client.post(ITEMS, {"product_id": tea.pk, "quantity": 2}, format="json")
    second = customer_client.post(CART, {"product_id": tea.pk, "quantity": 3}, format="json")

    assert (first.status_code, second.status_code) == (201, 201)
    line = second.json()["items"][0]
    assert (line["product_id"], line["quantity"], line["unit_price"], line["line_total"], line["in_stock"]) == (
        tea.pk,
        5,
        "4.50",
        "22.50",
        True,
    )
    assert second.json()["totals"] == {"EUR": "22.50"}
    assert Product.objects.get(pk=tea.pk).stock == 5
    assert CartItem.objects.filter(cart__user=customer).count() == 1


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"quantity": 6}, "quantity"),
        ({"quantity": 0}, "quantity"),
        ({"quantity": -1}, "quantity"),
        ({"quantity": "many"}, "quantity"),
    ],
)
def test_a_quantity_below_1_or_above_stock_is_refused_naming_the_field(
    customer_client: APIClient, body: dict[str, Any], field: str
) -> None:
    tea = make_product(stock=5)

    response = customer_client.post(ITEMS, {"product_id": tea.pk, **body}, format="json")

    assert response.status_code == 400
    assert field in response.json()["errors"], response.json()
    assert not CartItem.objects.exists()


def test_adding_beyond_the_stock_across_two_adds_is_refused(customer_client: APIClient) -> None:
    tea = make_product(stock=5)
    customer_client.post(ITEMS, {"product_id": tea.pk, "quantity": 4}, format="json")

    response = customer_client.post(ITEMS, {"product_id": tea.pk, "quantity": 2}, format="json")

    assert response.status_code == 400
    assert "Only 5" in response.json()["errors"]["quantity"][0]
    assert CartItem.objects.get().quantity == 4


def test_an_unknown_product_is_refused_naming_product_id(customer_client: APIClient) -> None:
    response = customer_client.post(ITEMS, {"product_id": 999999, "quantity": 1}, format="json")

    assert response.status_code == 400
    assert set(response.json()) == {"detail", "errors"}
    assert "product_id" in response.json()["errors"]


def test_changing_and_removing_a_line(customer_client: APIClient) -> None:
    tea, honey = make_product(stock=5), make_product(stock=3)
    customer_client.post(ITEMS, {"product_id": tea.pk, "quantity": 1}, format="json")
    customer_client.post(ITEMS, {"product_id": honey.pk, "quantity": 1}, format="json")

    changed = customer_client.patch(item_url(tea), {"quantity": 5}, format="json")
    too_many = customer_client.patch(item_url(honey), {"quantity": 4}, format="json")
    removed = customer_client.delete(item_url(honey))

    assert changed.status_code == 200
    assert too_many.status_code == 400 and "quantity" in too_many.json()["errors"]
    assert removed.status_code == 200
    assert [(i["product_id"], i["quantity"]) for i in removed.json()["items"]] == [(tea.pk, 5)]


def test_changing_or_removing_a_product_not_in_the_cart_is_404(customer_client: APIClient) -> None:
    tea = make_product(stock=5)

    assert customer_client.patch(item_url(tea), {"quantity": 1}, format="json").status_code == 404
    assert customer_client.delete(item_url(tea)).status_code == 404


def test_each_user_sees_only_their_own_cart(customer_client: APIClient, staff_client: APIClient) -> None:
    tea = make_product(stock=5)
    customer_client.post(ITEMS, {"product_id": tea.pk, "quantity": 1}, format="json")

    assert staff_client.get(CART).json()["items"] == []
    assert staff_client.delete(item_url(tea)).status_code == 404


def test_anonymous_callers_get_401(anon_client: APIClient) -> None:
    assert anon_client.get(CART).status_code == 401
    assert anon_client.post(ITEMS, {"product_id": 1, "quantity": 1}, format="json").status_code == 401


def test_the_database_refuses_a_zero_quantity_line(customer: User) -> None:
    cart = Cart.objects.create(user=customer)
    with pytest.raises(IntegrityError), transaction.atomic():
        CartItem.objects.create(cart=cart, product=make_product(), quantity=0)


# Cleanup -------------------------------------------------------------------------------------------


def make_cart(username: str, *, age_days: float, items: int = 2) -> Cart:
    user = User.objects.create_user(username=username)
    cart = Cart.objects.create(user=user)
    for _ in range(items):
        CartItem.objects.create(cart=cart, product=make_product(), quantity=1)
    Cart.objects.filter(pk=cart.pk).update(updated_at=timezone.now() - timedelta(days=age_days))
    return cart


def test_the_cleanup_deletes_only_carts_older_than_days_old_with_their_items() -> None:
    old = [make_cart(f"old-{i}", age_days=31 + i) for i in range(5)]
    fresh = make_cart("fresh", age_days=29)
    kept_10 = make_cart("ten-days", age_days=10)

    summary = carts_delete_expired(days_old=30, chunk_size=2)

    assert (summary["carts_deleted"], summary["items_deleted"], summary["chunks"]) == (5, 10, 3)
    assert not Cart.objects.filter(pk__in=[c.pk for c in old]).exists()
    assert set(Cart.objects.values_list("pk", flat=True)) == {fresh.pk, kept_10.pk}
    assert CartItem.objects.count() == 4
    assert carts_delete_expired(days_old=5)["carts_deleted"] == 2


def test_the_seeds_call_as_written_runs_the_cleanup() -> None:
    make_cart("old", age_days=45)
    make_cart("new", age_days=1)

    result = cleanup_expired_carts.apply(kwargs={"days_old": 30})

    assert result.get()["carts_deleted"] == 1
    assert Cart.objects.count() == 1


def test_days_old_below_1_is_refused_everywhere(staff_client: APIClient, broker: BrokerProbe) -> None:
    cart = make_cart("old", age_days=45)

    api = staff_client.post(
        "/api/v1/admin/jobs/expired_carts_cleanup/trigger/", {"params": {"days_old": 0}}, format="json"
    )
    with pytest.raises(CommandError) as cli:
        call_command("jobs", "run", "expired_carts_cleanup", "--param", "days_old=0")
    with pytest.raises(Invalid) as service:
        carts_delete_expired(days_old=0)

    assert api.status_code == 400 and "days_old" in api.json()["errors"]
    assert cli.value.returncode == 2 and "days_old" in str(cli.value)
    assert "days_old" in service.value.errors
    assert Cart.objects.filter(pk=cart.pk).exists()
    assert not JobRun.objects.exists()
    assert broker.tasks("maintenance") == []


def test_the_cleanup_job_defaults_to_30_days_and_records_its_run() -> None:
    make_cart("old", age_days=31)
    make_cart("new", age_days=29)

    run = SchedulerService.trigger_manual_update("expired_carts_cleanup", sync=True)

    assert run.status == JobRun.Status.SUCCEEDED, run.error
    assert run.summary is not None
    assert (run.summary["days_old"], run.summary["carts_deleted"]) == (30, 1)
