from __future__ import annotations

import uuid
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
import time_machine
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from kombu.exceptions import OperationalError

from core.errors import Invalid
from core.models import OutboxIntent, User
from payments.models import Order, PaymentTransaction, Product
from payments.services import orders as order_services
from payments.services.orders import (
    InsufficientStock,
    OrderInvalid,
    PaymentMismatch,
    PaymentNeedsRefund,
    UnknownProduct,
    order_cancel_expired,
    order_pay,
    order_place,
    orders_cancel_expired,
    payment_initiate,
)
from payments.tasks import notify_payment_failed
from tests.support.broker import BrokerProbe
from tests.support.factories.payments import (
    make_product,
    notice_ids,
    pay,
    payment_failed_rows,
    pending_payment_failed_ids,
    place,
    stock_of,
)
from tests.support.outbox import delivery_ids, intents, relay

pytestmark = pytest.mark.django_db


# Placing ----------------------------------------------------------------------------


def test_placing_an_order_reserves_its_units_and_prices_it(customer: User) -> None:
    tea, honey = make_product(stock=10, price="8.50"), make_product(stock=5, price="11.00")

    order = place(customer, {tea: 3, honey: 2})

    assert stock_of(tea, honey) == [7, 3]
    assert order.status == Order.Status.PENDING_PAYMENT and order.payment_status == Order.PaymentStatus.PENDING
    assert order.total == Decimal("47.50") and order.currency == "EUR"
    assert sorted(order.items.values_list("quantity", "unit_price")) == [(2, Decimal("11.00")), (3, Decimal("8.50"))]


def test_an_order_larger_than_the_stock_is_refused_naming_the_product_and_changes_nothing(customer: User) -> None:
    tea, honey = make_product(stock=10, sku="TEA"), make_product(stock=1, sku="HONEY")

    with pytest.raises(InsufficientStock, match=r"Not enough stock for HONEY: 2 requested, 1 available"):
        place(customer, {tea: 3, honey: 2})

    assert stock_of(tea, honey) == [10, 1]
    assert not Order.objects.exists()


def test_the_last_units_can_be_ordered_and_then_none_are_left(customer: User) -> None:
    tea = make_product(stock=2)
    place(customer, {tea: 2})

    with pytest.raises(InsufficientStock):
        place(customer, {tea: 1})
    assert stock_of(tea) == [0]


def test_unknown_products_zero_quantities_and_mixed_currencies_are_refused(customer: User) -> None:
    eur, usd = make_product(currency="EUR"), make_product(currency="USD")

    with pytest.raises(UnknownProduct):
        order_place(customer_id=customer.pk, items={999_999: 1})
    with pytest.raises(OrderInvalid, match="at least 1"):
        order_place(customer_id=customer.pk, items={eur.pk: 0})
    with pytest.raises(OrderInvalid, match="one currency"):
        order_place(customer_id=customer.pk, items={eur.pk: 1, usd.pk: 1})
    assert stock_of(eur, usd) == [100, 100]


# Paying -----------------------------------------------------------------------------


def test_paying_an_order_marks_it_paid_and_records_what_the_provider_took(customer: User) -> None:
    order = place(customer, {make_product(): 1})
    payment_initiate(order_id=order.pk, provider="acme", provider_reference="ch_1")

    tx = order_pay(
        order_id=order.pk, provider="acme", provider_reference="ch_1", amount=Decimal("10.0"), currency="eur"
    )

    order.refresh_from_db()
    assert (order.status, order.payment_status) == (Order.Status.PAID, Order.PaymentStatus.PAID)
    assert order.paid_at is not None
    assert (tx.status, tx.amount, tx.currency, tx.needs_refund) == ("succeeded", Decimal("10.00"), "EUR", False)
    assert PaymentTransaction.objects.count() == 1


