"""Several workers and edges on one broker: stop one of each and nothing is lost.

Three workers share the partitions (and so the polling); two edges each read the
delta topic. A client streams from one edge. Mid-stream one worker is killed
(SIGKILL: its partitions move to the others after the session timeout) and the
client's edge is stopped (SIGTERM); the client resumes on the other edge with its
cursor. Polling, processing and streaming must go on, and the client must have
every delta of every match it saw, gapless and without duplicates, exactly as
Postgres recorded them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import signal
import time

import httpx

from tables import codec
from tests.support import SSE, Proc, free_port, wait_http

CHANNELS = "sport.football,sport.basketball,sport.hockey"


async def sim_requests(client: httpx.AsyncClient, base: str) -> int:
    state = (await client.get(base + "/_sim/state")).json()
    return sum(state["received"].values())


async def test_three_workers_two_edges_lose_nothing_when_one_of_each_stops(
        settings, pg, redis_client, tmp_path):
    sim_port = free_port()
    edge_ports = [free_port(), free_port()]
    start = time.time()
    s = dataclasses.replace(settings, provider_url=f"http://127.0.0.1:{sim_port}",
                            clock_speed=60.0, clock_start=start)
    logs = tmp_path / "logs"
    sim = Proc("simulator", ["simulate", "--port", str(sim_port), "--seed", "11", "--speed", "60",
                             "--start", repr(start)], s, logs)
    workers = [Proc(f"worker-{i}", ["worker"], s, logs,
                    {"BTS_DATA_DIR": str(tmp_path / f"w{i}"), "WORKER_WEB_PORT": "0"})
               for i in range(3)]
    edges = [Proc(f"edge-{i}", ["edge", "--port", str(p)], s, logs)
             for i, p in enumerate(edge_ports)]
    bases = [f"http://127.0.0.1:{p}" for p in edge_ports]
    sim_base = f"http://127.0.0.1:{sim_port}"
    seen: dict[str, list[int]] = {}
    cursor = ""
    try:
        for base, edge in zip(bases, edges):
            await wait_http(base + "/healthz", edge)

        async def stream(base: str, until: float, stop_after: int | None = None) -> int:
            nonlocal cursor
            got = 0
            headers = {"Last-Event-ID": cursor} if cursor else {}
            timeout = httpx.Timeout(30, read=30)
            async with httpx.AsyncClient(timeout=timeout) as client:
                try:
                    async with SSE(client, f"{base}/v1/stream?channels={CHANNELS}", headers) as sse:
                        assert sse.response.status_code == 200
                        while time.monotonic() < until:
                            ev = await sse.next(max(0.1, until - time.monotonic()))
                            if ev.get("event") != "delta":
                                continue
                            delta = codec.loads(ev["data"])
                            seen.setdefault(delta["match_id"], []).append(delta["seq"])
                            cursor = ev["id"]
                            got += 1
                            if stop_after is not None and got >= stop_after:
                                return got
                except (EOFError, httpx.HTTPError, asyncio.TimeoutError):
                    pass
            return got

        first = await stream(bases[0], time.monotonic() + 90, stop_after=10)
        assert first == 10, workers[0].log()[-3000:]
        async with httpx.AsyncClient() as client:
            before = await sim_requests(client, sim_base)

        workers[1].stop(signal.SIGKILL)
        killed_at = time.time()
        reader = asyncio.ensure_future(stream(bases[0], time.monotonic() + 120))
        await asyncio.sleep(2)
        edges[0].stop(signal.SIGTERM)
        await reader
        after_kill = await stream(bases[1], time.monotonic() + 30)
        stopped_reading = time.time()

        async with httpx.AsyncClient() as client:
            assert await sim_requests(client, sim_base) > before, "polling stopped"
        assert after_kill > 0, "no delta reached the client after the stops"
        late = await pg.fetchval(
            f'SELECT count(*) FROM "{s.db_schema}".match_deltas WHERE ts > to_timestamp($1)',
            killed_at + 12)
        assert late > 0, "no delta was processed after the worker's partitions moved"

        for p in (sim, workers[0], workers[2], edges[1]):
            assert p.alive(), p.log()[-3000:]
        # The sinks catch up, then the client's view must equal the recorded history.
        await asyncio.sleep(3)
        for match_id, seqs in seen.items():
            assert len(seqs) == len(set(seqs)), f"{match_id} duplicated: {seqs}"
            assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), f"{match_id} gap: {seqs}"
            rows = await pg.fetch(
                f'SELECT seq, extract(epoch FROM ts) AS ts FROM "{s.db_schema}".match_deltas'
                ' WHERE match_id = $1 ORDER BY seq', match_id)
            stored = [r["seq"] for r in rows]
            assert stored == list(range(1, len(stored) + 1)), f"{match_id} stored gap: {stored}"
            assert set(seqs) <= set(stored)
            # Every delta recorded while the client was reading reached it.
            due = {r["seq"] for r in rows
                   if r["seq"] >= seqs[0] and float(r["ts"]) < stopped_reading - 2}
            assert due <= set(seqs), (match_id, sorted(due - set(seqs)))
    finally:
        for p in (*edges, *workers, sim):
            p.stop()
