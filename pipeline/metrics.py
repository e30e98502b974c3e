"""What a worker tells about itself: Prometheus metrics, health, a heartbeat, alerts.

:class:`WorkerMetrics` holds the worker's registry and the hooks the pipeline
calls when something happens (an upstream call, a match update, a delta, a sink
write). :class:`Monitor` is the ``mode.Service`` a worker runs beside its agents:

- a small aiohttp server on ``WORKER_WEB_PORT`` (``0``: a free port) with
  ``/metrics`` (Prometheus text), ``/healthz`` (the process is up) and ``/readyz``
  (the consumer has partitions, Redis and Postgres answer; 503 otherwise);
- a sampler, every second: consumer lag per partition, quota per provider, poll
  targets by state, active matches and the recommended number of workers;
- a heartbeat in Redis (``{prefix}workers``: worker id → JSON) with its partitions,
  schedule, counters and quota, read by ``bts-guru status`` and ``/admin``;
- the alert rules (:mod:`pipeline.alerts`), fed from the same observations.

Every metric is listed in ``docs/monitoring.md``.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import math
import os
import socket
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any

import redis.asyncio as aioredis
from aiohttp import web
from mode import Service
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client import disable_created_metrics, generate_latest
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector
from redis.exceptions import RedisError

from pipeline.alerts import ERROR_WINDOW, Alerting, Observations
from pipeline.connections import redis_client
from pipeline.sinks import SinkUnavailable, write_with_retry
from tables import topics
from tables.records import IN_PLAY_PHASES, SPORTS
from tables.redis_keys import RedisKeys

if TYPE_CHECKING:
    from pipeline.app import Pipeline

log = logging.getLogger(__name__)

# The *_created series double every counter and histogram; nothing here reads them.
disable_created_metrics()

#: Active (in-play) matches one worker is sized for; ``bts_recommended_workers`` divides by it.
WORKER_CAPACITY = 50
SAMPLE_EVERY = 1.0
#: A heartbeat older than this is a worker that is gone.
HEARTBEAT_STALE = 15.0
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
#: Provider errors that are not the provider being unwell (they have rules of their own).
NOT_FAILURES = frozenset({"RateLimited", "QuotaExceeded", "CircuitOpen"})


def snake(name: str) -> str:
    return "".join("_" + c.lower() if c.isupper() and i else c.lower() for i, c in enumerate(name))


def recommended_workers(active: int, partitions: int, capacity: int = WORKER_CAPACITY) -> int:
    """Workers an autoscaler should run: active matches / capacity, at least 1, at most partitions."""
    return max(1, min(partitions, math.ceil(active / capacity)))


class _PipelineCounts(Collector):
    """The pipeline's own counters, read when scraped."""

    NAMES = {
        "raw": ("bts_raw_records", "Raw fetches read from raw-fetches"),
        "updates": ("bts_match_updates", "Normalised match records sent to match-updates"),
        "deltas": ("bts_deltas", "Deltas emitted to match-deltas"),
        "dead": ("bts_dead_letters", "Records sent to dead-letters"),
        "skipped": ("bts_unchanged_updates", "Match updates that changed nothing"),
    }

    def __init__(self, counts: Callable[[], dict[str, int]]) -> None:
        self.counts = counts

    def collect(self) -> Iterator[Metric]:
        counts = self.counts()
        for key, (name, doc) in self.NAMES.items():
            yield CounterMetricFamily(name, doc, value=counts.get(key, 0))


