"""Pipeline throughput: match updates/s through normalise + diff + emit on Faust workers.

The workers are ``bts-guru worker --role pipeline`` processes (their poller idle: no
provider keys), with the Redis and Postgres sinks in a ``worker --role sinks`` process
of their own (``docs/operations.md``, worker roles); a second run puts the sinks back into the one
worker (``--role all``, what ``bts-guru dev`` starts) and is reported beside it.

Raw fetches (live answers per league drawn from the simulator, a few hours of a busy
day) are sent to ``raw-fetches`` once the workers are up and their group has settled;
the figure is updates / (last delta on ``match-deltas`` - first raw record sent). The
reference is the same pure functions (decode, normalise, diff, encode what would be
sent) in a plain loop over the same bytes, in this process.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from bench import common, data
from bench.common import Row, log
from pipeline.dev import DATA_TOPICS
from pipeline.diff import diff
from pipeline.normalise import normalise
from tables import codec


#: Live answers per league in the dataset (30 simulated seconds apart).
STEPS = 240


def dataset(quick: bool, steps: int = STEPS) -> list[tuple[bytes, bytes]]:
    w = data.world({"football": 300, "basketball": 150, "hockey": 150})
    start = data.busiest(w) - 1800
    steps = 40 if quick else steps
    return [(k.encode(), codec.dumps(r)) for k, r in data.live_by_league(w, start, steps, 30.0)]


def plain_loop(records: list[tuple[bytes, bytes]]) -> tuple[float, int, int]:
    """(updates/s, updates, deltas) of the pure functions over ``records``."""
    state: dict[str, Any] = {}
    updates = deltas = 0
    t0 = time.perf_counter()
    for _key, value in records:
        result = normalise(codec.loads(value))
        now = time.time()
        for match in result.matches:
            updates += 1
            key = match["id"]
            codec.dumps(match)
            r = diff(state.get(key), match, now=now)
            if r.delta is not None and r.state is not None:
                state[key] = r.state
                codec.dumps(r.delta)
                codec.dumps(r.state["snapshot"])
                codec.dumps(r.state)
                deltas += 1
    return updates / (time.perf_counter() - t0), updates, deltas


def count_deltas(records: list[tuple[bytes, bytes]]) -> int:
    return plain_loop(records)[2]


async def topics_made(consumer: AIOKafkaConsumer, names: list[str], procs: list[common.Proc],
                      timeout: float = 60.0) -> None:
    """Wait until the workers have created their topics."""
    deadline = time.monotonic() + timeout
    while not set(names) <= await consumer.topics():
        if time.monotonic() > deadline or not all(p.alive() for p in procs):
            raise RuntimeError("workers did not create their topics:\n" + procs[0].log()[-3000:])
        await asyncio.sleep(0.5)


async def stored_deltas(settings: Any) -> int:
    import asyncpg

    conn = await asyncpg.connect(settings.database_url, timeout=5)
    try:
        return int(await conn.fetchval(f'SELECT count(*) FROM "{settings.db_schema}".match_deltas'))
    finally:
        await conn.close()


async def through_workers(env: common.Env, workdir: Path, name: str, workers: int,
                          records: list[tuple[bytes, bytes]], warm: int, expected: int,
                          updates: int, sinks_apart: bool = False) -> tuple[float | None, str]:
    s = env.settings(name, partitions=8)
    await common.prepare(s, DATA_TOPICS, migrate=True)  # as kafka-init does in production
    role = ["--role", "pipeline"] if sinks_apart else []
    procs = [common.Proc.cli(f"{name}-worker-{i}", ["worker", *role], s, workdir / "logs")
             for i in range(workers)]
    if sinks_apart:
        procs.append(common.Proc.cli(f"{name}-sinks", ["worker", "--role", "sinks"], s,
                                     workdir / "logs"))
    producer = AIOKafkaProducer(bootstrap_servers=s.kafka_bootstrap, linger_ms=5,
                                max_batch_size=1024 * 1024, max_request_size=8 * 1024 * 1024)
    consumer = AIOKafkaConsumer(bootstrap_servers=s.kafka_bootstrap, group_id=None,
                                enable_auto_commit=False, fetch_max_wait_ms=10)
    await producer.start()
    await consumer.start()
    topic = s.topic("raw-fetches")
    try:
        await topics_made(consumer, [s.topic("raw-fetches"), s.topic("match-deltas")], procs)
        tps = [TopicPartition(s.topic("match-deltas"), p) for p in range(s.partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        # warm up: the first records, until their deltas are out
        for key, value in records[:warm]:
            await producer.send(topic, value, key=key)
        await producer.flush()
        seen = 0
        deadline = time.monotonic() + 120
        warm_deltas = count_deltas(records[:warm])
        while seen < warm_deltas:
            if time.monotonic() > deadline or not all(p.alive() for p in procs):
                raise RuntimeError("workers did not process the warm-up:\n"
                                   + procs[0].log()[-3000:])
            batch = await consumer.getmany(timeout_ms=500)
            seen += sum(len(v) for v in batch.values())
        log(f"{name}: warm-up done ({seen} deltas)")
        # let the group settle: later workers join and take partitions over
        await asyncio.sleep(2.0 if workers == 1 else 15.0)
        target = warm_deltas + expected
        pipeline_procs = procs[:workers]
        cpu0 = sum(p.cpu_seconds() for p in pipeline_procs)
        t0 = time.perf_counter()
        futs = [await producer.send(topic, value, key=key) for key, value in records[warm:]]
        await producer.flush()
        sent = time.perf_counter() - t0
        log(f"{name}: bulk sent in {sent:.1f} s")
        last = t0
        deadline = time.monotonic() + 600
        while seen < target and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500, max_records=10_000)
            n = sum(len(v) for v in batch.values())
            if n:
                seen += n
                last = time.perf_counter()
            elif time.perf_counter() - last > 20:
                break
        del futs
        elapsed = last - t0
        # CPU the pipeline worker(s) used: it moves far less than their throughput when
        # the machine's speed or the other processes' load changes from run to run
        cpu = sum(p.cpu_seconds() for p in pipeline_procs) - cpu0
        note = (f"{updates:,} updates, {seen - warm_deltas:,} of {expected:,} deltas, "
                f"sent in {sent:.1f} s, done in {elapsed:.1f} s, pipeline worker CPU "
                f"{cpu:.1f} s ({cpu / updates * 1e6:,.0f} µs per update)")
        if seen < target:
            return None, note + " (incomplete)"
        # the sinks' share of the run: when Postgres held every delta (a delta read twice
        # from the topic, after a rebalance, is one row)
        stored = await stored_deltas(s)
        while stored < target and time.perf_counter() - t0 < elapsed + 300:
            await asyncio.sleep(0.5)
            stored = await stored_deltas(s)
        note += (f", every delta in Postgres {time.perf_counter() - t0:.1f} s after the first "
                 f"record" if stored >= target else f", {stored:,} of {target:,} deltas in Postgres")
        return updates / elapsed, note
    finally:
        await consumer.stop()
        await producer.stop()
        for p in procs:
            p.stop()
        await common.cleanup(s)


def split(quick: bool, steps: int = STEPS) -> tuple[list[tuple[bytes, bytes]], int, int, int]:
    records = dataset(quick, steps)
    warm = 20
    rest = records[warm:]
    _, updates, _ = plain_loop(rest)
    expected = count_deltas(records) - count_deltas(records[:warm])
    return records, warm, updates, expected


async def run(env: common.Env, workdir: Path, quick: bool) -> list[Row]:
    records, warm, updates, expected = split(quick)
    ref = max(plain_loop(records[warm:])[0] for _ in range(2 if quick else 3))
    log(f"pipeline: {len(records):,} raw records, plain loop {ref:,.0f} updates/s")
    value, note = await through_workers(env, workdir, "pipe1", 1, records, warm, expected, updates,
                                        sinks_apart=True)
    ratio = value / ref if value else None
    log(f"pipeline: one worker {value} updates/s ({note})")
    together, together_note = await through_workers(env, workdir, "pipeall", 1, records, warm,
                                                    expected, updates)
    log(f"pipeline: one worker with the sinks {together} updates/s ({together_note})")
    return [Row("pipeline", "pipeline: match updates/s through normalise + diff + emit, one worker "
                "(sinks in a worker of their own)",
                value, "/s", reference=f"plain loop {common.fmt(ref, '/s')}", target="ratio ≥ 0.5",
                ratio=ratio, ok=None if ratio is None else ratio >= 0.5, note=note),
            Row("pipeline", "pipeline: the same, the sinks in the same worker (`--role all`)",
                together, "/s", reference=f"plain loop {common.fmt(ref, '/s')}", target="reported",
                ratio=together / ref if together else None, ok=None, note=together_note)]
