"""Per-channel rate limits shared by every worker: a sliding-window log in a Redis sorted set.

"N/period" means at most N slots taken in any window of that length; a slot is taken right
before its message is handed to the provider. The script reads Redis's own clock, so
workers on different machines agree on time, and a batch takes all the slots it can get in
one round trip.
"""

from __future__ import annotations

import uuid

from django.conf import settings

from core.redis import get_redis

_PERIODS = {"s": 1000, "m": 60_000, "h": 3_600_000}

# KEYS[1] the log; ARGV[1] period in ms; ARGV[2] slots allowed per period; ARGV[3] slots wanted;
# ARGV[4] a unique prefix for the members. Returns {slots granted, whole ms to wait before the
# next slot frees (0 when every wanted slot was granted; at least 1 otherwise: Redis truncates a
# Lua number to an integer, so 0.4 would read as "no wait")}.
_SLIDING_WINDOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local period = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local wanted = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - period)
local take = math.min(wanted, limit - redis.call('ZCARD', KEYS[1]))
if take > 0 then
  local args = {}
  for i = 1, take do
    args[#args + 1] = now
    args[#args + 1] = ARGV[4] .. i
  end
  redis.call('ZADD', KEYS[1], unpack(args))
  redis.call('PEXPIRE', KEYS[1], period + 1000)
else
  take = 0
end
if take == wanted then
  return {take, 0}
end
local oldest = tonumber(redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')[2])
return {take, math.max(1, math.ceil(oldest + period - now))}
"""


def parse_rate(rate: str) -> tuple[int, int] | None:
    """`10/s` -> (10, 1000 ms); empty or `0` -> None (no limit)."""
    if not rate or rate == "0":
        return None
    count, unit = rate.split("/")
    return int(count), _PERIODS[unit]


def rate_limit_acquire_many(*, channel: str, wanted: int) -> tuple[int, float]:
    """Take up to `wanted` send slots for `channel` in one round trip: (slots granted, seconds until the next frees).

    The wait is 0 when all were granted. Raises redis' errors when Redis cannot be reached.
    """
    parsed = parse_rate(settings.NOTIFICATIONS_RATE_LIMITS.get(channel, ""))
    if parsed is None or wanted <= 0:
        return max(wanted, 0), 0.0
    count, period_ms = parsed
    granted, wait_ms = get_redis().eval(
        _SLIDING_WINDOW, 1, f"notifications:ratelog:{channel}", period_ms, count, wanted, f"{uuid.uuid4().hex}:"
    )
    return int(granted), float(wait_ms) / 1000.0


def rate_limit_acquire(*, channel: str) -> float:
    """Take one send slot for `channel`: 0 when granted, else seconds to wait first."""
    granted, wait = rate_limit_acquire_many(channel=channel, wanted=1)
    return 0.0 if granted else wait
