from web.hub import RESET, Entry, Hub, Subscriber


def entry(n: int, match: str = "football-apifootball-1", league: str = "39") -> Entry:
    return Entry(0, n, match, n, ("sport.football", f"league.football.{league}", f"match.{match}"),
                 b'{"seq":%d}' % n, f"1.{n + 1}")


def test_each_subscriber_gets_a_delta_once_even_on_several_channels():
    hub = Hub()
    a = Subscriber({"sport.football", "match.football-apifootball-1"})
    b = Subscriber({"league.football.40"})
    hub.add(a)
    hub.add(b)
    assert hub.publish(entry(1)) == 1
    assert a.queue.qsize() == 1 and b.queue.qsize() == 0


def test_frames_are_encoded_once_and_shared():
    e = entry(3)
    assert e.sse() is e.sse()
    assert e.sse().startswith(b"id: 1.4\nevent: delta\ndata: {")
    assert e.ws() is e.ws()


def test_a_slow_subscriber_is_reset_and_never_blocks_the_others():
    hub = Hub()
    slow = Subscriber({"sport.football"}, maxsize=5)
    fast = Subscriber({"sport.football"}, maxsize=100)
    hub.add(slow)
    hub.add(fast)
    for n in range(1, 21):
        hub.publish(entry(n))
        fast.queue.get_nowait()
    items = [slow.queue.get_nowait() for _ in range(slow.queue.qsize())]
    assert RESET in items
    assert slow.resets >= 1
    assert len(items) <= 6


def test_remove_unsubscribes_everything():
    hub = Hub()
    s = Subscriber({"sport.football", "match.football-apifootball-1"})
    hub.add(s)
    assert hub.watch_counts() == {"football-apifootball-1": 1}
    hub.remove(s)
    assert hub.publish(entry(1)) == 0
    assert hub.watch_counts() == {}


async def test_mailbox_wakes_its_reader_and_times_out_without_leaving_a_waiter():
    import asyncio

    from web.hub import TIMEOUT, Mailbox, next_item

    box = Mailbox()
    assert await next_item(box, 0.05) is TIMEOUT and box._waiter is None
    reader = asyncio.create_task(box.get())
    await asyncio.sleep(0.01)
    assert not reader.done()
    box.put_nowait("a")
    box.put_nowait("b")
    assert await asyncio.wait_for(reader, 1) == "a"
    assert box.qsize() == 1 and await next_item(box, 1) == "b" and box.empty()
    late = asyncio.create_task(next_item(box, 5))
    await asyncio.sleep(0.01)
    box.put_nowait(RESET)
    assert await asyncio.wait_for(late, 1) is RESET
    reader = asyncio.create_task(box.get())
    await asyncio.sleep(0.01)
    reader.cancel()
    await asyncio.gather(reader, return_exceptions=True)
    assert box._waiter is None
    box.put_nowait("c")
    assert box.get_nowait() == "c"


def test_take_queued_batches_up_to_a_limit_skips_the_unwanted_and_stops_at_a_sentinel():
    from web.hub import CLOSE
    from web.stream import take_queued

    sub = Subscriber({"sport.football"})
    for n in range(2, 8):
        sub.queue.put_nowait(entry(n))
    got, pending = take_queued(sub, entry(1), 4)
    assert [e.offset for e in got] == [1, 2, 3, 4] and pending is None and sub.queue.qsize() == 3
    sub.floor = [6]  # a resumed client has seen everything before offset 6
    sub.queue.put_nowait(RESET)
    sub.queue.put_nowait(entry(8))
    got, pending = take_queued(sub, sub.queue.get_nowait(), 64)
    assert [e.offset for e in got] == [6, 7] and pending is RESET
    assert sub.queue.qsize() == 1
    sub.queue.put_nowait(CLOSE)
    got, pending = take_queued(sub, sub.queue.get_nowait(), 64)
    assert [e.offset for e in got] == [8] and pending is CLOSE and sub.queue.empty()


async def test_watchdog_pings_each_watched_subscriber_on_time_and_no_other():
    import asyncio

    from web.hub import PING, Watchdog

    hub = Hub()
    watched, waiting, unwatched = (Subscriber({"sport.football"}) for _ in range(3))
    for sub in (watched, waiting, unwatched):
        hub.add(sub)
    watched.watch(15)
    waiting.watch(15)
    now = asyncio.get_running_loop().time()
    dog = Watchdog(hub, heartbeat=15, send_timeout=30)
    dog.check(now + 14)
    assert all(s.queue.empty() for s in (watched, waiting, unwatched))
    dog.check(now + 15.5)
    assert watched.queue.get_nowait() is PING and waiting.queue.get_nowait() is PING
    dog.check(now + 20)  # the next one is due 15 s after the last
    assert watched.queue.empty() and unwatched.queue.empty()
    dog.check(now + 31)
    assert watched.queue.get_nowait() is PING and unwatched.queue.empty()


async def test_watchdog_stops_a_write_that_waits_too_long_and_nothing_else():
    import asyncio

    from web.hub import Watchdog

    hub = Hub()
    never = asyncio.Event()

    async def writer(sub: Subscriber) -> str:
        sub.watch(15)
        sub.writing_since = asyncio.get_running_loop().time()
        try:
            await never.wait()  # a client that reads nothing
        except asyncio.CancelledError:
            if not sub.stalled_write():
                raise
            return "dropped"
        finally:
            sub.writing_since = 0.0
        return "written"

    stuck, fine = Subscriber({"sport.football"}), Subscriber({"sport.football"})
    hub.add(stuck)
    hub.add(fine)
    stuck_task = asyncio.create_task(writer(stuck))
    fine_task = asyncio.create_task(writer(fine))
    await asyncio.sleep(0.01)
    dog = Watchdog(hub, heartbeat=15, send_timeout=30)
    started = stuck.writing_since
    fine.writing_since = started + 20  # this one began its write later
    dog.check(started + 29)
    await asyncio.sleep(0.01)
    assert not stuck_task.done()
    dog.check(started + 30.5)  # past the limit (exactly 30 can round below it)
    assert await asyncio.wait_for(stuck_task, 1) == "dropped"
    assert stuck.writing_since == 0.0 and not fine_task.done()
    fine_task.cancel()  # a cancellation of the task itself is not taken for a stall
    try:
        await fine_task
    except asyncio.CancelledError:
        pass
    else:
        raise AssertionError("the task's own cancellation was swallowed")
    never.set()


def test_mailbox_keeps_order_through_bursts_and_never_grows_without_bound():
    from web.hub import COMPACT_AT, Mailbox

    box = Mailbox()
    got: list[int] = []
    n = 0
    for _ in range(3 * COMPACT_AT):  # one in, one out, never empty: a busy stream
        box.put_nowait(n)
        box.put_nowait(n + 1)
        n += 2
        got.append(box.get_nowait())
        assert len(box._items) <= COMPACT_AT + box.qsize() + 2
    while not box.empty():
        got.append(box.get_nowait())
    assert got == list(range(n)) and box.qsize() == 0 and box._items == []
    for i in range(1000):  # a burst, then taken in order
        box.put_nowait(i)
    assert [box.get_nowait() for _ in range(1000)] == list(range(1000)) and box.empty()
    try:
        box.get_nowait()
    except IndexError:
        pass
    else:
        raise AssertionError("an empty mailbox gave an item")
