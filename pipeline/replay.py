"""``bts-guru replay``: read history back from ``match-deltas``.

Selection
    ``--match ID`` (reads only the partition the match id hashes to), ``--channel
    CH`` (repeatable; a delta is on the channels :func:`tables.channels.channels_for`
    gives it), ``--from`` / ``--to`` (ISO 8601 or epoch seconds; ``from`` inclusive,
    ``to`` exclusive, on the records' Kafka timestamps), ``--from-offset P:O`` /
    ``--to-offset P:O`` (repeatable; ``to`` exclusive; naming partitions in
    ``--from-offset`` limits the read to them).

Reading
    A plain kafka-python consumer without a group: every wanted partition is
    assigned, its start found with ``offsets_for_times`` (taken as a lower bound,
    every record is still checked against the window) and its end is the end
    offset when the read starts. Partitions are merged by timestamp, so the
    output is in time order and, per match, in ``seq`` order. A delta whose
    (match id, seq) was already passed (a worker's re-send after a crash) is
    dropped, as every consumer does.

Output
    ``--format jsonl`` (one Delta per line, default) or ``table``. A progress bar
    goes to stderr on long reads when stderr is a terminal (``--progress`` forces
    it, ``--no-progress`` hides it).

Replaying to the edges (``--to-sse``)
    The deltas of one finished match are produced again to ``match-deltas`` under
    a distinct match id (``{match_id}-replay-{tag}``, or ``--replay-id``), with
    fresh ``ts``, spaced like the originals divided by ``--speed``. They are
    ordinary Delta records (the schema admits no extra field; the id is the
    marker), so the edges relay them like any delta, on ``match.{replay id}`` and
    on the sport and league channels: a front end sees the match unfold as if
    live.
    Seq restarts at 1 with a ``created`` delta; when the selection starts after
    the match's first delta, the earlier deltas are folded into that ``created``
    delta.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
import secrets
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TextIO

import jsonpatch

from tables import codec
from tables.channels import channels_for

#: Records whose timestamps run this far past ``--to`` are taken as the end of a partition.
TIME_SLACK_MS = 60_000
#: A partition that gives nothing for this long while short of its end is taken as done.
STALL_SECONDS = 5.0


class ReplayError(Exception):
    """The replay cannot be done (broker, topic or history); the CLI exits 1."""


def parse_time(text: str) -> float:
    """ISO 8601 (a naive time is UTC) or epoch seconds, as epoch seconds."""
    raw = text.strip()
    try:
        value = float(raw)
    except ValueError:
        try:
            when = dt.datetime.fromisoformat(raw.replace("z", "Z"))
        except ValueError:
            raise ValueError(f"{text!r} is not an ISO 8601 time or epoch seconds") from None
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.UTC)
        value = when.timestamp()
    if not 0 <= value <= 4e9:
        raise ValueError(f"{text!r} is not between 1970 and 2096")
    return value


def parse_offset(text: str) -> tuple[int, int]:
    """``PARTITION:OFFSET`` with both whole numbers from 0."""
    part, sep, off = text.strip().partition(":")
    try:
        if not sep:
            raise ValueError
        p, o = int(part), int(off)
    except ValueError:
        raise ValueError(f"{text!r} is not PARTITION:OFFSET (e.g. 3:1200)") from None
    if p < 0 or o < 0 or p > 100_000:
        raise ValueError(f"{text!r}: partition and offset must be whole numbers from 0")
    return p, o


def partition_for(key: str, partitions: int) -> int:
    """The partition the default (murmur2) partitioner gives ``key``."""
    from kafka.partitioner.default import murmur2

    return (murmur2(key.encode()) & 0x7FFFFFFF) % partitions


def iso(ts_ms: float) -> str:
    when = dt.datetime.fromtimestamp(ts_ms / 1000, tz=dt.UTC)
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclasses.dataclass(frozen=True)
class Query:
    match: str | None = None
    channels: tuple[str, ...] = ()
    start: float | None = None  # epoch seconds, inclusive
    end: float | None = None  # epoch seconds, exclusive
    from_offsets: dict[int, int] = dataclasses.field(default_factory=dict)
    to_offsets: dict[int, int] = dataclasses.field(default_factory=dict)

    def wants(self, delta: dict[str, Any]) -> bool:
        mid = delta.get("match_id")
        if self.match is not None and mid != self.match:
            return False
        if self.channels:
            on = channels_for(str(delta.get("sport")), str(delta.get("league")), str(mid))
            if not set(on).intersection(self.channels):
                return False
        return True

    def in_time(self, ts_ms: int) -> bool:
        if self.start is not None and ts_ms < self.start * 1000:
            return False
        return self.end is None or ts_ms < self.end * 1000


@dataclasses.dataclass(frozen=True)
class Record:
    partition: int
    offset: int
    timestamp: int  # ms
    delta: dict[str, Any]


class Progress:
    """A one-line bar on a stream: ``replay [#####-----] 48% 4,800/10,000``."""

    def __init__(self, total: int, stream: TextIO, width: int = 30) -> None:
        self.total = max(total, 1)
        self.stream = stream
        self.width = width
        self.done = 0
        self._shown = -1.0

    def update(self, done: int) -> None:
        self.done = min(done, self.total)
        now = time.monotonic()
        if now - self._shown < 0.1 and self.done < self.total:
            return
        self._shown = now
        frac = self.done / self.total
        fill = int(frac * self.width)
        self.stream.write(f"\rreplay [{'#' * fill}{'-' * (self.width - fill)}] "
                          f"{frac * 100:3.0f}% {self.done:,}/{self.total:,} records")
        self.stream.flush()

    def close(self) -> None:
        self.update(self.total)
        self.stream.write("\n")
        self.stream.flush()


class DeltaReader:
    """Reads a range of ``match-deltas`` with kafka-python, without a consumer group."""

    def __init__(self, bootstrap: str, topic: str, *, fetch_wait_ms: int = 100,
                 options: dict[str, Any] | None = None) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.fetch_wait_ms = fetch_wait_ms
        self.options = options or {}

    def _consumer(self) -> Any:
        from kafka import KafkaConsumer
        from kafka.errors import KafkaError

        try:
            return KafkaConsumer(
                bootstrap_servers=self.bootstrap.split(","), group_id=None,
                enable_auto_commit=False, auto_offset_reset="earliest",
                fetch_max_wait_ms=self.fetch_wait_ms, consumer_timeout_ms=1000,
                request_timeout_ms=30_000, **self.options,
            )
        except KafkaError as exc:
            raise ReplayError(f"cannot reach the broker at {self.bootstrap}: {exc}") from exc

    def read(self, query: Query, *, progress: Callable[[int], Progress | None] | None = None,
             ignore_time: bool = False) -> Iterator[Record]:
        """The deltas ``query`` selects, in time order (and per match in seq order)."""
        from kafka import TopicPartition

        consumer = self._consumer()
        try:
            parts = consumer.partitions_for_topic(self.topic)
            if not parts:
                raise ReplayError(f"topic {self.topic!r} does not exist")
            count = max(parts) + 1
            wanted = sorted(parts)
            if query.match is not None:
                wanted = [partition_for(query.match, len(parts))]
            if query.from_offsets:
                unknown = sorted(set(query.from_offsets) - set(parts))
                if unknown:
                    raise ReplayError(f"partition {unknown[0]} is not in {self.topic} "
                                      f"(0-{count - 1})")
                wanted = [p for p in wanted if p in query.from_offsets]
            tps = [TopicPartition(self.topic, p) for p in wanted]
            if not tps:
                return
            consumer.assign(tps)
            begins = consumer.beginning_offsets(tps)
            ends = consumer.end_offsets(tps)
            starts = {tp: begins[tp] for tp in tps}
            if query.start is not None and not ignore_time:
                found = consumer.offsets_for_times({tp: int(query.start * 1000) for tp in tps})
                for tp in tps:
                    hit = found.get(tp)
                    if hit is None or hit.timestamp is None or hit.timestamp < 0:
                        starts[tp] = ends[tp]
                    else:
                        starts[tp] = max(begins[tp], hit.offset)
            for tp in tps:
                if tp.partition in query.from_offsets:
                    starts[tp] = max(starts[tp], query.from_offsets[tp.partition])
            stops = dict(ends)
            for tp in tps:
                if tp.partition in query.to_offsets:
                    stops[tp] = min(stops[tp], query.to_offsets[tp.partition])
            yield from self._merge(consumer, query, tps, starts, stops, progress, ignore_time)
        finally:
            consumer.close()

    def _merge(self, consumer: Any, query: Query, tps: list[Any], starts: dict[Any, int],
               stops: dict[Any, int], progress: Callable[[int], Progress | None] | None,
               ignore_time: bool) -> Iterator[Record]:
        active = []
        for tp in tps:
            if starts[tp] < stops[tp]:
                consumer.seek(tp, starts[tp])
                active.append(tp)
            else:
                consumer.pause(tp)
        total = sum(stops[tp] - starts[tp] for tp in active)
        bar = progress(total) if progress is not None else None
        limit_ms = None
        if query.end is not None and not ignore_time:
            limit_ms = query.end * 1000 + TIME_SLACK_MS
        buffers: dict[Any, deque[Record]] = {tp: deque() for tp in tps}
        done = {tp for tp in tps if tp not in active}
        last_data = {tp: time.monotonic() for tp in tps}
        scanned = {tp: 0 for tp in tps}
        seen: dict[str, int] = {}
        while True:
            # Emit while every unfinished partition has something buffered.
            while all(buffers[tp] or tp in done for tp in tps):
                heads = [(buffers[tp][0].timestamp, tp.partition, tp) for tp in tps if buffers[tp]]
                if not heads:
                    break
                _, _, tp = min(heads)
                rec = buffers[tp].popleft()
                mid, seq = rec.delta.get("match_id"), rec.delta.get("seq")
                if isinstance(mid, str) and isinstance(seq, int):
                    if seq <= seen.get(mid, 0):
                        continue
                    seen[mid] = seq
                yield rec
            if all(tp in done for tp in tps):
                break
            hungry = [tp for tp in tps if tp not in done and not buffers[tp]]
            for tp in tps:
                if tp in hungry:
                    consumer.resume(tp)
                else:
                    consumer.pause(tp)
            batches = consumer.poll(timeout_ms=500, max_records=5000)
            now = time.monotonic()
            for tp, records in batches.items():
                if tp in done:
                    continue
                last_data[tp] = now
                for msg in records:
                    if msg.offset >= stops[tp] and tp.partition in query.to_offsets:
                        done.add(tp)
                        break
                    if limit_ms is not None and msg.timestamp >= limit_ms:
                        done.add(tp)
                        break
                    scanned[tp] = msg.offset + 1 - starts[tp]
                    rec = self._record(msg, query, ignore_time)
                    if rec is not None:
                        buffers[tp].append(rec)
                if tp not in done and consumer.position(tp) >= stops[tp]:
                    done.add(tp)
            for tp in hungry:
                if tp not in done and now - last_data[tp] > STALL_SECONDS:
                    done.add(tp)
            if bar is not None:
                bar.update(sum(scanned.values()))
        if bar is not None:
            bar.close()

    @staticmethod
    def _record(msg: Any, query: Query, ignore_time: bool) -> Record | None:
        if msg.value is None:
            return None
        try:
            delta = codec.loads(msg.value)
        except codec.DecodeError:
            return None
        if not isinstance(delta, dict) or not query.wants(delta):
            return None
        if not ignore_time and not query.in_time(msg.timestamp):
            return None
        return Record(msg.partition, msg.offset, msg.timestamp, delta)


# -- output -------------------------------------------------------------------


def write_jsonl(records: Iterable[Record], out: TextIO) -> int:
    n = 0
    for rec in records:
        out.write(codec.dumps_str(rec.delta) + "\n")
        n += 1
    out.flush()
    return n


def _events(delta: dict[str, Any]) -> str:
    names = []
    for ev in delta.get("events") or []:
        if isinstance(ev, dict):
            label = str(ev.get("type", "?"))
            if ev.get("team"):
                label += f"({ev['team']})"
            names.append(label)
    return ",".join(names) or "-"


def write_table(records: Iterable[Record], out: TextIO) -> int:
    out.write(f"{'time':<25} {'partition:offset':<17} {'match':<40} {'seq':>5}  "
              f"{'kinds':<22} events\n")
    n = 0
    for rec in records:
        d = rec.delta
        out.write(f"{iso(rec.timestamp):<25} {f'{rec.partition}:{rec.offset}':<17} "
                  f"{str(d.get('match_id'))[:40]:<40} {d.get('seq', '?'):>5}  "
                  f"{','.join(d.get('kinds') or [])[:22]:<22} {_events(d)}\n")
        n += 1
    out.flush()
    return n


# -- replaying to the edges ---------------------------------------------------


def replay_id(match_id: str, tag: str | None = None) -> str:
    return f"{match_id}-replay-{tag or secrets.token_hex(3)}"


def rebased(history: list[dict[str, Any]], window: list[dict[str, Any]], new_id: str,
            now: Callable[[], float] = time.time) -> Iterator[tuple[float, dict[str, Any]]]:
    """The deltas to publish for ``window`` under ``new_id``, each with the original ``ts``.

    ``history`` is every delta of the match before the window, from seq 1; when
    it is not empty it is folded into the first (``created``) delta.
    """
    if not window:
        return
    first = window[0]
    if history or first.get("seq") != 1:
        if not history or history[0].get("seq") != 1:
            have = (history or window)[0].get("seq")
            raise ReplayError(f"the topic holds {first['match_id']} only from seq {have}; "
                              "its start is needed to replay it")
        state: Any = {}
        for d in history:
            state = jsonpatch.apply_patch(state, d["changes"], in_place=False)
        state = jsonpatch.apply_patch(state, first["changes"], in_place=False)
        created = dict(first, kinds=["created"],
                       changes=[{"op": "add", "path": "", "value": state}])
        window = [created, *window[1:]]
    base_seq = int(window[0]["seq"]) - 1
    for d in window:
        out = copy.deepcopy(d)
        orig_seq = int(d["seq"])
        out["match_id"] = new_id
        out["seq"] = orig_seq - base_seq
        out["ts"] = now()
        for op in out.get("changes") or []:
            value = op.get("value")
            if op.get("path") == "" and isinstance(value, dict):
                value["id"] = new_id
                value["seq"] = out["seq"]
            elif op.get("path") == "/seq":
                op["value"] = out["seq"]
            elif op.get("path") == "/id":
                op["value"] = new_id
        yield float(d.get("ts") or 0.0), out


def republish(deltas: Iterable[tuple[float, dict[str, Any]]], send: Callable[[dict[str, Any]], None],
              *, speed: float, max_gap: float | None = None,
              sleep: Callable[[float], None] = time.sleep,
              now: Callable[[], float] = time.time) -> int:
    """Send each delta, spaced like the originals (``ts``) divided by ``speed``."""
    n = 0
    prev_ts: float | None = None
    for orig_ts, delta in deltas:
        if prev_ts is not None:
            gap = max(0.0, orig_ts - prev_ts) / speed
            if max_gap is not None:
                gap = min(gap, max_gap)
            if gap > 0:
                sleep(gap)
        prev_ts = orig_ts
        delta["ts"] = now()
        send(delta)
        n += 1
    return n


# -- the command --------------------------------------------------------------


def run(args: Any, settings: Any, *, out: TextIO | None = None, err: TextIO | None = None) -> int:
    from pipeline.connections import kafka_python_options

    out = out or sys.stdout
    err = err or sys.stderr
    query = Query(match=args.match, channels=tuple(args.channel or ()), start=args.start,
                  end=args.end, from_offsets=dict(args.from_offset or ()),
                  to_offsets=dict(args.to_offset or ()))
    topic = settings.topic("match-deltas")
    reader = DeltaReader(settings.kafka_bootstrap, topic, fetch_wait_ms=max(settings.fetch_wait_ms, 10),
                         options=kafka_python_options(settings))

    def progress(total: int) -> Progress | None:
        show = args.progress if args.progress is not None else (err.isatty() and total >= 2000)
        return Progress(total, err) if show else None

    try:
        if args.to_sse:
            return _to_sse(args, settings, reader, query, out, err, progress)
        records = reader.read(query, progress=progress)
        if args.format == "table":
            n = write_table(records, out)
        else:
            n = write_jsonl(records, out)
    except ReplayError as exc:
        print(f"bts-guru replay: error: {exc}", file=err)
        return 1
    except BrokenPipeError:
        return 0
    if n == 0 and args.format == "table":
        print("no deltas in that range", file=err)
    return 0


def _to_sse(args: Any, settings: Any, reader: DeltaReader, query: Query, out: TextIO,
            err: TextIO, progress: Callable[[int], Progress | None]) -> int:
    from kafka import KafkaProducer

    from pipeline.connections import kafka_python_options

    history: list[dict[str, Any]] = []
    window: list[dict[str, Any]] = []
    for rec in reader.read(Query(match=query.match, channels=query.channels),
                           progress=progress, ignore_time=True):
        in_window = query.in_time(rec.timestamp) and (
            rec.partition not in query.from_offsets or rec.offset >= query.from_offsets[rec.partition]
        ) and (
            rec.partition not in query.to_offsets or rec.offset < query.to_offsets[rec.partition]
        )
        if in_window:
            window.append(rec.delta)
        elif not window:
            history.append(rec.delta)
    if not window:
        raise ReplayError(f"no deltas of {query.match} in that range")
    new_id = args.replay_id or replay_id(query.match)
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap.split(","), linger_ms=0,
                             **kafka_python_options(settings))
    topic = settings.topic("match-deltas")
    print(f"replaying {len(window)} deltas of {query.match} as {new_id} "
          f"(channel match.{new_id}) at speed {args.speed:g}", file=err, flush=True)

    def send(delta: dict[str, Any]) -> None:
        producer.send(topic, codec.dumps(delta), key=new_id.encode()).get(timeout=30)
        if args.format == "table":
            out.write(f"{iso(delta['ts'] * 1000)}  {new_id}  seq {delta['seq']:>4}  "
                      f"{','.join(delta.get('kinds') or [])}\n")
        else:
            out.write(codec.dumps_str(delta) + "\n")
        out.flush()

    try:
        republish(rebased(history, window, new_id), send, speed=args.speed, max_gap=args.max_gap)
    finally:
        producer.close(timeout=10)
    return 0


