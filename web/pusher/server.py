"""The Pusher service of one edge: its apps, its connections and the cluster link.

Created in the edge's lifespan and handed on as ``app.state.pusher``. Events from
the bus (:class:`~web.pusher.presence.BusMessage`) are encoded once per edge and
offered to every local connection subscribed to their channel.

On SIGTERM the edge drains: before uvicorn starts closing connections itself
(with 1012), every Pusher connection is closed with 4200, which tells pusher-js
to reconnect at once (to another edge behind the load balancer).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from types import FrameType
from typing import TYPE_CHECKING, Any

from pipeline.connections import redis_client
from web.pusher import protocol
from web.pusher.apps import Apps
from web.pusher.presence import BusMessage, Cluster

if TYPE_CHECKING:
    from web.pusher.socket import Connection

log = logging.getLogger(__name__)

#: How long the drain waits before letting uvicorn go on with its own shutdown.
DRAIN_HEAD_START = 0.25


class PusherServer:
    def __init__(self, edge: Any, apps: Apps) -> None:
        self.edge = edge
        self.apps = apps
        s = edge.settings
        self.activity_timeout = s.pusher_activity_timeout
        self.pong_timeout = s.pusher_pong_timeout
        self.cluster = Cluster(edge.redis, lambda: redis_client(s, socket_connect_timeout=2), s.redis_prefix, edge.edge_id, self.deliver)
        self.connections: dict[str, Connection] = {}
        self._by_channel: dict[tuple[str, str], set[Connection]] = {}
        self.draining = False
        self._previous_handler: Any = None

    # -- lifecycle ----------------------------------------------------------

    async def start(self) -> None:
        await self.cluster.start([a.id for a in self.apps.all])
        self._hook_sigterm()

    async def stop(self) -> None:
        self._unhook_sigterm()
        self.drain()
        for _ in range(30):
            if not self.connections:
                break
            await asyncio.sleep(0.1)
        await self.cluster.stop()

    def drain(self) -> None:
        self.draining = True
        for conn in list(self.connections.values()):
            conn.sub.close(protocol.RECONNECT)

    def _hook_sigterm(self) -> None:
        try:
            previous = signal.getsignal(signal.SIGTERM)
            loop = asyncio.get_running_loop()

            def on_sigterm(signum: int, frame: FrameType | None) -> None:
                loop.call_soon_threadsafe(self.drain)
                if callable(previous):
                    loop.call_soon_threadsafe(loop.call_later, DRAIN_HEAD_START, previous,
                                              signum, frame)

            signal.signal(signal.SIGTERM, on_sigterm)
            self._previous_handler = previous
        except ValueError:
            pass  # not the main thread (an in-process test client): nothing to drain on signals

    def _unhook_sigterm(self) -> None:
        if self._previous_handler is not None:
            with contextlib.suppress(ValueError):
                signal.signal(signal.SIGTERM, self._previous_handler)
            self._previous_handler = None

    # -- local connections --------------------------------------------------

    def add(self, conn: Connection) -> None:
        self.connections[conn.socket_id] = conn

    def remove(self, conn: Connection) -> None:
        self.connections.pop(conn.socket_id, None)

    def join(self, conn: Connection, channel: str) -> None:
        self._by_channel.setdefault((conn.app.id, channel), set()).add(conn)

    def part(self, conn: Connection, channel: str) -> None:
        subs = self._by_channel.get((conn.app.id, channel))
        if subs is not None:
            subs.discard(conn)
            if not subs:
                del self._by_channel[(conn.app.id, channel)]

    def local_count(self, app_id: str, channel: str) -> int:
        return len(self._by_channel.get((app_id, channel), ()))

    def deliver(self, message: BusMessage) -> None:
        subs = self._by_channel.get((message.app_id, message.channel))
        if not subs:
            return
        frame = protocol.encode(message.event, message.data, message.channel, message.user_id)
        for conn in subs:
            if conn.socket_id != message.skip:
                conn.sub.push(frame)

    def revoke(self, key_id: str) -> None:
        """An API key was revoked: close the connections it authorised channels for."""
        for conn in list(self.connections.values()):
            if key_id in conn.key_ids():
                conn.sub.close(protocol.UNAUTHORIZED)
