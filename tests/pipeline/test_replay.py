"""The partner feed on Kafka and ``bts-guru replay``, against the run's broker.

Deltas are made the way the detect agent makes them (match states through
``pipeline.diff.diff``) and produced to ``match-deltas`` / ``match-snapshots``
with kafka-python, like a worker would.
"""

from __future__ import annotations

import copy
import datetime as dt
import itertools
import os
import subprocess
import sys
import time
import uuid
from typing import Any

import jsonpatch
import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic

from pipeline import replay
from pipeline.diff import diff
from tables import codec, topics
from tables.schema_check import validate

T0 = 1_795_000_000.0


def base_match(mid: str, league: str = "39", start: float = T0) -> dict[str, Any]:
    sport, provider, pid = mid.split("-", 2)
    return {
        "version": 1, "id": mid, "sport": sport, "provider": provider, "provider_id": pid,
        "league": {"id": league, "name": "Premier League", "country": "England",
                   "season": "2026", "round": "Regular Season - 14"},
        "home": {"id": "40", "name": "Liverpool", "logo": None},
        "away": {"id": "50", "name": "Manchester City", "logo": None},
        "status": {"phase": "scheduled", "code": "NS", "label": "Not Started", "period": None,
                   "clock": None},
        "score": {"home": None, "away": None, "periods": {}},
        "start_time": dt.datetime.fromtimestamp(start, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "venue": {"id": "550", "name": "Anfield", "city": "Liverpool"},
        "events": [], "detail": None, "seq": 0, "updated_at": start, "fetched_at": start,
    }


def goal(minute: int, team: str, player: str) -> dict[str, Any]:
    return {"id": f"g{minute}{team}", "type": "goal", "minute": minute, "extra": None, "team": team,
            "player": {"id": None, "name": player}, "assist": None, "detail": "Normal Goal",
            "comments": None}


def match_states(mid: str, league: str = "39", start: float = T0) -> list[tuple[float, dict]]:
    """A whole match as the normaliser would see it: (fetch time, Match) pairs."""
    m = base_match(mid, league, start)
    out: list[tuple[float, dict]] = [(start - 600, copy.deepcopy(m))]

    def step(at: float, **changes: Any) -> None:
        for path, value in changes.items():
            target = m
            keys = path.split("__")
            for k in keys[:-1]:
                target = target[k]
            target[keys[-1]] = value
        m["fetched_at"] = at
        out.append((at, copy.deepcopy(m)))

    step(start, status__phase="live", status__code="1H", status__label="First Half",
         status__period=1, status__clock="1", score__home=0, score__away=0)
    step(start + 60 * 23, status__clock="23", score__home=1,
         events=[goal(23, "home", "M. Salah")])
    step(start + 60 * 45, status__phase="break", status__code="HT", status__label="Halftime",
         status__clock="45", score__periods={"1H": {"home": 1, "away": 0}})
    step(start + 60 * 62, status__phase="live", status__code="2H", status__label="Second Half",
         status__period=2, status__clock="62", score__away=1,
         events=[goal(23, "home", "M. Salah"), goal(62, "away", "E. Haaland")])
    step(start + 60 * 88, status__clock="88", score__home=2,
         events=[goal(23, "home", "M. Salah"), goal(62, "away", "E. Haaland"),
                 goal(88, "home", "D. Szoboszlai")])
    step(start + 60 * 96, status__phase="finished", status__code="FT", status__label="Match Finished",
         status__clock="90", score__periods={"1H": {"home": 1, "away": 0}, "2H": {"home": 1, "away": 1}})
    return out


def run_diff(mid: str, league: str = "39", start: float = T0) -> list[tuple[dict, dict]]:
    """(delta, snapshot) of every change of one match, from ``pipeline.diff.diff``."""
    state = None
    out = []
    for at, m in match_states(mid, league, start):
        result = diff(state, m, now=at + 0.5)
        if result.state is not None:
            state = result.state
        if result.delta is not None:
            out.append((result.delta, result.state["snapshot"]))
    return out


def create_topics(settings, partitions: int = 4) -> None:
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    try:
        admin.create_topics([
            NewTopic(settings.topic(topics.MATCH_DELTAS), partitions, 1,
                     topic_configs=topics.TOPIC_CONFIG[topics.MATCH_DELTAS]),
            NewTopic(settings.topic(topics.MATCH_SNAPSHOTS), partitions, 1,
                     topic_configs=topics.TOPIC_CONFIG[topics.MATCH_SNAPSHOTS]),
        ])
    finally:
        admin.close()


def produce(producer: KafkaProducer, topic: str, key: str, value: dict, ts: float | None = None) -> None:
    producer.send(topic, codec.dumps(value), key=key.encode(),
                  timestamp_ms=None if ts is None else int(ts * 1000))


def cli(settings, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, **settings.env()}
    return subprocess.run([sys.executable, "-m", "pipeline.cli", "replay", *args],
                          capture_output=True, text=True, env=env, timeout=60, check=False)


def lines(result: subprocess.CompletedProcess) -> list[dict]:
    assert result.returncode == 0, result.stderr
    return [codec.loads(line) for line in result.stdout.splitlines() if line.strip()]


@pytest.fixture
def broker(settings):
    create_topics(settings)
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, linger_ms=5)
    yield producer
    producer.close()


