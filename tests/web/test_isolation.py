"""Bad clients do not slow the good ones (docs/protocols.md, "Slow clients").

Against a real edge: a well-behaved SSE client and a well-behaved WebSocket client
measure how long each delta takes from the producer to them, first alone, then
while other clients abuse the same edge:

- flooders (a separate process, so the measuring event loop stays free) send
  garbage, oversized frames, unknown ops and bad subscriptions on ``/v1/ws`` and
  reconnect each time the edge closes them with 1008;
- a slow reader opens an SSE stream on the same channel with a tiny receive
  window and then reads nothing while more than a queue's worth of deltas goes by.

The good clients get every delta, in order, and their median latency stays within
a generous bound of the baseline; the slow reader is sent ``reset`` and fresh
snapshots (the documented policy), then live deltas again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from urllib.parse import urlparse

import httpx
import websockets

from tables import codec
from tables.api_keys import KeyStore
from tests.support import SSE
from tests.web.conftest import delta, snapshot

MATCH = "football-apifootball-4242"
CHANNEL = f"match.{MATCH}"
PACED = 40  # deltas per latency measurement
PACE = 0.025  # seconds between them
BURST = 1200  # more than a subscriber queue (1,000) holds
CHUNK = 300
CLOG, CLOG_PAD = 28, 200_000  # 5.6 MB: more than the kernel buffers of one connection
PAD = 1024
#: how much the abusers may add to the good clients' median latency
SLACK = 0.25
SEND_TIMEOUT = 30.0  # web/hub.py: a send blocked this long ends an SSE stream

FLOODER = r"""
import asyncio, json, os, sys, time
import websockets

url, seconds, key = sys.argv[1], float(sys.argv[2]), os.environ["FLOOD_KEY"]
BAD = ["{garbage", "x" * 200_000, json.dumps({"op": "dance"}), "[1, 2]", "null",
       json.dumps({"op": "subscribe", "channels": "sport.football"}),
       json.dumps({"op": "subscribe", "channels": ["sport.curling"]}),
       json.dumps({"op": "subscribe", "channels": ["match." + "x" * 300]}),
       json.dumps({"op": "subscribe", "channels": [f"match.football-apifootball-{i}" for i in range(60)]})]
stats = {"sent": 0, "errors": {}, "closes": {}, "other": []}

done = False

def running():
    return not done and time.monotonic() < stop

async def one():
    i = 0
    while running():
        try:
            async with websockets.connect(url, max_size=None, additional_headers={"X-API-Key": key}) as ws:
                async def read():
                    async for raw in ws:
                        frame = json.loads(raw)
                        if frame.get("type") == "error":
                            stats["errors"][frame["code"]] = stats["errors"].get(frame["code"], 0) + 1
                        else:
                            stats["other"].append(frame)
                reader = asyncio.create_task(read())
                try:
                    while running():
                        await ws.send(BAD[i % len(BAD)])
                        i += 1
                        stats["sent"] += 1
                        await asyncio.sleep(0.001)
                except websockets.ConnectionClosed:
                    pass
                try:
                    await asyncio.wait_for(reader, 5)
                except (websockets.ConnectionClosed, asyncio.TimeoutError):
                    pass
                code = ws.close_code
                stats["closes"][str(code)] = stats["closes"].get(str(code), 0) + 1
        except (OSError, websockets.InvalidHandshake) as exc:
            stats["other"].append(repr(exc))
            await asyncio.sleep(0.05)

async def main():
    global done
    flooders = asyncio.gather(*(one() for _ in range(3)))
    await asyncio.to_thread(sys.stdin.read)  # until the test closes stdin
    done = True
    await flooders
    print(json.dumps(stats))

stop = time.monotonic() + seconds

