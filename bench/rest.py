"""REST: ``GET /v1/matches/{id}`` with an API key (auth, rate limit, usage) against a bare
Starlette route returning the same JSON, with the same load generator (:mod:`bench.loadgen`,
another process): fixed concurrency, fixed duration.
"""

from __future__ import annotations

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
    snap_file = workdir / "snapshot.json"
    snap_file.write_bytes(snapshot)
    port = embedded.free_port()
    bare = common.Proc.module("bare", "bench.bare", [str(port), str(snap_file)], workdir / "logs")
    try:
        await common.edge_ready(s, url, edge)
        await common.wait_http(f"http://127.0.0.1:{port}/healthz", bare)
        path = f"/v1/matches/{match['id']}"
        r_edge = load(url + path, key, duration, workdir)
        r_bare = load(f"http://127.0.0.1:{port}{path}", key, duration, workdir)
    finally:
        bare.stop()
        edge.stop()
        await common.cleanup(s)
    log(f"rest: edge {r_edge}, bare {r_bare}")
    ratio = r_edge["rps"] / r_bare["rps"] if r_bare["rps"] else None
    bad = r_edge["requests"] - r_edge["ok"]
    return [Row("rest", f"REST GET /v1/matches/{{id}} with key, auth + rate limit ({CONCURRENCY} "
                "concurrent)", r_edge["rps"], "req/s",
                reference=f"bare Starlette route {common.fmt(r_bare['rps'], 'req/s')}",
                target="ratio ≥ 0.5", ratio=ratio, ok=None if ratio is None else ratio >= 0.5 and not bad,
                note=f"p50 {r_edge['p50_ms']:.1f} ms / p99 {r_edge['p99_ms']:.1f} ms (bare "
                     f"{r_bare['p50_ms']:.1f} / {r_bare['p99_ms']:.1f} ms); statuses {r_edge['statuses']}")]
