"""REST under ``/v1``: JSON, errors with stable codes, ``X-Cache`` and ETags on snapshots."""

from __future__ import annotations

import re

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from tables.records import SPORTS
from web.errors import ApiError, error_response
from web.snapshots import StoresUnavailable

_MATCH_ID_RE = re.compile(r"^[a-z]{1,32}-[a-z0-9]{1,32}-[A-Za-z0-9_-]{1,64}$")


async def sports(request: Request) -> Response:
    return JSONResponse({"data": [{"id": s} for s in SPORTS]})


async def match(request: Request) -> Response:
    edge = request.app.state.edge
    match_id = request.path_params["match_id"]
    if not _MATCH_ID_RE.match(match_id):
        raise ApiError(400, "bad_parameter", "id: expected {sport}-{provider}-{provider_id}", param="id")
    try:
        data, cache = await edge.snapshots.get(match_id)
    except StoresUnavailable as exc:
        return error_response(503, "unavailable", str(exc), headers={"Retry-After": "5"})
    if data is None:
        return error_response(404, "not_found", f"no match {match_id}", headers={"X-Cache": cache})
    seq = _seq_of(data)
    etag = f'W/"{match_id}:{seq}"'
    headers = {"X-Cache": cache, "ETag": etag, "Cache-Control": "no-cache"}
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    return Response(b'{"data":' + data + b"}", media_type="application/json", headers=headers)


def _seq_of(data: bytes) -> int:
    m = re.search(rb'"seq":(\d+)', data)
    return int(m.group(1)) if m else 0


async def usage(request: Request) -> Response:
    """The caller's own usage by minute (``?minutes=`` back, default 60, at most 10,080)."""
    import datetime as dt

    principal = request.scope.get("state", {}).get("principal")
    if principal is None or principal.key_id is None:
        return error_response(401, "key_required", "usage is reported per API key; send one")
    raw = request.query_params.get("minutes", "60")
    if not raw.isdigit() or not 1 <= int(raw) <= 10_080:
        raise ApiError(400, "bad_parameter", "minutes: a whole number from 1 to 10080", param="minutes")
    edge = request.app.state.edge
    await edge.usage.flush()
    since = dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=int(raw))
    rows = await edge.usage.read(principal.key_id, since)
    return JSONResponse({"data": {"key_id": principal.key_id, "tier": principal.tier.name,
                                  "minutes": rows}})


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})
