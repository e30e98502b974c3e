"""REST for real: lists, pagination, history, errors, Redis fallback and the OpenAPI contract.

Each test runs a real edge process (``edge_env``) against the run's broker, Redis
and Postgres; snapshots and deltas are written with the real sinks.
"""

from __future__ import annotations

import asyncio
import copy
import os
import sys
import time
from pathlib import Path

import httpx
import pytest
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from pipeline.sinks import PostgresHistory
from tables.api_keys import KeyStore
from tests.support import Proc, free_port, wait_http
from tests.web.conftest import delta, snapshot

M1 = "football-apifootball-101"
BOGUS_DB = "postgresql://nobody@127.0.0.1:{port}/none"


def match(mid: str, *, seq: int = 1, phase: str = "scheduled", league: str = "39",
          start: str = "2026-11-29T15:00:00Z", sport: str = "football", name: str = "Premier League",
          country: str = "England") -> dict:
    m = snapshot(mid, seq, phase=phase, league=league)
    m["sport"] = sport
    m["provider"] = mid.split("-")[1]
    m["start_time"] = start
    m["league"].update(name=name, country=country)
    return m


def fixture_matches() -> list[dict]:
    """A spread of matches: three sports, two football leagues, two days, ties on start time."""
    out = []
    for i in range(14):
        phase = ["scheduled", "live", "finished", "break"][i % 4]
        start = f"2026-11-{29 + i // 7:02d}T{12 + i % 3:02d}:00:00Z"  # ties: same hour, ids differ
        league = "39" if i % 3 else "140"
        name, country = ("Premier League", "England") if league == "39" else ("La Liga", "Spain")
        out.append(match(f"football-apifootball-{500 + i}", phase=phase, league=league, start=start,
                         name=name, country=country))
    for i in range(3):
        out.append(match(f"basketball-apibasketball-{70 + i}", sport="basketball", league="12",
                         phase="live" if i == 0 else "scheduled", name="NBA", country="USA",
                         start=f"2026-11-29T0{i}:00:00Z"))
    out.append(match("hockey-apihockey-9", sport="hockey", league="57", name="NHL", country="USA"))
    return out


def order(ms: list[dict]) -> list[str]:
    return [m["id"] for m in sorted(ms, key=lambda m: (m["start_time"], m["id"].encode()))]


async def pro_client(edge_env, url: str | None = None) -> httpx.AsyncClient:
    """A client with a key of the pro tier (1000 requests a minute)."""
    _, secret = await KeyStore(edge_env.pool, edge_env.settings.db_schema).create("tests", "pro")
    return httpx.AsyncClient(base_url=url or edge_env.url, timeout=20,
                             headers={"Authorization": f"Bearer {secret}"})


async def store_all(edge_env, ms: list[dict]) -> None:
    for m in ms:
        await edge_env.store(m)


async def walk(c: httpx.AsyncClient, query: str, limit: int) -> tuple[list[str], set[str]]:
    """Every page of ``/v1/matches?query``; the ids in order and the X-Cache values seen."""
    ids: list[str] = []
    caches: set[str] = set()
    url = f"/v1/matches?{query}&limit={limit}" if query else f"/v1/matches?limit={limit}"
    r = await c.get(url)
    for _ in range(200):
        assert r.status_code == 200, r.text
        body = r.json()
        assert len(body["data"]) <= limit
        caches.add(r.headers["x-cache"])
        ids += [m["id"] for m in body["data"]]
        if body["next"] is None:
            return ids, caches
        assert body["data"], "a page with a next cursor must not be empty"
        r = await c.get(url + f"&cursor={body['next']}")
    raise AssertionError("pagination did not end")


# -- lists and pagination -------------------------------------------------------------------

