"""Reads of current snapshots: Redis first, Postgres on a miss or when Redis is down."""

from __future__ import annotations

import logging
from typing import Any, Literal

import asyncpg
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from tables import codec
from tables.migrate import quote_ident
from tables.redis_keys import RedisKeys

log = logging.getLogger(__name__)

CacheState = Literal["hit", "miss", "bypass"]


class StoresUnavailable(Exception):
    """Neither Redis nor Postgres could answer."""


class SnapshotReader:
    def __init__(self, redis: aioredis.Redis, pool: asyncpg.Pool, keys: RedisKeys, schema: str) -> None:
        self.redis = redis
        self.pool = pool
        self.keys = keys
        self.schema = quote_ident(schema)

    async def get(self, match_id: str) -> tuple[bytes | None, CacheState]:
        """The snapshot JSON of one match, and where it came from."""
        state: CacheState = "miss"
        try:
            data = await self.redis.hget(self.keys.match(match_id), "json")
            if data is not None:
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
