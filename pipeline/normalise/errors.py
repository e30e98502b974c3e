"""Errors of the normalise stage.

Every error names the offending place in the body as a path
(``response[3].fixture.status.short``) and becomes one record on
``dead-letters`` through :meth:`NormaliseError.to_dead_letter`::

    NormaliseError          anything that stops a body or an item from becoming a Match
    ├── BadPayload          the body is not JSON or not an API-Sports envelope; unknown sport
    ├── MissingField        a required field is absent or null
    ├── WrongType           a field holds a value of the wrong type
    └── UnknownStatus       a status code the normaliser has no phase for

An error in one ``response[]`` item does not stop the other items.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tables.records import RECORD_VERSION, DeadLetter


class NormaliseError(Exception):
    """Base class: ``reason`` says what is wrong, ``path`` where (empty for the whole body)."""

    def __init__(self, reason: str, path: str = "", *, provider: str | None = None,
                 sport: str | None = None, endpoint: str | None = None) -> None:
        super().__init__(f"{path}: {reason}" if path else reason)
        self.reason = reason
        self.path = path
        self.provider = provider
        self.sport = sport
        self.endpoint = endpoint

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, NormaliseError):
            return NotImplemented
        return (type(self), self.reason, self.path, self.provider, self.sport, self.endpoint) == (
            type(other), other.reason, other.path, other.provider, other.sport, other.endpoint)

    def __hash__(self) -> int:
        return hash((type(self), self.reason, self.path))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(reason={self.reason!r}, path={self.path!r})"

    def to_dead_letter(self, raw: Mapping[str, Any]) -> DeadLetter:
        """The ``dead-letters`` record for this error: the raw body text and the reason."""
        body = raw.get("body")
        if isinstance(body, (bytes, bytearray)):
            text = bytes(body).decode("utf-8", "replace")
        elif isinstance(body, str):
            text = body
        else:
            text = "" if body is None else repr(body)
        ts = raw.get("fetched_at")
        return DeadLetter(
            version=RECORD_VERSION,
            stage="normalise",
            reason=str(self),
            error_type=type(self).__name__,
            provider=self.provider,
            sport=self.sport,
            endpoint=self.endpoint,
            body=text,
            ts=float(ts) if isinstance(ts, (int, float)) and not isinstance(ts, bool) else 0.0,
        )


class BadPayload(NormaliseError):
    """The body as a whole cannot be read: not JSON, not an envelope, no normaliser for it."""


class MissingField(NormaliseError):
    """A required field is absent or null."""


class WrongType(NormaliseError):
    """A field holds a value of the wrong type (or an impossible value such as a bad timestamp)."""


class UnknownStatus(NormaliseError):
    """The provider sent a status code with no known phase."""
