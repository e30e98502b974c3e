"""The broker unreachable, then back on the same port.

The embedded broker (Tansu, memory storage) loses every topic when it restarts, so
this is the worst case: the changelog, the offsets and the delta history are gone.
The policy under test: pollers keep polling and their sends wait and retry; the
edge keeps answering REST from Redis; once the broker is back the detect agent
recovers each match's seq from Redis / Postgres, so seq continues where it was
(no restart at 1, no gap in Postgres), and clients connecting afterwards stream.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from pathlib import Path

import httpx
import pytest

from pipeline import embedded
from tables.migrate import quote_ident
from tests.reliability.conftest import Cluster, Collector, by_match, gaps_and_duplicates, report


async def _broker_outage(rel_settings, pg, tmp_path: Path, seconds: float, name: str) -> None:
    broker = await asyncio.to_thread(embedded.start_broker, tmp_path / "broker")
    s = dataclasses.replace(rel_settings, kafka_url=broker.url)
    cluster = Cluster(s, tmp_path / "logs")
    before = Collector(cluster.urls)
    after = Collector(cluster.urls)
    try:
        await cluster.start_sim()
        await cluster.start_edge()
        await cluster.start_worker()
        before.start()
        await before.wait_for(10, 90)
        await asyncio.sleep(3)
        await before.stop()
        mid = before.deltas[-1]["match_id"]
        broker.stop()
        down = time.monotonic()
        rest: dict[str, int] = {}
        async with httpx.AsyncClient(timeout=15) as client:
            while time.monotonic() - down < seconds:
                r = await client.get(f"{cluster.urls[0]}/v1/matches/{mid}")
                rest[str(r.status_code)] = rest.get(str(r.status_code), 0) + 1
                await asyncio.sleep(0.5)
        broker = await asyncio.to_thread(embedded.start_broker, tmp_path / "broker", broker.port)
        back = time.monotonic()
        after.cursor = ""
        after.start()
        try:
            await after.wait_for(5, 120)
            resumed = round(time.monotonic() - back, 1)
        finally:
            await asyncio.sleep(5)
            await after.stop()
        alive = {p.name: p.alive() for p in cluster.procs}
        schema = quote_ident(s.db_schema)
        rows = await pg.fetch(f"SELECT match_id, array_agg(seq ORDER BY seq) AS seqs "
                              f"FROM {schema}.match_deltas GROUP BY match_id")
        stored = {r["match_id"]: list(r["seqs"]) for r in rows}
        lost, dup, bad = gaps_and_duplicates(stored)
        first = by_match(before.deltas)
        restarted = [m for m, seqs in by_match(after.deltas).items()
                     if m in first and min(seqs) <= max(first[m])]
        report(name, outage_s=seconds, rest_during_outage=rest, resumed_s=resumed,
               alive=alive, deltas_before=len(before.deltas), deltas_after=len(after.deltas),
               postgres_lost=lost, postgres_duplicates=dup, seq_restarted=len(restarted))
        assert all(alive.values()), cluster.tails()
        assert rest.get("200"), rest
        assert not restarted, restarted[:10]
        assert not bad, bad[:10]
    finally:
        cluster.stop()
        broker.stop()


@pytest.mark.slow
async def test_broker_down_and_back(rel_settings, pg, redis_client, tmp_path):
    from tables.migrate import migrate

    await migrate(pg, rel_settings.db_schema)
    await _broker_outage(rel_settings, pg, tmp_path, 8, "broker-outage-8s")


@pytest.mark.slow
async def test_broker_down_30s(rel_settings, pg, redis_client, tmp_path):
    from tables.migrate import migrate

    await migrate(pg, rel_settings.db_schema)
    await _broker_outage(rel_settings, pg, tmp_path, 30, "broker-outage-30s")
