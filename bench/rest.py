"""REST: ``GET /v1/matches/{id}`` with an API key (auth, rate limit, usage) against a bare
Starlette route returning the same JSON, with the same load generator (:mod:`bench.loadgen`,
another process): fixed concurrency, fixed duration.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import redis.asyncio as aioredis

from bench import common, data
from bench.common import Row, log
from pipeline import embedded
from pipeline.sinks import RedisSnapshots
from tables import codec
from tables.redis_keys import RedisKeys

CONCURRENCY = 32


def load(url: str, key: str, duration: float, workdir: Path) -> dict:
    out = subprocess.run(
        [sys.executable, "-m", "bench.loadgen", url, "--key", key, "--concurrency", str(CONCURRENCY),
         "--duration", str(duration), "--warmup", "1"],
        capture_output=True, text=True, cwd=common.ROOT, timeout=duration + 120, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


async def run(env: common.Env, workdir: Path, quick: bool) -> list[Row]:
    duration = 3.0 if quick else 8.0
    s = env.settings("rest")
    await common.prepare(s)
    snapshot = data.sample_match()
    match = codec.loads(snapshot)
    client = aioredis.Redis.from_url(s.redis_url)
    await RedisSnapshots(client, RedisKeys(s.redis_prefix)).write([match])
    await client.aclose()
    made = subprocess.run([sys.executable, "-m", "pipeline.cli", "keys", "create", "--name", "bench",
                           "--tier", "bench", "--json"], env={**os.environ, **s.env()},
                          capture_output=True, text=True, cwd=common.ROOT, check=True, timeout=60)
    key = json.loads(made.stdout)["key"]
    edge, url = common.start_edge(s, workdir / "logs")
    uncached, url_uncached = common.start_edge(dataclasses.replace(s, edge_snapshot_cache_ms=0),
                                               workdir / "logs", name="edge-uncached")
    snap_file = workdir / "snapshot.json"
    snap_file.write_bytes(snapshot)
    port = embedded.free_port()
    bare = common.Proc.module("bare", "bench.bare", [str(port), str(snap_file)], workdir / "logs")
    try:
        await common.edge_ready(s, url, edge)
        await common.edge_ready(s, url_uncached, uncached)
        await common.wait_http(f"http://127.0.0.1:{port}/healthz", bare)
        path = f"/v1/matches/{match['id']}"
        r_edge = load(url + path, key, duration, workdir)
        r_uncached = load(url_uncached + path, key, duration, workdir)
        r_bare = load(f"http://127.0.0.1:{port}{path}", key, duration, workdir)
    finally:
        bare.stop()
        uncached.stop()
        edge.stop()
        await common.cleanup(s)
    log(f"rest: edge {r_edge}, without the snapshot cache {r_uncached}, bare {r_bare}")
    rows = []
    for r, what in ((r_edge, ""), (r_uncached, ", every request reading Redis")):
        ratio = r["rps"] / r_bare["rps"] if r_bare["rps"] else None
        bad = r["requests"] - r["ok"]
        rows.append(Row(
            "rest", f"REST GET /v1/matches/{{id}} with key, auth + rate limit ({CONCURRENCY} "
            f"concurrent){what}", r["rps"], "req/s",
            reference=f"bare Starlette route {common.fmt(r_bare['rps'], 'req/s')}",
            target="ratio ≥ 0.5" if not what else "reported",
            ratio=ratio, ok=None if ratio is None or what else ratio >= 0.5 and not bad,
            note=f"p50 {r['p50_ms']:.1f} ms / p99 {r['p99_ms']:.1f} ms (bare "
                 f"{r_bare['p50_ms']:.1f} / {r_bare['p99_ms']:.1f} ms); statuses {r['statuses']}"
                 + ("" if what else "; the edge's snapshot cache on (`EDGE_SNAPSHOT_CACHE_MS`, "
                                    "default 1000)")))
    return rows