async def test_leagues_from_postgres(edge_env):
    await store_all(edge_env, fixture_matches())
    async with await pro_client(edge_env) as c:
        r = await c.get("/v1/leagues")
        assert r.status_code == 200
        got = {(x["sport"], x["id"]): x for x in r.json()["data"]}
        assert list(got) == [("basketball", "12"), ("football", "140"), ("football", "39"),
                             ("hockey", "57")]
        pl = [m for m in fixture_matches() if m["league"]["id"] == "39"]
        live = [m for m in pl if m["status"]["phase"] in ("live", "break")]
        assert got[("football", "39")] == {"sport": "football", "id": "39", "name": "Premier League",
                                           "country": "England", "season": "2024",
                                           "matches": len(pl), "live": len(live)}
        assert 0 < len(live) < len(pl)
        assert got[("basketball", "12")]["live"] == 1 and got[("basketball", "12")]["name"] == "NBA"
        r = await c.get("/v1/leagues?sport=hockey")
        assert [x["id"] for x in r.json()["data"]] == ["57"]
        assert (await c.get("/v1/leagues?sport=basketball")).json()["data"][0]["matches"] == 3


async def test_pagination_walks_every_match_once_from_redis_and_from_postgres(edge_env, redis_client):
    ms = fixture_matches()
    await store_all(edge_env, ms)
    football = [m for m in ms if m["sport"] == "football"]
    async with await pro_client(edge_env) as c:
        for limit in (1, 3, 5, 200):
            ids, caches = await walk(c, "sport=football", limit)
            assert ids == order(football) and caches == {"hit"}, limit
        ids, caches = await walk(c, "", 4)  # no index covers every sport: Postgres
        assert ids == order(ms) and caches == {"miss"}
        # a finished match expired from Redis: its pages come from Postgres, same order
        gone = next(m for m in football if m["status"]["phase"] == "finished")
        await redis_client.delete(f"{edge_env.settings.redis_prefix}match:{gone['id']}")
        ids, caches = await walk(c, "sport=football", 3)
        assert ids == order(football) and "miss" in caches


async def test_a_walk_may_move_from_redis_to_postgres_between_pages(edge_env, redis_client):
    ms = [m for m in fixture_matches() if m["sport"] == "football"]
    await store_all(edge_env, ms)
    expected = order(ms)
    async with await pro_client(edge_env) as c:
        first = await c.get("/v1/matches?sport=football&limit=5")
        assert first.headers["x-cache"] == "hit"
        ids = [m["id"] for m in first.json()["data"]]
        await redis_client.delete(edge_env.settings.redis_prefix + "sport:football")
        r = await c.get(f"/v1/matches?sport=football&limit=5&cursor={first.json()['next']}")
        assert r.headers["x-cache"] == "miss"
        while True:
            ids += [m["id"] for m in r.json()["data"]]
            if r.json()["next"] is None:
                break
            r = await c.get(f"/v1/matches?sport=football&limit=5&cursor={r.json()['next']}")
        assert ids == expected


@pytest.mark.parametrize("query, cache", [
    ("sport=football&phase=live", "hit"),          # the live set
    ("phase=break", "hit"),                        # the live sets of every sport
    ("sport=basketball&phase=live", "hit"),
    ("sport=football&league=39", "hit"),           # the league index
    ("sport=football&league=140&phase=scheduled", "hit"),
    ("date=2026-11-30", "hit"),                    # the day index
    ("date=2026-11-29&sport=basketball", "hit"),
    ("sport=hockey", "hit"),
    ("phase=finished", "miss"),                    # no index: Postgres
    ("sport=football&league=999", "miss"),
    ("date=2027-01-01", "miss"),
])
async def test_filters(edge_env, query, cache):
    ms = fixture_matches()
    await store_all(edge_env, ms)
    params = dict(p.split("=") for p in query.split("&"))

    def wanted(m: dict) -> bool:
        return (params.get("sport", m["sport"]) == m["sport"]
                and params.get("league", m["league"]["id"]) == m["league"]["id"]
                and params.get("phase", m["status"]["phase"]) == m["status"]["phase"]
                and params.get("date", m["start_time"][:10]) == m["start_time"][:10])

    async with await pro_client(edge_env) as c:
        ids, caches = await walk(c, query, 2)
    assert ids == order([m for m in ms if wanted(m)])
    assert caches == {cache}


async def test_a_rescheduled_match_leaves_its_old_day(edge_env):
    m = match("football-apifootball-900", start="2026-11-29T15:00:00Z")
    await edge_env.store(m)
    moved = copy.deepcopy(m)
    moved.update(seq=2, start_time="2026-12-03T15:00:00Z")
    moved["status"]["phase"] = "postponed"
    await edge_env.store(moved)
    async with await pro_client(edge_env) as c:
        assert (await c.get("/v1/matches?date=2026-11-29")).json()["data"] == []
        r = await c.get("/v1/matches?date=2026-12-03")
        assert [x["seq"] for x in r.json()["data"]] == [2]


