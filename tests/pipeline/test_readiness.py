"""``/readyz`` on a worker and an edge follows the broker, Redis and Postgres: unready
while one is gone, ready again once it is back on the same port."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable

import httpx

from pipeline import embedded
from tests.support import Proc, free_port, wait_http


async def readyz(client: httpx.AsyncClient, url: str) -> tuple[int, dict]:
    try:
        resp = await client.get(url + "/readyz")
    except httpx.HTTPError as exc:
        return 0, {"error": repr(exc)}
    return resp.status_code, resp.json()


async def until(what: str, check: Callable[[], Awaitable[bool]], timeout: float,
                logs: Callable[[], str]) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout} s\n{logs()[-3000:]}")
        await asyncio.sleep(0.2)


def expect(client: httpx.AsyncClient, url: str, status: int, **checks: bool):
    async def check() -> bool:
        code, body = await readyz(client, url)
        return code == status and all(body.get("checks", {}).get(k) is v for k, v in checks.items())
    return check


async def test_worker_and_edge_follow_the_broker(settings, tmp_path) -> None:
    port = free_port()
    broker = embedded.start_broker(tmp_path / "broker", port=port)
    worker_port, edge_port = free_port(), free_port()
    s = dataclasses.replace(settings, kafka_url=broker.url, worker_web_port=worker_port,
                            edge_port=edge_port, provider_url=f"http://127.0.0.1:{free_port()}")
    logs = tmp_path / "logs"
    worker = Proc("worker", ["worker"], s, logs)
    edge = Proc("edge", ["edge", "--port", str(edge_port)], s, logs)
    w, e = f"http://127.0.0.1:{worker_port}", f"http://127.0.0.1:{edge_port}"

    def both() -> str:
        return worker.log()[-2500:] + "\n---- edge\n" + edge.log()[-2500:]

    try:
        await wait_http(w + "/healthz", worker)
        await wait_http(e + "/healthz", edge)
        async with httpx.AsyncClient(timeout=10) as client:
            await until("worker ready", expect(client, w, 200), 30, both)
            await until("edge ready", expect(client, e, 200), 20, both)
            broker.stop()
            await until("worker unready", expect(client, w, 503, broker=False, redis=True), 20, both)
            await until("edge unready", expect(client, e, 503, broker=False, redis=True), 20, both)
            # a restarted Tansu keeps nothing (memory storage): readiness must come back anyway
            broker = embedded.start_broker(tmp_path / "broker", port=port)
            await until("worker ready again", expect(client, w, 200), 40, both)
            await until("edge ready again", expect(client, e, 200), 20, both)
        assert worker.alive() and edge.alive()
    finally:
        edge.stop()
        worker.stop()
        broker.stop()


async def test_worker_follows_redis_and_postgres(settings, tmp_path) -> None:
    redis_port, pg_port = free_port(), free_port()
    redis = embedded.start_redis(tmp_path / "redis", redis_port)
    postgres = await asyncio.to_thread(embedded.start_postgres, tmp_path / "postgres", pg_port)
    worker_port = free_port()
    s = dataclasses.replace(settings, redis_url=redis.url, database_url=postgres.url,
                            worker_web_port=worker_port,
                            provider_url=f"http://127.0.0.1:{free_port()}")
    worker = Proc("worker", ["worker"], s, tmp_path / "logs")
    url = f"http://127.0.0.1:{worker_port}"

    def logs() -> str:
        return worker.log()

    try:
        await wait_http(url + "/healthz", worker)
        async with httpx.AsyncClient(timeout=10) as client:
            await until("ready", expect(client, url, 200, broker=True, redis=True, postgres=True),
                        30, logs)
            redis.stop()
            await until("unready without redis",
                        expect(client, url, 503, redis=False, postgres=True, broker=True), 15, logs)
            redis = embedded.start_redis(tmp_path / "redis", redis_port)
            await until("ready with redis back", expect(client, url, 200), 20, logs)
            postgres.stop()
            await until("unready without postgres",
                        expect(client, url, 503, postgres=False, redis=True, broker=True), 15, logs)
            postgres = await asyncio.to_thread(embedded.start_postgres, tmp_path / "postgres",
                                               pg_port)
            await until("ready with postgres back", expect(client, url, 200), 20, logs)
        assert worker.alive(), logs()[-3000:]
    finally:
        worker.stop()
        redis.stop()
        postgres.stop()
