"""payment_failed written in the payments sweep's own transaction: durable, one message per call."""

from __future__ import annotations

import threading
import uuid
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
import time_machine
from django.apps import apps
from django.core import mail
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from core.models import User
from notifications.models import Notification
from notifications.services import notifications_recover_stuck, payment_failed_notify, payment_failed_notify_many
from notifications.tasks import deliver, deliver_batch, send_payment_failed, send_payment_failed_many


def _orders(customer: User, count: int, *, items: int = 1) -> list[Any]:
    Product = apps.get_model("payments", "Product")
    Order = apps.get_model("payments", "Order")
    OrderItem = apps.get_model("payments", "OrderItem")
    products = [
        Product.objects.get_or_create(
            sku=f"TEA-{i}", defaults={"name": f"Tea {i}", "price": Decimal("4.50"), "currency": "EUR", "stock": 10}
        )[0]
        for i in range(items)
    ]
    orders = Order.objects.bulk_create(
        [Order(customer=customer, currency="EUR", total=Decimal("9.00")) for _ in range(count)]
    )
    OrderItem.objects.bulk_create(
        [OrderItem(order=o, product=p, quantity=2, unit_price=Decimal("4.50")) for o in orders for p in products]
    )
    return orders


def _batch_messages(broker: Any) -> list[list[int]]:
    return [args[0] for task, args, _ in broker.messages() if task == "notifications.deliver_batch"]


@pytest.mark.django_db
def test_rows_are_written_in_the_callers_transaction_and_one_batch_message_is_published_at_commit(
    recipient: User, broker: Any, django_capture_on_commit_callbacks: Any
) -> None:
    # Given three orders, an id that no longer exists and one that is not even a UUID
    orders = _orders(recipient, 3)
    ids = [o.pk for o in orders] + [uuid.uuid4(), "not-a-uuid"]
    # When the sweep's chunk transaction calls the service
    with django_capture_on_commit_callbacks(execute=True) as callbacks, transaction.atomic():
        written = payment_failed_notify_many(order_ids=ids)
        # Then the rows exist inside the transaction, and nothing is on the broker yet
        assert Notification.objects.filter(status="pending").count() == 6
        assert broker.messages() == []
    # And after the commit exactly one deliver_batch message carries all six rows
    assert written == 6
    assert len(callbacks) == 1
    rows = Notification.objects.order_by("pk")
    assert _batch_messages(broker) == [[n.pk for n in rows]]
    assert broker.delivery_ids() == []
    assert {n.dedupe_key for n in rows} == {f"payment_failed:{o.pk}:{c}" for o in orders for c in ("email", "sms")}


@pytest.mark.django_db
def test_a_rolled_back_sweep_chunk_leaves_no_row_and_no_message(
    recipient: User, broker: Any, django_capture_on_commit_callbacks: Any
) -> None:
    orders = _orders(recipient, 2)
    with django_capture_on_commit_callbacks(execute=True), pytest.raises(RuntimeError), transaction.atomic():
        payment_failed_notify_many(order_ids=[o.pk for o in orders])
        raise RuntimeError("the chunk failed after notifying")
    assert Notification.objects.count() == 0
    assert broker.messages() == []


@pytest.mark.django_db
def test_the_same_orders_again_write_nothing_and_publish_nothing(
    recipient: User, broker: Any, django_capture_on_commit_callbacks: Any
) -> None:
    [order] = _orders(recipient, 1)
    with django_capture_on_commit_callbacks(execute=True):
        assert payment_failed_notify(order_id=str(order.pk)) == 2
    broker.client.flushdb()
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        assert payment_failed_notify(order_id=order.pk) == 0
        assert payment_failed_notify_many(order_ids=[order.pk, order.pk]) == 0
    assert callbacks == []
    assert Notification.objects.count() == 2


