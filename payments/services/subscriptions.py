"""Subscriptions: the daily fan-out, one period's charge, the gateway's webhook, renewal reminders.

    00:00 UTC  subscriptions_queue_due: active subscriptions due today or earlier, 1,000 per
               transaction, each chunk's `payments.process_single_subscription` intents recorded
               with outbox_add_many and published after its commit as one pipelined batch
    worker     subscription_charge(subscription_id, period_start):
                 claim     the period's charge row (INSERT ... ON CONFLICT DO NOTHING, then locked)
                 stock     out of stock: nothing charged, the customer told, retried tomorrow
                 gateway   called outside any transaction; the attempt is recorded before it
                 captured  one transaction: period advanced, "charged" message, order placed + paid
                 declined  charge failed, failed days + 1; at SUBSCRIPTION_MAX_FAILED_DAYS past_due
                           and the payment_failed message
                 transient TransientGatewayError: Celery retries with the same idempotency key

A period is charged at most once because (1) its charge row is unique on (subscription,
period), (2) every gateway call of a try carries that row's idempotency key, so a retried
or repeated call gets the payment already made, and (3) the order is created under the
charge row's lock only when the row has none. A try ends with a decline (no money taken);
the next day's try gets a new key.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Case, Exists, F, OuterRef, Q, QuerySet, Value, When
from django.utils import timezone

from core.errors import Invalid
from core.progress import Progress
from core.services.outbox import Intent, outbox_add_many
from notifications.models import Channel
from notifications.services import NotifyRequest, notify, notify_many
from payments.gateways import (
    ChargeRequest,
    GatewayError,
    PaymentEvent,
    PaymentGateway,
    gateway_get,
    to_minor_units,
)
from payments.models import Order, Subscription, SubscriptionCharge, SubscriptionReminder
from payments.models.subscriptions import utc_today
from payments.services.orders import InsufficientStock, order_pay, order_place

logger = logging.getLogger(__name__)

CHARGE_TASK = "payments.process_single_subscription"
# Subscriptions per fan-out transaction: the outbox's own batch (one INSERT of 1,000 intents, one
# pipelined publish after the commit). Measured over 20,000 due subscriptions: 500, 1,000 and 5,000
# all enqueue about 2,000 a second here (the per-message publish bounds it); 1,000 keeps each
# transaction short and puts the first messages on the queue sooner.
FAN_OUT_CHUNK_SIZE = 1000
# Subscriptions per reminder transaction: 1,000 reminders are 2,000 notification rows and their
# delivery intents, the notifications outbox's own chunk.
REMINDER_CHUNK_SIZE = 1000
MAX_CHARGE_NOW = 1000
CHANNELS = [Channel.EMAIL, Channel.SMS]


# Keys ------------------------------------------------------------------------------------


def idempotency_key(subscription_id: int, period: date) -> str:
    """The first try's key for a period; each try after a decline gets `_r<n>` (see `_next_try_key`)."""
    return f"sub_{subscription_id}_{period:%Y%m%d}"


def _next_try_key(key: str) -> str:
    base, sep, number = key.rpartition("_r")
    return f"{base}_r{int(number) + 1}" if sep and number.isdigit() else f"{key}_r1"


def charge_dedupe_key(subscription_id: int, period: date, run_date: date) -> str:
    """One charge intent per subscription, period and day: a second run that day adds nothing, the next day's retries."""
    return f"subscription-charge:{subscription_id}:{period.isoformat()}:{run_date.isoformat()}"


def _parse_period(value: date | str) -> date:
    if isinstance(value, date):
        return value
    try:
        return date.fromisoformat(str(value))
    except ValueError:
        raise Invalid({"period_start": [f"Expected a date such as 2025-01-31, got {value!r}."]}) from None


# The daily fan-out -------------------------------------------------------------------------


def _active_by_date(*, first: date | None, last: date, after: tuple[date, int] | None) -> QuerySet[Subscription]:
    """Active subscriptions charged between `first` and `last`, after `after`, in (next_charge_date, id) order.

    Keyset pagination over the partial index `subscription_active_by_date`: each page starts
    where the last one ended, so subscriptions charged meanwhile (their date moves past
    `last`) are neither revisited nor in the way.
    """
    qs = Subscription.objects.filter(status=Subscription.Status.ACTIVE, next_charge_date__lte=last)
    if first is not None:
        qs = qs.filter(next_charge_date__gte=first)
    if after is not None:
        last_date, last_id = after
        qs = qs.filter(next_charge_date__gte=last_date).filter(
            Q(next_charge_date__gt=last_date) | Q(next_charge_date=last_date, id__gt=last_id)
        )
    return qs.order_by("next_charge_date", "id")