# -- arguments ----------------------------------------------------------------


def _arg(fn: Callable[[str], Any]) -> Callable[[str], Any]:
    import argparse

    def convert(text: str) -> Any:
        try:
            return fn(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = fn.__name__
    return convert


def _channel(text: str) -> str:
    from tables.channels import ChannelError, validate

    try:
        return validate(text)
    except ChannelError as exc:
        raise ValueError(str(exc)) from None


def _match(text: str) -> str:
    _channel(f"match.{text}")
    return text


def _speed(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a number") from None
    if not 0 < value <= 100_000:
        raise ValueError(f"{text!r} must be above 0 and at most 100000")
    return value


def add_arguments(p: Any) -> None:
    p.add_argument("--match", type=_arg(_match), default=None, help="one match id")
    p.add_argument("--channel", type=_arg(_channel), action="append", default=None,
                   help="a channel (sport.football, league.football.39, match.ID); repeatable")
    p.add_argument("--from", dest="start", type=_arg(parse_time), default=None,
                   help="from this time (ISO 8601 or epoch seconds), inclusive")
    p.add_argument("--to", dest="end", type=_arg(parse_time), default=None,
                   help="up to this time (ISO 8601 or epoch seconds), exclusive")
    p.add_argument("--from-offset", type=_arg(parse_offset), action="append", default=None,
                   metavar="P:O", help="start partition P at offset O; repeatable")
    p.add_argument("--to-offset", type=_arg(parse_offset), action="append", default=None,
                   metavar="P:O", help="stop partition P before offset O; repeatable")
    p.add_argument("--format", choices=["jsonl", "table"], default="jsonl")
    p.add_argument("--progress", dest="progress", action="store_true", default=None,
                   help="always show the progress bar on stderr")
    p.add_argument("--no-progress", dest="progress", action="store_false",
                   help="never show the progress bar")
    p.add_argument("--to-sse", action="store_true",
                   help="publish the match's deltas again, as a new live match the edges relay")
    p.add_argument("--speed", type=_arg(_speed), default=None,
                   help="with --to-sse: original seconds per replayed second (default 1)")
    p.add_argument("--max-gap", type=_arg(_speed), default=None,
                   help="with --to-sse: longest pause between two deltas, seconds")
    p.add_argument("--replay-id", type=_arg(_match), default=None,
                   help="with --to-sse: the match id to publish under (default ID-replay-XXXXXX)")


def check(parser: Any, args: Any) -> None:
    """Combinations argparse cannot check; exits 2 through ``parser.error``."""
    if args.start is not None and args.end is not None and args.end <= args.start:
        parser.error(f"--to {iso(args.end * 1000)} is not after --from {iso(args.start * 1000)}")
    for name in ("from_offset", "to_offset"):
        seen: set[int] = set()
        for p, _ in getattr(args, name) or ():
            if p in seen:
                parser.error(f"--{name.replace('_', '-')} names partition {p} twice")
            seen.add(p)
    if args.to_sse:
        if args.match is None:
            parser.error("--to-sse needs --match ID (one match is replayed at a time)")
        if args.speed is None:
            args.speed = 1.0
    else:
        for name in ("speed", "max_gap", "replay_id"):
            if getattr(args, name) is not None:
                parser.error(f"--{name.replace('_', '-')} {getattr(args, name)!r} "
                             "needs --to-sse")
    if args.replay_id is not None and args.replay_id == args.match:
        parser.error(f"--replay-id {args.replay_id!r} must differ from --match")