def test_the_amount_and_the_currency_of_a_payment_are_required(customer: User) -> None:
    order = place(customer, {make_product(): 1})

    with pytest.raises(TypeError, match="amount"):
        order_pay(order_id=order.pk, provider="acme", provider_reference="x", currency="EUR")  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="currency"):
        order_pay(order_id=order.pk, provider="acme", provider_reference="x", amount=order.total)  # type: ignore[call-arg]
    with pytest.raises(PaymentMismatch, match="finite Decimal"):
        order_pay(order_id=order.pk, provider="acme", provider_reference="x", amount=10, currency="EUR")  # type: ignore[arg-type]
    assert Order.objects.get(pk=order.pk).status == Order.Status.PENDING_PAYMENT


def test_a_repeated_payment_callback_changes_nothing(customer: User) -> None:
    order = place(customer, {make_product(): 1})
    first = pay(order, "ch_1")

    again = pay(order, "ch_1")

    assert again.pk == first.pk
    assert PaymentTransaction.objects.count() == 1


def test_money_taken_for_a_cancelled_order_is_recorded_for_a_refund_then_refused(
    customer: User, caplog: pytest.LogCaptureFixture
) -> None:
    # Given an order the sweep cancelled while its charge was in flight
    tea = make_product(stock=10)
    order = place(customer, {tea: 1}, age_days=4)
    payment_initiate(order_id=order.pk, provider="acme", provider_reference="late")
    orders_cancel_expired()

    # When the provider reports the charge succeeded
    with pytest.raises(PaymentNeedsRefund, match=r"is cancelled.*acme:late .*needs_refund") as refused:
        order_pay(
            order_id=order.pk, provider="acme", provider_reference="late", amount=Decimal("10.00"), currency="EUR"
        )

    # Then the order stays cancelled and its stock stays restored, and the money is on record
    order.refresh_from_db()
    assert (order.status, order.payment_status) == (Order.Status.CANCELLED, Order.PaymentStatus.FAILED)
    assert stock_of(tea) == [10]
    tx = PaymentTransaction.objects.get(provider_reference="late")
    assert (tx.status, tx.needs_refund, tx.amount, tx.currency) == ("succeeded", True, Decimal("10.00"), "EUR")
    assert refused.value.transaction.pk == tx.pk
    assert [r.levelname for r in caplog.records if "needs_refund" in r.getMessage()] == ["WARNING"]


def test_a_second_charge_for_a_paid_order_is_recorded_for_a_refund_and_a_repeat_of_it_changes_nothing(
    customer: User,
) -> None:
    order = place(customer, {make_product(): 1})
    pay(order, "first")

    with pytest.raises(PaymentNeedsRefund, match="is paid"):
        pay(order, "second")
    with pytest.raises(PaymentNeedsRefund):
        pay(order, "second")

    assert sorted(PaymentTransaction.objects.values_list("provider_reference", "status", "needs_refund")) == [
        ("first", "succeeded", False),
        ("second", "succeeded", True),
    ]
    assert Order.objects.get(pk=order.pk).status == Order.Status.PAID


def test_money_taken_for_a_cancelled_order_is_recorded_whatever_the_amount(customer: User) -> None:
    # A payment that does not match is still money taken when the order is already cancelled.
    order = place(customer, {make_product(): 1}, age_days=4)
    orders_cancel_expired()

    with pytest.raises(PaymentNeedsRefund):
        order_pay(order_id=order.pk, provider="acme", provider_reference="odd", amount=Decimal("3.00"), currency="USD")

    tx = PaymentTransaction.objects.get(provider_reference="odd")
    assert (tx.amount, tx.currency, tx.needs_refund) == (Decimal("3.00"), "USD", True)