def _active_by_date_page(
    *, first: date | None, last: date, after: tuple[date, int] | None, limit: int
) -> list[tuple[date, int]]:
    """The next `limit` active subscriptions charged between `first` and `last`, as (next_charge_date, id)."""
    return list(_active_by_date(first=first, last=last, after=after).values_list("next_charge_date", "id")[:limit])


def _due_page(*, last: date, after: tuple[date, int] | None, limit: int) -> list[tuple[date, int, bool]]:
    """The next page of due subscriptions as (period, id, whether that period is already paid), in one query."""
    paid = SubscriptionCharge.objects.filter(
        subscription_id=OuterRef("pk"),
        period_start=OuterRef("next_charge_date"),
        status=SubscriptionCharge.Status.SUCCEEDED,
    )
    rows = _active_by_date(first=None, last=last, after=after).annotate(paid=Exists(paid))
    return list(rows.values_list("next_charge_date", "id", "paid")[:limit])


def subscriptions_queue_due(*, today: date | None = None, chunk_size: int = FAN_OUT_CHUNK_SIZE) -> dict[str, Any]:
    """Queue `payments.process_single_subscription` for every active subscription due on or before today.

    Per chunk, one transaction records the chunk's intents (outbox_add_many); the outbox
    publishes them after the commit in one pipelined batch. Idempotent: an intent is keyed
    by subscription, period and day, so running it again that day (or two runs at once)
    queues nothing more, and the charge itself is idempotent besides.

    Summary: `due` subscriptions seen = `queued` (charges queued now) + `already_charged`
    (periods paid but not yet delivered, out of stock: queued to deliver, not to charge) +
    `already_queued` (queued by an earlier run today).
    """
    run_date = today or utc_today()
    summary: dict[str, Any] = {
        "run_date": run_date.isoformat(),
        "due": 0,
        "queued": 0,
        "already_charged": 0,
        "already_queued": 0,
        "chunks": 0,
    }
    after: tuple[date, int] | None = None
    progress = Progress(total=_active_by_date(first=None, last=run_date, after=None).count())
    while page := _due_page(last=run_date, after=after, limit=chunk_size):
        after = (page[-1][0], page[-1][1])
        intents = [
            Intent(
                task=CHARGE_TASK,
                kwargs={"subscription_id": pk, "period_start": period.isoformat()},
                dedupe_key=charge_dedupe_key(pk, period, run_date),
            )
            for period, pk, _ in page
        ]
        with transaction.atomic():
            # The keys recorded now; the others were queued by an earlier run today.
            fresh = outbox_add_many(intents)
        delivering = sum(
            1 for (_, _, paid), intent in zip(page, intents, strict=True) if paid and intent.dedupe_key in fresh
        )
        summary["chunks"] += 1
        summary["due"] += len(page)
        summary["queued"] += len(fresh) - delivering
        summary["already_charged"] += delivering
        summary["already_queued"] += len(page) - len(fresh)
        progress.advance(len(page))
        if len(page) < chunk_size:
            break
    return summary


def subscriptions_charge_now(*, subscription_ids: Sequence[int]) -> dict[str, Any]:
    """Queue the charge of each given active subscription's next period now, due or not (the admin's "Charge now").

    Through the outbox like the daily run; the charge itself refuses a period already
    charged, so clicking twice charges once.
    """
    wanted = sorted(set(subscription_ids))
    if not wanted:
        raise Invalid({"subscription_ids": ["Give at least one subscription id."]})
    if len(wanted) > MAX_CHARGE_NOW:
        raise Invalid({"subscription_ids": [f"At most {MAX_CHARGE_NOW} at a time, got {len(wanted)}."]})
    stamp = timezone.now().strftime("%Y%m%dT%H%M%S")
    with transaction.atomic():
        rows = list(
            Subscription.objects.filter(pk__in=wanted, status=Subscription.Status.ACTIVE)
            .order_by("pk")
            .values_list("pk", "next_charge_date")
        )
        outbox_add_many(
            Intent(
                task=CHARGE_TASK,
                kwargs={"subscription_id": pk, "period_start": period.isoformat()},
                dedupe_key=f"subscription-charge:{pk}:{period.isoformat()}:now:{stamp}",
            )
            for pk, period in rows
        )
    queued = [pk for pk, _ in rows]
    return {
        "requested": len(wanted),
        "queued": len(queued),
        "not_active_or_unknown": sorted(set(wanted) - set(queued)),
    }


