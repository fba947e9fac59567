"""Delivering outbox rows in batches: claim, render, take rate slots, send concurrently, record.

    claim      one UPDATE of the batch's due `pending` rows to `sending` (SKIP LOCKED: of two
               workers holding the same message, one gets each row)
    render     each row's template, compiled once per batch
    slots      the channel's rate limit, all the batch's slots in one Redis round trip; rows
               without a slot go back to `pending` for when one frees, no attempt spent
    send       outside any transaction: the provider's batch API, or its single sends run
               concurrently on the process's I/O pool (notifications.providers.base)
    record     one transaction: one UPDATE per outcome kind (sent, failed, retrying), each
               only over rows still `sending` under this claim, and the next tries' intents

A transient error (timeout, 5xx, 429) puts its row back to `pending` with the policy's backoff
(raised to the provider's Retry-After, 10 minutes at most) until its retries are spent; a
permanent one (a 4xx, a bad address, a dead device) fails the row at once. Failed rows are
the dead letters (admin, API), with a Retry action.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from celery.utils.time import get_exponential_backoff_interval
from django.core.exceptions import ImproperlyConfigured
from django.db import transaction
from django.db.models import F, Q
from django.template import Context, Engine, Template, TemplateSyntaxError
from django.utils import timezone
from redis.exceptions import RedisError

from core.services.bulk import update_rows
from notifications.exceptions import PermanentProviderError, TransientProviderError
from notifications.models import Channel, Notification, NotificationTemplate, PushDevice
from notifications.providers import OutboundMessage, get_provider
from notifications.providers.base import Outcome, send_all
from notifications.services.outbox import deliveries_record
from notifications.services.ratelimit import rate_limit_acquire_many
from notifications.validation import email_validate, phone_validate

logger = logging.getLogger(__name__)

# Plain-text messages: HTML escaping would turn "Tom & Jerry" into "Tom &amp; Jerry" in an SMS.
_ENGINE = Engine(autoescape=False)
# The rule: never more than 10 minutes between two tries, even when Retry-After says more.
MAX_RETRY_DELAY_SECONDS = 600
# A message may arrive a little before the row's next_attempt_at (clock skew, ETA rounding).
CLAIM_EARLY_TOLERANCE = timedelta(seconds=1)
# The fields an outcome writes, for bulk_update.
_RECORDED = ["status", "provider", "provider_message_id", "sent_at", "subject", "body", "last_error", "updated_at"]
_RELEASED = ["status", "provider", "subject", "body", "last_error", "next_attempt_at", "enqueued_at", "updated_at"]


@dataclass(frozen=True)
class RetryPolicy:
    """How many tries a row gets and how far apart: the delivery task declares it (notifications.tasks)."""

    max_retries: int
    backoff_seconds: int
    backoff_max_seconds: int = MAX_RETRY_DELAY_SECONDS
    jitter: bool = True

    def countdown(self, *, attempts: int, retry_after: float | None = None) -> float | None:
        """The wait before the next try after `attempts` tries, or None when the retries are spent."""
        retries_done = attempts - 1
        if retries_done >= self.max_retries:
            return None
        backoff = float(
            get_exponential_backoff_interval(
                factor=self.backoff_seconds,
                retries=retries_done,
                maximum=self.backoff_max_seconds,
                full_jitter=self.jitter,
            )
        )
        return min(max(backoff, retry_after or 0.0), float(self.backoff_max_seconds))


def notifications_deliver_batch(
    *,
    channel: str,
    notification_ids: Sequence[int],
    policy: RetryPolicy,
    retry_task: str,
    wait_task: str | None = None,
) -> dict[str, Any]:
    """Send the due `pending` rows among `notification_ids` (all of `channel`) once each.

    `retry_task` is the task the rows that must be tried again are queued for (the
    redelivery lane); `wait_task` the one rows that waited for a rate-limit slot are queued
    for (the lane they came on; `retry_task` when not given). Returns counts: requested, claimed, sent, failed, retrying,
    rate_limited. Every outcome is written only while this call's claim holds (same
    `claimed_at`), so a slow worker whose rows were recovered and claimed again cannot
    overwrite the second claim's result.
    """
    summary: dict[str, Any] = {"channel": channel, "requested": len(set(notification_ids)), "claimed": 0}
    summary.update(sent=0, failed=0, retrying=0, rate_limited=0)
    claim = timezone.now()
    rows = _claim(channel=channel, ids=notification_ids, now=claim)
    summary["claimed"] = len(rows)
    if not rows:
        return summary
    batch = _Batch(claim=claim, policy=policy)
    ready = batch.prepare(rows)
    try:
        provider = get_provider(channel)
    except ImproperlyConfigured as exc:
        # Retrying cannot fix settings; the dead-letter view's Retry resends once they are fixed.
        for row, _ in ready:
            batch.fail(row, f"not configured: {exc}")
        ready = []
        provider = None
    if ready:
        ready = batch.take_slots(channel, ready)
    if ready and provider is not None:
        messages = [message for _, message in ready]
        outcomes = send_all(provider, messages)
        for (row, _), outcome in zip(ready, outcomes, strict=True):
            batch.record(row, outcome, provider=provider.name)
    batch.save(retry_task=retry_task, wait_task=wait_task or retry_task)
    summary.update(
        sent=len(batch.sent),
        failed=len(batch.failed),
        retrying=len(batch.retrying),
        rate_limited=len(batch.deferred),
    )
    return summary


def _claim(*, channel: str, ids: Sequence[int], now: datetime) -> list[Notification]:
    """Move the due pending rows among `ids` to `sending` under one claim time; those rows, with their devices."""
    due = Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now + CLAIM_EARLY_TOLERANCE)
    with transaction.atomic():
        claimable = list(
            Notification.objects.filter(pk__in=list(ids), channel=channel, status=Notification.Status.PENDING)
            .filter(due)
            .select_for_update(skip_locked=True)
            .values_list("pk", flat=True)
        )
        if not claimable:
            return []
        Notification.objects.filter(pk__in=claimable).update(
            status=Notification.Status.SENDING, attempts=F("attempts") + 1, claimed_at=now, updated_at=now
        )
    return list(
        Notification.objects.filter(pk__in=claimable, status=Notification.Status.SENDING, claimed_at=now)
        .select_related("device")
        .order_by("pk")
    )


class _Batch:
    """The outcomes of one claim, written together by `save`."""

    def __init__(self, *, claim: datetime, policy: RetryPolicy) -> None:
        self.claim = claim
        self.policy = policy
        self.sent: list[Notification] = []
        self.failed: list[Notification] = []
        self.retrying: list[Notification] = []
        self.deferred: list[Notification] = []
        self.dead_devices: dict[int, str] = {}
        self._templates: dict[tuple[str, str], tuple[Template | None, Template] | str] = {}

    # Before sending -------------------------------------------------------------------

    def prepare(self, rows: Sequence[Notification]) -> list[tuple[Notification, OutboundMessage]]:
        """Validate and render each row; the ones that cannot be sent are failed at once."""
        self._load_templates(rows)
        ready = []
        for row in rows:
            try:
                ready.append((row, self._message(row)))
            except PermanentProviderError as exc:
                self.fail(row, str(exc))
        return ready

    def _load_templates(self, rows: Sequence[Notification]) -> None:
        keys = {(row.template_key, row.channel) for row in rows}
        found = NotificationTemplate.objects.filter(
            key__in={k for k, _ in keys}, channel__in={c for _, c in keys}, is_active=True
        )
        for template in found:
            key = (template.key, template.channel)
            if key not in keys:
                continue
            try:
                subject = _ENGINE.from_string(template.subject) if template.subject else None
                self._templates[key] = (subject, _ENGINE.from_string(template.body))
            except TemplateSyntaxError as exc:
                self._templates[key] = f"template {template.key!r} ({template.channel}) does not render: {exc}"

    def _message(self, row: Notification) -> OutboundMessage:
        if row.channel == Channel.EMAIL:
            email_validate(row.to_address)
        elif row.channel == Channel.SMS:
            phone_validate(row.to_address)
        elif not row.to_address:
            raise PermanentProviderError("no push device token")
        elif row.device is not None and not row.device.active:
            raise PermanentProviderError(f"push device {row.device_id} is no longer active")
        compiled = self._templates.get((row.template_key, row.channel))
        if compiled is None:
            raise PermanentProviderError(f"unknown template {row.template_key!r} for channel {row.channel}")
        if isinstance(compiled, str):
            raise PermanentProviderError(compiled)
        subject, body = _render(compiled, row.context)
        row.subject, row.body = subject[:255], body
        return OutboundMessage(
            channel=row.channel,
            to=row.to_address,
            subject=subject,
            body=body,
            data={str(k): str(v) for k, v in (row.data or {}).items()},
            reference=row.dedupe_key,
        )

    def take_slots(
        self, channel: str, ready: list[tuple[Notification, OutboundMessage]]
    ) -> list[tuple[Notification, OutboundMessage]]:
        """The rows that got a rate-limit slot; the others wait for the next free slot, no attempt spent."""
        try:
            granted, wait = rate_limit_acquire_many(channel=channel, wanted=len(ready))
        except RedisError as exc:
            for row, _ in ready:
                self.retry(row, f"rate limiter unreachable: {exc}")
            return []
        for row, _ in ready[granted:]:
            at = _whole_second(self.claim + timedelta(seconds=wait))
            row.status, row.next_attempt_at, row.enqueued_at = Notification.Status.PENDING, at, at
            row.attempts -= 1
            self.deferred.append(row)
        return ready[:granted]

    # After sending --------------------------------------------------------------------

    def record(self, row: Notification, outcome: Outcome, *, provider: str) -> None:
        row.provider = provider
        if isinstance(outcome, str):
            row.status, row.provider_message_id, row.sent_at = Notification.Status.SENT, outcome[:255], timezone.now()
            row.last_error = ""
            self.sent.append(row)
        elif isinstance(outcome, PermanentProviderError):
            if outcome.deactivate_device and row.device_id:
                self.dead_devices[row.device_id] = str(outcome)[:255]
            self.fail(row, str(outcome))
        elif isinstance(outcome, TransientProviderError):
            self.retry(row, str(outcome) or repr(outcome), retry_after=outcome.retry_after)
        elif isinstance(outcome, RedisError):  # the FCM token cache, say: Redis will be back
            self.retry(row, f"Redis unreachable: {outcome}")
        elif isinstance(outcome, ImproperlyConfigured):
            self.fail(row, f"not configured: {outcome}")
        else:
            # A bug, not the provider: fail the row visibly rather than leave it in sending to be re-sent.
            logger.error("notification %s: unexpected error from %s", row.pk, provider, exc_info=outcome)
            self.fail(row, f"unexpected error: {outcome!r}")

    def fail(self, row: Notification, error: str) -> None:
        row.status, row.last_error = Notification.Status.FAILED, error[:5000]
        self.failed.append(row)
        logger.warning("notification %s failed: %s", row.pk, error)

    def retry(self, row: Notification, error: str, *, retry_after: float | None = None) -> None:
        countdown = self.policy.countdown(attempts=row.attempts, retry_after=retry_after)
        if countdown is None:
            self.fail(row, f"gave up after {row.attempts} attempts: {error}")
            return
        if retry_after and retry_after > MAX_RETRY_DELAY_SECONDS:
            error += (
                f" (the provider asked to wait {retry_after:.0f}s; retrying after"
                f" {MAX_RETRY_DELAY_SECONDS}s, the longest wait between tries)"
            )
        # Whole seconds, so rows of one batch retried in the same second share one delivery message;
        # the recovery job measures staleness from enqueued_at, so a planned retry is not "stuck".
        at = _whole_second(timezone.now() + timedelta(seconds=countdown))
        row.status, row.last_error, row.next_attempt_at, row.enqueued_at = Notification.Status.PENDING, error, at, at
        self.retrying.append(row)

    def save(self, *, retry_task: str, wait_task: str) -> None:
        """One transaction: each outcome kind in one UPDATE (over rows still under this claim), the next intents."""
        now = timezone.now()
        for row in (*self.sent, *self.failed, *self.retrying, *self.deferred):
            row.updated_at = now
        mine = {"status": Notification.Status.SENDING, "claimed_at": self.claim}
        with transaction.atomic():
            update_rows(Notification, [*self.sent, *self.failed], _RECORDED, where=mine)
            update_rows(Notification, self.retrying, _RELEASED, where=mine)
            update_rows(Notification, self.deferred, [*_RELEASED, "attempts"], where=mine)
            if self.dead_devices:
                for device_id, reason in self.dead_devices.items():
                    PushDevice.objects.filter(pk=device_id, active=True).update(
                        active=False, deactivated_reason=reason, updated_at=now
                    )
            for rows, task in ((self.retrying, retry_task), (self.deferred, wait_task)):
                if rows:
                    deliveries_record(((r.pk, r.channel, r.enqueued_at, self.claim) for r in rows), task=task)


def _render(compiled: tuple[Template | None, Template], context: dict[str, Any]) -> tuple[str, str]:
    subject_template, body_template = compiled
    ctx = Context(context or {})
    subject = subject_template.render(ctx) if subject_template is not None else ""
    # Email subjects must be one line; a stray newline in the context would break the header.
    return " ".join(subject.split()), body_template.render(ctx).strip()


def _whole_second(moment: datetime) -> datetime:
    return moment.replace(microsecond=0) + timedelta(seconds=1 if moment.microsecond else 0)


def notification_render(*, template_key: str, channel: str, context: dict[str, Any]) -> tuple[str, str]:
    """(subject, body) of a template; PermanentProviderError when it is unknown or broken."""
    template = NotificationTemplate.objects.filter(key=template_key, channel=channel, is_active=True).first()
    if template is None:
        raise PermanentProviderError(f"unknown template {template_key!r} for channel {channel}")
    try:
        subject = _ENGINE.from_string(template.subject) if template.subject else None
        compiled = (subject, _ENGINE.from_string(template.body))
    except TemplateSyntaxError as exc:
        raise PermanentProviderError(f"template {template_key!r} ({channel}) does not render: {exc}") from exc
    return _render(compiled, context)
