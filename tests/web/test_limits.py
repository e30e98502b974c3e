"""Rate limits against real Redis: exact for small tiers, leased for busy clients."""

from __future__ import annotations

import asyncio

from web.limits import Limits


def counting(limits: Limits) -> list[int]:
    """Count the round trips ``limits`` makes to the bucket (and how much each asks for)."""
    asked: list[int] = []
    script = limits._gcra

    async def gcra(*, keys, args):
        asked.append(int(args[2]))
        return await script(keys=keys, args=args)

    limits._gcra = gcra  # type: ignore[assignment]
    return asked


async def test_small_tier_counts_every_request_in_redis(settings, redis_client):
    limits = Limits(redis_client, settings.redis_prefix)
    asked = counting(limits)
    decisions = [await limits.hit("key:a", 10) for _ in range(12)]
    assert [d.allowed for d in decisions] == [True] * 10 + [False] * 2
    assert [d.remaining for d in decisions[:10]] == list(range(9, -1, -1))
    assert asked == [1] * 12
    assert decisions[-1].retry_after > 0 and decisions[-1].headers()["Retry-After"] == "6"


async def test_two_edges_leasing_never_let_more_through_than_the_limit(settings, redis_client):
    # 300 a minute, leases of up to 30: two edges, a burst of 400 at once over both
    edges = [Limits(redis_client, settings.redis_prefix, lease_share=0.1) for _ in range(2)]
    asked = [counting(e) for e in edges]
    results = await asyncio.gather(*(edges[i % 2].hit("key:busy", 300) for i in range(400)))
    ok = sum(d.allowed for d in results)
    refill = 10  # the bucket refills by 5 a second while the burst runs: a generous bound
    assert 300 - 2 * 30 <= ok <= 300 + refill, ok
    trips = sum(len(a) for a in asked)
    assert trips <= 400 / 10, trips  # one round trip per lease, not per request
    assert all(d.headers()["Retry-After"] for d in results if not d.allowed)
    remaining = [d.remaining for d in results if d.allowed]
    assert min(remaining) >= 0 and max(remaining) < 300


async def test_a_lease_is_spent_within_a_second_or_dropped(settings, redis_client, monkeypatch):
    import web.limits as module

    monkeypatch.setattr(module, "LEASE_SECONDS", 0.2)
    limits = Limits(redis_client, settings.redis_prefix, lease_share=0.1)
    asked = counting(limits)
    first = await limits.hit("key:slow", 600)  # takes a lease of 60
    assert first.allowed and asked == [60] and first.remaining == 599
    assert (await limits.hit("key:slow", 600)).remaining == 598 and asked == [60]
    await asyncio.sleep(0.3)
    later = await limits.hit("key:slow", 600)
    assert later.allowed and asked == [60, 60]
    # the 58 left of the first lease are gone (the bucket refilled by 3 meanwhile)
    assert 598 - 58 <= later.remaining <= 598 - 58 + 5, later


async def test_waiters_share_one_round_trip_and_see_its_failure(settings, redis_client):
    limits = Limits(redis_client, settings.redis_prefix, lease_share=0.1)
    asked = counting(limits)
    results = await asyncio.gather(*(limits.hit("key:crowd", 600) for _ in range(50)))
    assert all(d.allowed for d in results) and asked == [60]
    assert sorted(d.remaining for d in results) == list(range(550, 600))

    broken = Limits(redis_client, settings.redis_prefix, lease_share=0.1)

    async def down(*, keys, args):
        await asyncio.sleep(0.01)
        raise ConnectionError("redis is down")

    broken._gcra = down  # type: ignore[assignment]
    outcomes = await asyncio.gather(*(broken.hit("key:x", 600) for _ in range(5)),
                                    return_exceptions=True)
    assert all(isinstance(o, ConnectionError) for o in outcomes)
    assert not broken._taking


async def test_denied_lease_tells_when_to_come_back(settings, redis_client):
    limits = Limits(redis_client, settings.redis_prefix, lease_share=0.1)  # leases of 12
    spent = [await limits.hit("key:drain", 120) for _ in range(130)]
    assert 120 <= sum(d.allowed for d in spent) <= 121  # the bucket refills by 2 a second
    denied = [d for d in spent if not d.allowed]
    assert denied and all(d.remaining == 0 and d.retry_after > 0 for d in denied)
    assert all(d.headers()["X-RateLimit-Remaining"] == "0" for d in denied)


async def test_refreshing_streams_marks_the_open_ones_alive_and_adds_none(settings, redis_client,
                                                                          monkeypatch):
    import web.limits

    monkeypatch.setattr(web.limits, "REFRESH_BATCH", 2)  # three clients: two pipelines
    limits = Limits(redis_client, settings.redis_prefix)
    opened = [("key:a", "e1:1"), ("key:a", "e1:2"), ("ip:b", "e1:3"), ("key:c", "e1:4")]
    for who, stream_id in opened:
        assert await limits.open_stream(who, stream_id, 5)
    for who, stream_id in opened:  # as if last marked alive long ago
        await redis_client.zadd(f"{settings.redis_prefix}streams:{who}", {stream_id: 1})
    await limits.close_stream("key:c", "e1:4")
    await limits.refresh_streams(opened + [("key:a", "e2:9")])
    now = (await redis_client.time())[0]
    for who, stream_id in opened[:3]:
        score = await redis_client.zscore(f"{settings.redis_prefix}streams:{who}", stream_id)
        assert now - 2 <= score <= now, (who, stream_id, score)
    assert await redis_client.zrange(f"{settings.redis_prefix}streams:key:a", 0, -1) == [b"e1:1", b"e1:2"]
    assert await redis_client.zcard(f"{settings.redis_prefix}streams:key:c") == 0
