"""The sinks against the real Redis and Postgres."""

import asyncio

import asyncpg
import pytest

from pipeline.app import until_done
from pipeline.sinks import (
    PostgresHistory, RedisSnapshots, SinkRefused, SinkUnavailable, check_delta, check_snapshot,
    write_with_retry,
)
from tables import codec
from tables.migrate import migrate
from tables.redis_keys import TTL_BY_PHASE, RedisKeys


def snapshot(seq: int, phase: str = "live", mid: str = "football-apifootball-1", home: int = 0):
    return {
        "version": 1, "id": mid, "sport": "football", "provider": "apifootball",
        "provider_id": mid.rsplit("-", 1)[1],
        "league": {"id": "39", "name": "Premier League", "country": "England", "season": "2024", "round": "R1"},
        "home": {"id": "1", "name": "A", "logo": None}, "away": {"id": "2", "name": "B", "logo": None},
        "status": {"phase": phase, "code": "1H", "label": "First Half", "period": 1, "clock": "10"},
        "score": {"home": home, "away": 0, "periods": {}}, "start_time": "2026-11-29T15:00:00Z",
        "venue": None, "events": [], "detail": None, "seq": seq, "updated_at": 1.0 * seq,
        "fetched_at": 1.0 * seq,
    }


def delta(seq: int, mid: str = "football-apifootball-1"):
    return {"version": 1, "match_id": mid, "seq": seq, "ts": 1000.0 + seq, "sport": "football",
            "league": "39", "kinds": ["score"], "changes": [], "events": [], "fetched_at": 1.0}


@pytest.fixture
async def history(settings, pg):
    await migrate(pg, settings.db_schema)
    pool = await asyncpg.create_pool(settings.database_url, min_size=1, max_size=2)
    try:
        yield PostgresHistory(pool, settings.db_schema)
    finally:
        await pool.close()


async def test_redis_keeps_only_the_newest_snapshot(settings, redis_client):
    keys = RedisKeys(settings.redis_prefix)
    sink = RedisSnapshots(redis_client, keys)
    assert await sink.write([snapshot(2, home=2)]) == 1
    assert await sink.write([snapshot(1, home=1)]) == 0  # older: ignored
    assert await sink.write([snapshot(2, home=2)]) == 0  # redelivered: ignored
    stored = codec.loads(await redis_client.hget(keys.match("football-apifootball-1"), "json"))
    assert stored["seq"] == 2 and stored["score"]["home"] == 2
    assert await redis_client.sismember(keys.live("football"), "football-apifootball-1")
    assert await redis_client.zscore(keys.league("football", "39"), "football-apifootball-1")
    assert await redis_client.ttl(keys.match("football-apifootball-1")) == -1  # live: kept


@pytest.mark.parametrize("phase", ["finished", "postponed", "cancelled"])
async def test_ttl_follows_the_phase(settings, redis_client, phase):
    keys = RedisKeys(settings.redis_prefix)
    sink = RedisSnapshots(redis_client, keys)
    await sink.write([snapshot(1)])
    await sink.write([snapshot(2, phase=phase)])
    ttl = await redis_client.ttl(keys.match("football-apifootball-1"))
    assert 0 < ttl <= TTL_BY_PHASE[phase]
    assert not await redis_client.sismember(keys.live("football"), "football-apifootball-1")


async def test_postgres_upserts_by_seq_and_ignores_redelivered_deltas(history, pg, settings):
    await history.write_snapshots([snapshot(3, home=3), snapshot(2, home=2)])
    await history.write_snapshots([snapshot(1, home=1)])
    row = await pg.fetchrow(f'SELECT seq, snapshot FROM "{settings.db_schema}".matches')
    assert row["seq"] == 3 and codec.loads(row["snapshot"])["score"]["home"] == 3
    await history.write_deltas([delta(1), delta(2)])
    await history.write_deltas([delta(2), delta(3)])
    seqs = await pg.fetch(f'SELECT seq FROM "{settings.db_schema}".match_deltas ORDER BY seq')
    assert [r["seq"] for r in seqs] == [1, 2, 3]


async def test_migrations_apply_once(pg, settings):
    first = await migrate(pg, settings.db_schema)
    again = await migrate(pg, settings.db_schema)
    assert first and again == []


async def test_write_with_retry_waits_until_the_store_answers():
    calls = []

    async def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise SinkUnavailable("postgres", OSError("down"), 0.0)
        return "ok"

    retries = []
    assert await write_with_retry("pg", flaky, base=0.001, cap=0.01,
                                  on_retry=lambda n, e: retries.append(n)) == "ok"
    assert retries == [1, 2]


async def test_postgres_down_is_a_typed_error(settings):
    pool = await asyncpg.create_pool("postgresql://postgres@127.0.0.1:1/postgres", min_size=0)
    sink = PostgresHistory(pool, settings.db_schema)
    with pytest.raises(SinkUnavailable):
        await sink.write_deltas([delta(1)])
    await pool.close()


async def test_postgres_refuses_one_row_and_the_others_are_written(history, pg, settings):
    schema = settings.db_schema
    bad = delta(2)
    bad["changes"] = [{"path": "home.name", "from": "A", "to": "A\u0000B"}]
    refused = await history.write_deltas([delta(1), bad, delta(3)])
    assert [(row["seq"], type(exc)) for row, exc in refused] == [(2, SinkRefused)]
    assert isinstance(refused[0][1].cause, asyncpg.DataError)
    rows = await pg.fetch(f'SELECT seq FROM "{schema}".match_deltas ORDER BY seq')
    assert [r["seq"] for r in rows] == [1, 3]

    nul = snapshot(1, mid="football-apifootball-2")
    nul["home"]["name"] = "\u0000"
    refused = await history.write_snapshots([snapshot(4), nul])
    assert [row["id"] for row, _ in refused] == ["football-apifootball-2"]
    assert await pg.fetchval(f'SELECT seq FROM "{schema}".matches WHERE id = $1',
                             "football-apifootball-1") == 4
    again = await history.write_deltas([bad])  # alone: refused at once, not retried
    assert [row["seq"] for row, _ in again] == [2]


@pytest.mark.parametrize(("check", "make", "broken"), [
    *[(check_delta, delta, b) for b in (
        lambda d: d.pop("seq"), lambda d: d.update(seq="3"), lambda d: d.update(ts="x"),
        lambda d: d.update(kinds=[1]), lambda d: d.update(match_id=None))],
    *[(check_snapshot, snapshot, b) for b in (
        lambda m: m.pop("league"), lambda m: m.update(start_time="tomorrow"),
        lambda m: m["status"].update(phase=None), lambda m: m.update(updated_at=None),
        lambda m: m.update(id=7))],
])
def test_a_record_without_the_fields_of_its_rows_is_found_before_any_write(check, make, broken):
    check(make(1))
    record = make(1)
    broken(record)
    with pytest.raises((KeyError, TypeError, ValueError)):
        check(record)


async def test_until_done_retries_any_failure_but_passes_a_real_cancellation_on():
    outcomes = [asyncpg.InternalClientError("cannot switch to state 12"), asyncio.CancelledError(),
                RuntimeError("unforeseen"), None]
    calls = []

    async def step():
        calls.append(1)
        outcome = outcomes[len(calls) - 1]
        if outcome is not None:
            raise outcome

    await asyncio.wait_for(until_done("test", step), 10)
    assert len(calls) == 4

    started = asyncio.Event()

    async def hangs():
        started.set()
        await asyncio.sleep(3600)

    task = asyncio.create_task(until_done("test", hangs))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
