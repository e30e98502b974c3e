"""The whole path for real: simulator → poller → raw-fetches → normalise → detect →
match-deltas → edge (SSE) and sinks → Redis/Postgres → REST.
"""

from __future__ import annotations

import asyncio
import time

import httpx
from httpx_sse import aconnect_sse

from tables import codec
from tables.schema_check import validate
from tests.support import Proc, free_port, wait_http, with_simulator


async def first_deltas(url: str, count: int, timeout: float) -> list[dict]:
    got: list[dict] = []
    async with httpx.AsyncClient(timeout=httpx.Timeout(timeout, read=timeout)) as client:
        async with aconnect_sse(client, "GET", url) as source:
            assert source.response.status_code == 200
            async for event in source.aiter_sse():
                if event.event == "delta":
                    delta = codec.loads(event.data)
                    delta["_cursor"] = event.id
                    got.append(delta)
                    if len(got) >= count:
                        return got
    return got


async def test_simulated_matches_stream_to_sse_and_land_in_redis_and_postgres(settings, pg, redis_client, tmp_path):
    edge_port = free_port()
    logs = tmp_path / "logs"
    s, sim = with_simulator(settings, logs, edge_port=edge_port)
    worker = Proc("worker", ["worker"], s, logs)
    edge = Proc("edge", ["edge", "--port", str(edge_port)], s, logs)
    base = f"http://127.0.0.1:{edge_port}"
    try:
        await wait_http(base + "/healthz", edge)
        deltas = await asyncio.wait_for(
            first_deltas(base + "/v1/stream?channels=sport.football", 3, 90), 120)
        assert len(deltas) == 3, worker.log()[-3000:]
        for d in deltas:
            validate("delta", {k: v for k, v in d.items() if k != "_cursor"})
            assert d["sport"] == "football" and d["seq"] >= 1
            assert d["_cursor"]
        target = deltas[-1]
        async with httpx.AsyncClient() as client:
            deadline = time.monotonic() + 30
            while True:
                r = await client.get(f"{base}/v1/matches/{target['match_id']}")
                if r.status_code == 200 and r.json()["data"]["seq"] >= target["seq"]:
                    break
                assert time.monotonic() < deadline, (r.status_code, r.text)
                await asyncio.sleep(0.2)
            assert r.headers["x-cache"] == "hit"
            validate("match", r.json()["data"])
            etag = r.headers["etag"]
            again = await client.get(f"{base}/v1/matches/{target['match_id']}",
                                     headers={"If-None-Match": etag})
            assert again.status_code in (200, 304)
        deadline = time.monotonic() + 30
        while True:
            n = await pg.fetchval(
                f'SELECT count(*) FROM "{s.db_schema}".match_deltas WHERE match_id = $1 AND seq = $2',
                target["match_id"], target["seq"])
            if n == 1:
                break
            assert time.monotonic() < deadline
            await asyncio.sleep(0.2)
        assert sim.alive() and worker.alive() and edge.alive()
    finally:
        for p in (edge, worker, sim):
            p.stop()
