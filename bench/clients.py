"""A client process: many SSE and WebSocket connections on raw asyncio sockets.

Minimal HTTP/1.1 and RFC 6455 (enough for the edge and the reference server), so a
few thousand connections cost little CPU and memory. Driven by JSON lines on stdin,
answered by one JSON line each on stdout:

    {"op": "connect", "host": h, "port": p, "sse": n, "ws": m, "channels": "sport.football",
     "mode": "count" | "latency", "concurrency": 200, "deflate": false}
    {"op": "reset"}                            zero the counters
    {"op": "wait", "frames": n, "timeout": s}  until n delta frames arrived (or the timeout)
    {"op": "report"}
    {"op": "quit"}

In ``count`` mode frames are only counted; in ``latency`` mode each delta is parsed and
its arrival time minus its ``fetched_at`` is recorded.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import struct
import sys
import threading
import time
import zlib
from typing import Any

import orjson

DELTA_SSE = b"event: delta\ndata: "
RESET_SSE = b"event: reset"


class Stats:
    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.frames = 0
        self.first = 0.0
        self.last = 0.0
        self.lat: dict[str, list[float]] = {"sse": [], "ws": []}
        self.resets = 0

    def got(self, n: int = 1) -> None:
        now = time.time()
        if not self.frames:
            self.first = now
        self.frames += n
        self.last = now


STATS = Stats()
CLOSED = [0]


class SSEClient(asyncio.Protocol):
    def __init__(self, path: str, host: str, mode: str) -> None:
        self.request = (f"GET {path} HTTP/1.1\r\nHost: {host}\r\nAccept: text/event-stream\r\n"
                        "Cache-Control: no-cache\r\n\r\n").encode()
        self.latency = mode == "latency"
        self.ready: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self.buf = b""
        self.head = True
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.transport.write(self.request)

    def connection_lost(self, exc: Exception | None) -> None:
        CLOSED[0] += 1
        if not self.ready.done():
            self.ready.set_result(False)

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data
        if self.head:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                self.buf = buf
                return
            if not buf.startswith(b"HTTP/1.1 200"):
                self.ready.set_result(False)
                self.transport.close()  # type: ignore[union-attr]
                return
            self.head = False
            buf = buf[end + 4:]
        if not self.ready.done():
            if b"connected" not in buf:
                self.buf = buf[-64:]
                return
            self.ready.set_result(True)
        if RESET_SSE in buf:
            STATS.resets += buf.count(RESET_SSE)
        if not self.latency:
            n = buf.count(DELTA_SSE)
            if n:
                STATS.got(n)
            self.buf = buf[-(len(DELTA_SSE) - 1):]
            return
        pos = 0
        while True:
            i = buf.find(DELTA_SSE, pos)
            if i < 0:
                self.buf = buf[-(len(DELTA_SSE) - 1):]
                return
            j = buf.find(b"\n", i + len(DELTA_SSE))
            if j < 0:
                self.buf = buf[i:]
                return
            now = time.time()
            STATS.got()
            STATS.lat["sse"].append(now - orjson.loads(buf[i + len(DELTA_SSE):j])["fetched_at"])
            pos = j


def ws_frame(payload: bytes, opcode: int = 1) -> bytes:
    mask = os.urandom(4)
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
    elif n < 65536:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return head + mask + masked


class WSClient(asyncio.Protocol):
    def __init__(self, path: str, host: str, mode: str, channels: list[str],
                 deflate: bool = False) -> None:
        key = base64.b64encode(os.urandom(16)).decode()
        offer = "Sec-WebSocket-Extensions: permessage-deflate\r\n" if deflate else ""
        self.request = (f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
                        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n{offer}"
                        "Sec-WebSocket-Version: 13\r\n\r\n").encode()
        # what a browser offers; if the server takes it, messages arrive deflated
        self.inflate = zlib.decompressobj(-15) if deflate else None
        self.subscribe = ws_frame(json.dumps({"op": "subscribe", "channels": channels}).encode())
        self.latency = mode == "latency"
        self.ready: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self.buf = b""
        self.head = True
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.transport.write(self.request)

    def connection_lost(self, exc: Exception | None) -> None:
        CLOSED[0] += 1
        if not self.ready.done():
            self.ready.set_result(False)

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data
        if self.head:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                self.buf = buf
                return
            if not buf.startswith(b"HTTP/1.1 101"):
                self.ready.set_result(False)
                self.transport.close()  # type: ignore[union-attr]
                return
            self.head = False
            buf = buf[end + 4:]
            self.transport.write(self.subscribe)  # type: ignore[union-attr]
        pos = 0
        size = len(buf)
        while size - pos >= 2:
            b0, b1 = buf[pos], buf[pos + 1]
            n = b1 & 0x7F
            at = pos + 2
            if n == 126:
                if size - at < 2:
                    break
                n = struct.unpack_from("!H", buf, at)[0]
                at += 2
            elif n == 127:
                if size - at < 8:
                    break
                n = struct.unpack_from("!Q", buf, at)[0]
                at += 8
            if size - at < n:
                break
            payload = buf[at:at + n]
            pos = at + n
            if b0 & 0x40 and self.inflate is not None:
                payload = self.inflate.decompress(payload + b"\x00\x00\xff\xff")
            self.frame(b0 & 0x0F, payload)
        self.buf = buf[pos:]

    def frame(self, opcode: int, payload: bytes) -> None:
        if opcode == 1:
            if payload.startswith(b'{"type":"delta"'):
                if self.latency:
                    now = time.time()
                    STATS.got()
                    STATS.lat["ws"].append(now - orjson.loads(payload)["data"]["fetched_at"])
                else:
                    STATS.got()
            elif not self.ready.done() and b'"subscribed"' in payload:
                self.ready.set_result(True)
            elif payload.startswith(b'{"type":"reset"'):
                STATS.resets += 1
        elif opcode == 9:
            self.transport.write(ws_frame(payload, 10))  # type: ignore[union-attr]
        elif opcode == 8:
            self.transport.close()  # type: ignore[union-attr]


CONNECTIONS: list[asyncio.Transport] = []


async def connect(cmd: dict[str, Any]) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    host, port = cmd["host"], int(cmd["port"])
    channels = cmd.get("channels", "sport.football")
    mode = cmd.get("mode", "count")
    sem = asyncio.Semaphore(int(cmd.get("concurrency", 200)))
    failed = 0
    t0 = time.monotonic()

    async def one(kind: str) -> None:
        nonlocal failed
        async with sem:
            if kind == "sse":
                proto: Any = SSEClient(f"/v1/stream?channels={channels}", host, mode)
            else:
                proto = WSClient("/v1/ws", host, mode, channels.split(","),
                                 bool(cmd.get("deflate", False)))
            try:
                transport, _ = await loop.create_connection(lambda: proto, host, port)
                ok = await asyncio.wait_for(proto.ready, 60)
            except (OSError, asyncio.TimeoutError):
                ok = False
                transport = None
            if ok:
                CONNECTIONS.append(transport)
            else:
                failed += 1
                if transport is not None:
                    transport.close()

    n_sse, n_ws = int(cmd.get("sse", 0)), int(cmd.get("ws", 0))
    kinds = [k for i in range(max(n_sse, n_ws))
             for k, n in (("sse", n_sse), ("ws", n_ws)) if i < n]
    await asyncio.gather(*(one(k) for k in kinds))
    return {"connected": len(CONNECTIONS), "failed": failed, "seconds": time.monotonic() - t0}


def report() -> dict[str, Any]:
    return {"frames": STATS.frames, "first": STATS.first, "last": STATS.last, "lat": STATS.lat,
            "resets": STATS.resets, "connections": len(CONNECTIONS), "closed": CLOSED[0]}


async def main() -> None:
    loop = asyncio.get_running_loop()
    commands: asyncio.Queue[str] = asyncio.Queue()

    def reader() -> None:
        for line in sys.stdin:
            loop.call_soon_threadsafe(commands.put_nowait, line)
        loop.call_soon_threadsafe(commands.put_nowait, '{"op": "quit"}')

    threading.Thread(target=reader, daemon=True).start()

    def answer(obj: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()

    while True:
        cmd = json.loads(await commands.get())
        op = cmd.get("op")
        if op == "connect":
            answer(await connect(cmd))
        elif op == "reset":
            STATS.reset()
            answer({})
        elif op == "wait":
            deadline = time.monotonic() + float(cmd.get("timeout", 30))
            idle = float(cmd.get("idle", 0))
            while STATS.frames < int(cmd["frames"]) and time.monotonic() < deadline:
                if idle and STATS.frames and time.time() - STATS.last > idle:
                    break
                await asyncio.sleep(0.01)
            answer(report())
        elif op == "report":
            answer(report())
        elif op == "quit":
            for t in CONNECTIONS:
                t.close()
            answer({})
            return


if __name__ == "__main__":
    try:
        import uvloop
    except ImportError:
        asyncio.run(main())
    else:
        uvloop.run(main())
