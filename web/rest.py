"""REST under ``/v1``: JSON, errors with stable codes, ``X-Cache`` and ETags on snapshots.

Lists are paginated with keysets. ``/v1/matches`` orders by ``(start_time, id)``
(ids compared byte-wise, as Redis orders equal scores) and hands out an opaque
cursor holding the last key and a fingerprint of the filters, so a page can be
answered by Redis or Postgres alike and the next one by the other. Redis
answers when one of its indexes covers the query (the live set of a sport for
in-play phases; the day, league or sport sorted sets otherwise) and holds every
snapshot the page needs; else Postgres answers. ``X-Cache`` says which:
``hit`` (Redis), ``miss`` (Postgres) or ``bypass`` (Redis down, Postgres).
``/v1/matches/{id}/deltas`` pages through the history by ``seq``.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import re
import time
from dataclasses import dataclass
from typing import Any

import asyncpg
from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from tables import codec
from tables.records import IN_PLAY_PHASES, PHASES, SPORTS
from web.errors import bad_param, error_response
from web.snapshots import CacheState, StoresUnavailable, seq_of

_MATCH_ID_RE = re.compile(r"^[a-z]{1,32}-[a-z0-9]{1,32}-[A-Za-z0-9_-]{1,64}$")
MATCH_ID_PATTERN = _MATCH_ID_RE.pattern
LEAGUE_PATTERN = r"^[A-Za-z0-9_.-]{1,64}$"
_LEAGUE_RE = re.compile(LEAGUE_PATTERN)
_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_CURSOR_RE = re.compile(r"^[A-Za-z0-9_-]{1,400}$")
_UINT_RE = re.compile(r"^\d{1,19}$")

#: ``limit`` of ``/v1/matches``: default and maximum.
MATCHES_LIMIT = (50, 200)
#: ``limit`` of ``/v1/matches/{id}/deltas``: default and maximum.
DELTAS_LIMIT = (100, 1000)
MAX_SEQ = 2**63 - 1
#: Index entries Redis may scan for one page before Postgres is asked instead.
REDIS_SCAN_BUDGET = 2000
#: Matches in the live sets beyond which Postgres answers instead.
REDIS_LIVE_BUDGET = 5000
RETRY_AFTER = "5"

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_DB_ERRORS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, asyncio.TimeoutError)
_REDIS_ERRORS = (RedisError, OSError)

Key = tuple[int, str]  # (start time in epoch microseconds, match id)


def unavailable(message: str) -> Response:
    return error_response(503, "unavailable", message, headers={"Retry-After": RETRY_AFTER})


# -- parameters -------------------------------------------------------------------------------

def _opt(request: Request, name: str) -> str | None:
    """A query parameter, or None when absent (present but empty is a bad parameter)."""
    value = request.query_params.get(name)
    if value is None:
        return None
    if value == "":
        raise bad_param(name, "must not be empty")
    return value


def _sport(request: Request) -> str | None:
    sport = _opt(request, "sport")
    if sport is not None and sport not in SPORTS:
        raise bad_param("sport", f"unknown sport {sport[:40]!r}; one of {', '.join(SPORTS)}")
    return sport


def _int(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = _opt(request, name)
    if raw is None:
        return default
    if not _UINT_RE.match(raw) or not low <= int(raw) <= high:
        raise bad_param(name, f"a whole number from {low} to {high}")
    return int(raw)


def _match_id(request: Request) -> str:
    match_id = request.path_params["match_id"]
    if not _MATCH_ID_RE.match(match_id):
        raise bad_param("id", "expected {sport}-{provider}-{provider_id}")
    return match_id


@dataclass(frozen=True)
class MatchQuery:
    sport: str | None
    league: str | None
    phase: str | None
    date: dt.date | None
    limit: int
    after: Key | None

    def fingerprint(self) -> str:
        text = "|".join(str(v or "") for v in (self.sport, self.league, self.phase, self.date))
        return hashlib.blake2s(text.encode(), digest_size=6).hexdigest()

    def accepts(self, m: dict[str, Any]) -> bool:
        if self.sport is not None and m.get("sport") != self.sport:
            return False
        if self.league is not None and m.get("league", {}).get("id") != self.league:
            return False
        if self.phase is not None and m.get("status", {}).get("phase") != self.phase:
            return False
        return self.date is None or _parse_time(m["start_time"]).date() == self.date


def _match_query(request: Request) -> MatchQuery:
    sport = _sport(request)
    league = _opt(request, "league")
    if league is not None:
        if not _LEAGUE_RE.match(league):
            raise bad_param("league", "a league id: letters, digits, '.', '_' or '-' (at most 64)")
        if sport is None:
            raise bad_param("league", "league ids belong to a sport; give sport too")
    phase = _opt(request, "phase")
    if phase is not None and phase not in PHASES:
        raise bad_param("phase", f"unknown phase {phase[:40]!r}; one of {', '.join(PHASES)}")
    date = None
    raw_date = _opt(request, "date")
    if raw_date is not None:
        try:
            if not _DATE_RE.match(raw_date):
                raise ValueError
            date = dt.date.fromisoformat(raw_date)
        except ValueError:
            raise bad_param("date", "a UTC day as YYYY-MM-DD") from None
    limit = _int(request, "limit", MATCHES_LIMIT[0], 1, MATCHES_LIMIT[1])
    q = MatchQuery(sport, league, phase, date, limit, None)
    raw_cursor = _opt(request, "cursor")
    if raw_cursor is not None:
        q = MatchQuery(sport, league, phase, date, limit, _decode_cursor(raw_cursor, q.fingerprint()))
    return q


def _encode_cursor(fingerprint: str, key: Key) -> str:
    raw = codec.dumps([1, fingerprint, key[0], key[1]])
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _decode_cursor(text: str, fingerprint: str) -> Key:
    bad = bad_param("cursor", "not a cursor this API handed out; use the 'next' of a previous page")
    if not _CURSOR_RE.match(text):
        raise bad
    try:
        value = codec.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    except (ValueError, codec.DecodeError):
        raise bad from None
    if (not isinstance(value, list) or len(value) != 4 or value[0] != 1
            or not isinstance(value[2], int) or not isinstance(value[3], str)
            or not _MATCH_ID_RE.match(value[3])):
        raise bad
    if value[1] != fingerprint:
        raise bad_param("cursor", "this cursor belongs to other filters; keep the filters of "
                                  "the first page")
    return value[2], value[3]


def _parse_time(value: str) -> dt.datetime:
    t = dt.datetime.fromisoformat(value)
    return t if t.tzinfo else t.replace(tzinfo=dt.UTC)


def _micros(t: dt.datetime) -> int:
    return (t - _EPOCH) // dt.timedelta(microseconds=1)


def _from_micros(us: int) -> dt.datetime:
    return _EPOCH + dt.timedelta(microseconds=us)


# -- routes -----------------------------------------------------------------------------------

async def sports(request: Request) -> Response:
    return JSONResponse({"data": [{"id": s} for s in SPORTS]})


async def leagues(request: Request) -> Response:
    """Every league with matches on record, from Postgres ``matches``."""
    sport = _sport(request)
    edge = request.app.state.edge
    schema = edge.snapshots.schema
    where = "WHERE sport = $2" if sport else ""
    sql = (
        "SELECT sport, league_id, count(*) AS matches,"
        " count(*) FILTER (WHERE phase = ANY($1::text[])) AS live,"
        " (array_agg(snapshot->'league' ORDER BY start_time DESC, id))[1]::text AS league"
        f" FROM {schema}.matches {where}"
        ' GROUP BY sport, league_id ORDER BY sport, league_id COLLATE "C"'
    )
    args: list[Any] = [sorted(IN_PLAY_PHASES)] + ([sport] if sport else [])
    try:
        async with edge.pool.acquire() as conn:
            rows = await conn.fetch(sql, *args)
    except _DB_ERRORS:
        return unavailable("postgres is unavailable")
    data = []
    for r in rows:
        league = codec.loads(r["league"]) if r["league"] else {}
        data.append({"sport": r["sport"], "id": r["league_id"], "name": league.get("name"),
                     "country": league.get("country"), "season": league.get("season"),
                     "matches": r["matches"], "live": r["live"]})
    return JSONResponse({"data": data})


async def matches(request: Request) -> Response:
    """A page of match snapshots, filtered, ordered by start time then id."""
    q = _match_query(request)
    edge = request.app.state.edge
    state: CacheState = "miss"
    page: list[tuple[Key, bytes]] | None = None
    try:
        page = await _matches_from_redis(edge, q)
        if page is not None:
            state = "hit"
    except _REDIS_ERRORS:
        state = "bypass"
    if page is None:
        try:
            page = await _matches_from_postgres(edge, q)
        except _DB_ERRORS:
            what = "redis and postgres are" if state == "bypass" else "postgres is"
            return unavailable(f"{what} unavailable")
    more = len(page) > q.limit
    page = page[: q.limit]
    nxt = codec.dumps(_encode_cursor(q.fingerprint(), page[-1][0])) if more else b"null"
    body = b'{"data":[' + b",".join(data for _, data in page) + b'],"next":' + nxt + b"}"
    return Response(body, media_type="application/json", headers={"X-Cache": state})


async def _matches_from_redis(edge: Any, q: MatchQuery) -> list[tuple[Key, bytes]] | None:
    """Up to ``limit + 1`` matches after the cursor, or None when Redis cannot tell them all."""
    redis = edge.redis
    keys = edge.snapshots.keys
    if q.phase in IN_PLAY_PHASES:
        async with redis.pipeline(transaction=False) as pipe:
            for sport in [q.sport] if q.sport else SPORTS:
                pipe.smembers(keys.live(sport))
            sets = await pipe.execute()
        ids = sorted({m.decode() for s in sets for m in s})
        if not ids or len(ids) > REDIS_LIVE_BUDGET:
            return None
        found = await _snapshots(redis, keys, ids, q)
        if found is None:
            return None
        return sorted(found)[: q.limit + 1]
    if q.date is not None:
        index = keys.day(q.date.isoformat())
    elif q.league is not None:
        index = keys.league(q.sport, q.league)
    elif q.sport is not None:
        index = keys.sport(q.sport)
    else:
        return None
    low: Any = "-inf" if q.after is None else q.after[0] / 1e6 - 1
    batch = max(2 * (q.limit + 1), 100)
    found: list[tuple[Key, bytes]] = []
    offset = 0
    while offset < REDIS_SCAN_BUDGET:
        async with redis.pipeline(transaction=False) as pipe:
            pipe.exists(index)
            pipe.zrangebyscore(index, low, "+inf", start=offset, num=batch)
            exists, ids = await pipe.execute()
        if not exists:
            return None
        if not ids:
            return sorted(found)
        offset += len(ids)
        got = await _snapshots(redis, keys, [i.decode() for i in ids], q)
        if got is None:
            return None
        found.extend(got)
        if len(found) > q.limit:
            return sorted(found)[: q.limit + 1]
    return None


async def _snapshots(redis: Any, keys: Any, ids: list[str], q: MatchQuery
                     ) -> list[tuple[Key, bytes]] | None:
    """The snapshots of ``ids`` that pass the filters and follow the cursor, with their keys;
    None when one of them is not in Redis (expired: Postgres still has it)."""
    async with redis.pipeline(transaction=False) as pipe:
        for mid in ids:
            pipe.hget(keys.match(mid), "json")
        rows = await pipe.execute()
    out = []
    for mid, data in zip(ids, rows):
        if data is None:
            return None
        m = codec.loads(data)
        if not q.accepts(m):
            continue
        key = (_micros(_parse_time(m["start_time"])), mid)
        if q.after is None or key > q.after:
            out.append((key, data))
    return out


async def _matches_from_postgres(edge: Any, q: MatchQuery) -> list[tuple[Key, bytes]]:
    args: list[Any] = []

    def arg(value: Any) -> str:
        args.append(value)
        return f"${len(args)}"

    conds = []
    if q.sport is not None:
        conds.append(f"sport = {arg(q.sport)}")
    if q.league is not None:
        conds.append(f"league_id = {arg(q.league)}")
    if q.phase is not None:
        conds.append(f"phase = {arg(q.phase)}")
    if q.date is not None:
        day = dt.datetime(q.date.year, q.date.month, q.date.day, tzinfo=dt.UTC)
        conds.append(f"start_time >= {arg(day)} AND start_time < {arg(day + dt.timedelta(days=1))}")
    if q.after is not None:
        t = arg(_from_micros(q.after[0]))
        conds.append(f'(start_time > {t} OR (start_time = {t} AND id COLLATE "C" > {arg(q.after[1])}))')
    where = ("WHERE " + " AND ".join(conds)) if conds else ""
    sql = (f"SELECT id, start_time, snapshot::text AS snapshot FROM {edge.snapshots.schema}.matches"
           f' {where} ORDER BY start_time, id COLLATE "C" LIMIT {arg(q.limit + 1)}')
    async with edge.pool.acquire() as conn:
        rows = await conn.fetch(sql, *args)
    return [((_micros(r["start_time"]), r["id"]), r["snapshot"].encode()) for r in rows]


async def match(request: Request) -> Response:
    edge = request.app.state.edge
    match_id = _match_id(request)
    try:
        data, cache = await edge.snapshots.get(match_id)
    except StoresUnavailable as exc:
        return unavailable(str(exc))
    if data is None:
        return error_response(404, "not_found", f"no match {match_id}", headers={"X-Cache": cache})
    seq = seq_of(data)
    etag = f'W/"{match_id}:{seq}"'
    headers = {"X-Cache": cache, "ETag": etag, "Cache-Control": "no-cache"}
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    return Response(b'{"data":' + data + b"}", media_type="application/json", headers=headers)


async def deltas(request: Request) -> Response:
    """The history of one match from Postgres ``match_deltas``, by ``seq``, within the caller's
    tier's ``history_hours``."""
    match_id = _match_id(request)
    since = _int(request, "since_seq", 0, 0, MAX_SEQ)
    limit = _int(request, "limit", DELTAS_LIMIT[0], 1, DELTAS_LIMIT[1])
    edge = request.app.state.edge
    schema = edge.snapshots.schema
    principal = request.scope.get("state", {}).get("principal")
    args: list[Any] = [match_id, since, limit + 1]
    window = ""
    if principal is not None:
        args.append(dt.datetime.fromtimestamp(time.time() - principal.tier.history_hours * 3600,
                                              dt.UTC))
        window = " AND ts >= $4"
    try:
        async with edge.pool.acquire() as conn:
            rows = await conn.fetch(
                f"SELECT seq, delta::text AS delta FROM {schema}.match_deltas"
                f" WHERE match_id = $1 AND seq > $2{window} ORDER BY seq LIMIT $3", *args)
            if not rows:
                known = await conn.fetchval(
                    f"SELECT EXISTS (SELECT 1 FROM {schema}.matches WHERE id = $1)"
                    f" OR EXISTS (SELECT 1 FROM {schema}.match_deltas WHERE match_id = $1)", match_id)
                if not known:
                    return error_response(404, "not_found", f"no match {match_id}")
    except _DB_ERRORS:
        return unavailable("postgres is unavailable")
    more = len(rows) > limit
    rows = rows[:limit]
    nxt = str(rows[-1]["seq"]).encode() if more else b"null"
    body = (b'{"data":[' + b",".join(r["delta"].encode() for r in rows) + b'],"next":' + nxt + b"}")
    return Response(body, media_type="application/json")


async def usage(request: Request) -> Response:
    """The caller's own usage by minute (``?minutes=`` back, default 60, at most 10,080)."""
    principal = request.scope.get("state", {}).get("principal")
    if principal is None or principal.key_id is None:
        return error_response(401, "key_required", "usage is reported per API key; send one")
    minutes = _int(request, "minutes", 60, 1, 10_080)
    edge = request.app.state.edge
    since = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=minutes)
    try:
        await edge.usage.flush()
        rows = await edge.usage.read(principal.key_id, since)
    except _DB_ERRORS:
        return unavailable("postgres is unavailable")
    return JSONResponse({"data": {"key_id": principal.key_id, "tier": principal.tier.name,
                                  "minutes": rows}})


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})
