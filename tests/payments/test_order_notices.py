"""The seed's order messages: payments builds the context and hands it to notifications."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

import pytest
from django.core import mail

from core.models import User
from notifications.models import Notification
from notifications.tasks import deliver
from payments.models import Order, OrderItem, Product
from payments.tasks import send_order_confirmation, send_order_shipped, send_payment_failed

pytestmark = pytest.mark.django_db


@pytest.fixture
def order(db: Any) -> Order:
    customer = User.objects.create_user(
        username="recipient", email="ada@example.com", phone_number="+14155552671", first_name="Ada"
    )
    tea = Product.objects.create(sku="TEA-1", name="Green tea", price=Decimal("4.50"), currency="EUR", stock=10)
    o = Order.objects.create(customer=customer, currency="EUR", total=Decimal("9.00"))
    OrderItem.objects.create(order=o, product=tea, quantity=2, unit_price=Decimal("4.50"))
    return o


def _deliver_all() -> None:
    for pk in Notification.objects.filter(status="pending").values_list("pk", flat=True):
        deliver.apply(kwargs={"notification_id": pk})


def test_payment_failed_tells_the_customer_by_email_and_sms_once(order: Order) -> None:
    # When the event fires twice (a redelivered message)
    first = send_payment_failed.apply(args=(str(order.pk),)).get()
    second = send_payment_failed.apply(args=(str(order.pk),)).get()
    _deliver_all()
    # Then one email and one SMS, with the order's amount and lines
    assert [n["id"] for n in first["notifications"]] == [n["id"] for n in second["notifications"]]
    number = str(order.pk).upper()
    assert len(mail.outbox) == 1
    assert mail.outbox[0].subject == f"Payment failed for order {number}"
    assert "- 2 x Green tea at 4.50 EUR" in mail.outbox[0].body
    assert Notification.objects.get(channel="sms").body == f"Payment of 9.00 EUR for order {number} failed."


@pytest.mark.parametrize("task", [send_order_confirmation, send_order_shipped])
def test_order_events_are_sent_on_both_channels(order: Order, task: Any) -> None:
    result = task.apply(args=(str(order.pk),)).get()
    assert sorted(n["channel"] for n in result["notifications"]) == ["email", "sms"]
    assert all(n["status"] == "pending" for n in result["notifications"])


@pytest.mark.parametrize("order_id", [str(uuid.uuid4()), "not-a-uuid"])
def test_an_order_that_does_not_exist_is_logged_and_reported_without_retry(order_id: str) -> None:
    assert send_payment_failed.apply(args=(order_id,)).get() == {"order_id": order_id, "outcome": "not_found"}
    assert Notification.objects.count() == 0
