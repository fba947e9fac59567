"""One period's charge: claim, gateway (a local HTTP server), outcome; retries, declines, stock, the webhook."""

from __future__ import annotations

import time
from collections import deque
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
import time_machine
from django.db import InterfaceError, OperationalError
from django.test import override_settings
from pytest_httpserver import HTTPServer
from rest_framework.test import APIClient

from core.models import User
from notifications.models import Notification
from notifications.tasks import deliver  # noqa: F401  # registers the task notify() names in its intents
from payments.gateways import (
    ChargeRequest,
    ChargeResult,
    GatewayConfigurationError,
    RazorpayGateway,
    TransientGatewayError,
)
from payments.models import Order, PaymentTransaction, Product, Subscription, SubscriptionCharge
from payments.models.subscriptions import utc_today
from payments.services.subscriptions import subscription_charge
from payments.tasks import process_single_subscription
from tests.support.factories.subscriptions import (
    GatewayStandIn,
    make_plan,
    make_subscription,
    payment_event,
    signed,
)

pytestmark = pytest.mark.django_db

WEBHOOK_SECRET = "whsec-test-0123456789"
WEBHOOK_URL = "/api/v1/webhooks/razorpay/"


@pytest.fixture
def gateway(httpserver: HTTPServer, settings: Any) -> GatewayStandIn:
    settings.RAZORPAY_BASE_URL = httpserver.url_for("/")
    settings.RAZORPAY_KEY_ID = "rzp_test_key"
    settings.RAZORPAY_KEY_SECRET = "rzp_test_secret"
    settings.RAZORPAY_WEBHOOK_SECRET = WEBHOOK_SECRET
    settings.RAZORPAY_TIMEOUT_SECONDS = 2
    stand_in = GatewayStandIn()
    stand_in.install(httpserver)
    return stand_in


def templates_sent(user: User) -> list[tuple[str, str]]:
    return sorted(Notification.objects.filter(user=user).values_list("template_key", "channel"))


def test_a_due_subscription_is_charged_once_its_order_paid_and_reserved_and_its_period_advanced(
    gateway: GatewayStandIn,
) -> None:
    # Given a weekly plan of 2 units at 15.00 (the catalogue says 10.00 a unit) and a subscription due today
    plan = make_plan(price="15.00", quantity=2, stock=10)
    sub = make_subscription(plan=plan)
    today = utc_today()

    # When it is charged
    summary = subscription_charge(subscription_id=sub.pk)

    # Then the gateway took one payment with the period's key, and the order is paid with the units reserved
    assert summary["outcome"] == "charged", summary
    assert gateway.calls == [f"sub_{sub.pk}_{today:%Y%m%d}"]
    charge = SubscriptionCharge.objects.get(subscription=sub)
    assert (charge.status, charge.period_start, charge.amount, charge.attempts) == ("succeeded", today, plan.price, 1)
    order = Order.objects.get(pk=charge.order_id)
    assert (order.status, order.payment_status, order.total, order.customer_id) == (
        "paid",
        "paid",
        plan.price,
        sub.user_id,
    )
    assert list(order.items.values_list("product_id", "quantity")) == [(plan.product_id, 2)]
    assert Product.objects.get(pk=plan.product_id).stock == 8
    assert PaymentTransaction.objects.get(order=order).provider_reference == charge.gateway_payment_id
    sub.refresh_from_db()
    assert (sub.current_period_start, sub.next_charge_date, sub.failed_attempts) == (today, today + timedelta(7), 0)
    # And the customer is told by email and SMS
    assert templates_sent(sub.user) == [("subscription_charged", "email"), ("subscription_charged", "sms")]


def test_charging_the_same_period_again_calls_nobody_and_changes_nothing(gateway: GatewayStandIn) -> None:
    sub = make_subscription()
    today = utc_today()
    subscription_charge(subscription_id=sub.pk, period_start=today)

    again = subscription_charge(subscription_id=sub.pk, period_start=today)

    assert again["outcome"] == "already_charged"
    assert len(gateway.calls) == 1
    assert Order.objects.count() == 1


