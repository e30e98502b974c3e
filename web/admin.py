"""``/admin``: the operators' page, behind ``ADMIN_KEY``.

The key is sent as ``X-Admin-Key``, ``Authorization: Bearer …`` or (for the page
itself, opened in a browser) ``?key=``. Without ``ADMIN_KEY`` configured the page
does not exist (404); a missing or wrong key is 401.

- ``GET /admin``: the page (``static/admin.html``); it polls the JSON below every 2 s.
- ``GET /admin/api/status``: the same document as ``bts-guru status --json`` plus
  usage analytics: requests, bytes and stream minutes per key and per tier over the
  last ``hours`` (default 24) from Postgres ``key_usage``, the most-watched matches
  (the edges' watch counts in Redis) and channels (subscribers per channel in the
  edges' heartbeats).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from pathlib import Path
from typing import Any

import asyncpg
from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Route

from tables.migrate import quote_ident
from tables.redis_keys import RedisKeys
from web.errors import error_response

log = logging.getLogger(__name__)
PAGE = Path(__file__).parent / "static" / "admin.html"


def _given_key(request: Request) -> str:
    header = request.headers.get("x-admin-key")
    if header:
        return header
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    return request.query_params.get("key", "")


def refused(request: Request) -> Response | None:
    """The error response when the request may not see the admin page, else None."""
    expected = request.app.state.edge.settings.admin_key
    if not expected:
        return error_response(404, "not_found", "the admin page is disabled (no ADMIN_KEY)")
    if not hmac.compare_digest(_given_key(request).encode(), expected.encode()):
        return error_response(401, "admin_key_required", "a valid admin key is required",
                              headers={"WWW-Authenticate": "Bearer"})
    return None


async def page(request: Request) -> Response:
    return refused(request) or FileResponse(PAGE, headers={"Cache-Control": "no-store"})


async def usage(edge: Any, hours: int) -> dict[str, Any]:
    schema = quote_ident(edge.settings.db_schema)
    per_key = (
        f"SELECT u.key_id, coalesce(k.name, '') AS name, coalesce(k.tier, 'unknown') AS tier,"
        " sum(u.requests)::bigint AS requests, sum(u.bytes)::bigint AS bytes,"
        " sum(u.stream_seconds) / 60 AS stream_minutes"
        f" FROM {schema}.key_usage u LEFT JOIN {schema}.api_keys k ON k.id = u.key_id"
        " WHERE u.minute >= now() - make_interval(hours => $1)"
        " GROUP BY 1, 2, 3 ORDER BY requests DESC, stream_minutes DESC LIMIT 100")
    async with edge.pool.acquire(timeout=5) as conn:
        rows = await conn.fetch(per_key, hours, timeout=5)
    keys = [{"key_id": r["key_id"], "name": r["name"], "tier": r["tier"],
             "requests": r["requests"], "bytes": r["bytes"],
             "stream_minutes": round(float(r["stream_minutes"]), 2)} for r in rows]
    tiers: dict[str, dict[str, Any]] = {}
    for k in keys:
        t = tiers.setdefault(k["tier"], {"tier": k["tier"], "keys": 0, "requests": 0, "bytes": 0,
                                         "stream_minutes": 0.0})
        t["keys"] += 1
        t["requests"] += k["requests"]
        t["bytes"] += k["bytes"]
        t["stream_minutes"] = round(t["stream_minutes"] + k["stream_minutes"], 2)
    return {"hours": hours, "keys": keys,
            "tiers": sorted(tiers.values(), key=lambda t: -t["requests"])}


async def watched(edge: Any) -> list[dict[str, Any]]:
    keys = RedisKeys(edge.settings.redis_prefix)
    counts: dict[str, int] = {}
    async for key in edge.redis.scan_iter(match=keys.watch_pattern(), count=100):
        for mid, n in (await edge.redis.hgetall(key)).items():
            counts[mid.decode()] = counts.get(mid.decode(), 0) + int(n)
    return [{"match_id": m, "watchers": n}
            for m, n in sorted(counts.items(), key=lambda x: -x[1])[:20]]


def channels(status: dict[str, Any]) -> list[dict[str, Any]]:
    counts: dict[str, int] = {}
    for edge in status.get("edges", []):
        for ch, n in (edge.get("channels") or {}).items():
            counts[ch] = counts.get(ch, 0) + int(n)
    return [{"channel": c, "subscribers": n}
            for c, n in sorted(counts.items(), key=lambda x: -x[1])[:20]]


async def api_status(request: Request) -> Response:
    denied = refused(request)
    if denied is not None:
        return denied
    from pipeline.status import collect

    edge = request.app.state.edge
    raw = request.query_params.get("hours", "24")
    hours = int(raw) if raw.isdigit() and 1 <= int(raw) <= 24 * 31 else 24
    doc = await collect(edge.settings, redis=edge.redis, broker=False)
    analytics: dict[str, Any] = {}
    try:
        analytics["usage"] = await usage(edge, hours)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, asyncio.TimeoutError) as exc:
        analytics["usage"] = {"error": f"postgres unavailable: {exc!r}"}
    try:
        analytics["matches"] = await watched(edge)
    except (RedisError, OSError) as exc:
        analytics["matches"] = {"error": f"redis unavailable: {exc!r}"}
    analytics["channels"] = channels(doc)
    doc["analytics"] = analytics
    return JSONResponse(doc, headers={"Cache-Control": "no-store"})


def routes() -> list[BaseRoute]:
    return [Route("/admin", page), Route("/admin/api/status", api_status)]
