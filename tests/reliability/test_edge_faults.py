"""An edge killed with SIGKILL while a client streams: the client reconnects to another
edge with its cursor (``Last-Event-ID``) and misses nothing."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.reliability.conftest import Collector, report, settle_and_check


async def _edge_kills(cluster, pg, *, kills: int, run_for: float, name: str) -> None:
    await cluster.start_sim()
    await cluster.start_worker()
    for _ in range(kills + 1):
        await cluster.start_edge()
    collector = Collector(cluster.urls)
    collector.start()
    try:
        await collector.wait_for(10, 90)
        recoveries = []
        for i in range(kills):
            await asyncio.sleep(run_for)
            assert collector.edge % len(cluster.urls) == i
            before, connections = len(collector.deltas), collector.connections
            cluster.edges[i].kill()
            killed_at = time.monotonic()
            while collector.connections == connections:
                assert time.monotonic() - killed_at < 30, "the client did not reconnect"
                await asyncio.sleep(0.05)
            await collector.wait_for(before + 1, 60)
            recoveries.append(round(time.monotonic() - killed_at, 2))
        await asyncio.sleep(run_for)
        assert cluster.edges[-1].alive() and cluster.workers[0].alive(), cluster.tails()
        stats = await settle_and_check(cluster, collector, pg)
    finally:
        await collector.stop()
    report(name, edge_kills=kills, reconnect_s=[round(r, 2) for r in collector.reconnects],
           first_delta_after_kill_s=recoveries, **stats)


async def test_edge_sigkill_client_resumes_on_another_edge(cluster, pg):
    await _edge_kills(cluster, pg, kills=1, run_for=4, name="edge-sigkill-resume")


@pytest.mark.slow
async def test_edges_killed_one_after_another(cluster, pg):
    await _edge_kills(cluster, pg, kills=3, run_for=15, name="edge-sigkill-resume-x3")
