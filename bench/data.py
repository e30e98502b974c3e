"""Realistic inputs, drawn from the simulator's World (the same payloads the providers send)."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from typing import Any

from pipeline.simulator.model import PROVIDER_OF, ManualClock, World, envelope
from tables import codec

UTC = dt.timezone.utc
#: A fixed simulated day, so every run measures the same inputs.
DAY = 1_767_000_000.0
ENDPOINT = {"football": "fixtures", "basketball": "games", "hockey": "games"}


def world(sizes: dict[str, int] | None = None, seed: int = 7, start: float = DAY) -> World:
    return World(seed, ManualClock(start), sizes)


def raw_fetch(sport: str, params: dict[str, str], items: list[Any], fetched_at: float) -> dict[str, Any]:
    get = ENDPOINT[sport]
    body = json.dumps(envelope(sport, get, params, None, items), separators=(",", ":"))
    return {"version": 1, "provider": PROVIDER_OF[sport], "sport": sport, "endpoint": get,
            "params": params, "status": 200, "headers": {}, "latency_ms": 20.0,
            "fetched_at": fetched_at, "body": body, "error": None}


def item(match: Any, sport: str, at: float) -> dict[str, Any]:
    return match.item(at, UTC, "live") if sport == "football" else match.item(at, UTC)


def live_by_league(w: World, start: float, steps: int, step: float) -> Iterator[tuple[str, dict[str, Any]]]:
    """(key, raw fetch) for every league with a match in play, every ``step`` simulated seconds:
    what ``fixtures?live=<league>`` and ``games?league=…`` would answer."""
    for n in range(steps):
        at = start + n * step
        for sport in ("football", "basketball", "hockey"):
            leagues: dict[int, list[Any]] = {}
            for m in w.matches(sport):
                if m.is_live(at):
                    leagues.setdefault(m.league.id, []).append(m)
            for league, matches in sorted(leagues.items()):
                params = {"live": str(league)} if sport == "football" else \
                    {"league": str(league), "season": str(matches[0].season)}
                yield (f"{sport}:{league}",
                       raw_fetch(sport, params, [item(m, sport, at) for m in matches], at))


def busiest(w: World, sport: str = "football") -> float:
    """A simulated time when many matches are in play."""
    best, best_n = w.start, -1
    for k in range(0, 24 * 60, 10):
        at = w.start + k * 60
        n = sum(1 for m in w.matches(sport) if m.is_live(at))
        if n > best_n:
            best, best_n = at, n
    return best


def sample_match() -> bytes:
    """One normalised football Match in play, as stored (JSON)."""
    from pipeline.diff import diff
    from pipeline.normalise import normalise

    w = world({"football": 20, "basketball": 1, "hockey": 1})
    at = busiest(w)
    m = next(m for m in w.matches("football") if m.is_live(at))
    raw = raw_fetch("football", {"live": "all"}, [item(m, "football", at)], at)
    match = normalise(raw).matches[0]
    state = diff(None, match, now=at).state
    assert state is not None
    return codec.dumps(state["snapshot"])
