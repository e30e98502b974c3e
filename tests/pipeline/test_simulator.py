"""The provider simulator over real HTTP: routing, envelopes, keys, quotas, faults, time."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from pipeline.simulator import ManualClock, SimClock, World, serve
from pipeline.simulator.model import dumps_wire

from tests.conftest import SAMPLES
START = 1_760_000_000.0  # 2025-10-09 08:53:20 UTC
DAY = dt.datetime.fromtimestamp(START, dt.timezone.utc).date().isoformat()
NEXT_MIDNIGHT = (START // 86_400 + 1) * 86_400

FOOTBALL = {"x-rapidapi-host": "api-football-v1.p.rapidapi.com", "x-rapidapi-key": "k1"}
BASKETBALL = {"x-rapidapi-host": "api-basketball.p.rapidapi.com", "x-rapidapi-key": "k1"}
HOCKEY = {"x-rapidapi-host": "api-hockey.p.rapidapi.com", "x-rapidapi-key": "k1"}
DIRECT = {"x-apisports-key": "k1"}

TOKEN = ("Error/Missing application key. Go to https://www.api-football.com/documentation-v3 "
         "to learn how to get your API application key.")
BAD_KEY = "Invalid API key. Go to https://docs.rapidapi.com/docs/keys for more info."
PER_MINUTE_DIRECT = "Too many requests. Your rate limit is 10 requests per minute."
DAILY_DIRECT = ("You have reached the request limit for the day, Go to "
                "https://dashboard.api-football.com to upgrade your plan.")


class Sim:
    def __init__(self, client: httpx.AsyncClient, world: World, clock: ManualClock) -> None:
        self.client, self.world, self.clock = client, world, clock

    async def get(self, path: str, headers: dict[str, str] | None = None,
                  **params: str) -> httpx.Response:
        return await self.client.get(path, params=params, headers=headers or {})

    async def advance(self, seconds: float) -> float:
        r = await self.client.post("/_sim/clock", json={"advance": seconds})
        assert r.status_code == 200, r.text
        return r.json()["now"]


async def _sim(**kwargs: Any) -> AsyncIterator[Sim]:
    clock = ManualClock(START)
    world = World(7, clock)
    async with serve(world, **kwargs) as url, httpx.AsyncClient(base_url=url, timeout=10) as client:
        yield Sim(client, world, clock)


@pytest.fixture
async def sim() -> AsyncIterator[Sim]:
    async for s in _sim():
        yield s


@pytest.fixture
async def free() -> AsyncIterator[Sim]:
    async for s in _sim(plan="free"):
        yield s


def sample(name: str) -> Any:
    return json.loads((SAMPLES / name).read_text())


# -- shapes -----------------------------------------------------------------------------------

#: Fields the simulator has beyond the samples (documented in the model).
EXTRA_FIELDS = {"$.response[].fixture.status": {"extra"}}


def _collect(x: Any, path: str = "$",
             acc: dict[str, list[Any]] | None = None) -> dict[str, list[Any]]:
    acc = {} if acc is None else acc
    acc.setdefault(path, []).append(x)
    if isinstance(x, dict):
        for k, v in x.items():
            _collect(v, f"{path}.{k}", acc)
    elif isinstance(x, list):
        for v in x:
            _collect(v, path + "[]", acc)
    return acc


def assert_same_shape(ours: Any, theirs: Any) -> None:
    """Same keys in the same order at every path, and no type the sample does not have."""
    mine, real = _collect(ours), _collect(theirs)
    checked = 0
    for path, values in real.items():
        if path not in mine or path.startswith("$.parameters"):
            continue
        real_keys = {tuple(v) for v in values if isinstance(v, dict)}
        our_keys = {tuple(k for k in v if k not in EXTRA_FIELDS.get(path, ())) for v in mine[path]
                    if isinstance(v, dict)}
        if real_keys and our_keys:
            assert our_keys <= real_keys, (path, our_keys, real_keys)
        real_types = {type(v) for v in values if v is not None}
        our_types = {type(v) for v in mine[path] if v is not None}
        if real_types and our_types:
            assert our_types <= real_types, (path, our_types, real_types)
        checked += 1
    assert checked > 5


def finished_ids(world: World, at: float) -> list[int]:
    return [m.id for m in world.matches("football") if m.status(at)[0] in ("FT", "AET", "PEN")]


async def test_fixtures_ids_have_the_real_shape(sim: Sim) -> None:
    await sim.advance(6 * 3600)
    ids = finished_ids(sim.world, sim.clock.now())[:20]
    assert len(ids) >= 5
    r = await sim.get("/v3/fixtures", FOOTBALL, ids="-".join(map(str, ids)))
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    assert "\\/" in r.text and "https://" not in r.text  # wire escapes
    body = r.json()
    assert list(body) == ["get", "parameters", "errors", "results", "paging", "response"]
    assert body["results"] == len(ids) and body["errors"] == []
    assert body["parameters"] == {"ids": "-".join(map(str, ids))}
    real = sample("apifootball_fixtures_ids_finished_PEN_detail.json")
    assert list(body["response"][0]) == list(real["response"][0])
    assert_same_shape(body, real)


@pytest.mark.parametrize("name, path, params", [
    ("apifootball_fixtures_events.json", "/v3/fixtures/events", {}),
    ("apifootball_fixtures_events_type_goal.json", "/v3/fixtures/events", {"type": "Goal"}),
    ("apifootball_fixtures_lineups.json", "/v3/fixtures/lineups", {}),
    ("apifootball_fixtures_statistics_filtered.json", "/v3/fixtures/statistics",
     {"type": "Ball Possession"}),
])
async def test_fixture_parts_have_the_real_shape(sim: Sim, name: str, path: str,
                                                 params: dict[str, str]) -> None:
    await sim.advance(6 * 3600)
    fid = finished_ids(sim.world, sim.clock.now())[0]
    r = await sim.get(path, FOOTBALL, fixture=str(fid), **params)
    body = r.json()
    real = sample(name)
    assert r.status_code == 200 and body["results"] > 0
    assert list(body) == list(real)
    assert body["get"] == real["get"]
    assert_same_shape(body, real)


async def test_fixture_list_and_error_envelopes_match_the_samples(sim: Sim) -> None:
    r = await sim.get("/v3/fixtures", FOOTBALL, date=DAY, status="NS-PST")
    body = r.json()
    assert body["results"] > 0
    assert {f["fixture"]["status"]["short"] for f in body["response"]} <= {"NS", "PST"}
    assert_same_shape(body, sample("apifootball_fixtures_league_status_NS-PST.json"))

    r = await sim.get("/v3/fixtures", FOOTBALL)
    real = sample("apifootball_error_required_param.json")
    assert r.status_code == 200
    assert r.json() == {**real, "get": "fixtures"}
    assert r.text == dumps_wire({**real, "get": "fixtures"})


async def test_basketball_and_hockey_envelopes(sim: Sim) -> None:
    for path, headers in (("/games", BASKETBALL), ("/games", HOCKEY)):
        r = await sim.get(path, headers, date=DAY)
        body = r.json()
        assert r.status_code == 200
        assert list(body) == ["get", "parameters", "errors", "results", "response"]
        assert body["get"] == "games" and body["results"] == len(body["response"]) > 0
        item = body["response"][0]
        assert set(item["status"]) >= {"long", "short"}
        assert "timer" in item or "timer" in item["status"]


# -- routing ----------------------------------------------------------------------------------


async def test_both_modes_serve_the_same_answers(sim: Sim) -> None:
    pairs = [
        ("/v3/fixtures", FOOTBALL, "/football/v3/fixtures", {"live": "all"}),
        ("/v3/fixtures", FOOTBALL, "/football/v3/fixtures", {"date": DAY}),
        ("/games", BASKETBALL, "/basketball/games", {"date": DAY}),
        ("/games", HOCKEY, "/hockey/games", {"date": DAY}),
    ]
    for rapid_path, headers, direct_path, params in pairs:
        a = await sim.get(rapid_path, headers, **params)
        b = await sim.get(direct_path, DIRECT, **params)
        assert a.status_code == b.status_code == 200
        assert a.content == b.content
        assert a.headers["server"] == "RapidAPI-1.2.8"
        assert b.headers["server"] != "RapidAPI-1.2.8"
    r = await sim.get("/fixtures", {**DIRECT, "host": "v3.football.api-sports.io"}, live="all")
    assert r.status_code == 200 and r.json()["get"] == "fixtures"


async def test_unknown_host_endpoint_and_method(sim: Sim) -> None:
    r = await sim.get("/v3/fixtures", {**FOOTBALL, "x-rapidapi-host": "api-cricket.p.rapidapi.com"})
    assert (r.status_code, r.json()) == (404, {"message": "API doesn't exists"})
    r = await sim.get("/v3/teams", FOOTBALL, id="1")
    assert (r.status_code, r.json()) == (404, {"message": "Endpoint '/teams' does not exist"})
    r = await sim.get("/basketball/odds", DIRECT)
    assert r.status_code == 404
    r = await sim.get("/cricket/games", DIRECT)
    assert r.status_code == 404
    r = await sim.client.post("/v3/fixtures", headers=FOOTBALL, params={"live": "all"})
    assert r.status_code == 405
    r = await sim.client.delete("/hockey/games", headers=DIRECT)
    assert r.status_code == 405


# -- keys -------------------------------------------------------------------------------------


async def test_keys_rapidapi_and_direct() -> None:
    async for sim in _sim(keys={"k1"}):
        ok = await sim.get("/v3/fixtures", FOOTBALL, live="all")
        assert ok.status_code == 200
        for headers in ({"x-rapidapi-host": "api-football-v1.p.rapidapi.com"},
                        {**FOOTBALL, "x-rapidapi-key": "nope"}):
            r = await sim.get("/v3/fixtures", headers, live="all")
            assert r.status_code == 401
            assert r.json() == {"message": BAD_KEY}
            assert "x-ratelimit-requests-remaining" not in r.headers
        r = await sim.get("/games", {**HOCKEY, "x-rapidapi-key": "unsubscribed"}, date=DAY)
        assert r.status_code == 403
        assert r.json() == {"message": "You are not subscribed to this API."}
        for headers in ({}, {"x-apisports-key": "nope"}, {"x-rapidapi-key": "k1"}):
            r = await sim.get("/football/v3/fixtures", headers, live="all")
            body = r.json()
            assert r.status_code == 200
            assert body["errors"] == {"token": TOKEN}
            assert body["results"] == 0 and body["response"] == []
            assert body["parameters"] == {"live": "all"}
        state = (await sim.client.get("/_sim/state")).json()
        assert state["requests"] == {"football": 1, "basketball": 0, "hockey": 0}


async def test_any_key_is_accepted_without_a_key_list(sim: Sim) -> None:
    r = await sim.get("/hockey/games", {"x-apisports-key": "whatever"}, date=DAY)
    assert r.status_code == 200 and r.json()["errors"] == []


# -- quotas -----------------------------------------------------------------------------------


async def test_quota_headers_count_down_and_status_is_free(sim: Sim) -> None:
    seen = []
    for _ in range(3):
        r = await sim.get("/v3/fixtures", FOOTBALL, live="all")
        seen.append(r.headers)
    assert [int(h["x-ratelimit-requests-remaining"]) for h in seen] == [7499, 7498, 7497]
    assert [int(h["X-RateLimit-Remaining"]) for h in seen] == [299, 298, 297]
    assert seen[0]["x-ratelimit-requests-limit"] == "7500" and seen[0]["X-RateLimit-Limit"] == "300"
    assert int(seen[0]["x-ratelimit-requests-reset"]) == NEXT_MIDNIGHT - START
    # per key and per sport
    r = await sim.get("/v3/fixtures", {**FOOTBALL, "x-rapidapi-key": "k2"}, live="all")
    assert r.headers["x-ratelimit-requests-remaining"] == "7499"
    r = await sim.get("/basketball/games", DIRECT, date=DAY)
    assert r.headers["x-ratelimit-requests-remaining"] == "7499"
    assert "x-ratelimit-requests-reset" not in r.headers
    # /status reports the count and does not add to it
    for _ in range(2):
        r = await sim.get("/v3/status", FOOTBALL)
        body = r.json()
        assert body["get"] == "status" and body["parameters"] == [] and body["errors"] == []
        assert body["response"]["requests"] == {"current": 3, "limit_day": 7500}
        assert body["response"]["subscription"]["plan"] == "Pro"
    r = await sim.get("/v3/fixtures", FOOTBALL, live="all")
    assert r.headers["x-ratelimit-requests-remaining"] == "7496"
    r = await sim.get("/hockey/status", DIRECT)
    assert r.json()["response"]["requests"]["current"] == 0


async def _spend(sim: Sim, n: int, path: str, headers: dict[str, str], per_minute: int,
                 **params: str) -> httpx.Response:
    r = None
    for i in range(n):
        if i and i % per_minute == 0:
            await sim.advance(60)
        r = await sim.get(path, headers, **params)
        assert r.status_code == 200 and r.json().get("errors", []) == [], r.text
    assert r is not None
    return r


async def test_daily_quota_rapidapi_then_reset_at_midnight(free: Sim) -> None:
    last = await _spend(free, 100, "/v3/fixtures", FOOTBALL, 30, live="all")
    assert last.headers["x-ratelimit-requests-remaining"] == "0"
    await free.advance(60)
    for _ in range(2):
        r = await free.get("/v3/fixtures", FOOTBALL, live="all")
        assert r.status_code == 429
        assert r.json() == {"message": "You have exceeded the DAILY quota for Requests on your "
                                       "current "
                                       "plan, BASIC. Upgrade your plan at "
                                       "https://rapidapi.com/api-sports/api/api-football"}
        assert r.headers["x-ratelimit-requests-remaining"] == "0"
    r = await free.get("/games", HOCKEY, date=DAY)  # another API, another count
    assert r.status_code == 200
    status = (await free.get("/v3/status", FOOTBALL)).json()
    assert status["response"]["requests"] == {"current": 100, "limit_day": 100}
    await free.client.post("/_sim/clock", json={"set": NEXT_MIDNIGHT - 1})
    assert (await free.get("/v3/fixtures", FOOTBALL, live="all")).status_code == 429
    await free.advance(1)
    r = await free.get("/v3/fixtures", FOOTBALL, live="all")
    assert r.status_code == 200
    assert r.headers["x-ratelimit-requests-remaining"] == "99"
    assert r.headers["x-ratelimit-requests-reset"] == "86400"
    state = (await free.client.get("/_sim/state")).json()
    assert state["requests"]["football"] == 101 and state["quota_errors"]["football"] == 3


async def test_daily_quota_direct(free: Sim) -> None:
    await _spend(free, 100, "/basketball/games", DIRECT, 10, date=DAY)
    await free.advance(60)
    r = await free.get("/basketball/games", DIRECT, date=DAY)
    body = r.json()
    assert r.status_code == 200
    assert body["errors"] == {"requests": DAILY_DIRECT}
    assert body["results"] == 0 and body["response"] == [] and "paging" not in body
    assert r.headers["x-ratelimit-requests-remaining"] == "0"


async def test_per_minute_window(free: Sim) -> None:
    await free.advance(60 - START % 60)  # the start of a simulated minute
    for _ in range(10):
        r = await free.get("/football/v3/fixtures", DIRECT, live="all")
        assert r.status_code == 200 and r.json()["errors"] == []
    assert r.headers["X-RateLimit-Remaining"] == "0" and r.headers["X-RateLimit-Limit"] == "10"
    r = await free.get("/football/v3/fixtures", DIRECT, live="all")
    assert r.status_code == 200
    assert r.json()["errors"] == {"rateLimit": PER_MINUTE_DIRECT}
    assert r.headers["x-ratelimit-requests-remaining"] == "90"  # refused: not counted
    # RapidAPI allows 30 a minute on the free plan; the same key's count goes on
    for _ in range(20):
        assert (await free.get("/v3/fixtures", FOOTBALL, live="all")).status_code == 200
    r = await free.get("/v3/fixtures", FOOTBALL, live="all")
    assert r.status_code == 429
    assert r.json() == {"message": "You have exceeded the rate limit per minute for your plan, "
                                   "BASIC, "
                                   "by the API provider"}
    await free.advance(59)
    assert (await free.get("/v3/fixtures", FOOTBALL, live="all")).status_code == 429
    await free.advance(1)
    r = await free.get("/football/v3/fixtures", DIRECT, live="all")
    assert r.json()["errors"] == [] and r.headers["X-RateLimit-Remaining"] == "9"
    assert r.headers["x-ratelimit-requests-remaining"] == "69"


async def test_rapidapi_minute_limit_can_follow_the_direct_one() -> None:
    async for sim in _sim(plan="free", rapidapi_minute=False):
        for _ in range(10):
            r = await sim.get("/games", BASKETBALL, date=DAY)
            assert r.status_code == 200
        assert r.headers["X-RateLimit-Limit"] == "10"
        assert (await sim.get("/games", BASKETBALL, date=DAY)).status_code == 429


async def test_plans() -> None:
    for plan, day, minute in (("ultra", 75_000, 450), ("mega", 150_000, 900)):
        async for sim in _sim(plan=plan):
            r = await sim.get("/games", HOCKEY, date=DAY)
            assert r.headers["x-ratelimit-requests-limit"] == str(day)
            assert r.headers["X-RateLimit-Limit"] == str(minute)
    with pytest.raises(ValueError):
        async for _ in _sim(plan="gold"):
            pass


# -- faults -----------------------------------------------------------------------------------


async def _fault(sim: Sim, **spec: Any) -> None:
    r = await sim.client.post("/_sim/faults", json=spec)
    assert r.status_code == 201, r.text


@pytest.mark.parametrize("kind, status", [("error500", 500), ("error502", 502), ("error503", 503)])
async def test_fault_server_errors(sim: Sim, kind: str, status: int) -> None:
    await _fault(sim, kind=kind, count=2)
    for _ in range(2):
        r = await sim.get("/v3/fixtures", FOOTBALL, live="all")
        assert r.status_code == status and "message" in r.json()
    r = await sim.get("/v3/fixtures", FOOTBALL, live="all")
    assert r.status_code == 200
    assert r.headers["x-ratelimit-requests-remaining"] == "7499"  # faults use no quota


async def test_fault_malformed_truncated_html_empty(sim: Sim) -> None:
    real = (await sim.get("/v3/fixtures", FOOTBALL, live="all")).text
    await _fault(sim, kind="malformed")
    r = await sim.get("/v3/fixtures", FOOTBALL, live="all")
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    with pytest.raises(json.JSONDecodeError):
        json.loads(r.text)
    await _fault(sim, kind="truncated")
    r = await sim.get("/v3/fixtures", FOOTBALL, live="all")
    assert r.status_code == 200 and r.text == real[: len(real) // 2]
    with pytest.raises(json.JSONDecodeError):
        json.loads(r.text)
    await _fault(sim, kind="html")
    r = await sim.get("/v3/fixtures", FOOTBALL, live="all")
    assert r.status_code == 502 and r.headers["content-type"].startswith("text/html")
    assert "<html>" in r.text
    await _fault(sim, kind="empty204")
    r = await sim.get("/v3/fixtures", FOOTBALL, live="all")
    assert r.status_code == 204 and r.content == b""
    assert (await sim.get("/v3/fixtures", FOOTBALL, live="all")).text == real


async def test_fault_stale_serves_an_older_copy(sim: Sim) -> None:
    old = (await sim.get("/games", HOCKEY, date=DAY)).json()
    await sim.advance(900)
    new = (await sim.get("/games", HOCKEY, date=DAY)).json()
    assert new["response"] != old["response"]  # the day moved on
    await _fault(sim, kind="stale", delay=900)
    r = await sim.get("/games", HOCKEY, date=DAY)
    assert r.status_code == 200 and r.json()["response"] == old["response"]
    assert (await sim.get("/games", HOCKEY, date=DAY)).json()["response"] == new["response"]


async def test_fault_slow_and_timeout(sim: Sim) -> None:
    await _fault(sim, kind="slow", delay=0.3)
    t0 = time.monotonic()
    r = await sim.get("/games", HOCKEY, date=DAY)
    assert time.monotonic() - t0 >= 0.3
    assert r.status_code == 200 and r.json()["errors"] == []
    await _fault(sim, kind="timeout", delay=0.2)
    r = await sim.get("/games", HOCKEY, date=DAY)
    assert r.status_code == 504
    await _fault(sim, kind="timeout")  # 30 s by default: the client gives up first
    with pytest.raises(httpx.ReadTimeout):
        await sim.client.get("/games", params={"date": DAY}, headers=HOCKEY, timeout=0.3)
    assert (await sim.get("/games", HOCKEY, date=DAY)).status_code == 200


async def test_fault_quota_answers(free: Sim) -> None:
    await _fault(free, kind="quota_day", count=2)
    r = await free.get("/v3/fixtures", FOOTBALL, live="all")
    assert r.status_code == 429 and "DAILY quota" in r.json()["message"]
    r = await free.get("/football/v3/fixtures", DIRECT, live="all")
    assert r.json()["errors"] == {"requests": DAILY_DIRECT}
    await _fault(free, kind="quota_minute", count=2)
    r = await free.get("/v3/fixtures", FOOTBALL, live="all")
    assert r.status_code == 429 and "rate limit per minute" in r.json()["message"]
    r = await free.get("/football/v3/fixtures", DIRECT, live="all")
    assert r.json()["errors"] == {"rateLimit": PER_MINUTE_DIRECT}
    r = await free.get("/football/v3/fixtures", DIRECT, live="all")
    assert r.json()["errors"] == [] and r.headers["x-ratelimit-requests-remaining"] == "99"


async def test_fault_queue_sport_forever_list_clear(sim: Sim) -> None:
    await _fault(sim, kind="error503", count=-1, sport="hockey")
    listed = (await sim.client.get("/_sim/faults")).json()["faults"]
    assert [(f["kind"], f["count"], f["sport"]) for f in listed] == [("error503", -1, "hockey")]
    for _ in range(3):
        assert (await sim.get("/games", HOCKEY, date=DAY)).status_code == 503
    assert (await sim.get("/games", BASKETBALL, date=DAY)).status_code == 200
    r = await sim.client.delete("/_sim/faults")
    assert r.json() == {"cleared": 1}
    assert (await sim.client.get("/_sim/faults")).json() == {"faults": []}
    assert (await sim.get("/games", HOCKEY, date=DAY)).status_code == 200
    for bad in ({"kind": "meteor"}, {"kind": "slow", "count": 0}, {"kind": "slow", "sport": "golf"},
                {"kind": "slow", "delay": -1}, ["slow"]):
        assert (await sim.client.post("/_sim/faults", json=bad)).status_code == 400


# -- time -------------------------------------------------------------------------------------


async def test_state_and_clock() -> None:
    async for sim in _sim():
        state = (await sim.client.get("/_sim/state")).json()
        assert state["now"] == START and state["start"] == START and state["speed"] == 1.0
        assert set(state["summary"]) == {"football", "basketball", "hockey"}
        assert await sim.advance(90) == START + 90
        assert (await sim.client.post("/_sim/clock", json={"advance": -5})).status_code == 400
        assert (await sim.client.post("/_sim/clock", json={})).status_code == 400
        assert (await sim.client.put("/_sim/faults", json={})).status_code == 405
        assert (await sim.client.get("/_sim/nothing")).status_code == 404
    world = World(7, SimClock(speed=60, start=START))
    async with serve(world) as url, httpx.AsyncClient(base_url=url) as client:
        r = await client.post("/_sim/clock", json={"advance": 60})
        assert r.status_code == 400
        state = (await client.get("/_sim/state")).json()
        assert state["speed"] == 60 and START <= state["now"] < START + 600


async def test_same_seed_start_and_time_give_the_same_bytes() -> None:
    bodies = []
    for seed in (7, 7, 8):
        clock = ManualClock(START)
        async with serve(World(seed, clock)) as url, httpx.AsyncClient(base_url=url) as client:
            got = []
            for path, headers, params in (("/v3/fixtures", FOOTBALL, {"date": DAY}),
                                          ("/v3/fixtures", FOOTBALL, {"live": "all"}),
                                          ("/games", BASKETBALL, {"date": DAY}),
                                          ("/games", HOCKEY, {"date": DAY})):
                got.append((await client.get(path, params=params, headers=headers)).content)
            clock.advance(2400)
            got.append((await client.get("/v3/fixtures", params={"live": "all"},
                                         headers=FOOTBALL)).content)
            bodies.append(got)
    assert bodies[0] == bodies[1]
    assert bodies[0] != bodies[2]


FINISHED = {"football": {"FT", "AET", "PEN"}, "basketball": {"FT", "AOT"},
            "hockey": {"FT", "AOT", "AP"}}


async def test_matches_unfold(sim: Sim) -> None:
    seen: dict[str, dict[int, list[str]]] = {"football": {}, "basketball": {}, "hockey": {}}

    async def look() -> None:
        for sport, path, headers in (("football", "/v3/fixtures", FOOTBALL),
                                     ("basketball", "/games", BASKETBALL),
                                     ("hockey", "/games", HOCKEY)):
            body = (await sim.get(path, headers, date=DAY)).json()
            for item in body["response"]:
                gid = item["fixture"]["id"] if sport == "football" else item["id"]
                status = item["fixture"]["status"] if sport == "football" else item["status"]
                short = status["short"]
                codes = seen[sport].setdefault(gid, [])
                if not codes or codes[-1] != short:
                    codes.append(short)

    await look()
    for _ in range(5 * 12):
        await sim.advance(300)
        await look()
    football = seen["football"]
    played = [fid for fid, codes in football.items()
              if codes[0] == "NS" and codes[-1] in FINISHED["football"]]
    assert played, football
    for fid in played:
        codes = football[fid]
        assert codes[:5] == ["NS", "1H", "HT", "2H", codes[4]], codes
    scored = []
    for fid in played:
        item = (await sim.get("/v3/fixtures", FOOTBALL, id=str(fid))).json()["response"][0]
        goals = item["goals"]["home"] + item["goals"]["away"]
        if goals and item["fixture"]["status"]["short"] == "FT":
            scored.append(fid)
            events = (await sim.get("/v3/fixtures/events", FOOTBALL, fixture=str(fid),
                                    type="Goal")).json()
            counted = [e for e in events["response"] if e["detail"] != "Missed Penalty"]
            assert len(counted) >= goals
            assert item["fixture"]["status"] == {"long": "Match Finished", "short": "FT",
                                                 "elapsed": 90, "extra": None}
    assert scored
    for sport in ("basketball", "hockey"):
        done = [codes for codes in seen[sport].values()
                if codes[0] == "NS" and codes[-1] in FINISHED[sport] and len(codes) > 3]
        assert done, seen[sport]
    assert any(c[-1] in ("PST",) for c in football.values())


# -- the blocking entry point -----------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_run_serves_until_sigterm() -> None:
    port = _free_port()
    code = ("import logging; logging.basicConfig(level=logging.INFO); "
            "from pipeline.simulator import run; "
            f"run('127.0.0.1', {port}, seed=3, speed=60, plan='free', start={START})")
    proc = subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True,
                            cwd=Path(__file__).resolve().parents[2], env={**os.environ})
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        assert f"simulator listening on http://127.0.0.1:{port}" in line
        r = httpx.get(f"http://127.0.0.1:{port}/hockey/games", params={"date": DAY},
                      headers={"x-apisports-key": "k"})
        assert r.status_code == 200 and r.headers["X-RateLimit-Limit"] == "10"
        state = httpx.get(f"http://127.0.0.1:{port}/_sim/state").json()
        assert state["speed"] == 60 and state["start"] == START
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


async def test_serve_closes_with_a_request_in_flight() -> None:
    world = World(7, ManualClock(START))
    client = httpx.AsyncClient()
    try:
        async with serve(world) as url:
            await client.post(f"{url}/_sim/faults", json={"kind": "slow", "delay": 30})
            task = asyncio.create_task(client.get(f"{url}/games", params={"date": DAY},
                                                  headers=HOCKEY, timeout=10))
            await asyncio.sleep(0.2)
            t0 = time.monotonic()
        assert time.monotonic() - t0 < 5
        await asyncio.wait_for(asyncio.gather(task, return_exceptions=True), 5)
    finally:
        await client.aclose()
