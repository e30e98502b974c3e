"""History over HTTP: ``GET /v1/replay?channels=a,b&from=...&to=...``.

For clients without Kafka access. The answer streams as JSON lines
(``application/x-ndjson``): one Delta per line, in time order (per match in
``seq`` order), exactly as the stream would have sent it on those channels
(``private-``/``presence-`` channels carry the paid detail, public ones do
not). ``from`` (inclusive) and ``to`` (exclusive) are ISO 8601 or epoch seconds
and compare with the records' Kafka timestamps; ``from`` defaults to as far
back as the tier reaches, ``to`` to now. ``limit`` caps the number of deltas
(default and maximum 100,000).

Every request reads the topic itself with an aiokafka consumer without a group:
the start of each partition comes from ``offsets_for_times`` (a lower bound;
every record is checked against the window), the end is the end offset when
the request starts. A window reaching further back than the tier's
``history_hours`` is refused with ``403 beyond_history`` before anything is
read.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.partitioner import murmur2
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from web.errors import ApiError, bad_param, error_response
from web.stream import parse_channels

log = logging.getLogger(__name__)

MAX_LIMIT = 100_000
#: Records whose timestamps run this far past ``to`` end the read of a partition.
TIME_SLACK_MS = 60_000
#: Slack on the tier's reach for clocks and request latency.
REACH_SLACK_S = 60.0
STALL_SECONDS = 5.0


def parse_time(param: str, raw: str) -> float:
    text = raw.strip()
    try:
        value = float(text)
    except ValueError:
        try:
            when = dt.datetime.fromisoformat(text)
        except ValueError:
            raise bad_param(param, f"{raw[:40]!r} is not an ISO 8601 time or epoch seconds") from None
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.UTC)
        value = when.timestamp()
    if not 0 <= value <= 4e9:
        raise bad_param(param, f"{raw[:40]!r} is out of range")
    return value


def iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, tz=dt.UTC).isoformat(timespec="seconds").replace(
        "+00:00", "Z")


def match_partitions(channels: list[str], count: int) -> list[int] | None:
    """The partitions that hold these channels, when all of them are match channels."""
    parts: set[int] = set()
    for ch in channels:
        kind, _, mid = ch.partition(".")
        if kind not in ("match", "private-match", "presence-match"):
            return None
        parts.add((murmur2(mid.encode()) & 0x7FFFFFFF) % count)
    return sorted(parts)


async def replay(request: Request) -> Response:
    edge = request.app.state.edge
    principal = request.scope.get("state", {}).get("principal")
    if principal is None:
        return error_response(401, "unauthorized", "an API key is required")
    q = request.query_params
    try:
        channels = parse_channels(q.get("channels"))
        now = time.time()
        reach = principal.tier.history_hours * 3600.0
        start = parse_time("from", q["from"]) if q.get("from") else now - reach
        end = parse_time("to", q["to"]) if q.get("to") else now
        if end <= start:
            raise bad_param("to", f"{iso(end)} is not after from ({iso(start)})")
        limit = MAX_LIMIT
        if q.get("limit"):
            try:
                limit = int(q["limit"])
            except ValueError:
                raise bad_param("limit", f"{q['limit'][:40]!r} is not a whole number") from None
            if not 1 <= limit <= MAX_LIMIT:
                raise bad_param("limit", f"must be from 1 to {MAX_LIMIT}")
    except ApiError as exc:
        return error_response(exc.status, exc.code, exc.message, param=exc.param)
    for ch in channels:
        if not principal.tier.allows_channel(ch):
            return error_response(403, "forbidden_channel",
                                  f"the {principal.tier.name} tier does not include {ch}")
    if reach <= 0:
        return error_response(403, "beyond_history",
                              f"the {principal.tier.name} tier includes no history")
    if start < now - reach - REACH_SLACK_S:
        return error_response(
            403, "beyond_history",
            f"from {iso(start)} is beyond the {principal.tier.name} tier's history "
            f"({principal.tier.history_hours:g} hours, back to {iso(now - reach)})", param="from")
    reader = WindowReader(edge.feed, set(channels), start, end, limit)
    try:
        await reader.open()
    except KafkaError as exc:
        log.warning("replay cannot read the delta topic: %r", exc)
        return error_response(503, "unavailable", "the delta topic cannot be read right now",
                              headers={"Retry-After": "5"})
    return StreamingResponse(reader.lines(), media_type="application/x-ndjson",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


class WindowReader:
    """The deltas of some channels in a time window, merged in time order."""

    def __init__(self, feed: Any, channels: set[str], start: float, end: float, limit: int) -> None:
        self.feed = feed
        self.channels = channels
        self.start_ms = int(start * 1000)
        self.end_ms = int(end * 1000)
        self.limit = limit
        self.consumer: AIOKafkaConsumer | None = None
        self.tps: list[TopicPartition] = []
        self.stops: dict[TopicPartition, int] = {}
        self.count = 0

    async def open(self) -> None:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.feed.bootstrap, enable_auto_commit=False, group_id=None,
            fetch_max_wait_ms=max(self.feed.fetch_wait_ms, 10), auto_offset_reset="earliest",
            **self.feed.kafka,
        )
        await consumer.start()
        try:
            await consumer.topics()
            parts = consumer.partitions_for_topic(self.feed.topic) or set()
            wanted = sorted(parts)
            self.count = max(parts) + 1 if parts else 0
            if parts:
                only = match_partitions(sorted(self.channels), len(parts))
                if only is not None:
                    wanted = only
            self.tps = [TopicPartition(self.feed.topic, p) for p in wanted]
            if self.tps:
                consumer.assign(self.tps)
                begins = await consumer.beginning_offsets(self.tps)
                ends = await consumer.end_offsets(self.tps)
                found = await consumer.offsets_for_times({tp: self.start_ms for tp in self.tps})
                for tp in self.tps:
                    hit = found.get(tp)
                    if hit is None or hit.timestamp is None or hit.timestamp < 0:
                        start = ends[tp]
                    else:
                        start = max(begins[tp], hit.offset)
                    if start < ends[tp]:
                        consumer.seek(tp, start)
                        self.stops[tp] = ends[tp]
                    else:
                        consumer.pause(tp)
        except BaseException:
            await consumer.stop()
            raise
        self.consumer = consumer

    async def lines(self) -> AsyncIterator[bytes]:
        consumer = self.consumer
        assert consumer is not None
        try:
            active = [tp for tp in self.tps if tp in self.stops]
            done = {tp for tp in self.tps if tp not in self.stops}
            buffers: dict[TopicPartition, deque[tuple[int, int, str, int, bytes]]] = {
                tp: deque() for tp in active}
            last_data = {tp: time.monotonic() for tp in active}
            seen: dict[str, int] = {}
            sent = 0
            while True:
                while all(buffers[tp] or tp in done for tp in active):
                    heads = [(buffers[tp][0][0], tp.partition, tp) for tp in active if buffers[tp]]
                    if not heads:
                        break
                    _, _, tp = min(heads)
                    _, _, mid, seq, data = buffers[tp].popleft()
                    if seq <= seen.get(mid, 0):
                        continue
                    seen[mid] = seq
                    yield data + b"\n"
                    sent += 1
                    if sent >= self.limit:
                        return
                if all(tp in done for tp in active):
                    return
                hungry = [tp for tp in active if tp not in done and not buffers[tp]]
                consumer.pause(*[tp for tp in active if tp not in hungry])
                consumer.resume(*hungry)
                batches = await consumer.getmany(*hungry, timeout_ms=500, max_records=5000)
                now = time.monotonic()
                for tp, records in batches.items():
                    if tp in done:
                        continue
                    last_data[tp] = now
                    for rec in records:
                        if rec.timestamp >= self.end_ms + TIME_SLACK_MS:
                            done.add(tp)
                            break
                        if not self.start_ms <= rec.timestamp < self.end_ms:
                            continue
                        item = self._item(tp.partition, rec.offset, rec.timestamp, rec.value)
                        if item is not None:
                            buffers[tp].append(item)
                    if tp not in done and await consumer.position(tp) >= self.stops[tp]:
                        done.add(tp)
                for tp in hungry:
                    if tp not in done and now - last_data[tp] > STALL_SECONDS:
                        log.warning("replay: partition %d stalled short of its end", tp.partition)
                        done.add(tp)
        finally:
            await consumer.stop()

    def _item(self, partition: int, offset: int, ts: int,
              value: bytes | None) -> tuple[int, int, str, int, bytes] | None:
        for entry in self.feed.make_entries(partition, offset, value, [0] * self.count):
            if self.channels.intersection(entry.channels):
                return (ts, offset, entry.match_id, entry.seq, entry.data)
        return None
