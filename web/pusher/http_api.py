"""Pusher's HTTP API and the channel auth endpoints.

HTTP API (signed as Pusher signs it, so Pusher's server libraries and Laravel's
``pusher`` broadcaster work unchanged):

- ``POST /apps/{app_id}/events`` ``{"name", "data", "channels" | "channel", "socket_id"?}``
- ``POST /apps/{app_id}/batch_events`` ``{"batch": [{"name", "data", "channel", "socket_id"?}]}``
- ``GET /apps/{app_id}/channels`` (``filter_by_prefix``, ``info=user_count``)
- ``GET /apps/{app_id}/channels/{name}`` (``info=subscription_count,user_count``)
- ``GET /apps/{app_id}/channels/{name}/users`` (presence channels)

Every request carries ``auth_key``, ``auth_timestamp`` (within 600 s of the edge's
clock), ``auth_version=1.0``, ``body_md5`` (with a body) and ``auth_signature``:
HMAC-SHA256 of ``"METHOD\\nPATH\\nquery"`` where the query is every other parameter,
keys lowercased, sorted, ``key=value`` joined by ``&``. A missing or bad signature
gets 401. Published events reach the channel's subscribers on every edge.

Auth endpoints ``POST /pusher/auth`` and ``POST /broadcasting/auth`` (pusher-js's
and Laravel Echo's defaults): form or JSON ``socket_id``, ``channel_name``; the
caller's API key (``Authorization: Bearer``, ``X-API-Key`` or ``api_key``) must
exist and its tier must allow the channel's kind. The answer is ``{"auth":
"key:signature", "channel_data": ...}`` where channel_data names the key:
``{"user_id": key id, "user_info": {"name": key name, "tier": tier}}``. With
several apps, ``app_key`` (form, JSON or query) picks one; the first is the default.
"""

from __future__ import annotations

import hmac
import logging
import time
from typing import Any
from urllib.parse import parse_qsl

from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from tables import codec
from tables.channels import ChannelError, validate
from web.access import authenticate_scope, rate
from web.auth import AuthError
from web.errors import error_response
from web.pusher import protocol
from web.pusher.apps import App
from web.pusher.presence import BusMessage
from web.pusher.server import PusherServer

log = logging.getLogger(__name__)

MAX_SKEW = 600
MAX_BODY = 64 * 1024
MAX_DATA = 64 * 1024
MAX_CHANNELS_PER_EVENT = 100
MAX_BATCH = 10


class HttpApiError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    def response(self) -> Response:
        return error_response(self.status, self.code, self.message)


def _server(request: Request) -> PusherServer:
    server: PusherServer = request.app.state.pusher
    return server


async def verified(request: Request) -> tuple[App, bytes]:
    """The app a signed request is for and its body; raises :class:`HttpApiError`."""
    server = _server(request)
    app = server.apps.by_id.get(request.path_params["app_id"])
    if app is None:
        raise HttpApiError(404, "app_not_found", "unknown app id")
    body = await request.body()
    if len(body) > MAX_BODY:
        raise HttpApiError(413, "too_large", f"bodies are limited to {MAX_BODY} bytes")
    params = {k.lower(): v for k, v in parse_qsl(request.url.query, keep_blank_values=True)}
    signature = params.get("auth_signature")
    if not signature or params.get("auth_key") != app.key:
        raise HttpApiError(401, "unauthorized", "auth_key and auth_signature are required")
    if params.get("auth_version") != "1.0":
        raise HttpApiError(401, "unauthorized", "auth_version must be 1.0")
    try:
        stamp = int(params.get("auth_timestamp", ""))
    except ValueError:
        raise HttpApiError(401, "unauthorized", "auth_timestamp is required") from None
    if abs(time.time() - stamp) > MAX_SKEW:
        raise HttpApiError(401, "unauthorized", f"auth_timestamp is more than {MAX_SKEW} s off")
    if body and params.get("body_md5") != protocol.body_md5(body):
        raise HttpApiError(401, "unauthorized", "body_md5 does not match the body")
    expected = protocol.sign(app.secret, protocol.string_to_sign(request.method, request.url.path,
                                                                  params))
    if not hmac.compare_digest(signature.encode(), expected.encode()):
        raise HttpApiError(401, "unauthorized", "invalid auth_signature")
    return app, body