@pytest.mark.parametrize(
    ("amount", "currency"),
    [(Decimal("10.00"), "EUR"), (Decimal("20.01"), "EUR"), (Decimal("20.00"), "USD")],
    ids=["too-little", "too-much", "wrong-currency"],
)
def test_a_payment_of_the_wrong_amount_or_currency_is_refused_and_changes_nothing(
    customer: User, amount: Decimal, currency: str
) -> None:
    order = place(customer, {make_product(price="10.00"): 2})
    started = payment_initiate(order_id=order.pk, provider="acme", provider_reference="x")

    with pytest.raises(PaymentMismatch, match=rf"Payment of {amount} {currency} does not match .* 20.00 EUR"):
        order_pay(order_id=order.pk, provider="acme", provider_reference="x", amount=amount, currency=currency)

    order.refresh_from_db()
    assert order.status == Order.Status.PENDING_PAYMENT
    assert list(PaymentTransaction.objects.values_list("pk", "status", "amount")) == [
        (started.pk, "initiated", Decimal("20.00"))
    ]


# The sweep --------------------------------------------------------------------------


def test_the_sweep_cancels_only_unpaid_orders_older_than_the_timeout(
    customer: User, broker: BrokerProbe, django_capture_on_commit_callbacks: Any
) -> None:
    tea, honey = make_product(stock=100), make_product(stock=100)
    expired = place(customer, {tea: 3, honey: 1}, age_days=3.1)
    fresh = place(customer, {tea: 2}, age_days=2.9)
    paid_long_ago = place(customer, {honey: 4}, age_days=10)
    pay(paid_long_ago, "paid")
    open_tx = payment_initiate(order_id=expired.pk, provider="acme", provider_reference="open")
    failed_tx = PaymentTransaction.objects.create(
        order=expired, provider="acme", provider_reference="failed", amount=1, currency="EUR", status="failed"
    )

    with django_capture_on_commit_callbacks(execute=True):
        summary = orders_cancel_expired()

    assert summary["orders_cancelled"] == 1
    assert summary["units_restored"] == 4
    assert summary["transactions_cancelled"] == 1
    expired.refresh_from_db()
    assert expired.status == Order.Status.CANCELLED and expired.payment_status == Order.PaymentStatus.FAILED
    assert expired.cancelled_at is not None and expired.cancel_reason == "Not paid in time"
    assert Order.objects.get(pk=fresh.pk).status == Order.Status.PENDING_PAYMENT
    assert Order.objects.get(pk=paid_long_ago.pk).status == Order.Status.PAID
    assert stock_of(tea, honey) == [100 - 2, 100 - 4]
    open_tx.refresh_from_db()
    failed_tx.refresh_from_db()
    assert open_tx.status == PaymentTransaction.Status.CANCELLED
    assert failed_tx.status == PaymentTransaction.Status.FAILED  # terminal: left alone
    # The chunk writes no notification: it records one notify intent, published after its commit.
    [intent] = intents("payments.notify_payment_failed", published=True)
    assert intent.kwargs == {"order_ids": [str(expired.pk)]}
    assert notice_ids() == [[str(expired.pk)]]
    assert payment_failed_rows() == {}


def test_a_chunk_that_rolls_back_sends_no_notice(
    customer: User,
    monkeypatch: pytest.MonkeyPatch,
    broker: BrokerProbe,
    django_capture_on_commit_callbacks: Any,
) -> None:
    # Given an expired order, and a chunk that fails after its notice was recorded
    tea = make_product(stock=10)
    order = place(customer, {tea: 2}, age_days=4)
    real_add = order_services.outbox_add

    def add_then_fail(**kwargs: Any) -> None:
        real_add(**kwargs)
        raise RuntimeError("the chunk failed before its commit")

    monkeypatch.setattr(order_services, "outbox_add", add_then_fail)

    # When the sweep runs
    with (
        pytest.raises(RuntimeError, match="before its commit"),
        django_capture_on_commit_callbacks(execute=True) as callbacks,
    ):
        orders_cancel_expired()

    # Then the notice went with the rest of the chunk: still pending, stock held, nobody told
    assert callbacks == []
    assert Order.objects.get(pk=order.pk).status == Order.Status.PENDING_PAYMENT
    assert stock_of(tea) == [8]
    assert intents() == []
    assert broker.tasks("payments") == []