class WorkerMetrics:
    """The registry of one worker and the hooks that move its metrics."""

    def __init__(self, counts: Callable[[], dict[str, int]] | None = None) -> None:
        r = self.registry = CollectorRegistry()
        self.upstream_calls = Counter(
            "bts_upstream_calls", "Upstream provider calls by outcome (ok or the error type)",
            ["provider", "endpoint", "outcome"], registry=r)
        self.upstream_latency = Histogram(
            "bts_upstream_latency_seconds", "Latency of upstream provider calls", ["provider"],
            buckets=LATENCY_BUCKETS, registry=r)
        self.quota_remaining = Gauge(
            "bts_quota_remaining", "Provider quota left (window: day or minute)",
            ["provider", "window"], registry=r)
        self.poll_targets = Gauge(
            "bts_poll_targets", "Poll targets of this worker by state (due, waiting, in_flight)",
            ["sport", "state"], registry=r)
        self.pipeline_latency = Histogram(
            "bts_pipeline_latency_seconds", "From the provider answer (fetched_at) to the delta",
            buckets=LATENCY_BUCKETS, registry=r)
        self.consumer_lag = Gauge(
            "bts_consumer_lag", "Records behind the end of an assigned partition",
            ["topic", "partition"], registry=r)
        self.sink_write = Histogram(
            "bts_sink_write_seconds", "Duration of a sink batch write, retries included", ["sink"],
            buckets=LATENCY_BUCKETS, registry=r)
        self.sink_retries = Counter(
            "bts_sink_retries", "Failed sink writes that were retried", ["sink"], registry=r)
        self.active_matches = Gauge(
            "bts_active_matches", "Matches in play across the cluster", registry=r)
        self.recommended = Gauge(
            "bts_recommended_workers",
            f"Workers to run: active matches / {WORKER_CAPACITY}, between 1 and the partitions",
            registry=r)
        self.circuit_open = Gauge(
            "bts_circuit_open", "1 while a provider's circuit breaker is not closed", ["provider"],
            registry=r)
        self.alerts_firing = Gauge("bts_alerts_firing", "Alerts firing by rule", ["rule"], registry=r)
        self.pipeline_counts: dict[str, int] = {}
        r.register(_PipelineCounts(counts or (lambda: self.pipeline_counts)))
        # what the alert rules look at
        self.calls: collections.deque[tuple[float, str, bool]] = collections.deque(maxlen=10_000)
        self.clients: dict[str, Any] = {}
        self.quota: dict[str, dict[str, int | None]] = {}
        self.last_data: dict[str, tuple[float, str]] = {}
        self.sink_failures: dict[str, int] = {}
        self.lag_total = 0

    # -- hooks ----------------------------------------------------------------------------

    def upstream(self, raw: Any, client: Any = None) -> None:
        """After an upstream call: ``raw`` is its RawFetch record, ``client`` the provider client."""
        provider = str(raw.get("provider") or "unknown")
        error = raw.get("error")
        kind = error.get("type", "error") if error else ""
        self.upstream_calls.labels(provider, str(raw.get("endpoint") or ""),
                                   snake(kind) if kind else "ok").inc()
        if kind != "CircuitOpen":
            self.upstream_latency.labels(provider).observe(float(raw.get("latency_ms") or 0) / 1000)
            self.calls.append((time.monotonic(), provider, bool(kind) and kind not in NOT_FAILURES))
        if client is not None:
            self.clients[provider] = client
            quota = client.quota
            self.observe_quota(provider, quota.daily_remaining, quota.daily_limit,
                               quota.minute_remaining)
            if kind == "QuotaExceeded":
                self.observe_quota(provider, 0, quota.daily_limit, quota.minute_remaining)

    def observe_quota(self, provider: str, remaining_day: int | None, limit_day: int | None,
                      remaining_minute: int | None = None) -> None:
        known = self.quota.setdefault(provider, {})
        for window, value in (("day", remaining_day), ("minute", remaining_minute)):
            if value is not None:
                known[window] = value
                self.quota_remaining.labels(provider, window).set(value)
        if limit_day:
            known["limit_day"] = limit_day

    def match_seen(self, match: Any) -> None:
        """A normalised match record arrived: the match has data."""
        status = match.get("status") or {}
        phase, match_id = status.get("phase"), match.get("id")
        if not isinstance(match_id, str):
            return
        if phase in IN_PLAY_PHASES:
            self.last_data[match_id] = (time.monotonic(), phase)
        else:
            self.last_data.pop(match_id, None)

    def delta(self, delta: Any, now: float | None = None) -> None:
        fetched = delta.get("fetched_at")
        if fetched:
            self.pipeline_latency.observe(max(0.0, (now or time.time()) - float(fetched)))

    def sink_retry(self, sink: str) -> None:
        self.sink_retries.labels(sink).inc()
        self.sink_failures[sink] = self.sink_failures.get(sink, 0) + 1

    def sink_done(self, sink: str, seconds: float) -> None:
        self.sink_write.labels(sink).observe(seconds)
        self.sink_failures.pop(sink, None)

    async def write(self, name: str, write: Callable[[], Awaitable[Any]], **kw: Any) -> Any:
        """:func:`pipeline.sinks.write_with_retry`, timed, its retries counted."""
        started = time.monotonic()

        def retried(attempt: int, exc: SinkUnavailable) -> None:
            self.sink_retry(name)

        result = await write_with_retry(name, write, on_retry=retried, **kw)
        self.sink_done(name, time.monotonic() - started)
        return result

    async def read(self, name: str, read: Callable[[], Awaitable[Any]], **kw: Any) -> Any:
        """A read from a store, retried like a write: its failures count as the sink
        retrying (what ``sink_retrying`` watches) and a success clears them."""
        result = await write_with_retry(
            name, read, on_retry=lambda attempt, exc: self.sink_retry(name), **kw)
        self.sink_failures.pop(name, None)
        return result

    def retrying(self, sink: str) -> bool:
        """Whether ``sink`` has failed since it last succeeded."""
        return self.sink_failures.get(sink, 0) > 0

    # -- what the alert rules see ---------------------------------------------------------

    def observations(self) -> Observations:
        now = time.monotonic()
        calls: dict[str, list[int]] = {}
        for ts, provider, failed in self.calls:
            if now - ts <= ERROR_WINDOW:
                c = calls.setdefault(provider, [0, 0])
                c[0] += 1
                c[1] += failed
        quota_used = {}
        for provider, q in self.quota.items():
            limit, left = q.get("limit_day"), q.get("day")
            if limit and left is not None:
                quota_used[provider] = 1 - left / limit
        circuits = {p: c.breaker.state for p, c in self.clients.items()
                    if getattr(c, "breaker", None) is not None}
        for provider, state in circuits.items():
            self.circuit_open.labels(provider).set(0 if state == "closed" else 1)
        return Observations(
            quota_used=quota_used,
            calls={p: (c[0], c[1]) for p, c in calls.items()},
            circuits=circuits,
            silent_live={mid: now - ts for mid, (ts, _) in self.last_data.items()},
            lag=self.lag_total,
            sinks_retrying=dict(self.sink_failures),
        )

    def alert_changed(self, alerting: Alerting) -> None:
        by_rule: dict[str, int] = {}
        for alert in alerting.engine.firing.values():
            by_rule[alert.rule] = by_rule.get(alert.rule, 0) + 1
        for rule in {r.name for r in alerting.engine.rules} | set(by_rule):
            self.alerts_firing.labels(rule).set(by_rule.get(rule, 0))

    def scrape(self) -> bytes:
        return generate_latest(self.registry)


