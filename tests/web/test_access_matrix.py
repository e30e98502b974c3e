"""Access control as a matrix, across two edges running the shipped tiers (web/tiers.toml).

Who: no key, a malformed key, an unknown key, a revoked key, and a key of every tier
of the file. What: every REST route (and the routes that take no API key), SSE,
the native WebSocket, and Pusher private and presence channels (auth through
``/pusher/auth`` and ``/broadcasting/auth``, then the subscription itself on the
other edge). Every cell's answer is worked out from the tier's configuration and
must be exactly that. Keys travel in every accepted way (``Authorization:
Bearer``, ``X-API-Key``, ``api_key``) and never appear in any edge log, which runs
at debug level. The limits: each tier's concurrent streams across both edges, a
REST rate limit within 5 % under concurrent load from both edges, and a revoked key
closing its open streams on both edges.

tests/web/test_access.py covers the CLI, usage and the basics with the test tiers;
this module does not repeat those.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import redis.asyncio as aioredis
import websockets
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from tables.api_keys import KeyStore
from tables.migrate import migrate
from tests.support import SSE, Proc, free_port, wait_http
from tests.web.conftest import EdgeEnv, delta, snapshot
from web.pusher import protocol
from web.tiers import load_tiers

MATCH = "football-apifootball-8080"
APP_KEY, APP_SECRET = "bts-guru-key", "bts-guru-secret"
TIERS = load_tiers()  # the shipped file
KEYED_TIERS = [name for name, t in TIERS.items() if name != "anonymous" and t.enabled]
BAD = {"malformed": "malformed_key", "unknown": "unknown_key", "revoked": "revoked_key"}
WHO = ["none", *BAD, *KEYED_TIERS]
STYLES = ("bearer", "x-api-key", "query")
CHANNELS = ["sport.football", "league.football.39", f"match.{MATCH}", f"private-match.{MATCH}",
            f"presence-match.{MATCH}"]


@dataclasses.dataclass
class Keys:
    full: dict[str, str]  # who → the key as sent
    ids: dict[str, str]  # who → key id (keyed tiers and revoked)


@pytest.fixture
async def env(settings, pg, redis_client, tmp_path: Path) -> AsyncIterator[EdgeEnv]:
    """Two edges on the shipped tiers, logging at debug level."""
    s = dataclasses.replace(settings, tiers_file="", log_level="debug")
    await migrate(pg, s.db_schema)
    admin = AIOKafkaAdminClient(bootstrap_servers=s.kafka_bootstrap)
    await admin.start()
    await admin.create_topics([NewTopic(s.topic("match-deltas"), num_partitions=4,
                                        replication_factor=1)])
    await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=s.kafka_bootstrap)
    await producer.start()
    pool = await asyncpg.create_pool(s.database_url, min_size=1, max_size=2)
    procs: list[Proc] = []
    urls: list[str] = []

    async def start_edge() -> str:
        port = free_port()
        p = Proc(f"edge-{len(procs)}", ["edge", "--port", str(port)], s, tmp_path / "logs")
        procs.append(p)
        url = f"http://127.0.0.1:{port}"
        await wait_http(url + "/healthz", p)
        urls.append(url)
        return url

    try:
        urls[:] = await asyncio.gather(start_edge(), start_edge())
        yield EdgeEnv(s, urls, procs, producer, pool, start_edge)
    finally:
        for p in procs:
            p.stop()
        await producer.stop()
        await pool.close()


@pytest.fixture
async def keys(env) -> Keys:
    store = KeyStore(env.pool, env.settings.db_schema)
    full: dict[str, str] = {}
    ids: dict[str, str] = {}
    for tier in KEYED_TIERS:
        rec, secret = await store.create(f"{tier}-user", tier)
        full[tier], ids[tier] = secret, rec.id
    rec, secret = await store.create("former", "enterprise")
    await store.revoke(rec.id)
    full["revoked"], ids["revoked"] = secret, rec.id
    full["unknown"] = "bts_0123456789ab_" + "Zk3" * 14 + "q"
    full["malformed"] = "bts_not-a-key_Qm9vYmFyU2VjcmV0"
    return Keys(full, ids)


def tier_of(who: str):
    return TIERS["anonymous"] if who == "none" else TIERS[who]


def credentials(keys: Keys, who: str, style: str) -> tuple[dict[str, str], str]:
    """Headers and a query string (``api_key=…`` or empty) carrying ``who``'s key."""
    if who == "none":
        return {}, ""
    key = keys.full[who]
    if style == "bearer":
        return {"Authorization": f"Bearer {key}"}, ""
    if style == "x-api-key":
        return {"X-API-Key": key}, ""
    return {}, "api_key=" + key


