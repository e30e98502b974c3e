"""The ``sink_retrying`` rule end to end: a real worker, fed by the simulator, whose
Postgres goes away fires the alert once and resolves it once after Postgres is back on
the same port; the webhook gets exactly one firing and one resolved message."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import httpx
import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from pipeline import embedded
from tests.support import Proc, free_port, local_webhook, wait_http, with_simulator


class Receiver:
    def __init__(self) -> None:
        self.received: list[str] = []

    async def handle(self, request: web.Request) -> web.Response:
        self.received.append((await request.json())["text"])
        return web.Response(text="ok")

    def about(self, rule: str) -> list[str]:
        return [t for t in self.received if f"] {rule} " in t]


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[Receiver, str]]:
    rec = Receiver()
    async with local_webhook(rec.handle) as url:
        yield rec, url


def sample(text: str, name: str, **labels: str) -> float:
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
               if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


async def test_a_stopped_postgres_fires_sink_retrying_once_and_resolves_once(
        settings, redis_client, receiver, tmp_path) -> None:
    rec, hook = receiver
    pg_port, web_port = free_port(), free_port()
    postgres = await asyncio.to_thread(embedded.start_postgres, tmp_path / "postgres", pg_port)
    logs = tmp_path / "logs"
    s, sim = with_simulator(settings, logs, database_url=postgres.url, alert_webhook_url=hook,
                            worker_web_port=web_port)
    worker = Proc("worker", ["worker"], s, logs)
    url = f"http://127.0.0.1:{web_port}"

    async def wait(what: str, check, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not await check():
            assert time.monotonic() < deadline, f"{what}: {rec.received}\n{worker.log()[-3000:]}"
            await asyncio.sleep(0.2)

    try:
        await wait_http(url + "/healthz", worker)
        async with httpx.AsyncClient(timeout=10) as client:
            async def postgres_written() -> bool:
                text = (await client.get(url + "/metrics")).text
                return sample(text, "bts_sink_write_seconds_count", sink="postgres") > 0

            await wait("a first postgres write", postgres_written, 30)
            assert rec.about("sink_retrying") == []
            postgres.stop()

            async def fired() -> bool:
                return bool(rec.about("sink_retrying"))

            await wait("sink_retrying firing", fired, 20)
            assert rec.about("sink_retrying") == [rec.about("sink_retrying")[0]]
            assert "[FIRING] sink_retrying" in rec.about("sink_retrying")[0]
            assert "postgres" in rec.about("sink_retrying")[0]
            text = (await client.get(url + "/metrics")).text
            assert sample(text, "bts_sink_retries_total", sink="postgres") >= 1
            assert sample(text, "bts_alerts_firing", rule="sink_retrying") == 1
            await asyncio.sleep(2)  # still down: no second firing while it keeps retrying
            assert len(rec.about("sink_retrying")) == 1

            postgres = await asyncio.to_thread(embedded.start_postgres, tmp_path / "postgres",
                                               pg_port)

            async def resolved() -> bool:
                return len(rec.about("sink_retrying")) >= 2

            await wait("sink_retrying resolved", resolved, 30)
            await asyncio.sleep(1.5)  # nothing more arrives for the rule
            messages = rec.about("sink_retrying")
            assert len(messages) == 2, messages
            assert "[FIRING]" in messages[0] and "[RESOLVED]" in messages[1]
            text = (await client.get(url + "/metrics")).text
            assert sample(text, "bts_alerts_firing", rule="sink_retrying") == 0
        assert worker.alive(), worker.log()[-3000:]
        assert "alert evaluation failed" not in worker.log()
    finally:
        worker.stop()
        sim.stop()
        postgres.stop()
