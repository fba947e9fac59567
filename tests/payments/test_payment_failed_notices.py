"""payment_failed notices: the consumer of the sweep's outbox intent writes each order's messages once."""

from __future__ import annotations

import threading
import uuid
from decimal import Decimal
from typing import Any

import pytest
from django.core import mail
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from kombu.exceptions import OperationalError

from core.models import OutboxIntent, User
from core.services import outbox
from notifications.models import Notification
from notifications.tasks import deliver
from payments.models import Order, OrderItem, Product
from payments.services.orders import orders_notify_payment_failed
from payments.tasks import send_payment_failed
from tests.support.outbox import delivery_ids, intents, relay


def _cancelled_orders(customer: User, count: int, *, items: int = 1) -> list[Order]:
    products = [
        Product.objects.get_or_create(
            sku=f"TEA-{i}", defaults={"name": f"Tea {i}", "price": Decimal("4.50"), "currency": "EUR", "stock": 10}
        )[0]
        for i in range(items)
    ]
    orders = Order.objects.bulk_create(
        [
            Order(customer=customer, currency="EUR", total=Decimal("9.00"), status=Order.Status.CANCELLED)
            for _ in range(count)
        ]
    )
    OrderItem.objects.bulk_create(
        [OrderItem(order=o, product=p, quantity=2, unit_price=Decimal("4.50")) for o in orders for p in products]
    )
    return orders


@pytest.fixture
def shopper(db: Any) -> User:
    return User.objects.create_user(
        username="shopper", email="ada@example.com", phone_number="+14155552671", first_name="Ada"
    )


@pytest.mark.django_db
def test_rows_and_their_delivery_intents_commit_together_and_are_published_after_the_commit(
    shopper: User, broker: Any, django_capture_on_commit_callbacks: Any
) -> None:
    # Given three cancelled orders, an id that no longer exists and one that is not even a UUID
    orders = _cancelled_orders(shopper, 3)
    ids = [str(o.pk) for o in orders] + [str(uuid.uuid4()), "not-a-uuid"]
    # When the notify task's body runs inside a transaction
    with django_capture_on_commit_callbacks(execute=True), transaction.atomic():
        summary = orders_notify_payment_failed(order_ids=ids)
        # Then the rows and one delivery intent per row exist, and nothing is on the broker yet
        assert Notification.objects.filter(status="pending").count() == 6
        assert len(delivery_ids(published=False)) == 6
        assert broker.delivery_ids() == []
    # And after the commit one deliver message per row is on the notifications queue
    assert summary == {"orders": 5, "notified": 3, "skipped": 2, "notifications_written": 6}
    rows = Notification.objects.order_by("pk")
    assert sorted(broker.delivery_ids()) == [n.pk for n in rows]
    assert {n.dedupe_key for n in rows} == {f"payment_failed:{o.pk}:{c}" for o in orders for c in ("email", "sms")}
    assert len(delivery_ids(published=True)) == 6


@pytest.mark.django_db
def test_a_rolled_back_transaction_leaves_no_row_no_intent_and_no_message(
    shopper: User, broker: Any, django_capture_on_commit_callbacks: Any
) -> None:
    orders = _cancelled_orders(shopper, 2)
    with django_capture_on_commit_callbacks(execute=True), pytest.raises(RuntimeError), transaction.atomic():
        orders_notify_payment_failed(order_ids=[str(o.pk) for o in orders])
        raise RuntimeError("the transaction failed after notifying")
    assert Notification.objects.count() == 0
    assert OutboxIntent.objects.count() == 0
    assert broker.delivery_ids() == []


@pytest.mark.django_db
def test_the_same_orders_again_write_nothing_and_publish_nothing(
    shopper: User, broker: Any, django_capture_on_commit_callbacks: Any
) -> None:
    [order] = _cancelled_orders(shopper, 1)
    with django_capture_on_commit_callbacks(execute=True):
        assert orders_notify_payment_failed(order_ids=[str(order.pk)])["notifications_written"] == 2
    broker.flush()
    with django_capture_on_commit_callbacks(execute=True):
        again = orders_notify_payment_failed(order_ids=[str(order.pk), str(order.pk)])
    assert again["notifications_written"] == 0
    assert Notification.objects.count() == 2
    assert broker.delivery_ids() == []


