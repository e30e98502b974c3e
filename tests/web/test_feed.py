"""The edge's delta feed against the real broker."""

import asyncio

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from tables import codec
from web.cursor import Cursor
from web.feed import DeltaFeed, HistoryGone
from web.hub import Hub, Subscriber


def delta(mid: str, seq: int) -> bytes:
    return codec.dumps({"version": 1, "match_id": mid, "seq": seq, "ts": 0.0, "sport": "football",
                        "league": "39", "kinds": ["score"], "changes": [], "events": [],
                        "fetched_at": 0.0})


@pytest.fixture
async def topic(settings):
    name = settings.topic("match-deltas")
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    await admin.create_topics([NewTopic(name, num_partitions=4, replication_factor=1)])
    await admin.close()
    return name


async def produce(settings, topic, items):
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
    await producer.start()
    try:
        for mid, seq in items:
            await producer.send_and_wait(topic, delta(mid, seq), key=mid.encode())
    finally:
        await producer.stop()


async def wait_for(cond, timeout=20.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while not cond():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def test_feed_fans_out_in_order_and_drops_redelivered_deltas(settings, topic):
    hub = Hub()
    sub = Subscriber({"sport.football"})
    hub.add(sub)
    feed = DeltaFeed(settings.kafka_bootstrap, topic, fetch_wait_ms=10, on_entry=hub.publish)
    await feed.start()
    await asyncio.wait_for(feed.ready.wait(), 30)
    start = feed.cursor()
    items = [(f"football-apifootball-{m}", s) for s in range(1, 6) for m in range(3)]
    await produce(settings, topic, items + [("football-apifootball-0", 5)])  # a redelivery
    await wait_for(lambda: sub.queue.qsize() == 15)
    got = [sub.queue.get_nowait() for _ in range(15)]
    for m in range(3):
        assert [e.seq for e in got if e.match_id == f"football-apifootball-{m}"] == [1, 2, 3, 4, 5]
    await wait_for(lambda: feed.duplicates == 1)
    # every entry's cursor is the position right after it
    for e in got:
        assert Cursor.decode(e.cursor).offsets[e.partition] == e.offset + 1
    assert sum(feed.cursor().offsets) - sum(start.offsets) == 16

    # reading the same range back from the topic gives the same entries
    back = await feed.history(start, list(feed.positions))
    assert sorted((e.match_id, e.seq) for e in back) == sorted((e.match_id, e.seq) for e in got)
    mid = Cursor.decode(got[6].cursor)
    rest = feed.from_window(mid, list(feed.positions))
    assert [(e.match_id, e.seq) for e in rest] == [(e.match_id, e.seq) for e in got[7:]]
    await feed.stop()


async def test_history_before_the_topic_start_is_gone(settings, topic):
    feed = DeltaFeed(settings.kafka_bootstrap, topic, fetch_wait_ms=10)
    await feed.start()
    await asyncio.wait_for(feed.ready.wait(), 30)
    await produce(settings, topic, [("football-apifootball-1", 1)])
    await wait_for(lambda: sum(feed.positions) == 1)
    with pytest.raises(HistoryGone):
        await feed.history(Cursor("1", (-1, -1, -1, -1)), list(feed.positions))
    await feed.stop()
