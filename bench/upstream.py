"""Upstream: a simulated day on a Pro plan, polled by a real worker through the simulator.

The simulator (``bts-guru simulate --matches N --plan pro``) and a worker (poller,
agents, sinks) run as processes. Every raw fetch is read back from ``raw-fetches``.
The bench rebuilds the same World (same seed and start) to know when each change
(status code or score) happened, and measures staleness: the simulated time from a
change to the first raw record that carries the match after it.

Two runs: the whole day at a high speed (requests used, quota errors, against naive
polling), and a quarter of an hour at the busiest time at a low speed (staleness:
at a high speed every real millisecond of the loop is stretched into simulated
seconds, so that run's staleness is reported but not judged).
"""

from __future__ import annotations

import bisect
import json
import time
from pathlib import Path
from typing import Any

import aiohttp
from aiokafka import AIOKafkaConsumer, TopicPartition

from bench import common, data
from bench.common import Row, log
from pipeline import embedded
from pipeline.dev import DATA_TOPICS
from pipeline.simulator.model import SimClock, World
from tables import codec

SPORTS = ("football", "basketball", "hockey")
NAIVE_INTERVAL = 15.0


def observable(m: Any, sport: str, at: float) -> tuple[Any, ...]:
    if sport == "football":
        g = m.score(at)["goals"]
        return m.status(at)[0], g["home"], g["away"]
    return (m.code(at), *m.points(at))


def changes(world: World, a: float, b: float, step: float = 5.0) -> tuple[dict[str, dict[str, list[float]]], dict[str, float]]:
    """Per sport, per provider id: the simulated times of changes in [a, b]; and per sport,
    the simulated seconds matches spent in play in [a, b] (for naive polling)."""
    out: dict[str, dict[str, list[float]]] = {s: {} for s in SPORTS}
    live: dict[str, float] = {s: 0.0 for s in SPORTS}
    for sport in SPORTS:
        for m in world.matches(sport):
            lo, hi = max(a, m.kickoff - step), min(b, m.kickoff + 5 * 3600)
            if lo >= hi:
                continue
            t = lo
            prev = observable(m, sport, t)
            found: list[float] = []
            while t < hi:
                nxt = min(hi, t + step)
                cur = observable(m, sport, nxt)
                if m.is_live(nxt):
                    live[sport] += nxt - t
                if cur != prev:
                    x, y = t, nxt  # prev at x, cur at y: narrow to a second
                    while y - x > 1:
                        mid = (x + y) // 2 if y - x > 2 else x + 1
                        if observable(m, sport, mid) == prev:
                            x = mid
                        else:
                            y = mid
                    found.append(y)
                    prev = cur
                elif m.status(nxt)[0] in ("FT", "AET", "PEN") and sport == "football" and nxt > m.kickoff + 3 * 3600:
                    break
                t = nxt
            if found:
                out[sport][str(m.id)] = found
    return out, live


def call_kind(params: dict[str, str]) -> str:
    """What a call asked for: ``live``, ``date``, ``ids`` (watched or confirming) or ``id``."""
    for kind in ("live", "date", "ids", "id"):
        if kind in params:
            return kind
    return "other"


def ids_in(sport: str, body: str) -> list[str]:
    try:
        items = json.loads(body)["response"]
        if sport == "football":
            return [str(i["fixture"]["id"]) for i in items]
        return [str(i["id"]) for i in items]
    except (ValueError, KeyError, TypeError):
        return []


