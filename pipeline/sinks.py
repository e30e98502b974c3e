"""Sinks: the current snapshot in Redis, snapshots and delta history in Postgres.

Each write is idempotent by (match id, seq): Redis keeps a snapshot only when
its seq is higher than the one stored, Postgres upserts ``matches`` only for a
higher seq and ignores a ``match_deltas`` row it already has. A sink that
cannot write waits and retries with backoff (:func:`write_with_retry`), so the
agent that calls it does not ack its records, and the consumer does not commit
their offsets, until the write has succeeded.

Postgres refusing a record for what it holds (a data error, such as a NUL
character in a JSON string) is not an outage: the batch is then written one row at
a time and the rows it refuses are returned, for the caller to send to
dead-letters. A record without the fields a row needs is found before any write
(:func:`check_snapshot`, :func:`check_delta`).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import asyncpg
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from tables import codec
from tables.migrate import quote_ident
from tables.records import IN_PLAY_PHASES, Delta, Match
from tables.redis_keys import TTL_BY_PHASE, RedisKeys

log = logging.getLogger(__name__)

#: KEYS[1] match key, KEYS[2] live set of the sport, KEYS[3] league zset,
#: KEYS[4] day zset, KEYS[5] sport zset.
#: ARGV: seq, phase, json, ttl (0 = none), in_play (0/1), match id, start (epoch).
_STORE_SNAPSHOT = """
local current = redis.call('HGET', KEYS[1], 'seq')
if current and tonumber(current) >= tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'seq', ARGV[1], 'phase', ARGV[2], 'json', ARGV[3])
if tonumber(ARGV[4]) > 0 then
  redis.call('EXPIRE', KEYS[1], ARGV[4])
else
  redis.call('PERSIST', KEYS[1])
end
if ARGV[5] == '1' then
  redis.call('SADD', KEYS[2], ARGV[6])
else
  redis.call('SREM', KEYS[2], ARGV[6])
