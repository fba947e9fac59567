"""Thin Celery shells over the notifications services. All route to the `notifications` queue."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from celery import Task, shared_task
from celery.utils.time import get_exponential_backoff_interval
from django.conf import settings

from notifications.services.delivery import MAX_RETRY_DELAY_SECONDS
from notifications.services.outbox import summary_of

logger = logging.getLogger(__name__)

# The delivery policy, declared on the task and read back from it by `_next_countdown`:
# 3 retries at most, exponential backoff with full jitter (base NOTIFICATIONS_RETRY_BACKOFF_SECONDS),
# never more than 10 minutes between two tries (Redis's visibility_timeout is well above that).
MAX_RETRIES = 3
RETRY_BACKOFF_MAX_SECONDS = MAX_RETRY_DELAY_SECONDS


# The raw send tasks carry one-time codes in their arguments: ignore_result keeps
# django-celery-results (result_extended) from storing them; the outbox row has the outcome.


def _dedupe(task: Task[Any, Any], prefix: str) -> str:
    # A redelivered message keeps its task id, so it maps to the same outbox rows.
    return f"{prefix}:{task.request.id or uuid.uuid4()}"


@shared_task(
    bind=True,
    name="notifications.deliver",
    max_retries=MAX_RETRIES,
    # True: the factor is NOTIFICATIONS_RETRY_BACKOFF_SECONDS (an int here would be the factor).
    retry_backoff=True,
    retry_backoff_max=RETRY_BACKOFF_MAX_SECONDS,
    retry_jitter=True,
    acks_late=True,
)
def deliver(self: Task[Any, Any], notification_id: int) -> dict[str, Any]:
    """Deliver one outbox row; retry transient provider errors only, honouring Retry-After.

    There is no autoretry_for (only transient errors retry, and the row must be released
    first), so the countdown is computed here from the policy declared above, raised to
    the provider's Retry-After when that is longer, capped at retry_backoff_max.
    """
    from notifications.services.delivery import RateLimited, RetryLater, notification_deliver

    try:
        return notification_deliver(notification_id=notification_id, retry_countdown=_next_countdown(self))
    except RetryLater as exc:
        raise self.retry(exc=exc, countdown=exc.countdown) from None
    except RateLimited as exc:
        # Not a failure: re-send without spending one of the three retries.
        self.apply_async((notification_id,), countdown=exc.countdown, retries=self.request.retries)  # type: ignore[call-arg]
        return {"notification_id": notification_id, "outcome": "rate_limited", "countdown": exc.countdown}


def _next_countdown(task: Task[Any, Any]) -> float | None:
    """The backoff before the next retry, or None when the retries are spent."""
    if task.max_retries is not None and task.request.retries >= task.max_retries:
        return None
    # Celery sets these attributes from the decorator's options; the stubs do not declare them.
    backoff = getattr(task, "retry_backoff", True)
    factor = settings.NOTIFICATIONS_RETRY_BACKOFF_SECONDS if backoff is True else int(backoff)
    return float(
        get_exponential_backoff_interval(
            factor=factor,
            retries=task.request.retries,
            maximum=int(getattr(task, "retry_backoff_max", RETRY_BACKOFF_MAX_SECONDS)),
            full_jitter=bool(getattr(task, "retry_jitter", True)),
        )
    )


@shared_task(bind=True, name="notifications.send_email", ignore_result=True)
def send_email(self: Task[Any, Any], to: str, subject: str, body: str) -> dict[str, Any]:
    from notifications.services import notify

    rows = notify(
        template="raw_email",
        to=to,
        context={"subject": subject, "body": body},
        channels=["email"],
        dedupe_key=_dedupe(self, "send_email"),
    )
    return summary_of(rows)


@shared_task(bind=True, name="notifications.send_sms", ignore_result=True)
def send_sms(self: Task[Any, Any], to: str, body: str) -> dict[str, Any]:
    from notifications.services import notify

    rows = notify(
        template="raw_sms", to=to, context={"body": body}, channels=["sms"], dedupe_key=_dedupe(self, "send_sms")
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