@pytest.mark.django_db(transaction=True)
def test_a_broker_down_at_commit_loses_no_notice_the_relay_publishes_it_and_the_task_writes_it_once(
    customer: User, monkeypatch: pytest.MonkeyPatch, broker: BrokerProbe
) -> None:
    # Given four expired orders swept two per chunk, and a broker that refuses every message
    tea = make_product(stock=100)
    orders = [place(customer, {tea: 1}, age_days=4) for _ in range(4)]
    ids = {str(o.pk) for o in orders}

    def broker_down(messages: Any) -> None:
        raise OperationalError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    monkeypatch.setattr("core.services.outbox.messages_publish", broker_down)

    # When the sweep runs (every chunk commits for real)
    summary = orders_cancel_expired(chunk_size=2)

    # Then every chunk ran; its notice is an unpublished intent carrying the broker's error
    assert (summary["chunks"], summary["orders_cancelled"], summary["units_restored"]) == (2, 4, 4)
    assert stock_of(tea) == [100]
    waiting = intents("payments.notify_payment_failed", published=False)
    assert len(waiting) == 2 and all("Connection refused" in i.last_error for i in waiting)
    assert payment_failed_rows() == {} and notice_ids() == []

    # When the broker is back and the relay runs, twice
    monkeypatch.undo()
    assert relay()["published"] == 2
    assert relay()["published"] == 0

    # Then each chunk's notice was published once
    sent = notice_ids()
    assert len(sent) == 2 and sorted(i for chunk in sent for i in chunk) == sorted(ids)

    # When those messages are processed, twice each (a redelivery)
    results = [notify_payment_failed.apply(kwargs={"order_ids": chunk}).result for chunk in sent * 2]

    # Then each customer's rows are written once (no phone: the SMS row is written cancelled)
    assert [r["notifications_written"] for r in results] == [4, 4, 0, 0]
    assert payment_failed_rows() == {
        **{(pk, "email"): "pending" for pk in ids},
        **{(pk, "sms"): "cancelled" for pk in ids},
    }
    assert sorted(delivery_ids(published=True)) == pending_payment_failed_ids()


def test_running_the_sweep_again_changes_nothing(customer: User) -> None:
    tea = make_product(stock=50)
    for _ in range(3):
        place(customer, {tea: 5}, age_days=5)
    first = orders_cancel_expired()

    second = orders_cancel_expired()

    assert first["orders_cancelled"] == 3 and first["units_restored"] == 15
    assert (second["orders_cancelled"], second["units_restored"], second["chunks"]) == (0, 0, 0)
    assert stock_of(tea) == [50]


def test_an_order_becomes_due_exactly_when_its_timeout_passes(customer: User, settings: Any) -> None:
    settings.PAYMENT_TIMEOUT_DAYS = 3
    placed_at = timezone.now()
    order = place(customer, {make_product(): 1})

    with time_machine.travel(placed_at + timedelta(days=3, seconds=-60)):
        assert orders_cancel_expired()["orders_cancelled"] == 0
    with time_machine.travel(placed_at + timedelta(days=3, seconds=60)):
        assert orders_cancel_expired()["orders_cancelled"] == 1
    order.refresh_from_db()
    assert order.status == Order.Status.CANCELLED


def test_older_than_days_overrides_the_setting(customer: User) -> None:
    place(customer, {make_product(): 1}, age_days=2)

    assert orders_cancel_expired(older_than_days=3)["orders_cancelled"] == 0
    assert orders_cancel_expired(older_than_days=1)["orders_cancelled"] == 1


@pytest.mark.parametrize("days", [0, -1, 366])
def test_the_sweep_refuses_an_out_of_range_timeout(days: int) -> None:
    with pytest.raises(Invalid, match="between 1 and 365"):
        orders_cancel_expired(older_than_days=days)


