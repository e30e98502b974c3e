"""The demo scoreboard (``/``) in headless Chromium: simulator → worker → edge → browser.

A goal the simulator scores reaches the page over SSE within seconds. A watcher
reads the same SSE stream as the page, rebuilds every match from its deltas and
notes each goal; the page, read over the DevTools protocol, must then show that
match at the goal's ``seq`` or later, with the score the deltas give for that seq.
The goal is also checked against the simulator's own plan (same seed and start).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from httpx_sse import aconnect_sse

from pipeline.diff import GOAL_TYPES, apply
from pipeline.simulator.model import SimClock, World
from tables import codec
from tests.support import Proc, free_port, wait_http
from tests.web.browser import Browser, Page, require_chromium

SEED = 7
SPEED = 60.0
#: From the watcher's receipt of a goal to the page showing it.
PAGE_BOUND = 5.0
#: From the moment the simulator's plan scores the goal to the page showing it
#: (the poller's live interval, processing and the browser on a shared machine).
SIMULATOR_BOUND = 30.0


@pytest.fixture(scope="module")
def chromium() -> str:
    return require_chromium("the demo page test")


@dataclasses.dataclass
class Goal:
    match_id: str
    seq: int
    seen_at: float  # monotonic, when the watcher received the delta
    event: dict


@dataclasses.dataclass
class Watcher:
    """Rebuilds every football match from ``/v1/stream?snapshots=1`` like the page does."""

    matches: dict[str, dict] = dataclasses.field(default_factory=dict)
    #: match id → seq → "home : away", as the page renders it
    scores: dict[str, dict[int, str]] = dataclasses.field(default_factory=dict)
    goals: list[Goal] = dataclasses.field(default_factory=list)
    goal_seen: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)

    def note(self, m: dict) -> None:
        s = m.get("score") or {}
        text = f"{'-' if s.get('home') is None else s['home']} : " \
               f"{'-' if s.get('away') is None else s['away']}"
        self.scores.setdefault(m["id"], {})[m["seq"]] = text

    def on_snapshot(self, m: dict) -> None:
        self.matches[m["id"]] = m
        self.note(m)

    def on_delta(self, d: dict, now: float) -> None:
        mid = d["match_id"]
        prev = self.matches.get(mid)
        if prev is not None and d["seq"] != prev["seq"] + 1:
            if d["seq"] <= prev["seq"]:
                return
            prev = None  # a jump: only a full snapshot in the delta can be trusted
        try:
            m = apply(prev, d)
        except Exception:  # noqa: BLE001 - a partial patch without its base
            self.matches.pop(mid, None)
            return
        if "id" not in m:
            self.matches.pop(mid, None)
            return
        m["seq"] = d["seq"]
        self.on_snapshot(m)
        for ev in d.get("events") or []:
            if ev.get("type") in GOAL_TYPES and "amends" not in ev:
                self.goals.append(Goal(mid, d["seq"], now, ev))
                self.goal_seen.set()

    async def run(self, url: str) -> None:
        timeout = httpx.Timeout(10, read=None)
        async with httpx.AsyncClient(timeout=timeout) as client:
            async with aconnect_sse(client, "GET", url) as source:
                assert source.response.status_code == 200
                async for event in source.aiter_sse():
                    if event.event == "snapshot":
                        self.on_snapshot(codec.loads(event.data))
                    elif event.event == "delta":
                        self.on_delta(codec.loads(event.data), time.monotonic())
                    elif event.event == "reset":
                        self.matches.clear()


@contextlib.asynccontextmanager
async def browser_page(binary: str, tmp_path: Path) -> AsyncIterator[tuple[Browser, Page]]:
    browser = Browser(binary, tmp_path / "chromium-profile", tmp_path / "chromium.log")
    try:
        await browser.start()
        page = await browser.page()
        try:
            yield browser, page
        finally:
            await page.close()
    finally:
        browser.stop()


CARD = """(() => {{
  const el = document.getElementById({id});
  if (!el) return null;
  return {{seq: +el.dataset.seq, score: el.querySelector('.score').textContent,
           last: el.querySelector('.last').textContent, text: el.innerText}};
}})()"""


def scored_at(world: World, match_id: str, score: dict, start: float) -> float | None:
    """Wall-clock time at which the simulator's plan first shows ``score`` for the match."""
    match = world.match("football", int(match_id.rsplit("-", 1)[1]))
    if match is None:
        return None
    want = (score.get("home"), score.get("away"))
    for step in range(int((time.time() - start) * SPEED) + 1):
        goals = match.score(start + step)["goals"]
        if (goals["home"], goals["away"]) == want:
            return start + step / SPEED
    return None


