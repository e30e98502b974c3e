"""How the detect agent recovers the last state of a match its table does not hold:
from the real Redis, then the real Postgres, and without waiting long for an absent
Postgres (a new match must not stop the stream while the history store is away)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator

import pytest

from pipeline.app import Pipeline
from pipeline.settings import Settings
from tests.pipeline.test_sinks import snapshot
from tests.support import free_port

A, B, C = (f"football-apifootball-{n}" for n in (101, 102, 103))


@contextlib.asynccontextmanager
async def started(settings: Settings) -> AsyncIterator[Pipeline]:
    """A pipeline (no poller) whose stores are open, as the worker opens them."""
    p = Pipeline(settings, poll=False)
    await p.stores.on_start()
    try:
        yield p
    finally:
        await p.stores.on_stop()


@pytest.fixture
async def pipeline(settings: Settings, pg, redis_client) -> AsyncIterator[Pipeline]:
    async with started(settings) as p:
        yield p


async def test_state_comes_from_redis_then_postgres(pipeline: Pipeline) -> None:
    await pipeline.stores.redis_snapshots.write([snapshot(7, mid=A)])
    await pipeline.stores.history.write_snapshots([snapshot(4, mid=B), snapshot(9, mid=A)])

    got = await pipeline.recover([A.encode(), B.encode(), C.encode()])

    assert set(got) == {A.encode(), B.encode()}
    assert got[A.encode()]["seq"] == 7  # Redis answers first; Postgres is asked only for the rest
    assert got[B.encode()]["seq"] == 4
    assert got[B.encode()]["snapshot"]["id"] == B
    assert not pipeline.monitor.metrics.retrying("postgres")


async def test_an_absent_postgres_is_waited_for_only_so_long(
        settings: Settings, redis_client) -> None:
    away = f"postgresql://postgres@127.0.0.1:{free_port()}/postgres"
    async with started(dataclasses.replace(settings, database_url=away)) as p:
        await p.stores.redis_snapshots.write([snapshot(3, mid=A)])
        p.recover_patience = 1.0
        started_at = time.monotonic()
        got = await asyncio.wait_for(p.recover([A.encode(), B.encode()]), 30)
        assert time.monotonic() - started_at >= 1.0  # it did wait, and retry, for Postgres
        assert set(got) == {A.encode()} and got[A.encode()]["seq"] == 3
        metrics = p.monitor.metrics
        assert metrics.retrying("postgres")  # what the sink_retrying alert sees
        assert metrics.observations().sinks_retrying["postgres"] >= 1

        # While Postgres is known to be away, the next new match does not wait for it.
        p.recover_patience = 60.0
        assert await asyncio.wait_for(p.recover([C.encode()]), 30) == {}
