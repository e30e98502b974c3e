"""Polling for real: workers, the simulator and the shared quota budget.

Two workers split the poll targets by partition and share one budget per provider
key in Redis. The simulator counts every request against the plan exactly as the
real API does, so "zero quota errors" is the simulator's own verdict. Killing one
worker hands its partitions, and so its targets, to the other.
"""

from __future__ import annotations

import asyncio
import calendar
import dataclasses
import json
import signal
import time

import httpx
import pytest

from pipeline.poller import partition_for
from tests.support import Proc, free_port, wait_http

PLAN_LIMITS = {"free": 100, "pro": 7500}

#: 2026-11-29 01:00 UTC. A fixed day, not today: until the first matches go live, the
#: targets are football's live call and one call per sport and date, placed on partitions
#: by their keys, which hold the date. On some days (2026-11-30 is one) all four land on
#: two partitions, and a worker holding the other two has nothing to poll for minutes.
START = calendar.timegm((2026, 11, 29, 1, 0, 0))
FIRST_KEYS = ["football:live"] + [f"{sport}:date:2026-11-29"
                                  for sport in ("football", "basketball", "hockey")]


async def heartbeats(redis_client, prefix: str) -> dict[str, dict]:
    out = {}
    for raw in (await redis_client.hgetall(f"{prefix}workers")).values():
        beat = json.loads(raw)
        if time.time() - beat["ts"] < 6:
            out[beat["id"]] = beat
    return out


async def wait_for(predicate, timeout: float, what: str, step: float = 0.5):
    deadline = time.monotonic() + timeout
    while True:
        value = await predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(step)


async def run_day(settings, redis_client, tmp_path, *, plan: str, speed: float, matches: int,
                  seconds: float, kill_after: float | None) -> dict:
    sim_port = free_port()
    # 01:00 UTC of one provider day: the run spans up to a day of provider time at these
    # speeds and must stay inside it, since its quota is what the checks below count against
    start = START
    s = dataclasses.replace(settings, provider_url=f"http://127.0.0.1:{sim_port}",
                            clock_speed=speed, clock_start=start, provider_plan=plan)
    logs = tmp_path / "logs"
    sim = Proc("simulator", ["simulate", "--port", str(sim_port), "--seed", "5", "--speed",
                             str(speed), "--start", repr(start), "--plan", plan,
                             "--matches", str(matches)], s, logs)
    workers = [Proc(f"worker-{i}", ["worker"], s, logs,
                    {"BTS_DATA_DIR": str(tmp_path / f"w{i}"), "WORKER_WEB_PORT": "0"})
               for i in range(2)]
    base = f"http://127.0.0.1:{sim_port}"
    report: dict = {}
    try:
        await wait_http(base + "/_sim/state", sim)

        async def both_polling():
            beats = await heartbeats(redis_client, s.redis_prefix)
            if len(beats) == 2 and all(b["partitions"] and b.get("targets") for b in beats.values()):
                return beats
            return None

        beats = await wait_for(both_polling, 90, "two workers with partitions and targets")
        parts = [set(b["partitions"]) for b in beats.values()]
        assert not parts[0] & parts[1], "two workers own the same partition"
        assert parts[0] | parts[1] == set(range(s.partitions))
        report["targets_before"] = sum(b["targets"] for b in beats.values())
        began = time.monotonic()
        if kill_after is not None:
            await asyncio.sleep(kill_after)
            workers[1].stop(signal.SIGKILL)
            survivor = workers[0]

            async def one_polling_all():
                beats = await heartbeats(redis_client, s.redis_prefix)
                alive = [b for b in beats.values() if b["pid"] == survivor.process.pid]
                if alive and set(alive[0]["partitions"]) == set(range(s.partitions)):
                    return alive[0]
                return None

            # The dead member's heartbeat lingers a few seconds; its session ends after 10 s.
            beat = await wait_for(one_polling_all, 60, "the survivor to own every partition")
            calls = beat["calls"]
            report["targets_after"] = beat["targets"]

            async def polled_again():
                beats = await heartbeats(redis_client, s.redis_prefix)
                mine = [b for b in beats.values() if b["pid"] == survivor.process.pid]
                return mine and mine[0]["calls"] > calls

            await wait_for(polled_again, 60, "the survivor to poll the moved targets")
        await asyncio.sleep(max(0.0, seconds - (time.monotonic() - began)))
        async with httpx.AsyncClient() as client:
            report["state"] = (await client.get(base + "/_sim/state")).json()
        for w in workers[:1] if kill_after is not None else workers:
            assert w.alive(), w.log()[-3000:]
        return report
    finally:
        for p in (*workers, sim):
            p.stop()


async def test_two_workers_stay_inside_a_free_plan_and_survive_a_kill(settings, redis_client,
                                                                        tmp_path):
    # Three partitions or more among the first targets: each of two workers owns one.
    assert len({partition_for(k, settings.partitions) for k in FIRST_KEYS}) >= 3
    report = await run_day(settings, redis_client, tmp_path, plan="free", speed=600, matches=20,
                           seconds=25, kill_after=5)
    state = report["state"]
    assert sum(state["quota_errors"].values()) == 0, state
    for sport, n in state["requests"].items():
        assert 0 < n <= PLAN_LIMITS["free"], (sport, state)
    assert report["targets_after"] >= report["targets_before"] - 1, report


@pytest.mark.slow
async def test_a_simulated_day_on_a_pro_plan_stays_inside_the_quota(settings, redis_client,
                                                                      tmp_path):
    report = await run_day(settings, redis_client, tmp_path, plan="pro", speed=1440, matches=100,
                           seconds=60, kill_after=None)
    state = report["state"]
    assert sum(state["quota_errors"].values()) == 0, state
    for sport, n in state["requests"].items():
        assert 0 < n <= PLAN_LIMITS["pro"], (sport, state)
