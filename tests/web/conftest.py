"""An edge process for real, against the run's broker, Redis and Postgres.

Deltas are produced straight to ``match-deltas`` and snapshots written with the
sinks, so these tests need no worker.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import asyncpg
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from pipeline.settings import Settings
from pipeline.sinks import PostgresHistory, RedisSnapshots
from tables import codec
from tables.migrate import migrate
from tables.redis_keys import RedisKeys
from tests.support import Proc, free_port, wait_http

TIERS = """
[anonymous]
enabled = true
rest_per_minute = 30
streams = 3
channels = ["public"]
history_hours = 1

[free]
rest_per_minute = 40
streams = 2
channels = ["public"]
history_hours = 24

[pro]
rest_per_minute = 1000
streams = 20
channels = ["public", "private", "presence"]
history_hours = 168
"""


def delta(mid: str, seq: int, league: str = "39", sport: str = "football", **extra) -> dict:
    d = {"version": 1, "match_id": mid, "seq": seq, "ts": 1000.0 + seq, "sport": sport,
         "league": league, "kinds": ["score"], "changes": [{"op": "replace", "path": "/score/home", "value": seq}],
         "events": [], "fetched_at": 1000.0 + seq}
    d.update(extra)
    return d


def snapshot(mid: str, seq: int, phase: str = "live", league: str = "39") -> dict:
    return {
        "version": 1, "id": mid, "sport": "football", "provider": "apifootball",
        "provider_id": mid.rsplit("-", 1)[1],
        "league": {"id": league, "name": "Premier League", "country": "England", "season": "2024",
                   "round": "R1"},
        "home": {"id": "1", "name": "A", "logo": None}, "away": {"id": "2", "name": "B", "logo": None},
        "status": {"phase": phase, "code": "1H", "label": "First Half", "period": 1, "clock": "10"},
        "score": {"home": seq, "away": 0, "periods": {}}, "start_time": "2026-11-29T15:00:00Z",
        "venue": None, "events": [], "detail": None, "seq": seq, "updated_at": 1.0 * seq,
        "fetched_at": 1.0 * seq,
    }


@dataclasses.dataclass
class EdgeEnv:
    settings: Settings
    urls: list[str]
    procs: list[Proc]
    producer: AIOKafkaProducer
    pool: asyncpg.Pool
    start_edge: Callable[[], object]

    @property
    def url(self) -> str:
        return self.urls[0]

    async def send(self, d: dict) -> None:
        await self.producer.send_and_wait(self.settings.topic("match-deltas"), codec.dumps(d),
                                          key=d["match_id"].encode())

    async def store(self, snap: dict) -> None:
        import redis.asyncio as aioredis

        client = aioredis.Redis.from_url(self.settings.redis_url)
        await RedisSnapshots(client, RedisKeys(self.settings.redis_prefix)).write([snap])
        await client.aclose()
        await PostgresHistory(self.pool, self.settings.db_schema).write_snapshots([snap])


@pytest.fixture
async def edge_env(settings, pg, redis_client, tmp_path: Path) -> AsyncIterator[EdgeEnv]:
    tiers = tmp_path / "tiers.toml"
    tiers.write_text(TIERS)
    s = dataclasses.replace(settings, tiers_file=str(tiers))
    await migrate(pg, s.db_schema)
    admin = AIOKafkaAdminClient(bootstrap_servers=s.kafka_bootstrap)
    await admin.start()
    await admin.create_topics([NewTopic(s.topic("match-deltas"), num_partitions=4, replication_factor=1)])
    await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=s.kafka_bootstrap)
    await producer.start()
    pool = await asyncpg.create_pool(s.database_url, min_size=1, max_size=2)
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
        yield EdgeEnv(s, urls, procs, producer, pool, start_edge)
    finally:
        for p in procs:
            p.stop()
        await producer.stop()
        await pool.close()
