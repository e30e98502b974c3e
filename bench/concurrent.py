"""Concurrent clients on one edge process: mixed SSE / WebSocket, time for one delta to reach all.

The clients live in several processes (a process may hold 20,000 open files). Once all
are connected, a few deltas are sent one at a time; each client records arrival time
minus the delta's ``fetched_at`` (its send time).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from bench import common
from bench.common import Row, log

PROCESSES = 4


async def run(env: common.Env, workdir: Path, quick: bool) -> list[Row]:
    total = 1000 if quick else 10_000
    deltas = 3 if quick else 5
    s = env.settings("conc")
    await common.prepare(s)
    edge, url = common.start_edge(s, workdir / "logs")
    talkers = [common.clients_proc(f"conc-clients-{i}", workdir / "logs") for i in range(PROCESSES)]
    try:
        await common.edge_ready(s, url, edge)
        port = url.rsplit(":", 1)[1]
        each = total // PROCESSES
        t0 = time.monotonic()
        answers = await asyncio.gather(*(
            t.ask({"op": "connect", "host": "127.0.0.1", "port": port, "sse": each // 2,
                   "ws": each - each // 2, "mode": "latency", "concurrency": 100}, timeout=600)
            for t in talkers))
        connected = sum(a["connected"] for a in answers)
        log(f"concurrent: {connected} of {total} connected in {time.monotonic() - t0:.1f} s, "
            f"edge RSS {edge.rss() / 2**20:.0f} MiB")
        await asyncio.sleep(1.0)
        for t in talkers:
            await t.ask({"op": "reset"})
        reach_all: list[float] = []
        lat: list[float] = []
        seqs: dict[str, int] = {}
        for i in range(deltas):
            seqs = await common.produce_deltas(s, 1, matches=1, start_seq=seqs)
            reports = await asyncio.gather(*(
                t.ask({"op": "wait", "frames": a["connected"], "timeout": 30}, timeout=60)
                for t, a in zip(talkers, answers)))
            new = []
            for t, r in zip(talkers, reports):
                for kind in ("sse", "ws"):
                    new += r["lat"][kind]
                await t.ask({"op": "reset"})
            lat += new
            if len(new) < connected:
                log(f"concurrent: delta {i + 1} reached {len(new)} of {connected}")
            reach_all.append(max(new) if new else float("nan"))
            await asyncio.sleep(0.5)
        p50, p99 = common.pct(lat, 50), common.pct(lat, 99)
        complete = len(lat) == connected * deltas
        log(f"concurrent: p50 {p50}, p99 {p99}, reach-all {reach_all}")
        def ms(x: float | None) -> float | None:
            return None if x is None else x * 1000
        return [
            Row("concurrent", f"concurrent clients connected to one edge (SSE + WS, {PROCESSES} "
                "client processes)", connected, "", target=f"{total:,}",
                ok=connected >= total),
            Row("concurrent", f"one delta to all {connected:,} clients: p99 per client",
                ms(p99), "ms", reference=f"p50 {common.fmt(ms(p50), 'ms')}", target="≤ 250 ms",
                ok=None if p99 is None else p99 <= 0.25 and complete,
                note=f"{len(lat):,} of {connected * deltas:,} deliveries"),
            Row("concurrent", "one delta to all clients: time until the last one has it (worst of "
                f"{deltas})", ms(max(reach_all)), "ms"),
        ]
    finally:
        for t in talkers:
            t.send({"op": "quit"})
            t.proc.stop()
        edge.stop()
        await common.cleanup(s)
