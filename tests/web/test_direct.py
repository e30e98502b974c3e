"""Deltas written straight to sockets while a stream's writer is idle: how the hub holds
and flushes them, and the writes themselves against uvicorn, read back by real HTTP and
WebSocket clients."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import httpx
import uvicorn
import websockets
from websockets.frames import Frame, Opcode

from tests.support import free_port
from web.direct import http_connection, websocket_connection, websocket_write
from web.hub import CLOSE, DIRECT_MAX, PING, RESET, Entry, Hub, Subscriber


def entry(n: int) -> Entry:
    return Entry(0, n, "football-apifootball-1", n, ("sport.football",), b'{"seq":%d}' % n,
                 f"1.{n + 1}")


def chunk(entries: list[Entry]) -> bytes:
    body = b"".join(e.sse() for e in entries)
    return b"%x\r\n" % len(body) + body + b"\r\n"


class Transport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.waiting = 0

    def is_closing(self) -> bool:
        return False

    def get_write_buffer_size(self) -> int:
        return self.waiting

    def write(self, data: bytes) -> None:
        self.writes.append(data)


def http_cycle() -> SimpleNamespace:
    """What :mod:`web.direct` reads of uvicorn's httptools response cycle."""
    return SimpleNamespace(transport=Transport(), flow=SimpleNamespace(write_paused=False),
                           disconnected=False, response_complete=False)


async def idle(sub: Subscriber) -> asyncio.Task[Any]:
    """The subscriber's writer, waiting on its empty queue."""
    reader = asyncio.create_task(sub.queue.get())
    await asyncio.sleep(0)
    assert sub.queue.idle()
    return reader


def queued(sub: Subscriber) -> list[Any]:
    return [sub.queue.get_nowait() for _ in range(sub.queue.qsize())]


async def test_an_idle_writer_gets_a_burst_in_one_write_once_the_publisher_yields():
    hub, counted = Hub(), []
    hub.on_bytes = lambda key, n: counted.append((key, n))
    sub = Subscriber({"sport.football"}, direct=http_cycle(), key_id="k1")
    hub.add(sub)
    reader = await idle(sub)
    entries = [entry(n) for n in (1, 2, 3)]
    for e in entries:
        hub.publish(e)
    assert sub.direct.transport.writes == []  # held until the publisher yields
    await asyncio.sleep(0)
    assert sub.direct.transport.writes == [chunk(entries)]
    assert counted == [("k1", sum(len(e.sse()) for e in entries))]
    assert hub.direct == 3 and sub.queue.empty() and not reader.done()
    hub.publish(entry(4))
    await asyncio.sleep(0)
    assert sub.direct.transport.writes[-1] == entry(4).sse_chunk() == chunk([entry(4)])
    reader.cancel()


async def test_a_busy_writer_or_a_socket_with_bytes_waiting_gets_the_queue_in_order():
    hub = Hub()
    busy = Subscriber({"sport.football"}, direct=http_cycle())
    behind = Subscriber({"sport.football"}, direct=http_cycle())
    behind.direct.transport.waiting = 100
    hub.add(busy)
    hub.add(behind)
    reader = await idle(behind)
    for n in (1, 2, 3):
        hub.publish(entry(n))
    await asyncio.sleep(0)
    assert busy.direct.transport.writes == [] and behind.direct.transport.writes == []
    assert [e.seq for e in queued(busy)] == [1, 2, 3]
    assert (await reader).seq == 1
    assert [e.seq for e in queued(behind)] == [2, 3]
    assert hub.direct == 0


async def test_what_is_queued_before_the_flush_goes_after_the_held_deltas():
    hub = Hub()
    pinged = Subscriber({"sport.football"}, direct=http_cycle())
    locked = Subscriber({"sport.football"}, direct=http_cycle())
    hub.add(pinged)
    hub.add(locked)
    pinged_reader, locked_reader = await idle(pinged), await idle(locked)
    hub.publish(entry(1))
    hub.publish(entry(2))
    pinged.queue.put_nowait(PING)  # the watchdog, before the flush runs
    await locked.lock.acquire()  # a reply being sent
    await asyncio.sleep(0)
    assert pinged.direct.transport.writes == [] and locked.direct.transport.writes == []
    assert (await pinged_reader).seq == 1
    assert [getattr(i, "seq", i) for i in queued(pinged)] == [2, PING]
    assert (await locked_reader).seq == 1
    assert [e.seq for e in queued(locked)] == [2]


async def test_a_burst_beyond_one_write_continues_through_the_queue():
    hub = Hub()
    sub = Subscriber({"sport.football"}, direct=http_cycle())
    hub.add(sub)
    reader = await idle(sub)
    for n in range(1, DIRECT_MAX + 11):
        hub.publish(entry(n))
    await asyncio.sleep(0)
    assert sub.direct.transport.writes == [chunk([entry(n) for n in range(1, DIRECT_MAX + 1)])]
    assert (await reader).seq == DIRECT_MAX + 1
    assert [e.seq for e in queued(sub)] == list(range(DIRECT_MAX + 2, DIRECT_MAX + 11))