# One period's charge ----------------------------------------------------------------------


def subscription_charge(
    *, subscription_id: int, period_start: date | str | None = None, gateway: PaymentGateway | None = None
) -> dict[str, Any]:
    """Charge one subscription's period (its next charge date when `period_start` is omitted) once.

    Returns a summary whose `outcome` is one of: charged, already_charged, out_of_stock,
    paid_awaiting_stock, pending (the gateway's webhook will tell), declined, past_due,
    declined_today (tried today already), not_due, inactive, not_found. Raises
    TransientGatewayError for Celery to retry (same key), GatewayConfigurationError when our
    credentials are wrong (nothing counted against the customer).
    """
    now = timezone.now()
    summary: dict[str, Any] = {"subscription_id": subscription_id, "period_start": None}
    sub = Subscription.objects.select_related("plan__product", "user").filter(pk=subscription_id).first()
    if sub is None:
        logger.warning("subscription charge: subscription %s does not exist", subscription_id)
        return {**summary, "outcome": "not_found", "detail": f"No subscription with id {subscription_id}."}
    period = sub.next_charge_date if period_start is None else _parse_period(period_start)
    summary["period_start"] = period.isoformat()
    if period_start is None and period > utc_today():
        return {**summary, "outcome": "not_due", "detail": f"The next charge is on {period.isoformat()}."}
    charge, decision = _charge_claim(sub=sub, period=period, now=now)
    summary["charge_id"] = charge.pk if charge else None
    if charge is not None and decision == "deliver":
        return _charge_complete(charge_id=charge.pk, payment_id="", now=now, sub=sub)
    if charge is None or decision != "charge":
        return {
            **summary,
            "outcome": decision,
            **({"detail": charge.last_error} if decision == "out_of_stock" and charge else {}),
        }

    plan = sub.plan
    gw = gateway or gateway_get(charge.gateway)
    request = ChargeRequest(
        amount=charge.amount,
        currency=charge.currency,
        idempotency_key=charge.idempotency_key,
        customer_id=sub.gateway_customer_id,
        token_id=sub.gateway_token_id,
        description=f"{plan.name}, period from {period.isoformat()}",
        notes={"subscription_id": str(sub.pk), "period_start": period.isoformat()},
    )
    try:
        # An order existing already means an earlier call may have paid it: the gateway checks first.
        order_id, retried = charge.gateway_order_id, bool(charge.gateway_order_id)
        if not order_id:
            order_id, retried = _charge_order_store(charge_id=charge.pk, order_id=gw.create_order(request))
        result = gw.charge(replace(request, order_id=order_id, retried=retried))
    except GatewayError as exc:
        SubscriptionCharge.objects.filter(pk=charge.pk).update(
            last_error=f"{now:%Y-%m-%d %H:%M:%S} {exc.__class__.__name__}: {exc}"[:2000], updated_at=timezone.now()
        )
        raise
    if result.status == "captured":
        return _charge_complete(charge_id=charge.pk, payment_id=result.payment_id, now=timezone.now(), sub=sub)
    if result.status == "pending":
        SubscriptionCharge.objects.filter(pk=charge.pk, status=SubscriptionCharge.Status.INITIATED).update(
            gateway_payment_id=result.payment_id, updated_at=timezone.now()
        )
        return {**summary, "outcome": "pending", "payment_id": result.payment_id}
    return _charge_decline(charge_id=charge.pk, payment_id=result.payment_id, reason=result.reason, now=timezone.now())