# -- the snapshot and its history -----------------------------------------------------------

async def test_match_cache_states_and_etag(edge_env, redis_client):
    await edge_env.store(match(M1, seq=4))
    async with await pro_client(edge_env) as c:
        r = await c.get(f"/v1/matches/{M1}")
        assert r.headers["x-cache"] == "hit" and r.headers["etag"] == f'W/"{M1}:4"'
        await redis_client.delete(f"{edge_env.settings.redis_prefix}match:{M1}")
        r = await c.get(f"/v1/matches/{M1}")
        assert r.headers["x-cache"] == "miss" and r.headers["etag"] == f'W/"{M1}:4"'
        r = await c.get(f"/v1/matches/{M1}", headers={"If-None-Match": f'W/"{M1}:4"'})
        assert r.status_code == 304 and r.content == b""


async def test_deltas_pages_through_the_history(edge_env):
    now = time.time()
    history = PostgresHistory(edge_env.pool, edge_env.settings.db_schema)
    await history.write_deltas([delta(M1, s, ts=now - 60 + s) for s in range(1, 24)])
    await history.write_deltas([delta(M1, 5, ts=now)])  # a redelivery changes nothing
    await history.write_deltas([delta("football-apifootball-102", 1, ts=now)])
    async with await pro_client(edge_env) as c:
        seqs, since, pages = [], 0, 0
        while since is not None:
            r = await c.get(f"/v1/matches/{M1}/deltas?since_seq={since}&limit=5")
            assert r.status_code == 200 and "x-cache" not in r.headers
            body = r.json()
            assert all(d["match_id"] == M1 for d in body["data"])
            seqs += [d["seq"] for d in body["data"]]
            since, pages = body["next"], pages + 1
        assert seqs == list(range(1, 24)) and pages == 5
        r = await c.get(f"/v1/matches/{M1}/deltas")
        assert [d["seq"] for d in r.json()["data"]] == list(range(1, 24)) and r.json()["next"] is None
        assert r.json()["data"][0] == delta(M1, 1, ts=now - 59)
        r = await c.get(f"/v1/matches/{M1}/deltas?since_seq=23")
        assert r.json() == {"data": [], "next": None}


async def test_deltas_reach_back_as_far_as_the_tier(edge_env):
    """The anonymous tier of the test tiers reaches back one hour; pro a week."""
    now = time.time()
    history = PostgresHistory(edge_env.pool, edge_env.settings.db_schema)
    await history.write_deltas([delta(M1, 1, ts=now - 3 * 3600), delta(M1, 2, ts=now - 60)])
    _, secret = await KeyStore(edge_env.pool, edge_env.settings.db_schema).create("p", "pro")
    async with httpx.AsyncClient(base_url=edge_env.url) as c:
        r = await c.get(f"/v1/matches/{M1}/deltas")
        assert [d["seq"] for d in r.json()["data"]] == [2]
        r = await c.get(f"/v1/matches/{M1}/deltas", headers={"Authorization": f"Bearer {secret}"})
        assert [d["seq"] for d in r.json()["data"]] == [1, 2]


# -- errors -----------------------------------------------------------------------------------

