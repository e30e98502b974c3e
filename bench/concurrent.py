"""Concurrent clients on one edge process: mixed SSE / WebSocket, time for one delta to reach all.

The clients live in several processes (a process may hold 20,000 open files). Once all
are connected, a few deltas are sent one at a time; each client records arrival time
minus the delta's ``fetched_at`` (its send time). The edge's deltas go through the
broker first (produced to ``match-deltas``, read by the edge's feed).

The reference is :mod:`bench.rawserver` with the same number of clients from the same
client processes: each delta encoded once, stamped when it is encoded, and written
straight to every socket. It tells what the machine allows when a Python client fleet
shares two cores with the server.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bench import common
from bench.common import Row, Talker, log

PROCESSES = 4


async def connect_all(talkers: list[Talker], port: str, total: int) -> list[dict[str, Any]]:
    each = total // PROCESSES
    return await asyncio.gather(*(
        t.ask({"op": "connect", "host": "127.0.0.1", "port": port, "sse": each // 2,
               "ws": each - each // 2, "mode": "latency", "concurrency": 100}, timeout=600)
        for t in talkers))


async def measure(name: str, talkers: list[Talker], answers: list[dict[str, Any]], deltas: int,
                  send_one: Callable[[], Awaitable[Any]]) -> tuple[list[float], list[float], int]:
    """(latency per delivery, time for each delta to reach all, clients connected)."""
    connected = sum(a["connected"] for a in answers)
    await asyncio.sleep(1.0)
    for t in talkers:
        await t.ask({"op": "reset"})
    reach_all: list[float] = []
    lat: list[float] = []
    for i in range(deltas):
        await send_one()
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
            log(f"{name}: delta {i + 1} reached {len(new)} of {connected}")
        reach_all.append(max(new) if new else float("nan"))
        await asyncio.sleep(0.5)
    return lat, reach_all, connected


async def raw_reference(workdir: Path, total: int, deltas: int) -> tuple[float | None, float | None]:
    """(p50, p99) seconds for the raw server to reach ``total`` clients."""
    server = Talker(common.Proc.module("rawserver-conc", "bench.rawserver", [], workdir / "logs",
                                       stdin=True))
    talkers = [common.clients_proc(f"conc-raw-clients-{i}", workdir / "logs")
               for i in range(PROCESSES)]
    try:
        port = str((await server.read(30))["port"])
        answers = await connect_all(talkers, port, total)

        async def burst() -> None:
            await server.ask({"op": "burst", "count": 1, "fresh": True}, timeout=60)

        lat, reach_all, connected = await measure("concurrent raw", talkers, answers, deltas, burst)
        log(f"concurrent raw: {connected} connected, p50 {common.pct(lat, 50)}, "
            f"p99 {common.pct(lat, 99)}, reach-all {reach_all}")
        return common.pct(lat, 50), common.pct(lat, 99)
    finally:
        for t in talkers:
            t.send({"op": "quit"})
            t.proc.stop()
        server.send({"op": "quit"})
        server.proc.stop()


async def run(env: common.Env, workdir: Path, quick: bool) -> list[Row]:
    total = 1000 if quick else 10_000
    deltas = 3 if quick else 5
    s = env.settings("conc")
    await common.prepare(s)
    edge, url = common.start_edge(s, workdir / "logs")
    talkers = [common.clients_proc(f"conc-clients-{i}", workdir / "logs") for i in range(PROCESSES)]
    try:
        await common.edge_ready(s, url, edge)
        t0 = time.monotonic()
        answers = await connect_all(talkers, url.rsplit(":", 1)[1], total)
        log(f"concurrent: {sum(a['connected'] for a in answers)} of {total} connected in "
            f"{time.monotonic() - t0:.1f} s, edge RSS {edge.rss() / 2**20:.0f} MiB")
        seqs: dict[str, int] = {}

        async def produce() -> None:
            nonlocal seqs
            seqs = await common.produce_deltas(s, 1, matches=1, start_seq=seqs)

        lat, reach_all, connected = await measure("concurrent", talkers, answers, deltas, produce)
    finally:
        for t in talkers:
            t.send({"op": "quit"})
            t.proc.stop()
        edge.stop()
        await common.cleanup(s)
    p50, p99 = common.pct(lat, 50), common.pct(lat, 99)
    complete = len(lat) == connected * deltas
    log(f"concurrent: p50 {p50}, p99 {p99}, reach-all {reach_all}")
    raw50, raw99 = await raw_reference(workdir, total, deltas)

    def ms(x: float | None) -> float | None:
        return None if x is None else x * 1000

    return [
        Row("concurrent", f"concurrent clients connected to one edge (SSE + WS, {PROCESSES} "
            "client processes)", connected, "", target=f"{total:,}",
            ok=connected >= total),
        Row("concurrent", f"one delta to all {connected:,} clients: p99 per client",
            ms(p99), "ms", reference=f"raw sockets {common.fmt(ms(raw99), 'ms')}",
            target="≤ 250 ms",
            ok=None if p99 is None else p99 <= 0.25 and complete,
            note=f"{len(lat):,} of {connected * deltas:,} deliveries; p50 "
                 f"{common.fmt(ms(p50), 'ms')} (raw sockets {common.fmt(ms(raw50), 'ms')})"),
        Row("concurrent", "one delta to all clients: time until the last one has it (worst of "
            f"{deltas})", ms(max(reach_all)), "ms"),
    ]
