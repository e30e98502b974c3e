"""Reads of current snapshots: Redis first, Postgres on a miss or when Redis is down.

Snapshots read from Redis are kept in the edge's memory for a moment
(``EDGE_SNAPSHOT_CACHE_MS``) so that a match many clients ask for costs one Redis
read per moment instead of one per request. A kept snapshot is served only while
the edge's delta feed has seen no newer ``seq`` for the match, so it is never
older than what the edge streams; the time limit covers changes that come
without a delta (a snapshot removed or rewritten by hand).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from typing import Any, Literal

import asyncpg
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from tables import codec
from tables.migrate import quote_ident
from tables.redis_keys import RedisKeys

log = logging.getLogger(__name__)

CacheState = Literal["hit", "miss", "bypass"]


#: Snapshots kept in memory at most (the oldest kept goes first).
KEPT_MAX = 10_000
_SEQ_RE = re.compile(rb'"seq": ?(\d+)')


class StoresUnavailable(Exception):
    """Neither Redis nor Postgres could answer."""


def seq_of(data: bytes) -> int:
    """The ``seq`` of a snapshot's JSON (0 when it has none)."""
    m = _SEQ_RE.search(data)
    return int(m.group(1)) if m else 0


class SnapshotReader:
    def __init__(self, redis: aioredis.Redis, pool: asyncpg.Pool, keys: RedisKeys, schema: str,
                 *, keep_ms: int = 0, newest_seq: Callable[[str], int] | None = None) -> None:
        self.redis = redis
        self.pool = pool
        self.keys = keys
        self.schema = quote_ident(schema)
        #: How long a snapshot read from Redis may be served from memory (0: never).
        self.keep_s = keep_ms / 1000
        #: The newest ``seq`` the edge has seen for a match (0 when none).
        self.newest_seq = newest_seq or (lambda match_id: 0)
        self._kept: dict[str, tuple[float, int, bytes]] = {}

    def _recall(self, match_id: str) -> bytes | None:
        kept = self._kept.get(match_id)
        if kept is None:
            return None
        until, seq, data = kept
        if time.monotonic() < until and self.newest_seq(match_id) <= seq:
            return data
        del self._kept[match_id]
        return None

    def _keep(self, match_id: str, data: bytes) -> None:
        if len(self._kept) >= KEPT_MAX:
            self._kept.pop(next(iter(self._kept)))
        self._kept[match_id] = (time.monotonic() + self.keep_s, seq_of(data), data)

    async def get(self, match_id: str) -> tuple[bytes | None, CacheState]:
        """The snapshot JSON of one match, and where it came from."""
        if self.keep_s:
            data = self._recall(match_id)
            if data is not None:
                return data, "hit"
        state: CacheState = "miss"
        try:
            data = await self.redis.hget(self.keys.match(match_id), "json")
            if data is not None:
                if self.keep_s:
                    self._keep(match_id, data)
                return data, "hit"
        except (RedisError, OSError) as exc:
            log.warning("redis unavailable for reads: %r", exc)
            state = "bypass"
        try:
            async with self.pool.acquire() as conn:
                row = await conn.fetchval(
                    f"SELECT snapshot::text FROM {self.schema}.matches WHERE id = $1", match_id)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            if state == "bypass":
                raise StoresUnavailable("redis and postgres are unavailable") from exc
            raise StoresUnavailable("postgres is unavailable") from exc
        return (row.encode() if row is not None else None), state

    async def for_channel(self, channel: str, limit: int = 500) -> list[Any]:
        """Current snapshots of the matches a channel covers (for subscribe and reset)."""
        kind, _, rest = channel.partition(".")
        try:
            if kind.endswith("match"):
                data = await self.redis.hget(self.keys.match(rest), "json")
                return [codec.loads(data)] if data else []
            if kind == "sport":
                ids = await self.redis.zrange(self.keys.sport(rest), 0, limit - 1)
            elif kind == "league":
                sport, _, league = rest.partition(".")
                ids = await self.redis.zrange(self.keys.league(sport, league), 0, limit - 1)
            else:
                return []
            if not ids:
                return []
            async with self.redis.pipeline(transaction=False) as pipe:
                for mid in ids:
                    pipe.hget(self.keys.match(mid.decode()), "json")
                rows = await pipe.execute()
            return [codec.loads(r) for r in rows if r]
        except (RedisError, OSError) as exc:
            log.warning("redis unavailable for channel snapshots: %r", exc)
            return []
