"""The dead-letter view's Retry, and the recovery of rows a dead worker or a lost message left behind.

A lost first publish is the core outbox relay's job. What is left here is delivery's own:
a row left `sending` by a worker killed mid-send, and a row left `pending` whose delivery
message the broker lost (a Redis restart without persistence) before any worker ran it.
Recovered rows go on the redelivery lane (`notifications.redeliver_batch`, queue
`notifications_retry`): a worker takes from both queues in turn, so fresh messages never
wait behind a backlog of old ones.
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

from core.broker import held_task_ids
from core.models import OutboxIntent
from core.progress import Progress
from notifications.models import Notification
from notifications.services.outbox import REDELIVER_TASK, deliveries_record, delivery_key

# Rows re-enqueued per transaction: one indexed SELECT ... FOR UPDATE SKIP LOCKED and one
# UPDATE each; 500 keeps the locks brief while a backlog of 10,000 takes 20 round trips.
RECOVERY_CHUNK_SIZE = 500
# Rows looked at per run: a huge backlog is worked off over several runs instead of one
# run holding a list of millions of ids (and outliving its lease).
RECOVERY_MAX_PER_RUN = 10_000
# A delivery queue longer than this is not read whole by the recovery job (10,000 messages of about
# a kilobyte: a tenth of a second to fetch and parse); its rows then count as still on their way.
RECOVERY_SCAN_LIMIT = 10_000
# A row a worker died on this many times (the first try and every retry) is a poison message.
MAX_SEND_ATTEMPTS = 4


def stuck_threshold_min_seconds() -> int:
    """The shortest safe threshold: three times the longest a batch can take (its rows sent in rounds of
    NOTIFICATIONS_SEND_CONCURRENCY, each as slow as the slowest provider timeout)."""
    slowest = max(settings.EMAIL_TIMEOUT, settings.SMS_TIMEOUT_SECONDS, settings.PUSH_TIMEOUT_SECONDS)
    size = int(settings.NOTIFICATIONS_BATCH_SIZE)
    rounds = math.ceil(size / max(1, min(size, int(settings.NOTIFICATIONS_SEND_CONCURRENCY))))
    return math.ceil(3 * slowest * rounds)


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
        rows = list(Notification.objects.filter(pk__in=ids).values_list("pk", "channel"))
        retried = Notification.objects.filter(pk__in=ids, status=Notification.Status.FAILED).update(
            status=Notification.Status.PENDING,
            attempts=0,
            next_attempt_at=None,
            enqueued_at=now,
            claimed_at=None,
            updated_at=now,
        )
        deliveries_record(((pk, channel, now, None) for pk, channel in rows), task=REDELIVER_TASK)
    return {"requested": len(set(notification_ids)), "retried": retried}


def notifications_recover_stuck(*, older_than_seconds: int | None = None) -> dict[str, Any]:
    """Re-enqueue, on the redelivery lane, rows left sending (a worker killed mid-send) or pending (a lost message).

    A `sending` row older than the threshold goes back to `pending` first. Its provider may
    already have taken the message, so this errs towards sending twice rather than never;
    but a row whose workers died mid-send MAX_SEND_ATTEMPTS times is failed instead (a
    poison message would otherwise kill workers forever).

    A `pending` row older than the threshold is re-queued only when its message is not on
    the broker: its intent is gone or ran (completed), or it was published but neither
    delivery queue holds it nor does any worker hold it reserved. A message still waiting
    would only get a duplicate behind it (`held_back`), and an intent not yet published is
    the outbox relay's to publish.
    At most RECOVERY_MAX_PER_RUN rows per run, oldest first.
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
    broker = _BrokerView()
    requeued_pending = requeued_sending = failed_poison = held_back = 0
    progress = Progress(total=len(candidates))
    for start in range(0, len(candidates), RECOVERY_CHUNK_SIZE):
        chunk = candidates[start : start + RECOVERY_CHUNK_SIZE]
        with transaction.atomic():
            locked = list(
                Notification.objects.select_for_update(skip_locked=True)
                .filter(Q(pk__in=chunk) & stuck)
                .values_list("pk", "status", "attempts", "channel", "enqueued_at", "claimed_at")
            )
            poison = [r[0] for r in locked if r[1] == Notification.Status.SENDING and r[2] >= MAX_SEND_ATTEMPTS]
            sending = [r for r in locked if r[1] == Notification.Status.SENDING and r[2] < MAX_SEND_ATTEMPTS]
            waiting = [r for r in locked if r[1] == Notification.Status.PENDING]
            lost = broker.lost([(r[0], r[3], r[4], r[5]) for r in waiting])
            held_back += len(waiting) - len(lost)
            pending = [r for r in waiting if r[0] in lost]
            failed_poison += Notification.objects.filter(pk__in=poison, status=Notification.Status.SENDING).update(
                status=Notification.Status.FAILED,
                last_error=Concat(Value("worker lost mid-send "), Cast(F("attempts"), CharField()), Value(" times")),
                updated_at=now,
            )
            requeued_sending += Notification.objects.filter(
                pk__in=[r[0] for r in sending], status=Notification.Status.SENDING
            ).update(status=Notification.Status.PENDING, enqueued_at=now, claimed_at=None, updated_at=now)
            requeued_pending += Notification.objects.filter(
                pk__in=[r[0] for r in pending], status=Notification.Status.PENDING
            ).update(enqueued_at=now, next_attempt_at=None, updated_at=now)
            deliveries_record(
                [(r[0], r[3], now, None) for r in sending] + [(r[0], r[3], now, r[5]) for r in pending],
                task=REDELIVER_TASK,
            )
        progress.advance(len(chunk))
    return {
        "threshold_seconds": threshold,
        "candidates": len(candidates),
        "requeued_pending": requeued_pending,
        "requeued_sending": requeued_sending,
        "held_back": held_back,
        "failed_worker_lost": failed_poison,
    }


