"""The snapshot reader against real Redis: what it keeps in memory, and for how long."""

from __future__ import annotations

import asyncio

from tables import codec
from tables.redis_keys import RedisKeys
from tests.web.conftest import snapshot
from web.snapshots import KEPT_MAX, SnapshotReader, seq_of

M1 = "football-apifootball-101"


async def test_kept_snapshot_expires_and_follows_the_newest_seq(settings, redis_client):
    keys = RedisKeys(settings.redis_prefix)
    newest: dict[str, int] = {}
    reader = SnapshotReader(redis_client, None, keys, settings.db_schema,  # type: ignore[arg-type]
                            keep_ms=300, newest_seq=lambda m: newest.get(m, 0))
    await redis_client.hset(keys.match(M1), "json", codec.dumps(snapshot(M1, 1)))
    data, state = await reader.get(M1)
    assert state == "hit" and seq_of(data) == 1
    await redis_client.hset(keys.match(M1), "json", codec.dumps(snapshot(M1, 2)))
    assert seq_of((await reader.get(M1))[0]) == 1  # kept
    newest[M1] = 2
    assert seq_of((await reader.get(M1))[0]) == 2  # the edge has seen seq 2: read again
    await redis_client.hset(keys.match(M1), "json", codec.dumps(snapshot(M1, 3)))
    assert seq_of((await reader.get(M1))[0]) == 2
    await asyncio.sleep(0.4)
    assert seq_of((await reader.get(M1))[0]) == 3  # expired


async def test_nothing_kept_when_turned_off_and_the_number_kept_is_bounded(settings, redis_client):
    keys = RedisKeys(settings.redis_prefix)
    off = SnapshotReader(redis_client, None, keys, settings.db_schema)  # type: ignore[arg-type]
    await redis_client.hset(keys.match(M1), "json", codec.dumps(snapshot(M1, 1)))
    await off.get(M1)
    await redis_client.hset(keys.match(M1), "json", codec.dumps(snapshot(M1, 2)))
    assert seq_of((await off.get(M1))[0]) == 2 and not off._kept
    on = SnapshotReader(redis_client, None, keys, settings.db_schema, keep_ms=60_000)  # type: ignore[arg-type]
    for i in range(KEPT_MAX + 5):
        on._keep(f"football-apifootball-{i}", b'{"seq": 1}')
    assert len(on._kept) == KEPT_MAX and "football-apifootball-0" not in on._kept


def test_seq_of_reads_compact_and_spaced_json():
    assert seq_of(b'{"id":"x","seq":12,"a":1}') == 12
    assert seq_of(b'{"id": "x", "seq": 7}') == 7
    assert seq_of(b'{"id": "x"}') == 0
