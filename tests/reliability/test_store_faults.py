"""Redis stopped and restarted, Postgres stopped and restarted, on the same ports.

The sinks retry until the store is back and then catch up; the edge keeps streaming
(from the broker) and keeps answering REST from whichever store is up.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from pathlib import Path

import asyncpg
import httpx
import pytest

from pipeline import embedded
from tables.migrate import migrate
from tests.reliability.conftest import Cluster, Collector, report, settle_and_check


async def _outage(store: str, server, restart, cluster: Cluster, collector: Collector,
                  seconds: float) -> dict:
    """Stop ``server`` for ``seconds`` while checking the edge still serves; restart it."""
    mid = collector.deltas[-1]["match_id"]
    before = len(collector.deltas)
    server.stop()
    stopped = time.monotonic()
    answers: dict[str, int] = {}
    async with httpx.AsyncClient(timeout=15) as client:
        while time.monotonic() - stopped < seconds:
            r = await client.get(f"{cluster.urls[0]}/v1/matches/{mid}")
            key = f"{r.status_code}:{r.headers.get('x-cache', '-')}"
            answers[key] = answers.get(key, 0) + 1
            assert r.status_code < 500 or store == "both", r.text
            assert (await client.get(f"{cluster.urls[0]}/healthz")).status_code == 200
            await asyncio.sleep(0.5)
    during = len(collector.deltas) - before
    new = await asyncio.to_thread(restart)
    back = time.monotonic()
    await collector.wait_for(len(collector.deltas) + 5, 90)
    return {"server": new, "stats": {"store": store, "outage_s": seconds, "rest_answers": answers,
                                     "deltas_during_outage": during,
                                     "first_delta_after_restart_s": round(time.monotonic() - back, 1)}}


async def _run(rel_settings, tmp_path: Path, *, stores: list[str], seconds: float, name: str) -> None:
    redis_server = await asyncio.to_thread(embedded.start_redis, tmp_path / "redis")
    pg_server = await asyncio.to_thread(embedded.start_postgres, tmp_path / "postgres")
    s = dataclasses.replace(rel_settings, redis_url=redis_server.url, database_url=pg_server.url)
    conn = await asyncpg.connect(pg_server.url)
    await migrate(conn, s.db_schema)
    await conn.close()
    cluster = Cluster(s, tmp_path / "logs")
    collector = Collector(cluster.urls)
    outages = []
    try:
        await cluster.start_sim()
        await cluster.start_edge()
        await cluster.start_worker()
        collector.start()
        await collector.wait_for(10, 90)
        for store in stores:
            await asyncio.sleep(3)
            if store == "redis":
                out = await _outage("redis", redis_server, lambda port=redis_server.port: embedded.start_redis(
                    tmp_path / "redis", port=port), cluster, collector, seconds)
                redis_server = out["server"]
            else:
                out = await _outage("postgres", pg_server, lambda port=pg_server.port: embedded.start_postgres(
                    tmp_path / "postgres", port=port), cluster, collector, seconds)
                pg_server = out["server"]
            outages.append(out["stats"])
        await asyncio.sleep(3)
        assert all(p.alive() for p in cluster.procs), cluster.tails()
        conn = await asyncpg.connect(pg_server.url)
        try:
            stats = await settle_and_check(cluster, collector, conn)
        finally:
            await conn.close()
    finally:
        await collector.stop()
        cluster.stop()
        redis_server.stop()
        pg_server.stop()
    report(name, outages=outages, **stats)


async def test_redis_then_postgres_down_and_back(rel_settings, tmp_path):
    await _run(rel_settings, tmp_path, stores=["redis", "postgres"], seconds=8,
               name="redis-postgres-outage-8s")


@pytest.mark.slow
async def test_redis_down_30s(rel_settings, tmp_path):
    await _run(rel_settings, tmp_path, stores=["redis"], seconds=30, name="redis-outage-30s")


@pytest.mark.slow
async def test_postgres_down_30s(rel_settings, tmp_path):
    await _run(rel_settings, tmp_path, stores=["postgres"], seconds=30, name="postgres-outage-30s")