@pytest.mark.parametrize("url, param", [
    ("/v1/leagues?sport=curling", "sport"),
    ("/v1/leagues?sport=", "sport"),
    ("/v1/matches?sport=curling", "sport"),
    ("/v1/matches?phase=halftime", "phase"),
    ("/v1/matches?date=2026-02-30", "date"),
    ("/v1/matches?date=29-11-2026", "date"),
    ("/v1/matches?date=2026-11-29T00:00:00Z", "date"),
    ("/v1/matches?limit=0", "limit"),
    ("/v1/matches?limit=201", "limit"),
    ("/v1/matches?limit=ten", "limit"),
    ("/v1/matches?limit=-1", "limit"),
    ("/v1/matches?league=39", "league"),
    ("/v1/matches?sport=football&league=a%20b", "league"),
    ("/v1/matches?cursor=%%%", "cursor"),
    ("/v1/matches?cursor=bm90LWEtY3Vyc29y", "cursor"),
    ("/v1/matches?cursor=WzEsImFiYyIsMSwiZm9vdGJhbGwtYXBpZm9vdGJhbGwtMSJd", "cursor"),
    ("/v1/matches/NOT_AN_ID", "id"),
    ("/v1/matches/NOT_AN_ID/deltas", "id"),
    (f"/v1/matches/{M1}/deltas?since_seq=-1", "since_seq"),
    (f"/v1/matches/{M1}/deltas?since_seq=1.5", "since_seq"),
    (f"/v1/matches/{M1}/deltas?since_seq=99999999999999999999", "since_seq"),
    (f"/v1/matches/{M1}/deltas?limit=1001", "limit"),
])
async def test_bad_parameters_are_named(edge_env, url, param):
    async with await pro_client(edge_env) as c:
        r = await c.get(url)
    assert r.status_code == 400, r.text
    assert r.headers["content-type"] == "application/json"
    err = r.json()["error"]
    assert err["code"] == "bad_parameter" and err["param"] == param and err["message"]


async def test_a_cursor_only_serves_its_own_filters(edge_env):
    await store_all(edge_env, fixture_matches())
    async with await pro_client(edge_env) as c:
        nxt = (await c.get("/v1/matches?sport=football&limit=2")).json()["next"]
        r = await c.get(f"/v1/matches?sport=football&phase=live&limit=2&cursor={nxt}")
        assert r.status_code == 400 and r.json()["error"]["param"] == "cursor"
        r = await c.get(f"/v1/matches?sport=football&limit=7&cursor={nxt}")
        assert r.status_code == 200  # the page size may change along the way


async def test_unknown_matches_are_404(edge_env):
    async with await pro_client(edge_env) as c:
        for url in ("/v1/matches/football-apifootball-999", "/v1/matches/football-apifootball-999/deltas"):
            r = await c.get(url)
            assert r.status_code == 404 and r.json()["error"]["code"] == "not_found", url


def start_edge(edge_env, tmp_path: Path, **env: str) -> tuple[Proc, str]:
    port = free_port()
    proc = Proc(f"edge-{port}", ["edge", "--port", str(port)], edge_env.settings,
                tmp_path / "logs", extra_env=env)
    edge_env.procs.append(proc)
    return proc, f"http://127.0.0.1:{port}"


