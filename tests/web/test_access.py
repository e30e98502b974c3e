"""Keys, tiers and limits across two edges, for REST, SSE and WebSocket."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import httpx
import pytest
import websockets

from tables.api_keys import KeyStore
from tests.support import SSE

MATCH = "football-apifootball-5"


@pytest.fixture
async def keys(edge_env):
    store = KeyStore(edge_env.pool, edge_env.settings.db_schema)
    out = {}
    for tier in ("free", "pro"):
        _, secret = await store.create(f"{tier}-key", tier)
        out[tier] = secret
    revoked, secret = await store.create("gone", "pro")
    await store.revoke(revoked.id)
    out["revoked"] = secret
    out["unknown"] = "bts_0123456789ab_" + "A" * 43
    out["malformed"] = "not-a-key"
    return out


ROUTES = ["/v1/sports", f"/v1/matches/{MATCH}", "/v1/usage"]


async def test_rest_matrix(edge_env, keys):
    from tests.web.conftest import snapshot

    await edge_env.store(snapshot(MATCH, 1))
    expected_status = {
        None: {"/v1/sports": 200, f"/v1/matches/{MATCH}": 200, "/v1/usage": 401},
        "free": {r: 200 for r in ROUTES},
        "pro": {r: 200 for r in ROUTES},
        "revoked": {r: 401 for r in ROUTES},
        "unknown": {r: 401 for r in ROUTES},
        "malformed": {r: 401 for r in ROUTES},
    }
    codes = {"revoked": "revoked_key", "unknown": "unknown_key", "malformed": "malformed_key"}
    async with httpx.AsyncClient() as c:
        for who, routes in expected_status.items():
            for route, status in routes.items():
                for i, base in enumerate(edge_env.urls):
                    headers = {}
                    if who is not None:
                        headers = ({"Authorization": f"Bearer {keys[who]}"} if i == 0
                                   else {"X-API-Key": keys[who]})
                    r = await c.get(base + route, headers=headers)
                    assert r.status_code == status, (who, route, r.text)
                    if who in codes:
                        assert r.json()["error"]["code"] == codes[who]
                    if status == 200:
                        assert "x-ratelimit-remaining" in r.headers


async def test_query_parameter_key_works_and_never_reaches_the_log(edge_env, keys):
    async with httpx.AsyncClient() as c:
        r = await c.get(edge_env.url + f"/v1/usage?api_key={keys['pro']}")
        assert r.status_code == 200 and r.json()["data"]["tier"] == "pro"
    await asyncio.sleep(0.3)
    log = edge_env.procs[0].log()
    assert "/v1/usage" in log
    secret = keys["pro"].split("_", 2)[2]
    assert secret not in log


async def test_rate_limit_is_shared_by_two_edges(edge_env, keys):
    second = await edge_env.start_edge()
    headers = {"X-API-Key": keys["free"]}  # 40 per minute
    async with httpx.AsyncClient() as c:
        results = await asyncio.gather(*(
            c.get((edge_env.url if i % 2 else second) + "/v1/sports", headers=headers)
            for i in range(60)))
    ok = [r for r in results if r.status_code == 200]
    limited = [r for r in results if r.status_code == 429]
    assert len(ok) == 40 and len(limited) == 20
    assert all("retry-after" in r.headers for r in limited)
    assert limited[0].json()["error"]["code"] == "rate_limited"


async def test_stream_tiers_and_limits(edge_env, keys):
    base = edge_env.url
    async with httpx.AsyncClient(timeout=10) as c:
        r = await c.get(base + f"/v1/stream?channels=private-match.{MATCH}",
                        headers={"X-API-Key": keys["free"]})
        assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden_channel"
        r = await c.get(base + "/v1/stream?channels=sport.football", headers={"X-API-Key": keys["revoked"]})
        assert r.status_code == 401
        async with SSE(c, base + f"/v1/stream?channels=private-match.{MATCH}",
                       headers={"X-API-Key": keys["pro"]}) as s:
            assert s.response.status_code == 200
        # the free tier holds two streams at once, across edges
        url = "/v1/stream?channels=sport.football&api_key=" + keys["free"]
        async with SSE(c, base + url) as a, SSE(c, base + url) as b:
            await a.next()
            await b.next()
            r = await c.get(base + url)
            assert r.status_code == 403 and r.json()["error"]["code"] == "too_many_streams"
        await asyncio.sleep(0.2)
        async with SSE(c, base + url) as again:
            assert again.response.status_code == 200


async def test_websocket_auth_and_tiers(edge_env, keys):
    ws = edge_env.url.replace("http", "ws") + "/v1/ws"
    async with websockets.connect(ws + "?api_key=" + keys["unknown"]) as conn:
        frame = json.loads(await conn.recv())
        assert frame["code"] == "unknown_key"
        with pytest.raises(websockets.ConnectionClosed) as info:
            await conn.recv()
        assert info.value.rcvd.code == 4001
    async with websockets.connect(ws, additional_headers={"X-API-Key": keys["free"]}) as conn:
        await conn.send(json.dumps({"op": "subscribe", "channels": [f"private-match.{MATCH}"]}))
        assert json.loads(await conn.recv())["code"] == "forbidden_channel"


async def test_revoking_a_key_closes_its_open_streams(edge_env, keys):
    store = KeyStore(edge_env.pool, edge_env.settings.db_schema)
    created, secret = await store.create("short-lived", "pro")
    ws = edge_env.url.replace("http", "ws") + "/v1/ws"
    async with websockets.connect(ws, additional_headers={"X-API-Key": secret}) as conn:
        await conn.send(json.dumps({"op": "subscribe", "channels": ["sport.football"]}))
        assert json.loads(await conn.recv())["type"] == "subscribed"
        await store.revoke(created.id)
        with pytest.raises(websockets.ConnectionClosed) as info:
            await asyncio.wait_for(conn.recv(), 10)
        assert info.value.rcvd.code == 4009
    async with httpx.AsyncClient() as c:
        r = await c.get(edge_env.url + "/v1/sports", headers={"X-API-Key": secret})
        assert r.status_code == 401


async def test_usage_is_counted_per_key(edge_env, keys):
    headers = {"X-API-Key": keys["pro"]}
    async with httpx.AsyncClient() as c:
        for _ in range(5):
            await c.get(edge_env.url + "/v1/sports", headers=headers)
        r = await c.get(edge_env.url + "/v1/usage", headers=headers)
    rows = r.json()["data"]["minutes"]
    assert sum(row["requests"] for row in rows) >= 5
    assert sum(row["bytes"] for row in rows) > 0


def test_keys_cli_creates_lists_and_revokes(settings, pg):
    import os

    env = {**os.environ, **settings.env()}

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "pipeline.cli", "keys", *args],
                              capture_output=True, text=True, env=env, timeout=60)

    created = json.loads(cli("create", "--name", "partner", "--tier", "pro", "--json").stdout)
    assert created["key"].startswith("bts_") and created["tier"] == "pro"
    listed = json.loads(cli("list", "--json").stdout)
    assert [k["id"] for k in listed] == [created["id"]]
    assert created["key"] not in cli("list", "--json").stdout
    assert cli("revoke", created["id"], "--json").returncode == 0
    assert json.loads(cli("list", "--json").stdout)[0]["revoked_at"]
    bad = cli("create", "--name", "x", "--tier", "platinum")
    assert bad.returncode == 2 and "platinum" in bad.stderr
    assert cli("revoke", "nothex").returncode == 2