#: The development broker holds a new group's first join for max_poll_interval_ms.
GROUP = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 500, "max_poll_interval_ms": 2500}

MATCHES = ["football-apifootball-1149519", "football-apifootball-1149520",
           "football-apifootball-1149521"]


def test_partner_consumer_group_gets_every_delta_in_seq_order(settings, broker):
    made = {mid: run_diff(mid, league=str(39 + i)) for i, mid in enumerate(MATCHES)}
    # Interleave the matches, as a worker would send them.
    for step in range(max(len(v) for v in made.values())):
        for mid, pairs in made.items():
            if step < len(pairs):
                produce(broker, settings.topic(topics.MATCH_DELTAS), mid, pairs[step][0])
    broker.flush()

    consumer = KafkaConsumer(settings.topic(topics.MATCH_DELTAS),
                             bootstrap_servers=settings.kafka_bootstrap,
                             group_id=f"partner-{uuid.uuid4().hex[:6]}",
                             auto_offset_reset="earliest", enable_auto_commit=True, **GROUP)
    want = sum(len(v) for v in made.values())
    got: dict[str, list[dict]] = {}
    deadline = time.monotonic() + 30
    try:
        while sum(map(len, got.values())) < want and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                for rec in records:
                    assert rec.key.decode() == codec.loads(rec.value)["match_id"]
                    got.setdefault(rec.key.decode(), []).append(codec.loads(rec.value))
    finally:
        consumer.close()
    for mid, pairs in made.items():
        deltas = got[mid]
        assert [d["seq"] for d in deltas] == list(range(1, len(pairs) + 1))
        assert deltas == [p[0] for p in pairs]
        for d in deltas:
            validate("delta", d)
        kinds = [d["kinds"] for d in deltas]
        assert kinds[0] == ["created"] and any("score" in k for k in kinds)


def test_rebuild_from_snapshots_then_follow_deltas(settings, broker):
    made = {mid: run_diff(mid) for mid in MATCHES}
    deltas_topic = settings.topic(topics.MATCH_DELTAS)
    snaps_topic = settings.topic(topics.MATCH_SNAPSHOTS)
    half = 3
    for mid, pairs in made.items():
        for d, snap in pairs[:half]:
            produce(broker, deltas_topic, mid, d)
            produce(broker, snaps_topic, mid, snap)
    broker.flush()

    # The partner starts now: current state from the compacted snapshot topic...
    state: dict[str, dict] = {}
    snaps = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, group_id=None,
                          enable_auto_commit=False, auto_offset_reset="earliest")
    tps = [TopicPartition(snaps_topic, p) for p in snaps.partitions_for_topic(snaps_topic)]
    snaps.assign(tps)
    snaps.seek_to_beginning(*tps)
    deadline = time.monotonic() + 20
    while len(state) < len(MATCHES) or any(s["seq"] < half for s in state.values()):
        assert time.monotonic() < deadline
        for records in snaps.poll(timeout_ms=300).values():
            for rec in records:
                snap = codec.loads(rec.value)
                validate("match", snap)
                if snap["seq"] > state.get(rec.key.decode(), {"seq": 0})["seq"]:
                    state[rec.key.decode()] = snap
    snaps.close()

    # ... meanwhile the match goes on ...
    for mid, pairs in made.items():
        for d, snap in pairs[half:]:
            produce(broker, deltas_topic, mid, d)
            produce(broker, snaps_topic, mid, snap)
    broker.flush()

    # ... then follow the deltas (from the start of retention: older ones are skipped by seq).
    follow = KafkaConsumer(deltas_topic, bootstrap_servers=settings.kafka_bootstrap,
                           group_id=f"partner-{uuid.uuid4().hex[:6]}", auto_offset_reset="earliest",
                           **GROUP)
    deadline = time.monotonic() + 20
    try:
        while any(state[mid]["seq"] < len(pairs) for mid, pairs in made.items()):
            assert time.monotonic() < deadline, {m: s["seq"] for m, s in state.items()}
            for records in follow.poll(timeout_ms=300).values():
                for rec in records:
                    d = codec.loads(rec.value)
                    have = state[d["match_id"]]["seq"]
                    if d["seq"] <= have:
                        continue
                    assert d["seq"] == have + 1, "gap: fetch GET /v1/matches/{id} or replay"
                    state[d["match_id"]] = jsonpatch.apply_patch(state[d["match_id"]], d["changes"])
    finally:
        follow.close()
    for mid, pairs in made.items():
        assert state[mid] == pairs[-1][1]
        validate("match", state[mid])