async def test_redis_outage_falls_back_to_postgres(edge_env, tmp_path):
    ms = fixture_matches()
    await store_all(edge_env, ms)
    history = PostgresHistory(edge_env.pool, edge_env.settings.db_schema)
    await history.write_deltas([delta(M1, 1, ts=time.time())])
    proc, url = start_edge(edge_env, tmp_path, REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    await wait_http(url + "/healthz", proc)
    async with await pro_client(edge_env, url) as c:
        r = await c.get(f"/v1/matches/{ms[0]['id']}")
        assert r.status_code == 200 and r.headers["x-cache"] == "bypass"
        assert r.json()["data"] == ms[0]
        ids, caches = await walk(c, "sport=football&phase=live", 2)
        assert caches == {"bypass"}
        assert ids == order([m for m in ms if m["sport"] == "football" and m["status"]["phase"] == "live"])
        assert (await c.get("/v1/leagues")).status_code == 200
        assert (await c.get(f"/v1/matches/{M1}/deltas")).json()["data"][0]["seq"] == 1


async def test_no_store_answers_503_with_retry_after(edge_env, tmp_path):
    proc, url = start_edge(edge_env, tmp_path, REDIS_URL=f"redis://127.0.0.1:{free_port()}/0",
                           DATABASE_URL=BOGUS_DB.format(port=free_port()))
    await wait_http(url + "/healthz", proc)
    async with httpx.AsyncClient(base_url=url, timeout=20) as c:
        for path in (f"/v1/matches/{M1}", "/v1/matches?sport=football&phase=live", "/v1/leagues",
                     f"/v1/matches/{M1}/deltas"):
            r = await c.get(path)
            assert r.status_code == 503, (path, r.text)
            assert r.json()["error"]["code"] == "unavailable" and int(r.headers["retry-after"]) > 0


async def test_postgres_outage_leaves_redis_answering(edge_env, tmp_path):
    ms = fixture_matches()
    await store_all(edge_env, ms)
    proc, url = start_edge(edge_env, tmp_path, DATABASE_URL=BOGUS_DB.format(port=free_port()))
    await wait_http(url + "/healthz", proc)
    async with httpx.AsyncClient(base_url=url, timeout=20) as c:
        ids, caches = await walk(c, "sport=football", 4)
        assert caches == {"hit"} and ids == order([m for m in ms if m["sport"] == "football"])
        r = await c.get("/v1/matches?phase=finished")  # only Postgres could answer
        assert r.status_code == 503 and r.headers["retry-after"]


# -- the OpenAPI contract ---------------------------------------------------------------------

REST_ROUTES = ["/v1/sports", "/v1/leagues", "/v1/matches", "/v1/matches/{match_id}",
               "/v1/matches/{match_id}/deltas", "/v1/usage"]


async def seed_for_contract(edge_env) -> str:
    """Matches, history and a pro key, so generated requests also meet real data."""
    from web.openapi import EXAMPLE_MATCH

    ms = fixture_matches() + [match(EXAMPLE_MATCH, seq=3, phase="live")]
    await store_all(edge_env, ms)
    now = time.time()
    await PostgresHistory(edge_env.pool, edge_env.settings.db_schema).write_deltas(
        [delta(EXAMPLE_MATCH, s, ts=now - 10 + s) for s in (1, 2, 3)])
    _, secret = await KeyStore(edge_env.pool, edge_env.settings.db_schema).create("contract", "pro")
    return secret


async def test_openapi_document_and_docs_page(edge_env):
    async with httpx.AsyncClient(base_url=edge_env.url) as c:
        r = await c.get("/openapi.json")
        assert r.status_code == 200 and r.headers["content-type"] == "application/json"
        doc = r.json()
        docs = await c.get("/docs")
        assert docs.status_code == 200 and "text/html" in docs.headers["content-type"]
        assert "/openapi.json" in docs.text and "https://" not in docs.text
    assert doc["openapi"].startswith("3.1")
    assert sorted(doc["paths"]) == sorted(REST_ROUTES)
    assert set(doc["components"]["securitySchemes"]) == {"bearer", "apiKeyHeader", "apiKeyQuery"}
    from tables.schema_check import schema

    match_props = doc["components"]["schemas"]["Match"]["properties"]
    assert match_props["status"] == schema("match")["properties"]["status"]
    assert doc["components"]["schemas"]["Delta"]["required"] == schema("delta")["required"]


def conformance_validator(doc: dict, path: str, status: int) -> Draft202012Validator:
    registry = Registry().with_resource("urn:openapi", Resource.from_contents(
        doc, default_specification=DRAFT202012))
    pointer = "/paths/" + path.replace("~", "~0").replace("/", "~1") + \
        f"/get/responses/{status}/content/application~1json/schema"
    return Draft202012Validator({"$ref": "urn:openapi#" + pointer}, registry=registry,
                                format_checker=Draft202012Validator.FORMAT_CHECKER)


def check_response(doc: dict, route: str, r: httpx.Response) -> None:
    op = doc["paths"][route]["get"]
    assert str(r.status_code) in op["responses"], (route, r.status_code, r.text)
    spec = op["responses"][str(r.status_code)]
    for name, header in spec.get("headers", {}).items():
        if "$ref" in header:
            header = doc["components"]["headers"][header["$ref"].rsplit("/", 1)[1]]
        value = r.headers.get(name)
        if value is None:
            assert not header.get("required"), (route, r.status_code, name)
            continue
        Draft202012Validator(header["schema"]).validate(value)
    if "content" in spec:
        assert r.headers["content-type"] == "application/json"
        errors = list(conformance_validator(doc, route, r.status_code).iter_errors(r.json()))
        assert not errors, (route, r.status_code, [e.message for e in errors][:3])
    else:
        assert r.content == b""


async def test_real_responses_conform_to_the_document(edge_env, tmp_path):
    """Every route, answering with data and with each of its errors, against the document."""
    from web.openapi import EXAMPLE_MATCH

    secret = await seed_for_contract(edge_env)
    auth = {"Authorization": f"Bearer {secret}"}
    async with httpx.AsyncClient(base_url=edge_env.url) as c:
        doc = (await c.get("/openapi.json")).json()
        first = (await c.get("/v1/matches?sport=football&limit=2", headers=auth)).json()
        etag = (await c.get(f"/v1/matches/{EXAMPLE_MATCH}", headers=auth)).headers["etag"]
        cases: list[tuple[str, str, dict[str, str]]] = [
            ("/v1/sports", "/v1/sports", auth),
            ("/v1/leagues", "/v1/leagues?sport=football", auth),
            ("/v1/leagues", "/v1/leagues?sport=darts", auth),
            ("/v1/matches", "/v1/matches?sport=football&limit=2", auth),
            ("/v1/matches", f"/v1/matches?sport=football&limit=2&cursor={first['next']}", auth),
            ("/v1/matches", "/v1/matches?phase=finished", auth),
            ("/v1/matches", "/v1/matches?limit=500", auth),
            ("/v1/matches/{match_id}", f"/v1/matches/{EXAMPLE_MATCH}", auth),
            ("/v1/matches/{match_id}", f"/v1/matches/{EXAMPLE_MATCH}", {**auth, "If-None-Match": etag}),
            ("/v1/matches/{match_id}", "/v1/matches/football-apifootball-0", auth),
            ("/v1/matches/{match_id}", "/v1/matches/x", auth),
            ("/v1/matches/{match_id}/deltas", f"/v1/matches/{EXAMPLE_MATCH}/deltas?limit=2", auth),
            ("/v1/matches/{match_id}/deltas", "/v1/matches/football-apifootball-0/deltas", auth),
            ("/v1/matches/{match_id}/deltas", f"/v1/matches/{EXAMPLE_MATCH}/deltas?since_seq=x", auth),
            ("/v1/usage", "/v1/usage?minutes=5", auth),
            ("/v1/usage", "/v1/usage?minutes=0", auth),
            ("/v1/usage", "/v1/usage", {}),
            ("/v1/sports", "/v1/sports", {"X-API-Key": "bts_nope.nope"}),
            ("/v1/sports", "/v1/sports?api_key=garbage", {}),
        ]
        seen: set[tuple[str, int]] = set()
        for route, url, headers in cases:
            r = await c.get(url, headers=headers)
            check_response(doc, route, r)
            seen.add((route, r.status_code))
        for _ in range(40):  # the anonymous tier's 30 a minute run out
            r = await c.get("/v1/sports")
            if r.status_code == 429:
                break
        check_response(doc, "/v1/sports", r)
        seen.add(("/v1/sports", r.status_code))
    proc, url = start_edge(edge_env, tmp_path, REDIS_URL=f"redis://127.0.0.1:{free_port()}/0",
                           DATABASE_URL=BOGUS_DB.format(port=free_port()))
    await wait_http(url + "/healthz", proc)
    async with httpx.AsyncClient(base_url=url, timeout=20) as c:
        for route in REST_ROUTES[1:5]:
            r = await c.get(route.replace("{match_id}", EXAMPLE_MATCH))
            check_response(doc, route, r)
            seen.add((route, r.status_code))
    assert {s for _, s in seen} >= {200, 304, 400, 401, 404, 429, 503}


CHECKS = ["not_a_server_error", "status_code_conformance", "content_type_conformance",
          "response_headers_conformance", "response_schema_conformance", "negative_data_rejection"]


async def test_schemathesis_finds_nothing(edge_env, tmp_path):
    secret = await seed_for_contract(edge_env)
    cmd = [sys.executable, "-m", "schemathesis.cli", "run", edge_env.url + "/openapi.json",
           "--checks", ",".join(CHECKS),
           "--phases", "examples,coverage,fuzzing", "--max-examples", "50", "--seed", "7",
           "--workers", "2", "--request-timeout", "10",
           "--generation-database", "none", "--no-color",
           "--header", f"Authorization: Bearer {secret}"]
    proc = await asyncio.create_subprocess_exec(
        *cmd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, cwd=tmp_path,
        env={**os.environ, "SCHEMATHESIS_HOOKS": ""})
    out, _ = await asyncio.wait_for(proc.communicate(), 240)
    text = out.decode(errors="replace")
    assert proc.returncode == 0, text[-6000:]
    assert "6 selected / 6 total" in text and "Tested: 6" in text, text[-3000:]
    assert "No issues found" in text, text[-3000:]
