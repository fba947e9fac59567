"""The dead-letter view's Retry, and the recovery of rows a lost message or a dead worker left behind."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from notifications.models import Notification
from notifications.services.outbox import enqueue_deliveries

# Rows re-enqueued per transaction: one indexed SELECT ... FOR UPDATE SKIP LOCKED and one
# UPDATE each; 500 keeps the locks brief while a backlog of 10,000 takes 20 round trips.
RECOVERY_CHUNK_SIZE = 500


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
        enqueue_deliveries(ids)
    return {"requested": len(set(notification_ids)), "retried": retried}


def notifications_recover_stuck(*, older_than_seconds: int | None = None) -> dict[str, Any]:
    """Re-enqueue rows left pending (a lost broker message) or sending (a worker killed mid-send).

    A `sending` row older than the threshold goes back to `pending` first. Its provider may
    already have taken the message, so this errs towards sending twice rather than never.
    """
    threshold = older_than_seconds if older_than_seconds is not None else settings.NOTIFICATIONS_STUCK_AFTER_SECONDS
    now = timezone.now()
    cutoff = now - timedelta(seconds=threshold)
    stuck = Q(status=Notification.Status.PENDING, enqueued_at__lt=cutoff) | Q(
        status=Notification.Status.SENDING, claimed_at__lt=cutoff
    )
    candidates = list(Notification.objects.filter(stuck).order_by("pk").values_list("pk", flat=True))
    requeued_pending = requeued_sending = 0
    for start in range(0, len(candidates), RECOVERY_CHUNK_SIZE):
        chunk = candidates[start : start + RECOVERY_CHUNK_SIZE]
        with transaction.atomic():
            locked = list(
                Notification.objects.select_for_update(skip_locked=True)
                .filter(Q(pk__in=chunk) & stuck)
                .values_list("pk", "status")
            )
            sending = [pk for pk, status in locked if status == Notification.Status.SENDING]
            pending = [pk for pk, status in locked if status == Notification.Status.PENDING]
            requeued_sending += Notification.objects.filter(pk__in=sending, status=Notification.Status.SENDING).update(
                status=Notification.Status.PENDING, enqueued_at=now, claimed_at=None, updated_at=now
            )
            requeued_pending += Notification.objects.filter(pk__in=pending, status=Notification.Status.PENDING).update(
                enqueued_at=now, updated_at=now
            )
            enqueue_deliveries(sending + pending)
    return {
        "threshold_seconds": threshold,
        "candidates": len(candidates),
        "requeued_pending": requeued_pending,
        "requeued_sending": requeued_sending,
    }
