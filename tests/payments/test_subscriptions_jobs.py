"""The subscription jobs: the due fan-out through the outbox, renewal reminders, routing, beat entries, charge now."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import time_machine
from celery import current_app
from django.core.management import CommandError, call_command
from django_celery_beat.models import PeriodicTask
from rest_framework.test import APIClient

from core.catalog import JobCatalog
from core.models import JobRun
from core.scheduler import SchedulerService
from core.services import outbox
from notifications.models import Notification
from notifications.tasks import deliver  # noqa: F401  # registers the task notify() names in its intents
from payments.models import Subscription, SubscriptionCharge, SubscriptionReminder
from payments.models.subscriptions import utc_today
from payments.services.subscriptions import subscriptions_queue_due, subscriptions_remind_renewals
from payments.tasks import process_due_subscriptions, process_single_subscription, send_subscription_renewal_reminders
from tests.support.broker import BrokerProbe
from tests.support.factories.subscriptions import make_plan, make_subscription, seed_due_subscriptions
from tests.support.outbox import intent_kwargs, intents

pytestmark = pytest.mark.django_db

CHARGE = "payments.process_single_subscription"


def test_the_three_subscription_tasks_are_routed_to_their_own_queue_and_the_rest_of_payments_is_not() -> None:
    router = current_app.amqp.router
    for name in (
        "payments.process_due_subscriptions",
        "payments.process_single_subscription",
        "payments.send_subscription_renewal_reminders",
    ):
        assert router.route({}, name)["queue"].name == "subscriptions", name
    assert router.route({}, "payments.check_payment_timeouts")["queue"].name == "payments"
    assert JobCatalog.get("due_subscriptions").queue == "subscriptions"
    assert JobCatalog.get("subscription_reminders").queue == "subscriptions"
    assert JobCatalog.get("expired_carts_cleanup").queue == "maintenance"


def test_setup_default_tasks_installs_the_guides_schedules() -> None:
    SchedulerService.setup_default_tasks()

    entries = {
        t.name: (t.task, t.crontab.minute, t.crontab.hour, str(t.crontab.timezone), t.expire_seconds, t.enabled)
        for t in PeriodicTask.objects.filter(
            name__in=["due_subscriptions", "subscription_reminders", "expired_carts_cleanup"]
        ).select_related("crontab")
    }
    assert entries == {
        "due_subscriptions": ("payments.process_due_subscriptions", "0", "0", "UTC", 86400, True),
        "subscription_reminders": ("payments.send_subscription_renewal_reminders", "0", "*", "UTC", 3600, True),
        "expired_carts_cleanup": ("maintenance.cleanup_expired_carts", "0", "2", "UTC", 86400, True),
    }
    assert not PeriodicTask.objects.filter(name="subscription_charge_now").exists()


def test_the_fan_out_queues_each_due_subscription_once_in_one_pipelined_batch_per_chunk(
    broker: BrokerProbe, django_capture_on_commit_callbacks: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given 2,500 subscriptions due today, one overdue since yesterday, and some that are not due
    plans = [make_plan() for _ in range(3)]
    today = utc_today()
    due = seed_due_subscriptions(plans, count=2500)
    overdue = make_subscription(plan=plans[0], next_charge_date=today - timedelta(days=1))
    make_subscription(plan=plans[0], next_charge_date=today + timedelta(days=1))
    make_subscription(plan=plans[0], status=Subscription.Status.PAUSED)
    make_subscription(plan=plans[0], status=Subscription.Status.PAST_DUE)
    batches: list[int] = []
    real_publish = outbox.messages_publish
    monkeypatch.setattr(
        outbox, "messages_publish", lambda messages: (batches.append(len(messages)), real_publish(messages))
    )

    # When the fan-out runs (chunks of 1,000) and its chunks commit
    with django_capture_on_commit_callbacks(execute=True):
        summary = subscriptions_queue_due(chunk_size=1000)

    # Then one intent and one message per due subscription, published in one batch per chunk
    assert summary == {
        "run_date": today.isoformat(),
        "due": 2501,
        "queued": 2501,
        "already_charged": 0,
        "already_queued": 0,
        "chunks": 3,
    }
    assert batches == [1000, 1000, 501]
    queued = Counter(t.kwargs["subscription_id"] for t in broker.tasks("subscriptions", CHARGE))
    assert set(queued) == {s.pk for s in due} | {overdue.pk} and set(queued.values()) == {1}
    assert {"subscription_id": overdue.pk, "period_start": (today - timedelta(days=1)).isoformat()} in intent_kwargs(
        CHARGE
    )
    assert intents(CHARGE, published=False) == []

    # And a second run that day queues nothing more
    with django_capture_on_commit_callbacks(execute=True):
        again = subscriptions_queue_due(chunk_size=1000)
    assert (again["due"], again["queued"], again["already_queued"]) == (2501, 0, 2501)
    assert len(broker.tasks("subscriptions", CHARGE)) == 2501


def test_a_paid_period_waiting_for_stock_is_queued_to_deliver_and_counted_as_already_charged() -> None:
    sub = make_subscription()
    SubscriptionCharge.objects.create(
        subscription=sub,
        period_start=sub.next_charge_date,
        amount=sub.plan.price,
        currency=sub.plan.currency,
        idempotency_key="sub_x",
        status=SubscriptionCharge.Status.SUCCEEDED,
        gateway_payment_id="pay_1",
    )

    summary = subscriptions_queue_due()

    assert (summary["due"], summary["queued"], summary["already_charged"]) == (1, 0, 1)
    assert len(intents(CHARGE)) == 1


def test_the_seeds_calls_as_written_queue_on_the_subscriptions_queue(broker: BrokerProbe) -> None:
    sub = make_subscription()

    process_due_subscriptions.delay()
    process_single_subscription.delay(sub.pk)
    send_subscription_renewal_reminders.delay()

    assert [t.name for t in broker.tasks("subscriptions")] == [
        "payments.process_due_subscriptions",
        "payments.process_single_subscription",
        "payments.send_subscription_renewal_reminders",
    ]


def test_reminders_go_out_once_per_period_across_hourly_runs() -> None:
    # Given subscriptions charged tomorrow, the day after, and a paused one charged tomorrow
    today = utc_today()
    tomorrow_sub = make_subscription(next_charge_date=today + timedelta(days=1))
    later_sub = make_subscription(next_charge_date=today + timedelta(days=2))
    make_subscription(next_charge_date=today + timedelta(days=1), status=Subscription.Status.PAUSED)
    midnight = datetime.combine(today, datetime.min.time(), tzinfo=UTC)
    reminded: list[int] = []

    # When the job runs every hour for two days (at :00, as beat runs it)
    for hour in range(48):
        with time_machine.travel(midnight + timedelta(hours=hour), tick=False):
            reminded.append(subscriptions_remind_renewals()["reminded"])

    # Then each was reminded once, within the 24 hours before its charge (00:00 UTC of its date)
    assert reminded[0] == 1 and reminded[24] == 1 and sum(reminded) == 2
    rows = {r.subscription_id: r.period_start for r in SubscriptionReminder.objects.all()}
    assert rows == {tomorrow_sub.pk: today + timedelta(days=1), later_sub.pk: today + timedelta(days=2)}
    sent = Counter(
        Notification.objects.filter(template_key="subscription_renewal_reminder").values_list("user_id", "channel")
    )
    assert sent == {
        (tomorrow_sub.user_id, "email"): 1,
        (tomorrow_sub.user_id, "sms"): 1,
        (later_sub.user_id, "email"): 1,
        (later_sub.user_id, "sms"): 1,
    }
    row = Notification.objects.filter(user=tomorrow_sub.user, channel="email").get()
    assert row.context["renewal_date"] == (today + timedelta(days=1)).isoformat()
    assert row.context["amount"] == str(tomorrow_sub.plan.price)

    # And the next period gets its own reminder
    Subscription.objects.filter(pk=tomorrow_sub.pk).update(next_charge_date=today + timedelta(days=8))
    with time_machine.travel(midnight + timedelta(days=7, minutes=5), tick=False):
        assert subscriptions_remind_renewals()["reminded"] == 1
    assert SubscriptionReminder.objects.filter(subscription=tomorrow_sub).count() == 2


def test_reminders_are_chunked_and_a_rerun_in_the_same_hour_writes_nothing() -> None:
    plans = [make_plan()]
    seed_due_subscriptions(plans, count=25, next_charge_date=utc_today() + timedelta(days=1))

    first = subscriptions_remind_renewals(chunk_size=10)
    second = subscriptions_remind_renewals(chunk_size=10)

    assert (first["due"], first["reminded"], first["already_reminded"]) == (25, 25, 0)
    assert (second["reminded"], second["already_reminded"]) == (0, 25)
    assert Notification.objects.filter(template_key="subscription_renewal_reminder").count() == 50


def test_charge_now_through_the_job_platform_queues_the_next_period_of_active_subscriptions(
    staff_client: APIClient,
) -> None:
    active = make_subscription(next_charge_date=utc_today() + timedelta(days=5))
    paused = make_subscription(status=Subscription.Status.PAUSED)

    response = staff_client.post(
        "/api/v1/admin/jobs/subscription_charge_now/trigger/",
        {"params": {"subscription_ids": [active.pk, paused.pk]}, "async": False},
        format="json",
    )

    assert response.status_code == 200, response.json()
    assert response.json()["summary"] == {"requested": 2, "queued": 1, "not_active_or_unknown": [paused.pk]}
    assert intent_kwargs(CHARGE) == [
        {"subscription_id": active.pk, "period_start": active.next_charge_date.isoformat()}
    ]


def test_charge_now_from_the_cli_takes_comma_separated_ids_and_refuses_bad_ones() -> None:
    sub = make_subscription()

    call_command("jobs", "run", "subscription_charge_now", "--param", f"subscription_ids={sub.pk}", "--sync")
    with pytest.raises(CommandError) as refused:
        call_command("jobs", "run", "subscription_charge_now", "--param", "subscription_ids=abc", "--sync")

    assert JobRun.objects.get(job_key="subscription_charge_now").summary["queued"] == 1
    assert refused.value.returncode == 2
    assert "subscription_ids" in str(refused.value)
