"""Rate limits and stream limits shared by every edge (Redis, one round trip each).

REST requests use GCRA (the generic cell rate algorithm): one key per API key (or
per client address without a key) holding the theoretical arrival time; the
script reads Redis' own clock so edges with skewed clocks agree. A busy client
costs one round trip per *lease*, not per request: an edge takes up to
:data:`LEASE_SHARE` of a tier's minute (at most :data:`LEASE_MAX` requests) from
the shared bucket at once and spends it within :data:`LEASE_SECONDS`; what it
does not spend in time is dropped, never given back. The bucket never lets more
through than the limit; a client spread over several edges may be turned away
up to one lease early. Tiers of fewer than ``1 / LEASE_SHARE`` requests a minute
count every request in Redis. Concurrent
streams are a sorted set per key of stream ids scored by their last heartbeat;
an edge that dies leaves entries that expire after :data:`STREAM_TTL` seconds.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import redis.asyncio as aioredis

STREAM_TTL = 45
#: Clients whose streams one pipeline refreshes.
REFRESH_BATCH = 500
#: Share of a tier's requests per minute an edge may take from the bucket at once.
LEASE_SHARE = 1 / 600
#: Most requests one lease holds.
LEASE_MAX = 64
#: Seconds within which a lease is spent or dropped.
LEASE_SECONDS = 1.0
#: Clients with a lease beyond which spent and expired leases are swept.
LEASES_MAX = 10_000

_GCRA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local emission = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local want = tonumber(ARGV[3] or 1)
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local allow_at = tat + emission - burst * emission
if now < allow_at then
  return {0, 0, allow_at - now, tat - now}
end
local n = math.min(want, 1 + math.floor((now - allow_at) / emission))
local new_tat = tat + n * emission
redis.call('SET', KEYS[1], new_tat, 'PX', math.ceil(new_tat - now) + 1000)
local remaining = math.floor((now - (new_tat - burst * emission)) / emission)
return {n, remaining, 0, new_tat - now}
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


class _Lease:
    """Requests taken from the shared bucket and not spent yet."""

    __slots__ = ("left", "until", "remaining", "reset_at")

    def __init__(self, left: int, until: float, remaining: int, reset_at: float) -> None:
        self.left = left
        self.until = until
        self.remaining = remaining  # what the bucket had left after this lease
        self.reset_at = reset_at


class Limits:
    def __init__(self, redis: aioredis.Redis, prefix: str, *, lease_share: float = LEASE_SHARE,
                 lease_max: int = LEASE_MAX) -> None:
        self.redis = redis
        self.prefix = prefix
        self.lease_share = lease_share
        self.lease_max = lease_max
        self._gcra = redis.register_script(_GCRA)
        self._open = redis.register_script(_STREAM_OPEN)
        self._leases: dict[str, _Lease] = {}
        self._taking: dict[str, asyncio.Future[RateDecision]] = {}

    async def hit(self, who: str, per_minute: int) -> RateDecision:
        """Count one request of ``who`` against ``per_minute`` (bursts up to the whole minute)."""
        if per_minute <= 0:
            return RateDecision(False, 0, 0, 60.0, 60.0)
        size = min(self.lease_max, int(per_minute * self.lease_share))
        if size <= 1:
            return await self._take(who, per_minute, 1)
        while True:
            decision = self._spend(who, per_minute)
            if decision is not None:
                return decision
            taking = self._taking.get(who)
            if taking is None:
                break
            decision = await asyncio.shield(taking)
            if not decision.allowed:
                return decision
        future: asyncio.Future[RateDecision] = asyncio.get_running_loop().create_future()
        self._taking[who] = future
        try:
            decision = await self._take(who, per_minute, size)
            future.set_result(decision)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: the waiters see it, or nobody waits
            raise
        finally:
            del self._taking[who]
        return decision

    def _spend(self, who: str, per_minute: int) -> RateDecision | None:
        lease = self._leases.get(who)
        if lease is None:
            return None
        now = time.monotonic()
        if lease.left <= 0 or now >= lease.until:
            del self._leases[who]
            return None
        lease.left -= 1
        return RateDecision(True, per_minute, lease.remaining + lease.left, 0.0,
                            max(0.0, lease.reset_at - now))

    async def _take(self, who: str, per_minute: int, want: int) -> RateDecision:
        emission = 60_000 / per_minute
        n, remaining, retry_ms, reset_ms = await self._gcra(
            keys=[f"{self.prefix}rl:{who}"], args=[emission, per_minute, want])
        n = int(n)
        if n > 1:
            now = time.monotonic()
            if len(self._leases) >= LEASES_MAX:
                self._leases = {k: v for k, v in self._leases.items() if v.until > now and v.left > 0}
            self._leases[who] = _Lease(n - 1, now + LEASE_SECONDS, int(remaining), now + reset_ms / 1000)
        return RateDecision(n > 0, per_minute, int(remaining) + max(0, n - 1), retry_ms / 1000,
                            reset_ms / 1000)

    async def open_stream(self, who: str, stream_id: str, limit: int) -> bool:
        if limit <= 0:
            return False
        return bool(await self._open(keys=[f"{self.prefix}streams:{who}"],
                                     args=[stream_id, limit, STREAM_TTL]))

    async def refresh_streams(self, entries: list[tuple[str, str]]) -> None:
        """Mark open streams alive: one ``ZADD`` per client, sent in pipelines of at most
        :data:`REFRESH_BATCH` commands, so that refreshing 10,000 streams never holds the
        event loop for more than a few milliseconds at a time."""
        if not entries:
            return
        t = (await self.redis.time())[0]
        by_who: dict[str, dict[str, int]] = {}
        for who, stream_id in entries:
            by_who.setdefault(who, {})[stream_id] = t
        items = list(by_who.items())
        for start in range(0, len(items), REFRESH_BATCH):
            async with self.redis.pipeline(transaction=False) as pipe:
                for who, members in items[start:start + REFRESH_BATCH]:
                    pipe.zadd(f"{self.prefix}streams:{who}", members, xx=True)
                await pipe.execute()

    async def close_stream(self, who: str, stream_id: str) -> None:
        await self.redis.zrem(f"{self.prefix}streams:{who}", stream_id)
