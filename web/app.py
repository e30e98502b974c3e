"""The edge: a Starlette app on uvicorn serving REST, SSE and the demo page.

Resources (Redis client, Postgres pool, the delta feed, the hub) are created in
the lifespan and handed on as ``app.state.edge``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import redis.asyncio as aioredis
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.responses import FileResponse
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles

from pipeline.settings import Settings
from tables import topics
from tables.redis_keys import RedisKeys
from web import rest, stream, ws
from web.errors import ApiError, handle_api_error, handle_http_error
from web.feed import DeltaFeed
from web.hub import Hub
from web.snapshots import SnapshotReader

log = logging.getLogger(__name__)
STATIC = Path(__file__).parent / "static"


@dataclass
class Edge:
    settings: Settings
    hub: Hub
    feed: DeltaFeed
    snapshots: SnapshotReader
    redis: aioredis.Redis
    pool: asyncpg.Pool
    edge_id: str = field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")
    queue_size: int = 1000
    heartbeat: int = 15


async def _publish_watch_counts(edge: Edge) -> None:
    """Tell the pollers which matches this edge's clients watch (expires if the edge dies)."""
    key = edge.snapshots.keys.watch(edge.edge_id)
    while True:
        counts = edge.hub.watch_counts()
        try:
            async with edge.redis.pipeline(transaction=True) as pipe:
                pipe.delete(key)
                if counts:
                    pipe.hset(key, mapping=counts)
                pipe.expire(key, 30)
                await pipe.execute()
        except Exception as exc:  # noqa: BLE001 - Redis may be down; try again later
            log.debug("watch counts not published: %r", exc)
        await asyncio.sleep(5)


def create_app(settings: Settings | None = None, *, heartbeat: int = 15) -> Starlette:
    settings = settings or Settings.from_env()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        s = settings
        hub = Hub()
        feed = DeltaFeed(s.kafka_bootstrap, s.topic(topics.MATCH_DELTAS),
                         fetch_wait_ms=s.fetch_wait_ms, on_entry=hub.publish)
        redis = aioredis.Redis.from_url(s.redis_url, socket_timeout=2, socket_connect_timeout=2)
        pool = await asyncpg.create_pool(s.database_url, min_size=0, max_size=8,
                                         command_timeout=10)
        keys = RedisKeys(s.redis_prefix)
        edge = Edge(s, hub, feed, SnapshotReader(redis, pool, keys, s.db_schema), redis, pool,
                    heartbeat=heartbeat)
        app.state.edge = edge
        await feed.start()
        watch = asyncio.create_task(_publish_watch_counts(edge))
        try:
            yield
        finally:
            watch.cancel()
            for sub in list(hub.subscribers):
                sub.close()
            await feed.stop()
            await redis.aclose()
            await pool.close()

    async def index(request: object) -> FileResponse:
        return FileResponse(STATIC / "index.html")

    routes = [
        Route("/", index),
        Route("/healthz", rest.healthz),
        Route("/v1/sports", rest.sports),
        Route("/v1/matches/{match_id}", rest.match),
        Route("/v1/stream", stream.stream),
        WebSocketRoute("/v1/ws", ws.websocket_endpoint),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    return Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={ApiError: handle_api_error, HTTPException: handle_http_error},
    )
