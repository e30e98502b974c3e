"""The OpenAPI 3.1 document of the REST API (``/openapi.json``) and its docs page (``/docs``).

Response bodies reuse the partner schemas of :mod:`tables.schema_check`: each
shipped schema becomes a component (``Match``, ``Delta``) and its ``$defs``
components of their own (``Match.team``, ``Delta.operation``, ...), so every
``$ref`` stays a plain pointer into this document.
"""

from __future__ import annotations

import copy
from functools import cache
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import FileResponse, Response

from tables import codec
from tables.records import DELTA_KINDS, PHASES, SPORTS
from tables.schema_check import schema
from web import rest

STATIC = Path(__file__).parent / "static"
VERSION = "1.0.0"
EXAMPLE_MATCH = "football-apifootball-1149519"

_ERROR_CODES = {
    400: "A bad parameter: `bad_parameter`, and `param` names it.",
    401: "No usable API key: `key_required`, `malformed_key`, `unknown_key` or `revoked_key`.",
    403: "The key's tier is not offered (`unknown_tier`).",
    404: "No such match (`not_found`).",
    429: "Over the tier's requests per minute (`rate_limited`); `Retry-After` says when to retry.",
    503: "No store can answer (`unavailable`), or API keys cannot be checked (`auth_unavailable`);"
         " `Retry-After` says when to retry.",
}


def _component(kind: str, name: str, out: dict[str, Any]) -> None:
    """Add a shipped record schema as component ``name``, its ``$defs`` as ``name.def``."""
    src = copy.deepcopy(schema(kind))
    defs = src.pop("$defs", {})
    for key in ("$schema", "$id"):
        src.pop(key, None)

    def rewrite(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: (f"#/components/schemas/{name}.{v[len('#/$defs/'):]}"
                        if k == "$ref" and isinstance(v, str) and v.startswith("#/$defs/")
                        else rewrite(v)) for k, v in node.items()}
        if isinstance(node, list):
            return [rewrite(v) for v in node]
        return node

    out[name] = rewrite(src)
    for def_name, sub in defs.items():
        out[f"{name}.{def_name}"] = rewrite(sub)


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _header(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/headers/{name}"}


def _json(schema_: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema_}}


def _error(status: int, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"description": _ERROR_CODES[status], "content": _json(_ref("Error"))}
    if headers:
        out["headers"] = headers
    return out


_RATE = {"X-RateLimit-Limit": _header("X-RateLimit-Limit"),
         "X-RateLimit-Remaining": _header("X-RateLimit-Remaining"),
         "X-RateLimit-Reset": _header("X-RateLimit-Reset")}


def _responses(ok: dict[str, Any], *errors: int) -> dict[str, Any]:
    """``ok`` (status → response) plus the errors of the route and those every /v1 route has."""
    out: dict[str, Any] = {}
    for status, resp in ok.items():
        resp = dict(resp)
        resp["headers"] = {**resp.get("headers", {}), **_RATE}
        out[str(status)] = resp
    for status in sorted({*errors, 401, 403, 429, 503}):
        if status == 429:
            out["429"] = _error(429, {**_RATE, "Retry-After": _header("Retry-After")})
        elif status == 503:
            out["503"] = _error(503, {"Retry-After": _header("Retry-After")})
        elif status == 401:
            out["401"] = _error(401, {"WWW-Authenticate": {"schema": {"type": "string"}}})
        else:
            out[str(status)] = _error(status, dict(_RATE) if status in (400, 404) else None)
    return out


def _page(item: str, next_schema: dict[str, Any], desc: str) -> dict[str, Any]:
    return {"type": "object", "required": ["data", "next"], "additionalProperties": False,
            "properties": {"data": {"type": "array", "items": _ref(item)},
                           "next": {**next_schema, "description": desc}}}


def _query(name: str, schema_: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema_,
            "description": description}


_SPORT = {"type": "string", "enum": list(SPORTS)}
_MATCH_ID = {"name": "match_id", "in": "path", "required": True,
             "schema": {"type": "string", "pattern": rest.MATCH_ID_PATTERN},
             "example": EXAMPLE_MATCH,
             "description": "`{sport}-{provider}-{provider_id}`, e.g. `football-apifootball-1149519`."}


def _limit(default: int, maximum: int) -> dict[str, Any]:
    return _query("limit", {"type": "integer", "minimum": 1, "maximum": maximum, "default": default},
                  f"Items per page, 1 to {maximum} (default {default}).")


