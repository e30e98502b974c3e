"""End-to-end latency: raw record → normalise → detect → ``match-deltas`` → edge → SSE / WS client.

A real pipeline worker (``bts-guru worker --role pipeline``), its sinks in a worker of
their own (``--role sinks``, as in the ``pipeline`` benchmark's headline) and a real
edge run as processes. Raw fetches are sent to ``raw-fetches`` at a fixed rate of
deltas, each fetch changing one match (at 100 and 1,000 deltas/s) or 20 (at 1,000
deltas/s again, as the pollers' calls carry them), with the send time as
``fetched_at``, by a producer that lingers 2 ms as the worker's own pollers do. The
clients (another process, 5 SSE + 5 WebSocket on ``sport.football``) record arrival
time minus ``fetched_at``. The records' timestamps on ``match-updates`` and
``match-deltas`` break that time down by stage.
"""

from __future__ import annotations

import asyncio
import copy
import re
import time
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from bench import common, data
from bench.common import Row, log
from pipeline.dev import DATA_TOPICS
from tables import codec

CLIENTS = 5
GROUP = 20  # matches in a raw fetch in the last run: what one ``fixtures?ids=`` call carries


def base_items(n: int) -> list[dict[str, Any]]:
    w = data.world({"football": max(60, n * 2), "basketball": 1, "hockey": 1})
    at = data.busiest(w)
    items = [data.item(m, "football", at) for m in w.matches("football") if m.is_live(at)]
    while len(items) < n:
        clone = copy.deepcopy(items[len(items) % len(items)])
        clone["fixture"]["id"] = 5_000_000 + len(items)
        items.append(clone)
    return items[:n]


class Source:
    """Raw fetches that each give new scores to ``per`` of ``n`` matches.

    ``per=1`` is one raw fetch per delta, the most records a delta rate can come in;
    ``per=20`` is closer to how the pollers' calls carry matches (``fixtures?ids=``
    takes 20, ``live=all`` every match in play), and to what a provider allows: the
    Mega plan's 900 calls a minute are 15 raw fetches a second.
    Each fetch's record is encoded once, with a marker where each match's score and
    the send time go; a record is then its pieces joined around those numbers. The
    sender shares the two cores with what it measures, and encoding every record anew
    (the body with the standard ``json``, then the record) took about a quarter of a
    core at 1,000 a second.
    """

    FETCHED_AT = b"1111111111.25"

    def __init__(self, n: int, packings: tuple[int, ...] = (1,)) -> None:
        items = base_items(n)
        self.count = [0] * n
        # per -> [(key, {marker: match index}, pieces)]
        self.fetches: dict[int, list[tuple[bytes, dict[bytes, int], list[bytes]]]] = {}
        self.turn = dict.fromkeys(packings, 0)
        for per in packings:
            self.fetches[per] = []
            for start in range(0, n, per):
                group = {b"77777%02d" % j: start + j for j in range(min(per, n - start))}
                body = []
                for marker, i in group.items():
                    it = copy.deepcopy(items[i])
                    it["goals"]["home"] = int(marker)
                    body.append(it)
                value = codec.dumps(data.raw_fetch("football", {"live": "all"}, body,
                                                   float(self.FETCHED_AT)))
                markers = [*group, self.FETCHED_AT]
                pieces = re.split(b"(" + b"|".join(markers) + b")", value)
                if sorted(pieces[1::2]) != sorted(markers):
                    raise ValueError("each score and the fetch time are not in the record once each")
                key = f"bench:{items[start]['fixture']['id']}".encode()
                self.fetches[per].append((key, group, pieces))

    def next(self, per: int = 1) -> tuple[bytes, bytes, int]:
        """(key, record, matches in it): the next fetch of ``per`` matches."""
        fetches = self.fetches[per]
        key, group, pieces = fetches[self.turn[per] % len(fetches)]
        self.turn[per] += 1
        numbers = {self.FETCHED_AT: repr(time.time()).encode()}
        for marker, i in group.items():
            self.count[i] += 1
            numbers[marker] = str(self.count[i]).encode()
        return key, b"".join(numbers[p] if i % 2 else p for i, p in enumerate(pieces)), len(group)


async def send(producer: AIOKafkaProducer, topic: str, source: Source, rate: float,
               seconds: float, per: int = 1) -> int:
    """Send ``rate`` deltas a second for ``seconds``, ``per`` matches to a raw fetch;
    returns the number of deltas sent."""
    fetches = int(rate * seconds / per)
    t0 = time.perf_counter()
    sent = 0
    for i in range(fetches):
        ahead = t0 + i * per / rate - time.perf_counter()
        if ahead > 0:
            await asyncio.sleep(ahead)
        key, value, matches = source.next(per)
        await producer.send(topic, value, key=key)
        sent += matches
    await producer.flush()
    return sent


async def end_offsets(consumer: AIOKafkaConsumer, topic: str,
                      partitions: int) -> dict[TopicPartition, int]:
    tps = [TopicPartition(topic, p) for p in range(partitions)]
    return dict(await consumer.end_offsets(tps))


