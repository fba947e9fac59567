"""One-time tokens in Redis (password resets, email confirmations, ...).

Each token is a key with its own TTL, so Redis forgets it on time by itself. An
index per purpose (a sorted set scored by expiry) lets staff list and revoke a
user's live tokens; its entries outlive the keys they point to, and
`tokens_cleanup_expired` (the `expired_tokens_cleanup` job) removes them.
"""

from __future__ import annotations

import secrets
import time

from core.progress import report_progress
from core.redis import get_redis

_KEY = "tokens:{purpose}:{token}"
_INDEX = "tokens:index:{purpose}"


def token_issue(*, purpose: str, user_id: int, ttl_seconds: int) -> str:
    token = secrets.token_urlsafe(32)
    expires_at = time.time() + ttl_seconds
    pipe = get_redis().pipeline()
    pipe.set(_KEY.format(purpose=purpose, token=token), str(user_id), ex=ttl_seconds)
    pipe.zadd(_INDEX.format(purpose=purpose), {f"{user_id}:{token}": expires_at})
    pipe.execute()
    return token


def token_consume(*, purpose: str, token: str) -> int | None:
    """The user id the token was issued for, once; None when unknown, expired or used."""
    r = get_redis()
    raw = r.getdel(_KEY.format(purpose=purpose, token=token))
    if raw is None:
        return None
    user_id = int(raw)  # the client decodes responses: this is a str
    r.zrem(_INDEX.format(purpose=purpose), f"{user_id}:{token}")
    return user_id


def tokens_cleanup_expired(*, batch: int = 1000) -> dict[str, int]:
    """Drop index entries whose token has expired. Idempotent; safe on two workers at once."""
    r = get_redis()
    now = time.time()
    removed = indexes = 0
    # SCAN, never KEYS: it does not block Redis on a large keyspace.
    for index in r.scan_iter(match=_INDEX.format(purpose="*"), count=batch):
        indexes += 1
        removed += int(r.zremrangebyscore(index, "-inf", now))
        if indexes % batch == 0:
            report_progress(indexes, None)  # a SCAN has no total: indexes done so far
    report_progress(indexes, None)
    return {"indexes_scanned": indexes, "expired_removed": removed}
