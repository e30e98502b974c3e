"""Rate limits and stream limits shared by every edge (Redis, one round trip each).

REST requests use GCRA (the generic cell rate algorithm): one key per API key (or
per client address without a key) holding the theoretical arrival time; the
script reads Redis' own clock so edges with skewed clocks agree. Concurrent
streams are a sorted set per key of stream ids scored by their last heartbeat;
an edge that dies leaves entries that expire after :data:`STREAM_TTL` seconds.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis.asyncio as aioredis

STREAM_TTL = 45

_GCRA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local emission = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + emission
local allow_at = new_tat - burst * emission
if now < allow_at then
  return {0, 0, allow_at - now, tat - now}
end
redis.call('SET', KEYS[1], new_tat, 'PX', math.ceil(new_tat - now) + 1000)
local remaining = math.floor((now - allow_at) / emission)
return {1, remaining, 0, new_tat - now}
"""

_STREAM_OPEN = """
local t = redis.call('TIME')
local now = tonumber(t[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[3]))
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  redis.call('ZADD', KEYS[1], now, ARGV[1])
  return 1
end
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[3] * 2)
return 1
"""


@dataclass(frozen=True)
class RateDecision:
    allowed: bool
    limit: int
    remaining: int
    retry_after: float  # seconds
    reset: float  # seconds until the bucket is full again

    def headers(self) -> dict[str, str]:
        h = {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(max(0, self.remaining)),
            "X-RateLimit-Reset": str(max(0, int(self.reset + 0.999))),
        }
        if not self.allowed:
            h["Retry-After"] = str(max(1, int(self.retry_after + 0.999)))
        return h


class Limits:
    def __init__(self, redis: aioredis.Redis, prefix: str) -> None:
        self.redis = redis
        self.prefix = prefix
        self._gcra = redis.register_script(_GCRA)
        self._open = redis.register_script(_STREAM_OPEN)

    async def hit(self, who: str, per_minute: int) -> RateDecision:
        """Count one request of ``who`` against ``per_minute`` (bursts up to the whole minute)."""
        if per_minute <= 0:
            return RateDecision(False, 0, 0, 60.0, 60.0)
        emission = 60_000 / per_minute
        ok, remaining, retry_ms, reset_ms = await self._gcra(
            keys=[f"{self.prefix}rl:{who}"], args=[emission, per_minute])
        return RateDecision(bool(ok), per_minute, int(remaining), retry_ms / 1000, reset_ms / 1000)

    async def open_stream(self, who: str, stream_id: str, limit: int) -> bool:
        if limit <= 0:
            return False
        return bool(await self._open(keys=[f"{self.prefix}streams:{who}"],
                                     args=[stream_id, limit, STREAM_TTL]))

    async def refresh_streams(self, entries: list[tuple[str, str]]) -> None:
        if not entries:
            return
        t = await self.redis.time()
        async with self.redis.pipeline(transaction=False) as pipe:
            for who, stream_id in entries:
                pipe.zadd(f"{self.prefix}streams:{who}", {stream_id: t[0]}, xx=True)
            await pipe.execute()

    async def close_stream(self, who: str, stream_id: str) -> None:
        await self.redis.zrem(f"{self.prefix}streams:{who}", stream_id)
