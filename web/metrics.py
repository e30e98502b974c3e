"""What an edge tells about itself: ``/metrics``, ``/readyz`` and a heartbeat in Redis.

- ``/metrics``: connected clients by transport and tier, fan-out latency (handing a
  delta to every subscriber's queue), slow clients reset or dropped, REST requests by
  route template and status (every name in ``docs/monitoring.md``);
- ``/readyz``: 200 when the delta feed is assigned and alive, Redis answers a PING and
  Postgres a ``SELECT 1``; 503 with the failing checks otherwise (``/healthz`` only says
  the process is up);
- every 5 s the edge writes ``{prefix}edges`` (edge id → JSON: clients, deltas
  published and delivered, subscribers per channel) for ``bts-guru status`` and
  ``/admin``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Iterator
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram
from prometheus_client import disable_created_metrics, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

log = logging.getLogger(__name__)

# The *_created series double every counter and histogram; nothing here reads them.
disable_created_metrics()

HEARTBEAT_EVERY = 5.0
FANOUT_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5)
CHECK_TIMEOUT = 2.0


def tier_of(sub: Any) -> str:
    principal = getattr(sub, "principal", None)
    tier = getattr(principal, "tier", None)
    if tier is not None:
        return str(tier.name)
    return "anonymous" if getattr(sub, "key_id", None) is None else "unknown"


class _Connections(Collector):
    """Clients and slow-client counts, read from the hub when scraped."""

    def __init__(self, metrics: EdgeMetrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        m = self.metrics
        clients = GaugeMetricFamily("bts_clients", "Connected clients by transport and tier",
                                    labels=["transport", "tier"])
        for (transport, tier), n in sorted(m.clients().items()):
            clients.add_metric([transport, tier], n)
        yield clients
        slow = CounterMetricFamily("bts_slow_clients", "Slow clients by what was done to them "
                                   "(reset: backlog dropped and snapshots sent; dropped: closed)",
                                   labels=["action"])
        live = sum(s.resets for s in m.hub.subscribers) if m.hub is not None else 0
        slow.add_metric(["reset"], m.resets_gone + live)
        slow.add_metric(["dropped"], m.dropped)
        yield slow
        if m.hub is not None:
            paths = CounterMetricFamily("bts_deliveries", "Deltas handed to clients, by path "
                                        "(direct: written to the socket by the hub while the "
                                        "client's writer waited; queue: through its queue)",
                                        labels=["path"])
            paths.add_metric(["direct"], m.hub.direct)
            paths.add_metric(["queue"], max(0, m.hub.delivered - m.hub.direct))
            yield paths


class EdgeMetrics:
    """The registry of one edge process."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.http_requests = Counter("bts_http_requests", "HTTP requests by route and status",
                                     ["route", "status"], registry=r)
        self.fanout = Histogram("bts_fanout_latency_seconds",
                                "Time to hand one delta to every interested subscriber",
                                buckets=FANOUT_BUCKETS, registry=r)
        self.hub: Any = None
        self.resets_gone = 0
        self.dropped = 0
        self.templates: dict[Any, str] = {}
        r.register(_Connections(self))

    def attach(self, edge: Any) -> None:
        """Measure the fan-out of ``edge.feed`` into ``edge.hub`` and remember gone clients."""
        hub = self.hub = edge.hub
        publish, remove = hub.publish, hub.remove

        def timed_publish(entry: Any) -> int:
            started = time.perf_counter()
            n: int = publish(entry)
            self.fanout.observe(time.perf_counter() - started)
            return n

        def counted_remove(sub: Any) -> None:
            if sub in hub.subscribers:
                self.resets_gone += sub.resets
            remove(sub)

        hub.publish = timed_publish
        hub.remove = counted_remove
        edge.feed.on_entry = timed_publish

    def slow_client(self, action: str = "dropped") -> None:
        """A transport closed a client because it could not keep up."""
        if action == "dropped":
            self.dropped += 1

    def clients(self) -> dict[tuple[str, str], int]:
        out: dict[tuple[str, str], int] = {}
        if self.hub is None:
            return out
        for sub in list(self.hub.subscribers):
            k = (str(getattr(sub, "transport", "sse")), tier_of(sub))
            out[k] = out.get(k, 0) + 1
        return out

    def route_of(self, app: Any, scope: dict[str, Any]) -> str:
        if not self.templates:
            self.templates = _templates(getattr(app, "routes", []))
        return self.templates.get(scope.get("endpoint"), "other")

    def scrape(self) -> bytes:
        return generate_latest(self.registry)


