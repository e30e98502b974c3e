"""The shared quota budget against the real Redis."""

import asyncio
import datetime as dt

import pytest

from pipeline.budget import QuotaBudget

NOON = dt.datetime(2026, 11, 29, 12, 0, 0, tzinfo=dt.timezone.utc).timestamp()


async def test_the_minute_limit_is_never_exceeded_by_concurrent_workers(redis_client, settings):
    budgets = [QuotaBudget(redis_client, settings.redis_prefix, "apifootball", "free") for _ in range(3)]
    grants = await asyncio.gather(*(b.acquire(NOON + 1, 0) for b in budgets for _ in range(20)))
    granted = sum(g.granted for g in grants)
    assert granted == 9  # 90 % of the free plan's 10 per minute stays for priority 0
    nxt = await budgets[0].acquire(NOON + 61, 0)
    assert nxt.granted


async def test_the_daily_limit_is_never_exceeded(redis_client, settings):
    b = QuotaBudget(redis_client, settings.redis_prefix, "apihockey", limit_day=30, limit_minute=1000)
    granted = 0
    for i in range(50):
        g = await b.acquire(NOON + i * 61, 0)
        granted += g.granted
    assert granted == 30
    tomorrow = await b.acquire(NOON + 86_400, 0)
    assert tomorrow.granted


async def test_lower_priorities_are_refused_first(redis_client, settings):
    b = QuotaBudget(redis_client, settings.redis_prefix, "apibasketball", limit_day=100, limit_minute=1000)
    results = {p: 0 for p in range(4)}
    for i in range(120):
        for p in (3, 2, 1, 0):
            results[p] += (await b.acquire(NOON + i, p)).granted
    assert results[3] < results[2] < results[1] <= results[0] + results[1]
    assert sum(results.values()) == 100


async def test_observed_provider_counts_only_raise_the_ledger(redis_client, settings):
    b = QuotaBudget(redis_client, settings.redis_prefix, "apifootball", limit_day=100, limit_minute=50)
    await b.observe(NOON, remaining_day=40, remaining_minute=None)
    assert await b.used_today(NOON) == 60
    await b.observe(NOON, remaining_day=90, remaining_minute=None)
    assert await b.used_today(NOON) == 60


@pytest.mark.parametrize("level", [80, 95])
async def test_warnings_at_80_and_95_percent(redis_client, settings, caplog, level):
    b = QuotaBudget(redis_client, settings.redis_prefix, "apifootball", limit_day=100, limit_minute=1000)
    for i in range(level):
        await b.acquire(NOON + i, 0)
    assert level in b.warned
    assert f"at {level}%" in caplog.text