def consumer_lag(consumer: Any) -> dict[tuple[str, int], int]:
    """Per assigned partition: the highwater minus the next offset to read."""
    out: dict[tuple[str, int], int] = {}
    try:
        assignment = consumer.assignment()
    except Exception:  # noqa: BLE001 - the consumer is not up yet
        return out
    read = getattr(consumer, "_read_offset", {})
    committed = getattr(consumer, "_committed_offset", {})
    for tp in assignment:
        try:
            high = consumer.highwater(tp)
        except Exception:  # noqa: BLE001 - no fetch yet on this partition
            high = None
        if high is None:
            continue
        last = read.get(tp) if hasattr(read, "get") else None
        if last is None:
            last = committed.get(tp) if hasattr(committed, "get") else None
        position = (last + 1) if last is not None else 0
        out[(tp.topic, tp.partition)] = max(0, int(high) - position)
    return out


class Monitor(Service):
    """Metrics server, sampler, heartbeat and alerting of one worker."""

    def __init__(self, pipeline: Pipeline, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.pipeline = pipeline
        self.settings = s = pipeline.settings
        self.metrics = WorkerMetrics(lambda: pipeline.counters)
        self.worker_id = f"{socket.gethostname()}-{os.getpid()}-{id(self) % 100_000}"
        self.port: int | None = None
        self.redis: aioredis.Redis | None = None
        self._runner: web.AppRunner | None = None
        self.started_at = time.time()
        self._topic_prefix = s.topic_prefix
        alerts_topic = pipeline.app.topic(
            s.topic(topics.ALERTS), key_type=bytes, value_type=bytes, key_serializer="raw",
            value_serializer="raw", partitions=1)

        async def publish(key: bytes, value: bytes) -> None:
            await alerts_topic.send(key=key, value=value)

        self.alerting = Alerting(self.metrics.observations, publish=publish,
                                 webhook_url=s.alert_webhook_url, redis_prefix=s.redis_prefix,
                                 loop=kwargs.get("loop"))
        self.alerting.engine.source = self.worker_id
        self.alerting.on_alert.append(lambda _: self.metrics.alert_changed(self.alerting))

    def on_init_dependencies(self) -> list[Service]:
        return [self.alerting]

    async def on_start(self) -> None:
        s = self.settings
        self.redis = redis_client(s, socket_timeout=2, socket_connect_timeout=2)
        self.alerting.redis = self.redis
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        try:
            site = web.TCPSite(self._runner, s.edge_host, s.worker_web_port)
            await site.start()
            self.port = self._runner.addresses[0][1]
            log.info("worker metrics on http://%s:%d/metrics", s.edge_host, self.port)
        except OSError as exc:
            log.warning("worker web server not started on port %d: %r", s.worker_web_port, exc)

    async def on_stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self.redis is not None:
            try:
                await self.redis.hdel(self.workers_key, self.worker_id)
            except (RedisError, OSError):
                pass
            await self.redis.aclose()

    @property
    def workers_key(self) -> str:
        return f"{self.settings.redis_prefix}workers"

    # -- HTTP ---------------------------------------------------------------------------

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=self.metrics.scrape(),
                            headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "worker": self.worker_id})

    async def readiness(self) -> dict[str, bool]:
        checks = {"broker": bool(self._assignment()) and await self._broker_answers(),
                  "redis": False}
        assert self.redis is not None
        try:
            checks["redis"] = bool(await asyncio.wait_for(self.redis.ping(), 2))
        except (RedisError, OSError, asyncio.TimeoutError):
            pass
        if self.pipeline.sinks:
            checks["postgres"] = False
            pool = self.pipeline.stores.pool
            if pool is not None:
                try:
                    async with pool.acquire(timeout=2) as conn:
                        checks["postgres"] = await conn.fetchval("SELECT 1", timeout=2) == 1
                except Exception:  # noqa: BLE001 - any failure means not ready
                    pass
        return checks

    async def _readyz(self, request: web.Request) -> web.Response:
        checks = await self.readiness()
        ready = all(checks.values())
        return web.json_response({"status": "ready" if ready else "unready", "checks": checks},
                                 status=200 if ready else 503)

    async def _broker_answers(self) -> bool:
        """The broker answers a metadata request (an assignment outlives a broker that is gone)."""
        try:
            producer = self.pipeline.app.producer._ensure_producer()  # type: ignore[attr-defined]
            await asyncio.wait_for(producer.client.fetch_all_metadata(), 2)
        except Exception:  # noqa: BLE001 - any failure means not ready
            return False
        return True

    def _assignment(self) -> set[Any]:
        try:
            return set(self.pipeline.app.consumer.assignment())
        except Exception:  # noqa: BLE001 - the consumer is not up yet
            return set()

    # -- sampling -----------------------------------------------------------------------

    @Service.timer(SAMPLE_EVERY)
    async def _sample(self) -> None:
        try:
            await self.sample()
        except Exception:  # noqa: BLE001 - a failed sample must not stop the next one
            log.exception("monitor sample failed")

    async def sample(self) -> dict[str, Any]:
        m = self.metrics
        lag: dict[tuple[str, int], int] = {}
        try:
            lag = consumer_lag(self.pipeline.app.consumer)
        except Exception:  # noqa: BLE001 - no consumer yet
            pass
        m.consumer_lag.clear()
        for (topic, partition), n in lag.items():
            m.consumer_lag.labels(topic.removeprefix(self._topic_prefix), str(partition)).set(n)
        m.lag_total = sum(lag.values())
        # One reading of the assignment for the whole beat: a rebalance may finish while the
        # sample awaits Redis, and the partitions and the targets must describe one moment.
        # A pipeline worker's partitions are those of its input; a sinks worker reads
        # the deltas (and the snapshots, partitioned alike).
        role = getattr(self.pipeline, "role", "all")
        source = topics.MATCH_DELTAS if role == "sinks" else topics.RAW_FETCHES
        owned = {tp.partition for tp in self._assignment()
                 if tp.topic == self.settings.topic(source)}
        poller = getattr(self.pipeline, "poller", None)
        schedule = await self._sample_poller(poller, owned) if poller is not None else {}
        active = await self._active_matches()
        if active is not None:
            m.active_matches.set(active)
            m.recommended.set(recommended_workers(active, self.settings.partitions))
        beat = {
            "id": self.worker_id, "host": socket.gethostname(), "pid": os.getpid(),
            "role": role,
            "started": self.started_at, "ts": time.time(), "port": self.port,
            "partitions": sorted(owned),
            "lag": {f"{t.removeprefix(self._topic_prefix)}/{p}": n for (t, p), n in sorted(lag.items())},
            "counters": dict(self.pipeline.counters),
            "quota": {p: dict(q) for p, q in m.quota.items()},
            "circuits": {p: c.breaker.state for p, c in m.clients.items()
                         if getattr(c, "breaker", None) is not None},
            "active_matches": active,
            "alerts": [a.as_json() for a in self.alerting.engine.firing.values()],
            **schedule,
        }
        if self.redis is not None:
            try:
                async with self.redis.pipeline(transaction=False) as pipe:
                    pipe.hset(self.workers_key, self.worker_id, json.dumps(beat))
                    pipe.expire(self.workers_key, 60)
                    await pipe.execute()
            except (RedisError, OSError) as exc:
                log.debug("heartbeat not written: %r", exc)
        return beat

    async def _sample_poller(self, poller: Any, owned: set[int]) -> dict[str, Any]:
        from pipeline.poller import partition_for

        m = self.metrics
        parts = self.settings.partitions
        now = poller.clock.now()
        mine = [t for t in poller.targets.values() if partition_for(t.key, parts) in owned]
        states: dict[tuple[str, str], int] = {}
        for t in mine:
            state = ("in_flight" if t.key in poller.in_flight
                     else "due" if t.next_due <= now else "waiting")
            states[(t.sport, state)] = states.get((t.sport, state), 0) + 1
        m.poll_targets.clear()
        for sport in poller.clients:
            for state in ("due", "waiting", "in_flight"):
                m.poll_targets.labels(sport, state).set(states.get((sport, state), 0))
        for provider, budget in poller.budgets.items():
            try:
                used = await budget.used_today(now)
            except (RedisError, OSError):
                continue
            left = max(0, budget.limit_day - used)
            known = m.quota.get(provider, {}).get("day")
            m.observe_quota(provider, left if known is None else min(left, int(known)),
                            budget.limit_day)
        for client in poller.clients.values():
            m.clients.setdefault(client.provider, client)
        upcoming = sorted(mine, key=lambda t: t.next_due)[:20]
        return {
            "targets": len(mine),
            "calls": poller.calls, "denied": poller.denied,
            "next_polls": [{"key": t.key, "sport": t.sport, "endpoint": t.endpoint,
                            "priority": t.priority, "interval": round(poller.interval(t), 1),
                            "in": round(max(0.0, t.next_due - now) / max(poller.clock.speed, 1e-9), 1)}
                           for t in upcoming],
        }

    async def _active_matches(self) -> int | None:
        if self.redis is None:
            return None
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for sport in SPORTS:
                    pipe.scard(RedisKeys(self.settings.redis_prefix).live(sport))
                return sum(int(n) for n in await pipe.execute())
        except (RedisError, OSError):
            return None
