"""The Kafka transport of our Faust app: the fetch wait as a setting, checked end offsets,
and no record skipped around a rebalance (see :class:`_Consumer`).

Faust's aiokafka driver hard-codes ``fetch_max_wait_ms=1500`` for worker
consumers. Brokers that hold a fetch for part of that wait even when data is
ready (the embedded one holds about half of it) then add that much latency to
every hop of the pipeline.

Table recovery reads a changelog up to the end offsets the broker reports. Some
Kafka-compatible brokers (the embedded one among them) report the end of a
partition as one past the *first* record of the last batch written, so a
recovery would stop short and a restarted worker would hold a table older than
the deltas it already emitted. The end offsets used for recovery are therefore
checked by reading on from the reported end until nothing more comes. With a
broker that reports them right this costs one empty fetch per recovery.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import random
import time
from collections.abc import Mapping
from typing import Any

import faust
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.partitioner import murmur2
from faust.sensors.monitor import Monitor
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP
from mode.services import WaitResults

log = logging.getLogger(__name__)


class KeyPartitioner:
    """aiokafka's default partitioner (murmur2 of the key, as Kafka's Java client does),
    remembering each key's hash: the same match ids come back on every update, and
    aiokafka's murmur2 is pure Python (about 2.5 % of a worker's time before)."""

    def __init__(self, keys: int = 200_000) -> None:
        self._hash = functools.lru_cache(maxsize=keys)(lambda key: murmur2(key) & 0x7FFFFFFF)

    def __call__(self, key: bytes | None, all_partitions: list[int],
                 available: list[int]) -> int:
        if key is None:
            return random.choice(available or all_partitions)
        return all_partitions[self._hash(key) % len(all_partitions)]


async def partitions_known(producer: Any, topic: str) -> Any:
    """The partitions of ``topic``, from metadata the producer's client keeps up to date.

    The client refreshes metadata only for the topics it tracks. A topic it learnt
    of while it tracked none (every topic comes back then) is dropped at the next
    refresh, and a record batch for it waits for a leader until the producer's
    request timeout (20 minutes in Faust), and so does whoever waits for the batch.
    """
    producer.client.add_topic(topic)
    return await producer.partitions_for(topic)


class Outbox:
    """Records for the app's topics, handed to the producer as one record batch per
    partition instead of one ``Topic.send`` each.

    A ``Topic.send`` builds Faust's pending message, future and callbacks and then
    aiokafka's own future and batch bookkeeping for every record; appending to a
    record batch costs a few microseconds. Keys place records as ``Topic.send``
    does (the app's partitioner over the same partition list), records of one
    partition keep the order they were added in, and the producer's flush before
    a commit waits for these batches as for any other.
    """

    def __init__(self, app: faust.App) -> None:
        self._app = app
        self._records: dict[str, list[tuple[bytes | None, bytes]]] = {}

    def add(self, topic: faust.TopicT, key: bytes | None, value: bytes) -> None:
        self._records.setdefault(topic.get_topic_name(), []).append((key, value))

    def __len__(self) -> int:
        return sum(len(records) for records in self._records.values())

    async def send(self) -> list[asyncio.Future[Any]]:
        """Hand every record added so far to the producer, and empty the outbox.

        Returns a future per record batch, done when the broker has the batch.
        """
        records, self._records = self._records, {}
        if not records:
            return []
        producer = (await self._app.maybe_start_producer())._ensure_producer()
        partitioner = self._app.conf.producer_partitioner
        cluster = producer.client.cluster
        futures = []
        for topic, items in records.items():
            partitions = list(await partitions_known(producer, topic))
            available = list(cluster.available_partitions_for_topic(topic))
            batches: dict[int, Any] = {}
            for key, value in items:
                partition = partitioner(key, partitions, available)
                batch = batches.get(partition)
                if batch is not None and batch.append(key=key, value=value, timestamp=None) is not None:
                    continue
                if batch is not None:  # full: it goes, and a new one starts
                    futures.append(await producer.send_batch(batch, topic, partition=partition))
                batch = batches[partition] = producer.create_batch()
                batch.append(key=key, value=value, timestamp=None)  # a batch takes its first record
            for partition, batch in batches.items():
                futures.append(await producer.send_batch(batch, topic, partition=partition))
        return futures


class _ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = getattr(self.app, "fetch_wait_ms", 1500)
        return consumer

    async def _fetch_records(self, consumer: Any, active_partitions: Any,
                             timeout: float | None = None, max_records: int | None = None) -> Any:
        # Faust passes its own set of active partitions, which changes while the fetch
        # waits; aiokafka reads an empty set as "every partition", and Faust drops the
        # records of partitions it has paused after aiokafka moved past them. A copy
        # taken now asks for what is active now, and nothing when nothing is.
        wanted = {TopicPartition(tp.topic, tp.partition) for tp in active_partitions or ()}
        if not wanted:
            return {}
        return await super()._fetch_records(consumer, wanted, timeout=timeout,
                                            max_records=max_records)

    async def _highwaters(self, partitions: list[TP]) -> Mapping[TP, int]:
        reported = dict(await super()._highwaters(partitions))
        bootstrap = getattr(self.app, "kafka_bootstrap", None)
        if not reported or bootstrap is None:
            return reported
        return await true_end_offsets(bootstrap, getattr(self.app, "kafka_options", {}), reported)


async def true_end_offsets(bootstrap: str, options: Mapping[str, Any],
                           reported: Mapping[TP, int], budget: float = 3.0) -> dict[TP, int]:
    """``reported`` end offsets, moved past any record found at or after them."""
    ends = dict(reported)
    probe = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                             enable_auto_commit=False, fetch_max_wait_ms=20, **options)
    await probe.start()
    try:
        tps = [TopicPartition(tp.topic, tp.partition) for tp in ends]
        probe.assign(tps)
        for tp, end in zip(tps, ends.values()):
            probe.seek(tp, end)
        deadline = time.monotonic() + budget
        first = True
        while time.monotonic() < deadline:
            batch = await probe.getmany(timeout_ms=400 if first else 150)
            first = False
            if not any(batch.values()):
                break
            for tp, records in batch.items():
                key = TP(tp.topic, tp.partition)
                ends[key] = max(ends[key], records[-1].offset + 1)
    except KafkaError as exc:
        log.warning("could not check end offsets, using the broker's: %r", exc)
        return dict(reported)
    finally:
        await probe.stop()
    moved = {tp: (reported[tp], ends[tp]) for tp in ends if ends[tp] != reported[tp]}
    if moved:
        log.info("end offsets corrected after reading on: %s", moved)
    return ends


class _Resumed:
    """Await a coroutine that was already run up to its first suspension, where it
    handed ``waiting`` (a future) to whoever drives it: what ``yield from`` does."""

    __slots__ = ("_coro", "_waiting")

    def __init__(self, coro: Any, waiting: Any) -> None:
        self._coro = coro
        self._waiting = waiting

    def __await__(self) -> Any:
        coro, waiting = self._coro, self._waiting
        self._coro = self._waiting = None
        while True:
            try:
                sent = yield waiting
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:  # noqa: BLE001 - handed to the coroutine, as yield from does
                try:
                    waiting = coro.throw(exc)
                except StopIteration as done:
                    return done.value
            else:
                try:
                    waiting = coro.send(sent)
                except StopIteration as done:
                    return done.value


class _Consumer(faust_aiokafka.Consumer):
    """Faust's consumer, with the order of resuming and seeking after a rebalance fixed.

    After a rebalance Faust's recovery resumes the stream partitions and then seeks
    them to their committed offsets, with awaits in between. A fetch in that window
    moves aiokafka's position past records that Faust drops (or later takes for
    re-reads of records already seen), and Faust's gap handling then counts those
    offsets, and the record after them, as acknowledged: the next commit passes
    records no agent processed. A worker killed and restarted lost deltas from its
    Postgres sink this way. Here the stream partitions are resumed only once the
    seek is done, and a gap never counts the record that revealed it.
    """

    _resume_after_seek: set[TP] | None = None

    def resume_partitions(self, tps: Any) -> None:
        tps = set(tps)
        streams = {tp for tp in tps if not self._is_changelog_tp(tp)}
        if streams:
            self._resume_after_seek = (self._resume_after_seek or set()) | streams
        super().resume_partitions(tps - streams)

    async def perform_seek(self) -> None:
        await super().perform_seek()
        waiting, self._resume_after_seek = self._resume_after_seek, None
        if waiting:
            super().resume_partitions(waiting)

    async def _add_gap(self, tp: TP, offset_from: int, offset_to: int) -> None:
        # Faust marks [offset_from, offset_to] as done, offset_to being the record
        # just fetched and not yet processed; it is acknowledged when it is processed.
        await super()._add_gap(tp, offset_from, offset_to - 1)

    async def wait_first(self, *coros: Any, timeout: Any = None) -> WaitResults:
        """Faust's ``wait_first``, without tasks when the first coroutine does not wait.

        The consumer's drain loop hands every message to the streams with
        ``wait_first(deliver(message), suspend_flow.wait())``, which makes four tasks
        (the delivery, the flow event, the consumer's stopped and crashed events) and
        cancels three of them, although a delivery waits only when a stream's buffer
        is full. That cost about a quarter of a worker's main thread. Here the
        delivery runs first on its own; only if it has to wait does Faust's wait
        take over, with the delivery continued where it stopped, so the suspended
        flow, a stop or a crash still end the wait.
        """
        first = coros[0] if coros else None
        if (timeout is None and len(coros) == 2 and inspect.iscoroutine(first)
                and not self.suspend_flow.is_set() and not self._stopped.is_set()
                and not self._crashed.is_set()):
            try:
                waiting = first.send(None)
            except StopIteration as done:
                _close(coros[1])
                return WaitResults([first], [done.value], False)
            except BaseException:
                _close(coros[1])
                raise
            coros = (_Resumed(first, waiting), coros[1])
        return await super().wait_first(*coros, timeout=timeout)

    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)


def _close(awaitable: Any) -> None:
    if inspect.iscoroutine(awaitable):
        awaitable.close()


class LeanMonitor(Monitor):
    """Faust's monitor without its bookkeeping for every message, event, table
    access and send (counters, timings and deques nobody reads here: the worker's
    figures are its own, in ``pipeline.metrics``). What Faust itself reads back,
    the time a partition last had an event (for its stalled-stream warnings),
    end offsets and commits, is still kept."""

    def on_message_in(self, tp: TP, offset: int, message: Any) -> None:
        pass

    def on_stream_event_in(self, tp: TP, offset: int, stream: Any, event: Any) -> None:
        self.stream_inbound_time[tp] = time.monotonic()

    def on_stream_event_out(self, tp: TP, offset: int, stream: Any, event: Any,
                            state: Any = None) -> None:
        pass

    def on_message_out(self, tp: TP, offset: int, message: Any) -> None:
        pass

    def on_table_get(self, table: Any, key: Any) -> None:
        pass

    def on_table_set(self, table: Any, key: Any, value: Any) -> None:
        pass

    def on_send_initiated(self, producer: Any, topic: str, message: Any,
                          keysize: int, valsize: int) -> None:
        pass

    def on_send_completed(self, producer: Any, state: Any, metadata: Any) -> None:
        pass


class Transport(faust_aiokafka.Transport):
    Consumer = _Consumer


class App(faust.App):
    """A Faust app whose worker consumers use ``fetch_wait_ms``."""

    fetch_wait_ms: int = 1500
    #: Where and how to reach the brokers to check end offsets (None: trust the broker).
    kafka_bootstrap: str | None = None
    kafka_options: dict[str, Any] = {}
    _producer_start: asyncio.Lock | None = None

    def __init__(self, id: str, **options: Any) -> None:
        options.setdefault("monitor", LeanMonitor())
        super().__init__(id, **options)

    async def maybe_start_producer(self) -> Any:
        """The producer, started once, and reached without yielding to the event loop.

        Faust guards this call, which every ``Topic.send`` makes, against a
        stampede of starts by sleeping three times (``asyncio.sleep(0)``) on
        every call, started or not. Each send then lets the event loop run: the
        producer's sender drains what the agent has sent so far, and a batch of
        sends leaves as many produce batches as it has records. (Faust's guard
        also caches itself on the instance, so it cannot be called once and
        bypassed after: a lock guards the start here instead.)
        """
        if self.in_transaction:
            return self.consumer.transactions
        producer = self.producer
        if not producer.started:
            if self._producer_start is None:
                self._producer_start = asyncio.Lock()
            async with self._producer_start:
                await producer.maybe_start()
        return producer

    def add_service(self, service: Any) -> None:
        """Start and stop an already built ``mode.Service`` with the app."""
        self._extra_services.append(service)

    def _new_transport(self) -> Any:
        return Transport(self.conf.broker_consumer, self)
