"""The core outbox as the tests see it: recorded intents, and a relay to publish them."""

from __future__ import annotations

from typing import Any

from core.models import OutboxIntent
from core.services.outbox import outbox_relay


def intents(task: str | None = None, *, published: bool | None = None) -> list[OutboxIntent]:
    """Recorded intents, oldest first, optionally for one task and published or not."""
    qs = OutboxIntent.objects.order_by("pk")
    if task is not None:
        qs = qs.filter(task_name=task)
    if published is not None:
        qs = qs.filter(published_at__isnull=not published)
    return list(qs)


def intent_kwargs(task: str) -> list[dict[str, Any]]:
    return [dict(i.kwargs) for i in intents(task)]


def relay() -> dict[str, int]:
    """Run the relay job's body once: publish every unpublished, due intent."""
    return outbox_relay()


DELIVERY_TASKS = ("notifications.deliver_batch", "notifications.redeliver_batch")


def delivery_ids(*, published: bool | None = None) -> list[int]:
    """The notification ids the recorded delivery intents carry (one intent holds a batch), oldest first."""
    return [
        int(pk)
        for task in DELIVERY_TASKS
        for intent in intents(task, published=published)
        for pk in intent.kwargs["notification_ids"]
    ]
