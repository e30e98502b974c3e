"""Bad input, fuzzed with hypothesis: a few dozen cases per property in the default run,
thousands under ``-m slow``.

- provider payloads mutated from the real API-Football samples → typed errors, never a
  crash, and what still normalises gives schema-valid deltas;
- WebSocket and Pusher frames (garbage, oversized, deeply nested JSON) → error frames or
  close codes, and the edge keeps serving everyone else;
- SSE query strings and REST parameters → 4xx, never 5xx;
- API keys and Pusher signatures → 401 / 403;
- CLI arguments and settings → a message naming the bad value, exit status 2.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import hashlib
import hmac
import io
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from pipeline.diff import diff
from pipeline.normalise import NormaliseError, normalise
from pipeline.settings import Settings
from tables.schema_check import validate
from tests.conftest import SAMPLES
from tests.reliability.conftest import TIERS, report
from tests.support import Proc, free_port

SIZES = [pytest.param(40, id="short"), pytest.param(3000, id="thousands", marks=pytest.mark.slow)]
FUZZ: dict[str, Any] = {
    "deadline": None, "database": None, "derandomize": False,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large,
                              HealthCheck.function_scoped_fixture]}
TRIED: dict[str, int] = {}


def _count(name: str) -> None:
    TRIED[name] = TRIED.get(name, 0) + 1


# -- provider payloads ----------------------------------------------------------------------

SAMPLE_BODIES = {p.name: json.loads(p.read_text()) for p in sorted(SAMPLES.glob("*.json"))}
FIXTURE_SAMPLES = [n for n in SAMPLE_BODIES if "fixtures_ids" in n or "fixtures_league" in n]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**63, 2**63) | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12)


def _paths(node: Any, path: tuple = ()) -> Iterator[tuple]:
    yield path
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, path + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, path + (i,))


@st.composite
def mutated_bodies(draw: st.DrawFn) -> tuple[str, str]:
    name = draw(st.sampled_from(FIXTURE_SAMPLES))
    doc = copy.deepcopy(SAMPLE_BODIES[name])
    paths = list(_paths(doc))
    for _ in range(draw(st.integers(1, 6))):
        path = draw(st.sampled_from(paths[1:]))
        parent = doc
        try:
            for step in path[:-1]:
                parent = parent[step]
            op = draw(st.sampled_from(["replace", "delete", "null", "string", "duplicate"]))
            if op == "replace":
                parent[path[-1]] = draw(json_values)
            elif op == "delete":
                del parent[path[-1]]
            elif op == "null":
                parent[path[-1]] = None
            elif op == "string":
                parent[path[-1]] = str(parent[path[-1]])
            elif isinstance(parent, list):
                parent.append(copy.deepcopy(parent[path[-1]]))
        except (KeyError, IndexError, TypeError):
            continue
    text = json.dumps(doc)
    cut = draw(st.sampled_from(["none", "none", "truncate", "garbage"]))
    if cut == "truncate":
        text = text[: draw(st.integers(0, len(text)))]
    elif cut == "garbage":
        at = draw(st.integers(0, len(text)))
        text = text[:at] + draw(st.text(max_size=10)) + text[at:]
    return name, text


@pytest.mark.parametrize("n", SIZES)
def test_mutated_provider_payloads_give_typed_errors_never_a_crash(n):
    @hsettings(max_examples=n, **FUZZ)
    @given(mutated_bodies(), st.sampled_from(["fixtures", "fixtures/live", "v3/fixtures"]))
    def check(sample: tuple[str, str], endpoint: str) -> None:
        _count("provider payloads")
        _, body = sample
        raw = {"version": 1, "provider": "apifootball", "sport": "football", "endpoint": endpoint,
               "params": {}, "status": 200, "headers": {}, "latency_ms": 1.0,
               "fetched_at": 1795877700.0, "body": body, "error": None}
        result = normalise(raw)
        assert all(isinstance(e, NormaliseError) for e in result.errors)
        for e in result.errors:
            e.to_dead_letter(raw)
        for match in result.matches:
            first = diff(None, match, now=1795877701.0)
            assert first.delta is not None and first.delta["seq"] == 1
            validate("delta", first.delta)
            validate("match", first.state["snapshot"])
            again = diff(first.state, match, now=1795877702.0)
            assert again.delta is None  # the same answer twice is not a change

    check()


# -- an edge to throw frames and requests at ------------------------------------------------

@pytest.fixture(scope="module")
def fuzz_edge(kafka_url, redis_url, database_url, tmp_path_factory) -> Iterator[dict[str, Any]]:
    import uuid

    import asyncpg
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    from tables.api_keys import KeyStore
    from tables.migrate import migrate, quote_ident

    tmp = tmp_path_factory.mktemp("fuzz-edge")
    rid = uuid.uuid4().hex[:10]
    tiers = tmp / "tiers.toml"
    tiers.write_text(TIERS)
    s = Settings.from_env({}, kafka_url=kafka_url, redis_url=redis_url, database_url=database_url,
                          topic_prefix=f"f{rid}-", redis_prefix=f"f{rid}:", db_schema=f"f_{rid}",
                          partitions=4, fetch_wait_ms=10, log_format="text",
                          tiers_file=str(tiers), data_dir=str(tmp / "data"))

    async def prepare() -> str:
        conn = await asyncpg.connect(s.database_url)
        await migrate(conn, s.db_schema)
        await conn.close()
        admin = AIOKafkaAdminClient(bootstrap_servers=s.kafka_bootstrap)
        await admin.start()
        with contextlib.suppress(Exception):
            await admin.create_topics([NewTopic(s.topic("match-deltas"), 4, 1)])
        await admin.close()
        pool = await asyncpg.create_pool(s.database_url, min_size=1, max_size=1)
        _, secret = await KeyStore(pool, s.db_schema).create("fuzz", "pro")
        await pool.close()
        return secret

    async def drop() -> None:
        conn = await asyncpg.connect(s.database_url)
        await conn.execute(f"DROP SCHEMA IF EXISTS {quote_ident(s.db_schema)} CASCADE")
        await conn.close()

    secret = asyncio.run(prepare())
    port = free_port()
    edge = Proc("edge-fuzz", ["edge", "--port", str(port)], s, tmp / "logs")
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        assert edge.alive(), edge.log()[-3000:]
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                break
        assert time.monotonic() < deadline
        time.sleep(0.1)
    try:
        yield {"url": url, "ws": f"ws://127.0.0.1:{port}", "proc": edge, "key": secret,
               "settings": s}
        assert edge.alive(), edge.log()[-3000:]
        errors = [line for line in edge.log().splitlines()
                  if " ERROR " in line or "Traceback" in line]
        assert not errors, "\n".join(errors[:20])
    finally:
        edge.stop()
        asyncio.run(drop())


def _still_serving(env: dict[str, Any]) -> None:
    assert env["proc"].alive(), env["proc"].log()[-3000:]
    with connect(env["ws"] + "/v1/ws", open_timeout=10) as ws:
        ws.send(json.dumps({"op": "subscribe", "channels": ["sport.football"]}))
        reply = json.loads(ws.recv(timeout=10))
        assert reply["type"] == "subscribed", reply
    assert httpx.get(env["url"] + "/v1/sports", timeout=10).status_code == 200


# -- WebSocket frames -----------------------------------------------------------------------

def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


ws_ops = st.fixed_dictionaries({"op": st.sampled_from(
    ["subscribe", "unsubscribe", "ping", "", "SUBSCRIBE", "x" * 50])}, optional={
    "channels": st.one_of(json_values, st.lists(st.text(max_size=200), max_size=60)),
    "cursor": st.one_of(json_values, st.text(max_size=100)),
    "snapshots": json_values})
frames = st.one_of(
    st.text(max_size=300),
    st.binary(max_size=300),
    json_values.map(json.dumps),
    ws_ops.map(json.dumps),
    st.integers(1, 60_000).map(_nested),
    st.integers(16_000, 40_000).map(lambda n: json.dumps({"op": "subscribe", "channels": ["a" * n]})),
)
WS_CODES = {"bad_json", "bad_frame", "frame_too_large", "unknown_op", "bad_channels",
            "bad_channel", "too_many_channels", "bad_cursor"}


@pytest.mark.parametrize("n", SIZES)
def test_websocket_frames_get_errors_and_the_edge_keeps_serving(fuzz_edge, n):
    with connect(fuzz_edge["ws"] + "/v1/ws", open_timeout=10, max_size=2**22) as ws:
        @hsettings(max_examples=n, **FUZZ)
        @given(frames)
        def check(frame: str | bytes) -> None:
            _count("websocket frames")
            ws.send(frame)
            reply = json.loads(ws.recv(timeout=10))
            while reply["type"] in ("delta", "snapshot", "ping", "reset"):
                reply = json.loads(ws.recv(timeout=10))
            if reply["type"] == "error":
                assert reply["code"] in WS_CODES, reply
            else:
                assert reply["type"] in ("subscribed", "unsubscribed", "pong"), reply
            ws.send(json.dumps({"op": "ping"}))  # a good frame: the bad-frame count restarts
            while json.loads(ws.recv(timeout=10))["type"] != "pong":
                pass

        check()
    # a frame over the edge's WebSocket limit (1 MiB) closes that connection only
    # (uncompressed, the edge may close it while the client is still writing it)
    with connect(fuzz_edge["ws"] + "/v1/ws", open_timeout=10, max_size=2**22) as ws:
        with pytest.raises((ConnectionClosed, ConnectionResetError, BrokenPipeError)) as closed:
            ws.send("x" * (2 * 1024 * 1024))
            ws.recv(timeout=10)
        if isinstance(closed.value, ConnectionClosed):
            assert closed.value.rcvd is None or closed.value.rcvd.code in (1009, 1008)
    # 20 bad frames in a row: closed with 1008
    with connect(fuzz_edge["ws"] + "/v1/ws", open_timeout=10) as ws:
        with pytest.raises(ConnectionClosed) as closed:
            for _ in range(30):
                ws.send("{nope")
                ws.recv(timeout=10)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
    _still_serving(fuzz_edge)


# -- Pusher frames --------------------------------------------------------------------------

pusher_frames = st.one_of(
    st.text(max_size=300),
    json_values.map(json.dumps),
    st.fixed_dictionaries({"event": st.sampled_from(
        ["pusher:subscribe", "pusher:unsubscribe", "pusher:ping", "client-x", "pusher:signin", "x"])},
        optional={"data": json_values, "channel": st.text(max_size=200)}).map(json.dumps),
    st.integers(1, 60_000).map(_nested),
    st.integers(10_000, 200_000).map(lambda n: json.dumps({"event": "pusher:ping", "data": "a" * n})),
)


@pytest.mark.parametrize("n", SIZES)
def test_pusher_frames_get_protocol_errors_and_the_edge_keeps_serving(fuzz_edge, n):
    url = fuzz_edge["ws"] + "/app/bts-guru-key?protocol=7&client=js&version=8.4.0"
    outcomes: dict[str, int] = {}

    @hsettings(max_examples=n, **FUZZ)
    @given(pusher_frames)
    def check(frame: str) -> None:
        _count("pusher frames")
        with connect(url, open_timeout=10, max_size=2**22) as ws:
            hello = json.loads(ws.recv(timeout=10))
            assert hello["event"] == "pusher:connection_established", hello
            ws.send(frame)
            ws.send(json.dumps({"event": "pusher:ping", "data": {}}))
            try:
                while True:
                    msg = json.loads(ws.recv(timeout=10))
                    if msg["event"] == "pusher:error":
                        code = msg["data"].get("code")
                        assert code is None or 4000 <= int(code) <= 4399, msg
                        outcomes["error"] = outcomes.get("error", 0) + 1
                    if msg["event"] == "pusher:pong":
                        outcomes["open"] = outcomes.get("open", 0) + 1
                        return
            except ConnectionClosed as exc:
                code = exc.rcvd.code if exc.rcvd else 1006
                assert code == 1009 or 4000 <= code <= 4399, code
                outcomes[f"closed {code}"] = outcomes.get(f"closed {code}", 0) + 1

    check()
    for bad in ("/app/bts-guru-key", "/app/bts-guru-key?protocol=99", "/app/nokey?protocol=7"):
        with connect(fuzz_edge["ws"] + bad, open_timeout=10) as ws:
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    ws.recv(timeout=10)
            assert closed.value.rcvd is not None and 4000 <= closed.value.rcvd.code <= 4099
    _still_serving(fuzz_edge)


# -- SSE query strings and REST parameters --------------------------------------------------

query_text = st.one_of(
    st.text(max_size=200),
    st.lists(st.sampled_from(["sport.football", "league.football.39", "match.x", "private-match.a",
                              "presence-match.b", "sport.curling", "", ",", "..", "sport."]),
             max_size=60).map(",".join),
    st.integers(1, 30_000).map(lambda n: "a" * n),
)


@pytest.mark.parametrize("n", SIZES)
def test_sse_query_strings_and_rest_parameters_never_5xx(fuzz_edge, n):
    base = fuzz_edge["url"]
    statuses: dict[int, int] = {}
    with httpx.Client(timeout=10) as client:
        @hsettings(max_examples=n, **FUZZ)
        @given(channels=query_text, cursor=st.one_of(st.none(), st.text(max_size=100),
                                                     st.just("1.0-0-0-0"), st.just("9.99-1")),
               snapshots=st.one_of(st.none(), st.text(max_size=5)), match_id=st.text(max_size=300),
               header_cursor=st.one_of(st.none(), st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=80)
                                       .map(str.strip)))
        def check(channels, cursor, snapshots, match_id, header_cursor) -> None:
            _count("sse query strings and rest parameters")
            params = {"channels": channels}
            if cursor is not None:
                params["last_event_id"] = cursor
            if snapshots is not None:
                params["snapshots"] = snapshots
            headers = {"Last-Event-ID": header_cursor} if header_cursor else {}
            with client.stream("GET", base + "/v1/stream", params=params, headers=headers) as r:
                statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
                assert r.status_code < 500, r.read()
                if r.status_code != 200:
                    assert "error" in json.loads(r.read())
            r = client.get(base + "/v1/matches/" + quote(match_id, safe=""))
            statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
            assert r.status_code < 500, r.text
            r = client.get(base + "/v1/replay", params={"channels": channels, "from": match_id})
            assert r.status_code < 500, r.text

        check()
    _still_serving(fuzz_edge)


# -- API keys and Pusher signatures ---------------------------------------------------------

@pytest.mark.parametrize("n", SIZES)
def test_bad_api_keys_and_signatures_get_401_or_403(fuzz_edge, n):
    base = fuzz_edge["url"]
    good = fuzz_edge["key"]
    with httpx.Client(timeout=10) as client:
        assert client.get(base + "/v1/sports", headers={"X-API-Key": good}).status_code == 200

        @hsettings(max_examples=n, **FUZZ)
        @given(key=st.one_of(st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1,
                                     max_size=200),
                             st.integers(0, len(good) - 1).map(lambda i: good[:i] + ("x" if good[i] != "x" else "y") + good[i + 1:])),
               where=st.sampled_from(["bearer", "header", "query"]),
               signature=st.text(st.characters(min_codepoint=33, max_codepoint=126), max_size=80),
               body=st.binary(max_size=200))
        def check(key, where, signature, body) -> None:
            _count("api keys and signatures")
            if key == good:
                return
            headers, params = {}, {}
            if where == "bearer":
                headers["Authorization"] = f"Bearer {key}"
            elif where == "header":
                headers["X-API-Key"] = key
            else:
                params["api_key"] = key
            r = client.get(base + "/v1/sports", headers=headers, params=params)
            assert r.status_code in (401, 403), (key, r.status_code, r.text)
            r = client.post(base + "/pusher/auth", headers=headers, params=params,
                            data={"socket_id": "1.2", "channel_name": "private-match.x"})
            assert r.status_code in (400, 401, 403), (r.status_code, r.text)
            q = {"auth_key": "bts-guru-key", "auth_timestamp": str(int(time.time())),
                 "auth_version": "1.0", "body_md5": hashlib.md5(body).hexdigest(),
                 "auth_signature": signature}
            r = client.post(base + "/apps/bts-guru/events", params=q, content=body)
            assert r.status_code == 401, (r.status_code, r.text)

        check()
        # a correct signature with the body changed afterwards is refused too
        body = json.dumps({"name": "x", "channel": "sport.football", "data": "{}"}).encode()
        q = {"auth_key": "bts-guru-key", "auth_timestamp": str(int(time.time())),
             "auth_version": "1.0", "body_md5": hashlib.md5(body).hexdigest()}
        text = "POST\n/apps/bts-guru/events\n" + "&".join(f"{k}={q[k]}" for k in sorted(q))
        q["auth_signature"] = hmac.new(b"bts-guru-secret", text.encode(), hashlib.sha256).hexdigest()
        assert client.post(base + "/apps/bts-guru/events", params=q, content=body).status_code == 200
        assert client.post(base + "/apps/bts-guru/events", params=q,
                           content=body + b" ").status_code == 401
    _still_serving(fuzz_edge)


# -- CLI arguments and settings -------------------------------------------------------------

BAD_ARGS = [
    (["simulate", "--port"], "port"), (["simulate", "--speed"], "speed"),
    (["simulate", "--seed"], "seed"), (["simulate", "--start"], "start"),
    (["simulate", "--matches"], "matches"), (["dev", "--workers"], "workers"),
    (["dev", "--edges"], "edges"), (["status", "--watch"], "watch"),
]
BAD_ENV = ["BTS_PARTITIONS", "EDGE_PORT", "KAFKA_FETCH_WAIT_MS", "PROVIDER_CLOCK_SPEED",
           "BTS_STORE", "LOG_LEVEL", "KAFKA_URL", "REDIS_URL", "DATABASE_URL", "PROVIDER_PLAN",
           "KAFKA_REPLICATION_FACTOR", "PUSHER_ACTIVITY_TIMEOUT", "SINKS_FETCH_WAIT_MS"]


def _valid_number(text: str) -> bool:
    with contextlib.suppress(ValueError):
        float(text)
        return True
    return False


def _run_cli(argv: list[str], env: dict[str, str]) -> tuple[int, str]:
    import os

    from pipeline import cli

    old = dict(os.environ)
    err = io.StringIO()
    try:
        os.environ.clear()
        os.environ.update(env)
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            try:
                code = cli.main(argv)
            except SystemExit as exc:
                code = exc.code
    finally:
        os.environ.clear()
        os.environ.update(old)
    return int(code or 0), err.getvalue()


@pytest.mark.parametrize("n", SIZES)
def test_bad_cli_arguments_and_settings_exit_2_naming_the_value(n):
    value = st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=30)

    @hsettings(max_examples=n, **FUZZ)
    @given(st.sampled_from(BAD_ARGS), value)
    def bad_argument(spec, text) -> None:
        _count("cli arguments")
        argv, _ = spec
        if _valid_number(text) or text.startswith("-"):
            text = "x" + text
        code, err = _run_cli([*argv, text], {})
        assert code == 2, (argv, text, err)
        assert repr(text) in err or text in err, err

    @hsettings(max_examples=n, **FUZZ)
    @given(st.sampled_from(BAD_ENV), value)
    def bad_setting(name, text) -> None:
        _count("settings")
        if _valid_number(text) or "://" in text or text.lower() in (
                "memory", "rocksdb", "debug", "info", "warning", "error", "free", "pro", "ultra", "mega"):
            text = "~" + text
        code, err = _run_cli(["status", "--json"], {name: text})
        assert code == 2, (name, text, err)
        assert name in err, err

    bad_argument()
    bad_setting()
    # and for real, in a child process
    for argv, env in ((["simulate", "--port", "99999"], {}), (["worker"], {"BTS_PARTITIONS": "zero"})):
        done = subprocess.run([sys.executable, "-m", "pipeline.cli", *argv], capture_output=True,
                              text=True, env={"PATH": "/usr/bin:/bin", **env}, timeout=60, check=False,
                              cwd=Path(__file__).resolve().parents[2])
        assert done.returncode == 2, done.stderr
        assert ("99999" in done.stderr) if argv[0] == "simulate" else ("BTS_PARTITIONS" in done.stderr)


def test_zz_report_inputs_tried():
    report("bad-input", inputs=TRIED)
