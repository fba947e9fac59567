"""The dead-letter view's Retry, and the recovery of rows a dead worker or a lost retry left behind.

A lost first publish is the core outbox relay's job. What is left here is delivery's own:
a row left `sending` by a worker killed mid-send, and a row left `pending` whose retry
message (published by Celery itself) was lost with a broker restart.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import CharField, F, Q, Value
from django.db.models.functions import Cast, Concat
from django.utils import timezone

from notifications.models import Notification
from notifications.services.outbox import deliveries_record

# Rows re-enqueued per transaction: one indexed SELECT ... FOR UPDATE SKIP LOCKED and one
# UPDATE each; 500 keeps the locks brief while a backlog of 10,000 takes 20 round trips.
RECOVERY_CHUNK_SIZE = 500
# Rows looked at per run: a huge backlog is worked off over several runs instead of one
# run holding a list of millions of ids (and outliving its lease).
RECOVERY_MAX_PER_RUN = 10_000
# A row a worker died on this many times (the first try and every retry) is a poison message.
MAX_SEND_ATTEMPTS = 4


def stuck_threshold_min_seconds() -> int:
    """The shortest safe threshold: three of the slowest provider timeout (settings check the same)."""
    slowest = max(settings.EMAIL_TIMEOUT, settings.SMS_TIMEOUT_SECONDS, settings.PUSH_TIMEOUT_SECONDS)
    return math.ceil(3 * slowest)


def notification_retry(*, notification_ids: Sequence[int]) -> dict[str, int]:
    """Put failed rows back to pending with a fresh retry budget and enqueue them.

    Only `failed` rows move; the conditional update makes two clicks one retry.
    """
    now = timezone.now()
    with transaction.atomic():
        ids = list(
            Notification.objects.select_for_update(skip_locked=True)
            .filter(pk__in=list(notification_ids), status=Notification.Status.FAILED)
            .values_list("pk", flat=True)
        )
        retried = Notification.objects.filter(pk__in=ids, status=Notification.Status.FAILED).update(
            status=Notification.Status.PENDING, next_attempt_at=None, enqueued_at=now, claimed_at=None, updated_at=now
        )
        deliveries_record((pk, now) for pk in ids)
    return {"requested": len(set(notification_ids)), "retried": retried}


def notifications_recover_stuck(*, older_than_seconds: int | None = None) -> dict[str, Any]:
    """Re-enqueue rows left pending (a lost broker message) or sending (a worker killed mid-send).

    A `sending` row older than the threshold goes back to `pending` first. Its provider may
    already have taken the message, so this errs towards sending twice rather than never;
    but a row whose workers died mid-send MAX_SEND_ATTEMPTS times is failed instead (a
    poison message would otherwise kill workers forever). At most RECOVERY_MAX_PER_RUN rows
    per run, oldest first.
    """
    threshold = older_than_seconds if older_than_seconds is not None else settings.NOTIFICATIONS_STUCK_AFTER_SECONDS
    minimum = stuck_threshold_min_seconds()
    if threshold < minimum:
        raise ValueError(f"older_than_seconds must be at least {minimum} (three provider timeouts), got {threshold}")
    now = timezone.now()
    cutoff = now - timedelta(seconds=threshold)
    stuck = Q(status=Notification.Status.PENDING, enqueued_at__lt=cutoff) | Q(
        status=Notification.Status.SENDING, claimed_at__lt=cutoff
    )
    candidates = list(
        Notification.objects.filter(stuck)
        .order_by("enqueued_at", "pk")
        .values_list("pk", flat=True)[:RECOVERY_MAX_PER_RUN]
    )
    requeued_pending = requeued_sending = failed_poison = 0
    for start in range(0, len(candidates), RECOVERY_CHUNK_SIZE):
        chunk = candidates[start : start + RECOVERY_CHUNK_SIZE]
        with transaction.atomic():
            locked = list(
                Notification.objects.select_for_update(skip_locked=True)
                .filter(Q(pk__in=chunk) & stuck)
                .values_list("pk", "status", "attempts")
            )
            poison = [pk for pk, status, attempts in locked if status == "sending" and attempts >= MAX_SEND_ATTEMPTS]
            sending = [pk for pk, status, attempts in locked if status == "sending" and attempts < MAX_SEND_ATTEMPTS]
            pending = [pk for pk, status, _ in locked if status == Notification.Status.PENDING]
            failed_poison += Notification.objects.filter(pk__in=poison, status=Notification.Status.SENDING).update(
                status=Notification.Status.FAILED,
                last_error=Concat(Value("worker lost mid-send "), Cast(F("attempts"), CharField()), Value(" times")),
                updated_at=now,
            )
            requeued_sending += Notification.objects.filter(pk__in=sending, status=Notification.Status.SENDING).update(
                status=Notification.Status.PENDING, enqueued_at=now, claimed_at=None, updated_at=now
            )
            requeued_pending += Notification.objects.filter(pk__in=pending, status=Notification.Status.PENDING).update(
                enqueued_at=now, updated_at=now
            )
            deliveries_record((pk, now) for pk in sending + pending)
    return {
        "threshold_seconds": threshold,
        "candidates": len(candidates),
        "requeued_pending": requeued_pending,
        "requeued_sending": requeued_sending,
        "failed_worker_lost": failed_poison,
    }
