"""The Pusher protocol for real: pusher-js 8 and Laravel Echo 2 (Node) against edge processes.

The npm clients are installed into ``tests/web/js`` (``npm ci``) when missing; each
client runs ``tests/web/js/client.mjs``, takes commands on stdin and prints what it
sees as JSON lines.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import asyncpg
import httpx
import pytest
import websockets
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from pipeline.settings import Settings
from tables import codec
from tables.api_keys import KeyStore
from tables.migrate import migrate
from tests.support import Proc, free_port, wait_http
from tests.web.conftest import delta
from web.pusher import protocol

JS = Path(__file__).parent / "js"
KEY = "bts-guru-key"
SECRET = "bts-guru-secret"
APP_ID = "bts-guru"
M1 = "football-apifootball-701"
M2 = "football-apifootball-702"

TIERS = """
[anonymous]
enabled = true
rest_per_minute = 30
streams = 3
channels = ["public"]
history_hours = 1

[free]
rest_per_minute = 100
streams = 5
channels = ["public"]
history_hours = 24

[pro]
rest_per_minute = 1000
streams = 20
channels = ["public", "private", "presence"]
history_hours = 168
client_events = true
"""


# -- signing (no network) -------------------------------------------------------

def test_signatures_match_the_examples_of_the_pusher_documentation():
    body = b'{"name":"foo","channels":["project-3"],"data":"{\\"some\\":\\"data\\"}"}'
    assert protocol.body_md5(body) == "ec365a775a4cd0599faeb73354201b6f"
    params = {"auth_key": "278d425bdf160c739803", "auth_timestamp": "1353088179",
              "auth_version": "1.0", "body_md5": protocol.body_md5(body)}
    assert protocol.sign("7ad3773142a6692b25b8", protocol.string_to_sign(
        "POST", "/apps/3/events", params)) == (
        "da454824c97ba181a32ccc17a72625ba02771f50b50e1e7430e47a1f3f457e6c")
    assert protocol.channel_auth("278d425bdf160c739803", "7ad3773142a6692b25b8", "1234.1234",
                                 "private-foobar") == (
        "278d425bdf160c739803:58df8b0c36d6982b82c3ecf6b4662e34fe8c25bba48f5369f135bf843651c3a4")


def signed_query(method: str, path: str, body: bytes = b"", key: str = KEY, secret: str = SECRET,
                 **extra: str) -> str:
    params = {"auth_key": key, "auth_timestamp": str(int(time.time())), "auth_version": "1.0",
              **extra}
    if body:
        params["body_md5"] = protocol.body_md5(body)
    params["auth_signature"] = protocol.sign(secret, protocol.string_to_sign(method, path, params))
    return urlencode(params)


# -- fixtures ---------------------------------------------------------------------

@pytest.fixture(scope="session")
def js_clients() -> Path:
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.fail("Node.js 18+ and npm are needed to drive pusher-js and Laravel Echo; install them first")
    modules = JS / "node_modules"
    if not (modules / "pusher-js").is_dir() or not (modules / "laravel-echo").is_dir():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--ignore-scripts"], cwd=JS,
                       check=True, timeout=300, stdout=subprocess.DEVNULL)
    return JS


@dataclasses.dataclass
class PusherEnv:
    settings: Settings
    urls: list[str]
    procs: list[Proc]
    producer: AIOKafkaProducer
    keys: dict[str, tuple[str, str]]  # name → (key id, full key)
    start_edge: Callable[[], Any]
    log_dir: Path

    async def send(self, d: dict) -> None:
        await self.producer.send_and_wait(self.settings.topic("match-deltas"), codec.dumps(d),
                                          key=d["match_id"].encode())

    def ws(self, index: int = 0, key: str = KEY, query: str = "protocol=7&client=py") -> str:
        return self.urls[index].replace("http", "ws") + f"/app/{key}?{query}"


@pytest.fixture
async def pusher_env(settings, pg, redis_client, tmp_path: Path,
                     js_clients) -> AsyncIterator[PusherEnv]:
    tiers = tmp_path / "tiers.toml"
    tiers.write_text(TIERS)
    s = dataclasses.replace(settings, tiers_file=str(tiers), pusher_client_events=True,
                            pusher_activity_timeout=3, pusher_pong_timeout=1)
    await migrate(pg, s.db_schema)
    admin = AIOKafkaAdminClient(bootstrap_servers=s.kafka_bootstrap)
    await admin.start()
    await admin.create_topics([NewTopic(s.topic("match-deltas"), num_partitions=4,
                                        replication_factor=1)])
    await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=s.kafka_bootstrap)
    await producer.start()
    pool = await asyncpg.create_pool(s.database_url, min_size=1, max_size=2)
    store = KeyStore(pool, s.db_schema)
    keys = {}
    for name, tier in (("alice", "pro"), ("bob", "pro"), ("carol", "free")):
        record, full = await store.create(name, tier)
        keys[name] = (record.id, full)
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

    await start_edge()
    try:
        yield PusherEnv(s, urls, procs, producer, keys, start_edge, tmp_path / "logs")
    finally:
        for p in procs:
            p.stop()
        await producer.stop()
        await pool.close()


class Client:
    """One Node process running pusher-js or Laravel Echo."""

    def __init__(self, proc: asyncio.subprocess.Process, name: str) -> None:
        self.proc = proc
        self.name = name
        self.seen: list[dict[str, Any]] = []

    @classmethod
    async def start(cls, env: PusherEnv, lib: str, edge: int = 0, api_key: str | None = None,
                    key: str = KEY, **extra: Any) -> Client:
        url = env.urls[edge]
        port = int(url.rsplit(":", 1)[1])
        auth_path = "/broadcasting/auth" if lib == "echo" else "/pusher/auth"
        opts = {"lib": lib, "key": key, "host": "127.0.0.1", "port": port,
                "authEndpoint": url + auth_path, "apiKey": api_key, **extra}
        env.log_dir.mkdir(parents=True, exist_ok=True)
        name = f"{lib}-{len(list(env.log_dir.glob('node-*')))}"
        stderr = (env.log_dir / f"node-{name}.log").open("ab")
        proc = await asyncio.create_subprocess_exec(
            "node", str(JS / "client.mjs"), json.dumps(opts), cwd=JS,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=stderr)
        stderr.close()
        return cls(proc, name)

    async def command(self, **cmd: Any) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(cmd) + "\n").encode())
        await self.proc.stdin.drain()

    async def expect(self, type: str, timeout: float = 15.0, **match: Any) -> dict[str, Any]:
        """The next line of ``type`` whose fields equal ``match`` (earlier lines included)."""
        def fits(line: dict[str, Any]) -> bool:
            return line.get("type") == type and all(line.get(k) == v for k, v in match.items())

        for i, line in enumerate(self.seen):
            if fits(line):
                return self.seen.pop(i)
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{self.name}: no {type} {match} in {self.seen}")
            try:
                raw = await asyncio.wait_for(self.proc.stdout.readline(), left)
            except asyncio.TimeoutError:
                continue
            if not raw:
                raise AssertionError(f"{self.name} exited; saw {self.seen}")
            line = json.loads(raw)
            if fits(line):
                return line
            self.seen.append(line)

    async def never(self, type: str, seconds: float, **match: Any) -> None:
        with contextlib.suppress(AssertionError):
            line = await self.expect(type, timeout=seconds, **match)
            raise RuntimeError(f"{self.name}: unexpected {line}")

    async def subscribe(self, channel: str, *events: str) -> dict[str, Any]:
        await self.command(op="subscribe", channel=channel, events=list(events))
        return await self.expect("subscribed", channel=channel)

    async def close(self) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            await self.proc.wait()


@contextlib.asynccontextmanager
async def clients(*starting: Any) -> AsyncIterator[list[Client]]:
    started = list(await asyncio.gather(*starting))
    try:
        yield started
    finally:
        for c in started:
            await c.close()


async def recv(ws: Any, event: str | None = None, timeout: float = 10.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        frame = json.loads(await asyncio.wait_for(ws.recv(), deadline - time.monotonic()))
        if event is None or frame["event"] == event:
            return frame


async def channel_auth(url: str, api_key: str, socket_id: str, channel: str) -> httpx.Response:
    async with httpx.AsyncClient() as c:
        return await c.post(url + "/broadcasting/auth", headers={"X-API-Key": api_key},
                            data={"socket_id": socket_id, "channel_name": channel})


# -- the real clients ---------------------------------------------------------------

async def test_pusher_js_and_echo_get_deltas_and_signed_publishes(pusher_env):
    env = pusher_env
    async with clients(Client.start(env, "pusher"), Client.start(env, "echo")) as (pjs, echo):
        await pjs.expect("connected")
        await pjs.subscribe(f"match.{M1}", "delta", "goal")
        await echo.subscribe("league.football.39", "delta", "goal", "card")
        await env.send(delta(M1, 1))
        await env.send(delta(M2, 1, league="40"))
        got = await pjs.expect("event", event="delta")
        assert got["channel"] == f"match.{M1}" and got["data"]["seq"] == 1
        got = await echo.expect("event", event="delta")
        assert got["data"]["match_id"] == M1 and got["data"]["changes"][0]["value"] == 1
        await pjs.never("event", 0.3, event="delta")

        path = f"/apps/{APP_ID}/events"
        body = codec.dumps({"name": "goal", "data": json.dumps({"minute": 12}),
                            "channels": [f"match.{M1}", "league.football.39"]})
        async with httpx.AsyncClient(base_url=env.urls[0]) as http:
            r = await http.post(f"{path}?{signed_query('POST', path, body)}", content=body,
                                headers={"Content-Type": "application/json"})
            assert r.status_code == 200, r.text
            assert (await pjs.expect("event", event="goal"))["data"] == {"minute": 12}
            assert (await echo.expect("event", event="goal"))["data"] == {"minute": 12}

            assert (await http.post(path, content=body)).status_code == 401
            forged = signed_query("POST", path, body, secret="not-the-secret")
            assert (await http.post(f"{path}?{forged}", content=body)).status_code == 401
            tampered = codec.dumps({"name": "goal", "data": "{}", "channels": [f"match.{M1}"]})
            r = await http.post(f"{path}?{signed_query('POST', path, body)}", content=tampered)
            assert r.status_code == 401
            await pjs.never("event", 0.3, event="goal")

            await pjs.subscribe("league.football.39", "card")
            batch_path = f"/apps/{APP_ID}/batch_events"
            batch = codec.dumps({"batch": [
                {"name": "card", "data": "{\"n\":1}", "channel": f"match.{M1}"},
                {"name": "card", "data": "{\"n\":2}", "channel": "league.football.39"}]})
            r = await http.post(f"{batch_path}?{signed_query('POST', batch_path, batch)}",
                                content=batch)
            assert r.status_code == 200, r.text
            assert (await pjs.expect("event", event="card"))["data"] == {"n": 2}
            assert (await echo.expect("event", event="card"))["data"] == {"n": 2}

            one = f"/apps/{APP_ID}/channels/match.{M1}"
            r = await http.get(f"{one}?{signed_query('GET', one, info='subscription_count')}")
            assert r.json() == {"occupied": True, "subscription_count": 1}
            every = f"/apps/{APP_ID}/channels"
            r = await http.get(f"{every}?{signed_query('GET', every, filter_by_prefix='match.')}")
            assert r.json() == {"channels": {f"match.{M1}": {}}}
            assert (await http.get(every)).status_code == 401


async def test_private_and_presence_across_two_edges(pusher_env):
    env = pusher_env
    await env.start_edge()
    alice_id, alice = env.keys["alice"]
    bob_id, bob = env.keys["bob"]
    presence = f"presence-match.{M1}"
    private = f"private-match.{M1}"
    async with clients(Client.start(env, "echo", 0, api_key=alice),
                       Client.start(env, "pusher", 1, api_key=bob)) as (a, b):
        here = await a.subscribe(presence, "client-typing")
        assert here["members"] == ["alice"]
        await a.subscribe(private, "delta")
        joined = await b.subscribe(presence, "client-typing")
        assert sorted(joined["members"]) == sorted([alice_id, bob_id])
        added = await a.expect("member_added", channel=presence)
        assert added["info"] == {"name": "bob", "tier": "pro"}

        await env.send(delta(M1, 1, kinds=["detail"], changes=[
            {"op": "add", "path": "/detail/statistics", "value": {"shots": 3}}]))
        got = await a.expect("event", event="delta", channel=private)
        assert got["data"]["changes"][0]["path"] == "/detail/statistics"

        await b.command(op="trigger", channel=presence, event="client-typing", data={"who": "bob"})
        assert (await a.expect("event", event="client-typing"))["data"] == {"who": "bob"}
        await b.never("event", 0.3, event="client-typing")

        # bob's second connection (another edge): not a new member, and leaving it is not either
        async with websockets.connect(env.ws(0)) as raw:
            established = await recv(raw, "pusher:connection_established")
            socket_id = json.loads(established["data"])["socket_id"]
            signed = (await channel_auth(env.urls[0], bob, socket_id, presence)).json()
            await raw.send(json.dumps({"event": "pusher:subscribe", "data": {
                "channel": presence, **signed}}))
            ok = await recv(raw, "pusher_internal:subscription_succeeded")
            assert json.loads(ok["data"])["presence"]["count"] == 2
            path = f"/apps/{APP_ID}/channels/{presence}/users"
            async with httpx.AsyncClient(base_url=env.urls[1]) as http:
                r = await http.get(f"{path}?{signed_query('GET', path)}")
                assert sorted(u["id"] for u in r.json()["users"]) == sorted([alice_id, bob_id])
            await b.command(op="disconnect")
            await a.never("member_removed", 0.5)
        assert (await a.expect("member_removed", channel=presence))["info"]["name"] == "bob"
        await a.never("member_added", 0.2)


async def test_refusals_bad_key_bad_signature_and_tier(pusher_env):
    env = pusher_env
    carol = env.keys["carol"][1]
    alice = env.keys["alice"][1]
    async with clients(Client.start(env, "pusher", key="no-such-key"),
                       Client.start(env, "pusher", api_key=alice, badAuth=True),
                       Client.start(env, "echo", api_key=carol)) as (badkey, forger, free):
        assert (await badkey.expect("error"))["code"] == 4001
        await forger.expect("connected")
        await forger.command(op="subscribe", channel=f"private-match.{M1}", events=[])
        refused = await forger.expect("subscription_error")
        assert refused["status"] == 401
        assert (await forger.expect("error", code=4009))
        await free.command(op="subscribe", channel=f"private-match.{M1}", events=[])
        assert (await free.expect("subscription_error"))["status"] == 403
    r = await channel_auth(env.urls[0], carol, "1.2", f"presence-match.{M1}")
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden_channel"
    async with httpx.AsyncClient() as c:
        r = await c.post(env.urls[0] + "/pusher/auth",
                         data={"socket_id": "1.2", "channel_name": f"private-match.{M1}"})
        assert r.status_code == 401


async def test_protocol_codes_ping_stale_connections_and_drain(pusher_env):
    env = pusher_env
    alice = env.keys["alice"][1]
    for query, code in (("client=py", 4008), ("protocol=x", 4006), ("protocol=3", 4007)):
        async with websockets.connect(env.ws(query=query)) as ws:
            assert json.loads(await ws.recv())["data"]["code"] == code
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await ws.recv()
            assert closed.value.rcvd.code == code
    async with websockets.connect(env.ws(0).replace(f"/app/{KEY}", f"/app/{KEY}/x")) as ws:
        assert json.loads(await ws.recv())["data"]["code"] == 4005

    async def stale() -> None:
        async with websockets.connect(env.ws()) as ws:
            established = await recv(ws)
            assert json.loads(established["data"])["activity_timeout"] == 3
            assert (await recv(ws))["event"] == "pusher:ping"
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await recv(ws)
            assert closed.value.rcvd.code == 4201

    async def lively() -> websockets.ClientConnection:
        ws = await websockets.connect(env.ws())
        established = await recv(ws, "pusher:connection_established")
        await ws.send(json.dumps({"event": "pusher:ping", "data": {}}))
        assert (await recv(ws))["event"] == "pusher:pong"
        await ws.send("not json")
        assert (await recv(ws))["event"] == "pusher:error"
        await ws.send(json.dumps({"event": "pusher:subscribe",
                                  "data": {"channel": "sport.football"}}))
        ok = await recv(ws, "pusher_internal:subscription_succeeded")
        assert ok["channel"] == "sport.football" and ok["data"] == "{}"
        await ws.send(json.dumps({"event": "client-x", "channel": "sport.football", "data": {}}))
        assert (await recv(ws, "pusher:error"))["data"]["code"] is None
        socket_id = json.loads(established["data"])["socket_id"]
        signed = (await channel_auth(env.urls[0], alice, socket_id, f"private-match.{M1}")).json()
        await ws.send(json.dumps({"event": "pusher:subscribe",
                                  "data": {"channel": f"private-match.{M1}", **signed}}))
        await recv(ws, "pusher_internal:subscription_succeeded")
        for _ in range(12):
            await ws.send(json.dumps({"event": "client-x", "channel": f"private-match.{M1}",
                                      "data": {}}))
        assert (await recv(ws, "pusher:error"))["data"]["code"] == 4301
        return ws

    ws = await lively()

    async def keep_alive() -> None:
        # Answer the server's pings while the stale connection runs out its time.
        while True:
            frame = await recv(ws)
            if frame["event"] == "pusher:ping":
                await ws.send(json.dumps({"event": "pusher:pong", "data": {}}))

    answering = asyncio.ensure_future(keep_alive())
    try:
        await stale()
    finally:
        answering.cancel()
        with contextlib.suppress(asyncio.CancelledError, websockets.ConnectionClosed):
            await answering
    try:
        env.procs[0].process.send_signal(15)
        with pytest.raises(websockets.ConnectionClosed) as closed:
            while True:
                frame = await recv(ws)
                if frame["event"] == "pusher:ping":
                    await ws.send(json.dumps({"event": "pusher:pong", "data": {}}))
        assert closed.value.rcvd.code == 4200
    finally:
        await ws.close()
