"""The reliability suite's harness: a whole system (simulator, workers, edges) per test,
a resuming SSE client that records every delta it sees, and the "nothing lost" checks.

Every run uses the same simulated day (``SEED``, ``START``) at a high speed, so matches
kick off, score and finish within seconds and runs are comparable.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from pipeline.diff import apply
from pipeline.settings import Settings
from tables import codec
from tables.migrate import migrate, quote_ident
from tests.support import Proc, free_port, wait_http

SEED = 11
#: Saturday 28 November 2026, 14:55 UTC: a busy afternoon of the simulated day.
START = 1795877700.0
SPEED = 120.0
CHANNELS = "sport.football,sport.basketball,sport.hockey"

#: Generous limits so that the suite measures the system, not the rate limiter.
TIERS = """
[anonymous]
enabled = true
rest_per_minute = 1000000
streams = 100000
channels = ["public"]
history_hours = 720

[pro]
rest_per_minute = 1000000
streams = 100000
channels = ["public", "private", "presence"]
history_hours = 720
"""

#: A log line at ERROR or CRITICAL (text or JSON log format).
ERROR_LINE = re.compile(r'(^|\s)(ERROR|CRITICAL)\s|"level(name)?":\s*"(ERROR|CRITICAL)"', re.MULTILINE)


def report(name: str, **stats: Any) -> None:
    """One line per case, collected into docs/reliability.md from a run with ``-s``."""
    print(f"\nRELIABILITY {name} {json.dumps(stats, sort_keys=True)}")


@pytest.fixture
def rel_settings(settings: Settings, tmp_path: Path) -> Settings:
    tiers = tmp_path / "tiers.toml"
    tiers.write_text(TIERS)
    return dataclasses.replace(settings, tiers_file=str(tiers), clock_speed=SPEED,
                               clock_start=START)


class Cluster:
    """A simulator, workers and edges for one test, each a real ``bts-guru`` process."""

    def __init__(self, settings: Settings, logs: Path, *, speed: float = SPEED,
                 matches: int | None = None) -> None:
        self.sim_port = free_port()
        self.settings = dataclasses.replace(
            settings, provider_url=f"http://127.0.0.1:{self.sim_port}", clock_speed=speed)
        self.logs = logs
        self.speed = speed
        self.matches = matches
        self.sim: Proc | None = None
        self.workers: list[Proc] = []
        self.edges: list[Proc] = []
        self.urls: list[str] = []
        self.procs: list[Proc] = []

    @property
    def sim_url(self) -> str:
        return f"http://127.0.0.1:{self.sim_port}"

    async def start_sim(self) -> None:
        args = ["simulate", "--port", str(self.sim_port), "--seed", str(SEED),
                "--speed", repr(self.speed), "--start", repr(START)]
        if self.matches:
            args += ["--matches", str(self.matches)]
        self.sim = Proc("simulator", args, self.settings, self.logs)
        self.procs.append(self.sim)
        await wait_http(self.sim_url + "/_sim/state", self.sim)

    async def sim_state(self) -> dict[str, Any]:
        async with httpx.AsyncClient() as client:
            return (await client.get(self.sim_url + "/_sim/state", timeout=5)).json()

    async def clear_faults(self) -> None:
        async with httpx.AsyncClient() as client:
            r = await client.delete(self.sim_url + "/_sim/faults", timeout=5)
            assert r.status_code < 300, r.text

    async def fault(self, kind: str, count: int = 1, **extra: Any) -> None:
        async with httpx.AsyncClient() as client:
            r = await client.post(self.sim_url + "/_sim/faults",
                                  json={"kind": kind, "count": count, **extra}, timeout=5)
            assert r.status_code == 201, r.text

    async def start_worker(self, settings: Settings | None = None) -> Proc:
        """A worker whose provider clock starts where the simulator's is now."""
        now = (await self.sim_state())["now"] if self.sim is not None else START
        s = dataclasses.replace(settings or self.settings, clock_start=now)
        p = Proc(f"worker-{len(self.workers)}", ["worker"], s, self.logs)
        self.workers.append(p)
        self.procs.append(p)
        return p

    async def start_edge(self, settings: Settings | None = None) -> str:
        port = free_port()
        p = Proc(f"edge-{len(self.edges)}", ["edge", "--port", str(port)],
                 settings or self.settings, self.logs)
        self.edges.append(p)
        self.procs.append(p)
        url = f"http://127.0.0.1:{port}"
        await wait_http(url + "/healthz", p)
        self.urls.append(url)
        return url

    def stop(self) -> None:
        for p in reversed(self.procs):
            p.stop()

    def error_lines(self, procs: list[Proc] | None = None) -> list[str]:
        out = []
        for p in procs if procs is not None else self.procs:
            out += [f"{p.name}: {line}" for line in p.log().splitlines() if ERROR_LINE.search(line)]
        return out

    def tails(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.log()[-2500:]}" for p in self.procs)


