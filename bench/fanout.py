"""Fan-out: deliveries per second from one edge process to N WebSocket or N SSE clients.

Deltas are produced straight to ``match-deltas``; the clients (another process) count
the delta frames they receive; deliveries/s = frames / (last arrival - the moment the
first delta was sent), so the edge is charged for reading the topic too and a server that
writes a burst of frames in one go gains nothing from it in the figure. The reference is
:mod:`bench.rawserver` writing the same frame, pre-encoded, to the same number of
sockets, timed from the moment it is told to start.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from bench import common
from bench.common import Row, Talker, log


def rate(r: dict[str, Any], started: float) -> float | None:
    span = r["last"] - started
    return r["frames"] / span if r["frames"] and span > 0 else None


async def edge_rate(env: common.Env, workdir: Path, kind: str, clients: int,
                    deltas: int) -> tuple[float | None, dict[str, Any]]:
    s = env.settings(f"fan{kind}")
    await common.prepare(s)
    edge, url = common.start_edge(s, workdir / "logs")
    talker = common.clients_proc(f"fan-clients-{kind}", workdir / "logs")
    try:
        await common.edge_ready(s, url, edge)
        got = await talker.ask({"op": "connect", "host": "127.0.0.1", "port": url.rsplit(":", 1)[1],
                                kind: clients, "mode": "count"}, timeout=120)
        if got["failed"]:
            log(f"fan-out {kind}: {got['failed']} clients failed to connect")
        await talker.ask({"op": "reset"})
        started = time.time()
        await common.produce_deltas(s, deltas)
        r = await talker.ask({"op": "wait", "frames": deltas * got["connected"], "timeout": 120,
                              "idle": 3}, timeout=180)
        return rate(r, started), r
    finally:
        talker.send({"op": "quit"})
        talker.proc.stop()
        edge.stop()
        await common.cleanup(s)


async def raw_rate(workdir: Path, kind: str, clients: int, deltas: int) -> float | None:
    server = Talker(common.Proc.module(f"rawserver-{kind}", "bench.rawserver", [], workdir / "logs",
                                       stdin=True))
    talker = common.clients_proc(f"fan-raw-clients-{kind}", workdir / "logs")
    try:
        port = (await server.read(30))["port"]
        await talker.ask({"op": "connect", "host": "127.0.0.1", "port": port, kind: clients,
                          "mode": "count"}, timeout=120)
        await talker.ask({"op": "reset"})
        started = time.time()
        server.send({"op": "burst", "count": deltas})
        r = await talker.ask({"op": "wait", "frames": deltas * clients, "timeout": 120, "idle": 3},
                             timeout=180)
        await server.read(60)
        return rate(r, started)
    finally:
        talker.send({"op": "quit"})
        server.send({"op": "quit"})
        talker.proc.stop()
        server.proc.stop()


async def run(env: common.Env, workdir: Path, quick: bool) -> list[Row]:
    clients = 20 if quick else 100
    deltas = 200 if quick else 1000
    rows = []
    for kind, name in (("ws", "WebSocket"), ("sse", "SSE")):
        value, r = await edge_rate(env, workdir, kind, clients, deltas)
        ref = await raw_rate(workdir, kind, clients, deltas)
        ratio = value / ref if value and ref else None
        expected = clients * deltas
        note = f"{r['frames']:,} of {expected:,} frames, {r['resets']} resets"
        log(f"fan-out {kind}: edge {value}, raw {ref} ({note})")
        rows.append(Row("fanout", f"fan-out {name}: deliveries/s, {clients} clients × {deltas} deltas",
                        value, "/s", reference=f"raw sockets {common.fmt(ref, '/s')}",
                        target="≥ 0.5 of raw", ratio=ratio,
                        ok=None if ratio is None else ratio >= 0.5 and r["frames"] == expected,
                        note=note))
    return rows
