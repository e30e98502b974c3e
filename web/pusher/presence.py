"""What every edge must agree on, held in Redis: presence members, channel occupancy,
and a pub/sub bus for events that start on one edge and reach sockets on all of them
(HTTP-published events, client events, member_added / member_removed).

Presence, per app and channel (``{prefix}pusher:{app}:presence:{channel}:…``):

- ``conns``   socket id → user id (one entry per subscribed connection)
- ``counts``  user id → number of that user's connections
- ``members`` user id → user_info JSON

A join or leave is one Lua script, so "first connection of this user" and "last
connection of this user" are decided atomically across edges: only those fire
``member_added`` / ``member_removed``.

Each edge lists its presence connections in ``{prefix}pusher:edge:{edge}:presence``
and keeps ``{prefix}pusher:edge:{edge}:alive`` fresh. When an edge dies, another edge
notices the missing heartbeat, removes the dead edge's connections and sends the
``member_removed`` events it owed.

Occupancy: each edge keeps ``{prefix}pusher:{app}:occupancy:{edge}`` (channel →
subscriptions on that edge), which expires with the edge; the HTTP API sums them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from tables import codec

log = logging.getLogger(__name__)

HEARTBEAT = 5.0
EDGE_TTL = 15

_JOIN = """
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 0 then
  return {0, redis.call('HGETALL', KEYS[3])}
end
redis.call('SADD', KEYS[4], ARGV[4])
local n = redis.call('HINCRBY', KEYS[2], ARGV[2], 1)
if n == 1 then redis.call('HSET', KEYS[3], ARGV[2], ARGV[3]) end
return {n == 1 and 1 or 0, redis.call('HGETALL', KEYS[3])}
"""

_LEAVE = """
redis.call('SREM', KEYS[4], ARGV[2])
local user = redis.call('HGET', KEYS[1], ARGV[1])
if not user then return false end
redis.call('HDEL', KEYS[1], ARGV[1])
local n = redis.call('HINCRBY', KEYS[2], user, -1)
if n <= 0 then
  redis.call('HDEL', KEYS[2], user)
  redis.call('HDEL', KEYS[3], user)
  return user
