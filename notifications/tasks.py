"""Thin Celery shells over the notifications services. All route to the `notifications` queue."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from celery import Task, shared_task
from django.conf import settings
from django.db import InterfaceError, OperationalError

from core.task_base import BodyRedactingTask
from notifications.services.delivery import MAX_RETRY_DELAY_SECONDS, RetryPolicy
from notifications.services.outbox import DELIVER_TASK, REDELIVER_TASK, summary_of

logger = logging.getLogger(__name__)

# The delivery policy of every row: 3 retries at most, exponential backoff with full jitter
# (base NOTIFICATIONS_RETRY_BACKOFF_SECONDS), never more than 10 minutes between two tries (Redis's
# visibility_timeout is well above that). A batch retries per row, so the policy is handed to the
# service rather than to Celery's own retry, which would resend the whole batch.
MAX_RETRIES = 3
RETRY_BACKOFF_MAX_SECONDS = MAX_RETRY_DELAY_SECONDS


def delivery_policy() -> RetryPolicy:
    return RetryPolicy(
        max_retries=MAX_RETRIES,
        backoff_seconds=settings.NOTIFICATIONS_RETRY_BACKOFF_SECONDS,
        backoff_max_seconds=RETRY_BACKOFF_MAX_SECONDS,
        jitter=True,
    )


# The raw send tasks carry one-time codes in their arguments: ignore_result keeps
# django-celery-results (result_extended) from storing them; the outbox row has the outcome.


def _dedupe(task: Task[Any, Any], prefix: str) -> str:
    # A redelivered message keeps its task id, so it maps to the same outbox rows.
    return f"{prefix}:{task.request.id or uuid.uuid4()}"


# A database that went away mid-batch: the claim has not happened or is undone by the
# rollback, so the whole message is safe to run again (rows already claimed are the recovery's).
_DB_TRANSIENT = (OperationalError, InterfaceError)


@shared_task(
    name="notifications.deliver_batch",
    autoretry_for=_DB_TRANSIENT,
    max_retries=MAX_RETRIES,
    retry_backoff=True,
    retry_backoff_max=RETRY_BACKOFF_MAX_SECONDS,
    retry_jitter=True,
    acks_late=True,
)
def deliver_batch(channel: str, notification_ids: list[int]) -> dict[str, Any]:
    """Send a batch of one channel's outbox rows; each row retried by the delivery policy on its own."""
    from notifications.services.delivery import notifications_deliver_batch

    return notifications_deliver_batch(
        channel=channel,
        notification_ids=notification_ids,
        policy=delivery_policy(),
        retry_task=REDELIVER_TASK,
        wait_task=DELIVER_TASK,  # a fresh message waiting for its rate slot stays on the fresh lane
    )


@shared_task(
    name="notifications.redeliver_batch",
    autoretry_for=_DB_TRANSIENT,
    max_retries=MAX_RETRIES,
    retry_backoff=True,
    retry_backoff_max=RETRY_BACKOFF_MAX_SECONDS,
    retry_jitter=True,
    acks_late=True,
)
def redeliver_batch(channel: str, notification_ids: list[int]) -> dict[str, Any]:
    """`deliver_batch` for rows tried before (retries, rate-limit waits, recovery), on the `notifications_retry` queue."""
    from notifications.services.delivery import notifications_deliver_batch

    return notifications_deliver_batch(
        channel=channel, notification_ids=notification_ids, policy=delivery_policy(), retry_task=REDELIVER_TASK
    )


@shared_task(name="notifications.deliver", acks_late=True)
def deliver(notification_id: int) -> dict[str, Any]:
    """One row (messages queued before batch delivery, a shell): delivered as a batch of one."""
    from notifications.models import Notification
    from notifications.services.delivery import notifications_deliver_batch

    channel = Notification.objects.filter(pk=notification_id).values_list("channel", flat=True).first()
    if channel is None:
        logger.warning("notification %s does not exist; nothing to deliver", notification_id)
        return {"notification_id": notification_id, "outcome": "not_found"}
    return notifications_deliver_batch(
        channel=channel, notification_ids=[notification_id], policy=delivery_policy(), retry_task=REDELIVER_TASK
    )


