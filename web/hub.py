"""The hub: channels, subscribers and the fan-out of deltas.

A delta is encoded once (:class:`Entry` caches its SSE and WebSocket frames);
every subscriber of any of its channels gets the same bytes. Each subscriber
has a bounded queue, read by the task that writes its stream; while that task
waits on an empty queue, the hub writes the deltas to the socket itself
(:meth:`Hub.flush`, :mod:`web.direct`) instead of waking it. Slow-client policy
(``reset``): when a subscriber's queue is full, its backlog is dropped and it is
sent ``reset`` followed by fresh snapshots of its channels, so one slow client
never delays the others and never silently misses a change.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from websockets.frames import Frame, Opcode

from tables import codec
from web.direct import deliver, http_chunk

#: Sentinel put in a queue to tell the subscriber its backlog was dropped.
RESET = object()
#: Sentinel put in a queue to close the subscriber.
CLOSE = object()
#: Sentinel put in a queue when the subscriber's heartbeat is due (see :class:`Watchdog`).
PING = object()
#: Seconds one write may wait for a client that reads nothing before the stream is dropped.
SEND_TIMEOUT = 30.0

_ids = itertools.count(1)


#: What :func:`next_item` returns when nothing came in time.
TIMEOUT = object()


#: Items read from the front of a :class:`Mailbox` after which they are dropped in one go.
COMPACT_AT = 1024
#: At most this many deltas go in one write of :meth:`Hub.flush`; the rest take the queue.
DIRECT_MAX = 64


class Mailbox:
    """A subscriber's queue: one reader, any number of writers, no bound of its own
    (:meth:`Subscriber.offer` applies the slow-client policy).

    ``asyncio.Queue`` keeps three deques and an event per queue; this keeps one list
    and, while its reader waits, one future: a few KiB less per connection. A list
    rather than a deque, which takes 760 bytes even empty, with the index of its oldest
    item so that taking from the front never moves the rest: a burst of 1,000 queued
    deltas is taken in one pass, the list emptied once it has all been read (or trimmed
    every :data:`COMPACT_AT` items, for a queue that never quite empties)."""

    __slots__ = ("_items", "_head", "_waiter")

    def __init__(self) -> None:
        self._items: list[Any] = []
        self._head = 0
        self._waiter: asyncio.Future[None] | None = None

    def qsize(self) -> int:
        return len(self._items) - self._head

    def empty(self) -> bool:
        return self._head == len(self._items)

    def idle(self) -> bool:
        """True while the reader waits in :meth:`get` for an empty queue: everything it
        took before has been handled."""
        waiter = self._waiter
        return waiter is not None and not waiter.done() and self._head == len(self._items)

    def put_nowait(self, item: Any) -> None:
        self._items.append(item)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def put_front(self, items: list[Any]) -> None:
        """Put ``items``, in order, before everything queued."""
        self._items[self._head:self._head] = items
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def get_nowait(self) -> Any:
        """The oldest item; ``IndexError`` when there is none."""
        items, head = self._items, self._head
        item = items[head]
        head += 1
        if head == len(items):
            items.clear()
            head = 0
        elif head >= COMPACT_AT:  # a queue never quite empty: drop what was read
            del items[:head]
            head = 0
        else:
            items[head - 1] = None  # read: let it go
        self._head = head
        return item

    async def get(self) -> Any:
        while self._head == len(self._items):
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self.get_nowait()


async def next_item(queue: Mailbox, timeout: float) -> Any:
    """The next queued item, or :data:`TIMEOUT` after ``timeout`` seconds of nothing.

    ``asyncio.timeout`` rather than ``wait_for``, which costs a task per item."""
    if not queue.empty():
        return queue.get_nowait()
    try:
        async with asyncio.timeout(timeout):
            return await queue.get()
    except TimeoutError:
        return TIMEOUT


@dataclass(slots=True)
class Entry:
    """One delta as read from the topic, with its position and cached frames."""

    partition: int
    offset: int
    match_id: str
    seq: int
    channels: tuple[str, ...]
    data: bytes  # the delta, JSON
    cursor: str
    _sse: bytes | None = None
    _ws: str | None = None
    _pusher: str | None = None
    _chunk: bytes | None = None
    _frame: bytes | None = None

    def sse(self) -> bytes:
        if self._sse is None:
            self._sse = b"id: " + self.cursor.encode() + b"\nevent: delta\ndata: " + self.data + b"\n\n"
        return self._sse

    def sse_chunk(self) -> bytes:
        """:meth:`sse` as one chunk of a chunked HTTP/1.1 body (:func:`http_chunk`)."""
        if self._chunk is None:
            self._chunk = http_chunk(self.sse())
        return self._chunk

    def ws_frame(self) -> bytes:
        """:meth:`ws` as a WebSocket text frame from the server (unmasked, no extension)."""
        if self._frame is None:
            self._frame = Frame(Opcode.TEXT, self.ws().encode()).serialize(mask=False)
        return self._frame

    def ws(self) -> str:
        if self._ws is None:
            self._ws = (
                '{"type":"delta","cursor":"' + self.cursor + '","data":' + self.data.decode() + "}"
            )
        return self._ws

    def pusher_data(self) -> str:
        """The delta as a JSON string literal: the ``data`` of a Pusher ``delta`` event."""
        if self._pusher is None:
            self._pusher = codec.dumps_str(self.data.decode())
        return self._pusher


@dataclass(eq=False, slots=True)
class Subscriber:
    """One client connection's view of the hub."""

    channels: set[str]
    maxsize: int = 1000
    transport: str = "sse"
    id: int = field(default_factory=lambda: next(_ids))
    queue: Mailbox = field(init=False)
    lock: asyncio.Lock = field(init=False)
    resets: int = 0
    #: per partition, the first offset this client has not seen (set on resume)
    floor: list[int] | None = None
    #: the API key behind this connection (None: anonymous), for revocation
    key_id: str | None = None
    #: what stream limits count against ("key:…" or "ip:…"); empty when not counted
    client: str = ""
    stream_id: str = ""
    #: close code sent when the server closes this subscriber
    close_code: int = 1001
    principal: Any = None
    last_pos: tuple[int, int] = (-1, -1)
    #: the task writing this client's stream, once it streams (:meth:`watch`)
    writer: asyncio.Task[Any] | None = None
    #: loop time the next heartbeat is due, and when the write in progress began (0: none)
    ping_at: float = 0.0
    writing_since: float = 0.0
    #: set when the watchdog stopped a write that waited too long
    stalled: bool = False
    #: the server's connection that :meth:`Hub.flush` writes deltas to while the
    #: writer is idle (:mod:`web.direct`); None for a stream that has no such path
    direct: Any = None
    #: deltas waiting for :meth:`Hub.flush`, in order
    held: list[Entry] | None = None

    def __post_init__(self) -> None:
        self.queue = Mailbox()
        self.lock = asyncio.Lock()

    def watch(self, heartbeat: float) -> None:
        """From now on the edge's :class:`Watchdog` looks after the current task's writes
        to this client: it queues :data:`PING` every ``heartbeat`` seconds and stops a
        write that waits too long. A writer sets :attr:`writing_since` around each write."""
        self.writer = asyncio.current_task()
        self.ping_at = asyncio.get_running_loop().time() + heartbeat

    def stall(self) -> None:
        """Stop the write in progress: the writer gets ``CancelledError`` and
        :meth:`stalled_write` tells it why."""
        self.stalled = True
        if self.writer is not None:
            self.writer.cancel()

    def stalled_write(self) -> bool:
        """Called on ``CancelledError`` in a write: True (and the task no longer
        cancelled) when the watchdog stopped it, so the client is to be dropped; False
        when the task itself is being cancelled."""
        if not self.stalled:
            return False
        task = asyncio.current_task()
        if task is not None:
            task.uncancel()
        return True

    def wants(self, entry: Entry) -> bool:
        """False for a delta before the point this client resumed from (:attr:`floor`)."""
        floor = self.floor
        return floor is None or entry.offset >= floor[entry.partition]

    def offer(self, item: Any) -> bool:
        """Queue ``item``; True when it is held for :meth:`Hub.flush` instead (the caller
        then owes this subscriber a flush)."""
        pos = (item.partition, item.offset)
        if pos == self.last_pos:
            return False  # the same delta through another of this subscriber's channels
        self.last_pos = pos
        held = self.held
        if held is not None:
            held.append(item)
            return False
        # A writer that waits on an empty queue has written all it took, and no reply
        # holds the lock: the deltas of this read of the topic can go to the socket in
        # one write, without waking the writer (see :meth:`Hub.flush`).
        if self.direct is not None and self.queue.idle() and not self.lock.locked():
            self.held = [item]
            return True
        self.enqueue(item)
        return False

    def enqueue(self, item: Any) -> None:
        if self.queue.qsize() >= self.maxsize:
            self._drop_backlog()
            return
        self.queue.put_nowait(item)

    def requeue(self, entries: list[Entry]) -> None:
        """Queue held ``entries`` before anything queued since they were held."""
        self.queue.put_front(entries)
        if self.queue.qsize() > self.maxsize:
            self._drop_backlog()

    def _drop_backlog(self) -> None:
        closing = False
        while not self.queue.empty():
            closing = self.queue.get_nowait() is CLOSE or closing
        self.resets += 1
        self.queue.put_nowait(RESET)
        if closing:
            self.queue.put_nowait(CLOSE)

    def close(self, code: int = 1001) -> None:
        self.close_code = code
        while self.queue.qsize() > self.maxsize:
            self.queue.get_nowait()
        self.queue.put_nowait(CLOSE)


