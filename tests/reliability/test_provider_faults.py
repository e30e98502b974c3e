"""The provider misbehaving: 5xx bursts, timeouts, slow answers, truncated, malformed and
HTML bodies, empty answers, stale answers (an old copy of the provider's data, as a cache
that stopped updating serves it) and exhausted quotas, injected with the simulator's fault
API.

Bad bodies go to ``dead-letters``; nothing wrong reaches ``match-deltas``; every
process stays up; the stream stays gapless and duplicate-free.
"""

from __future__ import annotations

import asyncio

import pytest

from tests.reliability.conftest import Collector, read_topic, report, settle_and_check

SHORT = [("error500", 3, {}), ("error502", 3, {}), ("error503", 3, {}),
         ("timeout", 2, {"delay": 0.5}), ("malformed", 3, {}), ("truncated", 3, {}),
         ("html", 2, {}), ("empty204", 2, {}), ("quota_minute", 2, {}), ("slow", 2, {"delay": 1}),
         ("stale", 4, {})]

LONG = [("error500", 20, {}), ("error502", 20, {}), ("error503", 20, {}),
        ("timeout", 6, {"delay": 2}), ("slow", 2, {"delay": 11}),  # over the client's 10 s
        ("malformed", 20, {}), ("truncated", 20, {}), ("html", 10, {}), ("empty204", 10, {}),
        ("quota_minute", 10, {}), ("stale", 20, {})]


def no_wrong_delta(deltas: list[dict]) -> list[str]:
    """Scores never go down unless a goal was taken back (fewer goal events, and a VAR event
    more, as the feed reports it), and a finished match never comes back to life."""
    from pipeline.diff import apply

    wrong = []
    snaps: dict[str, dict] = {}
    for d in deltas:
        mid = d["match_id"]
        before = snaps.get(mid)
        after = apply(before, d)
        snaps[mid] = after
        if before is None:
            continue
        goals_gone = _goals(after) < _goals(before) and _vars(after) > _vars(before)
        for side in ("home", "away"):
            b, a = before["score"][side], after["score"][side]
            if b is not None and (a is None or a < b) and not goals_gone:
                wrong.append(f"{mid} seq {d['seq']}: {side} score {b} -> {a}")
        if before["status"]["phase"] == "finished" and after["status"]["phase"] != "finished":
            wrong.append(f"{mid} seq {d['seq']}: finished -> {after['status']['phase']}")
    return wrong


def _goals(match: dict) -> int:
    return sum(1 for e in match.get("events") or [] if e.get("type") == "goal")


def _vars(match: dict) -> int:
    return sum(1 for e in match.get("events") or [] if e.get("type") == "var")


async def _faults(cluster, pg, plan, *, rounds: int, pause: float, name: str) -> None:
    await cluster.start_sim()
    await cluster.start_edge()
    await cluster.start_worker()
    collector = Collector(cluster.urls)
    collector.start()
    try:
        await collector.wait_for(5, 90)
        injected: dict[str, int] = {}
        for _ in range(rounds):
            for kind, count, extra in plan:
                await cluster.fault(kind, count, **extra)
                injected[kind] = injected.get(kind, 0) + count
                await asyncio.sleep(pause)
        for _ in range(120):
            if not (await cluster.sim_state())["faults"]:
                break
            await asyncio.sleep(0.5)
        state = await cluster.sim_state()
        left = sum(f["count"] for f in state["faults"])
        if rounds == 1:
            assert not state["faults"], state["faults"]
        else:
            # Long bursts keep the circuit open (30 s at a time), so the provider is asked
            # far less often than the queue holds faults: what is left is cleared and the
            # system must recover from where it stands.
            assert left < sum(injected.values()), "no fault was ever consumed"
            await cluster.clear_faults()
        before = len(collector.deltas)
        await collector.wait_for(before + 3, 60)  # still streaming after the faults
        assert all(p.alive() for p in cluster.procs), cluster.tails()
        # Every upstream answer, failed ones included, is on raw-fetches with its typed error.
        raws = await read_topic(cluster.settings, "raw-fetches")
        errors: dict[str, int] = {}
        for r in raws:
            if r.get("error"):
                errors[r["error"]["type"]] = errors.get(r["error"]["type"], 0) + 1
        assert errors, "no failed fetch recorded"
        stats = await settle_and_check(cluster, collector, pg)
        wrong = no_wrong_delta(collector.deltas)
        assert not wrong, wrong[:10]
        letters = await read_topic(cluster.settings, "dead-letters")
        assert all(d["body"] for d in letters if d.get("stage") == "normalise"), letters[:3]
        assert not cluster.error_lines([cluster.edges[0]]), cluster.error_lines()
    finally:
        await collector.stop()
    report(name, injected=injected, left_unconsumed=left, dead_letters=len(letters),
           raw_fetches=len(raws),
           fetch_errors=errors, quota_errors=state["quota_errors"], **stats)


async def test_provider_faults_short(cluster, pg):
    await _faults(cluster, pg, SHORT, rounds=1, pause=0.3, name="provider-faults")


@pytest.mark.slow
async def test_provider_faults_long(cluster, pg):
    await _faults(cluster, pg, LONG, rounds=3, pause=1.0, name="provider-faults-long")


@pytest.mark.slow
async def test_daily_quota_exhausted_holds_polling(cluster, pg):
    """A daily-quota refusal stops upstream calls for the provider's day; what was seen
    before stays consistent and the processes stay up."""
    await cluster.start_sim()
    await cluster.start_edge()
    await cluster.start_worker()
    collector = Collector(cluster.urls)
    collector.start()
    try:
        await collector.wait_for(5, 90)
        await cluster.fault("quota_day", 3)
        await asyncio.sleep(10)
        assert all(p.alive() for p in cluster.procs), cluster.tails()
        state = await cluster.sim_state()
        stats = await settle_and_check(cluster, collector, pg)
        assert not no_wrong_delta(collector.deltas)
    finally:
        await collector.stop()
    report("provider-quota-day", quota_errors=state["quota_errors"], **stats)
