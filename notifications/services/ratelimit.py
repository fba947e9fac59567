"""Per-channel rate limits shared by every worker: a sliding-window log in a Redis sorted set.

"N/period" means at most N sends in any window of that length. The script reads Redis's
own clock, so workers on different machines agree on time.
"""

from __future__ import annotations

import uuid

from django.conf import settings

from core.redis import get_redis

_PERIODS = {"s": 1000, "m": 60_000, "h": 3_600_000}

# KEYS[1] the log; ARGV[1] period in ms; ARGV[2] sends allowed per period; ARGV[3] a unique member.
# Returns 0 when a slot was taken, else the whole milliseconds to wait before asking again
# (at least 1: Redis truncates a Lua number to an integer, so 0.4 would read as "granted").
_SLIDING_WINDOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local period = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - period)
if redis.call('ZCARD', KEYS[1]) < limit then
  redis.call('ZADD', KEYS[1], now, ARGV[3])
  redis.call('PEXPIRE', KEYS[1], period + 1000)
  return 0
end
local oldest = tonumber(redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')[2])
return math.max(1, math.ceil(oldest + period - now))
"""


def parse_rate(rate: str) -> tuple[int, int] | None:
    """`10/s` -> (10, 1000 ms); empty or `0` -> None (no limit)."""
    if not rate or rate == "0":
        return None
    count, unit = rate.split("/")
    return int(count), _PERIODS[unit]


def rate_limit_acquire(*, channel: str) -> float:
    """Take one send slot for `channel`: 0 when granted, else seconds to wait first."""
    parsed = parse_rate(settings.NOTIFICATIONS_RATE_LIMITS.get(channel, ""))
    if parsed is None:
        return 0.0
    count, period_ms = parsed
    client = get_redis()
    wait_ms = client.eval(_SLIDING_WINDOW, 1, f"notifications:ratelog:{channel}", period_ms, count, uuid.uuid4().hex)
    return float(wait_ms) / 1000.0
