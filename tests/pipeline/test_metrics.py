"""Worker metrics move when their events happen; the worker serves /metrics, /healthz and
/readyz and publishes the heartbeat that ``bts-guru status`` reads."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from types import SimpleNamespace

import httpx
import pytest
from aiokafka import AIOKafkaProducer
from faust.types import TP
from prometheus_client.parser import text_string_to_metric_families

from pipeline.metrics import WorkerMetrics, consumer_lag, recommended_workers
from pipeline.sinks import SinkUnavailable
from tests.support import Proc, free_port, wait_http, with_simulator


def sample(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
    return total


def has(text: str, name: str) -> bool:
    return any(s.name == name for f in text_string_to_metric_families(text) for s in f.samples)


def test_upstream_calls_latency_and_quota_move() -> None:
    m = WorkerMetrics()
    quota = SimpleNamespace(daily_remaining=70, daily_limit=100, minute_remaining=9)
    client = SimpleNamespace(quota=quota, breaker=SimpleNamespace(state="closed"))
    m.upstream({"provider": "apifootball", "endpoint": "fixtures", "latency_ms": 40, "error": None},
               client)
    m.upstream({"provider": "apifootball", "endpoint": "fixtures", "latency_ms": 900,
                "error": {"type": "UpstreamError", "message": "500"}}, client)
    m.upstream({"provider": "apifootball", "endpoint": "fixtures", "latency_ms": 0,
                "error": {"type": "CircuitOpen", "message": "open"}}, client)
    text = m.scrape().decode()
    for outcome in ("ok", "upstream_error", "circuit_open"):
        assert sample(text, "bts_upstream_calls_total", provider="apifootball",
                      endpoint="fixtures", outcome=outcome) == 1
    assert sample(text, "bts_upstream_latency_seconds_count", provider="apifootball") == 2
    assert sample(text, "bts_quota_remaining", provider="apifootball", window="day") == 70
    assert sample(text, "bts_quota_remaining", provider="apifootball", window="minute") == 9
    obs = m.observations()
    assert obs.calls == {"apifootball": (2, 1)}
    assert obs.quota_used == {"apifootball": pytest.approx(0.3)}
    assert obs.circuits == {"apifootball": "closed"}


def test_pipeline_counts_latency_and_live_matches() -> None:
    counts = {"raw": 0, "deltas": 0, "dead": 0}
    m = WorkerMetrics(lambda: counts)
    counts["raw"] += 2
    counts["dead"] += 1
    counts["deltas"] += 1
    m.delta({"fetched_at": time.time() - 0.3})
    text = m.scrape().decode()
    assert sample(text, "bts_raw_records_total") == 2
    assert sample(text, "bts_dead_letters_total") == 1
    assert sample(text, "bts_deltas_total") == 1
    assert sample(text, "bts_pipeline_latency_seconds_count") == 1
    assert 0.3 <= sample(text, "bts_pipeline_latency_seconds_sum") < 5
    m.match_seen({"id": "football-apifootball-1", "status": {"phase": "live"}})
    m.match_seen({"id": "football-apifootball-2", "status": {"phase": "scheduled"}})
    assert list(m.observations().silent_live) == ["football-apifootball-1"]
    m.match_seen({"id": "football-apifootball-1", "status": {"phase": "finished"}})
    assert m.observations().silent_live == {}


async def test_sink_writes_are_timed_and_retries_counted() -> None:
    m = WorkerMetrics()
    failures = 2

    async def write() -> str:
        nonlocal failures
        if failures:
            failures -= 1
            raise SinkUnavailable("redis", OSError("down"))
        return "done"

    assert await m.write("redis", write, base=0.01, cap=0.02) == "done"
    text = m.scrape().decode()
    assert sample(text, "bts_sink_retries_total", sink="redis") == 2
    assert sample(text, "bts_sink_write_seconds_count", sink="redis") == 1
    assert m.observations().sinks_retrying == {}


def test_consumer_lag_and_recommended_workers() -> None:
    tp = TP("t-raw-fetches", 3)
    consumer = SimpleNamespace(assignment=lambda: {tp}, highwater=lambda _: 120,
                               _read_offset={tp: 99}, _committed_offset={})
    assert consumer_lag(consumer) == {("t-raw-fetches", 3): 20}
    assert recommended_workers(0, 8) == 1
    assert recommended_workers(120, 8) == 3
    assert recommended_workers(10_000, 8) == 8


async def test_worker_serves_metrics_health_and_status(settings, pg, redis_client, tmp_path) -> None:
    web_port = free_port()
    logs = tmp_path / "logs"
    (tmp_path / "data").mkdir(exist_ok=True)
    s, sim = with_simulator(settings, logs, worker_web_port=web_port)
    worker = Proc("worker", ["worker"], s, logs)
    url = f"http://127.0.0.1:{web_port}"
    try:
        await wait_http(url + "/healthz", worker)
        async with httpx.AsyncClient(timeout=10) as client:
            wanted = ("bts_upstream_calls_total", "bts_upstream_latency_seconds_count",
                      "bts_raw_records_total", "bts_deltas_total", "bts_pipeline_latency_seconds_count",
                      "bts_sink_write_seconds_count", "bts_poll_targets", "bts_quota_remaining",
                      "bts_consumer_lag", "bts_active_matches")
            deadline = time.monotonic() + 60
            while True:
                text = (await client.get(url + "/metrics")).text
                missing = [n for n in wanted if sample(text, n) <= 0 and not
                           (n in ("bts_consumer_lag", "bts_poll_targets") and has(text, n))]
                if not missing:
                    break
                assert time.monotonic() < deadline, f"{missing}\n{worker.log()[-3000:]}"
                await asyncio.sleep(0.5)
            assert sample(text, "bts_recommended_workers") >= 1
            ready = await client.get(url + "/readyz")
            assert ready.status_code == 200, ready.text
            assert ready.json()["checks"] == {"broker": True, "redis": True, "postgres": True}

            dead = sample(text, "bts_dead_letters_total")
            producer = AIOKafkaProducer(bootstrap_servers=s.kafka_bootstrap)
            await producer.start()
            try:
                for partition in range(s.partitions):
                    await producer.send_and_wait(s.topic("raw-fetches"), b"not json",
                                                 partition=partition)
            finally:
                await producer.stop()
            deadline = time.monotonic() + 20
            while sample((await client.get(url + "/metrics")).text, "bts_dead_letters_total") < dead + 1:
                assert time.monotonic() < deadline, worker.log()[-2000:]
                await asyncio.sleep(0.3)

        out = await asyncio.to_thread(
            subprocess.run, [sys.executable, "-m", "pipeline.cli", "status", "--json"],
            env={**__import__("os").environ, **s.env()}, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        doc = json.loads(out.stdout)
        assert len(doc["workers"]) == 1
        w = doc["workers"][0]
        assert sorted(w["partitions"]) == list(range(s.partitions))
        assert w["targets"] >= 1 and w["next_polls"]
        assert doc["quota"]["apifootball"]["limit_day"] > 0
        assert "raw-fetches" in doc["lag"]
        text_out = await asyncio.to_thread(
            subprocess.run, [sys.executable, "-m", "pipeline.cli", "status"],
            env={**__import__("os").environ, **s.env()}, capture_output=True, text=True, timeout=60)
        assert text_out.returncode == 0 and "WORKERS (1)" in text_out.stdout, text_out.stderr
        assert "monitor sample failed" not in worker.log()
        assert "alert evaluation failed" not in worker.log()
    finally:
        worker.stop()
        sim.stop()


async def test_a_rebalance_during_a_sample_leaves_the_heartbeat_consistent(tmp_path) -> None:
    from pipeline.app import Pipeline
    from pipeline.poller import partition_for
    from pipeline.settings import Settings
    from pipeline.targets import PollTarget
    from tables import topics

    s = Settings.from_env({}, kafka_url="kafka://127.0.0.1:9", partitions=4, store="memory",
                          data_dir=str(tmp_path), apifootball_key="k")
    pipeline = Pipeline(s, sinks=False)
    monitor, poller = pipeline.monitor, pipeline.poller
    raw = s.topic(topics.RAW_FETCHES)
    keys = ["football:live", "football:date:2026-11-29", "basketball:date:2026-11-29",
            "hockey:date:2026-11-29", "football:ids:1-2-3:3"]
    poller.targets = {k: PollTarget(k, k.split(":")[0], "fixtures", {}, 0, 15.0) for k in keys}
    assignment = {TP(raw, 0), TP(raw, 1)}
    monitor._assignment = lambda: set(assignment)  # type: ignore[method-assign]
    poller.owned_partitions = lambda: {tp.partition for tp in assignment}  # type: ignore[method-assign]

    class Budget:
        limit_day = 100

        async def used_today(self, now: float) -> int:
            # The other member leaves while the sample waits on Redis.
            assignment.update(TP(raw, p) for p in range(4))
            return 0

    poller.budgets = {"apifootball": Budget()}
    beat = await monitor.sample()
    owned = set(beat["partitions"])
    assert owned == {0, 1}
    assert beat["targets"] == sum(partition_for(k, 4) in owned for k in keys)
    beat = await monitor.sample()
    assert beat["partitions"] == [0, 1, 2, 3] and beat["targets"] == len(keys)