def test_replay_by_time_returns_exactly_the_window(settings, broker):
    now = time.time()
    base = float(int(now)) - 6 * 3600
    topic = settings.topic(topics.MATCH_DELTAS)
    produced = []  # (kafka ts, delta), sent in time order as a worker would
    for i, mid in enumerate(MATCHES):
        pairs = run_diff(mid, league="39" if i < 2 else "140", start=base)
        produced += [(base + 600 * k + 60 * i, d) for k, (d, _) in enumerate(pairs)]
    produced.sort(key=lambda p: p[0])
    for ts, d in produced:
        produce(broker, topic, d["match_id"], d, ts)
    broker.flush()
    start, end = base + 600 * 2, base + 600 * 5  # deltas 2..4 of every match

    window = lines(cli(settings, "--from", replay.iso(start * 1000), "--to", repr(end)))
    expected = [d for ts, d in produced if start <= ts < end]
    assert len(expected) == 9
    assert window == expected

    one = lines(cli(settings, "--match", MATCHES[1], "--from", repr(start), "--no-progress"))
    assert one == [d for ts, d in produced if ts >= start and d["match_id"] == MATCHES[1]]
    assert [d["seq"] for d in one] == list(range(3, 3 + len(one)))

    league = lines(cli(settings, "--channel", "league.football.140", "--to", repr(end)))
    assert league == [d for ts, d in produced if ts < end and d["league"] == "140"]

    table = cli(settings, "--channel", f"match.{MATCHES[0]}", "--format", "table", "--progress")
    assert table.returncode == 0, table.stderr
    rows = table.stdout.splitlines()
    assert rows[0].split()[:4] == ["time", "partition:offset", "match", "seq"]
    assert len(rows) == 1 + len(run_diff(MATCHES[0]))
    assert "replay [" in table.stderr and "100%" in table.stderr


def test_replay_by_offsets(settings, broker):
    topic = settings.topic(topics.MATCH_DELTAS)
    mid = MATCHES[0]
    pairs = run_diff(mid)
    for d, _ in pairs:
        produce(broker, topic, mid, d)
        broker.flush()
    part = replay.partition_for(mid, 4)
    got = lines(cli(settings, "--from-offset", f"{part}:2", "--to-offset", f"{part}:5"))
    assert [d["seq"] for d in got] == [3, 4, 5]
    gone = cli(settings, "--from-offset", "9:0")
    assert gone.returncode == 1 and "partition 9" in gone.stderr


@pytest.mark.parametrize("args, named", [
    (["--from", "yesterday"], "yesterday"),
    (["--to", "2026-13-01"], "2026-13-01"),
    (["--from-offset", "3"], "'3'"),
    (["--to-offset", "a:b"], "a:b"),
    (["--channel", "sport.curling"], "curling"),
    (["--format", "xml"], "xml"),
    (["--from", "2000", "--to", "1000"], "--to"),
    (["--speed", "2"], "--speed"),
    (["--to-sse"], "--match"),
    (["--to-sse", "--match", "football-apifootball-1", "--speed", "0"], "'0'"),
])
def test_bad_replay_arguments_exit_2_naming_the_value(args, named):
    result = subprocess.run([sys.executable, "-m", "pipeline.cli", "replay", *args],
                            capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 2
    assert named in result.stderr


def test_rebased_replay_folds_history_and_renumbers():
    pairs = run_diff(MATCHES[0])
    deltas = [d for d, _ in pairs]
    clock = iter(range(1000, 2000))
    out = [d for _, d in replay.rebased(deltas[:3], deltas[3:], "football-apifootball-1-replay-x",
                                        now=lambda: float(next(clock)))]
    assert [d["seq"] for d in out] == list(range(1, len(deltas) - 2))
    assert out[0]["kinds"] == ["created"]
    state: Any = {}
    for d in out:
        validate("delta", d)
        state = jsonpatch.apply_patch(state, d["changes"])
    final = dict(pairs[-1][1], id="football-apifootball-1-replay-x", seq=len(out))
    assert state == final
    slept: list[float] = []
    sent: list[dict] = []
    n = replay.republish(replay.rebased([], deltas, "football-apifootball-1-replay-y"), sent.append,
                         speed=60, max_gap=10, sleep=slept.append)
    assert n == len(deltas) == len(sent)
    gaps = [(b["ts"] - a["ts"]) / 60 for a, b in itertools.pairwise(deltas)]
    assert slept == [pytest.approx(min(g, 10)) for g in gaps if g > 0]
