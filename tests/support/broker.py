"""The one broker probe: what was really sent to the test Redis broker, decoded from kombu's envelope."""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import redis
from django.conf import settings


@dataclass(frozen=True)
class SentTask:
    """One task message waiting on a queue."""

    name: str
    args: list[Any]
    kwargs: dict[str, Any]
    eta: str | None
    id: str


def test_broker() -> redis.Redis:
    """The test broker's Redis; refuses any other (the suite flushes it)."""
    db = int(settings.CELERY_BROKER_URL.rsplit("/", 1)[-1] or 0)
    # The environment, not settings.SETTINGS_MODULE: override_settings hides the latter.
    module = os.environ.get("DJANGO_SETTINGS_MODULE", "")
    assert module.endswith(".test") and db >= 2, f"refusing to use {settings.CELERY_BROKER_URL}"
    return redis.Redis.from_url(settings.CELERY_BROKER_URL)


test_broker.__test__ = False  # type: ignore[attr-defined]  # a helper, not a test


def decode(raw: bytes) -> SentTask:
    envelope = json.loads(raw)
    args, kwargs, _ = json.loads(base64.b64decode(envelope["body"]))
    headers = envelope["headers"]
    return SentTask(name=headers["task"], args=args, kwargs=kwargs, eta=headers.get("eta"), id=headers["id"])


def sent_tasks(queue: str, name: str | None = None) -> list[SentTask]:
    """The messages waiting on `queue`, oldest first (kombu LPUSHes), optionally only task `name`."""
    tasks = [decode(raw) for raw in reversed(test_broker().lrange(queue, 0, -1))]
    return [t for t in tasks if name is None or t.name == name]


class BrokerProbe:
    """The `broker` fixture: read queues, or empty the test broker."""

    def tasks(self, queue: str, name: str | None = None) -> list[SentTask]:
        return sent_tasks(queue, name)

    def delivery_ids(self, queue: str | None = None) -> list[int]:
        """The notification ids the delivery messages waiting carry (fresh and retry lanes, or `queue`), in order."""
        ids: list[int] = []
        for lane in [queue] if queue else ["notifications", "notifications_retry"]:
            for task in sent_tasks(lane):
                if task.name in ("notifications.deliver_batch", "notifications.redeliver_batch"):
                    ids.extend(int(pk) for pk in task.kwargs["notification_ids"])
                elif task.name == "notifications.deliver":
                    ids.append(int(task.kwargs["notification_id"]))
        return ids

    def flush(self) -> None:
        test_broker().flushdb()


@pytest.fixture
def broker() -> Iterator[BrokerProbe]:
    """An empty test broker at the start and end of the test, so the messages read are the test's own."""
    probe = BrokerProbe()
    probe.flush()
    yield probe
    probe.flush()