def with_query(url: str, query: str) -> str:
    if not query:
        return url
    return url + ("&" if "?" in url else "?") + query


def stream_client(keys: Keys, who: str) -> str:
    return "ip:127.0.0.1" if who == "none" else f"key:{keys.ids.get(who, '')}"


async def released(env: EdgeEnv, redis: aioredis.Redis, client: str) -> None:
    """Wait until no stream of ``client`` is counted (streams release asynchronously)."""
    key = f"{env.settings.redis_prefix}streams:{client}"
    for _ in range(100):
        if not await redis.zcard(key):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"streams of {client} still counted: {await redis.zrange(key, 0, -1)}")


# -- REST ---------------------------------------------------------------------------------


def rest_cases(now: float) -> list[tuple[str, Any]]:
    """(path, expectation for a working principal: status or a function of the tier)."""
    recent = int(now - 1800)
    old = int(now - 30 * 3600)

    def reach(tier) -> tuple[int, str | None]:
        return (200, None) if tier.history_hours * 3600 >= 30 * 3600 else (403, "beyond_history")

    def private(tier) -> tuple[int, str | None]:
        return (200, None) if tier.allows_channel(f"private-match.{MATCH}") else (
            403, "forbidden_channel")

    return [
        ("/v1/sports", (200, None)),
        (f"/v1/matches/{MATCH}", (200, None)),
        ("/v1/matches/football-apifootball-999999", (404, "not_found")),
        ("/v1/matches/NOT_AN_ID", (400, "bad_parameter")),
        ("/v1/usage", lambda tier: (401, "key_required") if tier.name == "anonymous" else (200, None)),
        (f"/v1/replay?channels=match.{MATCH}&from={recent}", (200, None)),
        (f"/v1/replay?channels=private-match.{MATCH}&from={recent}", private),
        (f"/v1/replay?channels=match.{MATCH}&from={old}", reach),
        ("/v1/stream?channels=sport.curling", (400, "bad_parameter")),
    ]


#: routes that take no API key: the same answer whatever key comes with the request
OPEN_ROUTES = [("/healthz", 200), ("/readyz", 200), ("/metrics", 200), ("/", 200),
               ("/admin/api/status", 404),  # no ADMIN_KEY: API keys never open it
               ("/apps/bts-guru/channels", 401)]  # the Pusher HTTP API wants the app's signature


