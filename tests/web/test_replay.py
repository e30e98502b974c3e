"""History for clients without Kafka: ``GET /v1/replay``, and ``bts-guru replay --to-sse``
replaying a finished match to an edge's SSE clients."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time

import httpx
import jsonpatch

from tables import codec
from tables.api_keys import KeyStore
from tables.schema_check import validate
from tests.pipeline.test_replay import run_diff
from tests.support import SSE
from tests.web.conftest import delta

M1 = "football-apifootball-7001"
M2 = "football-apifootball-7002"


async def send_at(edge_env, d: dict, ts: float) -> None:
    await edge_env.producer.send_and_wait(edge_env.settings.topic("match-deltas"), codec.dumps(d),
                                          key=d["match_id"].encode(), timestamp_ms=int(ts * 1000))


def ndjson(r: httpx.Response) -> list[dict]:
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/x-ndjson")
    return [codec.loads(line) for line in r.text.splitlines() if line]


async def test_replay_endpoint_streams_a_window_within_the_tier_reach(edge_env):
    now = time.time()
    for seq, ago in ((1, 3 * 3600), (2, 40 * 60), (3, 20 * 60), (4, 5 * 60)):
        await send_at(edge_env, delta(M1, seq), now - ago)
    await send_at(edge_env, delta(M2, 1, league="140"), now - 30 * 60)
    await send_at(edge_env, delta(M1, 3), now - 4 * 60)  # a worker's re-send: dropped
    _, pro = await KeyStore(edge_env.pool, edge_env.settings.db_schema).create("partner", "pro")
    url = edge_env.url + "/v1/replay"
    async with httpx.AsyncClient(timeout=30) as c:
        got = ndjson(await c.get(url, params={"channels": "league.football.39",
                                              "from": repr(now - 50 * 60)}))
        assert [(d["match_id"], d["seq"]) for d in got] == [(M1, 2), (M1, 3), (M1, 4)]
        assert got[0] == delta(M1, 2)

        iso_to = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now - 10 * 60))
        got = ndjson(await c.get(url, params={"channels": f"match.{M1}",
                                              "from": repr(now - 50 * 60), "to": iso_to}))
        assert [d["seq"] for d in got] == [2, 3]

        got = ndjson(await c.get(url, params={"channels": "league.football.39"}))
        assert [d["seq"] for d in got] == [2, 3, 4]  # from defaults to the tier's reach (1 h)

        r = await c.get(url, params={"channels": "sport.football", "from": repr(now - 2 * 3600)})
        assert r.status_code == 403 and r.json()["error"]["code"] == "beyond_history"
        assert "1 hours" in r.json()["error"]["message"]

        got = ndjson(await c.get(url, headers={"Authorization": f"Bearer {pro}"},
                                 params={"channels": "sport.football", "from": repr(now - 4 * 3600),
                                         "to": repr(now - 25 * 60)}))
        assert [(d["match_id"], d["seq"]) for d in got] == [(M1, 1), (M1, 2), (M2, 1)]
        for d in got:
            validate("delta", d)

        got = ndjson(await c.get(url, headers={"X-API-Key": pro},
                                 params={"channels": f"private-match.{M1}", "limit": "2",
                                         "from": repr(now - 4 * 3600)}))
        assert [d["seq"] for d in got] == [1, 2]

        r = await c.get(url, params={"channels": f"private-match.{M1}"})
        assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden_channel"
        for params in ({"channels": "sport.football", "from": "last week"},
                       {"channels": "sport.curling"},
                       {},
                       {"channels": "sport.football", "from": repr(now - 60), "to": repr(now - 120)},
                       {"channels": "sport.football", "limit": "0"}):
            r = await c.get(url, params=params)
            assert r.status_code == 400, (params, r.text)
            assert r.json()["error"]["code"] == "bad_parameter"


async def test_replaying_a_finished_match_to_sse_reproduces_its_deltas(edge_env):
    original = [d for d, _ in run_diff(M1)]
    for d in original:
        await edge_env.send(d)
    rid = f"{M1}-replay-t1"
    env = {**os.environ, **edge_env.settings.env()}
    async with httpx.AsyncClient(timeout=30) as c, \
            SSE(c, edge_env.url + f"/v1/stream?channels=match.{rid}") as s:
        assert (await s.next())["comment"] == "connected"
        result = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "pipeline.cli", "replay", "--match", M1, "--to-sse",
             "--speed", "20000", "--replay-id", rid],
            capture_output=True, text=True, env=env, timeout=60)
        assert result.returncode == 0, result.stderr
        assert f"match.{rid}" in result.stderr
        events = await s.events("delta", len(original), timeout=20)
    replayed = [codec.loads(e["data"]) for e in events]
    assert [d["seq"] for d in replayed] == [d["seq"] for d in original]
    state: dict = {}
    for before, after in zip(original, replayed):
        validate("delta", after)
        assert after["match_id"] == rid
        for key in ("kinds", "events", "sport", "league", "fetched_at", "version"):
            assert after[key] == before[key]
        if before["seq"] > 1:
            assert after["changes"] == before["changes"]
        state = jsonpatch.apply_patch(state, after["changes"])
    assert state == dict(run_diff(M1)[-1][1], id=rid)
    # Replayed deltas are spaced like the originals, squeezed by --speed.
    span = replayed[-1]["ts"] - replayed[0]["ts"]
    assert 0 < span < (original[-1]["ts"] - original[0]["ts"]) / 20000 + 5