def test_the_sweep_runs_a_constant_number_of_queries_per_chunk_and_publishes_one_message_per_chunk(
    customer: User, broker: BrokerProbe, django_capture_on_commit_callbacks: Any
) -> None:
    products = [make_product(stock=1000) for _ in range(6)]
    for i in range(40):
        place(customer, {products[i % 6]: 1, products[(i + 1) % 6]: 2, products[(i + 2) % 6]: 3}, age_days=4)

    with CaptureQueriesContext(connection) as small_chunks, django_capture_on_commit_callbacks(execute=True):
        many = orders_cancel_expired(chunk_size=10)

    assert many["chunks"] == 4 and many["orders_cancelled"] == 40 and many["units_restored"] == 240
    # Per chunk: page read, savepoint, claim, lock products, restore stock, count units, cancel
    # transactions, read claimed ids, record the intent, release savepoint = 10; after its commit
    # the publish: savepoint, claim the intent marking it published, release = 3; plus the last,
    # empty page read, and one count for the progress total. No notification is written in a chunk.
    assert len(small_chunks) == (10 + 3) * 4 + 1 + 1, [q["sql"][:80] for q in small_chunks.captured_queries]
    assert payment_failed_rows() == {}
    sent = notice_ids()
    assert [len(ids) for ids in sent] == [10, 10, 10, 10]
    assert sorted(i for ids in sent for i in ids) == sorted(
        str(pk) for pk in Order.objects.values_list("pk", flat=True)
    )
    assert stock_of(*products) == [1000] * 6


def test_the_query_count_does_not_grow_with_the_chunk(customer: User) -> None:
    products = [make_product(stock=1000) for _ in range(5)]
    for i in range(30):
        place(customer, {products[i % 5]: 1, products[(i + 3) % 5]: 1}, age_days=4)
    Order.objects.filter(pk__in=list(Order.objects.values_list("pk", flat=True)[:10])).update(
        created_at=timezone.now() - timedelta(days=30)
    )

    with CaptureQueriesContext(connection) as ten:
        orders_cancel_expired(older_than_days=20, chunk_size=100)
    with CaptureQueriesContext(connection) as twenty:
        orders_cancel_expired(older_than_days=3, chunk_size=100)

    assert len(ten) == len(twenty)


# One order --------------------------------------------------------------------------


def test_cancelling_one_expired_order_restores_its_stock_and_sends_its_notice(
    customer: User, broker: BrokerProbe, django_capture_on_commit_callbacks: Any
) -> None:
    tea = make_product(stock=10)
    order = place(customer, {tea: 4}, age_days=4)
    other = place(customer, {tea: 1}, age_days=4)

    with django_capture_on_commit_callbacks(execute=True):
        summary = order_cancel_expired(order_id=str(order.pk))

    assert summary["outcome"] == "cancelled" and summary["orders_cancelled"] == 1 and summary["units_restored"] == 4
    assert stock_of(tea) == [10 - 1]
    assert Order.objects.get(pk=other.pk).status == Order.Status.PENDING_PAYMENT
    assert notice_ids() == [[str(order.pk)]]
    assert payment_failed_rows() == {}


@pytest.mark.parametrize("order_id", [str(uuid.uuid4()), "not-a-uuid"])
def test_cancelling_an_unknown_order_says_so_and_changes_nothing(order_id: str) -> None:
    summary = order_cancel_expired(order_id=order_id)

    assert summary["outcome"] == "not_found" and summary["orders_cancelled"] == 0
    assert order_id in summary["detail"]


def test_cancelling_a_paid_or_fresh_order_says_why_and_changes_nothing(customer: User) -> None:
    tea = make_product(stock=10)
    paid = place(customer, {tea: 1}, age_days=5)
    pay(paid, "p")
    fresh = place(customer, {tea: 1}, age_days=1)

    assert order_cancel_expired(order_id=str(paid.pk))["outcome"] == "not_pending"
    assert order_cancel_expired(order_id=str(fresh.pk))["outcome"] == "not_expired"
    assert stock_of(tea) == [8]
    assert set(Order.objects.values_list("status", flat=True)) == {"paid", "pending_payment"}