def test_a_gateway_answering_500_500_200_is_called_three_times_with_one_key_and_charges_once(
    gateway: GatewayStandIn,
) -> None:
    # Given the gateway fails twice before it answers
    gateway.script = deque([500, 500])
    sub = make_subscription()

    # When the task runs (apply(): Celery's declared retries run at once, without their countdown)
    result = process_single_subscription.apply(kwargs={"subscription_id": sub.pk})

    # Then three calls carried the same idempotency key, and one payment was taken
    assert result.get()["outcome"] == "charged"
    key = SubscriptionCharge.objects.get(subscription=sub).idempotency_key
    assert gateway.calls == [key, key, key]
    assert len(gateway.captured()) == 1
    assert SubscriptionCharge.objects.get(subscription=sub).attempts == 3
    assert Order.objects.count() == 1


def test_the_task_declares_its_retry_policy_for_transient_gateway_and_database_errors_only() -> None:
    task = process_single_subscription
    assert task.autoretry_for == (TransientGatewayError, OperationalError, InterfaceError)
    assert (task.max_retries, task.retry_backoff, task.retry_backoff_max, task.retry_jitter) == (3, True, 600, True)


def test_a_database_connection_lost_after_the_gateway_took_the_money_is_retried_and_charges_once(
    gateway: GatewayStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a connection that dies (pg_terminate_backend, a failover) as the captured payment is recorded
    from payments.services import subscriptions

    real = subscriptions._charge_complete
    failures = [OperationalError("terminating connection due to administrator command")]

    def dies_once(**kwargs: Any) -> dict[str, Any]:
        if failures:
            raise failures.pop()
        return real(**kwargs)

    monkeypatch.setattr(subscriptions, "_charge_complete", dies_once)
    sub = make_subscription()

    # When the task runs (apply(): the declared retry runs at once)
    result = process_single_subscription.apply(kwargs={"subscription_id": sub.pk})

    # Then the retry found the payment already made on the try's order (no second payment call) and completed it
    assert result.get()["outcome"] == "charged"
    key = SubscriptionCharge.objects.get(subscription=sub).idempotency_key
    assert gateway.calls == [key]
    assert len(gateway.captured()) == 1
    assert SubscriptionCharge.objects.get(subscription=sub).status == "succeeded"
    assert Order.objects.filter(status="paid").count() == 1


def test_a_gateway_that_never_recovers_fails_the_task_after_three_retries_and_the_period_stays_open(
    gateway: GatewayStandIn,
) -> None:
    gateway.script = deque([503] * 4)
    sub = make_subscription()

    result = process_single_subscription.apply(kwargs={"subscription_id": sub.pk})

    assert isinstance(result.result, TransientGatewayError)
    charge = SubscriptionCharge.objects.get(subscription=sub)
    assert (charge.status, charge.attempts) == ("initiated", 4)
    assert "503" in charge.last_error
    assert Subscription.objects.get(pk=sub.pk).failed_attempts == 0
    # The next try (tomorrow's run) uses the same key: if one of those calls took money, it is not taken twice
    subscription_charge(subscription_id=sub.pk)
    assert gateway.calls == [charge.idempotency_key] * 5


def test_a_slow_gateway_is_a_transient_error(gateway: GatewayStandIn, settings: Any) -> None:
    settings.RAZORPAY_TIMEOUT_SECONDS = 1
    gateway.delay_seconds = 1.5
    sub = make_subscription()

    with pytest.raises(TransientGatewayError, match="unreachable"):
        subscription_charge(subscription_id=sub.pk)


def test_a_call_that_timed_out_after_the_gateway_took_the_money_is_answered_by_its_order_not_charged_again(
    gateway: GatewayStandIn, settings: Any
) -> None:
    # Given a gateway that takes the payment but answers after our 1-second timeout
    settings.RAZORPAY_TIMEOUT_SECONDS = 1
    gateway.delay_seconds = 1.5
    sub = make_subscription()
    with pytest.raises(TransientGatewayError):
        subscription_charge(subscription_id=sub.pk)
    # The stand-in finishes its slow answer (and takes the money) after we gave up listening
    deadline = time.monotonic() + 5
    while not gateway.captured() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(gateway.captured()) == 1

    # When the retry runs (the gateway is fast again)
    gateway.delay_seconds = 0
    summary = subscription_charge(subscription_id=sub.pk)

    # Then it finds the payment on the period's order, takes no second one, and delivers once
    assert summary["outcome"] == "charged"
    assert len(gateway.captured()) == 1 and len(gateway.orders) == 1
    charge = SubscriptionCharge.objects.get(subscription=sub)
    assert charge.gateway_payment_id == next(iter(gateway.captured()))
    assert charge.gateway_order_id == next(iter(gateway.orders))
    assert gateway.calls == [charge.idempotency_key]  # the retry asked the order, it did not pay again
    assert Order.objects.count() == 1


def test_a_second_payment_on_a_paid_order_is_refused_by_the_gateway_and_answered_with_the_first(
    gateway: GatewayStandIn,
) -> None:
    # Given one order, paid by a first call
    adapter = RazorpayGateway.from_settings()
    request = ChargeRequest(amount=Decimal("9.99"), currency="EUR", idempotency_key="sub_1_20261203", token_id="t")
    order_id = adapter.create_order(request)
    first = adapter.charge(replace(request, order_id=order_id))

    # When a second worker, not knowing, pays the same order
    second = adapter.charge(replace(request, order_id=order_id))

    # Then the gateway refused it and the adapter answers with the payment already made
    assert first.status == second.status == "captured"
    assert second.payment_id == first.payment_id
    assert len(gateway.captured()) == 1 and len(gateway.calls) == 2


def test_wrong_credentials_fail_without_counting_a_declined_day(gateway: GatewayStandIn, settings: Any) -> None:
    settings.RAZORPAY_KEY_ID = ""
    sub = make_subscription()

    with pytest.raises(GatewayConfigurationError, match="401"):
        subscription_charge(subscription_id=sub.pk)

    sub.refresh_from_db()
    assert (sub.status, sub.failed_attempts) == ("active", 0)
    assert SubscriptionCharge.objects.get(subscription=sub).status == "initiated"


def test_declines_move_the_failed_days_each_day_with_a_new_key_then_past_due_and_one_message(
    gateway: GatewayStandIn, settings: Any
) -> None:
    # Given a gateway that declines this subscriber's card, and a limit of 3 failed days
    settings.SUBSCRIPTION_MAX_FAILED_DAYS = 3
    sub = make_subscription()
    gateway.decline = {str(sub.pk)}
    day = datetime.combine(utc_today(), datetime.min.time(), tzinfo=UTC) + timedelta(minutes=5)
    outcomes = []

    # When the period is tried on three days, twice a day (a second run the same day changes nothing)
    for n in range(3):
        with time_machine.travel(day + timedelta(days=n), tick=False):
            outcomes.append(subscription_charge(subscription_id=sub.pk, period_start=sub.next_charge_date)["outcome"])
            outcomes.append(subscription_charge(subscription_id=sub.pk, period_start=sub.next_charge_date)["outcome"])
            sub.refresh_from_db()
            if n < 2:
                assert (sub.status, sub.failed_attempts) == ("active", n + 1)

    # Then: declined, declined, then past due (no longer charged); a new key each day, no order, one message
    assert outcomes == ["declined", "declined_today", "declined", "declined_today", "past_due", "inactive"]
    base = f"sub_{sub.pk}_{sub.next_charge_date:%Y%m%d}"
    assert gateway.calls == [base, f"{base}_r1", f"{base}_r2"]
    assert (sub.status, sub.failed_attempts) == ("past_due", 3)
    assert Order.objects.count() == 0
    assert SubscriptionCharge.objects.get(subscription=sub).status == "failed"
    assert templates_sent(sub.user) == [("payment_failed", "email"), ("payment_failed", "sms")]
    # And a past-due subscription is no longer charged
    with time_machine.travel(day + timedelta(days=3), tick=False):
        assert subscription_charge(subscription_id=sub.pk)["outcome"] == "inactive"
    assert len(gateway.calls) == 3


def test_out_of_stock_charges_nothing_tells_the_customer_once_and_the_next_day_charges_it(
    gateway: GatewayStandIn,
) -> None:
    # Given a plan of 3 units with 2 left
    plan = make_plan(quantity=3, stock=2)
    sub = make_subscription(plan=plan)
    day = datetime.combine(utc_today(), datetime.min.time(), tzinfo=UTC) + timedelta(minutes=1)

    # When it is due, twice that day
    with time_machine.travel(day, tick=False):
        first = subscription_charge(subscription_id=sub.pk)
        second = subscription_charge(subscription_id=sub.pk)

    # Then nothing was charged, the customer was told once, the period stays due
    assert (first["outcome"], second["outcome"]) == ("out_of_stock", "out_of_stock")
    assert gateway.calls == []
    assert templates_sent(sub.user) == [("subscription_out_of_stock", "email"), ("subscription_out_of_stock", "sms")]
    assert Subscription.objects.get(pk=sub.pk).next_charge_date == utc_today()

    # And the next day, restocked, the same period is charged
    Product.objects.filter(pk=plan.product_id).update(stock=5)
    with time_machine.travel(day + timedelta(days=1), tick=False):
        assert subscription_charge(subscription_id=sub.pk)["outcome"] == "charged"
    assert Product.objects.get(pk=plan.product_id).stock == 2
    assert SubscriptionCharge.objects.get(subscription=sub).period_start == utc_today()


def test_stock_gone_between_the_check_and_the_order_keeps_the_payment_and_delivers_the_next_day(
    gateway: GatewayStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the last units sell while the gateway call is in flight
    plan = make_plan(quantity=1, stock=1)
    sub = make_subscription(plan=plan)
    real_charge = RazorpayGateway.charge

    def charge_then_sell_out(self: RazorpayGateway, request: ChargeRequest) -> ChargeResult:
        result = real_charge(self, request)
        Product.objects.filter(pk=plan.product_id).update(stock=0)
        return result

    monkeypatch.setattr(RazorpayGateway, "charge", charge_then_sell_out)

    summary = subscription_charge(subscription_id=sub.pk)

    # Then the payment is recorded, the period stays open, nothing charged twice
    assert summary["outcome"] == "paid_awaiting_stock"
    charge = SubscriptionCharge.objects.get(subscription=sub)
    assert (charge.status, charge.order_id) == ("succeeded", None)
    monkeypatch.setattr(RazorpayGateway, "charge", real_charge)
    Product.objects.filter(pk=plan.product_id).update(stock=1)

    # When the next run comes, it delivers without calling the gateway
    assert subscription_charge(subscription_id=sub.pk)["outcome"] == "charged"
    assert len(gateway.calls) == 1
    assert SubscriptionCharge.objects.get(subscription=sub).order_id is not None


def test_a_subscription_that_no_longer_exists_is_reported_not_retried(gateway: GatewayStandIn) -> None:
    result = process_single_subscription.apply(kwargs={"subscription_id": 987654})

    assert result.successful()
    assert result.get()["outcome"] == "not_found"
    assert gateway.calls == []


def test_a_stale_period_or_a_paused_subscription_is_not_charged(gateway: GatewayStandIn) -> None:
    sub = make_subscription()
    paused = make_subscription(status=Subscription.Status.PAUSED)
    future = make_subscription(next_charge_date=utc_today() + timedelta(days=3))

    stale = subscription_charge(subscription_id=sub.pk, period_start=utc_today() - timedelta(days=7))

    assert stale["outcome"] == "not_due"
    assert subscription_charge(subscription_id=paused.pk)["outcome"] == "inactive"
    assert subscription_charge(subscription_id=future.pk)["outcome"] == "not_due"
    assert gateway.calls == []
    assert SubscriptionCharge.objects.count() == 0


def test_monthly_periods_keep_their_anchor_day(gateway: GatewayStandIn) -> None:
    plan = make_plan(interval="monthly")
    sub = make_subscription(plan=plan, next_charge_date=utc_today())
    Subscription.objects.filter(pk=sub.pk).update(started_on=utc_today().replace(day=1))

    subscription_charge(subscription_id=sub.pk)

    sub.refresh_from_db()
    nxt = sub.next_charge_date
    assert nxt.day == 1 and (nxt.year, nxt.month) != (utc_today().year, utc_today().month)


# The webhook -----------------------------------------------------------------------------------


def post_webhook(client: APIClient, body: bytes, signature: str) -> Any:
    return client.post(WEBHOOK_URL, data=body, content_type="application/json", HTTP_X_RAZORPAY_SIGNATURE=signature)


def test_a_pending_charge_is_completed_by_the_signed_webhook_and_a_replay_changes_nothing(
    gateway: GatewayStandIn, anon_client: APIClient
) -> None:
    # Given a charge the gateway took but has not captured yet
    gateway.pending = True
    sub = make_subscription(plan=make_plan(price="12.50"))
    assert subscription_charge(subscription_id=sub.pk)["outcome"] == "pending"
    charge = SubscriptionCharge.objects.get(subscription=sub)
    assert charge.gateway_payment_id and charge.order_id is None

    # When the gateway posts payment.captured, signed, twice
    body, signature = signed(payment_event("payment.captured", charge.gateway_payment_id, amount=1250), WEBHOOK_SECRET)
    first = post_webhook(anon_client, body, signature)
    replay = post_webhook(anon_client, body, signature)

    # Then the first completes the charge and the replay is a duplicate
    assert (first.status_code, first.json()["outcome"]) == (200, "charged")
    assert (replay.status_code, replay.json()["outcome"]) == (200, "duplicate")
    assert Order.objects.filter(customer=sub.user, status="paid").count() == 1
    assert Subscription.objects.get(pk=sub.pk).next_charge_date == utc_today() + timedelta(days=7)


def test_a_webhook_with_a_bad_signature_is_refused_with_400_and_changes_nothing(
    gateway: GatewayStandIn, anon_client: APIClient
) -> None:
    gateway.pending = True
    sub = make_subscription()
    subscription_charge(subscription_id=sub.pk)
    charge = SubscriptionCharge.objects.get(subscription=sub)
    body, _ = signed(payment_event("payment.captured", charge.gateway_payment_id, amount=999), WEBHOOK_SECRET)

    bad = post_webhook(anon_client, body, "0" * 64)
    missing = anon_client.post(WEBHOOK_URL, data=body, content_type="application/json")
    forged_body = post_webhook(anon_client, body.replace(b"999", b"1"), signed({}, WEBHOOK_SECRET)[1])

    for response in (bad, missing, forged_body):
        assert response.status_code == 400
        assert set(response.json()) == {"detail", "errors"}
        assert "signature" in response.json()["errors"]
    charge.refresh_from_db()
    assert (charge.status, charge.order_id) == ("initiated", None)


def test_a_webhook_for_an_unknown_payment_is_ignored(gateway: GatewayStandIn, anon_client: APIClient) -> None:
    body, signature = signed(payment_event("payment.captured", "pay_unknown", amount=100), WEBHOOK_SECRET)

    response = post_webhook(anon_client, body, signature)

    assert (response.status_code, response.json()["outcome"]) == (200, "ignored")
    assert Order.objects.count() == 0


def test_a_payment_failed_webhook_declines_the_charge_once(gateway: GatewayStandIn, anon_client: APIClient) -> None:
    gateway.pending = True
    sub = make_subscription()
    subscription_charge(subscription_id=sub.pk)
    charge = SubscriptionCharge.objects.get(subscription=sub)
    body, signature = signed(payment_event("payment.failed", charge.gateway_payment_id, amount=999), WEBHOOK_SECRET)

    first = post_webhook(anon_client, body, signature)
    replay = post_webhook(anon_client, body, signature)

    assert (first.json()["outcome"], replay.json()["outcome"]) == ("declined", "duplicate")
    sub.refresh_from_db()
    assert (sub.failed_attempts, SubscriptionCharge.objects.get(pk=charge.pk).status) == (1, "failed")


@override_settings(RAZORPAY_WEBHOOK_SECRET="")
def test_without_a_webhook_secret_every_webhook_is_refused(anon_client: APIClient) -> None:
    body, signature = signed(payment_event("payment.captured", "pay_1", amount=100), "")

    assert post_webhook(anon_client, body, signature).status_code == 400
