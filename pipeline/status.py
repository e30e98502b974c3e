"""``bts-guru status``: the live state of the system, in the terminal or as JSON.

Everything comes from what the processes publish, so the command needs no access
to them: worker heartbeats (``{prefix}workers``: partitions, schedule and next
polls, counters, quota per provider, circuits, firing alerts), edge heartbeats
(``{prefix}edges``: connected clients, deltas fanned out, channels), the recent
alerts (``{prefix}alerts``) and, from the broker, the consumer group's lag per
topic and partition (committed offset against the end of the partition). A
heartbeat older than 15 s belongs to a process that is gone and is left out.

``/admin`` shows the same document (:func:`collect`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from pipeline.connections import aiokafka_options, redis_client
from pipeline.settings import Settings

STALE = 15.0
BROKER_TIMEOUT = 5.0


async def _heartbeats(redis: aioredis.Redis, key: str, now: float) -> list[dict[str, Any]]:
    out = []
    for raw in (await redis.hgetall(key)).values():
        try:
            beat = json.loads(raw)
        except ValueError:
            continue
        if now - float(beat.get("ts", 0)) <= STALE:
            out.append(beat)
    return sorted(out, key=lambda b: str(b.get("id")))


async def broker_lag(settings: Settings) -> dict[str, dict[str, int]]:
    """Lag of the workers' consumer groups: topic → partition → records behind.

    Sink workers (``worker --role sinks``) are a group of their own; where they
    have committed offsets for a topic, theirs are the ones that count.
    """
    from aiokafka import AIOKafkaConsumer
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap,
                                request_timeout_ms=int(BROKER_TIMEOUT * 1000),
                                **aiokafka_options(settings))
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap,
                                request_timeout_ms=int(BROKER_TIMEOUT * 1000),
                                **aiokafka_options(settings))
    await admin.start()
    try:
        committed = dict(await admin.list_consumer_group_offsets(settings.faust_id))
        sinks = await admin.list_consumer_group_offsets(settings.sinks_group_id)
        theirs = {tp.topic for tp in sinks}
        committed = {tp: meta for tp, meta in committed.items() if tp.topic not in theirs}
        committed.update(sinks)
        tps = [tp for tp in committed if tp.topic.startswith(settings.topic_prefix)]
        await consumer.start()
        ends = await consumer.end_offsets(tps) if tps else {}
    finally:
        await admin.close()
        await consumer.stop()
    out: dict[str, dict[str, int]] = {}
    for tp in sorted(tps):
        meta = committed[tp]
        behind = max(0, ends.get(tp, 0) - max(0, meta.offset))
        out.setdefault(tp.topic.removeprefix(settings.topic_prefix), {})[str(tp.partition)] = behind
    return out


async def collect(settings: Settings, *, redis: aioredis.Redis | None = None,
                  broker: bool = True) -> dict[str, Any]:
    """The status document (see the module docstring)."""
    now = time.time()
    own = redis is None
    client = redis or redis_client(settings, socket_timeout=3, socket_connect_timeout=3)
    p = settings.redis_prefix
    doc: dict[str, Any] = {"ts": now, "workers": [], "edges": [], "alerts": [], "errors": []}
    try:
        doc["workers"] = await _heartbeats(client, f"{p}workers", now)
        doc["edges"] = await _heartbeats(client, f"{p}edges", now)
        doc["alerts"] = [json.loads(a) for a in await client.lrange(f"{p}alerts", 0, 19)]
    except (RedisError, OSError) as exc:
        doc["errors"].append(f"redis: {exc!r}")
    finally:
        if own:
            await client.aclose()
    workers, edges = doc["workers"], doc["edges"]
    quota: dict[str, dict[str, Any]] = {}
    for w in workers:
        for provider, q in (w.get("quota") or {}).items():
            mine = quota.setdefault(provider, {})
            for k, v in q.items():
                if v is not None and (k not in mine or (k != "limit_day" and v < mine[k])):
                    mine[k] = v
    clients: dict[str, dict[str, int]] = {}
    for e in edges:
        for transport, tiers in (e.get("clients") or {}).items():
            for tier, n in tiers.items():
                clients.setdefault(transport, {})
                clients[transport][tier] = clients[transport].get(tier, 0) + int(n)
    lag: dict[str, dict[str, int]] = {}
    lag_source = "workers"
    if broker:
        try:
            lag = await asyncio.wait_for(broker_lag(settings), BROKER_TIMEOUT * 2)
            lag_source = "broker"
        except Exception as exc:  # noqa: BLE001 - fall back to what the workers saw
            doc["errors"].append(f"broker: {exc!r}")
    if lag_source == "workers":
        for w in workers:
            for name, n in (w.get("lag") or {}).items():
                topic, _, part = name.rpartition("/")
                lag.setdefault(topic, {})[part] = int(n)
    doc.update({
        "lag": lag, "lag_source": lag_source, "quota": quota, "clients": clients,
        "clients_total": sum(n for t in clients.values() for n in t.values()),
        "firing": [a for w in workers for a in w.get("alerts", [])],
        "active_matches": max((w.get("active_matches") or 0 for w in workers), default=0),
    })
    return doc


def _age(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    return f"{seconds // 3600}h"


def render(doc: dict[str, Any]) -> str:
    """The document as a terminal page."""
    now = doc["ts"]
    lines = [f"BTS Guru status at {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(now))}", ""]
    workers = doc["workers"]
    lines.append(f"WORKERS ({len(workers)})   active matches {doc['active_matches']}")
    for w in workers:
        c = w.get("counters", {})
        lines.append(f"  {w['id']:<34} {w.get('role', 'all'):<8} up "
                     f"{_age(now - w.get('started', now)):>5}  partitions "
                     f"{','.join(map(str, w.get('partitions', []))) or '-':<12} targets "
                     f"{w.get('targets', 0):>3}  raw {c.get('raw', 0)}  deltas {c.get('deltas', 0)}"
                     f"  dead {c.get('dead', 0)}")
    if not workers:
        lines.append("  (no worker heartbeat in the last 15 s)")
    lines += ["", f"LAG (from the {doc['lag_source']})"]
    for topic, parts in sorted(doc["lag"].items()):
        total = sum(parts.values())
        detail = " ".join(f"{p}:{n}" for p, n in sorted(parts.items(), key=lambda x: int(x[0])))
        lines.append(f"  {topic:<20} {total:>7}   {detail}")
    if not doc["lag"]:
        lines.append("  (none)")
    lines += ["", "NEXT POLLS"]
    polls = sorted((p for w in workers for p in w.get("next_polls", [])), key=lambda p: p["in"])
    for poll in polls[:10]:
        lines.append(f"  in {poll['in']:>6.1f}s  {poll['key']:<40} every {poll['interval']:>6}s "
                     f"(priority {poll['priority']})")
    if not polls:
        lines.append("  (none)")
    lines += ["", "QUOTA"]
    for provider, q in sorted(doc["quota"].items()):
        limit = q.get("limit_day")
        left = q.get("day")
        share = f"{1 - left / limit:6.1%} used" if limit and left is not None else ""
        lines.append(f"  {provider:<16} day {left if left is not None else '?'}/{limit or '?'} left  "
                     f"minute {q.get('minute', '?')} left  {share}")
    if not doc["quota"]:
        lines.append("  (unknown)")
    lines += ["", f"CLIENTS ({doc['clients_total']} on {len(doc['edges'])} edges)"]
    for transport, tiers in sorted(doc["clients"].items()):
        lines.append(f"  {transport:<8} " + "  ".join(f"{t} {n}" for t, n in sorted(tiers.items())))
    lines += ["", "ALERTS"]
    for a in doc["alerts"][:10]:
        lines.append(f"  {_age(now - a['ts']):>5} ago  {a['state']:<8} {a['rule']:<16} {a['summary']}")
    if not doc["alerts"]:
        lines.append("  (none)")
    for err in doc["errors"]:
        lines.append(f"! {err}")
    return "\n".join(lines)


def run_status(args: argparse.Namespace, settings: Settings) -> int:
    """``bts-guru status [--json] [--watch SECONDS]``."""
    watch = getattr(args, "watch", None)
    while True:
        doc = asyncio.run(collect(settings))
        if args.json:
            print(json.dumps(doc, default=str))
        else:
            if watch:
                print("\033[2J\033[H", end="")
            print(render(doc))
        if not watch:
            return 0
        try:
            time.sleep(watch)
        except KeyboardInterrupt:
            return 0