def test_cancelling_the_same_order_twice_restores_stock_once(customer: User) -> None:
    tea = make_product(stock=10)
    order = place(customer, {tea: 3}, age_days=4)

    first = order_cancel_expired(order_id=str(order.pk))
    second = order_cancel_expired(order_id=str(order.pk))

    assert (first["outcome"], second["outcome"]) == ("cancelled", "not_pending")
    assert stock_of(tea) == [10]


def test_products_never_go_negative_even_when_written_directly() -> None:
    from django.db import IntegrityError, transaction

    tea = make_product(stock=1)
    with pytest.raises(IntegrityError), transaction.atomic():
        Product.objects.filter(pk=tea.pk).update(stock=-1)


# Telling the customers --------------------------------------------------------------


def test_the_notify_task_writes_the_rows_of_cancelled_orders_then_a_repeat_writes_nothing(
    customer: User, broker: BrokerProbe, django_capture_on_commit_callbacks: Any
) -> None:
    # Given two cancelled orders, a pending one, and ids that name no order
    tea = make_product(stock=10)
    cancelled = [place(customer, {tea: 1}, age_days=4) for _ in range(2)]
    orders_cancel_expired()
    pending = place(customer, {tea: 1})
    ids = [str(o.pk) for o in cancelled]
    broker.flush()

    # When the task runs over them, then again
    with django_capture_on_commit_callbacks(execute=True):
        first = notify_payment_failed.apply(
            kwargs={"order_ids": [*ids, ids[0], str(pending.pk), str(uuid.uuid4()), "nope"]}
        ).result
    with django_capture_on_commit_callbacks(execute=True):
        again = notify_payment_failed.apply(kwargs={"order_ids": ids}).result

    # Then only the cancelled orders' rows are written, once, and each pending row is published once
    assert first == {"orders": 5, "notified": 2, "skipped": 3, "notifications_written": 4}
    assert again == {"orders": 2, "notified": 2, "skipped": 0, "notifications_written": 0}
    assert payment_failed_rows() == {
        **{(pk, "email"): "pending" for pk in ids},
        **{(pk, "sms"): "cancelled" for pk in ids},
    }
    assert sorted(broker.delivery_ids()) == pending_payment_failed_ids()


def test_a_notify_that_rolls_back_leaves_no_rows_and_no_intents(
    customer: User, monkeypatch: pytest.MonkeyPatch, broker: BrokerProbe
) -> None:
    # Given a cancelled order, and a notify that fails after writing the rows
    order = place(customer, {make_product(): 1}, age_days=4)
    orders_cancel_expired()
    OutboxIntent.objects.all().delete()
    real_notify = order_services.notify_many

    def notify_then_fail(requests: Any) -> int:
        assert real_notify(requests) == 2
        raise RuntimeError("failed before its commit")

    monkeypatch.setattr(order_services, "notify_many", notify_then_fail)

    # When the service runs
    with pytest.raises(RuntimeError, match="before its commit"):
        order_services.orders_notify_payment_failed(order_ids=[str(order.pk)])

    # Then nothing was written: the intent that ran it is still the order's notice
    assert payment_failed_rows() == {}
    assert intents() == []
    assert broker.delivery_ids() == []


def test_the_notify_service_runs_a_constant_number_of_queries(customer: User) -> None:
    tea = make_product(stock=100)
    few = [place(customer, {tea: 1}, age_days=4) for _ in range(2)]
    orders_cancel_expired()
    many = [place(customer, {tea: 1}, age_days=4) for _ in range(12)]
    orders_cancel_expired()

    with CaptureQueriesContext(connection) as two:
        order_services.orders_notify_payment_failed(order_ids=[o.pk for o in few])
    with CaptureQueriesContext(connection) as twelve:
        order_services.orders_notify_payment_failed(order_ids=[o.pk for o in many])

    assert len(two) == len(twelve)
