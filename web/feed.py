"""The edge's own reader of ``match-deltas``: every partition, no consumer group.

It keeps the position of every partition (the live cursor), a recent window of
entries for cheap resumes, and drops a delta whose (match id, seq) it has
already passed (a worker that crashed between sending a delta and recording it
sends it again). :meth:`history` reads older ranges back from the topic.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Callable

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from tables import codec
from tables.channels import channels_for
from web.cursor import Cursor
from web.hub import Entry

log = logging.getLogger(__name__)


class HistoryGone(Exception):
    """The offsets a cursor needs are no longer in the topic."""


class DeltaFeed:
    def __init__(
        self,
        bootstrap: str,
        topic: str,
        *,
        epoch: str = "1",
        fetch_wait_ms: int = 10,
        window: int = 20_000,
        on_entry: Callable[[Entry], object] | None = None,
        from_beginning: bool = False,
        kafka: dict[str, object] | None = None,
    ) -> None:
        self.kafka = kafka or {}
        self.bootstrap = bootstrap
        self.topic = topic
        self.epoch = epoch
        self.fetch_wait_ms = fetch_wait_ms
        self.window: collections.deque[Entry] = collections.deque(maxlen=window)
        self.on_entry = on_entry
        self.from_beginning = from_beginning
        self.positions: list[int] = []
        #: per partition, the lowest offset still covered by the window
        self.window_low: list[int] = []
        self.last_seq: dict[str, int] = {}
        self.ready = asyncio.Event()
        self.duplicates = 0
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None

    # -- lifecycle ----------------------------------------------------------

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="delta-feed")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
        if self._consumer is not None:
            await self._consumer.stop()

    def cursor(self) -> Cursor:
        return Cursor(self.epoch, tuple(self.positions))

    async def _connect(self) -> AIOKafkaConsumer:
        while True:
            consumer = AIOKafkaConsumer(
                bootstrap_servers=self.bootstrap, enable_auto_commit=False, group_id=None, **self.kafka,
                fetch_max_wait_ms=self.fetch_wait_ms, auto_offset_reset="earliest",
                max_partition_fetch_bytes=4 * 1024 * 1024,
            )
            try:
                await consumer.start()
                parts = await consumer._client.fetch_all_metadata()  # refresh
                partitions = parts.partitions_for_topic(self.topic)
                if partitions:
                    tps = [TopicPartition(self.topic, p) for p in sorted(partitions)]
                    consumer.assign(tps)
                    if self.from_beginning:
                        await consumer.seek_to_beginning(*tps)
                        starts = await consumer.beginning_offsets(tps)
                    else:
                        await consumer.seek_to_end(*tps)
                        starts = await consumer.end_offsets(tps)
                    self.positions = [starts[tp] for tp in tps]
                    self.window_low = list(self.positions)
                    return consumer
                log.info("topic %s not there yet, waiting", self.topic)
            except KafkaError as exc:
                log.warning("broker unavailable for the delta feed: %r", exc)
            await consumer.stop()
            await asyncio.sleep(1.0)

    async def _run(self) -> None:
        self._consumer = await self._connect()
        self.ready.set()
        consumer = self._consumer
        while True:
            try:
                batches = await consumer.getmany(timeout_ms=1000, max_records=2000)
            except KafkaError as exc:
                log.warning("delta feed read failed, retrying: %r", exc)
                await asyncio.sleep(0.5)
                continue
            for tp, records in batches.items():
                for rec in records:
                    self._accept(tp.partition, rec.offset, rec.value)

    def _accept(self, partition: int, offset: int, value: bytes | None) -> list[Entry]:
        self.positions[partition] = offset + 1
        entries = self.make_entries(partition, offset, value)
        if not entries:
            return entries
        first = entries[0]
        if first.seq <= self.last_seq.get(first.match_id, 0):
            self.duplicates += 1
            return []
        self.last_seq[first.match_id] = first.seq
        for entry in entries:
            if len(self.window) == self.window.maxlen:
                old = self.window[0]
                self.window_low[old.partition] = old.offset + 1
            self.window.append(entry)
            if self.on_entry is not None:
                self.on_entry(entry)
        return entries

    def make_entries(self, partition: int, offset: int, value: bytes | None,
                     positions: list[int] | None = None) -> list[Entry]:
        """The entries of one delta: the public one (without the paid detail) on the
        public channels, and the whole delta on the private and presence channels."""
        if value is None:
            return []
        try:
            delta = codec.loads(value)
            match_id = delta["match_id"]
            seq = int(delta["seq"])
            public_channels = channels_for(delta["sport"], str(delta["league"]), match_id)
            changes = delta["changes"]
            kinds = delta["kinds"]
        except (codec.DecodeError, KeyError, TypeError, ValueError) as exc:
            log.warning("skipping unreadable delta at %s:%d: %r", partition, offset, exc)
            return []
        pos = list(self.positions if positions is None else positions)
        pos[partition] = offset + 1
        cursor = Cursor(self.epoch, tuple(pos)).encode()
        full = Entry(partition, offset, match_id, seq,
                     (f"private-match.{match_id}", f"presence-match.{match_id}"), value, cursor)
        if "detail" not in kinds:
            return [Entry(partition, offset, match_id, seq, public_channels + full.channels,
                          value, cursor)]
        public_changes = [op for op in changes if not str(op.get("path", "")).startswith("/detail")]
        if not public_changes:
            return [full]
        public = dict(delta, changes=public_changes, kinds=[k for k in kinds if k != "detail"])
        # The full entry first: a subscriber of both kinds of channel keeps only the first.
        return [full,
                Entry(partition, offset, match_id, seq, public_channels, codec.dumps(public), cursor)]

    # -- resume -------------------------------------------------------------

    def covers(self, cursor: Cursor) -> bool:
        """Whether the window alone holds everything after ``cursor``."""
        return all(c >= low for c, low in zip(cursor.offsets, self.window_low))

    def from_window(self, cursor: Cursor, upto: list[int]) -> list[Entry]:
        return [
            e for e in self.window
            if cursor.offsets[e.partition] <= e.offset < upto[e.partition]
        ]

    async def history(self, cursor: Cursor, upto: list[int], limit: int = 100_000) -> list[Entry]:
        """Entries from ``cursor`` up to (not including) ``upto``, read back from the topic."""
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap, enable_auto_commit=False, group_id=None, **self.kafka,
            fetch_max_wait_ms=self.fetch_wait_ms, auto_offset_reset="none",
        )
        await consumer.start()
        try:
            tps = [TopicPartition(self.topic, p) for p in range(len(upto))]
            consumer.assign(tps)
            begins = await consumer.beginning_offsets(tps)
            wanted = []
            for tp in tps:
                start = cursor.offsets[tp.partition]
                if start < begins[tp]:
                    raise HistoryGone(f"partition {tp.partition} starts at {begins[tp]} > {start}")
                if start < upto[tp.partition]:
                    consumer.seek(tp, start)
                    wanted.append(tp)
                else:
                    consumer.pause(tp)
            out: list[Entry] = []
            remaining = set(wanted)
            positions = list(cursor.offsets)
            seen: dict[str, int] = {}
            while remaining:
                batches = await consumer.getmany(*remaining, timeout_ms=1000, max_records=5000)
                for tp, records in batches.items():
                    for rec in records:
                        if rec.offset >= upto[tp.partition]:
                            break
                        positions[tp.partition] = rec.offset + 1
                        entries = self.make_entries(tp.partition, rec.offset, rec.value, positions)
                        if entries and entries[0].seq > seen.get(entries[0].match_id, 0):
                            seen[entries[0].match_id] = entries[0].seq
                            out.extend(entries)
                    if positions[tp.partition] >= upto[tp.partition]:
                        remaining.discard(tp)
                        consumer.pause(tp)
                if len(out) > limit:
                    raise HistoryGone("too much history to replay")
            out.sort(key=lambda e: (e.partition, e.offset))
            pos = list(cursor.offsets)
            for e in out:
                pos[e.partition] = e.offset + 1
                e.cursor = Cursor(self.epoch, tuple(pos)).encode()
            return out
        finally:
            await consumer.stop()
