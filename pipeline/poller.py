"""The poller: runs the poll targets this worker owns, within the shared quota budget.

Targets are spread across workers by Faust partitions: a target's key hashes to a
partition of ``raw-fetches``, and the worker that holds that partition polls it
(and publishes the answer to it). When a worker dies, the rebalance hands its
partitions, and so its targets, to the others. Every answer, success or typed
error, becomes one record on ``raw-fetches``.

What is known of the day (matches by phase and start time, watched matches) is
read from Redis, where the sinks and the edges keep it, so every worker plans
from the same facts.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import zlib
from typing import TYPE_CHECKING, Any

import redis.asyncio as aioredis
from mode import Service
from redis.exceptions import RedisError

from pipeline import targets as tg
from pipeline.budget import QuotaBudget
from pipeline.clock import ScaledClock
from pipeline.connections import redis_client
from pipeline.settings import Settings
from tables import codec
from tables.redis_keys import RedisKeys

if TYPE_CHECKING:
    from pipeline.app import Pipeline

log = logging.getLogger(__name__)

SPORTS = ("football", "basketball", "hockey")
#: Re-plan at least this often (real seconds) ...
PLAN_EVERY = 1.0
#: ... and at least every this many provider seconds, so that a simulated day run fast
#: is planned as finely as a real one (at speed 480 one real second is 8 minutes).
PLAN_EVERY_PROVIDER = 15.0
MAX_IN_FLIGHT = 4  # concurrent calls per provider


def plan_every(speed: float) -> float:
    """Real seconds between re-plans when provider time runs ``speed`` times the wall clock."""
    return min(PLAN_EVERY, PLAN_EVERY_PROVIDER / speed)


def partition_for(key: str, partitions: int) -> int:
    return zlib.crc32(key.encode()) % partitions


def response_ids(sport: str, body: str) -> set[str] | None:
    """Provider ids in an answer's ``response`` list, or None when it cannot be read."""
    try:
        data = json.loads(body)
        items = data["response"]
        if sport == "football":
            return {str(item["fixture"]["id"]) for item in items}
        return {str(item["id"]) for item in items}
    except (ValueError, KeyError, TypeError):
        return None


