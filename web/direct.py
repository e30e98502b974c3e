"""Writing deltas straight to the socket of a client whose writer is idle.

Each stream has a task that writes what is queued for it. With 10,000 clients, one
delta woke 10,000 tasks, and each went through its stream loop and the server's
``send`` to make one write: three times the time of the writes themselves. When a
client's writer waits on an empty queue, the hub instead writes the deltas' frames,
encoded once for every client, to the transport itself, exactly as the server would
have written them (:meth:`web.hub.Hub.flush`).

This knows the two uvicorn protocols the edge runs on: httptools for HTTP/1.1 and the
websockets sans-I/O protocol for WebSockets. :func:`http_connection` and
:func:`websocket_connection` give the server's connection object behind an ASGI
``send``, or None for any other server, and every delta then takes the queue. A
write is refused whenever the server would not write at once: a connection closing
or closed, writing paused by flow control, or bytes still waiting in the transport's
buffer. A write that fails is refused too: the hub's loop serves every client, and the
stream's own writer meets the error. A refused delta takes the queue, and the
slow-client policy applies as before.

A WebSocket's own writer uses the same connection for what it takes from the queue
(:func:`websocket_write`): the frames of up to 64 queued deltas in one write, after the
server's flow control, instead of one trip through Starlette, uvicorn and ``websockets``
per frame. (An SSE writer already sends what it takes as one chunk.)

Only the connection object is kept per client (a closure per connection would cost
about a KiB each).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from websockets.protocol import Protocol, State

if TYPE_CHECKING:
    from web.hub import Entry, Subscriber


def http_connection(send: Any) -> Any | None:
    """The server's object behind ``send`` once it has written the head of a chunked
    HTTP/1.1 response (uvicorn's httptools ``RequestResponseCycle``), or None."""
    cycle = getattr(send, "__self__", None)
    if (getattr(cycle, "chunked_encoding", None) is not True
            or not getattr(cycle, "response_started", False)
            or not all(hasattr(cycle, a) for a in ("transport", "flow", "disconnected",
                                                   "response_complete"))):
        return None
    return cycle


def websocket_connection(send: Any) -> Any | None:
    """The server's object behind ``send`` for an accepted WebSocket without extensions
    (uvicorn's websockets sans-I/O protocol), or None."""
    proto = getattr(send, "__self__", None)
    conn = getattr(proto, "conn", None)
    if (not isinstance(conn, Protocol) or conn.extensions
            or not getattr(proto, "handshake_complete", False)
            or not all(hasattr(proto, a) for a in ("transport", "writable", "disconnected",
                                                   "close_sent"))):
        return None
    return proto


def http_chunk(body: bytes) -> bytes:
    """``body`` as one chunk of a chunked HTTP/1.1 body, as the server frames it."""
    return b"%x\r\n" % len(body) + body + b"\r\n"


def _write(transport: Any, data: bytes, *, behind: bool = False) -> bool:
    """Write ``data`` unless the transport is closing, or (unless ``behind``) has bytes
    waiting."""
    if transport.is_closing() or (transport.get_write_buffer_size() and not behind):
        return False
    try:
        transport.write(data)
    except Exception:  # noqa: BLE001 - see the module's docstring
        return False
    return True


def deliver(sub: Subscriber, entries: list[Entry]) -> int | None:
    """Write the deltas ``sub`` still wants in one write, as one chunk of its SSE body
    or as WebSocket frames; the bytes of the stream that went out (what the queue's
    writer would count), or None when the write is refused."""
    if sub.floor is not None:
        entries = [e for e in entries if sub.wants(e)]
        if not entries:
            return 0
    conn = sub.direct
    one = entries[0] if len(entries) == 1 else None
    if sub.transport == "ws":
        if (conn.disconnected or conn.close_sent or conn.conn.state is not State.OPEN
                or not conn.writable.is_set()):
            return None
        if one is not None:
            data, size = one.ws_frame(), len(one.ws())
        else:
            data = b"".join(e.ws_frame() for e in entries)
            size = sum(len(e.ws()) for e in entries)
    else:
        if conn.disconnected or conn.response_complete or conn.flow.write_paused:
            return None
        if one is not None:
            data, size = one.sse_chunk(), len(one.sse())
        else:
            body = b"".join(e.sse() for e in entries)
            data, size = http_chunk(body), len(body)
    return size if _write(conn.transport, data) else None


async def websocket_write(proto: Any, data: bytes) -> bool:
    """For a WebSocket's own writer: wait until the server would write (flow control),
    then write ``data``, frames already encoded, in one write. False when the connection
    no longer takes frames: the writer's usual send then meets the reason."""
    writable = proto.writable
    if not writable.is_set():
        await writable.wait()
    if proto.disconnected or proto.close_sent or proto.conn.state is not State.OPEN:
        return False
    return _write(proto.transport, data, behind=True)