async def check_rest(env: EdgeEnv, keys: Keys, c: httpx.AsyncClient) -> int:
    cells = 0
    styles = itertools.cycle(STYLES)
    for who in WHO:
        for path, want in rest_cases(time.time()):
            for edge, base in enumerate(env.urls):
                style = next(styles)
                headers, query = credentials(keys, who, style)
                r = await c.get(with_query(base + path, query), headers=headers)
                if who in BAD:
                    status, code = 401, BAD[who]
                else:
                    status, code = want(tier_of(who)) if callable(want) else want
                assert r.status_code == status, (who, style, edge, path, r.status_code, r.text[:300])
                if code is not None:
                    assert r.json()["error"]["code"] == code, (who, path, r.text[:300])
                if who in BAD and not path.startswith("/v1/stream"):
                    assert r.headers.get("www-authenticate") == "Bearer", path
                if who not in BAD and path.startswith("/v1/") and not path.startswith("/v1/stream"):
                    assert r.headers["x-ratelimit-limit"] == str(tier_of(who).rest_per_minute), path
                    assert int(r.headers["x-ratelimit-remaining"]) >= 0
                    assert "x-ratelimit-reset" in r.headers
                if path == "/v1/usage" and status == 200:
                    data = r.json()["data"]
                    assert (data["key_id"], data["tier"]) == (keys.ids[who], who)
                cells += 1
        for path, status in OPEN_ROUTES:
            for edge, base in enumerate(env.urls):
                headers, query = credentials(keys, who, next(styles))
                r = await c.get(with_query(base + path, query), headers=headers)
                assert r.status_code == status, (who, edge, path, r.status_code, r.text[:200])
                cells += 1
    return cells


# -- SSE and WebSocket ----------------------------------------------------------------


async def check_sse(env: EdgeEnv, keys: Keys, c: httpx.AsyncClient, redis: aioredis.Redis) -> int:
    cells = 0
    styles = itertools.cycle(STYLES)
    for who in WHO:
        for i, channel in enumerate(CHANNELS):
            base = env.urls[i % 2]
            headers, query = credentials(keys, who, next(styles))
            url = with_query(f"{base}/v1/stream?channels={channel}", query)
            async with SSE(c, url, headers=headers) as s:
                status = s.response.status_code
                if who in BAD:
                    await s.response.aread()
                    assert status == 401 and s.response.json()["error"]["code"] == BAD[who], (who, channel)
                elif tier_of(who).allows_channel(channel):
                    assert status == 200, (who, channel, status)
                    assert (await s.next(10))["comment"] == "connected"
                else:
                    await s.response.aread()
                    assert status == 403, (who, channel, status)
                    assert s.response.json()["error"]["code"] == "forbidden_channel"
            await released(env, redis, stream_client(keys, who))
            cells += 1
    return cells


async def check_ws(env: EdgeEnv, keys: Keys, redis: aioredis.Redis) -> int:
    cells = 0
    styles = itertools.cycle(STYLES)
    for n, who in enumerate(WHO):
        headers, query = credentials(keys, who, next(styles))
        url = with_query(env.urls[n % 2].replace("http", "ws") + "/v1/ws", query)
        async with websockets.connect(url, additional_headers=headers) as ws:
            if who in BAD:
                frame = json.loads(await asyncio.wait_for(ws.recv(), 10))
                assert frame == {"type": "error", "code": BAD[who], "message": frame["message"]}
                with pytest.raises(websockets.ConnectionClosed) as info:
                    await asyncio.wait_for(ws.recv(), 10)
                assert info.value.rcvd.code == 4001, who
                cells += 1
                continue
            for channel in CHANNELS:
                await ws.send(json.dumps({"op": "subscribe", "channels": [channel]}))
                frame = json.loads(await asyncio.wait_for(ws.recv(), 10))
                if tier_of(who).allows_channel(channel):
                    assert frame["type"] == "subscribed" and frame["channels"] == [channel], (who, frame)
                else:
                    assert (frame["type"], frame["code"]) == ("error", "forbidden_channel"), (who, frame)
                cells += 1
        await released(env, redis, stream_client(keys, who))
    return cells


# -- Pusher -----------------------------------------------------------------------------


class PusherConn:
    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.socket_id = ""

    @classmethod
    async def open(cls, base: str) -> PusherConn:
        ws = await websockets.connect(base.replace("http", "ws") + f"/app/{APP_KEY}?protocol=7")
        conn = cls(ws)
        frame = await conn.expect("pusher:connection_established")
        conn.socket_id = json.loads(frame["data"])["socket_id"]
        return conn

    async def expect(self, *events: str, channel: str | None = None, timeout: float = 10.0) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            frame = json.loads(await asyncio.wait_for(self.ws.recv(), deadline - time.monotonic()))
            if frame["event"] in events and (channel is None or frame.get("channel") == channel):
                return frame

    async def send(self, event: str, data: Any) -> None:
        await self.ws.send(json.dumps({"event": event, "data": data}))