def _templates(routes: list[BaseRoute]) -> dict[Any, str]:
    out: dict[Any, str] = {}
    for route in routes:
        endpoint = getattr(route, "endpoint", None) or getattr(route, "app", None)
        path = getattr(route, "path", None)
        if endpoint is not None and path is not None and endpoint not in out:
            out[endpoint] = path or "/"
    return out


def metrics_of(app: Any) -> EdgeMetrics:
    state = app.state
    m = getattr(state, "metrics", None)
    if m is None:
        m = state.metrics = EdgeMetrics()
    return m


class RequestMetrics:
    """ASGI middleware counting HTTP requests by route template and status."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500

        async def watched(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, watched)
        finally:
            app = scope.get("app")
            if app is not None:
                m = metrics_of(app)
                m.http_requests.labels(m.route_of(app, scope), str(status)).inc()


async def readiness(edge: Any) -> dict[str, bool]:
    """Whether the edge can serve: the delta feed, Redis and Postgres."""
    task = getattr(edge.feed, "_task", None)
    checks = {"broker": edge.feed.ready.is_set() and task is not None and not task.done()}

    async def broker_ok() -> bool:
        # the feed's assignment outlives a broker that is gone: ask the broker itself
        consumer = getattr(edge.feed, "_consumer", None)
        if consumer is None:
            return False
        await consumer._client.fetch_all_metadata()
        return True

    async def redis_ok() -> bool:
        return bool(await edge.redis.ping())

    async def postgres_ok() -> bool:
        async with edge.pool.acquire(timeout=CHECK_TIMEOUT) as conn:
            return bool(await conn.fetchval("SELECT 1", timeout=CHECK_TIMEOUT) == 1)

    if checks["broker"]:
        try:
            checks["broker"] = await asyncio.wait_for(broker_ok(), CHECK_TIMEOUT)
        except Exception:  # noqa: BLE001 - any failure means not ready
            checks["broker"] = False
    for name, probe in (("redis", redis_ok), ("postgres", postgres_ok)):
        try:
            checks[name] = await asyncio.wait_for(probe(), CHECK_TIMEOUT)
        except Exception:  # noqa: BLE001 - any failure means not ready
            checks[name] = False
    return checks


async def readyz(request: Request) -> Response:
    checks = await readiness(request.app.state.edge)
    ready = all(checks.values())
    return JSONResponse({"status": "ready" if ready else "unready", "checks": checks},
                        status_code=200 if ready else 503)


async def metrics(request: Request) -> Response:
    return Response(metrics_of(request.app).scrape(), headers={"Content-Type": CONTENT_TYPE_LATEST})


def routes() -> list[BaseRoute]:
    return [Route("/metrics", metrics), Route("/readyz", readyz)]


def edges_key(prefix: str) -> str:
    return f"{prefix}edges"


def heartbeat(edge: Any, m: EdgeMetrics) -> dict[str, Any]:
    clients: dict[str, dict[str, int]] = {}
    for (transport, tier), n in m.clients().items():
        clients.setdefault(transport, {})[tier] = n
    channels = sorted(((ch, len(subs)) for ch, subs in list(edge.hub._by_channel.items())),
                      key=lambda x: -x[1])[:50]
    return {"id": edge.edge_id, "ts": time.time(), "clients": clients,
            "published": edge.hub.published, "delivered": edge.hub.delivered,
            "direct": edge.hub.direct,
            "channels": dict(channels), "feed_ready": edge.feed.ready.is_set()}


async def _beat_forever(edge: Any, m: EdgeMetrics) -> None:
    key = edges_key(edge.settings.redis_prefix)
    while True:
        try:
            async with edge.redis.pipeline(transaction=False) as pipe:
                pipe.hset(key, edge.edge_id, json.dumps(heartbeat(edge, m)))
                pipe.expire(key, 60)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            log.debug("edge heartbeat not written: %r", exc)
        await asyncio.sleep(HEARTBEAT_EVERY)


def start(app: Any, edge: Any) -> asyncio.Task[None]:
    """Attach the metrics to ``edge`` and start its heartbeat (cancel the task to stop)."""
    m = metrics_of(app)
    m.attach(edge)
    return asyncio.create_task(_beat_forever(edge, m), name="edge-heartbeat")