class Poller(Service):
    def __init__(self, settings: Settings, pipeline: Pipeline, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.settings = settings
        self.pipeline = pipeline
        self.clock = ScaledClock(settings.clock_speed, settings.clock_start or None)
        self.keys = RedisKeys(settings.redis_prefix)
        self.redis: aioredis.Redis | None = None
        self.clients: dict[str, Any] = {}
        self.budgets: dict[str, QuotaBudget] = {}
        self.targets: dict[str, tg.PollTarget] = {}
        self.factors: dict[str, list[float]] = {}
        self.in_flight: set[str] = set()
        self._polls: set[asyncio.Task[None]] = set()
        self.last_live_ids: dict[str, set[str]] = {}
        self.confirm: dict[str, tg.PollTarget] = {}
        self.calls = 0
        self.denied = 0
        self._sems: dict[str, asyncio.Semaphore] = {}
        self._worker_id = f"{int(time.time() * 1000)}-{id(self)}"

    async def on_start(self) -> None:
        from pipeline.providers.client import build_client

        s = self.settings
        self.redis = redis_client(s, socket_timeout=5, socket_connect_timeout=3)
        for sport in SPORTS:
            provider = tg.PROVIDER_OF[sport]
            key = getattr(s, f"{provider}_key")
            if not key:
                log.info("no key for %s: not polling %s", provider, sport)
                continue
            self.clients[sport] = build_client(sport, key, base_url=s.provider_url or None,
                                               rapidapi=s.provider_mode == "rapidapi")
            self.budgets[provider] = QuotaBudget(self.redis, s.redis_prefix, provider, s.provider_plan)
            self._sems[sport] = asyncio.Semaphore(MAX_IN_FLIGHT)

    async def on_stop(self) -> None:
        # Polls still running are cancelled before the clients and the producer go away;
        # a cancelled poll has published nothing, so its target is simply due again.
        polls = list(self._polls)
        for task in polls:
            task.cancel()
        await asyncio.gather(*polls, return_exceptions=True)
        for client in self.clients.values():
            await client.close()
        if self.redis is not None:
            await self.redis.aclose()

    # -- what this worker owns ----------------------------------------------

    def owned_partitions(self) -> set[int]:
        topic = self.pipeline.raw_fetches.get_topic_name()
        try:
            assignment = self.pipeline.app.consumer.assignment()
        except Exception:  # noqa: BLE001 - the consumer is not up yet
            return set()
        return {tp.partition for tp in assignment if tp.topic == topic}

    # -- planning -----------------------------------------------------------

    async def known_matches(self, sport: str, now: float) -> tuple[list[tg.KnownMatch], bool]:
        assert self.redis is not None
        ids = await self.redis.zrangebyscore(self.keys.sport(sport), now - 86_400, now + 86_400)
        if not ids:
            return [], bool(await self.redis.zcard(self.keys.sport(sport)))
        async with self.redis.pipeline(transaction=False) as pipe:
            for mid in ids:
                pipe.hget(self.keys.match(mid.decode()), "phase")
            phases = await pipe.execute()
        scores = await self.redis.zmscore(self.keys.sport(sport), ids)
        out = []
        for mid, phase, start in zip(ids, phases, scores):
            if phase is None or start is None:
                continue
            out.append(tg.KnownMatch(mid.decode().split("-", 2)[2], phase.decode(), float(start)))
        return out, True

    async def watched(self) -> dict[str, int]:
        assert self.redis is not None
        counts: dict[str, int] = {}
        async for key in self.redis.scan_iter(match=self.keys.watch_pattern(), count=100):
            for mid, n in (await self.redis.hgetall(key)).items():
                counts[mid.decode()] = counts.get(mid.decode(), 0) + int(n)
        return counts

    async def replan(self) -> None:
        now = self.clock.now()
        try:
            watched = await self.watched()
            planned: list[tg.PollTarget] = []
            for sport in self.clients:
                matches, known = await self.known_matches(sport, now)
                ids = {m.split("-", 2)[2] for m in watched if m.startswith(sport + "-")}
                planned += tg.plan(sport, now, matches, ids, known=known)
        except (RedisError, OSError) as exc:
            log.warning("cannot plan from redis, keeping the current schedule: %r", exc)
            return
        fresh: dict[str, tg.PollTarget] = {}
        for t in planned:
            tg.carry_over(t, self.targets.get(t.key), self.interval(t), now)
            fresh[t.key] = t
        for key, t in self.confirm.items():
            fresh[key] = t
        self.targets = fresh
        await self._share_demand(now)

    async def _share_demand(self, now: float) -> None:
        """Publish this worker's demand; stretch by the demand of every worker together."""
        assert self.redis is not None
        owned = self.owned_partitions()
        parts = self.settings.partitions
        for provider, budget in self.budgets.items():
            mine = [t for t in self.targets.values()
                    if t.provider == provider and partition_for(t.key, parts) in owned]
            key = f"{self.settings.redis_prefix}demand:{provider}"
            try:
                await self.redis.hset(key, self._worker_id, json.dumps(tg.demand(mine)))
                await self.redis.expire(key, 10)
                rows = await self.redis.hgetall(key)
                total = [0.0, 0.0, 0.0, 0.0]
                for raw in rows.values():
                    for i, d in enumerate(json.loads(raw)):
                        total[i] += d
                self.factors[provider] = tg.stretch(total, await budget.pace(now))
            except (RedisError, OSError, ValueError):
                self.factors[provider] = [1.0, 1.0, 1.0, 1.0]

    def interval(self, t: tg.PollTarget) -> float:
        factor = self.factors.get(t.provider, [1.0] * 4)[min(t.priority, 3)]
        return min(tg.MAX_INTERVAL, t.interval * factor)

    # -- polling ------------------------------------------------------------

    @Service.task
    async def _run(self) -> None:
        last_plan = 0.0
        period = plan_every(self.clock.speed)
        while not self.should_stop:
            if time.monotonic() - last_plan >= period:
                await self.replan()
                last_plan = time.monotonic()
            owned = self.owned_partitions()
            now = self.clock.now()
            if owned:
                parts = self.settings.partitions
                due = sorted(
                    (t for t in self.targets.values()
                     if t.next_due <= now and t.key not in self.in_flight
                     and partition_for(t.key, parts) in owned),
                    key=lambda t: (t.priority, t.next_due))
                for t in due:
                    self.in_flight.add(t.key)
                    task = asyncio.ensure_future(self._poll(t, partition_for(t.key, parts)))
                    self._polls.add(task)
                    task.add_done_callback(self._polls.discard)
            await self.sleep(0.05 if self.clock.speed > 10 else 0.2)

    async def _poll(self, t: tg.PollTarget, partition: int) -> None:
        try:
            async with self._sems[t.sport]:
                await self._poll_once(t, partition)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - one failed poll must not stop the others
            log.exception("poll of %s failed", t.key)
            t.next_due = self.clock.now() + self.interval(t)
        finally:
            self.in_flight.discard(t.key)

    async def _poll_once(self, t: tg.PollTarget, partition: int) -> None:
        budget = self.budgets[t.provider]
        now = self.clock.now()
        breaker = getattr(self.clients[t.sport], "breaker", None)
        if breaker is not None and breaker.state == "open":
            # No call would be made: spend no quota and publish nothing until it half-opens.
            t.next_due = now + self.interval(t)
            return
        grant = await budget.acquire(now, t.priority)
        if not grant.granted:
            self.denied += 1
            t.next_due = t.not_before = now + max(self.interval(t),
                                                  min(grant.retry_after, tg.MAX_INTERVAL))
            return
        raw = await self.clients[t.sport].fetch(t.endpoint, t.params)
        self.calls += 1
        quota = self.clients[t.sport].quota
        if (monitor := getattr(self.pipeline, "monitor", None)) is not None:
            monitor.metrics.upstream(raw, self.clients[t.sport])
        await budget.observe(self.clock.now(), quota.daily_remaining, quota.minute_remaining)
        await self.pipeline.raw_fetches.send(key=t.key.encode(), value=codec.dumps(raw),
                                             partition=partition)
        t.last_polled = now
        t.next_due = now + self.interval(t)
        if t.once:
            self.confirm.pop(t.key, None)
            self.targets.pop(t.key, None)
        if t.key == "football:live" and raw.get("error") is None:
            self._follow_live(t.sport, raw["body"])

    def _follow_live(self, sport: str, body: str) -> None:
        ids = response_ids(sport, body)
        if ids is None:
            return
        gone = sorted(self.last_live_ids.get(sport, set()) - ids)
        self.last_live_ids[sport] = ids
        now = self.clock.now()
        for target in tg.confirm_targets(sport, gone):
            target.next_due = now
            self.confirm[target.key] = target
            self.targets[target.key] = target