async def check_pusher(env: EdgeEnv, keys: Keys, c: httpx.AsyncClient) -> int:
    cells = 0
    conns = [await PusherConn.open(base) for base in env.urls]
    try:
        styles = itertools.cycle(STYLES)
        for who in WHO:
            for endpoint in ("/pusher/auth", "/broadcasting/auth"):
                for channel in (f"private-match.{MATCH}", f"presence-match.{MATCH}"):
                    for edge in (0, 1):
                        conn = conns[1 - edge]  # signed on one edge, used on the other
                        style = next(styles)
                        headers, query = credentials(keys, who, style)
                        url = with_query(env.urls[edge] + endpoint, query)
                        fields = {"socket_id": conn.socket_id, "channel_name": channel}
                        if style == "bearer":
                            r = await c.post(url, json=fields, headers=headers)
                        else:
                            r = await c.post(url, data=fields, headers=headers)
                        cells += 1
                        if who in BAD or who == "none":
                            code = BAD.get(who, "key_required")
                            assert (r.status_code, r.json()["error"]["code"]) == (401, code), (who, r.text)
                            continue
                        if not tier_of(who).allows_channel(channel):
                            assert r.status_code == 403, (who, channel, r.text)
                            assert r.json()["error"]["code"] == "forbidden_channel"
                            continue
                        assert r.status_code == 200, (who, channel, r.text)
                        body = r.json()
                        info = json.loads(body["channel_data"])
                        assert info == {"user_id": keys.ids[who],
                                        "user_info": {"name": f"{who}-user", "tier": who}}
                        assert body["auth"] == protocol.channel_auth(
                            APP_KEY, APP_SECRET, conn.socket_id, channel, body["channel_data"])
                        await conn.send("pusher:subscribe", {"channel": channel, **body})
                        ok = await conn.expect("pusher_internal:subscription_succeeded",
                                               "pusher:subscription_error", channel=channel)
                        assert ok["event"] == "pusher_internal:subscription_succeeded", ok
                        if channel.startswith("presence-"):
                            assert keys.ids[who] in json.loads(ok["data"])["presence"]["ids"]
                        await conn.send("pusher:unsubscribe", {"channel": channel})
        # subscriptions the edge must refuse: no auth, another socket's auth, a forged one
        conn = conns[0]
        signed = await c.post(env.urls[1] + "/pusher/auth",
                              data={"socket_id": conns[1].socket_id,
                                    "channel_name": f"private-match.{MATCH}"},
                              headers={"X-API-Key": keys.full[KEYED_TIERS[-1]]})
        assert signed.status_code == 200
        for data in ({"channel": f"private-match.{MATCH}"},
                     {"channel": f"presence-match.{MATCH}"},
                     {"channel": f"private-match.{MATCH}", **signed.json()},
                     {"channel": f"private-match.{MATCH}", "auth": f"{APP_KEY}:{'0' * 64}"}):
            await conn.send("pusher:subscribe", data)
            err = await conn.expect("pusher:subscription_error", "pusher_internal:subscription_succeeded",
                                    channel=data["channel"])
            assert err["event"] == "pusher:subscription_error", (data, err)
            data = err["data"] if isinstance(err["data"], dict) else json.loads(err["data"])
            assert data["status"] == 401
            cells += 1
        await conn.send("pusher:ping", {})
        assert (await conn.expect("pusher:pong"))["event"] == "pusher:pong"  # still connected
        # the auth endpoints' own refusals
        key = keys.full[KEYED_TIERS[-1]]
        for fields, status in (({"socket_id": "1.2", "channel_name": "sport.football"}, 400),
                               ({"socket_id": "1.2", "channel_name": f"match.{MATCH}"}, 400),
                               ({"socket_id": "nope", "channel_name": f"private-match.{MATCH}"}, 400),
                               ({"socket_id": "1.2", "channel_name": "private-orders"}, 403),
                               ({"socket_id": "1.2", "channel_name": "presence-match.curling-x-1"}, 403)):
            for endpoint in ("/pusher/auth", "/broadcasting/auth"):
                r = await c.post(env.urls[0] + endpoint, data=fields, params={"api_key": key})
                assert r.status_code == status, (fields, r.text)
                cells += 1
    finally:
        for conn in conns:
            await conn.ws.close()
    return cells


