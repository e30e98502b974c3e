"""The edge: a Starlette app on uvicorn serving REST, SSE, WebSocket and the demo page.

Resources (Redis client, Postgres pool, the delta feed, the hub, the
authenticator, limits and usage) are created in the lifespan and handed on as
``app.state.edge``.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import redis.asyncio as aioredis
from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse
from starlette.routing import Match, Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.types import Message, Receive, Scope, Send
from starlette.websockets import WebSocket

from pipeline.connections import aiokafka_options, redis_client
from pipeline.settings import Settings
from tables import topics
from tables.redis_keys import RedisKeys
from web import logs, rest, stream, ws
from web import admin, metrics as monitoring
from web import openapi
from web.replay import replay as replay_history
from web.ws import CLOSE_REVOKED
from web.access import AccessMiddleware
from web.auth import Authenticator
from web.errors import ApiError, handle_api_error, handle_http_error
from web.feed import DeltaFeed
from web.hub import Hub, Subscriber, Watchdog
from web.limits import Limits
from web.pusher import Apps, PusherServer
from web.pusher import http_api as pusher_http
from web.pusher.socket import pusher_endpoint
from web.snapshots import SnapshotReader
from web.tiers import Tier, load_tiers
from web.usage import Usage

log = logging.getLogger(__name__)
STATIC = Path(__file__).parent / "static"
#: Collector thresholds of an edge. Each connection keeps about 150 objects the collector
#: tracks, and with the default thresholds a full collection ran every few seconds while
#: clients came and deltas went: about 0.9 s with 10,000 clients, the edge frozen meanwhile.
#: Fewer, larger young collections promote fewer short-lived objects, so the full ones
#: (still triggered by CPython's own rule: long-lived objects grown by a quarter) are rare.
GC_THRESHOLDS = (10_000, 10, 10)



@dataclass
class Edge:
    settings: Settings
    hub: Hub
    feed: DeltaFeed
    snapshots: SnapshotReader
    redis: aioredis.Redis
    pool: asyncpg.Pool
    auth: Authenticator
    limits: Limits
    usage: Usage
    tiers: dict[str, Tier]
    edge_id: str = field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")
    queue_size: int = 1000
    heartbeat: int = 15

    def revoke(self, key_id: str) -> None:
        for sub in list(self.hub.subscribers):
            if sub.key_id == key_id:
                sub.close(CLOSE_REVOKED)

    def streams(self) -> list[Subscriber]:
        return [s for s in self.hub.subscribers if s.client]


async def _every(seconds: float, job: object) -> None:
    while True:
        await asyncio.sleep(seconds)
        try:
            await job()  # type: ignore[operator]
        except Exception as exc:  # noqa: BLE001 - Redis may be down; try again later
            log.debug("periodic job failed: %r", exc)


async def _publish_watch_counts(edge: Edge) -> None:
    """Tell the pollers which matches this edge's clients watch (expires if the edge dies)."""
    key = edge.snapshots.keys.watch(edge.edge_id)
    counts = edge.hub.watch_counts()
    async with edge.redis.pipeline(transaction=True) as pipe:
        pipe.delete(key)
        if counts:
            pipe.hset(key, mapping=counts)
        pipe.expire(key, 30)
        await pipe.execute()


async def _refresh_streams(edge: Edge) -> None:
    await edge.limits.refresh_streams([(s.client, s.stream_id) for s in edge.streams()])


