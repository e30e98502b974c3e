"""The quota budget of each provider key, shared by every worker through Redis.

The ledger counts calls per provider-time day (UTC) and per minute. Before every
upstream call a worker asks :meth:`QuotaBudget.acquire`; one Lua script checks
and counts atomically, so however many workers run, the plan's daily and
per-minute limits are never exceeded. Lower priorities keep a reserve free for
the higher ones, so when the budget tightens they are refused first, and the
scheduler stretches their intervals.

Priorities: 0 live aggregated polls, 1 detail of watched matches, 2 schedules,
3 everything else.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

import redis.asyncio as aioredis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

PLANS: dict[str, tuple[int, int]] = {
    "free": (100, 10),
    "pro": (7_500, 300),
    "ultra": (75_000, 450),
    "mega": (150_000, 900),
}

#: (share of the daily quota that must remain, share of the minute limit usable) per priority
_RESERVES: dict[int, tuple[float, float]] = {
    0: (0.0, 0.9),
    1: (0.05, 0.8),
    2: (0.08, 0.6),
    3: (0.2, 0.5),
}

# KEYS: day counter, minute counter.  ARGV: day limit, minute limit, day floor, minute cap,
# day ttl, minute ttl.  Returns {granted 0/1, used today, used this minute}.
_ACQUIRE = """
local day = tonumber(redis.call('GET', KEYS[1]) or '0')
local minute = tonumber(redis.call('GET', KEYS[2]) or '0')
if day + 1 > tonumber(ARGV[1]) - tonumber(ARGV[3]) or minute + 1 > tonumber(ARGV[4]) then
  return {0, day, minute}
end
day = redis.call('INCR', KEYS[1])
minute = redis.call('INCR', KEYS[2])
redis.call('EXPIRE', KEYS[1], ARGV[5])
redis.call('EXPIRE', KEYS[2], ARGV[6])
return {1, day, minute}
"""


_RAISE_TO = """
local v = tonumber(redis.call('GET', KEYS[1]) or '0')
if tonumber(ARGV[1]) > v then
  redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
end
return v
"""


@dataclass(frozen=True)
class Grant:
    granted: bool
    used_day: int
    used_minute: int
    limit_day: int
    limit_minute: int
    retry_after: float  # provider seconds until it may be worth asking again

    @property
    def used_share(self) -> float:
        return self.used_day / self.limit_day if self.limit_day else 1.0


class QuotaBudget:
    def __init__(self, redis: aioredis.Redis, prefix: str, provider: str, plan: str = "pro",
                 *, limit_day: int | None = None, limit_minute: int | None = None) -> None:
        day, minute = PLANS[plan]
        self.redis = redis
        self.prefix = prefix
        self.provider = provider
        self.limit_day = limit_day or day
        self.limit_minute = limit_minute or minute
        self._script = redis.register_script(_ACQUIRE)
        self.warned: set[int] = set()

    def _keys(self, now: float) -> tuple[str, str, float, float]:
        t = dt.datetime.fromtimestamp(now, dt.timezone.utc)
        day = t.strftime("%Y%m%d")
        minute = t.strftime("%Y%m%d%H%M")
        secs_left_day = 86_400 - (t.hour * 3600 + t.minute * 60 + t.second)
        secs_left_min = 60 - t.second
        return (f"{self.prefix}quota:{self.provider}:d:{day}",
                f"{self.prefix}quota:{self.provider}:m:{minute}", secs_left_day, secs_left_min)

    async def acquire(self, now: float, priority: int = 0) -> Grant:
        """Count one call at provider time ``now`` if the budget allows it at ``priority``."""
        day_key, min_key, left_day, left_min = self._keys(now)
        day_share, min_share = _RESERVES.get(priority, _RESERVES[3])
        floor = int(self.limit_day * day_share)
        cap = max(1, int(self.limit_minute * min_share))
        try:
            ok, used_day, used_min = await self._script(
                keys=[day_key, min_key],
                args=[self.limit_day, self.limit_minute, floor, cap, 2 * 86_400, 120])
        except (RedisError, OSError) as exc:
            log.warning("quota ledger unavailable, holding upstream calls: %r", exc)
            return Grant(False, 0, 0, self.limit_day, self.limit_minute, 5.0)
        granted = bool(ok)
        retry = 0.0
        if not granted:
            retry = left_min if used_min + 1 > cap else left_day
        grant = Grant(granted, int(used_day), int(used_min), self.limit_day, self.limit_minute, retry)
        self._warn(grant)
        return grant

    def _warn(self, grant: Grant) -> None:
        for level in (80, 95):
            if grant.used_share * 100 >= level and level not in self.warned:
                self.warned.add(level)
                log.warning("quota of %s at %d%% of the day (%d/%d)", self.provider, level,
                            grant.used_day, grant.limit_day)

    async def observe(self, now: float, remaining_day: int | None, remaining_minute: int | None) -> None:
        """Align the ledger with the provider's own count (the key may have other users)."""
        day_key, min_key, _, _ = self._keys(now)
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                if remaining_day is not None:
                    pipe.eval(_RAISE_TO, 1, day_key, self.limit_day - remaining_day, 2 * 86_400)
                if remaining_minute is not None:
                    pipe.eval(_RAISE_TO, 1, min_key, self.limit_minute - remaining_minute, 120)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            log.debug("quota ledger not updated: %r", exc)

    async def pace(self, now: float) -> float:
        """Calls per provider second the rest of today can afford."""
        day_key, _, left_day, _ = self._keys(now)
        try:
            used = int(await self.redis.get(day_key) or 0)
        except (RedisError, OSError):
            return 0.0
        return max(0, self.limit_day - used) / max(1.0, left_day)

    async def used_today(self, now: float) -> int:
        day_key, _, _, _ = self._keys(now)
        return int(await self.redis.get(day_key) or 0)