# -- the matrix ---------------------------------------------------------------------------


def secrets_of(keys: Keys) -> list[str]:
    out = []
    for key in keys.full.values():
        out.append(key)
        out.append(key.split("_", 2)[2])  # bts_{id}_{secret}; the secret may hold '_' too
    return out


async def test_the_access_matrix_across_two_edges(env, keys, redis_client):
    await env.store(snapshot(MATCH, 1))
    await env.send(delta(MATCH, 1))
    async with httpx.AsyncClient(timeout=20) as c:
        cells = await check_rest(env, keys, c)
        cells += await check_sse(env, keys, c, redis_client)
        cells += await check_ws(env, keys, redis_client)
        cells += await check_pusher(env, keys, c)
    assert cells > 300
    # keys went in headers, query parameters and auth requests; none reached a log line
    await asyncio.sleep(0.5)
    for proc in env.procs:
        log = proc.log()
        assert "/v1/sports" in log and "/pusher/auth" in log and "/v1/ws" in log, proc.name
        assert "api_key=***" in log  # the query parameters were logged, redacted
        for secret in secrets_of(keys):
            assert secret not in log, (proc.name, secret[:12])


async def test_revoking_a_key_closes_its_streams_on_both_edges(env, keys, redis_client):
    store = KeyStore(env.pool, env.settings.db_schema)
    rec, secret = await store.create("leaving", "pro")
    ws_url = env.urls[0].replace("http", "ws") + "/v1/ws?api_key=" + secret
    async with httpx.AsyncClient(timeout=httpx.Timeout(10, read=30)) as c, \
            SSE(c, env.urls[1] + f"/v1/stream?channels=private-match.{MATCH}",
                headers={"Authorization": f"Bearer {secret}"}) as sse, \
            websockets.connect(ws_url) as ws:
        assert (await sse.next())["comment"] == "connected"
        await ws.send(json.dumps({"op": "subscribe", "channels": [f"presence-match.{MATCH}"]}))
        assert json.loads(await ws.recv())["type"] == "subscribed"
        pusher = await PusherConn.open(env.urls[1])
        r = await c.post(env.urls[0] + "/broadcasting/auth", headers={"X-API-Key": secret},
                         data={"socket_id": pusher.socket_id, "channel_name": f"private-match.{MATCH}"})
        await pusher.send("pusher:subscribe", {"channel": f"private-match.{MATCH}", **r.json()})
        await pusher.expect("pusher_internal:subscription_succeeded")
        revoked_at = time.monotonic()
        await store.revoke(rec.id)
        with pytest.raises(websockets.ConnectionClosed) as info:
            while True:
                await asyncio.wait_for(ws.recv(), 10)
        assert info.value.rcvd.code == 4009
        with pytest.raises(websockets.ConnectionClosed) as info:
            while True:
                await asyncio.wait_for(pusher.ws.recv(), 10)
        assert info.value.rcvd.code == 4009
        with pytest.raises(EOFError):
            while True:
                await sse.next(10)
        assert time.monotonic() - revoked_at < 10
    for base in env.urls:
        async with httpx.AsyncClient() as c:
            r = await c.get(base + "/v1/sports", headers={"X-API-Key": secret})
            assert (r.status_code, r.json()["error"]["code"]) == (401, "revoked_key")


