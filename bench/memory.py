"""Memory per idle connection on the edge: RSS growth / N, against a plain asyncio server.

Half the connections are SSE, half WebSocket (subscribed to one channel). The
reference is :mod:`bench.rawserver`, which holds the same connections with nothing
but a protocol object each.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from bench import common
from bench.common import Row, Talker, log


async def measure(proc: common.Proc, talker: Talker, port: int | str, n: int,
                  sse: float = 0.5, deflate: bool = False) -> float:
    await asyncio.sleep(1.0)
    before = proc.rss()
    got = await talker.ask({"op": "connect", "host": "127.0.0.1", "port": port,
                            "sse": round(n * sse), "ws": n - round(n * sse), "mode": "count",
                            "concurrency": 100, "deflate": deflate}, timeout=300)
    await asyncio.sleep(2.0)
    after = proc.rss()
    if got["failed"]:
        log(f"memory: {got['failed']} connections failed")
    return (after - before) / max(1, got["connected"])


async def edge_memory(env: common.Env, workdir: Path, n: int, sse: float, name: str,
                      deflate: bool = False) -> float:
    """RSS growth per connection on a fresh edge, ``sse`` of them SSE and the rest WebSocket."""
    s = env.settings(name)
    await common.prepare(s)
    edge, url = common.start_edge(s, workdir / "logs")
    talker = common.clients_proc(f"{name}-clients", workdir / "logs")
    try:
        await common.edge_ready(s, url, edge)
        # one connection first, so what is paid once (imports, caches) is not counted
        warm = common.clients_proc(f"{name}-warm", workdir / "logs")
        await warm.ask({"op": "connect", "host": "127.0.0.1", "port": url.rsplit(":", 1)[1],
                        "sse": 5, "ws": 5})
        per_edge = await measure(edge, talker, url.rsplit(":", 1)[1], n, sse, deflate)
        warm.send({"op": "quit"})
        warm.proc.stop()
    finally:
        talker.send({"op": "quit"})
        talker.proc.stop()
        edge.stop()
        await common.cleanup(s)
    return per_edge


async def run(env: common.Env, workdir: Path, quick: bool) -> list[Row]:
    n = 400 if quick else 2000
    per_edge = await edge_memory(env, workdir, n, 0.5, "mem")
    per_sse = await edge_memory(env, workdir, n // 2, 1.0, "memsse")
    per_ws = await edge_memory(env, workdir, n // 2, 0.0, "memws")
    per_deflate = await edge_memory(env, workdir, n // 2, 0.0, "memwsz", deflate=True)
    server = Talker(common.Proc.module("mem-rawserver", "bench.rawserver", [], workdir / "logs",
                                       stdin=True))
    talker = common.clients_proc("mem-raw-clients", workdir / "logs")
    try:
        port = (await server.read(30))["port"]
        per_raw = await measure(server.proc, talker, port, n)
    finally:
        talker.send({"op": "quit"})
        server.send({"op": "quit"})
        talker.proc.stop()
        server.proc.stop()
    kib = per_edge / 1024
    log(f"memory: edge {kib:.1f} KiB/conn (SSE {per_sse / 1024:.1f}, WebSocket {per_ws / 1024:.1f}),"
        f" raw {per_raw / 1024:.1f} KiB/conn")
    return [Row("memory", f"memory per idle connection on the edge ({n:,}, half SSE half WS)",
                kib, "KiB", reference=f"plain asyncio socket {per_raw / 1024:.1f} KiB",
                target="≤ 20 KiB", ratio=per_edge / per_raw if per_raw > 0 else None,
                ok=kib <= 20,
                note=f"SSE alone {per_sse / 1024:.1f} KiB, WebSocket alone {per_ws / 1024:.1f} KiB, "
                     f"WebSocket whose client offers permessage-deflate (as browsers do) "
                     f"{per_deflate / 1024:.1f} KiB ({n // 2:,} connections each, fresh edges)")]
