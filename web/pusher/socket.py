"""The Pusher WebSocket ``/app/{key}?protocol=7``: one client connection.

Handshake: an unknown key gets ``pusher:error`` 4001, a disabled app 4003, a
missing / malformed / unsupported ``protocol`` 4008 / 4006 / 4007, an origin the
app does not allow 4009, an app over its connection quota 4004, a draining edge
4200; each is followed by a close with the same code. Otherwise the server sends
``pusher:connection_established`` with ``socket_id`` and ``activity_timeout``.

Client → server: ``pusher:subscribe`` (``channel``, and for private and presence
channels ``auth`` and ``channel_data``), ``pusher:unsubscribe``, ``pusher:ping``
(answered with ``pusher:pong``), ``pusher:pong``, and ``client-*`` events on
private and presence channels when the app allows them (at most 10 per second per
connection; more get ``pusher:error`` 4301).

Server → client: ``pusher_internal:subscription_succeeded`` (presence: ``{"presence":
{"ids", "hash", "count"}}``), ``pusher_internal:member_added`` / ``member_removed``,
``pusher:subscription_error`` (a bad signature: ``AuthError``, status 401, plus a
``pusher:error`` 4009 for clients that only listen on the connection), ``delta`` on
the channels of DESIGN (``sport.*``, ``league.*``, ``match.*`` and their private /
presence variants), events published through the HTTP API or sent by other
clients, and ``pusher:ping`` after ``activity_timeout`` seconds of client silence;
no answer within the pong timeout closes the connection with 4201.

Deliberate divergences from Pusher's service:

- a private channel's ``channel_data``, when the subscription carries one, is part
  of the signed string (the edge's auth endpoint sends one naming the API key, so a
  revoked key closes the connection with 4009 and the key's tier decides client
  events); a subscription without one is checked exactly as Pusher checks it;
- a slow client (queue full) gets ``reset`` then ``snapshot`` events on its delta
  channels instead of being disconnected, as on the other transports.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from redis.exceptions import RedisError
from starlette.websockets import WebSocket, WebSocketDisconnect

from tables import codec
from tables.channels import ChannelError, validate
from web.hub import CLOSE, RESET, TIMEOUT, Entry, Subscriber, next_item
from web.pusher import protocol
from web.pusher.apps import App
from web.pusher.presence import BusMessage
from web.pusher.protocol import PusherError
from web.pusher.server import PusherServer
from web.stream import release

log = logging.getLogger(__name__)

MAX_MESSAGE = 10 * 1024
MAX_SUBSCRIPTIONS = 100
MAX_BAD_MESSAGES = 20
CLIENT_EVENTS_PER_SECOND = 10.0
POLICY_VIOLATION = 1008
PONG = protocol.encode("pusher:pong", {})
PING = protocol.encode("pusher:ping", {})


@dataclass(eq=False)
class PusherSubscriber(Subscriber):
    """A hub subscriber that keeps every entry: a Pusher client gets one event per
    subscribed channel, so the same delta on two channels is two frames."""

    def offer(self, item: Any) -> bool:
        self.enqueue(item)
        return False

    def push(self, frame: str) -> None:
        """Queue an encoded frame (bus events share the queue and its slow-client policy)."""
        self.enqueue(frame)


@dataclass
class Subscription:
    channel: str
    kind: str
    user_id: str | None = None
    user_info: Any = None
    #: the API key and tier named by channel_data the edge's auth endpoint signed
    key_id: str | None = None
    tier: str | None = None


@dataclass
class TokenBucket:
    rate: float
    tokens: float = 0.0
    at: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        self.tokens = self.rate

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.rate, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens < 1.0:
            return False
        self.tokens -= 1.0
        return True


class Connection:
    def __init__(self, server: PusherServer, app: App, ws: WebSocket,
                 sub: PusherSubscriber) -> None:
        self.server = server
        self.app = app
        self.ws = ws
        self.sub = sub
        self.socket_id = protocol.new_socket_id()
        self.subs: dict[str, Subscription] = {}
        self.last_seen = time.monotonic()
        self.pinged_at: float | None = None
        self.client_events = TokenBucket(CLIENT_EVENTS_PER_SECOND)

    def key_ids(self) -> set[str]:
        return {s.key_id for s in self.subs.values() if s.key_id}

    async def send(self, frame: str) -> None:
        with contextlib.suppress(RuntimeError, WebSocketDisconnect, OSError):
            await self.ws.send_text(frame)


async def pusher_endpoint(ws: WebSocket) -> None:
    server: PusherServer = ws.app.state.pusher
    edge = ws.app.state.edge
    await ws.accept()
    try:
        app = handshake(server, ws)
    except PusherError as exc:
        await refuse(ws, exc)
        return
    await edge.feed.ready.wait()
    sub = PusherSubscriber(set(), maxsize=edge.queue_size, transport="pusher")
    if app.max_connections and not await _open_stream(edge, app, sub):
        await refuse(ws, PusherError(protocol.OVER_QUOTA, "Application is over connection quota"))
        return
    conn = Connection(server, app, ws, sub)
    edge.usage.stream_opened(None, sub.id)
    edge.hub.add(sub)
    server.add(conn)
    await conn.send(protocol.event("pusher:connection_established", {
        "socket_id": conn.socket_id, "activity_timeout": server.activity_timeout}))
    sender = asyncio.create_task(_send_loop(conn))
    bad = 0
    try:
        while True:
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                break
            conn.last_seen = time.monotonic()
            conn.pinged_at = None
            text = message.get("text")
            if text is None:
                text = (message.get("bytes") or b"").decode("utf-8", "replace")
            if await handle(conn, text):
                bad = 0
                continue
            bad += 1
            if bad >= MAX_BAD_MESSAGES:
                sub.close(POLICY_VIOLATION)
    except (WebSocketDisconnect, RuntimeError):
        pass
    finally:
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await sender
        await _cleanup(conn)


def handshake(server: PusherServer, ws: WebSocket) -> App:
    key = ws.path_params.get("key", "")
    if ws.path_params.get("rest"):
        raise PusherError(protocol.PATH_NOT_FOUND, "Path not found")
    app = server.apps.by_key.get(key)
    if app is None:
        raise PusherError(protocol.APP_NOT_FOUND, f"App key {key[:64]} does not exist")
    if not app.enabled:
        raise PusherError(protocol.APP_DISABLED, "Application is disabled")
    raw = ws.query_params.get("protocol")
    if raw is None:
        raise PusherError(protocol.NO_PROTOCOL, "No protocol version supplied")
    if not raw.isdigit() or len(raw) > 3:
        raise PusherError(protocol.INVALID_VERSION, "Invalid version string format")
    if int(raw) not in protocol.PROTOCOL_VERSIONS:
        raise PusherError(protocol.UNSUPPORTED_PROTOCOL,
                          f"Unsupported protocol version {raw}: use 7")
    if not app.origin_allowed(ws.headers.get("origin")):
        raise PusherError(protocol.UNAUTHORIZED, "Origin not allowed")
    if server.draining:
        raise PusherError(protocol.RECONNECT, "This edge is shutting down: reconnect")
    return app


async def refuse(ws: WebSocket, exc: PusherError) -> None:
    with contextlib.suppress(RuntimeError, WebSocketDisconnect, OSError):
        await ws.send_text(protocol.error(exc.code, exc.message))
        await ws.close(exc.code or POLICY_VIOLATION, exc.message[:120])


async def _open_stream(edge: Any, app: App, sub: PusherSubscriber) -> bool:
    sub.client = f"pusher:{app.id}"
    sub.stream_id = f"{edge.edge_id}:{sub.id}"
    try:
        ok = await edge.limits.open_stream(sub.client, sub.stream_id, app.max_connections)
    except (RedisError, OSError) as exc:
        log.warning("connection quota unavailable, admitting: %r", exc)
        ok = True
    if not ok:
        sub.client = ""
    return bool(ok)


# -- client messages --------------------------------------------------------

async def handle(conn: Connection, text: str) -> bool:
    """Act on one client message; False when it was malformed or refused."""
    if len(text) > MAX_MESSAGE:
        await conn.send(protocol.error(None, f"messages are limited to {MAX_MESSAGE} bytes"))
        return False
    try:
        frame = codec.loads(text)
    except codec.DecodeError:
        await conn.send(protocol.error(None, "message is not valid JSON"))
        return False
    if not isinstance(frame, dict) or not isinstance(frame.get("event"), str):
        await conn.send(protocol.error(None, "message must be an object with an event"))
        return False
    name = frame["event"]
    data = frame.get("data")
    if name.startswith("pusher:") and isinstance(data, str):
        with contextlib.suppress(codec.DecodeError):
            data = codec.loads(data)
    if name == "pusher:ping":
        await conn.send(PONG)
        return True
    if name == "pusher:pong":
        return True
    if name in ("pusher:subscribe", "pusher:unsubscribe"):
        channel = data.get("channel") if isinstance(data, dict) else None
        if not protocol.valid_channel(channel):
            await conn.send(protocol.error(None, "invalid channel name"))
            return False
        if name == "pusher:subscribe":
            return await subscribe(conn, channel, data)
        await unsubscribe(conn, channel)
        return True
    if name.startswith("client-"):
        return await client_event(conn, name, frame.get("channel"), data)
    await conn.send(protocol.error(None, f"unsupported event {name[:64]!r}"))
    return False


async def subscribe(conn: Connection, channel: str, data: dict[str, Any]) -> bool:
    server, app, edge = conn.server, conn.app, conn.server.edge
    if channel in conn.subs:
        return True
    if len(conn.subs) >= MAX_SUBSCRIPTIONS:
        await conn.send(protocol.subscription_error(
            channel, "LimitReached", f"at most {MAX_SUBSCRIPTIONS} channels per connection", 400))
        return False
    sub = Subscription(channel, protocol.channel_kind(channel))
    if sub.kind != "public":
        refusal = _authorise(conn, sub, data)
        if refusal is not None:
            await conn.send(protocol.subscription_error(channel, "AuthError", refusal, 401))
            await conn.send(protocol.error(protocol.UNAUTHORIZED,
                                           f"Connection is unauthorized: {refusal}"))
            return False
    async with conn.sub.lock:
        if sub.kind == "presence":
            try:
                assert sub.user_id is not None
                added, members = await server.cluster.join(app.id, channel, conn.socket_id,
                                                           sub.user_id, sub.user_info)
            except (RedisError, OSError) as exc:
                log.warning("presence unavailable: %r", exc)
                await conn.send(protocol.subscription_error(
                    channel, "PresenceUnavailable", "presence is unavailable, retry later", 503))
                return False
            payload: dict[str, Any] = {"presence": {
                "ids": list(members), "hash": members, "count": len(members)}}
        conn.subs[channel] = sub
        server.join(conn, channel)
        if _carries_deltas(channel):
            edge.hub.subscribe(conn.sub, [channel])
        if sub.kind == "presence":
            await conn.send(protocol.event("pusher_internal:subscription_succeeded", payload,
                                           channel))
        else:
            await conn.send(protocol.event("pusher_internal:subscription_succeeded", {}, channel))
    await server.cluster.count(app.id, channel, 1)
    if sub.kind == "presence" and added:
        await _publish(conn, BusMessage(
            app.id, channel, "pusher_internal:member_added",
            codec.dumps_str({"user_id": sub.user_id, "user_info": sub.user_info}),
            skip=conn.socket_id))
    return True


def _authorise(conn: Connection, sub: Subscription, data: dict[str, Any]) -> str | None:
    """Check the signature of a private or presence subscription; the reason when bad."""
    app = conn.app
    auth = data.get("auth")
    channel_data = data.get("channel_data")
    if channel_data is not None and not isinstance(channel_data, str):
        return "channel_data must be a JSON string"
    if sub.kind == "presence" and channel_data is None:
        return f"presence channel {sub.channel} needs channel_data"
    if not protocol.check_channel_auth(app.key, app.secret, conn.socket_id, sub.channel, auth,
                                       channel_data):
        return f"invalid signature for channel {sub.channel}"
    if channel_data is None:
        return None
    try:
        info = codec.loads(channel_data)
    except codec.DecodeError:
        return "channel_data is not valid JSON"
    if not isinstance(info, dict):
        return "channel_data must be a JSON object"
    user_id = info.get("user_id")
    if isinstance(user_id, (int, float)) and not isinstance(user_id, bool):
        user_id = str(user_id)
    if sub.kind == "presence" and (not isinstance(user_id, str) or not user_id):
        return "channel_data needs a user_id"
    sub.user_id = user_id if isinstance(user_id, str) else None
    sub.user_info = info.get("user_info")
    if isinstance(sub.user_info, dict) and isinstance(sub.user_info.get("tier"), str):
        sub.key_id = sub.user_id
        sub.tier = sub.user_info["tier"]
    return None


def _carries_deltas(channel: str) -> bool:
    try:
        validate(channel)
    except ChannelError:
        return False
    return True


async def unsubscribe(conn: Connection, channel: str) -> None:
    sub = conn.subs.pop(channel, None)
    if sub is None:
        return
    conn.server.part(conn, channel)
    conn.server.edge.hub.unsubscribe(conn.sub, [channel])
    await _forget(conn, sub)


async def _forget(conn: Connection, sub: Subscription) -> None:
    server, app = conn.server, conn.app
    try:
        await server.cluster.count(app.id, sub.channel, -1)
        if sub.kind == "presence":
            gone = await server.cluster.leave(app.id, sub.channel, conn.socket_id)
            if gone is not None:
                await _publish(conn, BusMessage(
                    app.id, sub.channel, "pusher_internal:member_removed",
                    codec.dumps_str({"user_id": gone})))
    except (RedisError, OSError) as exc:
        log.warning("could not record leaving %s: %r", sub.channel, exc)


async def client_event(conn: Connection, name: str, channel: Any, data: Any) -> bool:
    sub = conn.subs.get(channel) if isinstance(channel, str) else None
    if sub is None or sub.kind == "public":
        await conn.send(protocol.error(
            None, "client events need a subscribed private or presence channel"))
        return False
    tiers = conn.server.edge.tiers
    tier_allows = sub.tier is None or (sub.tier in tiers and tiers[sub.tier].client_events)
    if not (conn.app.client_events and tier_allows):
        await conn.send(protocol.error(None, "client events are not enabled for this channel"))
        return False
    if len(name) > protocol.MAX_EVENT_NAME:
        await conn.send(protocol.error(None, "event name too long"))
        return False
    if not conn.client_events.take():
        await conn.send(protocol.error(protocol.CLIENT_EVENT_RATE_LIMIT,
                                       "Client event rejected due to rate limit"))
        return False
    await _publish(conn, BusMessage(conn.app.id, sub.channel, name, data, skip=conn.socket_id,
                                    user_id=sub.user_id if sub.kind == "presence" else None))
    return True


async def _publish(conn: Connection, message: BusMessage) -> None:
    try:
        await conn.server.cluster.publish(message)
    except (RedisError, OSError) as exc:
        log.warning("Pusher bus unavailable, event %s dropped: %r", message.event, exc)


async def _cleanup(conn: Connection) -> None:
    server, edge = conn.server, conn.server.edge
    server.remove(conn)
    subs = list(conn.subs.values())
    conn.subs.clear()
    for sub in subs:
        server.part(conn, sub.channel)
    await release(edge, conn.sub)
    for sub in subs:
        await _forget(conn, sub)


# -- server → client ----------------------------------------------------------

async def _send_loop(conn: Connection) -> None:
    server, sub = conn.server, conn.sub
    tick = max(0.2, min(5.0, server.activity_timeout / 4))
    next_check = time.monotonic() + tick
    while True:
        item = await next_item(sub.queue, tick)
        if item is TIMEOUT:
            item = None
        now = time.monotonic()
        if now >= next_check:
            next_check = now + tick
            if await _stale(conn, now):
                return
        if item is None:
            continue
        if item is CLOSE:
            reason = {protocol.RECONNECT: "Server is shutting down: reconnect",
                      protocol.UNAUTHORIZED: "API key revoked"}.get(sub.close_code, "closing")
            with contextlib.suppress(RuntimeError, WebSocketDisconnect, OSError):
                await conn.ws.close(sub.close_code, reason)
            return
        async with sub.lock:
            if isinstance(item, str):
                await conn.send(item)
            elif isinstance(item, Entry):
                for ch in item.channels:
                    if ch in sub.channels:
                        frame = ('{"event":"delta","channel":' + codec.dumps_str(ch)
                                 + ',"data":' + item.pusher_data() + "}")
                        await conn.send(frame)
            elif item is RESET:
                await _reset(conn)


async def _stale(conn: Connection, now: float) -> bool:
    """Ping a silent client; close one that did not answer with 4201."""
    server = conn.server
    if conn.pinged_at is None:
        if now - conn.last_seen >= server.activity_timeout:
            conn.pinged_at = now
            await conn.send(PING)
        return False
    if now - conn.pinged_at < server.pong_timeout:
        return False
    with contextlib.suppress(RuntimeError, WebSocketDisconnect, OSError):
        await conn.ws.close(protocol.PONG_NOT_RECEIVED, "Pong reply not received")
    return True


async def _reset(conn: Connection) -> None:
    edge = conn.server.edge
    cursor = edge.feed.cursor().encode()
    for ch in sorted(conn.sub.channels):
        await conn.send(protocol.event("reset", {
            "reason": "client too slow: deltas were dropped", "cursor": cursor}, ch))
        for snap in await edge.snapshots.for_channel(ch):
            await conn.send(protocol.event("snapshot", snap, ch))