end
redis.call('ZADD', KEYS[3], ARGV[7], ARGV[6])
redis.call('ZADD', KEYS[4], ARGV[7], ARGV[6])
redis.call('ZADD', KEYS[5], ARGV[7], ARGV[6])
return 1
"""


class SinkUnavailable(Exception):
    """A store could not take a write; the caller retries after ``retry_after``."""

    def __init__(self, store: str, cause: BaseException, retry_after: float = 0.0) -> None:
        super().__init__(f"{store} unavailable: {cause!r}")
        self.store = store
        self.cause = cause
        self.retry_after = retry_after


class SinkRefused(Exception):
    """A store refused a record for its content; retrying the same record cannot succeed."""

    def __init__(self, store: str, cause: BaseException) -> None:
        super().__init__(f"{store} refused the record: {cause}")
        self.store = store
        self.cause = cause


#: What Postgres away, restarting or not ready (no schema yet) raises. A connection
#: killed under a query can even leave asyncpg's protocol "busy" (InternalClientError).
POSTGRES_AWAY = (OSError, asyncio.TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError,
                 asyncpg.InternalClientError)

#: A record a store refused, and why.
Refused = tuple[dict[str, Any], SinkRefused]

#: What reading the fields of a malformed record raises.
MALFORMED = (KeyError, TypeError, ValueError, AttributeError, IndexError)


def check_snapshot(m: Any) -> None:
    """Raise one of :data:`MALFORMED` unless ``m`` has every field the snapshot rows use."""
    for name in ("id", "sport"):
        if not isinstance(m[name], str):
            raise TypeError(f"{name} is not a string")
    if not isinstance(m["seq"], int) or not isinstance(m["status"]["phase"], str):
        raise TypeError("seq or status.phase has the wrong type")
    str(m["league"]["id"])
    float(m["updated_at"])
    start_epoch(m)


def check_delta(d: Any) -> None:
    """Raise one of :data:`MALFORMED` unless ``d`` has every field a delta row uses."""
    if not isinstance(d["match_id"], str) or not isinstance(d["seq"], int):
        raise TypeError("match_id or seq has the wrong type")
    float(d["ts"])
    if not all(isinstance(k, str) for k in d["kinds"]):
        raise TypeError("kinds are not strings")


def start_epoch(match: Match) -> float:
    return parse_time(match["start_time"]).timestamp()


def parse_time(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


class RedisSnapshots:
    """Current snapshots and their indexes in Redis (see :mod:`tables.redis_keys`)."""

    def __init__(self, client: aioredis.Redis, keys: RedisKeys) -> None:
        self.client = client
        self.keys = keys
        self._script = client.register_script(_STORE_SNAPSHOT)

    async def write(self, snapshots: Sequence[Match]) -> int:
        """Store each snapshot unless Redis already has a newer one; returns how many were stored."""
        if not snapshots:
            return 0
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                for m in snapshots:
                    phase = m["status"]["phase"]
                    start = start_epoch(m)
                    day = m["start_time"][:10]
                    await self._script(
                        keys=[
                            self.keys.match(m["id"]),
                            self.keys.live(m["sport"]),
                            self.keys.league(m["sport"], m["league"]["id"]),
                            self.keys.day(day),
                            self.keys.sport(m["sport"]),
                        ],
                        args=[
                            m["seq"], phase, codec.dumps(m), TTL_BY_PHASE.get(phase) or 0,
                            "1" if phase in IN_PLAY_PHASES else "0", m["id"], start,
                        ],
                        client=pipe,
                    )
                results = await pipe.execute()
        except (RedisError, OSError) as exc:
            raise SinkUnavailable("redis", exc, 1.0) from exc
        return sum(1 for r in results if r == 1)

    async def read(self, ids: Sequence[str]) -> dict[str, Match]:
        """The stored snapshots of ``ids`` (those Redis has)."""
        if not ids:
            return {}
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                for mid in ids:
                    pipe.hget(self.keys.match(mid), "json")
                rows = await pipe.execute()
        except (RedisError, OSError) as exc:
            raise SinkUnavailable("redis", exc, 1.0) from exc
        return {mid: codec.loads(row) for mid, row in zip(ids, rows) if row is not None}


class PostgresHistory:
    """``matches`` (current snapshot) and ``match_deltas`` (history) in Postgres."""

    def __init__(self, pool: asyncpg.Pool, schema: str) -> None:
        self.pool = pool
        s = quote_ident(schema)
        self._upsert = (
            f"INSERT INTO {s}.matches (id, sport, league_id, phase, start_time, seq, snapshot, updated_at)"
            " SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[],"
            " $5::timestamptz[], $6::bigint[], $7::jsonb[], $8::timestamptz[])"
            " ON CONFLICT (id) DO UPDATE SET sport = EXCLUDED.sport, league_id = EXCLUDED.league_id,"
            " phase = EXCLUDED.phase, start_time = EXCLUDED.start_time, seq = EXCLUDED.seq,"
            " snapshot = EXCLUDED.snapshot, updated_at = EXCLUDED.updated_at"
            f" WHERE {s}.matches.seq < EXCLUDED.seq"
        )
        self._append = (
            f"INSERT INTO {s}.match_deltas (match_id, seq, ts, kinds, delta)"
            " SELECT m, q, t, string_to_array(k, ','), d::jsonb FROM unnest($1::text[], $2::bigint[],"
            " $3::timestamptz[], $4::text[], $5::text[]) AS u(m, q, t, k, d)"
            " ON CONFLICT (match_id, seq) DO NOTHING"
        )
        self._read = f"SELECT id, snapshot::text AS snapshot FROM {s}.matches WHERE id = ANY($1::text[])"

    async def write_snapshots(self, snapshots: Sequence[Match]) -> list[Refused]:
        """Upsert the newest snapshot of each match; returns the snapshots Postgres refused."""
        latest: dict[str, Match] = {}
        for m in snapshots:
            if m["id"] not in latest or latest[m["id"]]["seq"] < m["seq"]:
                latest[m["id"]] = m
        return await self._write_rows(self._upsert_snapshots, list(latest.values()))

    async def _upsert_snapshots(self, rows: Sequence[Match]) -> None:
        utc = dt.timezone.utc
        await self._execute(
            self._upsert,
            [m["id"] for m in rows],
            [m["sport"] for m in rows],
            [str(m["league"]["id"]) for m in rows],
            [m["status"]["phase"] for m in rows],
            [parse_time(m["start_time"]) for m in rows],
            [m["seq"] for m in rows],
            [codec.dumps_str(m) for m in rows],
            [dt.datetime.fromtimestamp(m["updated_at"], utc) for m in rows],
        )

    async def read_snapshots(self, ids: Sequence[str]) -> dict[str, Match]:
        """The stored snapshots of ``ids`` (those Postgres has)."""
        if not ids:
            return {}
        try:
            async with self.pool.acquire() as conn:
                rows = await conn.fetch(self._read, list(ids))
        except POSTGRES_AWAY as exc:
            raise SinkUnavailable("postgres", exc, 1.0) from exc
        return {r["id"]: codec.loads(r["snapshot"]) for r in rows}

    async def write_deltas(self, deltas: Sequence[Delta]) -> list[Refused]:
        """Append the deltas not stored yet; returns the deltas Postgres refused."""
        unique: dict[tuple[str, int], Delta] = {(d["match_id"], d["seq"]): d for d in deltas}
        return await self._write_rows(self._append_deltas, list(unique.values()))

    async def _append_deltas(self, rows: Sequence[Delta]) -> None:
        utc = dt.timezone.utc
        await self._execute(
            self._append,
            [d["match_id"] for d in rows],
            [d["seq"] for d in rows],
            [dt.datetime.fromtimestamp(d["ts"], utc) for d in rows],
            [",".join(d["kinds"]) for d in rows],
            [codec.dumps_str(d) for d in rows],
        )

    async def _write_rows(self, write: Callable[[Sequence[Any]], Awaitable[None]],
                          rows: list[Any]) -> list[Refused]:
        """``write(rows)`` at once; if Postgres refuses their data, one row at a time.

        Returns the rows refused; the others are written. An outage
        (:class:`SinkUnavailable`) propagates, for the whole batch to be retried.
        """
        if not rows:
            return []
        try:
            await write(rows)
            return []
        except SinkRefused as exc:
            if len(rows) == 1:
                return [(rows[0], exc)]
            log.warning("postgres refused a batch of %d rows (%s); writing them one by one",
                        len(rows), exc)
        refused: list[Refused] = []
        for row in rows:
            try:
                await write([row])
            except SinkRefused as exc:
                refused.append((row, exc))
        return refused

    async def _execute(self, sql: str, *args: Any) -> None:
        try:
            async with self.pool.acquire() as conn:
                await conn.execute(sql, *args)
        except (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError) as exc:
            raise SinkRefused("postgres", exc) from exc
        except POSTGRES_AWAY as exc:
            raise SinkUnavailable("postgres", exc, 1.0) from exc


async def write_with_retry(
    name: str,
    write: Callable[[], Awaitable[Any]],
    *,
    base: float = 0.2,
    cap: float = 5.0,
    on_retry: Callable[[int, SinkUnavailable], None] | None = None,
    give_up_after: float | None = None,
) -> Any:
    """Call ``write`` until it succeeds, sleeping with capped exponential backoff and full jitter.

    With ``give_up_after`` (seconds), the :class:`SinkUnavailable` of the attempt that
    ends after that long is raised instead of waiting again.
    """
    attempt = 0
    started = time.monotonic()
    while True:
        try:
            return await write()
        except SinkUnavailable as exc:
            attempt += 1
            if on_retry is not None:
                on_retry(attempt, exc)
            if give_up_after is not None and time.monotonic() - started >= give_up_after:
                raise
            delay = random.uniform(0, min(cap, base * 2**attempt))
            log.warning("sink %s retrying in %.2fs (attempt %d): %s", name, delay, attempt, exc)
            await asyncio.sleep(max(delay, exc.retry_after * 0.5))
