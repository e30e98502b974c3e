"""Shared fixtures: a real broker, Redis and Postgres for the whole run, isolated per test.

The broker is always a Tansu started for this run on a free port. Redis and
Postgres come from ``REDIS_URL`` / ``DATABASE_URL`` when set, else the local
servers on their standard ports when reachable, else embedded ones started for
this run. Every test gets its own topic prefix, Redis key prefix and Postgres
schema, so runs and tests never see each other's data.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest
import redis.asyncio as aioredis

from pipeline import embedded
from pipeline.settings import Settings
from tables.migrate import quote_ident

#: Real API-Football responses, byte for byte (their sources are in SOURCES.md there).
SAMPLES = Path(__file__).resolve().parent / "samples" / "api-football"


@pytest.fixture(scope="session")
def workdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="bts-test-") as d:
        yield Path(d)


@pytest.fixture(scope="session")
def kafka_url(workdir: Path) -> Iterator[str]:
    broker = embedded.start_broker(workdir / "broker")
    try:
        yield broker.url
    finally:
        broker.stop()


def _reachable(url: str, default_port: int) -> bool:
    from urllib.parse import urlparse

    p = urlparse(url)
    return embedded.port_open(p.hostname or "127.0.0.1", p.port or default_port)


@pytest.fixture(scope="session")
def redis_url(workdir: Path) -> Iterator[str]:
    url = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"
    if _reachable(url, 6379):
        yield url
        return
    server = embedded.start_redis(workdir / "redis")
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(scope="session")
def database_url(workdir: Path) -> Iterator[str]:
    url = os.environ.get("DATABASE_URL") or "postgresql://postgres@127.0.0.1:5432/test"
    if _reachable(url, 5432) and _pg_works(url):
        yield url
        return
    server = embedded.start_postgres(workdir / "postgres")
    try:
        yield server.url
    finally:
        server.stop()


def _pg_works(url: str) -> bool:
    async def probe() -> bool:
        try:
            conn = await asyncpg.connect(url, timeout=3)
        except Exception:  # noqa: BLE001 - any failure means "use the embedded one"
            return False
        await conn.close()
        return True

    return asyncio.run(probe())


@pytest.fixture
def run_id() -> str:
    return uuid.uuid4().hex[:10]


@pytest.fixture
def settings(kafka_url: str, redis_url: str, database_url: str, run_id: str, tmp_path: Path) -> Settings:
    return Settings.from_env(
        {},
        kafka_url=kafka_url,
        redis_url=redis_url,
        database_url=database_url,
        topic_prefix=f"t{run_id}-",
        redis_prefix=f"t{run_id}:",
        db_schema=f"t_{run_id}",
        app_id="w",
        partitions=4,
        store="memory",
        data_dir=str(tmp_path / "data"),
        fetch_wait_ms=10,
        edge_snapshot_cache_ms=0,  # tests that want it turn it on
        log_format="text",
        apifootball_key="test-key",
        apibasketball_key="test-key",
        apihockey_key="test-key",
    )


@pytest.fixture
async def redis_client(settings: Settings) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(settings.redis_url)
    try:
        yield client
    finally:
        keys = [k async for k in client.scan_iter(match=settings.redis_prefix + "*", count=1000)]
        if keys:
            await client.delete(*keys)
        await client.aclose()


@pytest.fixture
async def pg(settings: Settings) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(settings.database_url)
    try:
        yield conn
    finally:
        await conn.execute(f"DROP SCHEMA IF EXISTS {quote_ident(settings.db_schema)} CASCADE")
        await conn.close()
