"""The Pusher Channels protocol, version 7: frames, error codes and signatures.

Every frame is a JSON object ``{"event": ..., "channel": ..., "data": ...}``.
Events the server originates (``pusher:connection_established``,
``pusher_internal:*``, ``delta`` and published events) carry ``data`` as a
JSON-encoded string, as pusher-js expects; ``pusher:error``, ``pusher:pong`` and
``pusher:subscription_error`` carry an object, as Pusher's own service sends them.

Close codes follow the protocol's ranges: 4000-4099 the client must not
reconnect, 4100-4199 it reconnects after a back-off, 4200-4299 it reconnects at
once, 4300-4399 are errors that leave the connection open.

Signatures are lowercase hex HMAC-SHA256 with the app secret:

- channel auth: ``"{key}:" + hmac("{socket_id}:{channel}[:{channel_data}]")``
- HTTP API: ``hmac("{METHOD}\\n{path}\\n{sorted query}")``
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from typing import Any

from tables import codec

#: Protocol versions whose frames are the ones spoken here.
PROTOCOL_VERSIONS = range(5, 8)

SSL_ONLY = 4000
APP_NOT_FOUND = 4001
APP_DISABLED = 4003
OVER_QUOTA = 4004
PATH_NOT_FOUND = 4005
INVALID_VERSION = 4006
UNSUPPORTED_PROTOCOL = 4007
NO_PROTOCOL = 4008
UNAUTHORIZED = 4009
OVER_CAPACITY = 4100
RECONNECT = 4200
PONG_NOT_RECEIVED = 4201
CLOSED_INACTIVE = 4202
CLIENT_EVENT_RATE_LIMIT = 4301

MAX_CHANNEL_LENGTH = 164
MAX_EVENT_NAME = 200
_CHANNEL_RE = re.compile(r"^[A-Za-z0-9_\-=@,.;]+$")
_SOCKET_ID_RE = re.compile(r"^\d{1,20}\.\d{1,20}$")


class PusherError(Exception):
    """A protocol error: ``code`` is one of the constants above (None: no code)."""

    def __init__(self, code: int | None, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def channel_kind(channel: str) -> str:
    """``public``, ``private`` or ``presence``: the tier rules' channel kinds."""
    if channel.startswith("presence-"):
        return "presence"
    if channel.startswith("private-"):
        return "private"
    return "public"


def valid_channel(channel: Any) -> bool:
    return (isinstance(channel, str) and 0 < len(channel) <= MAX_CHANNEL_LENGTH
            and _CHANNEL_RE.match(channel) is not None)


def valid_socket_id(socket_id: Any) -> bool:
    return isinstance(socket_id, str) and _SOCKET_ID_RE.match(socket_id) is not None


def new_socket_id() -> str:
    return f"{secrets.randbelow(10**9)}.{secrets.randbelow(10**9)}"


def encode(event: str, data: Any, channel: str | None = None, user_id: str | None = None) -> str:
    """A frame; ``data`` goes on the wire as it is given (a str stays a JSON string)."""
    frame: dict[str, Any] = {"event": event}
    if channel is not None:
        frame["channel"] = channel
    frame["data"] = data
    if user_id is not None:
        frame["user_id"] = user_id
    return codec.dumps_str(frame)


def event(name: str, payload: Any, channel: str | None = None) -> str:
    """A frame whose ``data`` is ``payload`` JSON-encoded into a string."""
    return encode(name, codec.dumps_str(payload), channel)


def error(code: int | None, message: str) -> str:
    return encode("pusher:error", {"code": code, "message": message})


def subscription_error(channel: str, kind: str, message: str, status: int) -> str:
    return encode("pusher:subscription_error", {"type": kind, "error": message, "status": status},
                  channel)


def sign(secret: str, text: str) -> str:
    return hmac.new(secret.encode(), text.encode(), hashlib.sha256).hexdigest()


def channel_auth(key: str, secret: str, socket_id: str, channel: str,
                 channel_data: str | None = None) -> str:
    text = f"{socket_id}:{channel}"
    if channel_data is not None:
        text += f":{channel_data}"
    return f"{key}:{sign(secret, text)}"


def check_channel_auth(key: str, secret: str, socket_id: str, channel: str, auth: Any,
                       channel_data: str | None = None) -> bool:
    if not isinstance(auth, str):
        return False
    expected = channel_auth(key, secret, socket_id, channel, channel_data)
    return hmac.compare_digest(auth.encode(), expected.encode())


def string_to_sign(method: str, path: str, params: dict[str, str]) -> str:
    query = "&".join(f"{k}={params[k]}" for k in sorted(params) if k != "auth_signature")
    return f"{method.upper()}\n{path}\n{query}"


def body_md5(body: bytes) -> str:
    return hashlib.md5(body, usedforsecurity=False).hexdigest()