class Hub:
    """Owns subscriptions; :meth:`publish` hands an entry to every interested subscriber."""

    def __init__(self) -> None:
        self._by_channel: dict[str, set[Subscriber]] = {}
        self.subscribers: set[Subscriber] = set()
        self.published = 0
        self.delivered = 0
        #: deliveries written straight to sockets by :meth:`flush`
        self.direct = 0
        #: told the API key and the bytes of each direct write (the edge's usage counts)
        self.on_bytes: Callable[[str | None, int], None] | None = None
        self._held: list[Subscriber] = []

    def add(self, sub: Subscriber) -> None:
        self.subscribers.add(sub)
        for ch in sub.channels:
            self._by_channel.setdefault(ch, set()).add(sub)

    def subscribe(self, sub: Subscriber, channels: Iterable[str]) -> None:
        for ch in channels:
            sub.channels.add(ch)
            self._by_channel.setdefault(ch, set()).add(sub)

    def unsubscribe(self, sub: Subscriber, channels: Iterable[str]) -> None:
        for ch in channels:
            sub.channels.discard(ch)
            subs = self._by_channel.get(ch)
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    del self._by_channel[ch]

    def remove(self, sub: Subscriber) -> None:
        self.unsubscribe(sub, list(sub.channels))
        self.subscribers.discard(sub)

    def publish(self, entry: Entry) -> int:
        self.published += 1
        chans = entry.channels
        if len(chans) == 1:
            targets: Iterable[Subscriber] = self._by_channel.get(chans[0], ())
        else:
            seen: set[Subscriber] = set()
            for ch in chans:
                subs = self._by_channel.get(ch)
                if subs:
                    seen |= subs
            targets = seen
        n = 0
        held = self._held
        for sub in targets:
            if sub.offer(entry):
                if not held:
                    asyncio.get_running_loop().call_soon(self.flush)
                held.append(sub)
            n += 1
        self.delivered += n
        return n

    def flush(self) -> None:
        """Write what :meth:`publish` held for idle writers: one write per subscriber.

        It runs once the code that published is done: the delta feed publishes a whole
        read of the topic without yielding, so a burst of deltas is one write per client
        (at most :data:`DIRECT_MAX` deltas, as a writer would have coalesced them; the
        rest take the queue). A subscriber whose state changed meanwhile (its writer
        woke, a reply took the lock, the socket has bytes waiting) gets the held deltas
        at the front of its queue, in order, as if they had never been held."""
        subs, self._held = self._held, []
        on_bytes = self.on_bytes
        for sub in subs:
            entries, sub.held = sub.held, None
            if not entries:
                continue
            if sub.direct is not None and sub.queue.idle() and not sub.lock.locked():
                first = entries[:DIRECT_MAX] if len(entries) > DIRECT_MAX else entries
                size = deliver(sub, first)
                if size is not None:
                    self.direct += len(first)
                    if on_bytes is not None and size:
                        on_bytes(sub.key_id, size)
                    if len(entries) <= DIRECT_MAX:
                        continue
                    entries = entries[DIRECT_MAX:]
            sub.requeue(entries)

    def watch_counts(self) -> dict[str, int]:
        """Subscribers per match id (``match.*`` and the private/presence variants)."""
        counts: dict[str, int] = {}
        for ch, subs in self._by_channel.items():
            _, _, rest = ch.partition("match.")
            if rest and (ch.startswith("match.") or ch.startswith(("private-match.", "presence-match."))):
                counts[rest] = counts.get(rest, 0) + len(subs)
        return counts