def _json(body: bytes) -> dict[str, Any]:
    try:
        data = codec.loads(body)
    except codec.DecodeError:
        raise HttpApiError(400, "bad_json", "the body is not valid JSON") from None
    if not isinstance(data, dict):
        raise HttpApiError(400, "bad_request", "the body must be a JSON object")
    return data


def _event(spec: Any, app: App) -> list[BusMessage]:
    if not isinstance(spec, dict):
        raise HttpApiError(400, "bad_request", "an event must be a JSON object")
    name = spec.get("name")
    if not isinstance(name, str) or not 0 < len(name) <= protocol.MAX_EVENT_NAME:
        raise HttpApiError(400, "bad_request", "name must be a string of 1-200 characters")
    data = spec.get("data")
    if not isinstance(data, str):
        data = codec.dumps_str(data)
    if len(data) > MAX_DATA:
        raise HttpApiError(413, "too_large", f"data is limited to {MAX_DATA} bytes")
    channels = spec.get("channels")
    if channels is None and "channel" in spec:
        channels = [spec["channel"]]
    if (not isinstance(channels, list) or not channels
            or len(channels) > MAX_CHANNELS_PER_EVENT
            or not all(protocol.valid_channel(c) for c in channels)):
        raise HttpApiError(400, "bad_request",
                           f"channels must list 1-{MAX_CHANNELS_PER_EVENT} valid channel names")
    skip = spec.get("socket_id") or ""
    if skip and not protocol.valid_socket_id(skip):
        raise HttpApiError(400, "bad_request", "socket_id is malformed")
    return [BusMessage(app.id, ch, name, data, skip=skip) for ch in dict.fromkeys(channels)]


async def _publish_all(server: PusherServer, messages: list[BusMessage]) -> None:
    try:
        for message in messages:
            await server.cluster.publish(message)
    except (RedisError, OSError) as exc:
        log.warning("Pusher bus unavailable: %r", exc)
        raise HttpApiError(503, "unavailable", "cannot publish right now") from exc


async def events(request: Request) -> Response:
    try:
        app, body = await verified(request)
        await _publish_all(_server(request), _event(_json(body), app))
    except HttpApiError as exc:
        return exc.response()
    return JSONResponse({})


async def batch_events(request: Request) -> Response:
    try:
        app, body = await verified(request)
        batch = _json(body).get("batch")
        if not isinstance(batch, list) or not 0 < len(batch) <= MAX_BATCH:
            raise HttpApiError(400, "bad_request", f"batch must list 1-{MAX_BATCH} events")
        messages = [m for spec in batch for m in _event(spec, app)]
        await _publish_all(_server(request), messages)
    except HttpApiError as exc:
        return exc.response()
    return JSONResponse({"batch": [{} for _ in batch]})


def _info(request: Request) -> set[str]:
    return {p.strip() for p in request.query_params.get("info", "").split(",") if p.strip()}


async def channels(request: Request) -> Response:
    try:
        app, _ = await verified(request)
        prefix = request.query_params.get("filter_by_prefix", "")
        info = _info(request)
        if "user_count" in info and not prefix.startswith("presence-"):
            raise HttpApiError(400, "bad_request",
                               "info=user_count needs filter_by_prefix=presence-")
        cluster = _server(request).cluster
        occupied = {ch: n for ch, n in (await cluster.channels(app.id)).items()
                    if ch.startswith(prefix)}
        out: dict[str, dict[str, int]] = {}
        for ch in sorted(occupied):
            entry: dict[str, int] = {}
            if "user_count" in info:
                entry["user_count"] = await cluster.user_count(app.id, ch)
            if "subscription_count" in info:
                entry["subscription_count"] = occupied[ch]
            out[ch] = entry
    except HttpApiError as exc:
        return exc.response()
    except (RedisError, OSError):
        return error_response(503, "unavailable", "channel state is unavailable right now")
    return JSONResponse({"channels": out})


