"""The provider clients: classification, retries, circuit and quota.

The first part serves recorded real answers (``samples/api-football``) and the
documented gateway bodies from a local aiohttp server; the second runs against
the provider simulator's real HTTP server.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import random
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from pipeline.providers import (
    AuthError,
    BadRequest,
    CircuitOpen,
    ConnectionFailed,
    MalformedResponse,
    NotSubscribed,
    ProviderError,
    QuotaExceeded,
    RateLimited,
    UpstreamError,
    build_client,
    classify,
)
from tests.conftest import SAMPLES

pytestmark = pytest.mark.timeout(60)

SUCCESS = (SAMPLES / "apifootball_fixtures_events.json").read_text()
REQUIRED = (SAMPLES / "apifootball_error_required_param.json").read_text()
CONFLICT = (SAMPLES / "apifootball_error_field_conflict_teams.json").read_text()


def envelope_error(errors: dict[str, str]) -> str:
    return json.dumps({"get": "fixtures", "parameters": {"live": "all"}, "errors": errors,
                       "results": 0, "paging": {"current": 1, "total": 1}, "response": []},
                      separators=(",", ":"))


TOKEN = envelope_error({"token": "Error/Missing application key. Go to https://www.api-football"
                                 ".com/documentation-v3 to learn how to get your API application "
                                 "key."})
DAILY = envelope_error({"requests": "You have reached the request limit for the day, Go to "
                                    "https://dashboard.api-football.com to upgrade your plan."})
MINUTE = envelope_error({"rateLimit": "Too many requests. Your rate limit is 10 requests per "
                                      "minute."})
INVALID_KEY = ('{"message":"Invalid API key. Go to https://docs.rapidapi.com/docs/keys '
               'for more info."}')
UNSUBSCRIBED = '{"message":"You are not subscribed to this API."}'
RAPID_DAILY = ('{"message":"You have exceeded the DAILY quota for Requests on your current plan, '
               'BASIC. Upgrade your plan at https://rapidapi.com/api-sports/api/api-football"}')
RAPID_MINUTE = ('{"message":"You have exceeded the rate limit per minute for your plan, BASIC, '
                'by the API provider"}')
JSON = "application/json"
QUOTA_HEADERS = {"x-ratelimit-requests-limit": "7500", "x-ratelimit-requests-remaining": "7321",
                 "X-RateLimit-Limit": "300", "X-RateLimit-Remaining": "297", "Server": "RapidAPI",
                 "Set-Cookie": "a=b"}


@dataclass
class Reply:
    status: int = 200
    body: str = SUCCESS
    content_type: str | None = JSON
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    truncate_at: int | None = None  # send this many bytes of the body, then hang up


@dataclass
class Upstream:
    """A scripted upstream: replies are served in order, the last one repeats."""

    url: str
    replies: list[Reply]
    requests: list[web.Request] = field(default_factory=list)

    def script(self, *replies: Reply) -> None:
        self.replies[:] = list(replies)
        self.requests.clear()


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    state = Upstream("", [Reply()])

    async def handler(request: web.Request) -> web.StreamResponse:
        state.requests.append(request)
        reply = state.replies.pop(0) if len(state.replies) > 1 else state.replies[0]
        if reply.delay:
            await asyncio.sleep(reply.delay)
        headers = dict(reply.headers)
        if reply.content_type:
            headers["Content-Type"] = reply.content_type
        if reply.truncate_at is None:
            return web.Response(status=reply.status, body=reply.body.encode(), headers=headers)
        data = reply.body.encode()
        resp = web.StreamResponse(status=reply.status, headers=headers)
        resp.content_length = len(data)
        await resp.prepare(request)
        await resp.write(data[:reply.truncate_at])
        assert request.transport is not None
        request.transport.close()
        return resp

    app = web.Application()
    app.router.add_route("GET", "/{tail:.*}", handler)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    state.url = str(server.make_url("")).rstrip("/")
    try:
        yield state
    finally:
        await server.close()


def make(upstream: Upstream, **kw: Any) -> Any:
    kw.setdefault("retries", 0)
    kw.setdefault("backoff", 0.01)
    return build_client(kw.pop("sport", "football"), "good", base_url=upstream.url, **kw)


# -- answers, as served -------------------------------------------------------------------


async def test_a_success_is_recorded_with_its_body_and_quota(upstream: Upstream) -> None:
    upstream.script(Reply(headers=QUOTA_HEADERS))
    client = make(upstream)
    try:
        raw = await client.fetch("fixtures/events", {"fixture": "653808"})
    finally:
        await client.close()
    assert raw["error"] is None
    assert raw["body"] == SUCCESS
    assert raw["version"] == 1 and raw["provider"] == "apifootball" and raw["sport"] == "football"
    assert raw["endpoint"] == "fixtures/events" and raw["params"] == {"fixture": "653808"}
    assert raw["status"] == 200 and raw["latency_ms"] >= 0
    assert abs(raw["fetched_at"] - time.time()) < 5
    assert raw["headers"] == {"x-ratelimit-requests-limit": "7500",
                              "x-ratelimit-requests-remaining": "7321",
                              "x-ratelimit-limit": "300", "x-ratelimit-remaining": "297",
                              "server": "RapidAPI", "content-type": "application/json"}
    q = client.quota
    assert (q.daily_limit, q.daily_remaining) == (7500, 7321)
    assert (q.minute_limit, q.minute_remaining) == (300, 297)
    req = upstream.requests[0]
    assert req.path == "/v3/fixtures/events" and req.query["fixture"] == "653808"
    assert req.headers["x-rapidapi-key"] == "good"
    assert req.headers["x-rapidapi-host"] == "api-football-v1.p.rapidapi.com"
    assert "x-apisports-key" not in req.headers


@pytest.mark.parametrize(("sport", "rapidapi", "path", "host"), [
    ("football", False, "/football/v3/fixtures", None),
    ("basketball", True, "/games", "api-basketball.p.rapidapi.com"),
    ("basketball", False, "/basketball/games", None),
    ("hockey", True, "/games", "api-hockey.p.rapidapi.com"),
    ("hockey", False, "/hockey/games", None),
])
async def test_paths_and_key_headers_by_mode(upstream: Upstream, sport: str, rapidapi: bool,
                                             path: str, host: str | None) -> None:
    endpoint = "fixtures" if sport == "football" else "games"
    client = make(upstream, sport=sport, rapidapi=rapidapi)
    try:
        raw = await client.fetch(endpoint, {"date": "2026-11-29"})
    finally:
        await client.close()
    assert raw["provider"] == {"football": "apifootball", "basketball": "apibasketball",
                               "hockey": "apihockey"}[sport]
    req = upstream.requests[0]
    assert req.path == path
    if host:
        assert req.headers["x-rapidapi-host"] == host and req.headers["x-rapidapi-key"] == "good"
    else:
        assert req.headers["x-apisports-key"] == "good"
        assert not any(h.lower().startswith("x-rapidapi") for h in req.headers)


def test_urls_without_a_base_are_the_real_hosts() -> None:
    def url(sport: str, endpoint: str, rapidapi: bool) -> str:
        return str(build_client(sport, "k", rapidapi=rapidapi).url(endpoint))

    assert url("football", "fixtures", True) == "https://api-football-v1.p.rapidapi.com/v3/fixtures"
    assert url("hockey", "games", True) == "https://api-hockey.p.rapidapi.com/games"
    assert url("football", "fixtures", False) == "https://v3.football.api-sports.io/fixtures"
    assert url("basketball", "games", False) == "https://v1.basketball.api-sports.io/games"
    with pytest.raises(ValueError):
        build_client("cricket", "k")


@pytest.mark.parametrize(("reply", "kind", "needle"), [
    (Reply(body=REQUIRED), BadRequest, "At least one parameter is required"),
    (Reply(body=CONFLICT), BadRequest, "cannot be used with the Search field"),
    (Reply(body=TOKEN), AuthError, "Missing application key"),
    (Reply(status=403, body=TOKEN), AuthError, "Missing application key"),
    (Reply(body=DAILY), QuotaExceeded, "limit for the day"),
    (Reply(body=MINUTE), RateLimited, "10 requests per minute"),
    (Reply(status=429, body=MINUTE), RateLimited, "10 requests per minute"),
    (Reply(status=401, body=INVALID_KEY), AuthError, "Invalid API key"),
    (Reply(status=403, body=INVALID_KEY), AuthError, "Invalid API key"),
    (Reply(status=403, body=UNSUBSCRIBED), NotSubscribed, "not subscribed"),
    (Reply(status=429, body=RAPID_DAILY), QuotaExceeded, "DAILY quota"),
    (Reply(status=429, body=RAPID_MINUTE), RateLimited, "rate limit per minute"),
    (Reply(status=403, body="", content_type=None), AuthError, "403"),
    (Reply(status=500, body='{"message":"Internal Server Error"}'), UpstreamError, "Internal"),
    (Reply(status=502, body="<html><body>Bad Gateway</body></html>", content_type="text/html"),
     UpstreamError, "Bad Gateway"),
    (Reply(status=499, body=""), UpstreamError, "499"),
    (Reply(body="<!DOCTYPE html><html>maintenance</html>", content_type="text/html"),
     UpstreamError, "HTML"),
    (Reply(body='{"get":"fixtures","errors":[],"resp'), MalformedResponse, "not JSON"),
    (Reply(body='{"fixtures": []}'), MalformedResponse, "without the envelope"),
    (Reply(status=204, body="", content_type=None), MalformedResponse, "empty body"),
    (Reply(body=SUCCESS, truncate_at=100), MalformedResponse, "truncated"),
])
async def test_each_error_shape_becomes_its_typed_error(
        upstream: Upstream, reply: Reply, kind: type[ProviderError], needle: str) -> None:
    upstream.script(reply)
    client = make(upstream)
    try:
        raw = await client.fetch("fixtures", {"live": "all"})
        with pytest.raises(kind) as caught:
            await client.call("fixtures", {"live": "all"})
    finally:
        await client.close()
    assert raw["error"] is not None
    assert raw["error"]["type"] == kind.__name__
    assert needle in raw["error"]["message"]
    assert raw["status"] == reply.status
    expected_body = reply.body if reply.truncate_at is None else reply.body[:reply.truncate_at]
    assert raw["body"] == expected_body
    err = caught.value
    assert type(err) is kind and err.provider == "apifootball" and err.status == reply.status
    assert err.record is not None and err.record["error"] == raw["error"]


def test_retry_after_of_quota_and_rate_limits() -> None:
    noon = dt.datetime(2026, 11, 29, 12, 0, 0, tzinfo=dt.UTC).timestamp()
    headers: dict[str, str] = {}
    daily = classify("apifootball", 200, headers, DAILY, noon)
    assert isinstance(daily, QuotaExceeded) and daily.retry_after == 43_200
    assert not daily.retryable
    reset = classify("apifootball", 429, {"x-ratelimit-requests-reset": "1234"}, RAPID_DAILY, noon)
    assert isinstance(reset, QuotaExceeded) and reset.retry_after == 1234
    minute = classify("apifootball", 200, headers, MINUTE, noon + 15)
    assert isinstance(minute, RateLimited) and minute.retry_after == 45 and minute.retryable
    bare = classify("apifootball", 429, {"x-ratelimit-requests-remaining": "0"}, "", noon)
    assert isinstance(bare, QuotaExceeded)
    assert classify("apifootball", 200, headers, SUCCESS, noon) is None
    assert classify("apifootball", 200, headers, REQUIRED.replace(
        '{"required":"At least one parameter is required."}', "{}"), noon) is None


async def test_quota_errors_zero_the_remaining_counts(upstream: Upstream) -> None:
    client = make(upstream)
    try:
        upstream.script(Reply(headers=QUOTA_HEADERS))
        await client.fetch("fixtures", {})
        upstream.script(Reply(body=MINUTE))
        await client.fetch("fixtures", {})
        assert client.quota.minute_remaining == 0 and client.quota.daily_remaining == 7320
        upstream.script(Reply(status=429, body=RAPID_DAILY))
        await client.fetch("fixtures", {})
        assert client.quota.daily_remaining == 0
        assert client.quota.requests == 3
    finally:
        await client.close()


# -- retries ------------------------------------------------------------------------------


async def test_upstream_errors_are_retried_then_succeed(upstream: Upstream) -> None:
    upstream.script(Reply(status=503, body=""), Reply(status=500, body=""), Reply())
    client = make(upstream, retries=2)
    try:
        raw = await client.fetch("fixtures", {"live": "all"})
    finally:
        await client.close()
    assert raw["error"] is None and raw["body"] == SUCCESS
    assert len(upstream.requests) == 3
    assert client.quota.requests == 3


async def test_retries_stop_after_the_limit_and_keep_the_last_answer(upstream: Upstream) -> None:
    upstream.script(Reply(status=502, body="<html>bad gateway</html>", content_type="text/html"))
    client = make(upstream, retries=2)
    try:
        raw = await client.fetch("fixtures", {})
    finally:
        await client.close()
    assert raw["error"] is not None and raw["error"]["type"] == "UpstreamError"
    assert raw["status"] == 502 and raw["body"] == "<html>bad gateway</html>"
    assert len(upstream.requests) == 3


@pytest.mark.parametrize("reply", [
    Reply(status=401, body=INVALID_KEY), Reply(status=403, body=UNSUBSCRIBED),
    Reply(body=DAILY), Reply(status=429, body=RAPID_DAILY), Reply(body=MINUTE),
    Reply(body=REQUIRED),
])
async def test_errors_retrying_cannot_fix_are_not_retried(upstream: Upstream, reply: Reply) -> None:
    upstream.script(reply)
    client = make(upstream, retries=3)
    try:
        raw = await client.fetch("fixtures", {})
    finally:
        await client.close()
    assert raw["error"] is not None
    assert len(upstream.requests) == 1


async def test_backoff_is_exponential_with_full_jitter(upstream: Upstream,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    bounds: list[tuple[float, float]] = []

    def uniform(a: float, b: float) -> float:
        bounds.append((a, b))
        return 0.0

    monkeypatch.setattr(random, "uniform", uniform)
    upstream.script(Reply(status=500, body=""))
    client = make(upstream, retries=3, backoff=0.5)
    try:
        await client.fetch("fixtures", {})
    finally:
        await client.close()
    assert bounds == [(0, 0.5), (0, 1.0), (0, 2.0)]


async def test_a_timeout_is_retried_and_typed(upstream: Upstream) -> None:
    upstream.script(Reply(delay=2.0))
    client = make(upstream, timeout=0.3, retries=1)
    try:
        started = time.monotonic()
        raw = await client.fetch("fixtures", {})
    finally:
        await client.close()
    assert raw["error"] is not None and raw["error"]["type"] == "Timeout"
    assert raw["status"] == 0 and raw["body"] == ""
    assert len(upstream.requests) == 2
    assert time.monotonic() - started < 1.5


async def test_an_unreachable_provider_is_a_connection_failure() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = build_client("hockey", "k", base_url=f"http://127.0.0.1:{port}", retries=1,
                          backoff=0.01)
    try:
        raw = await client.fetch("games", {"date": "2026-11-29"})
        with pytest.raises(ConnectionFailed) as caught:
            await client.call("games", {})
    finally:
        await client.close()
    assert raw["error"] is not None and raw["error"]["type"] == "ConnectionFailed"
    assert raw["status"] == 0 and caught.value.retryable


async def test_cancellation_goes_through(upstream: Upstream) -> None:
    upstream.script(Reply(delay=5.0))
    client = make(upstream, breaker_threshold=1)
    try:
        task = asyncio.ensure_future(client.fetch("fixtures", {}))
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert client.breaker.state == "closed"
    finally:
        await client.close()


# -- circuit ------------------------------------------------------------------------------


async def test_the_circuit_opens_after_repeated_failure_and_half_opens(upstream: Upstream) -> None:
    upstream.script(Reply(status=500, body=""))
    client = make(upstream, retries=1, breaker_threshold=2, breaker_cooldown=0.3)
    try:
        for _ in range(2):
            raw = await client.fetch("fixtures", {})
            assert raw["error"] is not None and raw["error"]["type"] == "UpstreamError"
        assert client.breaker.state == "open"
        assert len(upstream.requests) == 4
        raw = await client.fetch("fixtures", {})
        assert raw["error"] is not None and raw["error"]["type"] == "CircuitOpen"
        assert raw["status"] == 0 and len(upstream.requests) == 4
        with pytest.raises(CircuitOpen) as caught:
            await client.call("fixtures", {})
        assert caught.value.retry_after is not None and 0 < caught.value.retry_after <= 0.3
        await asyncio.sleep(0.35)
        assert client.breaker.state == "half-open"
        raw = await client.fetch("fixtures", {})  # the trial fails: open again
        assert raw["error"] is not None and raw["error"]["type"] == "UpstreamError"
        assert client.breaker.state == "open"
        await asyncio.sleep(0.35)
        upstream.script(Reply())
        raw = await client.fetch("fixtures", {})
        assert raw["error"] is None and client.breaker.state == "closed"
    finally:
        await client.close()


async def test_errors_of_the_request_do_not_open_the_circuit(upstream: Upstream) -> None:
    upstream.script(Reply(body=REQUIRED))
    client = make(upstream, breaker_threshold=2)
    try:
        for _ in range(4):
            raw = await client.fetch("fixtures", {})
            assert raw["error"] is not None and raw["error"]["type"] == "BadRequest"
        assert client.breaker.state == "closed"
    finally:
        await client.close()


async def test_half_open_lets_one_trial_through(upstream: Upstream) -> None:
    upstream.script(Reply(status=503, body=""))
    client = make(upstream, breaker_threshold=1, breaker_cooldown=0.1)
    try:
        await client.fetch("fixtures", {})
        await asyncio.sleep(0.15)
        upstream.script(Reply(delay=0.2))
        raws = await asyncio.gather(*(client.fetch("fixtures", {}) for _ in range(3)))
    finally:
        await client.close()
    kinds = sorted(r["error"]["type"] if r["error"] else "ok" for r in raws)
    assert kinds == ["CircuitOpen", "CircuitOpen", "ok"]
    assert len(upstream.requests) == 1
    assert client.breaker.state == "closed"


async def test_one_session_per_client(upstream: Upstream) -> None:
    client = make(upstream)
    try:
        await client.fetch("fixtures", {})
        session = client._session
        assert isinstance(session, aiohttp.ClientSession)
        await client.fetch("fixtures", {})
        assert client._session is session
    finally:
        await client.close()
    assert session.closed


# -- against the simulator ----------------------------------------------------------------

START = dt.datetime(2026, 11, 29, 15, 0, 0, tzinfo=dt.UTC).timestamp()
ENDPOINT = {"football": "fixtures", "basketball": "games", "hockey": "games"}
PARAMS = {"football": {"live": "all"}, "basketball": {"date": "2026-11-29"},
          "hockey": {"date": "2026-11-29"}}


@dataclass
class Sim:
    url: str
    control: aiohttp.ClientSession

    async def fault(self, kind: str, count: int = 1, **extra: Any) -> None:
        async with self.control.post(f"{self.url}/_sim/faults",
                                     json={"kind": kind, "count": count, **extra}) as resp:
            assert resp.status == 201, await resp.text()

    async def clear(self) -> None:
        async with self.control.delete(f"{self.url}/_sim/faults") as resp:
            assert resp.status == 200

    async def state(self) -> dict[str, Any]:
        async with self.control.get(f"{self.url}/_sim/state") as resp:
            data: dict[str, Any] = await resp.json()
            return data

    async def received(self, sport: str) -> int:
        return int((await self.state())["received"][sport])

    def client(self, sport: str = "football", key: str = "good", **kw: Any) -> Any:
        kw.setdefault("retries", 0)
        kw.setdefault("backoff", 0.01)
        return build_client(sport, key, base_url=self.url, **kw)


@pytest.fixture(scope="module")
async def simulator_url() -> AsyncIterator[str]:
    from pipeline.simulator import ManualClock, World, serve

    async with serve(World(7, ManualClock(START)), plan="pro", keys={"good"}) as url:
        yield url


@pytest.fixture
async def sim(simulator_url: str) -> AsyncIterator[Sim]:
    async with aiohttp.ClientSession() as control:
        s = Sim(simulator_url, control)
        await s.clear()
        async with control.post(f"{simulator_url}/_sim/clock", json={"advance": 60}) as resp:
            assert resp.status == 200  # a fresh minute window for every test
        try:
            yield s
        finally:
            await s.clear()


@pytest.mark.parametrize("rapidapi", [True, False], ids=["rapidapi", "direct"])
@pytest.mark.parametrize("sport", ["football", "basketball", "hockey"])
async def test_simulator_success_in_both_modes(sim: Sim, sport: str, rapidapi: bool) -> None:
    before = await sim.state()
    client = sim.client(sport, rapidapi=rapidapi)
    try:
        raw = await client.fetch(ENDPOINT[sport], PARAMS[sport])
    finally:
        await client.close()
    after = await sim.state()
    assert raw["error"] is None, raw["error"]
    assert raw["status"] == 200 and raw["sport"] == sport and raw["version"] == 1
    assert raw["endpoint"] == ENDPOINT[sport] and raw["params"] == PARAMS[sport]
    data = json.loads(raw["body"])
    assert data["errors"] == [] and data["results"] == len(data["response"]) > 0
    assert ("paging" in data) == (sport == "football")
    h = raw["headers"]
    assert h["content-type"].startswith("application/json")
    assert ("x-ratelimit-requests-reset" in h) == rapidapi
    assert h["server"] == ("RapidAPI-1.2.8" if rapidapi else "nginx")
    q = client.quota
    assert q.daily_limit == 7500 and q.minute_limit == 300
    assert q.daily_remaining == int(h["x-ratelimit-requests-remaining"]) < 7500
    assert q.minute_remaining == int(h["x-ratelimit-remaining"]) < 300
    assert after["requests"][sport] == before["requests"][sport] + 1


@pytest.mark.parametrize(("rapidapi", "key", "fault", "kind", "status"), [
    (True, "stolen", None, AuthError, 401),
    (False, "stolen", None, AuthError, 200),
    (False, "", None, AuthError, 200),
    (True, "unsubscribed", None, NotSubscribed, 403),
    (True, "good", "quota_day", QuotaExceeded, 429),
    (False, "good", "quota_day", QuotaExceeded, 200),
    (True, "good", "quota_minute", RateLimited, 429),
    (False, "good", "quota_minute", RateLimited, 200),
    (True, "good", "error500", UpstreamError, 500),
    (True, "good", "error502", UpstreamError, 502),
    (False, "good", "error503", UpstreamError, 503),
    (True, "good", "html", UpstreamError, 502),
    (True, "good", "malformed", MalformedResponse, 200),
    (False, "good", "truncated", MalformedResponse, 200),
    (True, "good", "empty204", MalformedResponse, 204),
], ids=lambda v: v.__name__ if isinstance(v, type) else None)
async def test_simulator_error_shapes_become_typed_errors(
        sim: Sim, rapidapi: bool, key: str, fault: str | None, kind: type[ProviderError],
        status: int) -> None:
    if fault:
        await sim.fault(fault, sport="hockey")
    received = await sim.received("hockey")
    client = sim.client("hockey", key, rapidapi=rapidapi)
    try:
        raw = await client.fetch("games", PARAMS["hockey"])
    finally:
        await client.close()
    assert await sim.received("hockey") == received + 1
    assert raw["error"] is not None and raw["error"]["type"] == kind.__name__, raw
    assert raw["status"] == status
    if fault == "quota_day":
        assert client.quota.daily_remaining == 0
    if fault == "quota_minute":
        assert client.quota.minute_remaining == 0
    if fault == "html":
        assert raw["body"].startswith("<html>") and "502 Bad Gateway" in raw["body"]
    if fault == "malformed":
        assert raw["body"].startswith('{"get":"games"') and ",," in raw["body"]
        with pytest.raises(ValueError):
            json.loads(raw["body"])
    if fault == "truncated":
        assert raw["body"].startswith('{"get":"games"')
        with pytest.raises(ValueError):
            json.loads(raw["body"])


async def test_simulator_quota_retry_after_is_the_gateway_reset(sim: Sim) -> None:
    await sim.fault("quota_day")
    client = sim.client()
    try:
        with pytest.raises(QuotaExceeded) as caught:
            await client.call("fixtures", {"live": "all"})
    finally:
        await client.close()
    assert caught.value.record is not None
    reset = caught.value.record["headers"]["x-ratelimit-requests-reset"]
    assert caught.value.retry_after == float(reset) and not caught.value.retryable


async def test_simulator_bad_parameters_are_a_bad_request(sim: Sim) -> None:
    client = sim.client("football", rapidapi=False)
    try:
        with pytest.raises(BadRequest) as caught:
            await client.call("fixtures", {"live": "all", "league": "39", "bogus": "1"})
    finally:
        await client.close()
    assert caught.value.status == 200 and not caught.value.retryable


async def test_simulator_5xx_are_retried_then_succeed(sim: Sim) -> None:
    await sim.fault("error500", count=1, sport="basketball")
    await sim.fault("error503", count=1, sport="basketball")
    before = await sim.state()
    client = sim.client("basketball", retries=2)
    try:
        raw = await client.fetch("games", PARAMS["basketball"])
    finally:
        await client.close()
    after = await sim.state()
    assert raw["error"] is None and raw["status"] == 200
    assert after["received"]["basketball"] == before["received"]["basketball"] + 3
    assert after["requests"]["basketball"] == before["requests"]["basketball"] + 1
    assert client.quota.requests == 3


@pytest.mark.parametrize(("key", "fault"), [
    ("stolen", None), ("unsubscribed", None), ("good", "quota_day"), ("good", "quota_minute"),
])
async def test_simulator_no_retry_when_retrying_cannot_help(sim: Sim, key: str,
                                                            fault: str | None) -> None:
    if fault:
        await sim.fault(fault, count=-1, sport="football")
    received = await sim.received("football")
    client = sim.client("football", key, retries=3)
    try:
        raw = await client.fetch("fixtures", {"live": "all"})
    finally:
        await client.close()
    assert raw["error"] is not None
    assert await sim.received("football") == received + 1


async def test_simulator_timeout(sim: Sim) -> None:
    await sim.fault("timeout", count=1, sport="hockey", delay=3.0)
    client = sim.client("hockey", timeout=0.5)
    try:
        started = time.monotonic()
        raw = await client.fetch("games", PARAMS["hockey"])
        took = time.monotonic() - started
    finally:
        await client.close()
    assert raw["error"] is not None and raw["error"]["type"] == "Timeout"
    assert raw["status"] == 0 and 0.4 < took < 1.5


async def test_simulator_a_timeout_is_retried(sim: Sim) -> None:
    await sim.fault("timeout", count=1, sport="hockey", delay=3.0)
    received = await sim.received("hockey")
    client = sim.client("hockey", timeout=0.5, retries=1)
    try:
        raw = await client.fetch("games", PARAMS["hockey"])
    finally:
        await client.close()
    assert raw["error"] is None
    assert await sim.received("hockey") == received + 2


async def test_simulator_slow_answers_within_the_timeout_succeed(sim: Sim) -> None:
    await sim.fault("slow", count=1, sport="football", delay=0.3)
    client = sim.client("football", timeout=2.0)
    try:
        raw = await client.fetch("fixtures", {"live": "all"})
    finally:
        await client.close()
    assert raw["error"] is None and raw["latency_ms"] >= 300


async def test_simulator_circuit_opens_and_half_opens(sim: Sim) -> None:
    await sim.fault("error503", count=-1, sport="basketball")
    client = sim.client("basketball", breaker_threshold=3, breaker_cooldown=0.4)
    try:
        for _ in range(3):
            raw = await client.fetch("games", PARAMS["basketball"])
            assert raw["error"] is not None and raw["error"]["type"] == "UpstreamError"
        assert client.breaker.state == "open"
        received = await sim.received("basketball")
        raw = await client.fetch("games", PARAMS["basketball"])
        assert raw["error"] is not None and raw["error"]["type"] == "CircuitOpen"
        assert raw["status"] == 0
        assert await sim.received("basketball") == received
        await asyncio.sleep(0.45)
        assert client.breaker.state == "half-open"
        await sim.clear()
        raw = await client.fetch("games", PARAMS["basketball"])
        assert raw["error"] is None
        assert client.breaker.state == "closed"
        assert await sim.received("basketball") == received + 1
    finally:
        await client.close()


async def test_simulator_per_minute_limit_of_the_plan() -> None:
    from pipeline.simulator import ManualClock, World, serve

    async with serve(World(3, ManualClock(START)), plan="free") as url:
        client = build_client("football", "mine", base_url=url, rapidapi=False, retries=2)
        try:
            raws = [await client.fetch("fixtures", {"live": "all"}) for _ in range(11)]
        finally:
            await client.close()
    assert [r["error"] for r in raws[:10]] == [None] * 10
    assert raws[10]["error"] is not None and raws[10]["error"]["type"] == "RateLimited"
    assert client.quota.minute_remaining == 0 and client.quota.minute_limit == 10
    assert client.quota.daily_remaining == 90 and client.quota.requests == 11
