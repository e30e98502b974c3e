"""Native WebSocket ``/v1/ws``: JSON frames, the same channels and resume as SSE.

Client → server::

    {"op": "subscribe", "channels": ["sport.football"], "cursor": "...", "snapshots": true}
    {"op": "unsubscribe", "channels": ["sport.football"]}
    {"op": "ping"}

Server → client: ``subscribed``, ``unsubscribed``, ``delta`` (with ``cursor``),
``snapshot``, ``reset``, ``error`` (``code``, ``message``), ``pong``, and a
``ping`` every 15 s. A bad frame (not JSON, over 16 KiB, unknown op, bad channel,
too many subscriptions) gets an ``error`` frame and changes nothing; after 20 bad
frames in a row the connection is closed with 1008.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect

from tables import codec
from tables.channels import ChannelError, validate
from web.hub import CLOSE, PING, RESET, SEND_TIMEOUT, Subscriber, frame_json
from web.access import authenticate_scope
from web.auth import AuthError
from web.direct import websocket_connection, websocket_write
from web.stream import MAX_CHANNELS, admit, missed, release, take_queued

log = logging.getLogger(__name__)

CLOSE_AUTH = 4001
CLOSE_REVOKED = 4009
CLOSE_TOO_MANY_STREAMS = 4029
MAX_FRAME = 16 * 1024
MAX_BAD_FRAMES = 20
CLOSE_POLICY = 1008
CLOSE_GOING_AWAY = 1001


class FrameError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def parse_frame(text: str) -> dict[str, Any]:
    if len(text) > MAX_FRAME:
        raise FrameError("frame_too_large", f"frames are limited to {MAX_FRAME} bytes")
    try:
        frame = codec.loads(text)
    except codec.DecodeError:
        raise FrameError("bad_json", "frame is not valid JSON") from None
    if not isinstance(frame, dict):
        raise FrameError("bad_frame", "frame must be a JSON object")
    op = frame.get("op")
    if op not in ("subscribe", "unsubscribe", "ping"):
        raise FrameError("unknown_op", f"unknown op {str(op)[:40]!r}")
    if op in ("subscribe", "unsubscribe"):
        chans = frame.get("channels")
        if not isinstance(chans, list) or not chans or not all(isinstance(c, str) for c in chans):
            raise FrameError("bad_channels", "channels must be a non-empty list of strings")
        if len(chans) > MAX_CHANNELS:
            raise FrameError("too_many_channels", f"at most {MAX_CHANNELS} channels")
        for c in chans:
            try:
                validate(c)
            except ChannelError as exc:
                raise FrameError("bad_channel", str(exc)) from None
        cursor = frame.get("cursor")
        if cursor is not None and (not isinstance(cursor, str) or len(cursor) > 20_000):
            raise FrameError("bad_cursor", "cursor must be a string")
    return frame


async def websocket_endpoint(ws: WebSocket) -> None:
    edge = ws.app.state.edge
    await ws.accept()
    try:
        principal = await authenticate_scope(edge, ws.scope)
    except AuthError as exc:
        await _send(ws, frame_json("error", code=exc.code, message=exc.message))
        await ws.close(CLOSE_AUTH, exc.code)
        return
    await edge.feed.ready.wait()
    sub = Subscriber(set(), maxsize=edge.queue_size, transport="ws")
    if await admit(edge, principal, [], sub) == "too_many_streams":
        await _send(ws, frame_json("error", code="too_many_streams",
                                   message=f"the {principal.tier.name} tier allows "
                                   f"{principal.tier.streams} concurrent streams"))
        await ws.close(CLOSE_TOO_MANY_STREAMS, "too_many_streams")
        return
    sub.principal = principal
    edge.hub.add(sub)
    receiver = asyncio.current_task()
    sender = asyncio.create_task(_send_loop(ws, edge, sub))
    sender.add_done_callback(lambda t: _stop_receiving(t, receiver))
    bad = 0
    try:
        while bad < MAX_BAD_FRAMES:
            bad = await _receive(ws, edge, sub, bad)
        await ws.close(CLOSE_POLICY, "too many bad frames")
    except (WebSocketDisconnect, RuntimeError, SlowClient):
        pass
    except asyncio.CancelledError:
        if not (sender.done() and not sender.cancelled() and sender.exception() is not None):
            raise
        # The sender gave up on a client that reads nothing: end the connection.
        task = asyncio.current_task()
        if task is not None:
            task.uncancel()
    finally:
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await sender
        await release(edge, sub)


async def _receive(ws: WebSocket, edge: Any, sub: Subscriber, bad: int) -> int:
    """Wait for the client's next frame and answer it; returns the bad frames in a row.

    A function of its own so that nothing of a frame stays referenced while the
    connection waits for the next one (about half a KiB per idle connection)."""
    message = await ws.receive()
    if message["type"] == "websocket.disconnect":
        raise WebSocketDisconnect(message.get("code") or 1000)
    try:
        if message.get("text") is None:
            raise FrameError("bad_frame", "frames are JSON text, not binary")
        frame = parse_frame(message["text"])
    except FrameError as exc:
        await _send(ws, frame_json("error", code=exc.code, message=exc.message))
        return bad + 1
    await _handle(ws, edge, sub, frame)
    return 0


def _stop_receiving(sender: asyncio.Task[None], receiver: asyncio.Task[Any] | None) -> None:
    """When the sender failed (a client that reads nothing), stop waiting for its frames."""
    if receiver is not None and not sender.cancelled() and sender.exception() is not None:
        receiver.cancel()


async def _handle(ws: WebSocket, edge: Any, sub: Subscriber, frame: dict[str, Any]) -> None:
    op = frame["op"]
    if op == "ping":
        await _send(ws, '{"type":"pong"}')
        return
    chans = list(dict.fromkeys(frame["channels"]))
    if op == "unsubscribe":
        edge.hub.unsubscribe(sub, chans)
        await _send(ws, frame_json("unsubscribed", channels=chans))
        return
    forbidden = [c for c in chans if not sub.principal.tier.allows_channel(c)]
    if forbidden:
        await _send(ws, frame_json("error", code="forbidden_channel",
                                   message=f"the {sub.principal.tier.name} tier does not include "
                                   f"{forbidden[0]}"))
        return
    new = [c for c in chans if c not in sub.channels]
    if len(sub.channels) + len(new) > MAX_CHANNELS:
        await _send(ws, frame_json("error", code="too_many_channels",
                                   message=f"at most {MAX_CHANNELS} subscriptions per connection"))
        return
    async with sub.lock:
        upto = list(edge.feed.positions)
        edge.hub.subscribe(sub, new)
        resume = await missed(edge, sub, set(new), frame.get("cursor"), upto)
        await _send(ws, frame_json("subscribed", channels=chans, cursor=edge.feed.cursor().encode()))
        if resume.reset:
            sub.queue.put_nowait(RESET)
        elif frame.get("snapshots") and not frame.get("cursor"):
            await _send_snapshots(ws, edge, new, "snapshot")
        for entry in resume.entries:
            await _send(ws, entry.ws())


async def _send_snapshots(ws: WebSocket, edge: Any, channels: list[str], kind: str) -> None:
    for ch in channels:
        for snap in await edge.snapshots.for_channel(ch):
            await _send(ws, '{"type":"' + kind + '","data":' + codec.dumps_str(snap) + "}")


class SlowClient(Exception):
    """A frame could not be written within :data:`SEND_TIMEOUT`: the client reads nothing."""


async def _send(ws: WebSocket, *texts: str) -> None:
    """Send ``texts``, one frame each, under one timer: the replies to a client's own
    frames, and the snapshots after a reset."""
    try:
        async with asyncio.timeout(SEND_TIMEOUT):
            for text in texts:
                await ws.send_text(text)
    except TimeoutError:
        raise SlowClient from None


async def _deliver(ws: WebSocket, sub: Subscriber, *texts: str, frames: bytes | None = None) -> None:
    """Send ``texts`` from the send loop, with no timer of their own: the edge's watchdog
    stops a write that waits too long (a timer per write cost about a quarter of the
    time spent sending). ``frames``, the same texts already encoded as frames, go out
    in one write where the server allows it (:func:`web.direct.websocket_write`)."""
    sub.writing_since = asyncio.get_running_loop().time()
    try:
        if frames is not None and await websocket_write(sub.direct, frames):
            return
        for text in texts:
            await ws.send_text(text)
    except asyncio.CancelledError:
        if not sub.stalled_write():
            raise
        raise SlowClient from None
    finally:
        sub.writing_since = 0.0


#: At most this many queued deltas are sent under one lock.
BATCH = 64


async def _send_loop(ws: WebSocket, edge: Any, sub: Subscriber) -> None:
    sub.watch(edge.heartbeat)
    # Starlette keeps the server's send as ``_send``: the server's own protocol, or
    # nothing :func:`websocket_connection` knows (no direct path then).
    sub.direct = websocket_connection(getattr(ws, "_send", None))
    pending: Any = None
    while True:
        item = pending if pending is not None else await sub.queue.get()
        pending = None
        if item is PING:
            await _deliver(ws, sub, '{"type":"ping"}')
            continue
        if item is CLOSE:
            reason = "key revoked" if sub.close_code == CLOSE_REVOKED else "reconnect with your cursor"
            await ws.close(sub.close_code, reason)
            return
        async with sub.lock:
            if item is RESET:
                cursor = edge.feed.cursor().encode()
                await _send(ws, frame_json("reset", cursor=cursor,
                                           reason="history unavailable or client too slow"))
                await _send_snapshots(ws, edge, sorted(sub.channels), "snapshot")
                continue
            # The deltas already queued go out together, under one lock.
            entries, pending = take_queued(sub, item, BATCH)
            texts = [entry.ws() for entry in entries]
            if texts:
                edge.usage.stream_bytes(sub.key_id, sum(len(t) for t in texts))
                frames = None if sub.direct is None else b"".join(e.ws_frame() for e in entries)
                await _deliver(ws, sub, *texts, frames=frames)
