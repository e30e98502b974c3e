"""SSE: ``GET /v1/stream?channels=a,b``.

Frames: ``event: delta | snapshot | reset``, ``data:`` JSON, ``id:`` the resume
cursor (deltas), a ``:`` comment every 15 s and ``retry:``. ``Last-Event-ID``
(header, or ``last_event_id`` for a first connection) replays exactly the deltas
missed, in order, then continues live; when that history is gone the client gets
``reset`` and fresh snapshots.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from redis.exceptions import RedisError
from sse_starlette.sse import AppStatus, ServerSentEvent
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from tables import codec
from tables.channels import ChannelError, validate
from web.access import authenticate_scope
from web.auth import AuthError, Principal
from web.cursor import Cursor, CursorError
from web.direct import http_connection
from web.errors import ApiError, bad_param, error_response
from web.feed import HistoryGone
from web.hub import CLOSE, PING, RESET, SEND_TIMEOUT, Entry, Subscriber

log = logging.getLogger(__name__)

PATH = "/v1/stream"
MAX_CHANNELS = 50
RETRY_MS = 2000
#: At most this many queued deltas are written to a client in one chunk.
COALESCE = 64
#: The comment sent every ``heartbeat`` seconds.
HEARTBEAT = b": ping\n\n"
HEADERS = [(b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache"),
           (b"connection", b"keep-alive"), (b"x-accel-buffering", b"no")]


def parse_channels(raw: str | None) -> list[str]:
    if not raw:
        raise bad_param("channels", "at least one channel is required")
    chans = [c.strip() for c in raw.split(",") if c.strip()]
    if not chans:
        raise bad_param("channels", "at least one channel is required")
    if len(chans) > MAX_CHANNELS:
        raise bad_param("channels", f"at most {MAX_CHANNELS} channels")
    for c in chans:
        try:
            validate(c)
        except ChannelError as exc:
            raise bad_param("channels", exc.reason + f" ({c[:80]!r})") from None
    return list(dict.fromkeys(chans))


class Resume:
    """What a (re)connecting client gets before going live."""

    def __init__(self, entries: list[Entry], reset: bool) -> None:
        self.entries = entries
        self.reset = reset


async def prepare(edge: Any, sub: Subscriber, cursor_text: str | None) -> Resume:
    """Register ``sub`` and work out what it missed, with no gap and no duplicate.

    The subscriber joins the hub and the live position is taken in the same step
    (no ``await`` in between), so every later delta reaches its queue; everything
    before that position and after the client's cursor is replayed.
    """
    upto = list(edge.feed.positions)
    edge.hub.add(sub)
    return await missed(edge, sub, set(sub.channels), cursor_text, upto)


async def missed(edge: Any, sub: Subscriber, channels: set[str], cursor_text: str | None,
                 upto: list[int]) -> Resume:
    """Deltas of ``channels`` after the client's cursor and before ``upto``, from the
    in-memory window when it reaches back far enough, else from the topic."""
    feed = edge.feed
    if cursor_text is None:
        return Resume([], False)
    try:
        cursor = Cursor.decode(cursor_text)
    except CursorError:
        return Resume([], True)
    if cursor.epoch != feed.epoch or len(cursor.offsets) != len(upto):
        return Resume([], True)
    if sub.floor is None:
        sub.floor = list(cursor.offsets)
    else:
        sub.floor = [max(a, b) for a, b in zip(sub.floor, cursor.offsets)]
    if feed.covers(cursor):
        entries = feed.from_window(cursor, upto)
    else:
        try:
            entries = await feed.history(cursor, upto)
        except HistoryGone:
            return Resume([], True)
    out: list[Entry] = []
    seen: set[tuple[int, int]] = set()
    for e in entries:
        if channels.intersection(e.channels) and (e.partition, e.offset) not in seen:
            seen.add((e.partition, e.offset))
            out.append(e)
    return Resume(out, False)


def take_queued(sub: Subscriber, first: Entry, limit: int) -> tuple[list[Entry], Any]:
    """``first`` and the deltas queued behind it (``limit`` in all) that ``sub`` still wants,
    to send together; and a ``CLOSE``, ``RESET`` or ``PING`` met on the way (None if none),
    which ends the batch and must be handled next."""
    entries = [first] if sub.wants(first) else []
    taken = 1
    while taken < limit and not sub.queue.empty():
        item = sub.queue.get_nowait()
        if item is CLOSE or item is RESET or item is PING:
            return entries, item
        taken += 1
        if sub.wants(item):
            entries.append(item)
    return entries, None


async def admit(edge: Any, principal: Principal, channels: list[str], sub: Subscriber) -> str | None:
    """Check the tier allows the channels and one more stream; returns an error code or None."""
    for ch in channels:
        if not principal.tier.allows_channel(ch):
            return "forbidden_channel"
    sub.key_id = principal.key_id
    sub.principal = principal
    sub.client = principal.client
    sub.stream_id = f"{edge.edge_id}:{sub.id}"
    try:
        ok = await edge.limits.open_stream(principal.client, sub.stream_id, principal.tier.streams)
    except (RedisError, OSError) as exc:
        log.warning("stream limiter unavailable, admitting: %r", exc)
        ok = True
    if not ok:
        sub.client = ""
        return "too_many_streams"
    edge.usage.stream_opened(principal.key_id, sub.id)
    return None


#: stream slots being freed (a reference keeps each task alive until it is done)
_closing: set[asyncio.Task[None]] = set()


async def _close_stream(edge: Any, client: str, stream_id: str) -> None:
    try:
        await edge.limits.close_stream(client, stream_id)
    except (RedisError, OSError):
        pass


async def release(edge: Any, sub: Subscriber) -> None:
    sub.direct = None
    edge.hub.remove(sub)
    edge.usage.stream_closed(sub.id)
    if sub.client:
        # When the client goes away the connection's task is being cancelled and any
        # await here would be cancelled too, leaving the slot counted until it expires:
        # free it in a task of its own.
        task = asyncio.get_running_loop().create_task(
            _close_stream(edge, sub.client, sub.stream_id))
        sub.client = ""
        _closing.add(task)
        task.add_done_callback(_closing.discard)
        await asyncio.shield(task)


async def stream(request: Request) -> Response:
    edge = request.app.state.edge
    try:
        principal = await authenticate_scope(edge, request.scope)
    except AuthError as exc:
        return error_response(exc.status, exc.code, exc.message)
    try:
        channels = parse_channels(request.query_params.get("channels"))
    except ApiError as exc:
        return error_response(400, exc.code, exc.message, param=exc.param)
    snapshots = request.query_params.get("snapshots", "0") in ("1", "true", "yes")
    cursor_text = request.headers.get("last-event-id") or request.query_params.get("last_event_id")
    if cursor_text is not None and len(cursor_text) > 20_000:
        return error_response(400, "bad_parameter", "last_event_id: too long", param="last_event_id")
    await edge.feed.ready.wait()
    sub = Subscriber(set(channels), maxsize=edge.queue_size, transport="sse")
    refused = await admit(edge, principal, channels, sub)
    if refused == "forbidden_channel":
        return error_response(403, refused, f"the {principal.tier.name} tier does not include these channels")
    if refused == "too_many_streams":
        return error_response(403, refused, f"the {principal.tier.name} tier allows "
                              f"{principal.tier.streams} concurrent streams")
    resume = await prepare(edge, sub, cursor_text)

    async def events() -> AsyncIterator[bytes]:
        yield CONNECTED
        if resume.reset:
            yield await reset_frames(edge, sub)
        elif snapshots and cursor_text is None:
            yield await snapshot_frames(edge, sub, "snapshot")
        for entry in resume.entries:
            yield entry.sse()
        pending: Any = None
        while True:
            item = pending if pending is not None else await sub.queue.get()
            pending = None
            if item is PING:
                yield HEARTBEAT
                continue
            if item is CLOSE:
                return
            if item is RESET:
                yield await reset_frames(edge, sub)
                continue
            # Whatever else is already queued goes out in the same write: one
            # send through the server per burst instead of one per delta.
            entries, pending = take_queued(sub, item, COALESCE)
            frames = [e.sse() for e in entries]
            if frames:
                chunk = frames[0] if len(frames) == 1 else b"".join(frames)
                edge.usage.stream_bytes(sub.key_id, len(chunk))
                yield chunk

    sub.watch(edge.heartbeat)
    return EventStream(events(), sub, lambda: release(edge, sub))


async def serve(scope: Scope, receive: Receive, send: Send,
                headers: list[tuple[bytes, bytes]]) -> int:
    """Answer ``GET /v1/stream`` straight from the server, with ``headers`` added to the
    response; returns its status."""
    response = await stream(Request(scope, receive))
    response.raw_headers.extend(headers)
    await response(scope, receive, send)
    return response.status_code


CONNECTED = ServerSentEvent(comment="connected", retry=RETRY_MS).encode()


class EventStream:
    """The ``text/event-stream`` response of one client: frames from ``frames`` as they come.

    The connection's own task writes; one small task waits for the client to go away
    and closes ``sub``, which ends ``frames``. Server shutdown closes every stream
    from one task per edge (:func:`close_on_exit`). The heartbeat is one of the frames,
    queued by the edge's :class:`~web.hub.Watchdog`, which also ends a write that
    waits :data:`~web.hub.SEND_TIMEOUT` for a client that reads nothing.
    """

    status_code = 200

    def __init__(self, frames: AsyncIterator[bytes], sub: Subscriber,
                 on_close: Callable[[], Awaitable[None]]) -> None:
        self.frames = frames
        self.sub = sub
        self.on_close = on_close
        self.raw_headers = list(HEADERS)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        watcher: asyncio.Task[None] | None = None
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
            if scope.get("method") == "HEAD":
                await send({"type": "http.response.body", "body": b""})
                return
            watcher = asyncio.create_task(self._close_on_disconnect(receive))
            sub, clock = self.sub, asyncio.get_running_loop().time
            sub.direct = http_connection(send)
            async for chunk in self.frames:
                sub.writing_since = clock()
                try:
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                except asyncio.CancelledError:
                    if not sub.stalled_write():
                        raise
                    log.info("dropping an SSE client that read nothing for %.0f s", SEND_TIMEOUT)
                    return
                finally:
                    sub.writing_since = 0.0
            await send({"type": "http.response.body", "body": b""})
        finally:
            if watcher is not None:
                watcher.cancel()
            await self.frames.aclose()  # type: ignore[attr-defined]
            await self.on_close()

    async def _close_on_disconnect(self, receive: Receive) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        self.sub.close()


async def close_on_exit(hub: Any) -> None:
    """Close every SSE stream once the server is told to stop, so that it stops at once
    instead of waiting out its graceful shutdown for streams that never end."""
    while not AppStatus.should_exit:
        await asyncio.sleep(0.5)
    for sub in list(hub.subscribers):
        if sub.transport == "sse":
            sub.close()


async def snapshot_frames(edge: Any, sub: Subscriber, event: str) -> bytes:
    out = []
    cursor = edge.feed.cursor().encode()
    for ch in sorted(sub.channels):
        for snap in await edge.snapshots.for_channel(ch):
            out.append(f"id: {cursor}\nevent: {event}\ndata: ".encode() + codec.dumps(snap) + b"\n\n")
    return b"".join(out)


async def reset_frames(edge: Any, sub: Subscriber) -> bytes:
    cursor = edge.feed.cursor()
    head = f"id: {cursor.encode()}\nevent: reset\ndata: ".encode() + codec.dumps(
        {"reason": "history unavailable or client too slow", "cursor": cursor.encode()}) + b"\n\n"
    return head + await snapshot_frames(edge, sub, "snapshot")