asyncio.run(main())
"""


def padded(seq: int, pad: int = PAD) -> dict:
    return delta(MATCH, seq, changes=[{"op": "replace", "path": "/venue", "value": "v" * pad}])


class Good:
    """Arrival times per seq for one well-behaved client."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.arrivals: dict[int, float] = {}
        self.order: list[int] = []
        self.other: list[str] = []

    def got(self, seq: int) -> None:
        self.arrivals.setdefault(seq, time.monotonic())
        self.order.append(seq)

    async def until(self, seq: int, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while seq not in self.arrivals:
            assert time.monotonic() < deadline, f"{self.name} stopped at {self.order[-3:]}"
            await asyncio.sleep(0.01)

    def p50(self, sent: dict[int, float]) -> float:
        return statistics.median(self.arrivals[s] - t for s, t in sent.items())


async def read_sse(client: Good, sse: SSE) -> None:
    while True:
        ev = await sse.next(timeout=120)
        if ev.get("event") == "delta":
            client.got(codec.loads(ev["data"])["seq"])
        elif "event" in ev:
            client.other.append(ev["event"])


async def read_ws(client: Good, ws) -> None:
    async for raw in ws:
        frame = json.loads(raw)
        if frame["type"] == "delta":
            client.got(frame["data"]["seq"])
        else:
            client.other.append(frame["type"])


class SlowReader:
    """An SSE client with a tiny receive window that stops reading after the headers."""

    def __init__(self, base: str) -> None:
        u = urlparse(base)
        self.addr = (u.hostname, u.port)
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
        self.sock.setblocking(False)
        self.buf = b""
        self.opened = 0.0
        self.closed = False

    async def open(self) -> None:
        self.opened = time.monotonic()
        loop = asyncio.get_running_loop()
        await loop.sock_connect(self.sock, self.addr)
        await loop.sock_sendall(self.sock, (
            f"GET /v1/stream?channels={CHANNEL} HTTP/1.1\r\nHost: {self.addr[0]}\r\n"
            "Accept: text/event-stream\r\n\r\n").encode())
        await self.read_until(b": connected", 10)
        assert self.buf.startswith(b"HTTP/1.1 200"), self.buf[:200]

    async def read_until(self, marker: bytes, timeout: float, whole: bool = False) -> bool:
        """Read until ``marker`` (with ``whole``: and the end of the frame holding it)."""
        loop = asyncio.get_running_loop()
        deadline = time.monotonic() + timeout

        def found() -> bool:
            at = self.buf.find(marker)
            return at >= 0 and (not whole or self.buf.find(b"\n\n", at) >= 0)

        while not found():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            try:
                chunk = await asyncio.wait_for(loop.sock_recv(self.sock, 65536), left)
            except TimeoutError:
                return False
            if not chunk:
                self.closed = True
                return False
            self.buf += chunk
        return True

    def events(self) -> list[tuple[str, dict]]:
        body = self.buf.split(b"\r\n\r\n", 1)[1].decode(errors="replace")
        out = []
        for line in body.splitlines():
            # chunked transfer: the frames themselves are whole lines of the body
            if line.startswith("event: "):
                out.append([line[7:], None])
            elif line.startswith("data: ") and out and out[-1][1] is None:
                with contextlib.suppress(ValueError):
                    out[-1][1] = json.loads(line[6:])
        return [(kind, data) for kind, data in out if data is not None]

    def close(self) -> None:
        self.sock.close()


async def produce_paced(edge_env, first: int) -> dict[int, float]:
    sent: dict[int, float] = {}
    for seq in range(first, first + PACED):
        sent[seq] = time.monotonic()
        await edge_env.send(padded(seq))
        await asyncio.sleep(PACE)
    return sent


async def test_flooders_and_a_slow_reader_do_not_delay_the_others(edge_env):
    await edge_env.store(snapshot(MATCH, 1))
    # the anonymous tier's three streams go to the good clients and the slow reader
    _, flood_key = await KeyStore(edge_env.pool, edge_env.settings.db_schema).create("flood", "pro")
    base = edge_env.url
    ws_url = base.replace("http", "ws") + "/v1/ws"
    sse_good, ws_good = Good("sse"), Good("ws")
    tasks: list[asyncio.Task] = []
    slow = SlowReader(base)
    flooder: subprocess.Popen | None = None
    async with httpx.AsyncClient(timeout=httpx.Timeout(10, read=None)) as c, \
            SSE(c, f"{base}/v1/stream?channels={CHANNEL}") as sse, \
            websockets.connect(ws_url, max_size=None) as ws:
        try:
            assert (await sse.next())["comment"] == "connected"
            await ws.send(json.dumps({"op": "subscribe", "channels": [CHANNEL]}))
            assert json.loads(await ws.recv())["type"] == "subscribed"
            tasks = [asyncio.create_task(read_sse(sse_good, sse)),
                     asyncio.create_task(read_ws(ws_good, ws))]

            # warm-up, then the baseline without abusers
            seq = 2
            for seq in range(2, 7):
                await edge_env.send(padded(seq))
            for g in (sse_good, ws_good):
                await g.until(6)
            baseline = await produce_paced(edge_env, 7)
            last = 6 + PACED
            for g in (sse_good, ws_good):
                await g.until(last)
            base_p50 = {g.name: g.p50(baseline) for g in (sse_good, ws_good)}

            # the abusers arrive
            await slow.open()
            slow_from = last + 1
            flooder = subprocess.Popen([sys.executable, "-c", FLOODER, ws_url, "120"],
                                       stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                       stderr=subprocess.PIPE, text=True,
                                       env={**os.environ, "FLOOD_KEY": flood_key})
            await asyncio.sleep(1.0)
            # large deltas fill the socket buffers between the edge and the slow reader, then
            # more than a queue's worth, in chunks the good clients (read by this same
            # process) keep up with
            for s in range(last + 1, last + 1 + CLOG):
                await edge_env.send(padded(s, CLOG_PAD))
            last += CLOG
            for g in (sse_good, ws_good):
                await g.until(last, 30)
            first = last + 1
            for chunk in range(first, first + BURST, CHUNK):
                for s in range(chunk, min(chunk + CHUNK, first + BURST)):
                    await edge_env.producer.send(edge_env.settings.topic("match-deltas"),
                                                 codec.dumps(padded(s)), key=MATCH.encode())
                await edge_env.producer.flush()
                for g in (sse_good, ws_good):
                    await g.until(min(chunk + CHUNK, first + BURST) - 1, 30)
            last = first + BURST - 1
            abused = await produce_paced(edge_env, last + 1)
            last += PACED
            for g in (sse_good, ws_good):
                await g.until(last)
            abused_p50 = {g.name: g.p50(abused) for g in (sse_good, ws_good)}
            assert flooder.poll() is None, "the flooders stopped before the measurement ended"
            out, _ = flooder.communicate(input="", timeout=60)
            stats = json.loads(out)

            # the slow reader was reset, then gets snapshots and live deltas again
            await edge_env.send(padded(last + 1))
            last += 1
            complete = await slow.read_until(f'"seq":{last},'.encode(), 30, whole=True)
            blocked_for = time.monotonic() - slow.opened
            events = slow.events()
            kinds = [k for k, _ in events]
            assert "reset" in kinds, kinds[:20]
            before = [d["seq"] for k, d in events[:kinds.index("reset")] if k == "delta"]
            assert before == list(range(slow_from, slow_from + len(before)))
            assert len(before) < last - slow_from, "the slow reader was never behind"
            after = kinds[kinds.index("reset") + 1:]
            assert after and after[0] == "snapshot", after[:5]
            live = [d["seq"] for k, d in events if k == "delta"]
            assert live == sorted(set(live)), "a delta twice or out of order after reset"
            if not complete:
                # not reading for longer than the edge's send timeout (30 s, reached only on
                # a heavily loaded machine) also ends the stream
                assert slow.closed and blocked_for >= SEND_TIMEOUT, (blocked_for, slow.buf[-300:])
            else:
                assert live[-1] == last

            # the baseline again, without abusers, for a machine whose load changed meanwhile
            again = await produce_paced(edge_env, last + 1)
            last += PACED
            for g in (sse_good, ws_good):
                await g.until(last)
            base_p50 = {g.name: max(g.p50(baseline), g.p50(again)) for g in (sse_good, ws_good)}

            # every delta, in order, exactly once, to both good clients, and no later
            for g in (sse_good, ws_good):
                assert g.order == list(range(2, last + 1)), (g.name, g.order[:5], len(g.order))
                assert "reset" not in g.other, g.name
            for name in base_p50:
                assert abused_p50[name] <= base_p50[name] + SLACK, (name, base_p50, abused_p50)

            assert stats["closes"].get("1008", 0) >= 3, stats["closes"]
            assert {"bad_json", "frame_too_large", "unknown_op", "bad_frame", "bad_channels",
                    "bad_channel", "too_many_channels"} <= set(stats["errors"]), stats["errors"]
            assert not [f for f in stats["other"] if isinstance(f, dict)
                        and f.get("type") in ("delta", "subscribed")], stats["other"][:5]
            assert edge_env.procs[0].alive()
            print(f"\nmedian delta latency, alone: {base_p50}, with abusers: {abused_p50}; "
                  f"flooders sent {stats['sent']} bad frames, closed {stats['closes']}")
        finally:
            for t in tasks:
                t.cancel()
            slow.close()
            if flooder is not None and flooder.poll() is None:
                flooder.kill()
                flooder.wait(5)