async def one_run(env: common.Env, workdir: Path, name: str, speed: float, seconds: float,
                  matches: int, start: float) -> dict[str, Any]:
    port = embedded.free_port()
    s = env.settings(name, provider_url=f"http://127.0.0.1:{port}", clock_speed=speed,
                     clock_start=start, provider_plan="pro", apifootball_key="bench-key",
                     apibasketball_key="bench-key", apihockey_key="bench-key")
    await common.prepare(s, DATA_TOPICS)
    sim = common.Proc.cli(f"{name}-simulator", ["simulate", "--port", str(port), "--seed", "7",
                                                "--speed", repr(speed), "--start", repr(start),
                                                "--matches", str(matches), "--plan", "pro"],
                          s, workdir / "logs")
    records: list[tuple[str, float, list[str], int, Any, str]] = []
    try:
        await common.wait_http(f"http://127.0.0.1:{port}/_sim/state", sim)
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{port}/_sim/state") as r:
                wall = time.time()
                sim_now = (await r.json())["now"]
        worker = common.Proc.cli(f"{name}-worker", ["worker"], s, workdir / "logs")
        consumer = AIOKafkaConsumer(bootstrap_servers=s.kafka_bootstrap, group_id=None,
                                    enable_auto_commit=False, fetch_max_wait_ms=50)
        await consumer.start()
        tps = [TopicPartition(s.topic("raw-fetches"), p) for p in range(s.partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        t_end = time.monotonic() + seconds
        try:
            while time.monotonic() < t_end:
                batch = await consumer.getmany(timeout_ms=200)
                for recs in batch.values():
                    for rec in recs:
                        raw = codec.loads(rec.value)
                        at = sim_now + (raw["fetched_at"] - wall) * speed
                        records.append((raw["sport"], at, ids_in(raw["sport"], raw["body"]),
                                        raw["status"], raw.get("error"),
                                        call_kind(raw.get("params") or {})))
                if not worker.alive():
                    raise RuntimeError("worker died:\n" + worker.log()[-3000:])
        finally:
            await consumer.stop()
            worker.stop()
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{port}/_sim/state") as r:
                state = await r.json()
                sim_end = state["now"]
    finally:
        sim.stop()
        await common.cleanup(s)
    return {"records": records, "state": state, "from": sim_now, "to": sim_end}


def staleness(world: World, run: dict[str, Any]) -> tuple[dict[str, list[float]], dict[str, int]]:
    """Per sport, the staleness of every change once the worker polls that sport (its first
    good answer), and how many changes came before that (while the worker was starting)."""
    a, b = run["from"], run["to"]
    chg, _ = changes(world, a, b)
    seen: dict[tuple[str, str], list[float]] = {}
    polling: dict[str, float] = {}
    for sport, at, ids, status, error, _ in run["records"]:
        if status == 200 and error is None:
            polling[sport] = min(at, polling.get(sport, at))
            for i in ids:
                seen.setdefault((sport, i), []).append(at)
    out: dict[str, list[float]] = {s: [] for s in SPORTS}
    starting: dict[str, int] = {s: 0 for s in SPORTS}
    for sport, per in chg.items():
        for mid, times in per.items():
            fetched = sorted(seen.get((sport, mid), []))
            for c in times:
                if c < polling.get(sport, b):
                    starting[sport] += 1
                    continue
                k = bisect.bisect_left(fetched, c)
                if k < len(fetched):
                    out[sport].append(fetched[k] - c)
    return out, starting


def _kinds(records: list[tuple[Any, ...]], sport: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in records:
        if r[0] == sport:
            out[r[5]] = out.get(r[5], 0) + 1
    return out


async def run(env: common.Env, workdir: Path, quick: bool) -> list[Row]:
    matches = 100
    day_speed, day_seconds = (2880.0, 30.0) if quick else (480.0, 180.0)
    slow_speed, slow_seconds = 20.0, (20.0 if quick else 45.0)
    start = data.DAY
    world = World(7, SimClock(1.0, start), {s: matches for s in SPORTS})
    busy = data.busiest(world)
    day = await one_run(env, workdir, "upday", day_speed, day_seconds, matches, start)
    slow = await one_run(env, workdir, "upslow", slow_speed, slow_seconds, matches, busy - 120)
    span = day["to"] - day["from"]
    used = len(day["records"])
    quota_errors = sum(1 for r in day["records"] if r[4] and r[4]["type"] in ("QuotaExceeded", "RateLimited"))
    sim_quota = sum(day["state"].get("quota_errors", {}).values()) if isinstance(
        day["state"].get("quota_errors"), dict) else 0
    _, live = changes(world, day["from"], day["to"], step=60.0)
    naive = sum(live.values()) / NAIVE_INTERVAL
    ratio = used / naive if naive else None
    log(f"upstream: {span / 3600:.1f} h simulated, {used} requests, naive {naive:.0f}, "
        f"quota errors {quota_errors}/{sim_quota}")
    rows = [
        Row("upstream", f"upstream: requests for {span / 3600:.1f} simulated h, Pro plan, "
            f"{matches * 3} matches (speed {day_speed:g})", used, "",
            reference=f"naive: every match every {NAIVE_INTERVAL:g} s in play, {naive:,.0f}",
            target="≤ 10 % of naive", ratio=ratio, ok=None if ratio is None else ratio <= 0.10,
            note="requests per sport: " + "; ".join(
                f"{s} {sum(1 for r in day['records'] if r[0] == s)} (" + ", ".join(
                    f"{k} {n}" for k, n in sorted(_kinds(day["records"], s).items())) + ")"
                for s in SPORTS)),
        Row("upstream", "upstream: quota errors over the day", quota_errors + sim_quota, "",
            target="0", ok=quota_errors + sim_quota == 0),
    ]
    fast, _ = staleness(world, day)
    slow_values, starting = staleness(world, slow)
    for sport, values in slow_values.items():
        p95 = common.pct(values, 95)
        rows.append(Row("upstream", f"upstream: {sport} live staleness p95 (change → raw record, "
                        f"speed {slow_speed:g})", p95, "s",
                        reference=f"p50 {common.fmt(common.pct(values, 50), 's')}",
                        target="≤ 20 s", ok=None if p95 is None else p95 <= 20,
                        note=f"{len(values):,} changes once the worker polls {sport} "
                             f"({starting[sport]} before, while it started); at speed "
                             f"{day_speed:g} over the day: p95 "
                             f"{common.fmt(common.pct(fast[sport], 95), 's')} of {len(fast[sport]):,}"))
    return rows
