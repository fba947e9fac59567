"""The Redis behind REDIS_URL: locks, heartbeats, rate limits, one-time tokens."""

from __future__ import annotations

from functools import lru_cache

import redis
from django.conf import settings


@lru_cache(maxsize=4)
def _client(url: str) -> redis.Redis:
    # Every call into Redis is bounded: a hung Redis must not hang a web request.
    return redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=2, decode_responses=True)


def get_redis() -> redis.Redis:
    return _client(settings.REDIS_URL)
