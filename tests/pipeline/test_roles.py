"""Worker roles: a pipeline worker (pollers, normalise, detect) and a sink worker (Redis
and Postgres) in processes of their own, through the real broker and stores.

The sink worker is a consumer group of its own, so every delta the pipeline worker
emits reaches Postgres and every snapshot reaches Redis, while the pipeline worker
runs no sink and the status command reports the lag of both groups.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import subprocess
import sys
import time

import httpx
import pytest

from pipeline.app import Pipeline
from pipeline.settings import Settings
from tables.migrate import migrate
from tables.redis_keys import RedisKeys
from tests.reliability.conftest import read_topic
from tests.support import Proc, free_port, wait_http, with_simulator


def test_a_role_picks_the_agents_and_the_group(settings: Settings) -> None:
    agents = {role: sorted(Pipeline(settings, poll=False, role=role).app.agents)
              for role in ("all", "pipeline", "sinks")}
    assert [a.rsplit(".", 1)[-1] for a in agents["pipeline"]] == ["detect", "normalise"]
    assert [a.rsplit(".", 1)[-1] for a in agents["sinks"]] == ["delta-sink", "snapshot-sink"]
    assert len(agents["all"]) == 4
    assert Pipeline(settings, poll=False, role="sinks").app.conf.id == settings.sinks_group_id
    assert Pipeline(settings, poll=False, role="pipeline").app.conf.id == settings.faust_id
    with pytest.raises(ValueError, match="role must be one of"):
        Pipeline(settings, poll=False, role="edge")


async def test_pipeline_and_sink_workers_apart_store_every_delta(
        settings: Settings, pg, redis_client, tmp_path) -> None:
    await migrate(pg, settings.db_schema)
    pipe_port, sink_port = free_port(), free_port()
    logs = tmp_path / "logs"
    s, sim = with_simulator(settings, logs, worker_web_port=pipe_port)
    pipe = Proc("pipeline-worker", ["worker", "--role", "pipeline"], s, logs)
    sinks = Proc("sink-worker", ["worker", "--role", "sinks"],
                 dataclasses.replace(s, worker_web_port=sink_port), logs)
    try:
        await wait_http(f"http://127.0.0.1:{pipe_port}/healthz", pipe)
        await wait_http(f"http://127.0.0.1:{sink_port}/healthz", sinks)
        schema = s.db_schema
        deadline = time.monotonic() + 90
        while await pg.fetchval(f'SELECT count(*) FROM "{schema}".match_deltas') < 20:
            assert time.monotonic() < deadline, pipe.log()[-2000:] + sinks.log()[-2000:]
            await asyncio.sleep(0.5)

        # Every delta on the topic up to now is stored, and every match's snapshot in
        # Redis is at least as new as its last delta stored.
        emitted = await read_topic(s, "match-deltas", timeout=3.0)
        want = {(d["match_id"], d["seq"]) for d in emitted}
        deadline = time.monotonic() + 60
        while True:
            rows = await pg.fetch(f'SELECT match_id, seq FROM "{schema}".match_deltas')
            stored = {(r["match_id"], r["seq"]) for r in rows}
            if want <= stored:
                break
            assert time.monotonic() < deadline, (len(want - stored), sinks.log()[-2000:])
            await asyncio.sleep(0.5)
        last: dict[str, int] = {}
        for mid, seq in want:
            last[mid] = max(seq, last.get(mid, 0))
        # The snapshot sink is an agent of its own, on its own topic: it may be a batch
        # behind the delta sink.
        keys = RedisKeys(s.redis_prefix)
        deadline = time.monotonic() + 60
        while True:
            behind = [mid for mid, seq in list(last.items())[:20]
                      if int(await redis_client.hget(keys.match(mid), "seq") or 0) < seq]
            if not behind:
                break
            assert time.monotonic() < deadline, (behind, sinks.log()[-2000:])
            await asyncio.sleep(0.3)

        async with httpx.AsyncClient(timeout=10) as client:
            for port in (pipe_port, sink_port):
                assert (await client.get(f"http://127.0.0.1:{port}/readyz")).status_code == 200
        out = await asyncio.to_thread(
            subprocess.run, [sys.executable, "-m", "pipeline.cli", "status", "--json"],
            env={**os.environ, **s.env()}, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        doc = json.loads(out.stdout)
        assert sorted(w["role"] for w in doc["workers"]) == ["pipeline", "sinks"]
        # alone in its group, each worker holds every partition of what it reads
        assert all(w["partitions"] == list(range(s.partitions)) for w in doc["workers"]), doc
        assert {"raw-fetches", "match-updates", "match-deltas", "match-snapshots"} <= set(doc["lag"])
        text = await asyncio.to_thread(
            subprocess.run, [sys.executable, "-m", "pipeline.cli", "status"],
            env={**os.environ, **s.env()}, capture_output=True, text=True, timeout=60)
        assert text.returncode == 0, text.stderr
        listed = text.stdout.split("WORKERS (2)", 1)[1].split("LAG", 1)[0]
        assert " pipeline " in listed and " sinks " in listed, text.stdout
        assert "Crashed" not in pipe.log() + sinks.log()
    finally:
        pipe.stop()
        sinks.stop()
        sim.stop()