@cache
def document() -> dict[str, Any]:
    schemas: dict[str, Any] = {}
    _component("match", "Match", schemas)
    _component("delta", "Delta", schemas)
    schemas["Error"] = {
        "type": "object", "required": ["error"], "additionalProperties": False,
        "properties": {"error": {
            "type": "object", "required": ["code", "message"], "additionalProperties": False,
            "properties": {
                "code": {"type": "string", "description": "Stable; what a client branches on."},
                "message": {"type": "string", "description": "For people; may change."},
                "param": {"type": "string", "description": "The bad parameter (400 only)."},
            }}},
    }
    schemas["Sport"] = {"type": "object", "required": ["id"], "additionalProperties": False,
                        "properties": {"id": _SPORT}}
    text_or_null = {"type": ["string", "null"]}
    schemas["League"] = {
        "type": "object", "additionalProperties": False,
        "required": ["sport", "id", "name", "country", "season", "matches", "live"],
        "properties": {
            "sport": _SPORT, "id": {"type": "string"}, "name": text_or_null,
            "country": text_or_null, "season": text_or_null,
            "matches": {"type": "integer", "minimum": 1, "description": "Matches on record."},
            "live": {"type": "integer", "minimum": 0, "description": "Of those, in play now."},
        },
    }
    schemas["UsageMinute"] = {
        "type": "object", "additionalProperties": False,
        "required": ["minute", "requests", "bytes", "stream_minutes"],
        "properties": {"minute": {"type": "string", "format": "date-time"},
                       "requests": {"type": "integer", "minimum": 0},
                       "bytes": {"type": "integer", "minimum": 0},
                       "stream_minutes": {"type": "number", "minimum": 0}},
    }
    data_of = {
        "Sports": {"type": "array", "items": _ref("Sport")},
        "Leagues": {"type": "array", "items": _ref("League")},
        "MatchData": _ref("Match"),
        "Usage": {"type": "object", "required": ["key_id", "tier", "minutes"],
                  "additionalProperties": False,
                  "properties": {"key_id": {"type": "string"}, "tier": {"type": "string"},
                                 "minutes": {"type": "array", "items": _ref("UsageMinute")}}},
    }
    for name, data in data_of.items():
        schemas[name] = {"type": "object", "required": ["data"], "additionalProperties": False,
                         "properties": {"data": data}}
    schemas["MatchPage"] = _page("Match", {"type": ["string", "null"]},
                                 "Pass as `cursor` for the next page; null on the last page.")
    schemas["DeltaPage"] = _page("Delta", {"type": ["integer", "null"], "minimum": 1},
                                 "Pass as `since_seq` for the next page; null on the last page.")

    digits = {"type": "string", "pattern": "^[0-9]+$"}
    headers = {
        "X-Cache": {"description": "Where the answer came from: `hit` Redis, `miss` Postgres "
                                   "(Redis could not answer), `bypass` Postgres (Redis is down).",
                    "required": True, "schema": {"type": "string", "enum": ["hit", "miss", "bypass"]}},
        "ETag": {"description": "Weak validator of the snapshot (`W/\"{id}:{seq}\"`); send it back "
                                "in `If-None-Match` for a 304.",
                 "required": True, "schema": {"type": "string"}},
        "X-RateLimit-Limit": {"description": "Requests per minute of the caller's tier.",
                              "schema": digits},
        "X-RateLimit-Remaining": {"description": "Requests left in the current window.",
                                  "schema": digits},
        "X-RateLimit-Reset": {"description": "Seconds until the window frees a request.",
                              "schema": digits},
        "Retry-After": {"description": "Seconds to wait before retrying.", "required": True,
                        "schema": digits},
    }
    x_cache = {"X-Cache": _header("X-Cache")}
    anyone = [{}, {"bearer": []}, {"apiKeyHeader": []}, {"apiKeyQuery": []}]

    paths: dict[str, Any] = {
        "/v1/sports": {"get": {
            "operationId": "listSports", "summary": "The sports served",
            "responses": _responses({200: {"description": "Every sport.",
                                           "content": _json(_ref("Sports"))}}),
        }},
        "/v1/leagues": {"get": {
            "operationId": "listLeagues", "summary": "Leagues with matches on record",
            "description": "From Postgres: every league with at least one match, with the name, "
                           "country and season of its latest match.",
            "parameters": [_query("sport", _SPORT, "Only this sport.")],
            "responses": _responses({200: {"description": "Leagues by sport then id.",
                                           "content": _json(_ref("Leagues"))}}, 400),
        }},
        "/v1/matches": {"get": {
            "operationId": "listMatches", "summary": "Match snapshots, filtered and paginated",
            "description": (
                "Ordered by start time, then id. Redis answers when one of its indexes covers "
                "the query (in-play phases from the live sets; `date`, `league` or `sport` from "
                "the sorted sets) and holds every snapshot of the page; else Postgres. Follow "
                "`next` with the same filters until it is null: every match appears once."),
            "parameters": [
                _query("sport", _SPORT, "Only this sport."),
                _query("league", {"type": "string", "pattern": rest.LEAGUE_PATTERN},
                       "Only this league (its provider id, e.g. `39`); needs `sport`."),
                _query("phase", {"type": "string", "enum": list(PHASES)}, "Only this phase."),
                _query("date", {"type": "string", "format": "date",
                                "pattern": r"^\d{4}-\d{2}-\d{2}$"},
                       "Only matches starting on this UTC day (YYYY-MM-DD)."),
                _limit(*rest.MATCHES_LIMIT),
                _query("cursor", {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,400}$"},
                       "The `next` of the previous page (opaque; only valid with the same "
                       "filters)."),
            ],
            "responses": _responses({200: {"description": "A page of matches.", "headers": x_cache,
                                           "content": _json(_ref("MatchPage"))}}, 400),
        }},
        "/v1/matches/{match_id}": {"get": {
            "operationId": "getMatch", "summary": "The current snapshot of one match",
            "parameters": [
                _MATCH_ID,
                {"name": "If-None-Match", "in": "header", "required": False,
                 "schema": {"type": "string"}, "description": "An ETag from an earlier answer."},
            ],
            "responses": _responses({
                200: {"description": "The snapshot.",
                      "headers": {**x_cache, "ETag": _header("ETag"),
                                  "Cache-Control": {"schema": {"type": "string"}}},
                      "content": _json(_ref("MatchData"))},
                304: {"description": "Unchanged since the ETag sent.",
                      "headers": {**x_cache, "ETag": _header("ETag")}},
            }, 400, 404),
        }},
        "/v1/matches/{match_id}/deltas": {"get": {
            "operationId": "listDeltas", "summary": "The history of one match",
            "description": (
                "Deltas in `seq` order from Postgres, those after `since_seq`, as far back as the "
                "caller's tier reaches (`history_hours`). Follow `next` as `since_seq`."),
            "parameters": [
                _MATCH_ID,
                _query("since_seq", {"type": "integer", "minimum": 0, "maximum": rest.MAX_SEQ,
                                     "default": 0}, "Only deltas with a higher seq."),
                _limit(*rest.DELTAS_LIMIT),
            ],
            "responses": _responses({200: {"description": "A page of deltas.",
                                           "content": _json(_ref("DeltaPage"))}}, 400, 404),
        }},
        "/v1/usage": {"get": {
            "operationId": "getUsage", "summary": "The caller's own usage by minute",
            "security": anyone[1:],
            "parameters": [_query("minutes", {"type": "integer", "minimum": 1, "maximum": 10_080,
                                              "default": 60}, "Minutes back (1 to 10,080).")],
            "responses": _responses({200: {"description": "Requests, bytes and stream minutes.",
                                           "content": _json(_ref("Usage"))}}, 400),
        }},
    }
    return {
        "openapi": "3.1.0",
        "jsonSchemaDialect": "https://json-schema.org/draft/2020-12/schema",
        "info": {
            "title": "BTS Guru REST API",
            "version": VERSION,
            "description": (
                "Live scores from one model shared by every sport. Deltas stream over SSE "
                "(`/v1/stream`), WebSocket (`/v1/ws`) and the Pusher protocol; see "
                "docs/protocols.md. Errors are JSON: `{\"error\": {\"code\", \"message\", "
                "\"param\"}}` with a stable code. Delta kinds: " + ", ".join(DELTA_KINDS) + "."),
        },
        "servers": [{"url": "/"}],
        "security": anyone,
        "paths": paths,
        "components": {
            "schemas": schemas,
            "headers": headers,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer",
                           "description": "`Authorization: Bearer <API key>`."},
                "apiKeyHeader": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
                "apiKeyQuery": {"type": "apiKey", "in": "query", "name": "api_key",
                                "description": "For clients that cannot set headers."},
            },
        },
    }


async def openapi_json(request: Request) -> Response:
    return Response(codec.dumps(document()), media_type="application/json")


async def docs(request: Request) -> FileResponse:
    return FileResponse(STATIC / "docs.html")