end
return false
"""


@dataclass(frozen=True)
class BusMessage:
    """An event for the subscribers of ``channel`` on every edge, except ``skip``."""

    app_id: str
    channel: str
    event: str
    data: Any
    skip: str = ""
    user_id: str | None = None

    def dumps(self) -> bytes:
        return codec.dumps({"a": self.app_id, "c": self.channel, "e": self.event, "d": self.data,
                            "x": self.skip, "u": self.user_id})

    @classmethod
    def loads(cls, raw: bytes) -> BusMessage:
        m = codec.loads(raw)
        return cls(m["a"], m["c"], m["e"], m["d"], m.get("x") or "", m.get("u"))


class Cluster:
    def __init__(self, redis: aioredis.Redis, listener: Callable[[], aioredis.Redis], prefix: str,
                 edge_id: str, deliver: Callable[[BusMessage], None]) -> None:
        self.redis = redis
        self.listener = listener
        self.prefix = prefix
        self.edge_id = edge_id
        self.deliver = deliver
        self.bus = f"{prefix}pusher:bus"
        self._join = redis.register_script(_JOIN)
        self._leave = redis.register_script(_LEAVE)
        self._tasks: list[asyncio.Task[None]] = []
        self._listener: aioredis.Redis | None = None
        self.subscribed = asyncio.Event()
        #: (app id, channel) → subscriptions on this edge, rewritten into Redis each heartbeat
        self.occupancy: dict[tuple[str, str], int] = {}

    # -- keys ---------------------------------------------------------------

    def _presence(self, app_id: str, channel: str) -> list[str]:
        base = f"{self.prefix}pusher:{app_id}:presence:{channel}"
        return [f"{base}:conns", f"{base}:counts", f"{base}:members"]

    def _index(self, edge_id: str) -> str:
        return f"{self.prefix}pusher:edge:{edge_id}:presence"

    def _alive(self, edge_id: str) -> str:
        return f"{self.prefix}pusher:edge:{edge_id}:alive"

    def _occupancy(self, app_id: str, edge_id: str) -> str:
        return f"{self.prefix}pusher:{app_id}:occupancy:{edge_id}"

    @property
    def _edges(self) -> str:
        return f"{self.prefix}pusher:edges"

    # -- lifecycle ----------------------------------------------------------

    async def start(self, app_ids: list[str]) -> None:
        self.app_ids = app_ids
        self._listener = self.listener()
        self._tasks = [asyncio.create_task(self._listen(), name="pusher-bus"),
                       asyncio.create_task(self._heartbeat(), name="pusher-heartbeat")]
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.subscribed.wait(), 5)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        with contextlib.suppress(RedisError, OSError):
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.delete(self._alive(self.edge_id))
                for app_id in self.app_ids:
                    pipe.delete(self._occupancy(app_id, self.edge_id))
                await pipe.execute()
        if self._listener is not None:
            await self._listener.aclose()

    async def _listen(self) -> None:
        assert self._listener is not None
        while True:
            try:
                async with self._listener.pubsub() as pubsub:
                    await pubsub.subscribe(self.bus)
                    self.subscribed.set()
                    async for message in pubsub.listen():
                        if message.get("type") != "message":
                            continue
                        try:
                            self.deliver(BusMessage.loads(message["data"]))
                        except (codec.DecodeError, KeyError, TypeError) as exc:
                            log.warning("dropping a malformed Pusher bus message: %r", exc)
            except (RedisError, OSError) as exc:
                log.warning("Pusher bus unavailable, retrying: %r", exc)
                await asyncio.sleep(1.0)

    async def _heartbeat(self) -> None:
        while True:
            try:
                await self._beat()
                await self._sweep()
            except (RedisError, OSError) as exc:
                log.debug("Pusher heartbeat failed: %r", exc)
            await asyncio.sleep(HEARTBEAT)

    async def _beat(self) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(self._alive(self.edge_id), b"1", ex=EDGE_TTL)
            pipe.sadd(self._edges, self.edge_id)
            for app_id in self.app_ids:
                key = self._occupancy(app_id, self.edge_id)
                counts = {ch: n for (a, ch), n in self.occupancy.items() if a == app_id and n > 0}
                pipe.delete(key)
                if counts:
                    pipe.hset(key, mapping=counts)
                    pipe.expire(key, EDGE_TTL)
            await pipe.execute()

    async def _sweep(self) -> None:
        """Remove the presence connections of edges that stopped beating."""
        for raw in await self.redis.smembers(self._edges):
            edge = raw.decode()
            if edge == self.edge_id or await self.redis.exists(self._alive(edge)):
                continue
            if not await self.redis.set(f"{self.prefix}pusher:sweep:{edge}", b"1", nx=True, ex=30):
                continue
            for entry in await self.redis.smembers(self._index(edge)):
                app_id, channel, socket_id = codec.loads(entry)
                user = await self.leave(app_id, channel, socket_id, edge)
                if user is not None:
                    await self.publish(BusMessage(app_id, channel, "pusher_internal:member_removed",
                                                  codec.dumps_str({"user_id": user})))
            await self.redis.delete(self._index(edge))
            await self.redis.srem(self._edges, edge)
            log.info("removed the Pusher presence of edge %s, which stopped", edge)

    # -- bus ----------------------------------------------------------------

    async def publish(self, message: BusMessage) -> None:
        await self.redis.publish(self.bus, message.dumps())

    # -- presence -----------------------------------------------------------

    async def join(self, app_id: str, channel: str, socket_id: str, user_id: str,
                   user_info: Any) -> tuple[bool, dict[str, Any]]:
        """Add a connection; (whether it is the user's first, the members after it)."""
        entry = codec.dumps_str([app_id, channel, socket_id])
        added, flat = await self._join(
            keys=[*self._presence(app_id, channel), self._index(self.edge_id)],
            args=[socket_id, user_id, codec.dumps_str(user_info), entry])
        members = {flat[i].decode(): codec.loads(flat[i + 1]) for i in range(0, len(flat), 2)}
        return bool(added), members

    async def leave(self, app_id: str, channel: str, socket_id: str,
                    edge_id: str | None = None) -> str | None:
        """Remove a connection; the user id when it was the user's last one."""
        entry = codec.dumps_str([app_id, channel, socket_id])
        user = await self._leave(
            keys=[*self._presence(app_id, channel), self._index(edge_id or self.edge_id)],
            args=[socket_id, entry])
        return user.decode() if user is not None else None

    async def members(self, app_id: str, channel: str) -> dict[str, Any]:
        raw = await self.redis.hgetall(self._presence(app_id, channel)[2])
        return {k.decode(): codec.loads(v) for k, v in raw.items()}

    async def user_count(self, app_id: str, channel: str) -> int:
        return int(await self.redis.hlen(self._presence(app_id, channel)[2]))

    # -- occupancy ----------------------------------------------------------

    async def count(self, app_id: str, channel: str, delta: int) -> None:
        n = self.occupancy.get((app_id, channel), 0) + delta
        if n > 0:
            self.occupancy[(app_id, channel)] = n
        else:
            self.occupancy.pop((app_id, channel), None)
        key = self._occupancy(app_id, self.edge_id)
        try:
            async with self.redis.pipeline(transaction=True) as pipe:
                if n > 0:
                    pipe.hset(key, channel, n)
                    pipe.expire(key, EDGE_TTL)
                else:
                    pipe.hdel(key, channel)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            log.debug("occupancy update failed, the next heartbeat repairs it: %r", exc)

    async def channels(self, app_id: str) -> dict[str, int]:
        """Subscriptions per occupied channel, summed over every live edge."""
        edges = [e.decode() for e in await self.redis.smembers(self._edges)]
        if self.edge_id not in edges:
            edges.append(self.edge_id)
        async with self.redis.pipeline(transaction=False) as pipe:
            for edge in edges:
                pipe.hgetall(self._occupancy(app_id, edge))
            rows = await pipe.execute()
        out: dict[str, int] = {}
        for row in rows:
            for ch, n in row.items():
                if int(n) > 0:
                    out[ch.decode()] = out.get(ch.decode(), 0) + int(n)
        return out