def _charge_order_store(*, charge_id: int, order_id: str) -> tuple[str, bool]:
    """Keep the try's gateway order on its row before paying; (the order to pay, whether it may be paid already).

    Two workers holding the same charge may both create an order: the first stored wins,
    and the other pays that one, checking it first.
    """
    if SubscriptionCharge.objects.filter(pk=charge_id, gateway_order_id="").update(
        gateway_order_id=order_id, updated_at=timezone.now()
    ):
        return order_id, False
    return SubscriptionCharge.objects.values_list("gateway_order_id", flat=True).get(pk=charge_id), True


def _charge_claim(*, sub: Subscription, period: date, now: datetime) -> tuple[SubscriptionCharge | None, str]:
    """The period's charge row, locked, and what to do with it: charge (the attempt is recorded), deliver, or why not.

    The stock check uses the product row read with the subscription a moment ago: it only
    decides whether to try; order_place's locked reservation decides for good.
    """
    if sub.status != Subscription.Status.ACTIVE or sub.next_charge_date != period:
        # A stale intent (the period is charged and the date moved on), a paused subscription...
        existing = SubscriptionCharge.objects.filter(subscription=sub, period_start=period).first()
        if existing is not None and existing.status == SubscriptionCharge.Status.SUCCEEDED:
            return existing, "already_charged" if existing.order_id else "deliver"
        return existing, "inactive" if sub.status != Subscription.Status.ACTIVE else "not_due"
    with transaction.atomic():
        # The unique constraint decides who owns the period: a concurrent claim waits for this
        # insert's commit, then inserts nothing and locks the same row.
        SubscriptionCharge.objects.bulk_create(
            [
                SubscriptionCharge(
                    subscription=sub,
                    period_start=period,
                    amount=sub.plan.price,
                    currency=sub.plan.currency,
                    idempotency_key=idempotency_key(sub.pk, period),
                )
            ],
            ignore_conflicts=True,
        )
        charge = SubscriptionCharge.objects.select_for_update().get(subscription=sub, period_start=period)
        if charge.status == SubscriptionCharge.Status.SUCCEEDED:
            return charge, "already_charged" if charge.order_id else "deliver"
        changes: dict[str, Any] = {}
        if charge.status == SubscriptionCharge.Status.FAILED:
            if charge.last_attempt_at is not None and charge.last_attempt_at.astimezone(UTC).date() >= utc_today():
                return charge, "declined_today"
            # A new day, a new try: a declined call took no money, and a fresh key keeps the
            # gateway from answering with yesterday's decline.
            changes = {
                "status": SubscriptionCharge.Status.INITIATED,
                "idempotency_key": _next_try_key(charge.idempotency_key),
                "gateway_payment_id": "",
                "gateway_order_id": "",
            }
        plan = sub.plan
        if plan.product.stock < plan.quantity:
            _charge_out_of_stock(charge=charge, sub=sub, now=now, changes=changes)
            return charge, "out_of_stock"
        # The attempt is on record before the money can move, whatever happens to this process.
        changes.update(attempts=F("attempts") + 1, last_attempt_at=now, updated_at=now)
        SubscriptionCharge.objects.filter(pk=charge.pk).update(**changes)
        for name in ("status", "idempotency_key", "gateway_payment_id", "gateway_order_id"):
            if name in changes:
                setattr(charge, name, changes[name])
        return charge, "charge"


def _charge_out_of_stock(
    *, charge: SubscriptionCharge, sub: Subscription, now: datetime, changes: dict[str, Any]
) -> None:
    """Not enough stock to deliver: charge nothing, tell the customer (once a period); tomorrow's run tries again."""
    plan = sub.plan
    charge.last_error = (
        f"{now:%Y-%m-%d}: out of stock ({plan.product.stock} of {plan.quantity} x {plan.product.sku}); "
        "not charged, tried again tomorrow."
    )
    SubscriptionCharge.objects.filter(pk=charge.pk).update(**changes, last_error=charge.last_error, updated_at=now)
    notify(
        template="subscription_out_of_stock",
        user=sub.user,
        context={**_subscription_context(sub, charge.period_start), "paid": False},
        channels=CHANNELS,
        dedupe_key=f"subscription-out-of-stock:{sub.pk}:{charge.period_start.isoformat()}",
    )


