"""The edge for real: REST, SSE and WebSocket against the broker, Redis and Postgres."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import signal
import time

import httpx
import pytest
import websockets
from prometheus_client.parser import text_string_to_metric_families

from tables import codec
from tests.support import SSE, Proc, free_port, processes, wait_http
from tests.web.conftest import delta, snapshot

M1 = "football-apifootball-101"
M2 = "football-apifootball-102"
HOCKEY = "hockey-apihockey-7"


async def test_rest_reads_redis_then_postgres_with_etags(edge_env, redis_client):
    snap = snapshot(M1, 3)
    await edge_env.store(snap)
    async with httpx.AsyncClient(base_url=edge_env.url) as c:
        r = await c.get(f"/v1/matches/{M1}")
        assert r.status_code == 200 and r.headers["x-cache"] == "hit"
        assert r.json()["data"]["seq"] == 3
        assert r.headers["x-ratelimit-limit"] == "30"
        etag = r.headers["etag"]
        assert (await c.get(f"/v1/matches/{M1}", headers={"If-None-Match": etag})).status_code == 304
        await redis_client.delete(f"{edge_env.settings.redis_prefix}match:{M1}")
        r = await c.get(f"/v1/matches/{M1}")
        assert r.status_code == 200 and r.headers["x-cache"] == "miss"
        missing = await c.get("/v1/matches/football-apifootball-999")
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
        bad = await c.get("/v1/matches/../etc")
        assert bad.status_code in (400, 404)
        bad = await c.get("/v1/matches/NOT_AN_ID")
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "id"
        assert (await c.get("/v1/sports")).json()["data"][0] == {"id": "football"}


async def test_sse_streams_live_deltas_with_cursors(edge_env):
    async with httpx.AsyncClient(timeout=30) as c, SSE(c, edge_env.url + "/v1/stream?channels=league.football.39") as s:
        assert s.response.status_code == 200
        assert (await s.next())["comment"] == "connected"
        for seq in (1, 2, 3):
            await edge_env.send(delta(M1, seq))
        await edge_env.send(delta(M2, 1, league="40"))  # another league: not for this client
        await edge_env.send(delta(M1, 2))  # a redelivery: dropped
        await edge_env.send(delta(M1, 4))
        got = await s.events("delta", 4)
        assert [codec.loads(e["data"])["seq"] for e in got] == [1, 2, 3, 4]
        assert all(e["id"] for e in got)


async def resume_check(edge_env, resume_url: str) -> None:
    url = "/v1/stream?channels=sport.football"
    async with httpx.AsyncClient(timeout=30) as c:
        async with SSE(c, edge_env.url + url) as s:
            await s.next()
            for seq in (1, 2):
                await edge_env.send(delta(M1, seq))
            seen = await s.events("delta", 2)
        cursor = seen[-1]["id"]
        # while the client is away
        for seq in (3, 4, 5):
            await edge_env.send(delta(M1, seq))
        await edge_env.send(delta(M2, 1))
        await edge_env.send(delta(HOCKEY, 1, league="57", sport="hockey"))  # not subscribed
        await asyncio.sleep(0.5)
        async with SSE(c, resume_url + url, headers={"Last-Event-ID": cursor}) as s:
            await s.next()
            missed = await s.events("delta", 4)
            assert [(codec.loads(e["data"])["match_id"], codec.loads(e["data"])["seq"]) for e in missed
                    if codec.loads(e["data"])["match_id"] == M1] == [(M1, 3), (M1, 4), (M1, 5)]
            assert {codec.loads(e["data"])["match_id"] for e in missed} == {M1, M2}
            await edge_env.send(delta(M1, 6))
            live = await s.events("delta", 1)
            assert codec.loads(live[0]["data"])["seq"] == 6


async def test_resume_on_the_same_edge_replays_exactly_what_was_missed(edge_env):
    await resume_check(edge_env, edge_env.url)


async def test_resume_on_a_second_edge(edge_env):
    second = await edge_env.start_edge()
    await resume_check(edge_env, second)


async def test_an_unknown_cursor_epoch_gets_reset_and_snapshots(edge_env):
    await edge_env.store(snapshot(M1, 1))
    async with httpx.AsyncClient(timeout=30) as c:
        async with SSE(c, edge_env.url + f"/v1/stream?channels=match.{M1}",
                       headers={"Last-Event-ID": "99.0-0-0-0"}) as s:
            await s.next()
            ev = await s.next()
            assert ev["event"] == "reset"
            snap = await s.next()
            assert snap["event"] == "snapshot" and codec.loads(snap["data"])["id"] == M1


async def test_bad_sse_requests_get_400(edge_env):
    async with httpx.AsyncClient(base_url=edge_env.url) as c:
        for q in ["", "?channels=", "?channels=sport.curling", "?channels=" + ",".join(
                f"match.football-apifootball-{i}" for i in range(60)), "?channels=a%00b"]:
            r = await c.get("/v1/stream" + q)
            assert r.status_code == 400, q
            assert r.json()["error"]["code"] == "bad_parameter"


async def test_websocket_subscribe_deltas_and_bad_frames(edge_env):
    ws_url = edge_env.url.replace("http", "ws") + "/v1/ws"
    async with websockets.connect(ws_url) as ws:
        for bad in ["not json", "[1]", json.dumps({"op": "dance"}), "x" * 20_000,
                    json.dumps({"op": "subscribe", "channels": ["sport.curling"]})]:
            await ws.send(bad)
            frame = json.loads(await asyncio.wait_for(ws.recv(), 10))
            assert frame["type"] == "error", bad[:30]
        await ws.send(json.dumps({"op": "ping"}))
        assert json.loads(await ws.recv()) == {"type": "pong"}
        await ws.send(json.dumps({"op": "subscribe", "channels": [f"match.{M2}"]}))
        sub = json.loads(await ws.recv())
        assert sub["type"] == "subscribed"
        await edge_env.send(delta(M1, 1))
        await edge_env.send(delta(M2, 1))
        frame = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert frame["type"] == "delta" and frame["data"]["match_id"] == M2 and frame["cursor"]
        cursor = frame["cursor"]
    await edge_env.send(delta(M2, 2))
    await edge_env.send(delta(M2, 3))
    async with websockets.connect(ws_url) as ws:
        await ws.send(json.dumps({"op": "subscribe", "channels": [f"match.{M2}"], "cursor": cursor}))
        frames = [json.loads(await asyncio.wait_for(ws.recv(), 10)) for _ in range(3)]
        assert frames[0]["type"] == "subscribed"
        assert [f["data"]["seq"] for f in frames[1:]] == [2, 3]


async def test_a_bad_client_does_not_delay_the_others(edge_env):
    ws_url = edge_env.url.replace("http", "ws") + "/v1/ws"
    async with websockets.connect(ws_url) as flooder, websockets.connect(ws_url) as good:
        await good.send(json.dumps({"op": "subscribe", "channels": ["sport.football"]}))
        await good.recv()

        async def flood() -> None:
            for _ in range(15):
                await flooder.send("{bad")
                await asyncio.sleep(0)

        await flood()
        await edge_env.send(delta(M1, 1))
        frame = json.loads(await asyncio.wait_for(good.recv(), 10))
        assert frame["data"]["seq"] == 1


async def test_idle_streams_get_heartbeats(edge_env, tmp_path):
    settings = dataclasses.replace(edge_env.settings, edge_heartbeat=1)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with processes(Proc("edge-heartbeat", ["edge", "--port", str(port)], settings, tmp_path / "hb")):
        await wait_http(url + "/healthz")
        async with httpx.AsyncClient(timeout=30) as c, SSE(c, url + "/v1/stream?channels=sport.hockey") as s:
            assert (await s.next())["comment"] == "connected"
            started = asyncio.get_running_loop().time()
            assert await s.next(timeout=5) == {"comment": "ping"}
            await edge_env.send(delta(M1, 1))  # traffic on another channel: still idle here
            assert await s.next(timeout=5) == {"comment": "ping"}
            assert asyncio.get_running_loop().time() - started >= 1.5
        async with httpx.AsyncClient(timeout=30) as c, SSE(c, url + "/v1/stream?channels=sport.football") as s:
            await s.next()
            seen: list[dict[str, str]] = []

            async def busy() -> None:
                for seq in range(2, 40):  # a delta every 0.1 s: never idle for a second
                    await edge_env.send(delta(M1, seq))
                    await asyncio.sleep(0.1)

            sender = asyncio.create_task(busy())
            while not sender.done():
                seen.append(await s.next(timeout=5))
            await sender
            assert {"comment": "ping"} in seen and any(e.get("event") == "delta" for e in seen)
        async with websockets.connect(url.replace("http", "ws") + "/v1/ws") as ws:
            await ws.send(json.dumps({"op": "subscribe", "channels": ["sport.hockey"]}))
            assert json.loads(await ws.recv())["type"] == "subscribed"
            assert json.loads(await asyncio.wait_for(ws.recv(), 5)) == {"type": "ping"}


async def test_snapshot_kept_in_memory_until_a_newer_delta(edge_env, redis_client, tmp_path):
    settings = dataclasses.replace(edge_env.settings, edge_snapshot_cache_ms=60_000)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    key = f"{settings.redis_prefix}match:{M1}"
    await edge_env.store(snapshot(M1, 4))
    with processes(Proc("edge-kept", ["edge", "--port", str(port)], settings, tmp_path / "kept")):
        await wait_http(url + "/healthz")
        async with httpx.AsyncClient(base_url=url, timeout=10) as c:
            r = await c.get(f"/v1/matches/{M1}")
            assert r.headers["x-cache"] == "hit" and r.json()["data"]["seq"] == 4
            # Redis changes without a delta: the edge keeps answering from memory
            await redis_client.hset(key, "json", codec.dumps(snapshot(M1, 5)))
            r = await c.get(f"/v1/matches/{M1}")
            assert r.headers["x-cache"] == "hit" and r.json()["data"]["seq"] == 4
            # a newer delta through the edge's feed: the kept copy is no longer served
            await edge_env.send(delta(M1, 5))
            for _ in range(100):
                r = await c.get(f"/v1/matches/{M1}")
                if r.json()["data"]["seq"] == 5:
                    break
                await asyncio.sleep(0.1)
            assert r.json()["data"]["seq"] == 5 and r.headers["etag"] == f'W/"{M1}:5"'
            # and no delta older than the kept copy makes it read Redis again
            await redis_client.hset(key, "json", codec.dumps(snapshot(M1, 6)))
            await edge_env.send(delta(M1, 3))
            await asyncio.sleep(1.0)
            assert (await c.get(f"/v1/matches/{M1}")).json()["data"]["seq"] == 5


async def test_sse_head_opens_no_stream_and_shutdown_ends_open_streams(edge_env, tmp_path):
    from tests.web.test_monitoring import sample

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = Proc("edge-stop", ["edge", "--port", str(port)], edge_env.settings, tmp_path / "stop")
    with processes(proc):
        await wait_http(url + "/healthz")
        async with httpx.AsyncClient(timeout=10) as c:
            head = await c.head(url + "/v1/stream?channels=sport.football")
            assert head.status_code == 200 and head.content == b""
            assert head.headers["content-type"].startswith("text/event-stream")
            metrics = (await c.get(url + "/metrics")).text
            assert sample(metrics, "bts_clients", transport="sse", tier="anonymous") == 0
            async with SSE(c, url + "/v1/stream?channels=sport.football") as s:
                assert (await s.next())["comment"] == "connected"
                started = time.monotonic()
                proc.process.send_signal(signal.SIGTERM)
                with pytest.raises(EOFError):
                    await s.next(timeout=10)  # the stream ends cleanly
                assert time.monotonic() - started < 3, "shutdown waited for the open stream"
        # uvicorn raises the signal again once it has stopped
        assert await asyncio.to_thread(proc.process.wait, 10) in (0, -signal.SIGTERM)
    assert "ERROR" not in proc.log()


async def test_websockets_are_not_compressed_even_when_the_client_offers_it(edge_env):
    ws_url = edge_env.url.replace("http", "ws") + "/v1/ws"
    async with websockets.connect(ws_url, compression="deflate") as ws:
        assert ws.request.headers.get("Sec-WebSocket-Extensions", "").startswith("permessage-deflate")
        assert "Sec-WebSocket-Extensions" not in ws.response.headers
        await ws.send(json.dumps({"op": "ping"}))
        assert json.loads(await asyncio.wait_for(ws.recv(), 5)) == {"type": "pong"}


async def test_websocket_burst_arrives_whole_and_in_order(edge_env):
    ws_url = edge_env.url.replace("http", "ws") + "/v1/ws"
    async with websockets.connect(ws_url) as ws:
        await ws.send(json.dumps({"op": "subscribe", "channels": [f"match.{M2}"]}))
        assert json.loads(await ws.recv())["type"] == "subscribed"
        for seq in range(1, 151):  # more than one batch queued while the client is not reading
            await edge_env.producer.send(edge_env.settings.topic("match-deltas"),
                                         codec.dumps(delta(M2, seq)), key=M2.encode())
        await edge_env.producer.flush()
        await asyncio.sleep(1.0)
        seqs = []
        while len(seqs) < 150:
            frame = json.loads(await asyncio.wait_for(ws.recv(), 10))
            assert frame["type"] == "delta"
            seqs.append(frame["data"]["seq"])
        assert seqs == list(range(1, 151))


async def test_streams_get_the_cors_headers_and_request_counts_of_every_route(edge_env):
    """Streams skip the middleware stack: what it gives other routes they must still get."""
    origin = {"Origin": "https://scores.example"}
    cors = ("access-control-allow-origin", "access-control-expose-headers", "vary")
    async with httpx.AsyncClient(base_url=edge_env.url, timeout=10) as c:
        rest = await c.get("/v1/sports", headers=origin)
        assert rest.headers["access-control-allow-origin"] == "*"
        bad = await c.get("/v1/stream?channels=sport.curling", headers=origin)
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "channels"
        async with c.stream("GET", "/v1/stream?channels=sport.football", headers=origin) as sse:
            assert sse.status_code == 200
            assert sse.headers["content-type"].startswith("text/event-stream")
            for name in cors:
                assert sse.headers.get(name) == rest.headers.get(name) == bad.headers.get(name), name
        plain = await c.get("/v1/stream?channels=sport.curling")
        assert "access-control-allow-origin" not in plain.headers
        preflight = await c.options("/v1/stream", headers={
            **origin, "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "Last-Event-ID"})
        assert preflight.status_code == 200
        assert "last-event-id" in preflight.headers["access-control-allow-headers"].lower()
        assert (await c.post("/v1/stream?channels=sport.football")).status_code == 405
        text = (await c.get("/metrics")).text
    counted = {line.split(" ")[0] for line in text.splitlines()
               if line.startswith('bts_http_requests_total{route="/v1/stream"')}
    assert any('status="200"' in line for line in counted), text
    assert any('status="400"' in line for line in counted), text


async def test_deltas_written_straight_from_the_hub_arrive_once_in_order_and_are_counted(
        edge_env, redis_client):
    """While a stream's writer waits, the hub writes deltas to the socket itself; a burst
    the socket cannot take at once goes through the queue. Either way each delta arrives
    once, in order, and its bytes count in the key's usage."""
    from tables.api_keys import KeyStore

    _, secret = await KeyStore(edge_env.pool, edge_env.settings.db_schema).create("direct", "pro")
    key = {"X-API-Key": secret}
    ws_url = edge_env.url.replace("http", "ws") + "/v1/ws"
    topic = edge_env.settings.topic("match-deltas")
    async with httpx.AsyncClient(timeout=30) as c, \
            SSE(c, edge_env.url + "/v1/stream?channels=sport.football", headers=key) as s, \
            websockets.connect(ws_url, additional_headers=key) as ws:
        assert (await s.next())["comment"] == "connected"
        await ws.send(json.dumps({"op": "subscribe", "channels": ["sport.football"]}))
        assert json.loads(await ws.recv())["type"] == "subscribed"
        for seq in range(1, 11):  # one at a time: both writers idle
            await edge_env.send(delta(M1, seq))
            await asyncio.sleep(0.05)
        for seq in range(11, 311):  # a burst, more than a socket buffer takes at once
            await edge_env.producer.send(topic, codec.dumps(delta(M1, seq, detail_pad="x" * 2000)),
                                         key=M1.encode())
        await edge_env.producer.flush()
        events = await s.events("delta", 310)
        frames = [await asyncio.wait_for(ws.recv(), 10) for _ in range(310)]
    assert [codec.loads(e["data"])["seq"] for e in events] == list(range(1, 311))
    assert [json.loads(f)["data"]["seq"] for f in frames] == list(range(1, 311))
    assert len({e["id"] for e in events}) == 310
    assert [json.loads(f)["cursor"] for f in frames] == [e["id"] for e in events]
    sent = sum(len(f"id: {e['id']}\nevent: delta\ndata: {e['data']}\n\n".encode()) for e in events)
    sent += sum(len(f) for f in frames)
    async with httpx.AsyncClient(timeout=10) as c:
        rows = (await c.get(edge_env.url + "/v1/usage", headers=key)).json()["data"]["minutes"]
    assert sum(row["bytes"] for row in rows) == sent

    async with httpx.AsyncClient(timeout=10) as c:
        text = (await c.get(edge_env.url + "/metrics")).text
    paths = {labels["path"]: value for labels, value in (
        (s.labels, s.value) for f in text_string_to_metric_families(text) for s in f.samples
        if s.name == "bts_deliveries_total")}
    assert paths["direct"] >= 20, paths  # at least the ten one at a time, to both clients
    assert paths["direct"] + paths["queue"] == 620, paths

    async def direct_writes() -> int:
        raw = await redis_client.hget(f"{edge_env.settings.redis_prefix}edges",
                                      next(iter(await redis_client.hkeys(
                                          f"{edge_env.settings.redis_prefix}edges"))))
        return json.loads(raw)["direct"]

    deadline = time.monotonic() + 15
    while (n := await direct_writes()) < paths["direct"]:  # the heartbeat says the same
        assert time.monotonic() < deadline, n
        await asyncio.sleep(0.5)