@pytest.fixture
async def cluster(rel_settings: Settings, pg: asyncpg.Connection, redis_client,
                  tmp_path: Path) -> AsyncIterator[Cluster]:
    await migrate(pg, rel_settings.db_schema)
    c = Cluster(rel_settings, tmp_path / "logs")
    try:
        yield c
    finally:
        c.stop()


class Collector:
    """An SSE client that records every delta it sees and, whenever its stream breaks,
    reconnects to the next edge with ``Last-Event-ID`` set to the last cursor it got."""

    def __init__(self, urls: list[str], channels: str = CHANNELS, partitions: int = 4) -> None:
        self.urls = urls
        self.channels = channels
        self.cursor = "1." + "-".join("0" * partitions)
        self.deltas: list[dict[str, Any]] = []
        self.resets: list[str] = []
        self.connections = 0
        self.reconnects: list[float] = []  # seconds from a break to the next delta-ready stream
        self.edge = 0
        self._task: asyncio.Task[None] | None = None
        self._broke_at: float | None = None
        self.last_delta_at = time.monotonic()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    async def _run(self) -> None:
        timeout = httpx.Timeout(10.0, read=30.0)
        async with httpx.AsyncClient(timeout=timeout) as client:
            while True:
                url = self.urls[self.edge % len(self.urls)]
                try:
                    await self._stream(client, url)
                except (httpx.HTTPError, OSError, EOFError):
                    pass
                if self._broke_at is None:
                    self._broke_at = time.monotonic()
                self.edge += 1
                await asyncio.sleep(0.2)

    async def _stream(self, client: httpx.AsyncClient, base: str) -> None:
        headers = {"Last-Event-ID": self.cursor}
        async with client.stream("GET", f"{base}/v1/stream?channels={self.channels}",
                                 headers=headers) as r:
            if r.status_code != 200:
                await r.aread()
                raise httpx.HTTPError(f"{r.status_code} {r.text[:200]}")
            self.connections += 1
            if self._broke_at is not None:
                self.reconnects.append(time.monotonic() - self._broke_at)
                self._broke_at = None
            fields: dict[str, str] = {}
            async for line in r.aiter_lines():
                if line == "":
                    self._event(fields)
                    fields = {}
                    continue
                if line.startswith(":"):
                    continue
                name, _, value = line.partition(":")
                fields[name] = value.removeprefix(" ")
        raise EOFError("stream ended")

    def _event(self, fields: dict[str, str]) -> None:
        kind = fields.get("event")
        if kind == "delta":
            self.deltas.append(codec.loads(fields["data"]))
            self.last_delta_at = time.monotonic()
        elif kind == "reset":
            self.resets.append(fields.get("data", ""))
        if fields.get("id"):
            self.cursor = fields["id"]

    async def wait_for(self, count: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while len(self.deltas) < count:
            assert time.monotonic() < deadline, f"only {len(self.deltas)} of {count} deltas"
            await asyncio.sleep(0.1)

    async def quiet(self, seconds: float, timeout: float) -> None:
        """Wait until no delta has arrived for ``seconds``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() - self.last_delta_at < seconds:
            assert time.monotonic() < deadline, "the stream never went quiet"
            await asyncio.sleep(0.2)


def by_match(deltas: list[dict[str, Any]]) -> dict[str, list[int]]:
    seqs: dict[str, list[int]] = {}
    for d in deltas:
        seqs.setdefault(d["match_id"], []).append(int(d["seq"]))
    return seqs


def gaps_and_duplicates(seqs: dict[str, list[int]]) -> tuple[int, int, list[str]]:
    """Deltas missing and deltas seen twice, per match, against 1, 2, 3, … in order."""
    lost = dup = 0
    bad = []
    for mid, got in seqs.items():
        dup += len(got) - len(set(got))
        lost += max(got) - len(set(got))
        if got != list(range(1, len(got) + 1)):
            bad.append(f"{mid}: {got[:40]}")
    return lost, dup, bad


def _public(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if k != "detail"}


async def settle_and_check(cluster: Cluster, collector: Collector, pg: asyncpg.Connection,
                           *, quiet: float = 3.0, timeout: float = 90.0) -> dict[str, Any]:
    """Stop the provider, let the stream, Redis and Postgres catch up, then check that the
    client saw every delta exactly once, REST equals the deltas applied, and Postgres holds
    the same contiguous history."""
    assert cluster.sim is not None
    cluster.sim.stop()
    await collector.quiet(quiet, timeout)
    schema = quote_ident(cluster.settings.db_schema)
    sports = {c.split(".", 1)[1] for c in collector.channels.split(",")}
    deadline = time.monotonic() + timeout
    while True:
        seqs = by_match(collector.deltas)
        rows = await pg.fetch(f"SELECT match_id, array_agg(seq ORDER BY seq) AS seqs "
                              f"FROM {schema}.match_deltas GROUP BY match_id")
        stored = {r["match_id"]: list(r["seqs"]) for r in rows
                  if r["match_id"].split("-", 1)[0] in sports}
        if stored == {m: sorted(s) for m, s in seqs.items()}:
            break
        if time.monotonic() >= deadline:
            want = {(m, q) for m, got in seqs.items() for q in got}
            have = {(m, q) for m, got in stored.items() for q in got}
            raise AssertionError(
                f"postgres holds {sum(map(len, stored.values()))} deltas, the stream "
                f"{len(collector.deltas)}; missing from postgres: "
                f"{await where_on_topic(cluster.settings, want - have)}; "
                f"not streamed: {sorted(have - want)[:10]}")
        await asyncio.sleep(0.5)
    lost, dup, bad = gaps_and_duplicates(seqs)
    assert not bad, "gaps or duplicates in the stream:\n" + "\n".join(bad[:20])
    assert not collector.resets, collector.resets
    total = len(collector.deltas)
    folded: dict[str, dict[str, Any]] = {}
    for d in collector.deltas:
        folded[d["match_id"]] = apply(folded.get(d["match_id"]), d)
    mismatched = []
    async with httpx.AsyncClient(timeout=10) as client:
        base = cluster.urls[-1]
        for mid, snap in folded.items():
            deadline = time.monotonic() + 30
            while True:
                r = await client.get(f"{base}/v1/matches/{mid}")
                if r.status_code == 200 and r.json()["data"]["seq"] >= snap["seq"]:
                    break
                assert time.monotonic() < deadline, (mid, r.status_code, r.text[:300])
                await asyncio.sleep(0.3)
            if _public(r.json()["data"]) != _public(snap):
                mismatched.append(mid)
    assert not mismatched, f"REST differs from the deltas applied for {mismatched[:10]}"
    return {"deltas": total, "matches": len(seqs), "lost": lost, "duplicates": dup,
            "resets": len(collector.resets)}


async def where_on_topic(settings: Settings, wanted: set[tuple[str, int]]) -> dict[str, Any]:
    """Where the deltas ``wanted`` (match id, seq) sit on the topic, and the offsets the
    workers' group has committed there: what a sink that lost them skipped."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    topic = settings.topic("match-deltas")
    found = []
    for rec in await read_records(settings, "match-deltas"):
        d = codec.loads(rec.value)
        if (d["match_id"], d["seq"]) in wanted:
            found.append((d["match_id"], d["seq"], f"partition {rec.partition} offset {rec.offset}"))
    group = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, group_id=settings.faust_id,
                             enable_auto_commit=False)
    await group.start()
    try:
        committed = {p: await group.committed(TopicPartition(topic, p))
                     for p in range(settings.partitions)}
    finally:
        await group.stop()
    return {"deltas": sorted(found)[:10], "committed": committed}


async def read_records(settings: Settings, name: str, timeout: float = 5.0) -> list[Any]:
    """Every record of a topic (read for ``timeout`` seconds), as consumer records."""
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(settings.topic(name), bootstrap_servers=settings.kafka_bootstrap,
                                auto_offset_reset="earliest", enable_auto_commit=False, group_id=None)
    await consumer.start()
    out: list[Any] = []
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=500)
            for records in batches.values():
                out += records
    finally:
        await consumer.stop()
    return out


async def read_topic(settings: Settings, name: str, timeout: float = 5.0) -> list[dict[str, Any]]:
    """Every record of a topic (read for ``timeout`` seconds), decoded."""
    return [codec.loads(r.value) for r in await read_records(settings, name, timeout)]


def proc_stats(pid: int) -> dict[str, int]:
    """Resident memory (kB) and open file descriptors of a process."""
    status = Path(f"/proc/{pid}/status").read_text()
    rss = int(re.search(r"VmRSS:\s+(\d+)", status).group(1))  # type: ignore[union-attr]
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    return {"rss_kb": rss, "fds": fds}