def create_app(settings: Settings | None = None, *, heartbeat: int | None = None) -> Starlette:
    settings = settings or Settings.from_env()
    heartbeat = heartbeat or settings.edge_heartbeat
    tiers = load_tiers(settings.tiers_file or None)
    pusher_apps = Apps.from_settings(settings)
    logs.install()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        s = settings
        hub = Hub()
        feed = DeltaFeed(s.kafka_bootstrap, s.topic(topics.MATCH_DELTAS), kafka=aiokafka_options(s),
                         fetch_wait_ms=s.fetch_wait_ms, on_entry=hub.publish)
        redis = redis_client(s, socket_timeout=2, socket_connect_timeout=2)
        pool = await asyncpg.create_pool(s.database_url, min_size=0, max_size=8, command_timeout=10)
        keys = RedisKeys(s.redis_prefix)
        auth = Authenticator(pool, s.db_schema, tiers)
        usage = Usage(pool, s.db_schema)
        hub.on_bytes = usage.stream_bytes
        snapshots = SnapshotReader(redis, pool, keys, s.db_schema, keep_ms=s.edge_snapshot_cache_ms,
                                   newest_seq=lambda match_id: feed.last_seq.get(match_id, 0))
        edge = Edge(s, hub, feed, snapshots, redis, pool, auth, Limits(redis, s.redis_prefix), usage,
                    tiers, heartbeat=heartbeat)
        auth.on_revoke.append(edge.revoke)
        app.state.edge = edge
        pusher = PusherServer(edge, pusher_apps)
        auth.on_revoke.append(pusher.revoke)
        app.state.pusher = pusher
        await feed.start()
        await auth.start()
        await usage.start()
        await pusher.start()
        gc.set_threshold(*GC_THRESHOLDS)
        gc.freeze()  # what start-up made lives as long as the process: never scan it again
        jobs = [asyncio.create_task(_every(5, lambda: _publish_watch_counts(edge))),
                asyncio.create_task(_every(15, lambda: _refresh_streams(edge))),
                asyncio.create_task(stream.close_on_exit(hub)),
                asyncio.create_task(Watchdog(hub, heartbeat).run())]
        jobs.append(monitoring.start(app, edge))
        try:
            yield
        finally:
            for job in jobs:
                job.cancel()
            await pusher.stop()
            for sub in list(hub.subscribers):
                sub.close()
            await auth.stop()
            await usage.stop()
            await feed.stop()
            await redis.aclose()
            await pool.close()

    async def index(request: Request) -> FileResponse:
        return FileResponse(STATIC / "index.html")

    routes = [
        Route("/", index),
        Route("/healthz", rest.healthz),
        Route("/openapi.json", openapi.openapi_json),
        Route("/docs", openapi.docs),
        *monitoring.routes(),
        *admin.routes(),
        Route("/v1/sports", rest.sports),
        Route("/v1/leagues", rest.leagues),
        Route("/v1/matches", rest.matches),
        Route("/v1/matches/{match_id}", rest.match),
        Route("/v1/matches/{match_id}/deltas", rest.deltas),
        Route("/v1/usage", rest.usage),
        Route(stream.PATH, stream.stream),
        Route("/v1/replay", replay_history),
        WebSocketRoute("/v1/ws", ws.websocket_endpoint),
        WebSocketRoute("/app/{key}", pusher_endpoint),
        WebSocketRoute("/app/{key}/{rest:path}", pusher_endpoint),
        Route("/pusher/auth", pusher_http.channel_auth, methods=["POST"]),
        Route("/broadcasting/auth", pusher_http.channel_auth, methods=["POST"]),
        Route("/apps/{app_id}/events", pusher_http.events, methods=["POST"]),
        Route("/apps/{app_id}/batch_events", pusher_http.batch_events, methods=["POST"]),
        Route("/apps/{app_id}/channels", pusher_http.channels),
        Route("/apps/{app_id}/channels/{name}", pusher_http.channel),
        Route("/apps/{app_id}/channels/{name}/users", pusher_http.channel_users),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    origins = [o.strip() for o in settings.cors_origins.split(",") if o.strip()]
    cors = dict(allow_origins=origins, allow_methods=["GET", "POST", "OPTIONS"],
                allow_headers=["Authorization", "X-API-Key", "Last-Event-ID", "Content-Type"],
                expose_headers=["X-Cache", "ETag", "X-RateLimit-Limit", "X-RateLimit-Remaining",
                                "X-RateLimit-Reset", "Retry-After"])
    middleware = [
        Middleware(CORSMiddleware, **cors),
        Middleware(monitoring.RequestMetrics),
        Middleware(AccessMiddleware),
    ]
    return EdgeApp(
        routes=routes,
        middleware=middleware,
        lifespan=lifespan,
        exception_handlers={ApiError: handle_api_error, HTTPException: handle_http_error},
        cors=CORSMiddleware(None, **cors),  # type: ignore[arg-type]
    )


class EdgeApp(Starlette):
    """The edge's ASGI app: streams go straight to their handlers.

    A stream lives for hours. Through the middleware stack each of its writes would pass
    five wrappers, and each connection would keep a dozen suspended frames and their
    closures. The stack does nothing a stream needs that is not done here: streams
    authenticate in their own handshakes, and an SSE response gets its CORS headers and
    its request count below. Everything else, and a stream path with no route, takes the
    stack.
    """

    def __init__(self, *, cors: CORSMiddleware, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.cors = cors
        self.sockets = [r for r in self.routes if isinstance(r, WebSocketRoute)]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "websocket":
            for route in self.sockets:
                match, child = route.matches(scope)
                if match is Match.FULL:
                    scope["app"] = self
                    scope.update(child)
                    await route.endpoint(WebSocket(scope, receive, send))
                    return
        elif kind == "http" and scope["path"] == stream.PATH and scope["method"] in ("GET", "HEAD"):
            scope["app"] = self
            status = await stream.serve(scope, receive, send, await self.cors_headers(scope))
            monitoring.metrics_of(self).http_requests.labels(stream.PATH, str(status)).inc()
            return
        await super().__call__(scope, receive, send)

    async def cors_headers(self, scope: Scope) -> list[tuple[bytes, bytes]]:
        """The headers the CORS middleware would add to a response to this request."""
        start: Message = {"type": "http.response.start", "status": 200, "headers": []}

        async def keep(message: Message) -> None:
            pass

        await self.cors.send(start, keep, Headers(scope=scope))
        return list(start["headers"])