class _BrokerView:
    """What the broker holds of the delivery lanes, read once per recovery run (Redis broker; else nothing known).

    The task ids of the messages waiting on both lanes (read whole while each holds at most
    RECOVERY_SCAN_LIMIT messages; a longer queue makes every waiting row count as possibly
    on its way) and of those reserved by workers (kombu's `unacked` hash: acks-late and ETA
    messages a worker holds).
    """

    QUEUES = ("notifications", "notifications_retry")

    def __init__(self) -> None:
        self._read = False
        self.overflow = False
        self.present: set[str] = set()

    def lost(self, rows: Sequence[tuple[int, str, Any, Any]]) -> set[int]:
        """The ids among pending (id, channel, enqueued_at, claimed_at) `rows` whose delivery message is not on the broker."""
        if not rows:
            return set()
        keys = {pk: delivery_key(pk, channel, enqueued_at, claimed_at) for pk, channel, enqueued_at, claimed_at in rows}
        intents = {
            key: (published, completed, str(task_id))
            for key, published, completed, task_id in OutboxIntent.objects.filter(
                dedupe_key__in=set(keys.values())
            ).values_list("dedupe_key", "published_at", "completed_at", "task_id")
        }
        lost = set()
        for pk, key in keys.items():
            intent = intents.get(key)
            if intent is None or intent[1] is not None:
                lost.add(pk)  # no message was ever recorded for it, or its message ran and left it pending
            elif intent[0] is not None and self._gone(intent[2]):
                lost.add(pk)
        return lost

    def _gone(self, task_id: str) -> bool:
        self._load()
        return not self.overflow and task_id not in self.present

    def _load(self) -> None:
        if self._read:
            return
        self._read = True
        held = held_task_ids(self.QUEUES, limit=RECOVERY_SCAN_LIMIT)
        if held is None:
            self.overflow = True  # unknown (another broker, or a long queue): never guess a message lost
        else:
            self.present = held
