"""Exactly one delta per real change across a worker crash and a rebalance.

The same sequence of raw records (a simulated evening's ``live=all`` and ``games``
answers, as the poller would publish them) goes through two runs: one worker that
is never disturbed, and workers that are killed (SIGKILL) and replaced mid-stream,
or joined by a second worker. After dropping repeats of the same (match id, seq),
which the contract allows consumers to see after a crash, the delta streams must be
identical: same matches, same seq from 1 without gaps, same kinds, events and
patches. Wall-clock fields (``ts``, ``updated_at``) are the only difference.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import signal
import time

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from pipeline.simulator.model import ManualClock, World
from tables import codec, topics
from tables.schema_check import validate
from tests.support import Proc

STEP = 60.0  # simulated seconds between two polls in the recorded sequence


def recorded_fetches(count: int) -> list[tuple[str, dict]]:
    """(key, RawFetch) pairs: football live=all and basketball games, every STEP seconds."""
    start = 1_790_000_000.0
    world = World(3, ManualClock(start))
    out = []
    for i in range(count):
        t = start + i * STEP
        day = time.strftime("%Y-%m-%d", time.gmtime(t))
        for sport, endpoint, params, provider in (
                ("football", "fixtures", {"live": "all"}, "apifootball"),
                ("basketball", "games", {"date": day}, "apibasketball")):
            status, body = world.fixtures_json(endpoint, params, sport=sport, now=t)
            out.append((f"{sport}:{endpoint}", {
                "version": 1, "provider": provider, "sport": sport, "endpoint": endpoint,
                "params": params, "status": status, "headers": {}, "latency_ms": 1.0,
                "fetched_at": t, "body": json.dumps(body), "error": None,
            }))
    return out


async def produce(settings, records: list[tuple[str, dict]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
    await producer.start()
    try:
        for key, raw in records:
            await producer.send_and_wait(settings.topic(topics.RAW_FETCHES), codec.dumps(raw),
                                         key=key.encode())
    finally:
        await producer.stop()


async def read_deltas(settings, idle: float = 6.0, limit: float = 120.0,
                      want: dict[str, int] | None = None) -> list[dict]:
    """Every delta on the topic, once no new one arrived for ``idle`` seconds
    (or, given ``want``, once every match reached its seq there)."""
    consumer = AIOKafkaConsumer(settings.topic(topics.MATCH_DELTAS),
                                bootstrap_servers=settings.kafka_bootstrap, group_id=None,
                                auto_offset_reset="earliest", enable_auto_commit=False,
                                fetch_max_wait_ms=50)
    await consumer.start()
    out: list[dict] = []
    last = None
    deadline = time.monotonic() + limit
    try:
        top: dict[str, int] = {}
        while time.monotonic() < deadline:
            if want is not None:
                if all(top.get(m, 0) >= n for m, n in want.items()):
                    break
            elif last is not None and time.monotonic() - last >= idle:
                break
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                for r in records:
                    d = codec.loads(r.value)
                    out.append(d)
                    top[d["match_id"]] = max(top.get(d["match_id"], 0), d["seq"])
                    last = time.monotonic()
    finally:
        await consumer.stop()
    return out


def comparable(deltas: list[dict]) -> tuple[dict[str, list[tuple]], int]:
    """Per match, the deltas in seq order without wall-clock fields; and the repeats dropped."""
    by_match: dict[str, dict[int, tuple]] = {}
    repeats = 0
    for d in deltas:
        changes = [op for op in d["changes"] if op.get("path") != "/updated_at"]
        if d["kinds"] == ["created"]:
            changes = [{**op, "value": {k: v for k, v in op["value"].items() if k != "updated_at"}}
                       for op in changes]
        key = (d["seq"], tuple(d["kinds"]), json.dumps(changes, sort_keys=True),
               json.dumps(d["events"], sort_keys=True))
        seen = by_match.setdefault(d["match_id"], {})
        if d["seq"] in seen:
            assert seen[d["seq"]] == key, f"two different deltas with seq {d['seq']}: {d['match_id']}"
            repeats += 1
            continue
        seen[d["seq"]] = key
    return {m: [v[s] for s in sorted(v)] for m, v in by_match.items()}, repeats


def worker(s, tmp_path, name: str) -> Proc:
    # No provider keys: these workers do not poll, they only process the recorded fetches.
    return Proc(name, ["worker"], s, tmp_path / "logs",
                {"BTS_DATA_DIR": str(tmp_path / name), "WORKER_WEB_PORT": "0",
                 "APIFOOTBALL_KEY": "", "APIBASKETBALL_KEY": "", "APIHOCKEY_KEY": ""})


def variant(settings, tag: str):
    return dataclasses.replace(settings, topic_prefix=f"{settings.topic_prefix}{tag}-",
                               redis_prefix=f"{settings.redis_prefix}{tag}:",
                               db_schema=f"{settings.db_schema}_{tag}",
                               apifootball_key="", apibasketball_key="", apihockey_key="")


async def test_a_crash_and_a_rebalance_change_nothing_in_the_delta_stream(settings, tmp_path, pg,
                                                                         redis_client):
    records = recorded_fetches(40)
    half = len(records) // 2

    calm = variant(settings, "calm")
    w = worker(calm, tmp_path, "calm")
    try:
        await produce(calm, records)
        reference = await read_deltas(calm)
    finally:
        w.stop()
    assert reference, w.log()[-3000:]
    expected, repeats = comparable(reference)
    assert repeats == 0
    for d in reference:
        validate("delta", d)
    for match_id, seqs in expected.items():
        assert [k[0] for k in seqs] == list(range(1, len(seqs) + 1)), match_id

    rough = variant(settings, "rough")
    first = worker(rough, tmp_path, "rough-1")
    second = third = None
    try:
        await produce(rough, records[:half])
        early = await read_deltas(rough, idle=0.5)
        assert early, first.log()[-3000:]
        producing = asyncio.ensure_future(produce(rough, records[half:]))
        await asyncio.sleep(0.5)
        first.stop(signal.SIGKILL)
        second = worker(rough, tmp_path, "rough-2")
        await producing
        await asyncio.sleep(8)
        third = worker(rough, tmp_path, "rough-3")  # a rebalance while the stream settles
        got = await read_deltas(rough, limit=150.0,
                                want={m: len(v) for m, v in expected.items()})
        assert second.alive(), second.log()[-3000:]
    finally:
        for p in (third, second, first):
            if p is not None:
                p.stop()
    for s in (calm, rough):
        await pg.execute(f'DROP SCHEMA IF EXISTS "{s.db_schema}" CASCADE')
    actual, _ = comparable(got)
    assert actual.keys() == expected.keys()
    for match_id in expected:
        want, got_ = expected[match_id], actual[match_id]
        for a, b in zip(want, got_):
            trail = [(d["seq"], d["fetched_at"] - 1_790_000_000) for d in got
                     if d["match_id"] == match_id]
            assert a == b, f"{match_id} differs at seq {a[0]}:\n{a}\n{b}\n{trail}"
        assert len(want) == len(got_), (match_id, len(want), len(got_))