@pytest.mark.django_db
@pytest.mark.parametrize("count", [1, 200, 1000])
def test_the_query_count_is_the_same_for_one_order_and_for_a_whole_sweep_chunk(
    recipient: User, broker: Any, count: int
) -> None:
    # Given orders with two lines each (the email lists them)
    ids = [o.pk for o in _orders(recipient, count, items=2)]
    # When they are notified in one call
    with CaptureQueriesContext(connection) as queries:
        written = payment_failed_notify_many(order_ids=ids)
    # Then six queries were made whatever the count: orders+customers, items+products,
    # the dedupe check, the templates, the INSERT and the pending ids
    assert written == 2 * count
    assert len(queries) == 6, [q["sql"][:120] for q in queries.captured_queries]


@pytest.mark.django_db
def test_deliver_batch_fans_out_one_deliver_message_per_row_and_delivery_sends_the_full_order_number(
    recipient: User, broker: Any, django_capture_on_commit_callbacks: Any
) -> None:
    # Given a batch written for two orders
    orders = _orders(recipient, 2)
    with django_capture_on_commit_callbacks(execute=True):
        payment_failed_notify_many(order_ids=[o.pk for o in orders])
    [batch] = _batch_messages(broker)
    # When the notifications worker runs the batch task (its body, eagerly)
    summary = deliver_batch.apply(args=(batch,)).get()
    # Then one deliver message per row is on the notifications queue
    assert summary == {"enqueued": 4}
    assert sorted(broker.delivery_ids()) == sorted(batch)
    # And delivering one sends an email naming the whole order id, its lines included
    email_row = Notification.objects.get(channel="email", dedupe_group=f"payment_failed:{orders[0].pk}")
    deliver.apply(args=(email_row.pk,))
    assert mail.outbox[0].subject == f"Payment failed for order {str(orders[0].pk).upper()}"
    assert "- 2 x Tea 0 at 4.50 EUR" in mail.outbox[0].body


@pytest.mark.django_db
def test_a_lost_batch_message_leaves_the_rows_pending_and_the_recovery_job_enqueues_them(
    recipient: User, broker: Any, django_capture_on_commit_callbacks: Any
) -> None:
    # Given rows committed by the sweep whose deliver_batch message never reached Redis
    orders = _orders(recipient, 3)
    with django_capture_on_commit_callbacks(execute=False):
        payment_failed_notify_many(order_ids=[o.pk for o in orders])
    ids = sorted(Notification.objects.values_list("pk", flat=True))
    assert broker.messages() == []
    # When the recovery job runs after the stuck threshold
    with time_machine.travel(timezone.now() + timedelta(minutes=6)), django_capture_on_commit_callbacks(execute=True):
        summary = notifications_recover_stuck()
    # Then every row is enqueued for delivery once
    assert summary["requeued_pending"] == 6
    assert sorted(broker.delivery_ids()) == ids


@pytest.mark.django_db
def test_the_seed_task_names_still_work_as_thin_shells(
    recipient: User, broker: Any, django_capture_on_commit_callbacks: Any
) -> None:
    orders = _orders(recipient, 2)
    missing = str(uuid.uuid4())
    with django_capture_on_commit_callbacks(execute=True):
        many = send_payment_failed_many.apply(args=([str(o.pk) for o in orders] + [missing],)).get()
        one = send_payment_failed.apply(args=(missing,)).get()
    assert many == {"orders": 3, "found": 2, "missing": 1, "notifications_written": 4}
    assert one == {"orders": 1, "found": 0, "missing": 1, "notifications_written": 0}
    assert len(_batch_messages(broker)) == 1


@pytest.mark.django_db(transaction=True)
def test_two_sweeps_notifying_the_same_orders_at_once_write_each_row_once(recipient: User, broker: Any) -> None:
    # Given 50 orders two processes notify at the same moment, each in its own transaction
    ids = [o.pk for o in _orders(recipient, 50)]
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            barrier.wait(timeout=5)
            with transaction.atomic():
                payment_failed_notify_many(order_ids=ids)
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    # Then there is one row per order and channel, and every row was handed to a deliver_batch
    assert errors == []
    assert Notification.objects.count() == 100
    published = {pk for batch in _batch_messages(broker) for pk in batch}
    assert published == set(Notification.objects.values_list("pk", flat=True))
