"""Bad records on the sinks' topics, through a real worker: each becomes a dead letter,
every good record around it lands in Postgres, and no sink agent crashes.

The records are written straight to ``match-deltas`` and ``match-snapshots``, as a
second producer (a replay, a partner's bridge, an older worker) could write them. A
NUL character in a string is valid JSON that Postgres refuses in ``jsonb``: before the
sinks wrote a refused batch row by row, it crashed the agent, and Faust acknowledged
the whole batch, good records included.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import time

from aiokafka import AIOKafkaProducer

from tables import codec
from tables.migrate import migrate
from tables.redis_keys import RedisKeys
from tests.reliability.conftest import read_topic
from tests.support import Proc, free_port, wait_http

MID = "football-apifootball-77"


def a_delta(seq: int, mid: str = MID) -> dict:
    return {"version": 1, "match_id": mid, "seq": seq, "ts": 1000.0 + seq, "sport": "football",
            "league": "39", "kinds": ["score"], "changes": [], "events": [], "fetched_at": 1.0}


def a_snapshot(seq: int, mid: str = MID) -> dict:
    return {
        "version": 1, "id": mid, "sport": "football", "provider": "apifootball",
        "provider_id": mid.rsplit("-", 1)[1],
        "league": {"id": "39", "name": "Premier League", "country": "England", "season": "2024",
                   "round": "R1"},
        "home": {"id": "1", "name": "A", "logo": None}, "away": {"id": "2", "name": "B", "logo": None},
        "status": {"phase": "live", "code": "1H", "label": "First Half", "period": 1, "clock": "10"},
        "score": {"home": seq, "away": 0, "periods": {}}, "start_time": "2026-11-29T15:00:00Z",
        "venue": None, "events": [], "detail": None, "seq": seq, "updated_at": 1.0 * seq,
        "fetched_at": 1.0 * seq,
    }


async def test_bad_records_on_the_sink_topics_become_dead_letters_and_lose_nothing(
        settings, pg, redis_client, tmp_path) -> None:
    await migrate(pg, settings.db_schema)
    web_port = free_port()
    s = dataclasses.replace(settings, provider_url=f"http://127.0.0.1:{free_port()}",
                            worker_web_port=web_port, clock_start=time.time())
    worker = Proc("worker", ["worker"], s, tmp_path / "logs")
    nul_delta = a_delta(3)
    nul_delta["changes"] = [{"path": "home.name", "from": "A", "to": "A\u0000"}]
    nul_snapshot = a_snapshot(3, mid=MID + "1")
    nul_snapshot["home"]["name"] = "\u0000"
    no_seq = a_delta(4)
    del no_seq["seq"]
    other = MID + "2"
    deltas = [codec.dumps(d) for d in (a_delta(1), a_delta(2), nul_delta, no_seq)] + [
        b"{not json", b"[1, 2]"] + [codec.dumps(a_delta(n)) for n in (5, 6)] + [
        codec.dumps(a_delta(n, other)) for n in (1, 2, 3)]
    broken_start = copy.deepcopy(a_snapshot(2, mid=other))
    broken_start["start_time"] = "soon"
    snapshots = [codec.dumps(m) for m in (a_snapshot(5), nul_snapshot, broken_start,
                                          a_snapshot(3, mid=other))]
    try:
        await wait_http(f"http://127.0.0.1:{web_port}/healthz", worker)
        producer = AIOKafkaProducer(bootstrap_servers=s.kafka_bootstrap, linger_ms=20)
        await producer.start()
        try:
            # One key, one partition: the good records after the bad ones in the same
            # partition must be stored too.
            for value in deltas:
                await producer.send(s.topic("match-deltas"), value, key=MID.encode())
            for value in snapshots:
                await producer.send(s.topic("match-snapshots"), value, key=MID.encode())
            await producer.flush()
        finally:
            await producer.stop()

        schema = s.db_schema
        want = {(MID, 1), (MID, 2), (MID, 5), (MID, 6), (other, 1), (other, 2), (other, 3)}
        deadline = time.monotonic() + 60
        while True:
            rows = await pg.fetch(f'SELECT match_id, seq FROM "{schema}".match_deltas')
            matches = await pg.fetch(f'SELECT id, seq FROM "{schema}".matches')
            if {(r["match_id"], r["seq"]) for r in rows} == want and len(matches) == 2:
                break
            assert time.monotonic() < deadline, (rows, matches, worker.log()[-3000:])
            await asyncio.sleep(0.3)
        assert {(r["id"], r["seq"]) for r in matches} == {(MID, 5), (other, 3)}
        assert await redis_client.hget(RedisKeys(s.redis_prefix).match(MID), "seq") == b"5"

        deadline = time.monotonic() + 30
        while True:
            dead = await read_topic(s, "dead-letters", timeout=2.0)
            if len(dead) >= 6 or time.monotonic() > deadline:
                break
        stages = sorted((d["stage"], d["error_type"]) for d in dead)
        assert stages == sorted([
            ("delta-sink", "UntranslatableCharacterError"), ("delta-sink", "KeyError"),
            ("delta-sink", "JSONDecodeError"), ("delta-sink", "TypeError"),
            ("snapshot-sink", "UntranslatableCharacterError"), ("snapshot-sink", "ValueError"),
        ]), dead
        for d in dead:
            assert d["body"], d
        assert "Crashed" not in worker.log(), worker.log()[-3000:]
        assert worker.alive()
    finally:
        worker.stop()