async def channel(request: Request) -> Response:
    try:
        app, _ = await verified(request)
        name = request.path_params["name"]
        if not protocol.valid_channel(name):
            raise HttpApiError(400, "bad_request", "invalid channel name")
        info = _info(request)
        if "user_count" in info and not name.startswith("presence-"):
            raise HttpApiError(400, "bad_request", "user_count is for presence channels")
        cluster = _server(request).cluster
        count = (await cluster.channels(app.id)).get(name, 0)
        out: dict[str, Any] = {"occupied": count > 0}
        if "subscription_count" in info:
            out["subscription_count"] = count
        if "user_count" in info:
            out["user_count"] = await cluster.user_count(app.id, name)
    except HttpApiError as exc:
        return exc.response()
    except (RedisError, OSError):
        return error_response(503, "unavailable", "channel state is unavailable right now")
    return JSONResponse(out)


async def channel_users(request: Request) -> Response:
    try:
        app, _ = await verified(request)
        name = request.path_params["name"]
        if not protocol.valid_channel(name) or not name.startswith("presence-"):
            raise HttpApiError(400, "bad_request", "users are listed for presence channels only")
        members = await _server(request).cluster.members(app.id, name)
    except HttpApiError as exc:
        return exc.response()
    except (RedisError, OSError):
        return error_response(503, "unavailable", "presence is unavailable right now")
    return JSONResponse({"users": [{"id": user_id} for user_id in members]})


# -- channel auth -------------------------------------------------------------

async def _auth_fields(request: Request) -> dict[str, str]:
    fields: dict[str, str] = {}
    ctype = request.headers.get("content-type", "")
    body = await request.body()
    if len(body) > MAX_BODY:
        raise HttpApiError(413, "too_large", f"bodies are limited to {MAX_BODY} bytes")
    if "json" in ctype:
        try:
            data = codec.loads(body) if body else {}
        except codec.DecodeError:
            raise HttpApiError(400, "bad_json", "the body is not valid JSON") from None
        if not isinstance(data, dict):
            raise HttpApiError(400, "bad_request", "the body must be a JSON object")
        fields = {k: v for k, v in data.items() if isinstance(v, str)}
    elif body:
        fields = dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
    for name in ("socket_id", "channel_name", "app_key"):
        if name not in fields and name in request.query_params:
            fields[name] = request.query_params[name]
    return fields


async def channel_auth(request: Request) -> Response:
    """Sign a private or presence subscription for the caller's API key."""
    server = _server(request)
    edge = server.edge
    try:
        principal = await authenticate_scope(edge, request.scope)
    except AuthError as exc:
        return error_response(exc.status, exc.code, exc.message)
    if principal.anonymous:
        return error_response(401, "key_required", "an API key is required to authorise channels")
    decision = await rate(edge, principal)
    if not decision.allowed:
        return error_response(429, "rate_limited", "too many requests", headers=decision.headers())
    try:
        fields = await _auth_fields(request)
    except HttpApiError as exc:
        return exc.response()
    socket_id = fields.get("socket_id", "")
    name = fields.get("channel_name", "")
    if not protocol.valid_socket_id(socket_id):
        return error_response(400, "bad_parameter", "socket_id: malformed", param="socket_id")
    if protocol.channel_kind(name) == "public":
        return error_response(400, "bad_parameter", "channel_name: public channels need no auth",
                              param="channel_name")
    try:
        validate(name)
    except ChannelError as exc:
        return error_response(403, "forbidden_channel",
                              f"channel_name: this edge authorises its own channels only "
                              f"({exc.reason})", param="channel_name")
    if not principal.tier.allows_channel(name):
        return error_response(403, "forbidden_channel",
                              f"the {principal.tier.name} tier does not include "
                              f"{protocol.channel_kind(name)} channels")
    app = server.apps.by_key.get(fields.get("app_key", "")) or server.apps.default
    channel_data = codec.dumps_str({"user_id": principal.key_id,
                                    "user_info": {"name": principal.name,
                                                  "tier": principal.tier.name}})
    auth = protocol.channel_auth(app.key, app.secret, socket_id, name, channel_data)
    edge.usage.request(principal.key_id, 0)
    return JSONResponse({"auth": auth, "channel_data": channel_data})
