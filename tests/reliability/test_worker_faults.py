"""A worker killed with SIGKILL mid-stream: restarted, or replaced by a second worker.

The table recovers from its changelog (the broker keeps it), the group rebalances
after the session timeout (10 s), and a client streaming all along sees every delta
exactly once.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.reliability.conftest import Collector, report, settle_and_check


async def _kill_and_restart(cluster, pg, *, cycles: int, run_for: float, name: str) -> None:
    await cluster.start_sim()
    await cluster.start_edge()
    await cluster.start_worker()
    collector = Collector(cluster.urls)
    collector.start()
    try:
        await collector.wait_for(10, 90)
        recoveries = []
        for _ in range(cycles):
            await asyncio.sleep(run_for)
            cluster.workers[-1].kill()
            before = len(collector.deltas)
            killed_at = time.monotonic()
            await cluster.start_worker()
            await collector.wait_for(before + 5, 90)
            recoveries.append(round(time.monotonic() - killed_at, 1))
        await asyncio.sleep(min(run_for, 3))
        assert cluster.edges[0].alive() and cluster.workers[-1].alive(), cluster.tails()
        stats = await settle_and_check(cluster, collector, pg)
    finally:
        await collector.stop()
    report(name, kills=cycles, recovery_s=recoveries, **stats)


async def test_worker_sigkill_then_restart(cluster, pg):
    await _kill_and_restart(cluster, pg, cycles=1, run_for=3, name="worker-sigkill-restart")


@pytest.mark.slow
async def test_worker_sigkill_restart_repeatedly(cluster, pg):
    await _kill_and_restart(cluster, pg, cycles=4, run_for=12, name="worker-sigkill-restart-x4")


@pytest.mark.slow
async def test_worker_sigkill_replaced_by_second_worker(cluster, pg):
    await cluster.start_sim()
    await cluster.start_edge()
    await cluster.start_worker()
    collector = Collector(cluster.urls)
    collector.start()
    try:
        await collector.wait_for(20, 90)
        second = await cluster.start_worker()
        await asyncio.sleep(20)  # both workers share the partitions
        cluster.workers[0].kill()
        before = len(collector.deltas)
        killed_at = time.monotonic()
        await collector.wait_for(before + 20, 120)
        recovery = round(time.monotonic() - killed_at, 1)
        await asyncio.sleep(15)
        assert second.alive(), cluster.tails()
        stats = await settle_and_check(cluster, collector, pg)
    finally:
        await collector.stop()
    report("worker-sigkill-replaced", recovery_s=recovery, **stats)