@pytest.mark.django_db
@pytest.mark.parametrize("count", [1, 200, 1000])
def test_the_query_count_is_the_same_for_one_order_and_for_a_whole_sweep_chunk(
    shopper: User, broker: Any, count: int
) -> None:
    # Given cancelled orders with two lines each (the email lists them)
    ids = [str(o.pk) for o in _cancelled_orders(shopper, count, items=2)]
    # When they are notified in one call
    with CaptureQueriesContext(connection) as queries:
        summary = orders_notify_payment_failed(order_ids=ids)
    # Then a constant number of queries was made: orders+customers, items+products, the
    # dedupe check, the templates, the INSERT of rows, the pending rows, the INSERT of intents
    # (and the savepoint around them)
    assert summary["notifications_written"] == 2 * count
    assert len(queries) <= 9, [q["sql"][:120] for q in queries.captured_queries]


@pytest.mark.django_db
def test_delivery_sends_the_whole_order_number_and_the_order_lines(
    shopper: User, broker: Any, django_capture_on_commit_callbacks: Any
) -> None:
    orders = _cancelled_orders(shopper, 1)
    with django_capture_on_commit_callbacks(execute=True):
        orders_notify_payment_failed(order_ids=[str(orders[0].pk)])
    email_row = Notification.objects.get(channel="email", dedupe_group=f"payment_failed:{orders[0].pk}")
    assert email_row.pk in broker.delivery_ids()
    deliver.apply(kwargs={"notification_id": email_row.pk})
    assert mail.outbox[0].subject == f"Payment failed for order {str(orders[0].pk).upper()}"
    assert "- 2 x Tea 0 at 4.50 EUR" in mail.outbox[0].body


@pytest.mark.django_db
def test_a_broker_refusing_the_publish_leaves_the_intents_and_the_relay_publishes_them_once(
    shopper: User, broker: Any, django_capture_on_commit_callbacks: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the broker refuses every message when the transaction commits
    orders = _cancelled_orders(shopper, 3)

    def broker_down(messages: Any) -> None:
        raise OperationalError("Error 111 connecting to 127.0.0.1:1. Connection refused.")

    monkeypatch.setattr(outbox, "messages_publish", broker_down)
    with django_capture_on_commit_callbacks(execute=True):
        orders_notify_payment_failed(order_ids=[str(o.pk) for o in orders])
    # Then the rows are pending, their intents unpublished with the reason, the broker empty
    waiting = intents("notifications.deliver_batch", published=False)
    assert len(delivery_ids(published=False)) == 6
    assert waiting and all("Connection refused" in i.last_error and i.attempts == 1 for i in waiting)
    assert broker.delivery_ids() == []
    # When the broker is back and the relay runs
    monkeypatch.undo()
    assert relay()["published"] == len(waiting)  # a message per batch, the six rows in them
    # Then every row is on the queue once, and another relay run publishes nothing more
    assert sorted(broker.delivery_ids()) == sorted(Notification.objects.values_list("pk", flat=True))
    assert relay()["published"] == 0
    assert len(broker.delivery_ids()) == 6


@pytest.mark.django_db
def test_the_seed_task_tells_one_customer_and_reports_an_unknown_order(
    shopper: User, broker: Any, django_capture_on_commit_callbacks: Any
) -> None:
    [order] = _cancelled_orders(shopper, 1)
    missing = str(uuid.uuid4())
    with django_capture_on_commit_callbacks(execute=True):
        sent = send_payment_failed.apply(args=(str(order.pk),)).get()
        unknown = send_payment_failed.apply(args=(missing,)).get()
    assert [n["channel"] for n in sent["notifications"]] == ["email", "sms"]
    assert sent["outcome"] == "notified"
    assert unknown == {"order_id": missing, "outcome": "not_found"}
    assert len(broker.delivery_ids()) == 2


@pytest.mark.django_db(transaction=True)
def test_two_workers_notifying_the_same_orders_at_once_write_each_row_once(shopper: User, broker: Any) -> None:
    # Given 50 cancelled orders two workers notify at the same moment (a relay published the intent twice)
    ids = [str(o.pk) for o in _cancelled_orders(shopper, 50)]
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []
    results: list[dict[str, int]] = []

    def run() -> None:
        try:
            barrier.wait(timeout=5)
            results.append(orders_notify_payment_failed(order_ids=ids))
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    # Then both finished, there is one row per order and channel, and each row was published once
    assert errors == [] and len(results) == 2
    assert Notification.objects.count() == 100
    assert sorted(broker.delivery_ids()) == sorted(Notification.objects.values_list("pk", flat=True))
