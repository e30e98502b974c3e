"""The reference: a minimal asyncio server that writes pre-encoded frames straight to sockets.

It answers the same handshakes as the edge (an SSE ``GET`` with ``: connected``, a
WebSocket upgrade and a ``subscribed`` frame), then on ``{"op": "burst", "count": k}``
on stdin writes the same delta frame, already encoded, ``k`` times to every socket
(with ``"fresh": true``, each of the ``k`` deltas is stamped with the time it is
encoded, for clients that measure latency from ``fetched_at``).
No queues, no per-client state beyond the transport: the limit of the machine.
It prints ``{"port": p}`` once listening and one JSON line per command.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import struct
import sys
import threading
import time
from typing import Any

from tables import codec
from web.cursor import Cursor
from web.hub import Entry

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def sample_entry(partitions: int = 4) -> Entry:
    now = time.time()
    delta = {"version": 1, "match_id": "football-apifootball-900001", "seq": 7, "ts": now,
             "sport": "football", "league": "39", "kinds": ["score"],
             "changes": [{"op": "replace", "path": "/score/home", "value": 7},
                         {"op": "replace", "path": "/status/clock", "value": "7"}],
             "events": [{"type": "goal", "team": "home", "minute": 7, "player": "A. Player"}],
             "fetched_at": now}
    cursor = Cursor("1", tuple(1000 + p for p in range(partitions))).encode()
    return Entry(0, 1000, delta["match_id"], 7, ("sport.football",), codec.dumps(delta), cursor)


def frames_of(entry: Entry) -> dict[str, bytes]:
    return {"sse": entry.sse(), "ws": ws_text(entry.ws().encode())}


def ws_text(payload: bytes) -> bytes:
    n = len(payload)
    if n < 126:
        return struct.pack("!BB", 0x81, n) + payload
    if n < 65536:
        return struct.pack("!BBH", 0x81, 126, n) + payload
    return struct.pack("!BBQ", 0x81, 127, n) + payload


ENTRY = sample_entry()
FRAMES = frames_of(ENTRY)
SSE_HEAD = (b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
            b"\r\n: connected\n\n")
SUBSCRIBED = ws_text(b'{"type":"subscribed","channels":["sport.football"]}')


class Conn(asyncio.Protocol):
    def __init__(self, server: Server) -> None:
        self.server = server
        self.buf = b""
        self.kind = ""
        self.transport: asyncio.Transport | None = None
        self.paused = False
        self.resumed: asyncio.Event | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        if self.kind:
            self.server.conns[self.kind].discard(self)

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        if self.resumed is not None:
            self.resumed.set()

    def data_received(self, data: bytes) -> None:
        if self.kind == "ws-wait":
            self.kind = "ws"
            self.transport.write(SUBSCRIBED)  # type: ignore[union-attr]
            self.server.conns["ws"].add(self)
            return
        if self.kind:
            return
        self.buf += data
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            return
        head = self.buf[:end].decode("latin-1")
        self.buf = b""
        if "upgrade: websocket" in head.lower():
            key = next(line.split(":", 1)[1].strip() for line in head.split("\r\n")
                       if line.lower().startswith("sec-websocket-key:"))
            accept = base64.b64encode(hashlib.sha1(key.encode() + GUID).digest()).decode()
            self.transport.write(  # type: ignore[union-attr]
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                + f"Sec-WebSocket-Accept: {accept}\r\n\r\n".encode())
            self.kind = "ws-wait"
        else:
            self.transport.write(SSE_HEAD)  # type: ignore[union-attr]
            self.kind = "sse"
            self.server.conns["sse"].add(self)

    async def drained(self) -> None:
        if self.paused:
            self.resumed = asyncio.Event()
            await self.resumed.wait()


class Server:
    def __init__(self) -> None:
        self.conns: dict[str, set[Conn]] = {"sse": set(), "ws": set()}

    async def burst(self, count: int, fresh: bool = False) -> dict[str, Any]:
        t0 = time.perf_counter()
        sse, ws = list(self.conns["sse"]), list(self.conns["ws"])
        for i in range(count):
            frames = frames_of(sample_entry()) if fresh else FRAMES
            for conns, frame in ((sse, frames["sse"]), (ws, frames["ws"])):
                for c in conns:
                    c.transport.write(frame)  # type: ignore[union-attr]
            if i % 16 == 15:
                for c in (*sse, *ws):
                    await c.drained()
        return {"seconds": time.perf_counter() - t0}


async def main() -> None:
    server = Server()
    loop = asyncio.get_running_loop()
    srv = await loop.create_server(lambda: Conn(server), "127.0.0.1", 0, backlog=4096)
    port = srv.sockets[0].getsockname()[1]
    commands: asyncio.Queue[str] = asyncio.Queue()

    def reader() -> None:
        for line in sys.stdin:
            loop.call_soon_threadsafe(commands.put_nowait, line)
        loop.call_soon_threadsafe(commands.put_nowait, '{"op": "quit"}')

    threading.Thread(target=reader, daemon=True).start()

    def answer(obj: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()

    answer({"port": port})
    while True:
        cmd = json.loads(await commands.get())
        if cmd["op"] == "burst":
            answer(await server.burst(int(cmd["count"]), bool(cmd.get("fresh"))))
        elif cmd["op"] == "count":
            answer({k: len(v) for k, v in server.conns.items()})
        elif cmd["op"] == "quit":
            srv.close()
            answer({})
            return


if __name__ == "__main__":
    try:
        import uvloop
    except ImportError:
        asyncio.run(main())
    else:
        uvloop.run(main())