# -- limits ---------------------------------------------------------------------------------


async def open_stream(env: EdgeEnv, n: int, headers: dict[str, str], c: httpx.AsyncClient,
                      stack: contextlib.AsyncExitStack) -> tuple[str, int | str]:
    """Open stream number ``n`` (SSE and WebSocket in turn, the two edges in turn)."""
    base = env.urls[n % 2]
    if n % 4 < 2:
        s = await stack.enter_async_context(SSE(c, base + "/v1/stream?channels=sport.football",
                                                headers=headers))
        if s.response.status_code != 200:
            await s.response.aread()
            return "sse", s.response.json()["error"]["code"]
        await s.next(10)
        return "sse", 200
    ws = await stack.enter_async_context(websockets.connect(
        base.replace("http", "ws") + "/v1/ws", additional_headers=headers))
    try:
        await ws.send(json.dumps({"op": "ping"}))
        frame = json.loads(await asyncio.wait_for(ws.recv(), 10))
    except websockets.ConnectionClosed as exc:
        return "ws", exc.rcvd.code
    if frame.get("code") == "too_many_streams":
        with pytest.raises(websockets.ConnectionClosed) as info:
            await asyncio.wait_for(ws.recv(), 10)
        return "ws", info.value.rcvd.code
    assert frame == {"type": "pong"}
    return "ws", 200


async def test_stream_limits_and_rate_limits_hold_across_two_edges(env, keys, redis_client):
    # every tier's concurrent streams, spread over both edges and both transports
    async with httpx.AsyncClient(timeout=httpx.Timeout(10, read=30)) as c:
        for who in ["none", *KEYED_TIERS]:
            limit = tier_of(who).streams
            if limit > 60:
                continue  # the same check; too many sockets for a test
            headers, _ = credentials(keys, who, "x-api-key")
            async with contextlib.AsyncExitStack() as stack:
                for n in range(limit):
                    assert (await open_stream(env, n, headers, c, stack))[1] == 200, (who, n)
                for n in (limit, limit + 2):  # one SSE, one WebSocket
                    kind, answer = await open_stream(env, n, headers, c, stack)
                    assert answer == ("too_many_streams" if kind == "sse" else 4029), (who, kind, answer)
            await released(env, redis_client, stream_client(keys, who))
            async with contextlib.AsyncExitStack() as stack:  # a slot is free again
                assert (await open_stream(env, 0, headers, c, stack))[1] == 200, who

    # REST: a burst from both edges at once lets through the tier's limit, within 5 %
    for who in ["none", "free"]:
        limit = tier_of(who).rest_per_minute
        headers, _ = credentials(keys, who, "bearer")
        total = limit * 2
        limits = httpx.Limits(max_connections=16)
        async with httpx.AsyncClient(timeout=30, limits=limits) as c0, \
                httpx.AsyncClient(timeout=30, limits=limits) as c1:
            started = time.monotonic()
            results = await asyncio.gather(*(
                (c0, c1)[i % 2].get(env.urls[i % 2] + "/v1/sports", headers=headers)
                for i in range(total)))
            elapsed = time.monotonic() - started
        ok = sum(r.status_code == 200 for r in results)
        limited = [r for r in results if r.status_code == 429]
        assert ok + len(limited) == total
        refill = elapsed * limit / 60  # the bucket refills while the burst runs
        assert limit * 0.95 <= ok <= limit * 1.05 + refill, (who, ok, limit, elapsed)
        served_by = {0: 0, 1: 0}
        for i, r in enumerate(results):
            served_by[i % 2] += r.status_code == 200
        assert min(served_by.values()) > 0, served_by  # both edges drew on the same budget
        for r in limited:
            assert int(r.headers["retry-after"]) >= 1
            assert r.headers["x-ratelimit-remaining"] == "0"
            assert r.json()["error"]["code"] == "rate_limited"