class Watchdog:
    """One task per edge doing what took two timers per connection (a timer per wait
    for the heartbeat and one per write for the send timeout, about a quarter of an
    edge's time with 10,000 clients): it queues :data:`PING` for each watched
    subscriber whose heartbeat is due, and stops the writer of one whose write has
    waited ``send_timeout`` seconds for a client that reads nothing.

    Heartbeats are as regular as the ticks (a quarter of ``heartbeat``, at most 1 s)."""

    def __init__(self, hub: Hub, heartbeat: float, send_timeout: float = SEND_TIMEOUT) -> None:
        self.hub = hub
        self.heartbeat = heartbeat
        self.send_timeout = send_timeout

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        every = min(1.0, self.heartbeat / 4)
        while True:
            await asyncio.sleep(every)
            self.check(loop.time())

    def check(self, now: float) -> None:
        heartbeat, limit = self.heartbeat, self.send_timeout
        for sub in list(self.hub.subscribers):
            if sub.writer is None:
                continue  # not streaming yet, or a transport with its own keep-alive
            if sub.writing_since:
                if now - sub.writing_since >= limit:
                    sub.stall()
            elif now >= sub.ping_at:
                sub.ping_at = now + heartbeat
                sub.queue.put_nowait(PING)


def frame_json(kind: str, **fields: Any) -> str:
    return codec.dumps_str({"type": kind, **fields})