class MessageTextTask(BodyRedactingTask):
    """The send tasks: the results store and Flower show a message's text as its length only."""

    redacted = frozenset({"subject", "body", "message"})


def _address(to: str | None, alias: str | None, alias_name: str) -> str:
    """`to`, or the seed guides' name for it (`to_email`, `to_phone`); exactly one of them."""
    if (to is None) == (alias is None):
        raise TypeError(f"give the address as `to` or as `{alias_name}` (one of them)")
    return str(to if to is not None else alias)


# Results are stored (ids, channels and statuses; never the text), so `result.get()` and
# `AsyncResult(id).status` work as the seed guides show:
#   send_email.delay(to_email="user@example.com", subject="Test", body="Test message").get(timeout=10)
@shared_task(bind=True, base=MessageTextTask, name="notifications.send_email")
def send_email(
    self: Task[Any, Any],
    to: str | None = None,
    subject: str = "",
    body: str = "",
    *,
    to_email: str | None = None,
) -> dict[str, Any]:
    from notifications.services import notify

    rows = notify(
        template="raw_email",
        to=_address(to, to_email, "to_email"),
        context={"subject": subject, "body": body},
        channels=["email"],
        dedupe_key=_dedupe(self, "send_email"),
    )
    return summary_of(rows)


@shared_task(bind=True, base=MessageTextTask, name="notifications.send_sms")
def send_sms(
    self: Task[Any, Any],
    to: str | None = None,
    body: str = "",
    *,
    to_phone: str | None = None,
    message: str | None = None,
) -> dict[str, Any]:
    from notifications.services import notify

    text = body if message is None else message
    rows = notify(
        template="raw_sms",
        to=_address(to, to_phone, "to_phone"),
        context={"body": text},
        channels=["sms"],
        dedupe_key=_dedupe(self, "send_sms"),
    )
    return summary_of(rows)


@shared_task(bind=True, name="notifications.send_templated_email", ignore_result=True)
def send_templated_email(self: Task[Any, Any], template: str, to: str, context: dict[str, Any]) -> dict[str, Any]:
    from notifications.services import notify

    rows = notify(
        template=template, to=to, context=context, channels=["email"], dedupe_key=_dedupe(self, f"email:{template}")
    )
    return summary_of(rows)


@shared_task(bind=True, name="notifications.send_templated_sms", ignore_result=True)
def send_templated_sms(self: Task[Any, Any], template: str, to: str, context: dict[str, Any]) -> dict[str, Any]:
    from notifications.services import notify

    rows = notify(
        template=template, to=to, context=context, channels=["sms"], dedupe_key=_dedupe(self, f"sms:{template}")
    )
    return summary_of(rows)


@shared_task(bind=True, name="notifications.send_push", ignore_result=True)
def send_push(
    self: Task[Any, Any], user_id: int, title: str, body: str, data: dict[str, Any] | None = None
) -> dict[str, Any]:
    from core.models import User
    from notifications.services import notify

    user = User.objects.filter(pk=user_id).first()
    if user is None:
        logger.warning("send_push: user %s does not exist", user_id)
        return {"user_id": user_id, "outcome": "not_found"}
    rows = notify(
        template="raw_push",
        user=user,
        context={"title": title, "body": body, "data": data or {}},
        channels=["push"],
        dedupe_key=_dedupe(self, "send_push"),
    )
    return summary_of(rows)


@shared_task(name="notifications.recover_outbox")
def recover_outbox(older_than_seconds: int | None = None) -> dict[str, Any]:
    from notifications.services import notifications_recover_stuck

    return notifications_recover_stuck(older_than_seconds=older_than_seconds)


@shared_task(name="notifications.retry_failed")
def retry_failed(notification_ids: list[int]) -> dict[str, int]:
    from notifications.services import notification_retry

    return notification_retry(notification_ids=notification_ids)
