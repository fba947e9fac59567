"""Delivering one outbox row: claim, render, call the provider outside any transaction, record."""

from __future__ import annotations

import logging
import time
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db.models import F
from django.template import Context, Engine, TemplateSyntaxError
from django.utils import timezone

from notifications.exceptions import PermanentProviderError, TransientProviderError
from notifications.models import Channel, Notification, NotificationTemplate, PushDevice
from notifications.providers import OutboundMessage, get_provider
from notifications.services.ratelimit import rate_limit_acquire
from notifications.validation import email_validate, phone_validate

logger = logging.getLogger(__name__)

# Plain-text messages: HTML escaping would turn "Tom & Jerry" into "Tom &amp; Jerry" in an SMS.
_ENGINE = Engine(autoescape=False)
MAX_RETRY_DELAY_SECONDS = 600


class RetryLater(Exception):
    """The row is back in `pending`; the task must retry it after `countdown` seconds."""

    def __init__(self, message: str, *, countdown: float) -> None:
        super().__init__(message)
        self.countdown = countdown


class RateLimited(Exception):
    """No rate-limit slot in time: the row is back in `pending`, to be re-sent without using a retry."""

    def __init__(self, *, countdown: float) -> None:
        super().__init__(f"rate limited, next slot in {countdown:.2f}s")
        self.countdown = countdown


def notification_deliver(*, notification_id: int, retry_countdown: float | None) -> dict[str, Any]:
    """Send one outbox row once.

    `retry_countdown` is the task's next backoff, or None when its retries are spent (a
    transient error then fails the row for good). Raises RetryLater or RateLimited when
    the row must be tried again; returns a summary otherwise.
    """
    now = timezone.now()
    # The claim: of two workers holding the same message, only one moves the row out of pending.
    claimed = Notification.objects.filter(pk=notification_id, status=Notification.Status.PENDING).update(
        status=Notification.Status.SENDING, attempts=F("attempts") + 1, claimed_at=now, updated_at=now
    )
    if not claimed:
        status = Notification.objects.filter(pk=notification_id).values_list("status", flat=True).first()
        if status is None:
            logger.warning("notification %s does not exist; nothing to deliver", notification_id)
            return {"notification_id": notification_id, "outcome": "not_found"}
        return {"notification_id": notification_id, "outcome": "skipped", "status": status}

    row = Notification.objects.select_related("device").get(pk=notification_id)
    try:
        message = _prepare(row)
    except PermanentProviderError as exc:
        return _mark_failed(row, str(exc))

    _wait_for_rate_slot(row)
    provider = get_provider(row.channel)
    try:
        provider_message_id = provider.send(message)
    except PermanentProviderError as exc:
        if exc.deactivate_device and row.device_id:
            PushDevice.objects.filter(pk=row.device_id, active=True).update(
                active=False, deactivated_reason=str(exc)[:255], updated_at=timezone.now()
            )
        return _mark_failed(row, str(exc), provider=provider.name)
    except TransientProviderError as exc:
        if retry_countdown is None:
            return _mark_failed(row, f"gave up after {row.attempts} attempts: {exc}", provider=provider.name)
        countdown = min(max(retry_countdown, exc.retry_after or 0.0), MAX_RETRY_DELAY_SECONDS)
        _release(row, error=str(exc), countdown=countdown, provider=provider.name)
        raise RetryLater(str(exc), countdown=countdown) from exc
    except Exception as exc:
        # A bug, not the provider: fail the row visibly rather than leave it in sending to be re-sent.
        _mark_failed(row, f"unexpected error: {exc!r}", provider=provider.name)
        raise

    sent_at = timezone.now()
    Notification.objects.filter(pk=row.pk, status=Notification.Status.SENDING).update(
        status=Notification.Status.SENT,
        provider=provider.name,
        provider_message_id=provider_message_id[:255],
        sent_at=sent_at,
        updated_at=sent_at,
        last_error="",
    )
    return {"notification_id": row.pk, "outcome": "sent", "attempts": row.attempts, "provider": provider.name}


def notification_render(*, template_key: str, channel: str, context: dict[str, Any]) -> tuple[str, str]:
    """(subject, body) of a template; PermanentProviderError when it is unknown or broken."""
    template = NotificationTemplate.objects.filter(key=template_key, channel=channel, is_active=True).first()
    if template is None:
        raise PermanentProviderError(f"unknown template {template_key!r} for channel {channel}")
    try:
        ctx = Context(context or {})
        subject = _ENGINE.from_string(template.subject).render(ctx) if template.subject else ""
        body = _ENGINE.from_string(template.body).render(ctx)
    except TemplateSyntaxError as exc:
        raise PermanentProviderError(f"template {template_key!r} ({channel}) does not render: {exc}") from exc
    # Email subjects must be one line; a stray newline in the context would break the header.
    return " ".join(subject.split()), body.strip()


def _prepare(row: Notification) -> OutboundMessage:
    if row.channel == Channel.EMAIL:
        email_validate(row.to_address)
    elif row.channel == Channel.SMS:
        phone_validate(row.to_address)
    elif not row.to_address:
        raise PermanentProviderError("no push device token")
    elif row.device is not None and not row.device.active:
        raise PermanentProviderError(f"push device {row.device_id} is no longer active")
    subject, body = notification_render(template_key=row.template_key, channel=row.channel, context=row.context)
    Notification.objects.filter(pk=row.pk).update(subject=subject[:255], body=body)
    return OutboundMessage(
        channel=row.channel,
        to=row.to_address,
        subject=subject,
        body=body,
        data={str(k): str(v) for k, v in (row.data or {}).items()},
        reference=row.dedupe_key,
    )


def _wait_for_rate_slot(row: Notification) -> None:
    """Wait briefly for a slot; past the limit, hand the row back instead of holding a worker."""
    deadline = time.monotonic() + settings.NOTIFICATIONS_RATE_LIMIT_MAX_WAIT_SECONDS
    while (wait := rate_limit_acquire(channel=row.channel)) > 0:
        if time.monotonic() + wait > deadline:
            now = timezone.now()
            Notification.objects.filter(pk=row.pk, status=Notification.Status.SENDING).update(
                status=Notification.Status.PENDING,
                attempts=F("attempts") - 1,
                enqueued_at=now,
                updated_at=now,
            )
            raise RateLimited(countdown=wait)
        time.sleep(wait)


def _release(row: Notification, *, error: str, countdown: float, provider: str) -> None:
    now = timezone.now()
    next_at = now + timedelta(seconds=countdown)
    Notification.objects.filter(pk=row.pk, status=Notification.Status.SENDING).update(
        status=Notification.Status.PENDING,
        last_error=error[:5000],
        provider=provider,
        next_attempt_at=next_at,
        # The recovery job measures staleness from here, so a planned retry is not "stuck".
        enqueued_at=next_at,
        updated_at=now,
    )


def _mark_failed(row: Notification, error: str, *, provider: str = "") -> dict[str, Any]:
    now = timezone.now()
    Notification.objects.filter(pk=row.pk, status=Notification.Status.SENDING).update(
        status=Notification.Status.FAILED, last_error=error[:5000], provider=provider, updated_at=now
    )
    logger.warning("notification %s failed: %s", row.pk, error)
    return {"notification_id": row.pk, "outcome": "failed", "attempts": row.attempts, "error": error}