def _charge_complete(
    *, charge_id: int, payment_id: str, now: datetime, sub: Subscription | None = None
) -> dict[str, Any]:
    """The money is taken: in one transaction, the charge succeeded, the period advanced, the message, the order.

    Under the charge row's lock, and only when the row has no order yet, so a repeated
    call (a redelivered task, a webhook after the synchronous answer) changes nothing. When
    the stock went between the check and here, the payment is still recorded and the
    delivery waits (`paid_awaiting_stock`): the next day's run delivers it without charging.
    `sub`: the subscription with its plan, product and user, when the caller has it loaded.
    """
    with transaction.atomic():
        charge = SubscriptionCharge.objects.select_for_update().get(pk=charge_id)
        if sub is None or sub.pk != charge.subscription_id:
            sub = Subscription.objects.select_related("plan__product", "user").get(pk=charge.subscription_id)
        period = charge.period_start
        summary: dict[str, Any] = {
            "subscription_id": sub.pk,
            "period_start": period.isoformat(),
            "charge_id": charge.pk,
        }
        if charge.order_id is not None:
            return {**summary, "outcome": "already_charged", "order_id": str(charge.order_id)}
        reference = payment_id or charge.gateway_payment_id or charge.idempotency_key
        paid: dict[str, Any] = {"status": SubscriptionCharge.Status.SUCCEEDED, "gateway_payment_id": reference}
        if charge.status != SubscriptionCharge.Status.SUCCEEDED:
            paid["charged_at"] = now
        plan = sub.plan
        order_id = uuid.uuid4()
        next_date = _next_charge_date(sub, period)
        try:
            with transaction.atomic():
                # The period advances (a past_due subscription that pays is active again), and the
                # message and the order are written last, so the product row is locked only briefly.
                Subscription.objects.filter(pk=sub.pk, next_charge_date=period).update(
                    current_period_start=period,
                    next_charge_date=next_date,
                    failed_attempts=0,
                    status=Case(
                        When(status=Subscription.Status.PAST_DUE, then=Value(Subscription.Status.ACTIVE)),
                        default=F("status"),
                    ),
                    updated_at=now,
                )
                notify(
                    template="subscription_charged",
                    user=sub.user,
                    context={
                        **_subscription_context(sub, period),
                        "amount": str(charge.amount),
                        "currency": charge.currency,
                        "order_number": str(order_id).upper(),
                        "next_charge_date": next_date.isoformat(),
                    },
                    channels=CHANNELS,
                    dedupe_key=f"subscription-charged:{sub.pk}:{period.isoformat()}",
                )
                # order_place's locking and reservation (products in key order, conditional
                # decrement), then the order carries what was charged and order_pay records it.
                order_place(customer_id=sub.user_id, items={plan.product_id: plan.quantity}, order_id=order_id)
                Order.objects.filter(pk=order_id).update(total=charge.amount, currency=charge.currency)
                order_pay(
                    order_id=order_id,
                    provider=charge.gateway,
                    provider_reference=reference,
                    amount=charge.amount,
                    currency=charge.currency,
                )
                SubscriptionCharge.objects.filter(pk=charge.pk).update(
                    **paid, order_id=order_id, last_error="", updated_at=now
                )
        except InsufficientStock as exc:
            SubscriptionCharge.objects.filter(pk=charge.pk).update(
                **paid,
                last_error=f"{now:%Y-%m-%d}: paid, but {exc.detail} Delivered once the stock is back.",
                updated_at=now,
            )
            notify(
                template="subscription_out_of_stock",
                user=sub.user,
                context={**_subscription_context(sub, period), "paid": True},
                channels=CHANNELS,
                dedupe_key=f"subscription-out-of-stock:{sub.pk}:{period.isoformat()}:paid",
            )
            logger.warning("subscription %s paid for %s but out of stock: %s", sub.pk, period, exc.detail)
            return {**summary, "outcome": "paid_awaiting_stock", "payment_id": reference}
    return {
        **summary,
        "outcome": "charged",
        "order_id": str(order_id),
        "payment_id": reference,
        "next_charge_date": next_date.isoformat(),
    }