async def test_a_simulated_goal_shows_on_the_demo_page_within_seconds(chromium, settings, pg,
                                                                     redis_client, tmp_path):
    sim_port, edge_port = free_port(), free_port()
    start = time.time()
    s = dataclasses.replace(settings, provider_url=f"http://127.0.0.1:{sim_port}",
                            clock_speed=SPEED, clock_start=start, edge_port=edge_port)
    logs = tmp_path / "logs"
    sim = Proc("simulator", ["simulate", "--port", str(sim_port), "--seed", str(SEED), "--speed",
                             str(SPEED), "--start", repr(start)], s, logs)
    worker = Proc("worker", ["worker"], s, logs)
    edge = Proc("edge", ["edge", "--port", str(edge_port)], s, logs)
    base = f"http://127.0.0.1:{edge_port}"
    watcher = Watcher()
    watch: asyncio.Task | None = None
    try:
        await wait_http(base + "/healthz", edge)
        async with browser_page(chromium, tmp_path) as (_browser, page):
            await page.navigate(base + "/")
            await page.wait_for("document.getElementById('status')?.textContent === 'live'", 20)
            watch = asyncio.create_task(watcher.run(base + "/v1/stream?snapshots=1&channels=sport.football"))
            try:
                await asyncio.wait_for(watcher.goal_seen.wait(), 40)
            except TimeoutError:
                raise AssertionError("no goal within 40 s:\n" + worker.log()[-3000:]) from None
            goal = watcher.goals[0]
            card_id = json.dumps("m-" + goal.match_id)
            deadline = goal.seen_at + PAGE_BOUND
            card = None
            while True:
                card = await page.evaluate(CARD.format(id=card_id))
                if card and card["seq"] >= goal.seq:
                    expected = watcher.scores.get(goal.match_id, {}).get(card["seq"])
                    if expected is not None and card["score"] == expected:
                        break
                assert time.monotonic() < deadline, (
                    f"the page did not show goal {goal} within {PAGE_BOUND} s: card {card}, "
                    f"scores {watcher.scores.get(goal.match_id)}, console {page.console}, "
                    f"errors {page.exceptions}")
                await asyncio.sleep(0.1)
            shown_at = time.time()
            score = goal.event.get("score") or {}
            if card["seq"] == goal.seq:
                assert card["score"] == f"{score['home']} : {score['away']}"
                label = "GOAL" if goal.event["type"] == "goal" else goal.event["type"]
                assert label in card["last"], (goal, card)
            body = await page.evaluate("document.body.innerText")
            assert card["score"] in body
            assert not page.exceptions, page.exceptions
            # the goal is one the simulator's plan really scores, and reached the page soon after
            world = World(SEED, SimClock(SPEED, start))
            when = scored_at(world, goal.match_id, score, start)
            assert when is not None, (goal, "not in the simulator's plan")
            assert shown_at - when <= SIMULATOR_BOUND, (shown_at - when, goal)
        assert sim.alive() and worker.alive() and edge.alive()
    finally:
        if watch is not None:
            watch.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await watch
        for p in (edge, worker, sim):
            p.stop()
