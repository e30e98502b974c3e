"""Provider answers the records cannot carry, through a real worker: each bad match becomes a
dead letter, and the raw fetches after it are normalised as usual.

A JSON body may hold what a record cannot: a lone surrogate (``"\\ud800"`` is valid JSON
and reads as a Python string that no UTF-8 encoder takes) or an integer beyond 64 bits.
Before the normalise agent turned a match it could not encode into a dead letter, the
error was retried for ever and the partition behind it stood still.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import json
import time
from typing import Any

from aiokafka import AIOKafkaProducer

from pipeline.simulator.model import envelope
from tables import codec
from tables.migrate import migrate
from tests.conftest import SAMPLES
from tests.reliability.conftest import read_topic
from tests.support import Proc, free_port, wait_http

SAMPLE = "apifootball_fixtures_ids_finished_PEN_detail.json"


def raw_fetch(body: str) -> bytes:
    return codec.dumps({
        "version": 1, "provider": "apifootball", "sport": "football", "endpoint": "fixtures",
        "params": {"ids": "1"}, "status": 200, "headers": {}, "latency_ms": 10.0,
        "fetched_at": time.time(), "body": body, "error": None,
    })


def body(items: list[dict[str, Any]]) -> str:
    return json.dumps(envelope("football", "fixtures", {"ids": "1"}, None, items))


async def test_a_match_no_record_can_carry_becomes_a_dead_letter(settings, pg, tmp_path) -> None:
    await migrate(pg, settings.db_schema)
    web_port = free_port()
    s = dataclasses.replace(settings, provider_url=f"http://127.0.0.1:{free_port()}",
                            worker_web_port=web_port, clock_start=time.time())
    worker = Proc("worker", ["worker", "--role", "pipeline"], s, tmp_path / "logs")
    good, other = json.loads((SAMPLES / SAMPLE).read_text(encoding="utf-8"))["response"]
    surrogate = copy.deepcopy(other)
    surrogate["teams"]["home"]["name"] = "\ud800"  # json.dumps writes it as \\ud800
    huge = copy.deepcopy(other)
    huge["goals"]["home"] = 2**70
    bodies = [body([surrogate]), body([huge]), body([good])]
    try:
        await wait_http(f"http://127.0.0.1:{web_port}/healthz", worker)
        producer = AIOKafkaProducer(bootstrap_servers=s.kafka_bootstrap)
        await producer.start()
        try:
            for text in bodies:  # one key, one partition: the good one comes last
                await producer.send(s.topic("raw-fetches"), raw_fetch(text), key=b"football:ids")
            await producer.flush()
        finally:
            await producer.stop()

        good_id = f"football-apifootball-{good['fixture']['id']}"
        deadline = time.monotonic() + 60
        while True:
            deltas = await read_topic(s, "match-deltas", timeout=1.0)
            if any(d["match_id"] == good_id for d in deltas):
                break
            assert time.monotonic() < deadline, worker.log()[-3000:]
            await asyncio.sleep(0.3)
        assert [d["match_id"] for d in deltas] == [good_id]

        dead = await read_topic(s, "dead-letters", timeout=2.0)
        assert sorted((d["stage"], d["error_type"]) for d in dead) == [
            ("normalise", "TypeError"), ("normalise", "WrongType")], dead
        encode = next(d for d in dead if d["error_type"] == "TypeError")
        assert encode["body"] == bodies[0]
        assert f"football-apifootball-{other['fixture']['id']}" in encode["reason"]
        assert (encode["provider"], encode["sport"], encode["endpoint"]) == (
            "apifootball", "football", "fixtures")
        assert "retrying" not in worker.log(), worker.log()[-3000:]
        assert worker.alive()
    finally:
        worker.stop()
