"""The worker's Kafka consumer: no record is skipped around a rebalance.

Faust resumes the stream partitions before it seeks them to their committed
offsets, and asks aiokafka for records with a set of active partitions that
changes under the fetch (aiokafka reads an empty set as every partition); both
let a sink's records be fetched, dropped and committed past. These tests pin
down the corrected order on the consumer itself; the worker-kill case in
``tests/reliability`` checks the outcome end to end.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import pytest
from faust.types import TP

from pipeline.app import Pipeline
from pipeline.settings import Settings
from pipeline.transport import LeanMonitor, Outbox, _ConsumerThread


def _consumer(settings: Settings) -> Any:
    return Pipeline(settings, sinks=False, poll=False).app.consumer


@contextlib.asynccontextmanager
async def _producing(settings: Settings) -> AsyncIterator[Pipeline]:
    """A pipeline whose producer is started (by declaring ``match-updates``), then stopped."""
    pipeline = Pipeline(settings, sinks=False, poll=False)
    await pipeline.match_updates.declare()
    try:
        yield pipeline
    finally:
        await pipeline.app.producer.stop()


async def test_stream_partitions_resume_only_after_the_seek(settings: Settings) -> None:
    consumer = _consumer(settings)
    changelog = consumer.app.tables["matches"].changelog_topic.get_topic_name()
    stream_tp = TP(settings.topic("match-deltas"), 1)
    changelog_tp = TP(changelog, 1)
    seeks: list[set[TP]] = []

    async def seek_to_committed() -> dict[TP, int]:
        seeks.append(set(consumer._get_active_partitions()))
        return {stream_tp: 53}

    consumer.seek_to_committed = seek_to_committed
    consumer.resume_partitions({stream_tp, changelog_tp})
    active = consumer._get_active_partitions()
    assert changelog_tp in active and stream_tp not in active

    await consumer.perform_seek()
    assert seeks == [{changelog_tp}]  # the stream partition was not fetched from during the seek
    assert stream_tp in consumer._get_active_partitions()
    assert consumer._read_offset[stream_tp] == 53


async def test_a_gap_never_counts_the_record_that_revealed_it(settings: Settings) -> None:
    consumer = _consumer(settings)
    tp = TP(settings.topic("match-deltas"), 0)
    await consumer._add_gap(tp, 10, 14)
    covered = sorted(o for iv in consumer._gap[tp] for o in range(iv.begin, iv.end))
    assert covered == [10, 11, 12, 13]


async def test_a_fetch_asks_for_the_partitions_active_when_it_starts(settings: Settings) -> None:
    thread = _ConsumerThread(_consumer(settings))
    asked: list[Any] = []

    class Fetcher:
        _subscriptions = type("S", (), {"fetch_context": lambda self: _Null()})()
        _closed = False

        async def fetched_records(self, partitions: Any, timeout: float = 0,
                                  max_records: int | None = None) -> dict[Any, Any]:
            asked.append(partitions)
            active.clear()  # the caller's set changes while the fetch waits
            return {}

    class Consumer:
        _fetcher = Fetcher()
        _closed = False

    thread.consumer.flow_active = True
    active: set[TP] = set()
    assert await thread._fetch_records(Consumer(), active, timeout=0.1) == {}
    assert asked == []  # nothing active: nothing asked, rather than every partition
    active = {TP("t", 0), TP("t", 1)}
    await thread._fetch_records(Consumer(), active, timeout=0.1)
    assert [sorted(p) for p in asked] == [[("t", 0), ("t", 1)]]
    assert asked[0] is not active


class _Null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


async def test_a_batch_of_sends_does_not_yield_and_leaves_one_produce_batch_per_partition(
        settings: Settings) -> None:
    async with _producing(settings) as pipeline:
        producer = pipeline.app.producer
        accumulator = producer._ensure_producer()._message_accumulator
        batches: list[Any] = []
        append_batch = accumulator._append_batch

        def counting(builder: Any, tp: Any) -> Any:
            batches.append(tp)
            return append_batch(builder, tp)

        accumulator._append_batch = counting
        await pipeline.match_updates.send(key=b"warm", value=b"{}")  # metadata known
        batches.clear()
        ran: list[int] = []
        asyncio.get_running_loop().call_soon(ran.append, 1)
        futures = [await pipeline.match_updates.send(key=f"m-{i}".encode(), value=b"{}")
                   for i in range(40)]
        assert ran == []  # the producer's sender could not drain between the sends
        await asyncio.gather(*futures)
        assert len(batches) == len(set(batches)) <= settings.partitions


def test_the_key_partitioner_places_every_key_as_kafka_does() -> None:
    from aiokafka.partitioner import DefaultPartitioner

    from pipeline.transport import KeyPartitioner

    ours, kafka = KeyPartitioner(keys=64), DefaultPartitioner()
    keys = [f"football-apifootball-{n}".encode() for n in range(500)] + [b"", b"\xff" * 7]
    for parts in ([0], list(range(4)), list(range(8)), list(range(12))):
        for _ in range(2):  # the second time from its cache (and past it: 64 keys kept)
            assert [ours(k, parts, parts) for k in keys] == [kafka(k, parts, parts) for k in keys]
    assert ours(None, [0, 1, 2], [2]) == 2  # no key: an available partition
    assert ours(None, [0, 1, 2], []) in (0, 1, 2)


async def test_a_delivery_that_need_not_wait_makes_no_task(settings: Settings) -> None:
    consumer = _consumer(settings)
    flow_waits: list[str] = []

    async def deliver() -> str:
        return "delivered"

    async def flow() -> None:
        flow_waits.append("started")

    tasks_before = len(asyncio.all_tasks())
    results = await consumer.wait_first(deliver(), flow())
    assert results.results == ["delivered"] and not results.stopped
    assert flow_waits == []  # the flow's wait was closed without running
    assert len(asyncio.all_tasks()) == tasks_before


async def test_a_delivery_that_waits_is_continued_where_it_stopped(settings: Settings) -> None:
    consumer = _consumer(settings)
    room = asyncio.get_running_loop().create_future()
    steps: list[str] = []

    async def deliver() -> str:
        steps.append("before")
        got = await room
        steps.append(f"after {got}")
        await asyncio.sleep(0)
        return "delivered"

    waiting = asyncio.ensure_future(consumer.wait_first(deliver(), consumer.suspend_flow.wait()))
    await asyncio.sleep(0.01)
    assert steps == ["before"] and not waiting.done()
    room.set_result("room")
    results = await asyncio.wait_for(waiting, 1)
    assert results.results == ["delivered"]
    assert steps == ["before", "after room"]


async def test_a_suspended_flow_ends_a_waiting_delivery(settings: Settings) -> None:
    consumer = _consumer(settings)
    never = asyncio.get_running_loop().create_future()
    ended: list[str] = []

    async def deliver() -> None:
        try:
            await never
        finally:
            ended.append("delivery cancelled")

    waiting = asyncio.ensure_future(consumer.wait_first(deliver(), consumer.suspend_flow.wait()))
    await asyncio.sleep(0.01)
    consumer.suspend_flow.set()
    results = await asyncio.wait_for(waiting, 1)
    assert results.results == [True]  # the flow's wait won
    await asyncio.sleep(0)
    assert ended == ["delivery cancelled"]


async def test_a_delivery_that_fails_raises_with_or_without_waiting(settings: Settings) -> None:
    consumer = _consumer(settings)
    room = asyncio.get_running_loop().create_future()

    async def fails_at_once() -> None:
        raise ValueError("at once")

    async def fails_after_waiting() -> None:
        await room
        raise ValueError("after waiting")

    with pytest.raises(ValueError, match="at once"):
        await consumer.wait_first(fails_at_once(), consumer.suspend_flow.wait())
    waiting = asyncio.ensure_future(
        consumer.wait_first(fails_after_waiting(), consumer.suspend_flow.wait()))
    await asyncio.sleep(0.01)
    room.set_result(None)
    with pytest.raises(ValueError, match="after waiting"):
        await asyncio.wait_for(waiting, 1)


def test_the_app_keeps_the_lean_monitor(settings: Settings) -> None:
    app = _consumer(settings).app
    assert isinstance(app.monitor, LeanMonitor)
    tp = TP("t", 0)
    app.monitor.on_stream_event_in(tp, 1, None, None)
    assert tp in app.monitor.stream_inbound_time  # what Faust's stalled-stream check reads


async def test_an_outbox_places_records_as_topic_send_does_and_keeps_their_order(
        settings: Settings) -> None:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from pipeline.connections import aiokafka_options

    async with _producing(settings) as pipeline:
        app = pipeline.app
        keys = [f"m-{i % 30}".encode() for i in range(300)]
        sent = await asyncio.gather(*[await pipeline.match_updates.send(key=k, value=b"send")
                                      for k in keys[:30]])
        where = {k: meta.partition for k, meta in zip(keys[:30], sent)}
        outbox = Outbox(app)
        big = b"x" * 150_000  # two of these overflow one 256 KiB batch
        for i, key in enumerate(keys):
            outbox.add(pipeline.match_updates, key, (big if i % 50 == 0 else b"") + str(i).encode())
        assert len(outbox) == 300
        futures = await outbox.send()
        assert len(outbox) == 0
        await asyncio.gather(*futures)
        assert len(futures) > len(set(where.values()))  # a full batch left, a new one started

        consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, group_id=None,
                                    enable_auto_commit=False, **aiokafka_options(settings))
        await consumer.start()
        try:
            topic = settings.topic("match-updates")
            partitions = await app.producer._ensure_producer().partitions_for(topic)
            tps = [TopicPartition(topic, p) for p in sorted(partitions)]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            got: dict[int, list[tuple[bytes, int]]] = {}
            deadline = asyncio.get_running_loop().time() + 20
            while sum(map(len, got.values())) < 300 and asyncio.get_running_loop().time() < deadline:
                for tp, records in (await consumer.getmany(timeout_ms=500)).items():
                    for r in records:
                        if r.value != b"send":
                            got.setdefault(tp.partition, []).append(
                                (r.key, int(r.value.lstrip(b"x"))))
        finally:
            await consumer.stop()
        assert sum(map(len, got.values())) == 300
        for partition, records in got.items():
            assert all(where[key] == partition for key, _ in records)
            order = [i for _, i in records]
            assert order == sorted(order)


async def test_an_outbox_keeps_its_topics_in_the_producers_metadata(settings: Settings) -> None:
    # The producer's client refreshes metadata for the topics it tracks; a topic it
    # learnt of only because nothing was tracked yet (every topic then comes back)
    # drops out at the next refresh, and a batch for it waits for a leader until the
    # request timeout (20 minutes), stopping the agent that waits for the batch.
    async with _producing(settings) as pipeline:
        await pipeline.dead_letters.declare()
        client = pipeline.app.producer._ensure_producer().client
        topic = settings.topic("match-updates")
        client._topics.clear()
        await client.force_metadata_update()  # nothing tracked: every topic comes back
        assert topic in client.cluster.topics()
        outbox = Outbox(pipeline.app)
        outbox.add(pipeline.match_updates, b"m-1", b"{}")
        await asyncio.wait_for(asyncio.gather(*await outbox.send()), 10)
        client.add_topic(settings.topic("dead-letters"))
        await client.force_metadata_update()  # now only the tracked topics
        assert topic in client.cluster.topics()


@pytest.mark.parametrize("role", ["all", "pipeline", "sinks"])
async def test_a_worker_consumer_fetches_with_its_roles_wait(settings: Settings, role: str) -> None:
    settings = dataclasses.replace(settings, fetch_wait_ms=10, sinks_fetch_wait_ms=250)
    consumer = Pipeline(settings, poll=False, role=role).app.consumer
    thread = _ConsumerThread(consumer)
    client = thread._create_worker_consumer(consumer.transport)
    try:
        assert client._fetch_max_wait_ms == (250 if role == "sinks" else 10)
    finally:
        await client.stop()
