"""Connections of a worker to Redis and Postgres, owned by the Faust app's lifecycle."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import asyncpg
import redis.asyncio as aioredis
from mode import Service

from pipeline.connections import redis_client
from pipeline.settings import Settings
from pipeline.sinks import PostgresHistory, RedisSnapshots
from tables.migrate import migrate
from tables.redis_keys import RedisKeys

log = logging.getLogger(__name__)


class Stores(Service):
    """Opens the Redis client and the Postgres pool when the worker starts."""

    def __init__(self, settings: Settings, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.settings = settings
        self.keys = RedisKeys(settings.redis_prefix)
        self.redis: aioredis.Redis | None = None
        self.pool: asyncpg.Pool | None = None
        self._redis_snapshots: RedisSnapshots | None = None
        self._history: PostgresHistory | None = None
        #: Set once the clients exist (agents may start before this service).
        self.ready = asyncio.Event()

    async def on_start(self) -> None:
        s = self.settings
        self.redis = redis_client(
            s, socket_timeout=5, socket_connect_timeout=3, health_check_interval=10)
        self._redis_snapshots = RedisSnapshots(self.redis, self.keys)
        self.pool = await asyncpg.create_pool(
            s.database_url, min_size=0, max_size=4, command_timeout=30,
            server_settings={"search_path": s.db_schema})
        try:
            async with self.pool.acquire() as conn:
                await migrate(conn, s.db_schema)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            # The sinks retry until Postgres answers; the schema is applied by `migrate` or `dev`.
            log.warning("postgres unavailable at start, sinks will retry: %r", exc)
        self._history = PostgresHistory(self.pool, s.db_schema)
        self.ready.set()

    async def on_stop(self) -> None:
        if self.redis is not None:
            await self.redis.aclose()
        if self.pool is not None:
            await self.pool.close()

    @property
    def redis_snapshots(self) -> RedisSnapshots:
        assert self._redis_snapshots is not None, "stores not started"
        return self._redis_snapshots

    @property
    def history(self) -> PostgresHistory:
        assert self._history is not None, "stores not started"
        return self._history