def _charge_decline(*, charge_id: int, payment_id: str, reason: str, now: datetime) -> dict[str, Any]:
    """The gateway declined (no money taken): the charge fails, the failed days move, past_due at the limit."""
    limit = settings.SUBSCRIPTION_MAX_FAILED_DAYS
    with transaction.atomic():
        changes: dict[str, Any] = {
            "status": SubscriptionCharge.Status.FAILED,
            "last_error": f"{now:%Y-%m-%d %H:%M:%S} declined: {reason or 'no reason given'}"[:2000],
            "updated_at": now,
        }
        if payment_id:
            changes["gateway_payment_id"] = payment_id
        # Conditional: a decline is counted once however often it is reported (task and webhook).
        declined = SubscriptionCharge.objects.filter(pk=charge_id, status=SubscriptionCharge.Status.INITIATED).update(
            **changes
        )
        charge = SubscriptionCharge.objects.get(pk=charge_id)
        summary: dict[str, Any] = {
            "subscription_id": charge.subscription_id,
            "period_start": charge.period_start.isoformat(),
            "charge_id": charge.pk,
        }
        if not declined:
            return {**summary, "outcome": "already_recorded", "status": charge.status}
        Subscription.objects.filter(pk=charge.subscription_id).update(
            failed_attempts=F("failed_attempts") + 1, updated_at=now
        )
        sub = Subscription.objects.select_related("plan__product", "user").get(pk=charge.subscription_id)
        past_due = False
        if sub.failed_attempts >= limit:
            past_due = (
                Subscription.objects.filter(pk=sub.pk, status=Subscription.Status.ACTIVE).update(
                    status=Subscription.Status.PAST_DUE, updated_at=now
                )
                == 1
            )
        if past_due:
            notify(
                template="payment_failed",
                user=sub.user,
                context=_payment_failed_context(sub, charge),
                channels=CHANNELS,
                dedupe_key=f"subscription-payment-failed:{sub.pk}:{charge.period_start.isoformat()}",
            )
    return {
        **summary,
        "outcome": "past_due" if past_due else "declined",
        "failed_attempts": sub.failed_attempts,
        "max_failed_days": limit,
        "reason": reason,
    }


def _next_charge_date(sub: Subscription, period: date) -> date:
    """The period after `period`, skipping any already in the past (a late charge never makes a catch-up run)."""
    anchor = sub.started_on.day
    nxt = sub.plan.period_after(period, anchor_day=anchor)
    today = utc_today()
    while nxt <= today:
        nxt = sub.plan.period_after(nxt, anchor_day=anchor)
    return nxt


# The gateway's webhook ----------------------------------------------------------------------


def subscription_charge_apply_event(*, gateway_name: str, event: PaymentEvent) -> dict[str, Any]:
    """Apply a verified payment event (payment.captured / payment.failed) to the charge it is about.

    Idempotent: an unknown payment id, an event for a charge already in that state (a
    replay) or any other event is ignored and changes nothing.
    """
    base: dict[str, Any] = {"event": event.event, "payment_id": event.payment_id}
    charge = SubscriptionCharge.objects.filter(gateway=gateway_name, gateway_payment_id=event.payment_id).first()
    if charge is None:
        logger.info("%s webhook: unknown payment %s (%s); ignored", gateway_name, event.payment_id, event.event)
        return {**base, "outcome": "ignored", "detail": "No subscription charge has this payment id."}
    base["charge_id"] = charge.pk
    if event.event == "payment.captured":
        if charge.order_id is not None:
            return {**base, "outcome": "duplicate", "detail": "The charge is recorded already."}
        expected = to_minor_units(charge.amount, charge.currency)
        if (event.amount_minor is not None and event.amount_minor != expected) or (
            event.currency and event.currency.upper() != charge.currency
        ):
            logger.warning(
                "%s webhook: payment %s captured %s %s, charge %s expects %s; ignored",
                gateway_name,
                event.payment_id,
                event.amount_minor,
                event.currency,
                charge.pk,
                expected,
            )
            return {**base, "outcome": "ignored", "detail": "The amount or currency is not the charge's."}
        return {**base, **_charge_complete(charge_id=charge.pk, payment_id=event.payment_id, now=timezone.now())}
    if event.event == "payment.failed":
        if charge.status != SubscriptionCharge.Status.INITIATED:
            return {**base, "outcome": "duplicate", "detail": f"The charge is {charge.status} already."}
        return {
            **base,
            **_charge_decline(
                charge_id=charge.pk, payment_id=event.payment_id, reason=event.reason, now=timezone.now()
            ),
        }
    return {**base, "outcome": "ignored", "detail": f"Event {event.event} is not handled."}


