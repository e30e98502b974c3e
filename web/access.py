"""Access control for REST: authenticate, rate-limit, add the limit headers, count usage.

A pure ASGI middleware (no per-request Starlette objects), so its cost stays
small next to the route it guards. Streams (SSE, WebSocket, Pusher) check the
same things in their own handshakes.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import parse_qsl

from redis.exceptions import RedisError

from tables import codec
from web.auth import AuthError, Principal, key_from
from web.limits import RateDecision

log = logging.getLogger(__name__)

GUARDED_PREFIX = "/v1/"
STREAM_PATHS = frozenset({"/v1/stream", "/v1/ws"})


def error_body(code: str, message: str) -> bytes:
    return codec.dumps({"error": {"code": code, "message": message}})


async def send_json(send: Any, status: int, body: bytes, headers: dict[str, str]) -> None:
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


def scope_headers(scope: dict[str, Any]) -> dict[str, str]:
    return {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}


def scope_query(scope: dict[str, Any]) -> dict[str, str]:
    qs = scope.get("query_string", b"")
    if b"api_key" not in qs:
        return {}
    return dict(parse_qsl(qs.decode("latin-1")))


def client_addr(scope: dict[str, Any]) -> str:
    client = scope.get("client")
    return client[0] if client else "unknown"


async def authenticate_scope(edge: Any, scope: dict[str, Any]) -> Principal:
    headers = scope_headers(scope)
    return await edge.auth.authenticate(key_from(headers, scope_query(scope)), client_addr(scope))


async def rate(edge: Any, principal: Principal) -> RateDecision:
    limit = principal.tier.rest_per_minute
    try:
        return await edge.limits.hit(principal.client, limit)
    except (RedisError, OSError) as exc:
        log.warning("rate limiter unavailable, letting the request through: %r", exc)
        return RateDecision(True, limit, limit, 0.0, 0.0)


class AccessMiddleware:
    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or not path.startswith(GUARDED_PREFIX) or path in STREAM_PATHS:
            await self.app(scope, receive, send)
            return
        edge = scope["app"].state.edge
        try:
            principal = await authenticate_scope(edge, scope)
        except AuthError as exc:
            await send_json(send, exc.status, error_body(exc.code, exc.message),
                            {"WWW-Authenticate": "Bearer"} if exc.status == 401 else {})
            return
        decision = await rate(edge, principal)
        limit_headers = decision.headers()
        if not decision.allowed:
            edge.usage.request(principal.key_id, 0)
            await send_json(send, 429, error_body("rate_limited", "too many requests"), limit_headers)
            return
        scope.setdefault("state", {})["principal"] = principal
        extra = [(k.lower().encode(), v.encode()) for k, v in limit_headers.items()]
        sent = 0

        async def wrapped(message: dict[str, Any]) -> None:
            nonlocal sent
            if message["type"] == "http.response.start":
                message["headers"] = list(message.get("headers", [])) + extra
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, wrapped)
        finally:
            edge.usage.request(principal.key_id, sent)
