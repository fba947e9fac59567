"""Read what was sent to the real Redis broker: the messages waiting on a queue."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

import redis
from django.conf import settings


@dataclass
class SentTask:
    name: str
    args: list[Any]
    kwargs: dict[str, Any]
    eta: str | None


def broker() -> redis.Redis:
    # Only a test broker database is ever flushed.
    assert settings.SETTINGS_MODULE.endswith(".test") and int(settings.CELERY_BROKER_URL.rsplit("/", 1)[-1]) >= 2
    return redis.Redis.from_url(settings.CELERY_BROKER_URL)


def sent_tasks(queue: str = "logistics") -> list[SentTask]:
    out = []
    for raw in reversed(broker().lrange(queue, 0, -1)):  # kombu LPUSHes: oldest last
        message = json.loads(raw)
        args, kwargs, _ = json.loads(base64.b64decode(message["body"]))
        headers = message["headers"]
        out.append(SentTask(name=headers["task"], args=args, kwargs=kwargs, eta=headers.get("eta")))
    return out