# Renewal reminders ----------------------------------------------------------------------------


def subscriptions_remind_renewals(
    *, now: datetime | None = None, chunk_size: int = REMINDER_CHUNK_SIZE
) -> dict[str, Any]:
    """Remind (email and SMS) every active subscriber whose next charge falls within the next 24 hours.

    A charge happens at 00:00 UTC of its date, so within (now, now + 24 h] means the charge
    date is tomorrow (UTC). Once per period whatever the number of runs: a reminder row per
    (subscription, period) and the notifications' dedupe key, both written in the chunk's
    transaction with `notify_many`.
    """
    moment = (now or timezone.now()).astimezone(UTC)
    first = moment.date() + timedelta(days=1)
    last = (moment + timedelta(hours=24)).date()
    summary: dict[str, Any] = {"charge_date": first.isoformat(), "due": 0, "reminded": 0, "already_reminded": 0}
    after: tuple[date, int] | None = None
    progress = Progress(total=_reminder_candidates(Subscription.objects.all(), first, last).count())
    while page := _active_by_date_page(first=first, last=last, after=after, limit=chunk_size):
        after = page[-1]
        with transaction.atomic():
            subs = list(
                _reminder_candidates(Subscription.objects.filter(pk__in=[pk for _, pk in page]), first, last)
                .select_related("user", "plan__product")
                .order_by("pk")
            )
            done = set(
                SubscriptionReminder.objects.filter(
                    subscription_id__in=[s.pk for s in subs], period_start__range=(first, last)
                ).values_list("subscription_id", "period_start")
            )
            fresh = [s for s in subs if (s.pk, s.next_charge_date) not in done]
            SubscriptionReminder.objects.bulk_create(
                [SubscriptionReminder(subscription=s, period_start=s.next_charge_date, sent_at=moment) for s in fresh],
                ignore_conflicts=True,
            )
            notify_many(
                NotifyRequest(
                    template="subscription_renewal_reminder",
                    user=s.user,
                    context=_reminder_context(s),
                    channels=CHANNELS,
                    dedupe_key=f"subscription-reminder:{s.pk}:{s.next_charge_date.isoformat()}",
                )
                for s in fresh
            )
        summary["due"] += len(page)
        summary["reminded"] += len(fresh)
        summary["already_reminded"] += len(subs) - len(fresh)
        progress.advance(len(page))
        if len(page) < chunk_size:
            break
    return summary


def _reminder_candidates(qs: QuerySet[Subscription], first: date, last: date) -> QuerySet[Subscription]:
    return qs.filter(status=Subscription.Status.ACTIVE, next_charge_date__range=(first, last))


# Message contexts: built here, so notifications never reads payments' tables -------------------


def _customer_name(sub: Subscription) -> str:
    return sub.user.get_full_name() or sub.user.get_username()


def _subscription_context(sub: Subscription, period: date) -> dict[str, Any]:
    return {
        "subscription_id": sub.pk,
        "customer_name": _customer_name(sub),
        "product_name": sub.plan.product.name,
        "quantity": sub.plan.quantity,
        "period_start": period.isoformat(),
    }


def _reminder_context(sub: Subscription) -> dict[str, Any]:
    return {
        "subscription_id": sub.pk,
        "customer_name": _customer_name(sub),
        "product_name": sub.plan.product.name,
        "renewal_date": sub.next_charge_date.isoformat(),
        "amount": str(sub.plan.price),
        "currency": sub.plan.currency,
    }


def _payment_failed_context(sub: Subscription, charge: SubscriptionCharge) -> dict[str, Any]:
    """The payment_failed template's context (written for orders): the period's charge stands for the order."""
    plan = sub.plan
    return {
        "subscription_id": sub.pk,
        "order_number": f"SUB-{sub.pk}-{charge.period_start:%Y%m%d}",
        "customer_name": _customer_name(sub),
        "total": str(charge.amount),
        "currency": charge.currency,
        "cancel_reason": "",
        "items": [
            {
                "product": f"{plan.name} ({plan.quantity} x {plan.product.name})",
                "quantity": 1,
                "unit_price": str(charge.amount),
            }
        ],
    }