async def hop_times(consumer: AIOKafkaConsumer, start: dict[TopicPartition, int],
                    since: float) -> list[float]:
    """Record timestamp − ``fetched_at`` (ms) of every record from ``start`` on whose raw
    fetch was sent at ``since`` or later: when the worker's producer took the update (or
    delta) of that fetch. The embedded broker reports an end offset inside the last
    batch, so ``start`` can be a little early: ``since`` leaves those records out."""
    end = await consumer.end_offsets(list(start))
    consumer.assign(list(start))
    for tp, offset in start.items():
        consumer.seek(tp, offset)
    out: list[float] = []
    left = {tp for tp in start if end[tp] > start[tp]}
    while left:
        batch = await consumer.getmany(timeout_ms=1000, max_records=10_000)
        if not batch:
            break
        for tp, records in batch.items():
            for r in records:
                fetched_at = codec.loads(r.value)["fetched_at"]
                if fetched_at >= since:
                    out.append(r.timestamp - fetched_at * 1000)
            if records and records[-1].offset + 1 >= end[tp]:
                left.discard(tp)
    consumer.unsubscribe()  # no fetching in the background while the next rate runs
    return out


def hops_note(updates: list[float], deltas: list[float], clients: list[float]) -> str:
    """Where the time goes, as cumulative p50 / p99 from the raw fetch's ``fetched_at``."""
    parts = []
    for name, lat in (("update produced", updates), ("delta produced", deltas),
                      ("at the client", clients)):
        parts.append(f"{name} {common.fmt(common.pct(lat, 50), 'ms')} / "
                     f"{common.fmt(common.pct(lat, 99), 'ms')}")
    return "p50 / p99 from the fetch: " + ", ".join(parts)


async def run(env: common.Env, workdir: Path, quick: bool) -> list[Row]:
    seconds = 3.0 if quick else 10.0
    s = env.settings("lat")
    await common.prepare(s, DATA_TOPICS)
    worker = common.Proc.cli("lat-worker", ["worker", "--role", "pipeline"], s, workdir / "logs")
    sinks = common.Proc.cli("lat-sinks", ["worker", "--role", "sinks"], s, workdir / "logs")
    edge, url = common.start_edge(s, workdir / "logs", "lat-edge")
    talker = common.clients_proc("lat-clients", workdir / "logs")
    producer = AIOKafkaProducer(bootstrap_servers=s.kafka_bootstrap, linger_ms=2)
    reader = AIOKafkaConsumer(bootstrap_servers=s.kafka_bootstrap, group_id=None,
                              enable_auto_commit=False, fetch_max_wait_ms=10)
    await producer.start()
    await reader.start()
    topic = s.topic("raw-fetches")
    rows: list[Row] = []
    try:
        await common.edge_ready(s, url, edge)
        await talker.ask({"op": "connect", "host": "127.0.0.1", "port": url.rsplit(":", 1)[1],
                                "sse": CLIENTS, "ws": CLIENTS, "mode": "latency"}, timeout=60)
        source = Source(200, (1, GROUP))
        # warm up: every match once (its created delta), until the clients see them
        await talker.ask({"op": "reset"})
        n = await send(producer, topic, source, 200, 1.0)
        r = await talker.ask({"op": "wait", "frames": n * 2 * CLIENTS, "timeout": 90}, timeout=120)
        if r["frames"] < n * 2 * CLIENTS:
            raise RuntimeError(f"warm-up: {r['frames']} of {n * 2 * CLIENTS} deliveries; worker:\n"
                               + worker.log()[-2000:])
        for rate, per in ((100, 1), (1000, 1), (1000, GROUP)):
            await talker.ask({"op": "reset"})
            marks = {name: await end_offsets(reader, s.topic(name), s.partitions)
                     for name in ("match-updates", "match-deltas")}
            since = time.time()
            n = await send(producer, topic, source, rate, seconds, per)
            r = await talker.ask({"op": "wait", "frames": n * 2 * CLIENTS, "timeout": 60, "idle": 5},
                                 timeout=120)
            hops = hops_note(await hop_times(reader, marks["match-updates"], since),
                             await hop_times(reader, marks["match-deltas"], since),
                             [x * 1000 for x in r["lat"]["ws"] + r["lat"]["sse"]])
            packing = "" if per == 1 else f" in fetches of {per} matches"
            log(f"latency {rate}/s{packing}: {hops}")
            for kind, name in (("sse", "SSE"), ("ws", "WebSocket")):
                lat = [x * 1000 for x in r["lat"][kind]]
                p50, p99 = common.pct(lat, 50), common.pct(lat, 99)
                complete = len(lat) == n * CLIENTS
                log(f"latency {rate}/s{packing} {kind}: p50 {p50} p99 {p99} ({len(lat)} of {n * CLIENTS})")
                rows.append(Row("latency", f"end-to-end raw record → {name} client at {rate:,} "
                                f"deltas/s{packing}: p99", p99, "ms", reference=f"p50 {common.fmt(p50, 'ms')}",
                                target="≤ 100 ms", ok=None if p99 is None else p99 <= 100 and complete,
                                note=f"{len(lat):,} of {n * CLIENTS:,} deliveries "
                                     f"({n / per:,.0f} raw fetches), "
                                     f"max {common.fmt(max(lat) if lat else None, 'ms')}; "
                                     + hops))
    finally:
        await reader.stop()
        await producer.stop()
        talker.send({"op": "quit"})
        talker.proc.stop()
        edge.stop()
        worker.stop()
        sinks.stop()
        await common.cleanup(s)
    return rows
