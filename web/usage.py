"""Usage per API key and minute (requests, bytes, stream seconds), flushed to Postgres.

Each edge adds up in memory and flushes every :data:`FLUSH_EVERY` seconds with an
upsert that adds to the stored counts, so any number of edges can report.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections import defaultdict

import asyncpg

from tables.migrate import quote_ident

log = logging.getLogger(__name__)

FLUSH_EVERY = 5.0


def minute_of(ts: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(ts - ts % 60, dt.timezone.utc)


class Usage:
    def __init__(self, pool: asyncpg.Pool, schema: str) -> None:
        self.pool = pool
        self.table = f"{quote_ident(schema)}.key_usage"
        self._counts: dict[tuple[str, dt.datetime], list[float]] = defaultdict(lambda: [0, 0, 0.0])
        self._streams: dict[int, tuple[str, float]] = {}
        self._task: asyncio.Task[None] | None = None

    def request(self, key_id: str | None, nbytes: int) -> None:
        if key_id is None:
            return
        c = self._counts[(key_id, minute_of(time.time()))]
        c[0] += 1
        c[1] += nbytes

    def stream_opened(self, key_id: str | None, stream: int) -> None:
        if key_id is not None:
            self._streams[stream] = (key_id, time.time())

    def stream_bytes(self, key_id: str | None, nbytes: int) -> None:
        if key_id is not None:
            self._counts[(key_id, minute_of(time.time()))][1] += nbytes

    def stream_closed(self, stream: int) -> None:
        entry = self._streams.pop(stream, None)
        if entry is not None:
            self._account(entry[0], entry[1], time.time())

    def _account(self, key_id: str, since: float, until: float) -> None:
        while since < until:
            edge = since - since % 60 + 60
            part = min(edge, until) - since
            self._counts[(key_id, minute_of(since))][2] += part
            since += part

    async def flush(self) -> None:
        now = time.time()
        for stream, (key_id, since) in list(self._streams.items()):
            self._account(key_id, since, now)
            self._streams[stream] = (key_id, now)
        if not self._counts:
            return
        counts, self._counts = self._counts, defaultdict(lambda: [0, 0, 0.0])
        rows = [(k, m, int(c[0]), int(c[1]), float(c[2])) for (k, m), c in counts.items()]
        try:
            async with self.pool.acquire() as conn:
                await conn.executemany(
                    f"INSERT INTO {self.table} (key_id, minute, requests, bytes, stream_seconds)"
                    " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (key_id, minute) DO UPDATE SET"
                    f" requests = {self.table}.requests + EXCLUDED.requests,"
                    f" bytes = {self.table}.bytes + EXCLUDED.bytes,"
                    f" stream_seconds = {self.table}.stream_seconds + EXCLUDED.stream_seconds",
                    rows)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning("usage not flushed, keeping it for the next try: %r", exc)
            for (k, m), c in counts.items():
                mine = self._counts[(k, m)]
                for i in range(3):
                    mine[i] += c[i]

    async def read(self, key_id: str, since: dt.datetime) -> list[dict[str, object]]:
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(
                f"SELECT minute, requests, bytes, stream_seconds FROM {self.table}"
                " WHERE key_id = $1 AND minute >= $2 ORDER BY minute", key_id, since)
        return [{"minute": r["minute"].isoformat(), "requests": r["requests"], "bytes": r["bytes"],
                 "stream_minutes": round(r["stream_seconds"] / 60, 3)} for r in rows]

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        await self.flush()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_EVERY)
            await self.flush()
