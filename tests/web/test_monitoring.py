"""Edge monitoring: /metrics moves with its events, /readyz follows Redis and Postgres,
/admin is behind the admin key."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from types import SimpleNamespace

import httpx
from prometheus_client.parser import text_string_to_metric_families

from pipeline import embedded
from tests.support import SSE, Proc, free_port, wait_http
from tests.web.conftest import delta
from web.hub import Entry, Hub, Subscriber
from web.metrics import EdgeMetrics


def sample(text: str, name: str, **labels: str) -> float:
    """The value of one sample (0 when absent)."""
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return 0.0


async def scrape(client: httpx.AsyncClient, url: str) -> str:
    resp = await client.get(url + "/metrics")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/plain")
    return resp.text


async def until(check, timeout: float = 15.0, every: float = 0.2):
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(every)


async def test_edge_metrics_move_with_requests_clients_and_fanout(edge_env) -> None:
    url = edge_env.url
    async with httpx.AsyncClient(timeout=10) as client:
        before = await scrape(client, url)
        assert (await client.get(url + "/v1/sports")).status_code == 200
        assert (await client.get(url + "/v1/matches/football-apifootball-404")).status_code == 404
        text = await scrape(client, url)
        for route, status in (("/v1/sports", "200"), ("/v1/matches/{match_id}", "404")):
            assert (sample(text, "bts_http_requests_total", route=route, status=status)
                    == sample(before, "bts_http_requests_total", route=route, status=status) + 1)
        async with SSE(client, url + "/v1/stream?channels=sport.football") as sse:
            await sse.next()
            text = await scrape(client, url)
            assert sample(text, "bts_clients", transport="sse", tier="anonymous") == 1
            await edge_env.send(delta("football-apifootball-77", 1))
            await sse.events("delta", 1)
            text = await scrape(client, url)
            assert sample(text, "bts_fanout_latency_seconds_count") >= 1
        ready = await client.get(url + "/readyz")
        assert ready.status_code == 200
        assert ready.json() == {"status": "ready",
                                "checks": {"broker": True, "redis": True, "postgres": True}}

        async def gone() -> bool:
            t = await scrape(client, url)
            return sample(t, "bts_clients", transport="sse", tier="anonymous") == 0

        await until(gone)


def test_slow_clients_are_counted_when_reset() -> None:
    hub = Hub()
    metrics = EdgeMetrics()
    metrics.attach(SimpleNamespace(hub=hub, feed=SimpleNamespace(on_entry=hub.publish)))
    sub = Subscriber({"sport.football"}, maxsize=2)
    hub.add(sub)
    for offset in range(5):
        hub.publish(Entry(0, offset, "m", offset, ("sport.football",), b"{}", "c"))
    text = metrics.scrape().decode()
    assert sample(text, "bts_slow_clients_total", action="reset") == sub.resets > 0
    resets = sub.resets
    hub.remove(sub)  # the count survives the client
    assert sample(metrics.scrape().decode(), "bts_slow_clients_total", action="reset") == resets
    assert sample(metrics.scrape().decode(), "bts_fanout_latency_seconds_count") == 5


async def test_readyz_follows_redis_and_admin_needs_the_key(edge_env, tmp_path) -> None:
    port = free_port()
    redis = embedded.start_redis(tmp_path / "redis", port)
    s = dataclasses.replace(edge_env.settings, redis_url=redis.url, admin_key="s3cret-admin")
    web_port = free_port()
    proc = Proc("edge-monitored", ["edge", "--port", str(web_port)], s, tmp_path / "logs")
    url = f"http://127.0.0.1:{web_port}"
    try:
        await wait_http(url + "/healthz", proc)
        async with httpx.AsyncClient(timeout=10) as client:
            async def status() -> int:
                return (await client.get(url + "/readyz")).status_code

            await until(lambda: _is(status, 200))
            redis.stop()
            body = (await until(lambda: _json_if(client, url + "/readyz", 503)))
            assert body["checks"]["redis"] is False and body["checks"]["postgres"] is True
            redis = embedded.start_redis(tmp_path / "redis", port)
            await until(lambda: _is(status, 200), timeout=20)

            assert (await client.get(url + "/admin")).status_code == 401
            assert (await client.get(url + "/admin?key=wrong")).status_code == 401
            assert (await client.get(url + "/admin/api/status")).status_code == 401
            page = await client.get(url + "/admin?key=s3cret-admin")
            assert page.status_code == 200 and "BTS Guru" in page.text
            doc = (await client.get(url + "/admin/api/status",
                                    headers={"X-Admin-Key": "s3cret-admin"})).json()
            assert {"workers", "edges", "lag", "quota", "clients", "alerts", "analytics"} <= set(doc)
            assert doc["analytics"]["usage"]["keys"] == []
        # the edge without ADMIN_KEY has no admin page
        async with httpx.AsyncClient(timeout=10) as client:
            assert (await client.get(edge_env.url + "/admin?key=s3cret-admin")).status_code == 404
    finally:
        proc.stop()
        redis.stop()


async def test_readyz_is_unready_without_postgres(edge_env, tmp_path) -> None:
    s = dataclasses.replace(edge_env.settings,
                            database_url=f"postgresql://postgres@127.0.0.1:{free_port()}/none")
    web_port = free_port()
    proc = Proc("edge-no-pg", ["edge", "--port", str(web_port)], s, tmp_path / "logs")
    url = f"http://127.0.0.1:{web_port}"
    try:
        await wait_http(url + "/healthz", proc)
        async with httpx.AsyncClient(timeout=10) as client:
            body = await until(lambda: _json_if(client, url + "/readyz", 503))
            assert body["checks"]["postgres"] is False and body["checks"]["redis"] is True
    finally:
        proc.stop()


async def _is(status, expected: int) -> bool:
    return await status() == expected


async def _json_if(client: httpx.AsyncClient, url: str, expected: int) -> dict | None:
    resp = await client.get(url)
    return resp.json() if resp.status_code == expected else None
