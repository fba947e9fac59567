from __future__ import annotations

import pytest
from django.test import Client

from core.models import User
from payments.demo import load_demo_data
from payments.models import ExchangeRate, Order, OrderItem, PaymentTransaction, Product
from payments.services.orders import orders_cancel_expired
from tests.support.factories.payments import make_product, place

pytestmark = pytest.mark.django_db


def test_the_demo_data_loads_once_and_leaves_three_orders_for_the_timeout_job_to_cancel() -> None:
    first = load_demo_data()
    second = load_demo_data()

    assert first["products_created"] == 6 and first["orders_created"] == 6
    assert first["orders_past_deadline"] == 3
    assert (second["products_created"], second["orders_created"], second["exchange_rates_created"]) == (0, 0, 0)
    stock_before = sum(Product.objects.values_list("stock", flat=True))

    summary = orders_cancel_expired()

    assert summary["orders_cancelled"] == 3 and summary["transactions_cancelled"] == 2
    assert sum(Product.objects.values_list("stock", flat=True)) == stock_before + summary["units_restored"]
    assert Order.objects.filter(status="paid").count() == 1
    assert ExchangeRate.objects.filter(base="EUR", quote="USD").exists()
    assert load_demo_data()["orders_created"] == 0  # cancelled demo orders are not recreated


@pytest.fixture
def admin_client_logged_in() -> Client:
    User.objects.create_superuser(username="root", password="pw-root-1", email="root@example.com")
    client = Client()
    client.login(username="root", password="pw-root-1")
    return client


@pytest.mark.parametrize("model", [Product, Order, OrderItem, PaymentTransaction, ExchangeRate])
def test_every_payments_model_has_a_working_admin_list_with_filters(
    admin_client_logged_in: Client, customer: User, model: type
) -> None:
    order = place(customer, {make_product(): 1}, age_days=1)
    PaymentTransaction.objects.create(order=order, provider="acme", provider_reference="r1", amount=1, currency="EUR")
    load_demo_data()
    url = f"/admin/payments/{model._meta.model_name}/"

    listing = admin_client_logged_in.get(url)
    searched = admin_client_logged_in.get(url, {"q": "DEMO"})
    detail = admin_client_logged_in.get(f"{url}{model.objects.first().pk}/change/")

    assert listing.status_code == 200 and searched.status_code == 200 and detail.status_code == 200
    assert b'id="changelist-filter"' in listing.content


def test_the_admin_action_cancels_only_orders_past_their_deadline(
    admin_client_logged_in: Client, customer: User
) -> None:
    tea = make_product(stock=10)
    expired, fresh = place(customer, {tea: 2}, age_days=4), place(customer, {tea: 3}, age_days=1)

    response = admin_client_logged_in.post(
        "/admin/payments/order/",
        {"action": "cancel_if_expired", "_selected_action": [str(expired.pk), str(fresh.pk)]},
        follow=True,
    )

    assert b"Cancelled 1 order; 1 left unchanged" in response.content
    assert Order.objects.get(pk=expired.pk).status == "cancelled"
    assert Order.objects.get(pk=fresh.pk).status == "pending_payment"
    assert Product.objects.get(pk=tea.pk).stock == 7


def test_the_admin_cannot_delete_or_add_orders_nor_change_their_items_and_transactions(
    admin_client_logged_in: Client, customer: User
) -> None:
    # Given an order holding 3 units, with an open transaction
    tea = make_product(stock=10)
    order = place(customer, {tea: 3})
    tx = PaymentTransaction.objects.create(
        order=order, provider="acme", provider_reference="r1", amount=order.total, currency="EUR"
    )
    item = order.items.get()

    # When a superuser tries every way the admin offers to delete, add or edit them
    answers = {
        "delete order": admin_client_logged_in.post(f"/admin/payments/order/{order.pk}/delete/", {"post": "yes"}),
        "bulk delete orders": admin_client_logged_in.post(
            "/admin/payments/order/", {"action": "delete_selected", "_selected_action": [str(order.pk)], "post": "yes"}
        ),
        "add order": admin_client_logged_in.get("/admin/payments/order/add/"),
        "edit item": admin_client_logged_in.post(
            f"/admin/payments/orderitem/{item.pk}/change/",
            {"order": str(order.pk), "product": tea.pk, "quantity": 1, "unit_price": "10.00"},
        ),
        "delete item": admin_client_logged_in.post(f"/admin/payments/orderitem/{item.pk}/delete/", {"post": "yes"}),
        "add item": admin_client_logged_in.get("/admin/payments/orderitem/add/"),
        "edit transaction": admin_client_logged_in.post(
            f"/admin/payments/paymenttransaction/{tx.pk}/change/",
            {
                "order": str(order.pk),
                "provider": "acme",
                "provider_reference": "r1",
                "amount": "0.01",
                "currency": "EUR",
                "status": "succeeded",
            },
        ),
        "delete transaction": admin_client_logged_in.post(
            f"/admin/payments/paymenttransaction/{tx.pk}/delete/", {"post": "yes"}
        ),
    }

    # Then each is refused (the bulk delete is not even offered) and stock is still conserved
    assert {name: r.status_code for name, r in answers.items()} == {
        "delete order": 403,
        "bulk delete orders": 302,  # back to the list: "No action selected"
        "add order": 403,
        "edit item": 403,
        "delete item": 403,
        "add item": 403,
        "edit transaction": 403,
        "delete transaction": 403,
    }
    assert b"delete_selected" not in admin_client_logged_in.get("/admin/payments/order/").content
    assert Order.objects.filter(pk=order.pk).exists()
    assert list(OrderItem.objects.values_list("pk", "quantity")) == [(item.pk, 3)]
    tx.refresh_from_db()
    assert (tx.amount, tx.status) == (order.total, "initiated")
    assert Product.objects.get(pk=tea.pk).stock == 7
    # Viewing still works, read-only.
    view = admin_client_logged_in.get(f"/admin/payments/paymenttransaction/{tx.pk}/change/")
    assert view.status_code == 200 and b'name="_save"' not in view.content


def test_the_transactions_admin_filters_the_charges_to_refund(admin_client_logged_in: Client, customer: User) -> None:
    order = place(customer, {make_product(): 1})
    PaymentTransaction.objects.create(
        order=order, provider="acme", provider_reference="keep", amount=1, currency="EUR", status="succeeded"
    )
    PaymentTransaction.objects.create(
        order=order,
        provider="acme",
        provider_reference="give-back",
        amount=1,
        currency="EUR",
        status="succeeded",
        needs_refund=True,
    )

    listing = admin_client_logged_in.get("/admin/payments/paymenttransaction/", {"needs_refund__exact": "1"})

    assert listing.status_code == 200
    assert b"give-back" in listing.content and b"keep" not in listing.content
    assert b"needs_refund__exact=1" in admin_client_logged_in.get("/admin/payments/paymenttransaction/").content
