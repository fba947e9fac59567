"""The tasks the seed systems call by name: thin shells over notify()."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

import pytest
from django.apps import apps
from django.core import mail

from core.models import User
from notifications.models import Notification, PushDevice
from notifications.tasks import (
    deliver,
    send_email,
    send_order_confirmation,
    send_order_shipped,
    send_payment_failed,
    send_payment_failed_many,
    send_push,
    send_sms,
    send_subscription_renewal_reminder,
    send_templated_email,
    send_templated_sms,
)

pytestmark = pytest.mark.django_db


def _deliver_all() -> None:
    for pk in Notification.objects.filter(status="pending").values_list("pk", flat=True):
        deliver.apply(args=(pk,))


def test_send_email_writes_a_raw_email_that_delivery_sends_with_the_given_subject_and_body(broker: Any) -> None:
    # When the seed's send_email task runs
    result = send_email.apply(args=("ada@example.com", "Welcome!", "Thank you for registering."), task_id="t-1").get()
    _deliver_all()
    # Then one email with exactly that subject and body went out
    assert result["notifications"][0]["status"] == "pending"
    assert [(m.to, m.subject, m.body) for m in mail.outbox] == [
        (["ada@example.com"], "Welcome!", "Thank you for registering.")
    ]


def test_the_same_task_message_delivered_twice_sends_once(broker: Any) -> None:
    # Given a broker redelivering one message (same task id) after a worker died
    send_sms.apply(args=("+14155552671", "code 1"), task_id="same-id")
    send_sms.apply(args=("+14155552671", "code 1"), task_id="same-id")
    # Then only one row exists
    assert Notification.objects.count() == 1


def test_templated_tasks_render_the_template_with_the_context(broker: Any) -> None:
    send_templated_email.apply(
        args=("order_shipped", "ada@example.com", {"order_number": "AB12", "tracking_number": "TN9"})
    )
    send_templated_sms.apply(args=("order_shipped", "+14155552671", {"order_number": "AB12"}))
    _deliver_all()
    assert mail.outbox[0].subject == "Order AB12 has shipped"
    assert "Tracking number: TN9" in mail.outbox[0].body
    assert Notification.objects.get(channel="sms").body == "Order AB12 has shipped."


def test_a_templated_task_with_an_unknown_template_returns_the_error_and_sends_nothing(broker: Any) -> None:
    result = send_templated_email.apply(args=("nope", "ada@example.com", {})).get()
    assert result["notifications"] == [
        {
            "id": result["notifications"][0]["id"],
            "channel": "email",
            "status": "failed",
            "error": "unknown template 'nope' for channel email",
        }
    ]
    assert broker.delivery_ids() == []


def test_send_push_goes_to_the_users_devices_and_a_missing_user_is_reported(recipient: User, broker: Any) -> None:
    PushDevice.objects.create(user=recipient, token="tok-1")
    result = send_push.apply(args=(recipient.pk, "Hello", "World", {"screen": "orders"})).get()
    row = Notification.objects.get(pk=result["notifications"][0]["id"])
    assert (row.to_address, row.data) == ("tok-1", {"screen": "orders"})
    _deliver_all()
    row.refresh_from_db()
    assert (row.status, row.subject, row.body) == ("sent", "Hello", "World")
    assert send_push.apply(args=(999999, "t", "b", {})).get() == {"user_id": 999999, "outcome": "not_found"}


# Domain events: read payments.Order lazily --------------------------------------------------


@pytest.fixture
def order(recipient: User) -> Any:
    Product = apps.get_model("payments", "Product")
    Order = apps.get_model("payments", "Order")
    OrderItem = apps.get_model("payments", "OrderItem")
    tea = Product.objects.create(sku="TEA-1", name="Green tea", price=Decimal("4.50"), currency="EUR", stock=10)
    o = Order.objects.create(customer=recipient, currency="EUR", total=Decimal("9.00"))
    OrderItem.objects.create(order=o, product=tea, quantity=2, unit_price=Decimal("4.50"))
    return o


def test_payment_failed_tells_the_customer_by_email_and_sms_once(order: Any, broker: Any) -> None:
    # When the event fires twice (a redelivered message, or two sweeps)
    first = send_payment_failed.apply(args=(str(order.pk),)).get()
    second = send_payment_failed.apply(args=(str(order.pk),)).get()
    _deliver_all()
    # Then one email and one SMS, with the order's amount and lines
    assert (first["notifications_written"], second["notifications_written"]) == (2, 0)
    number = str(order.pk).upper()
    assert len(mail.outbox) == 1
    assert mail.outbox[0].subject == f"Payment failed for order {number}"
    assert "- 2 x Green tea at 4.50 EUR" in mail.outbox[0].body
    assert Notification.objects.get(channel="sms").body == f"Payment of 9.00 EUR for order {number} failed."


@pytest.mark.parametrize("task", [send_order_confirmation, send_order_shipped])
def test_order_events_are_sent_on_both_channels(order: Any, broker: Any, task: Any) -> None:
    result = task.apply(args=(str(order.pk),)).get()
    assert sorted(n["channel"] for n in result["notifications"]) == ["email", "sms"]
    assert all(n["status"] == "pending" for n in result["notifications"])


@pytest.mark.parametrize("order_id", [str(uuid.uuid4()), "not-a-uuid"])
def test_an_order_that_does_not_exist_is_logged_and_reported_without_retry(broker: Any, order_id: str) -> None:
    assert send_payment_failed.apply(args=(order_id,)).get() == {
        "orders": 1,
        "found": 0,
        "missing": 1,
        "notifications_written": 0,
    }
    assert Notification.objects.count() == 0


def test_send_payment_failed_many_writes_both_channels_for_each_existing_order_in_bulk(
    recipient: User, order: Any, broker: Any, django_capture_on_commit_callbacks: Any
) -> None:
    Order = apps.get_model("payments", "Order")
    others = [Order.objects.create(customer=recipient, currency="EUR", total=Decimal("1.00")) for _ in range(3)]
    ids = [str(order.pk), *[str(o.pk) for o in others], str(uuid.uuid4())]
    with django_capture_on_commit_callbacks(execute=True):
        summary = send_payment_failed_many.apply(args=(ids,)).get()
    assert summary == {"orders": 5, "found": 4, "missing": 1, "notifications_written": 8}
    [(task, [batch], _)] = broker.messages()
    assert (task, len(batch)) == ("notifications.deliver_batch", 8)
    # Again: nothing new
    assert send_payment_failed_many.apply(args=(ids,)).get()["notifications_written"] == 0


def test_the_subscription_reminder_is_import_safe_whatever_payments_provides(broker: Any) -> None:
    result = send_subscription_renewal_reminder.apply(args=("123",)).get()
    try:
        apps.get_model("payments", "Subscription")
    except LookupError:
        assert result == {"subscription_id": "123", "outcome": "model_missing"}
    else:
        assert result == {"subscription_id": "123", "outcome": "not_found"}
    assert Notification.objects.count() == 0


@pytest.mark.parametrize("task", [send_email, send_sms, send_push, send_templated_email, send_templated_sms])
def test_the_raw_send_tasks_do_not_store_their_arguments_as_a_result(task: Any) -> None:
    # One-time codes travel in these arguments; with result_extended a stored result would keep them 14 days
    assert task.ignore_result is True
