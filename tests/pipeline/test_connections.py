"""Clients of the shared servers, against the real ones."""

from __future__ import annotations

import asyncio
import uuid

from pipeline.connections import REDIS_MAX_CONNECTIONS, redis_client


async def test_a_burst_of_redis_commands_waits_for_connections_instead_of_failing(settings,
                                                                                redis_client):
    name = f"burst-{uuid.uuid4().hex[:8]}"
    client = redis_client_for(settings, name)
    key = f"{settings.redis_prefix}nothing"
    try:
        # each command holds its connection 0.2 s: three times more at once than connections
        results = await asyncio.gather(*(client.blpop([key], timeout=0.2)
                                         for _ in range(3 * REDIS_MAX_CONNECTIONS)))
        assert results == [None] * (3 * REDIS_MAX_CONNECTIONS)
        clients = [c for c in await redis_client.client_list() if c.get("name") == name]
        assert 0 < len(clients) <= REDIS_MAX_CONNECTIONS
    finally:
        await client.aclose()


def redis_client_for(settings, name: str):  # the fixture of the same name is a plain client
    return redis_client(settings, socket_timeout=2, client_name=name)
