"""What every sport's normaliser shares: typed field access with paths, and Match assembly.

:class:`Node` wraps one JSON object together with its path in the body, so that a
missing field or a wrong type is reported as ``response[3].teams.home.id`` rather
than as a ``KeyError``. Booleans are never accepted where a number is expected.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pipeline.normalise.errors import MissingField, NormaliseError, UnknownStatus, WrongType
from tables.records import (
    IN_PLAY_PHASES,
    RECORD_VERSION,
    League,
    Match,
    PeriodScore,
    Score,
    Status,
    Team,
    Venue,
    match_id,
)

#: Key added to a Match for the parts its source did not carry (``"events"``, ``"detail"``);
#: the diff stage fills them from the previous state and removes the key.
ABSENT = "_absent"
#: Phases in which the match is on, so its clock means something.
ON_PHASES = IN_PLAY_PHASES


@dataclass
class NormaliseResult:
    """What one raw fetch became: Match records, and one error per rejected body or item."""

    matches: list[Match] = field(default_factory=list)
    errors: list[NormaliseError] = field(default_factory=list)


@dataclass(frozen=True)
class Source:
    """The raw fetch an item came from, as the item normaliser needs it."""

    provider: str
    sport: str
    endpoint: str
    fetched_at: float


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class Node:
    """A JSON object at ``path``, read through typed accessors that raise our errors."""

    __slots__ = ("data", "path")

    def __init__(self, data: Any, path: str) -> None:
        if not isinstance(data, dict):
            raise WrongType(f"expected an object, got {_type_name(data)}", path)
        self.data: dict[str, Any] = data
        self.path = path

    def at(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def has(self, key: str) -> bool:
        return key in self.data

    def raw(self, key: str) -> Any:
        return self.data.get(key)

    def _required(self, key: str) -> Any:
        value = self.data.get(key)
        if value is None:
            raise MissingField("required field is missing" if key not in self.data
                               else "required field is null", self.at(key))
        return value

    def _wrong(self, key: str, expected: str, value: Any) -> WrongType:
        return WrongType(f"expected {expected}, got {_type_name(value)}", self.at(key))

    def obj(self, key: str) -> Node:
        return Node(self._required(key), self.at(key))

    def opt_obj(self, key: str) -> Node | None:
        value = self.data.get(key)
        return None if value is None else Node(value, self.at(key))

    def array(self, key: str) -> list[Any]:
        value = self._required(key)
        if not isinstance(value, list):
            raise self._wrong(key, "an array", value)
        return value

    def opt_array(self, key: str) -> list[Any] | None:
        value = self.data.get(key)
        if value is None:
            return None
        if not isinstance(value, list):
            raise self._wrong(key, "an array", value)
        return value

    def string(self, key: str) -> str:
        value = self._required(key)
        if not isinstance(value, str):
            raise self._wrong(key, "a string", value)
        return value

    def opt_string(self, key: str) -> str | None:
        value = self.data.get(key)
        if value is not None and not isinstance(value, str):
            raise self._wrong(key, "a string", value)
        return value

    def opt_integer(self, key: str) -> int | None:
        value = self.data.get(key)
        if value is not None and not _is_int(value):
            raise self._wrong(key, "an integer", value)
        return value

    def opt_count(self, key: str) -> int | None:
        """An optional non-negative integer (goals, points)."""
        value = self.opt_integer(key)
        if value is not None and value < 0:
            raise WrongType(f"expected a non-negative integer, got {value}", self.at(key))
        return value

    def scalar(self, key: str) -> Any:
        """An optional string, number or boolean, as it is."""
        value = self.data.get(key)
        if value is None or isinstance(value, (str, int, float)):
            return value
        raise self._wrong(key, "a string, a number or null", value)

    def ident(self, key: str) -> str:
        """A provider id (number or non-empty string), as a string."""
        value = self._required(key)
        if _is_int(value) or (isinstance(value, str) and value and not any(
                c.isspace() for c in value)):
            return str(value)
        raise self._wrong(key, "an id (integer or string without spaces)", value)

    def opt_ident(self, key: str) -> str | None:
        return None if self.data.get(key) is None else self.ident(key)

    def text(self, key: str) -> str | None:
        """An optional value shown as text: strings as they are, integers as digits."""
        value = self.data.get(key)
        if value is None or isinstance(value, str):
            return value
        if _is_int(value):
            return str(value)
        raise self._wrong(key, "a string or an integer", value)

    def utc(self, key: str) -> str:
        """A required Unix timestamp as ISO 8601 UTC ending in ``Z``."""
        value = self._required(key)
        if not isinstance(value, (int, float)) or isinstance(value, bool) \
                or not math.isfinite(value):
            raise self._wrong(key, "a Unix timestamp", value)
        try:
            moment = dt.datetime.fromtimestamp(int(value), dt.UTC)
        except (OverflowError, OSError, ValueError):
            raise WrongType(f"timestamp {value} is out of range", self.at(key)) from None
        return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


ItemNormaliser = Callable[[Node, Source], Match]


def phase_of(status: Node, key: str, phases: Mapping[str, str]) -> str:
    """The phase of the status code at ``status.key``; :class:`UnknownStatus` when unmapped."""
    code = status.string(key)
    phase = phases.get(code)
    if phase is None:
        raise UnknownStatus(f"unknown status code {code!r}", status.at(key))
    return phase


def period_score(home: int | None, away: int | None) -> PeriodScore:
    return PeriodScore(home=home, away=away)


def last_period(started: list[int]) -> int | None:
    """The highest period number that has begun, for a break between periods."""
    return max(started) if started else None


def team(teams: Node, side: str) -> Team:
    node = teams.obj(side)
    return Team(id=node.ident("id"), name=node.string("name"), logo=node.opt_string("logo"))


def venue(node: Node | None) -> Venue | None:
    if node is None:
        return None
    out = Venue(id=node.opt_ident("id"), name=node.opt_string("name"), city=node.opt_string("city"))
    return None if out["id"] is None and out["name"] is None and out["city"] is None else out


def build_match(src: Source, provider_id: str, *, league: League, home: Team, away: Team,
                status: Status, score: Score, start_time: str, venue: Venue | None,
                events: list[Any], detail: dict[str, Any] | None,
                absent: list[str] | None = None) -> Match:
    match = Match(
        version=RECORD_VERSION,
        id=match_id(src.sport, src.provider, provider_id),
        sport=src.sport,
        provider=src.provider,
        provider_id=provider_id,
        league=league,
        home=home,
        away=away,
        status=status,
        score=score,
        start_time=start_time,
        venue=venue,
        events=events,
        detail=detail,
        seq=0,
        updated_at=src.fetched_at,
        fetched_at=src.fetched_at,
    )
    if absent:
        match[ABSENT] = sorted(absent)  # type: ignore[literal-required]
    return match
