"""Per-channel rate limits shared by every worker: a GCRA bucket in Redis.

The script reads Redis's own clock, so workers on different machines agree on time.
"""

from __future__ import annotations

from django.conf import settings

from core.redis import get_redis

_PERIODS = {"s": 1000, "m": 60_000, "h": 3_600_000}

# KEYS[1] bucket; ARGV[1] ms between two sends; ARGV[2] burst window in ms (the period).
# Returns 0 when a slot was taken, else the milliseconds to wait before asking again.
_GCRA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local interval = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + interval
local wait = new_tat - window - now
if wait > 0 then return wait end
redis.call('SET', KEYS[1], new_tat, 'PX', math.ceil(new_tat - now) + 1000)
return 0
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
    wait_ms = client.eval(_GCRA, 1, f"notifications:rate:{channel}", period_ms / count, period_ms)
    return float(wait_ms) / 1000.0
