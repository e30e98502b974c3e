"""Normalisers: one raw fetch in, Match records and typed errors out.

:func:`normalise` is a pure function (no I/O, no clock). One normaliser per sport and
provider turns the items of a match list into :class:`~tables.records.Match` records:
API-Football ``fixtures`` (:mod:`.football`), API-Basketball ``games``
(:mod:`.basketball`) and API-Hockey ``games`` (:mod:`.hockey`).

What a raw fetch becomes:

- a fetch error already reported by the client (``error`` set) or an HTTP status other
  than 200: nothing, and no error;
- a 200 whose envelope has non-empty ``errors``: nothing, and no error (the provider
  refused the request; the client reports that);
- a 200 whose body is not JSON or not an envelope with ``response``, or a sport with no
  normaliser: one :class:`BadPayload`;
- an endpoint that is not a match list (football ``fixtures/events``, ``status``, ...):
  nothing;
- otherwise one Match per ``response[]`` item, and one error per item that cannot be
  read (:class:`UnknownStatus`, :class:`MissingField`, :class:`WrongType`); the other
  items are still normalised.

The body is read with orjson, and with the standard parser where orjson refuses it (NaN,
a lone surrogate); orjson reads an integer beyond 64 bits as a float, so such a score,
minute or count is a :class:`WrongType` (and a record could not carry it anyway).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

import orjson

from pipeline.normalise import basketball, football, hockey
from pipeline.normalise.common import ABSENT, ItemNormaliser, Node, NormaliseResult, Source
from pipeline.normalise.errors import (
    BadPayload,
    MissingField,
    NormaliseError,
    UnknownStatus,
    WrongType,
)
from tables.records import RawFetch

__all__ = [
    "ABSENT", "BadPayload", "MissingField", "NormaliseError", "NormaliseResult", "UnknownStatus",
    "WrongType", "normalise",
]

#: sport → (provider id, match-list endpoints, item normaliser)
NORMALISERS: dict[str, tuple[str, frozenset[str], ItemNormaliser]] = {
    "football": (football.PROVIDER, football.MATCH_ENDPOINTS, football.normalise_item),
    "basketball": (basketball.PROVIDER, basketball.MATCH_ENDPOINTS, basketball.normalise_item),
    "hockey": (hockey.PROVIDER, hockey.MATCH_ENDPOINTS, hockey.normalise_item),
}


def _endpoint(value: Any) -> str:
    if not isinstance(value, str):
        return ""
    path = value.strip().strip("/")
    return path.removeprefix("v3/")


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _failed(errors: Any) -> bool:
    """Whether an envelope's ``errors`` reports a failure (``[]`` and ``{}`` do not)."""
    if isinstance(errors, (list, dict, str)):
        return len(errors) > 0
    return errors is not None and errors is not False


def normalise(raw: RawFetch | Mapping[str, Any]) -> NormaliseResult:
    """Turn one raw fetch into Match records and errors; never raises."""
    result = NormaliseResult()
    if not isinstance(raw, Mapping):
        result.errors.append(BadPayload("raw fetch is not an object"))
        return result
    if raw.get("error") is not None or raw.get("status") != 200:
        return result
    sport, endpoint = _text(raw.get("sport")), _text(raw.get("endpoint"))
    context: dict[str, Any] = {"provider": _text(raw.get("provider")), "sport": sport,
                               "endpoint": endpoint}

    def fail(error: NormaliseError) -> NormaliseResult:
        for key, value in context.items():
            setattr(error, key, value)
        result.errors.append(error)
        return result

    entry = NORMALISERS.get(sport) if sport is not None else None
    if entry is None:
        return fail(BadPayload(f"no normaliser for sport {raw.get('sport')!r}", "sport"))
    provider, match_endpoints, normalise_item = entry
    fetched_at = raw.get("fetched_at")
    if not isinstance(fetched_at, (int, float)) or isinstance(fetched_at, bool) \
            or not math.isfinite(fetched_at):
        return fail(WrongType("expected a Unix timestamp", "fetched_at"))

    body = raw.get("body")
    if isinstance(body, (bytes, bytearray)):
        body = bytes(body).decode("utf-8", "replace")
    if not isinstance(body, str):
        return fail(WrongType("body is not text", "body"))
    try:
        envelope = orjson.loads(body)
    except orjson.JSONDecodeError:
        # What orjson refuses and the standard parser reads (NaN, a lone surrogate, deep
        # nesting), or is not JSON at all: the standard parser decides, with its message.
        try:
            envelope = json.loads(body)
        except (ValueError, RecursionError) as exc:
            return fail(BadPayload(f"body is not JSON: {exc}"))
    if not isinstance(envelope, dict):
        return fail(BadPayload("body is not an API-Sports envelope (not an object)"))
    if _failed(envelope.get("errors")):
        return result
    if "response" not in envelope:
        return fail(BadPayload("body is not an API-Sports envelope (no response)", "response"))
    if _endpoint(endpoint) not in match_endpoints:
        return result
    items = envelope["response"]
    if not isinstance(items, list):
        return fail(WrongType("expected an array of matches", "response"))

    src = Source(provider=provider, sport=sport or "", endpoint=_endpoint(endpoint),
                 fetched_at=float(fetched_at))
    for i, item in enumerate(items):
        path = f"response[{i}]"
        try:
            result.matches.append(normalise_item(Node(item, path), src))
        except NormaliseError as exc:
            fail(exc)
        except (ValueError, TypeError, KeyError, AttributeError, RecursionError) as exc:
            fail(BadPayload(f"unreadable item ({type(exc).__name__}: {exc})", path))
    return result
