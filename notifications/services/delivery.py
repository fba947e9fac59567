"""Delivering one outbox row: claim, render, call the provider outside any transaction, record."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db.models import F, Q, QuerySet
from django.template import Context, Engine, TemplateSyntaxError
from django.utils import timezone
from redis.exceptions import RedisError

from notifications.exceptions import PermanentProviderError, TransientProviderError
from notifications.models import Channel, Notification, NotificationTemplate, PushDevice
from notifications.providers import OutboundMessage, get_provider
from notifications.services.ratelimit import rate_limit_acquire
from notifications.validation import email_validate, phone_validate

logger = logging.getLogger(__name__)

# Plain-text messages: HTML escaping would turn "Tom & Jerry" into "Tom &amp; Jerry" in an SMS.
_ENGINE = Engine(autoescape=False)
# The rule: never more than 10 minutes between two tries, even when Retry-After says more.
MAX_RETRY_DELAY_SECONDS = 600
# A message may arrive a little before the row's next_attempt_at (clock skew, ETA rounding).
CLAIM_EARLY_TOLERANCE = timedelta(seconds=1)


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
    the row must be tried again; returns a summary otherwise. Every outcome is written
    only while this call's claim holds (same `claimed_at`), so a slow worker whose row
    was recovered and claimed again cannot overwrite the second claim's result.
    """
    now = timezone.now()
    # The claim: of two workers holding the same message, only one moves the row out of pending;
    # and a duplicate message that arrives before the row's planned retry time does nothing.
    claimed = (
        Notification.objects.filter(pk=notification_id, status=Notification.Status.PENDING)
        .filter(Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now + CLAIM_EARLY_TOLERANCE))
        .update(status=Notification.Status.SENDING, attempts=F("attempts") + 1, claimed_at=now, updated_at=now)
    )
    if not claimed:
        current = Notification.objects.filter(pk=notification_id).values("status", "next_attempt_at").first()
        if current is None:
            logger.warning("notification %s does not exist; nothing to deliver", notification_id)
            return {"notification_id": notification_id, "outcome": "not_found"}
        if current["status"] == Notification.Status.PENDING:
            return {"notification_id": notification_id, "outcome": "not_due", "status": current["status"]}
        return {"notification_id": notification_id, "outcome": "skipped", "status": current["status"]}

    row = Notification.objects.select_related("device").get(pk=notification_id)
    claim = _Claim(pk=row.pk, claimed_at=now, attempts=row.attempts)
    provider_name = ""
    # Everything after the claim is in the try: whatever happens, the row leaves `sending`.
    try:
        message = _prepare(row, claim)
        provider = get_provider(row.channel)
        provider_name = provider.name
        _wait_for_rate_slot(row.channel, claim)
        provider_message_id = provider.send(message)
    except RateLimited:
        raise
    except PermanentProviderError as exc:
        if exc.deactivate_device and row.device_id:
            PushDevice.objects.filter(pk=row.device_id, active=True).update(
                active=False, deactivated_reason=str(exc)[:255], updated_at=timezone.now()
            )
        return _mark_failed(claim, str(exc), provider=provider_name)
    except ImproperlyConfigured as exc:
        # Retrying cannot fix settings; the dead-letter view's Retry resends once they are fixed.
        return _mark_failed(claim, f"not configured: {exc}", provider=provider_name)
    except (TransientProviderError, RedisError) as exc:
        if retry_countdown is None:
            return _mark_failed(claim, f"gave up after {claim.attempts} attempts: {exc}", provider=provider_name)
        retry_after = getattr(exc, "retry_after", None) or 0.0
        countdown = min(max(retry_countdown, retry_after), MAX_RETRY_DELAY_SECONDS)
        error = str(exc) or repr(exc)
        if retry_after > MAX_RETRY_DELAY_SECONDS:
            error += (
                f" (the provider asked to wait {retry_after:.0f}s; retrying after"
                f" {MAX_RETRY_DELAY_SECONDS}s, the longest wait between tries)"
            )
        _release(claim, error=error, countdown=countdown, provider=provider_name)
        raise RetryLater(error, countdown=countdown) from exc
    except Exception as exc:
        # A bug, not the provider: fail the row visibly rather than leave it in sending to be re-sent.
        _mark_failed(claim, f"unexpected error: {exc!r}", provider=provider_name)
        raise

    sent_at = timezone.now()
    recorded = claim.rows().update(
        status=Notification.Status.SENT,
        provider=provider_name,
        provider_message_id=provider_message_id[:255],
        sent_at=sent_at,
        updated_at=sent_at,
        last_error="",
    )
    if not recorded:
        logger.warning("notification %s was sent but its claim was taken over; its state is left alone", row.pk)
    return {"notification_id": row.pk, "outcome": "sent", "attempts": claim.attempts, "provider": provider_name}


@dataclass(frozen=True)
class _Claim:
    pk: int
    claimed_at: datetime
    attempts: int

    def rows(self) -> QuerySet[Notification]:
        """The row, only while it is still `sending` under this claim."""
        return Notification.objects.filter(pk=self.pk, status=Notification.Status.SENDING, claimed_at=self.claimed_at)


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


def _prepare(row: Notification, claim: _Claim) -> OutboundMessage:
    if row.channel == Channel.EMAIL:
        email_validate(row.to_address)
    elif row.channel == Channel.SMS:
        phone_validate(row.to_address)
    elif not row.to_address:
        raise PermanentProviderError("no push device token")
    elif row.device is not None and not row.device.active:
        raise PermanentProviderError(f"push device {row.device_id} is no longer active")
    subject, body = notification_render(template_key=row.template_key, channel=row.channel, context=row.context)
    claim.rows().update(subject=subject[:255], body=body)
    return OutboundMessage(
        channel=row.channel,
        to=row.to_address,
        subject=subject,
        body=body,
        data={str(k): str(v) for k, v in (row.data or {}).items()},
        reference=row.dedupe_key,
    )


def _wait_for_rate_slot(channel: str, claim: _Claim) -> None:
    """Wait briefly for a slot; past the limit, hand the row back instead of holding a worker."""
    deadline = time.monotonic() + settings.NOTIFICATIONS_RATE_LIMIT_MAX_WAIT_SECONDS
    while (wait := rate_limit_acquire(channel=channel)) > 0:
        if time.monotonic() + wait > deadline:
            now = timezone.now()
            next_at = now + timedelta(seconds=wait)
            claim.rows().update(
                status=Notification.Status.PENDING,
                attempts=F("attempts") - 1,
                # Due when the re-sent message arrives; recovery measures staleness from then too,
                # so a long wait is not mistaken for a lost message (and copied).
                next_attempt_at=next_at,
                enqueued_at=next_at,
                updated_at=now,
            )
            raise RateLimited(countdown=wait)
        time.sleep(wait)


def _release(claim: _Claim, *, error: str, countdown: float, provider: str) -> None:
    now = timezone.now()
    next_at = now + timedelta(seconds=countdown)
    claim.rows().update(
        status=Notification.Status.PENDING,
        last_error=error[:5000],
        provider=provider,
        next_attempt_at=next_at,
        # The recovery job measures staleness from here, so a planned retry is not "stuck".
        enqueued_at=next_at,
        updated_at=now,
    )


def _mark_failed(claim: _Claim, error: str, *, provider: str = "") -> dict[str, Any]:
    now = timezone.now()
    claim.rows().update(status=Notification.Status.FAILED, last_error=error[:5000], provider=provider, updated_at=now)
    logger.warning("notification %s failed: %s", claim.pk, error)
    return {"notification_id": claim.pk, "outcome": "failed", "attempts": claim.attempts, "error": error}
