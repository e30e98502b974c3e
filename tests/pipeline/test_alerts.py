"""Alert rules fire once and resolve once; transitions reach the log, the topic, Redis
and the webhook; the quota and 5xx-burst rules end to end against the simulator."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from pipeline.alerts import Alerting, Observations, RuleEngine
from pipeline.metrics import WorkerMetrics
from pipeline.providers.client import build_client
from pipeline.simulator.model import ManualClock, World
from pipeline.simulator.server import serve
from tests.support import local_webhook


class Receiver:
    """A local webhook that fails its first ``fail_first`` requests with 500."""

    def __init__(self, fail_first: int = 0) -> None:
        self.fail_first = fail_first
        self.requests = 0
        self.received: list[dict] = []

    async def handle(self, request: web.Request) -> web.Response:
        self.requests += 1
        if self.requests <= self.fail_first:
            return web.Response(status=500)
        self.received.append(await request.json())
        return web.Response(text="ok")

    def texts(self) -> list[str]:
        return [r["text"] for r in self.received]


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[Receiver, str]]:
    rec = Receiver(fail_first=1)
    async with local_webhook(rec.handle) as url:
        yield rec, url


def keys(alerts) -> list[tuple[str, str]]:
    return [(a.key, a.state) for a in alerts]


@pytest.mark.parametrize("bad, good, key", [
    (Observations(quota_used={"apifootball": 0.81}), Observations(quota_used={"apifootball": 0.1}),
     "quota_80:apifootball"),
    (Observations(calls={"apihockey": (10, 6)}), Observations(calls={"apihockey": (10, 1)}),
     "provider_errors:apihockey"),
    (Observations(circuits={"apifootball": "open"}), Observations(circuits={"apifootball": "closed"}),
     "circuit_open:apifootball"),
    (Observations(silent_live={"football-apifootball-1": 61.0}),
     Observations(silent_live={"football-apifootball-1": 2.0}), "live_stale:football-apifootball-1"),
    (Observations(lag=5000), Observations(lag=3), "consumer_lag"),
    (Observations(sinks_retrying={"postgres": 2}), Observations(), "sink_retrying:postgres"),
])
def test_each_rule_fires_once_and_resolves_once(bad: Observations, good: Observations, key: str) -> None:
    engine = RuleEngine(clear_after=5)
    seen = []
    for t, obs in enumerate([good, bad, bad, bad, good, good, good, good, good, good, good]):
        seen += engine.evaluate(obs, now=100.0 + t)
    assert keys(seen) == [(key, "firing"), (key, "resolved")]
    assert seen[1].ts - seen[0].ts >= 5  # the hold before resolving


def test_quota_levels_and_error_rate_bounds() -> None:
    engine = RuleEngine(clear_after=0)
    fired = engine.evaluate(Observations(quota_used={"apibasketball": 0.96}), now=1)
    assert sorted(keys(fired)) == [("quota_80:apibasketball", "firing"),
                                   ("quota_95:apibasketball", "firing")]
    assert {a.key: a.severity for a in fired}["quota_95:apibasketball"] == "critical"
    # too few calls to judge a rate
    assert engine.evaluate(Observations(quota_used={"apibasketball": 0.96},
                                        calls={"apibasketball": (3, 3)}), now=2) == []


async def test_transitions_reach_log_topic_redis_and_webhook(
        settings, redis_client, receiver, caplog) -> None:
    rec, url = receiver
    topic = settings.topic("alerts")
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
    await producer.start()

    async def publish(key: bytes, value: bytes) -> None:
        await producer.send_and_wait(topic, value, key=key)

    obs = Observations(circuits={"apifootball": "open"})
    alerting = Alerting(lambda: obs, publish=publish, webhook_url=url, redis=redis_client,
                        redis_prefix=settings.redis_prefix, engine=RuleEngine(clear_after=0))
    alerting.webhook.base = 0.05
    try:
        with caplog.at_level(logging.INFO, logger="pipeline.alerts"):
            assert keys(await alerting.evaluate()) == [("circuit_open:apifootball", "firing")]
            assert await alerting.evaluate() == []
            obs = Observations(circuits={"apifootball": "closed"})
            assert keys(await alerting.evaluate()) == [("circuit_open:apifootball", "resolved")]
            await alerting.drain()
    finally:
        await producer.stop()
        if alerting.webhook is not None:
            await alerting.webhook.close()
    assert [r.levelname for r in caplog.records if r.getMessage().startswith(("alert firing", "alert resolved"))] == ["WARNING", "INFO"]
    # the webhook failed once and was retried: it got both, in order
    texts = rec.texts()
    assert len(texts) == 2 and rec.requests == 3
    assert "[FIRING] circuit_open" in texts[0] and "[RESOLVED] circuit_open" in texts[1]
    stored = [json.loads(x) for x in await redis_client.lrange(settings.redis_prefix + "alerts", 0, -1)]
    assert [a["state"] for a in stored] == ["resolved", "firing"]
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=settings.kafka_bootstrap,
                                auto_offset_reset="earliest")
    await consumer.start()
    try:
        got = []
        while len(got) < 2:
            batch = await asyncio.wait_for(consumer.getmany(timeout_ms=500), 10)
            got += [json.loads(m.value) for msgs in batch.values() for m in msgs]
    finally:
        await consumer.stop()
    assert [(a["key"], a["state"]) for a in got] == [("circuit_open:apifootball", "firing"),
                                                     ("circuit_open:apifootball", "resolved")]


async def _sim_fault(session, base: str, kind: str, count: int) -> None:
    async with session.post(f"{base}/_sim/faults", json={"kind": kind, "count": count,
                                                          "sport": "football"}) as resp:
        assert resp.status == 201, await resp.text()


async def test_quota_and_5xx_burst_against_the_simulator(receiver) -> None:
    import aiohttp

    rec, url = receiver
    world = World(7, ManualClock())
    metrics = WorkerMetrics()
    alerting = Alerting(metrics.observations, webhook_url=url, engine=RuleEngine(clear_after=0))
    alerting.webhook.base = 0.05
    client = None
    transitions = []

    async def call(n: int = 1) -> None:
        for _ in range(n):
            raw = await client.fetch("fixtures", {"live": "all"})
            metrics.upstream(raw, client)
            transitions.extend(await alerting.evaluate())

    async with serve(world) as base, aiohttp.ClientSession() as session:
        client = build_client("football", "k", base_url=base, retries=0, breaker_threshold=5,
                              breaker_cooldown=0.3)
        try:
            await call(2)
            assert transitions == []
            # quota exhaustion: the provider says the day is used up
            await _sim_fault(session, base, "quota_day", 1)
            await call()
            assert sorted(keys(transitions)) == [("quota_80:apifootball", "firing"),
                                                 ("quota_95:apifootball", "firing")]
            transitions.clear()
            await call()  # the next answer's headers show the quota back
            assert sorted(keys(transitions)) == [("quota_80:apifootball", "resolved"),
                                                 ("quota_95:apifootball", "resolved")]
            transitions.clear()
            # a 5xx burst: errors over half the calls, then the circuit opens
            await _sim_fault(session, base, "error500", 5)
            await call(5)
            assert sorted(keys(transitions)) == [("circuit_open:apifootball", "firing"),
                                                 ("provider_errors:apifootball", "firing")]
            transitions.clear()
            await asyncio.sleep(0.4)  # the cooldown; the trial call succeeds and closes it
            await call(8)
            assert sorted(keys(transitions)) == [("circuit_open:apifootball", "resolved"),
                                                 ("provider_errors:apifootball", "resolved")]
            await alerting.drain()
        finally:
            await client.close()
            await alerting.webhook.close()
    texts = rec.texts()
    assert len(texts) == 8
    assert sum("[FIRING] quota_95" in t for t in texts) == 1
    assert sum("[RESOLVED] provider_errors" in t for t in texts) == 1
    outcomes = metrics.scrape().decode()
    assert 'outcome="upstream_error"' in outcomes and 'outcome="quota_exceeded"' in outcomes
