"""The Faust app: topics, the match table and the agents that wire pure functions to them.

``raw-fetches`` → normalise → ``match-updates`` → detect (table ``matches``) →
``match-deltas`` + ``match-snapshots`` → sinks (Redis, Postgres).

Exactly one delta per real change: the detect agent sends a batch's deltas and
waits for the broker to acknowledge them *before* it records the new state in
the table. A crash in between can only make a restarted worker emit the same
(match id, seq) again, which every consumer drops; it can never lose a delta.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import weakref
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import faust
from faust.streams import _current_event
from faust.types import EventT

from pipeline.diff import MatchState, diff
from pipeline.normalise import normalise
from pipeline.connections import aiokafka_options, faust_credentials
from pipeline.settings import WORKER_ROLES, Settings
from pipeline.sinks import MALFORMED, Refused, SinkUnavailable, check_delta, check_snapshot
from pipeline.transport import App, KeyPartitioner, Outbox, partitions_known
from tables import codec, topics
from tables.records import RECORD_VERSION, DeadLetter, Delta, Match

log = logging.getLogger(__name__)

#: Seconds the detect agent waits for an absent Postgres when recovering a match's state.
RECOVER_PATIENCE = 5.0


@contextlib.contextmanager
def event_context(event: EventT) -> Iterator[None]:
    """Make ``event`` the current event, so table reads and writes use its partition."""
    token = _current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        _current_event.reset(token)


def dead_letter(stage: str, reason: str, error_type: str, body: bytes | str, **fields: Any) -> DeadLetter:
    text = body.decode("utf-8", "replace") if isinstance(body, (bytes, bytearray)) else body
    return DeadLetter(
        version=RECORD_VERSION, stage=stage, reason=reason, error_type=error_type,
        provider=fields.get("provider"), sport=fields.get("sport"),
        endpoint=fields.get("endpoint"), body=text, ts=time.time(),
    )


async def until_done(stage: str, step: Callable[[], Awaitable[None]]) -> None:
    """Run ``step`` until it succeeds.

    An agent that raised would be restarted by Faust without the events it was
    holding (a batch taken with ``take`` is even acknowledged), so a failure (the
    broker or a store briefly away, or an error nobody foresaw) is retried here
    instead, with capped exponential backoff. Bad records never get here: they
    are turned into dead letters where they are found. A retried step may send
    a delta again with the same (match id, seq), which consumers drop.

    A ``CancelledError`` is passed on only when this task is being cancelled; one
    that a library lets out while the task is not (asyncio's timeouts can) is a
    failure like any other.
    """
    attempt = 0
    while True:
        try:
            await step()
            return
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is None or task.cancelling():
                raise
            level, failure, trace = logging.WARNING, "was cancelled from inside", False
        except Exception:  # noqa: BLE001 - retried, never dropped
            level, failure, trace = logging.ERROR, "failed", True
        attempt += 1
        delay = random.uniform(0, min(5.0, 0.1 * 2**attempt))
        log.log(level, "%s %s (attempt %d), retrying in %.2fs", stage, failure, attempt, delay,
                exc_info=trace)
        await asyncio.sleep(delay)


class Pipeline:
    """The topics, table and agents of one Faust app, built from settings.

    ``role`` picks the agents (see :data:`~pipeline.settings.WORKER_ROLES`). A
    ``sinks`` worker is a consumer group of its own (``<app id>-sinks``), so that sink
    workers and pipeline workers can be started, stopped and scaled apart: the sinks
    then no longer share the pipeline worker's one core, which they took about 40 %
    of. ``sinks=False`` leaves Redis and Postgres out altogether (no sink agents, and
    no recovery of a match's state from the stores).
    """

    def __init__(self, settings: Settings, *, sinks: bool = True, poll: bool = True,
                 role: str = "all") -> None:
        if role not in WORKER_ROLES:
            raise ValueError(f"role must be one of {', '.join(WORKER_ROLES)}, not {role!r}")
        self.settings = settings
        self.role = role
        # "pipeline" and "all" run the pollers, normalise and detect (and keep the table);
        # "sinks" and "all" run the sink agents.
        runs_pipeline = role != "sinks"
        runs_sinks = role != "pipeline"
        s = settings
        store = "memory://" if s.store == "memory" else "rocksdb://"
        Path(s.data_dir).mkdir(parents=True, exist_ok=True)
        self.app = App(
            s.faust_id if runs_pipeline else s.sinks_group_id,
            broker=s.kafka_url,
            store=store,
            datadir=str(Path(s.data_dir) / ("worker" if runs_pipeline else "sinks")),
            topic_partitions=s.partitions,
            topic_replication_factor=s.kafka_replication_factor,
            broker_credentials=faust_credentials(s),
            processing_guarantee="at_least_once",
            web_enabled=False,
            broker_session_timeout=10,
            broker_rebalance_timeout=10,
            broker_heartbeat_interval=1,
            broker_commit_every=1000,
            broker_commit_interval=1.0,
            consumer_auto_offset_reset="earliest",
            # Faust pauses a partition once its stream's buffer is 80 % full; a fetch
            # of at most 1,000 records then still fits in the rest, so delivering
            # a record rarely has to wait (see transport._Consumer.wait_first).
            stream_buffer_maxsize=8192,
            broker_max_poll_records=1000,
            producer_acks=-1,
            producer_linger=0.002,
            producer_max_batch_size=256 * 1024,
            producer_partitioner=KeyPartitioner(),
            table_cleanup_interval=60.0,
        )
        # A sink worker's hop is on no one's path to a client (the edge reads the deltas
        # itself), so it polls the broker less often.
        self.app.fetch_wait_ms = s.fetch_wait_ms if runs_pipeline else s.sinks_fetch_wait_ms
        self.app.kafka_bootstrap = s.kafka_bootstrap
        self.app.kafka_options = aiokafka_options(s)
        app = self.app

        def topic(name: str, **kw: Any) -> faust.TopicT:
            return app.topic(
                s.topic(name), key_type=bytes, value_type=bytes, key_serializer="raw",
                value_serializer="raw", partitions=s.partitions,
                config=topics.TOPIC_CONFIG.get(name), **kw,
            )

        self.raw_fetches = topic(topics.RAW_FETCHES)
        self.match_updates = topic(topics.MATCH_UPDATES)
        self.match_deltas = topic(topics.MATCH_DELTAS)
        self.match_snapshots = topic(topics.MATCH_SNAPSHOTS)
        self.dead_letters = topic(topics.DEAD_LETTERS)
        if runs_pipeline:
            self.matches = app.Table(
                "matches", partitions=s.partitions, key_type=bytes, value_type=bytes,
                use_partitioner=True,
            )
        self.sinks = sinks
        self.recover_patience = RECOVER_PATIENCE
        self.counters: dict[str, int] = {"raw": 0, "updates": 0, "deltas": 0, "dead": 0, "skipped": 0}
        from pipeline.metrics import Monitor

        self.monitor = Monitor(self)
        app.add_service(self.monitor)

        if runs_pipeline:
            app.agent(self.raw_fetches, name="normalise")(self._normalise_agent)
            app.agent(self.match_updates, name="detect")(self._detect_agent)
        if sinks:
            from pipeline.stores import Stores

            self.stores = Stores(settings)
            app.add_service(self.stores)
            if runs_sinks:
                app.agent(self.match_snapshots, name="snapshot-sink")(self._snapshot_sink)
                app.agent(self.match_deltas, name="delta-sink")(self._delta_sink)
        if poll and runs_pipeline:
            from pipeline.poller import Poller

            self.poller = Poller(settings, self)
            app.add_service(self.poller)

    # -- agents -------------------------------------------------------------

    async def _normalise_agent(self, stream: faust.StreamT[bytes]) -> None:
        async for values in stream.take(500, within=0.005):
            self.counters["raw"] += len(values)
            await until_done("normalise", lambda: self.normalise_batch(values))

    async def normalise_batch(self, values: list[bytes]) -> None:
        """Normalise a batch of raw fetches; their updates leave in one record batch per
        partition, and the raw fetches are acknowledged once the broker has them all."""
        outbox = Outbox(self.app)
        for value in values:
            self.handle_raw(value, outbox)
        for fut in await outbox.send():
            await fut

    def handle_raw(self, value: bytes, outbox: Outbox) -> None:
        try:
            raw = codec.loads(value)
            if not isinstance(raw, dict):
                raise TypeError("raw fetch is not a JSON object")
        except (codec.DecodeError, TypeError) as exc:
            self.counters["dead"] += 1
            outbox.add(self.dead_letters, None, codec.dumps(
                dead_letter("decode", str(exc), type(exc).__name__, value)))
            return
        result = normalise(raw)  # type: ignore[arg-type]
        for match in result.matches:
            try:
                encoded = codec.dumps(match)
            except codec.EncodeError as exc:
                # What a provider's JSON can hold and a record cannot (a lone surrogate, an
                # integer beyond 64 bits): the match goes to the dead letters, not the stream.
                self.counters["dead"] += 1
                body = raw.get("body")
                outbox.add(self.dead_letters, None, codec.dumps(dead_letter(
                    "normalise", f"cannot encode match {match['id']}: {exc}", type(exc).__name__,
                    body if isinstance(body, str) else value, provider=raw.get("provider"),
                    sport=raw.get("sport"), endpoint=raw.get("endpoint"))))
                continue
            self.counters["updates"] += 1
            self.monitor.metrics.match_seen(match)
            outbox.add(self.match_updates, match["id"].encode(), encoded)
        for error in result.errors:
            self.counters["dead"] += 1
            outbox.add(self.dead_letters, None, codec.dumps(error.to_dead_letter(raw)))

    async def _detect_agent(self, stream: faust.StreamT[bytes]) -> None:
        async for events in stream.take_events(500, within=0.005):
            await until_done("detect", lambda: self.detect_batch(events))

    async def detect_batch(self, events: list[EventT]) -> None:
        now = time.time()
        decoded: list[tuple[EventT, bytes, Match]] = []
        known: dict[bytes, MatchState | None] = {}
        for event in events:
            key: bytes = event.key
            try:
                match: Match = codec.loads(event.value)
                if not isinstance(match, dict) or not isinstance(match.get("id"), str):
                    raise TypeError("match update is not a Match object")
            except (codec.DecodeError, TypeError) as exc:
                self.counters["dead"] += 1
                await self.dead_letters.send(value=codec.dumps(
                    dead_letter("detect", str(exc), type(exc).__name__, event.value)))
                continue
            decoded.append((event, key, match))
            if key not in known:
                with event_context(event):
                    stored = self.matches.get(key)
                known[key] = codec.loads(stored) if stored is not None else None
        missing = [k for k, v in known.items() if v is None]
        if missing:
            known.update(await self.recover(missing))
        states: dict[bytes, tuple[EventT, MatchState]] = {}
        outbox = Outbox(self.app)
        owned = self._assigned()
        for event, key, match in decoded:
            if owned is not None and event.message.tp not in owned:
                # The group moved this partition away (a rebalance while this worker
                # was busy): its new owner processes the event; a delta from here
                # could take a seq the new owner also takes.
                self.counters["fenced"] = self.counters.get("fenced", 0) + 1
                continue
            prev = states[key][1] if key in states else known.get(key)
            try:
                result = diff(prev, match, now=now)
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                self.counters["dead"] += 1
                await self.dead_letters.send(value=codec.dumps(
                    dead_letter("detect", f"cannot diff: {exc!r}", type(exc).__name__, event.value,
                                provider=match.get("provider"), sport=match.get("sport"))))
                continue
            if result.delta is None or result.state is None:
                self.counters["skipped"] += 1
                if result.state is not None and prev is not None and (
                        result.state["fetched_at"] > prev["fetched_at"]
                        or result.state.get("behind_since") != prev.get("behind_since")):
                    # Nothing changed, but an answer older than this one must now count as
                    # stale, or an answer behind the snapshot started (or ended) a hold.
                    states[key] = (event, result.state)
                continue
            states[key] = (event, result.state)
            outbox.add(self.match_deltas, key, codec.dumps(result.delta))
            outbox.add(self.match_snapshots, key, codec.dumps(result.state["snapshot"]))
            self.counters["deltas"] += 1
            self.monitor.metrics.delta(result.delta)
        for fut in await outbox.send():
            await fut  # the deltas are on the broker before the table moves on
        if states:
            await self._learn_changelog()
        for key, (event, state) in states.items():
            with event_context(event):
                self.matches[key] = codec.dumps(state)

    def _assigned(self) -> set[Any] | None:
        """The partitions this worker holds now, or None when that cannot be told."""
        try:
            return set(self.app.consumer.assignment())
        except Exception:  # noqa: BLE001 - no consumer yet (unit tests drive detect_batch)
            return None

    async def _learn_changelog(self) -> None:
        """Make sure the producer knows, and keeps knowing, the changelog's partitions.

        The table picks a changelog partition with the producer's partitioner,
        which fails when the producer's metadata lacks that topic: on a fresh
        broker, and whenever the client refreshes metadata only for the topics it
        tracks, which the table's writes alone never add to.
        """
        producer = self.app.producer._ensure_producer()  # type: ignore[attr-defined]
        await partitions_known(producer, self.matches.changelog_topic.get_topic_name())

    async def recover(self, keys: list[bytes]) -> dict[bytes, MatchState]:
        """The last state of matches the table does not hold, from Redis, then Postgres.

        The table is rebuilt from its changelog after a restart or a rebalance; the
        stores matter only when the changelog itself is gone (a broker that lost its
        data), so that ``seq`` continues where the stored snapshots are instead of
        starting again at 1. A match the table does not hold is otherwise a new one,
        so Postgres being away must not stop the stream: it is waited for at most
        :data:`RECOVER_PATIENCE` seconds, and not at all while its sinks are failing;
        the matches Redis does not have then start without a stored state.
        """
        if not self.sinks:
            return {}
        await self.stores.ready.wait()
        metrics = self.monitor.metrics
        ids = [k.decode() for k in keys]
        found = await metrics.read("redis", lambda: self.stores.redis_snapshots.read(ids))
        rest = [i for i in ids if i not in found]
        if rest:
            try:
                if metrics.retrying("postgres"):
                    raise SinkUnavailable("postgres", RuntimeError("its sinks are retrying"))
                found.update(await metrics.read(
                    "postgres", lambda: self.stores.history.read_snapshots(rest),
                    give_up_after=self.recover_patience))
            except SinkUnavailable as exc:
                log.warning("%s; %d matches not in Redis start without a stored state: %s",
                            exc, len(rest), ", ".join(rest[:10]))
        if found:
            log.info("recovered the state of %d matches from the stores", len(found))
        return {mid.encode(): MatchState(snapshot=snap, seq=int(snap["seq"]),
                                         fetched_at=float(snap["fetched_at"]))
                for mid, snap in found.items()}

    def _decode_checked(self, stage: str, values: list[bytes],
                        check: Callable[[Any], None]) -> tuple[list[Any], list[DeadLetter]]:
        """The records of a batch, and a dead letter for each that is not a JSON object
        with the fields its rows need."""
        out, dead = [], []
        for value in values:
            try:
                record = codec.loads(value)
                if not isinstance(record, dict):
                    raise TypeError("record is not a JSON object")
                check(record)
            except (codec.DecodeError, *MALFORMED) as exc:
                dead.append(dead_letter(stage, f"cannot store the record: {exc!r}",
                                        type(exc).__name__, value))
                continue
            out.append(record)
        return out, dead

    async def _send_dead(self, stage: str, dead: list[DeadLetter], refused: list[Refused]) -> None:
        for row, exc in refused:
            dead.append(dead_letter(stage, str(exc), type(exc.cause).__name__, codec.dumps(row),
                                    sport=row.get("sport")))
        for letter in dead:
            self.counters["dead"] += 1
            await self.dead_letters.send(value=codec.dumps(letter))

    # A sink's step runs until it succeeds: an agent that raised would be restarted by
    # Faust with the records of its batch acknowledged, and they would never be stored.

    async def _snapshot_sink(self, stream: faust.StreamT[bytes]) -> None:
        await self.stores.ready.wait()
        async for values in stream.take(500, within=0.05):
            snapshots, dead = self._decode_checked("snapshot-sink", values, check_snapshot)
            await until_done("snapshot-sink", lambda: self.store_snapshots(snapshots, dead))

    async def store_snapshots(self, snapshots: list[Match], dead: list[DeadLetter]) -> None:
        write_with_retry = self.monitor.metrics.write
        await write_with_retry("redis", lambda: self.stores.redis_snapshots.write(snapshots))
        refused = await write_with_retry(
            "postgres", lambda: self.stores.history.write_snapshots(snapshots))
        await self._send_dead("snapshot-sink", list(dead), refused)

    async def _delta_sink(self, stream: faust.StreamT[bytes]) -> None:
        await self.stores.ready.wait()
        async for values in stream.take(500, within=0.05):
            deltas, dead = self._decode_checked("delta-sink", values, check_delta)
            await until_done("delta-sink", lambda: self.store_deltas(deltas, dead))

    async def store_deltas(self, deltas: list[Delta], dead: list[DeadLetter]) -> None:
        refused = await self.monitor.metrics.write(
            "postgres", lambda: self.stores.history.write_deltas(deltas))
        await self._send_dead("delta-sink", list(dead), refused)


def create_app(settings: Settings, **kwargs: Any) -> Pipeline:
    return Pipeline(settings, **kwargs)