async def test_held_deltas_over_the_bound_reset_a_closing_client_and_keep_its_close():
    hub = Hub()
    sub = Subscriber({"sport.football"}, maxsize=5, direct=http_cycle())
    sub.direct.transport.waiting = 1
    hub.add(sub)
    reader = await idle(sub)
    for n in range(1, 11):
        hub.publish(entry(n))
    sub.close()
    await asyncio.sleep(0)
    assert await reader is RESET
    assert queued(sub) == [CLOSE]


async def test_deltas_below_a_resumed_floor_are_not_written():
    hub = Hub()
    sub = Subscriber({"sport.football"}, direct=http_cycle())
    sub.floor = [3, 0, 0, 0]
    hub.add(sub)
    reader = await idle(sub)
    for n in (1, 2, 3, 4):
        hub.publish(entry(n))
    await asyncio.sleep(0)
    assert sub.direct.transport.writes == [chunk([entry(3), entry(4)])]
    reader.cancel()


@contextlib.asynccontextmanager
async def server(app: Any) -> AsyncIterator[str]:
    """``app`` on uvicorn with the edge's protocols (the defaults, no compression)."""
    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="off",
                                        log_level="warning", ws_per_message_deflate=False))
    task = asyncio.create_task(srv.serve())
    try:
        while not srv.started:
            assert not task.done(), task
            await asyncio.sleep(0.02)
        yield f"127.0.0.1:{port}"
    finally:
        srv.should_exit = True
        await task


async def test_writes_on_uvicorn_read_back_as_sse_events_and_websocket_frames():
    hub = Hub()
    subs: dict[str, Subscriber] = {}
    ready, done = asyncio.Event(), asyncio.Event()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"text/event-stream")]})
            sub = Subscriber({"sport.football"}, transport="sse", direct=http_connection(send))
        else:
            await receive()
            await send({"type": "websocket.accept"})
            sub = Subscriber({"sport.football"}, transport="ws", direct=websocket_connection(send))
        assert sub.direct is not None, type(getattr(send, "__self__", None))
        subs[sub.transport] = sub
        hub.add(sub)
        reader = asyncio.create_task(sub.queue.get())
        if len(subs) == 2:
            ready.set()
        await done.wait()
        reader.cancel()
        if scope["type"] == "http":
            await send({"type": "http.response.body", "body": b""})
        else:
            await send({"type": "websocket.close", "code": 1000})

    async with server(app) as host, httpx.AsyncClient(timeout=10) as client, \
            client.stream("GET", f"http://{host}/") as response, \
            websockets.connect(f"ws://{host}/") as ws:
        await asyncio.wait_for(ready.wait(), 10)
        await asyncio.sleep(0.05)
        hub.publish(entry(1))
        await asyncio.sleep(0.05)
        for n in (2, 3, 4):
            hub.publish(entry(n))
        frames = [json.loads(await asyncio.wait_for(ws.recv(), 5)) for _ in range(4)]
        lines = response.aiter_lines()
        data = []
        while len(data) < 4:
            line = await asyncio.wait_for(anext(lines), 5)
            if line.startswith("data: "):
                data.append(json.loads(line[6:]))
        done.set()
    assert [f["data"]["seq"] for f in frames] == [1, 2, 3, 4]
    assert [f["cursor"] for f in frames] == ["1.2", "1.3", "1.4", "1.5"]
    assert [d["seq"] for d in data] == [1, 2, 3, 4]
    assert hub.direct == 8


async def test_a_websocket_writer_waits_for_the_servers_flow_control():
    """A writer's batch goes out only when uvicorn would write: with a client that reads
    nothing, writing stops once the server pauses, and goes on when the client reads."""
    conns: list[Any] = []
    done = asyncio.Event()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        conns.append(websocket_connection(send))
        await done.wait()

    frame = Frame(Opcode.TEXT, b"x" * 65536).serialize(mask=False)
    async with server(app) as host, websockets.connect(f"ws://{host}/", max_queue=1) as ws:
        while not conns:
            await asyncio.sleep(0.01)
        conn = conns[0]
        written = 0
        blocked = None
        while written < 1000:  # 64 MiB: far more than socket buffers hold
            write = asyncio.create_task(websocket_write(conn, frame))
            done_, _ = await asyncio.wait({write}, timeout=1.0)
            if not done_:
                blocked = write
                break
            assert write.result() is True
            written += 1
        assert blocked is not None and not conn.writable.is_set(), written
        for _ in range(written + 1):
            assert len(await asyncio.wait_for(ws.recv(), 10)) == 65536
        assert await asyncio.wait_for(blocked, 10) is True
        done.set()
