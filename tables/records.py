"""The records that travel on the topics, as plain JSON-compatible dicts.

Every record on a public topic is a JSON object carrying ``version``. The shapes
below are the contract; ``tables/schemas/*.schema.json`` state the same contract
as JSON Schema for partners and tests.

RawFetch  (topic ``raw-fetches``, key: provider + endpoint + params)
    One upstream response, success or typed error::

        {"version": 1, "provider": "apifootball", "sport": "football",
         "endpoint": "fixtures", "params": {"live": "all"},
         "status": 200, "headers": {"x-ratelimit-requests-remaining": "7400", ...},
         "latency_ms": 41.2, "fetched_at": 1732840000.123,
         "body": "<the raw response text>", "error": null}

    ``error`` is null on success, else ``{"type": "QuotaExceeded", "message": "..."}``.
    ``body`` is the response text exactly as received (may be malformed).

Match  (topics ``match-updates``, ``match-snapshots``; key: match id)
    The normalised snapshot shared by every sport. Ids are strings everywhere.
    ``status.phase`` is one of :data:`PHASES`; ``status.code`` keeps the provider's
    short code (``1H``, ``Q3``, ``P2``); ``status.period`` is the number of the
    period in play (1, 2, ... ; extra time and overtime continue the count) or
    null; ``status.clock`` is the provider's clock as text (``"67"``, ``"90+3"``,
    ``"08:21"``) or null. ``score.periods`` maps a period name (``"1H"``, ``"2H"``,
    ``"ET"``, ``"PEN"``, ``"Q1"``..``"Q4"``, ``"OT"``, ``"P1"``..``"P3"``) to
    ``{"home": int|null, "away": int|null}``. ``events`` are sorted by
    (minute, extra, id); each has a stable ``id`` derived from its content,
    because providers give events no id.

Delta  (topic ``match-deltas``; key: match id)
    One meaningful change::

        {"version": 1, "match_id": "...", "seq": 7, "ts": 1732840000.5,
         "sport": "football", "league": "39", "kinds": ["score", "events"],
         "changes": [<RFC 6902 operations from the previous snapshot to this one>],
         "events": [{"type": "goal", "team": "home", ...}],
         "fetched_at": 1732840000.1}

    ``seq`` starts at 1 (the ``created`` delta) and grows by one per delta of
    that match, with no gaps. Consumers deduplicate by (match_id, seq).
"""

from __future__ import annotations

from typing import Any, Literal, TypedDict

RECORD_VERSION = 1

Sport = Literal["football", "basketball", "hockey"]
SPORTS: tuple[str, ...] = ("football", "basketball", "hockey")

Phase = Literal[
    "scheduled", "live", "break", "finished", "postponed", "cancelled", "suspended", "abandoned"
]
PHASES: tuple[str, ...] = (
    "scheduled", "live", "break", "finished", "postponed", "cancelled", "suspended", "abandoned",
)
#: Phases in which a match is being played (polled at the live cadence).
IN_PLAY_PHASES: frozenset[str] = frozenset({"live", "break", "suspended"})
#: Phases after which nothing more is expected.
FINAL_PHASES: frozenset[str] = frozenset({"finished", "cancelled", "abandoned"})

DELTA_KINDS: tuple[str, ...] = ("created", "score", "status", "events", "clock", "detail")


class FetchError(TypedDict):
    type: str
    message: str


class RawFetch(TypedDict):
    version: int
    provider: str
    sport: str
    endpoint: str
    params: dict[str, str]
    status: int
    headers: dict[str, str]
    latency_ms: float
    fetched_at: float
    body: str
    error: FetchError | None


class League(TypedDict):
    id: str
    name: str
    country: str | None
    season: str | None
    round: str | None


class Team(TypedDict):
    id: str
    name: str
    logo: str | None


class Status(TypedDict):
    phase: str
    code: str
    label: str
    period: int | None
    clock: str | None


class PeriodScore(TypedDict):
    home: int | None
    away: int | None


class Score(TypedDict):
    home: int | None
    away: int | None
    periods: dict[str, PeriodScore]


class Venue(TypedDict):
    id: str | None
    name: str | None
    city: str | None


class Ref(TypedDict):
    id: str | None
    name: str | None


class Event(TypedDict):
    id: str
    type: str  # goal, own_goal, penalty_goal, missed_penalty, card, substitution, var, shootout_kick...
    minute: int | None
    extra: int | None
    team: str | None  # "home" / "away"
    player: Ref | None
    assist: Ref | None
    detail: str | None
    comments: str | None


class Match(TypedDict):
    version: int
    id: str
    sport: str
    provider: str
    provider_id: str
    league: League
    home: Team
    away: Team
    status: Status
    score: Score
    start_time: str  # ISO 8601, UTC, "Z"
    venue: Venue | None
    events: list[Event]
    detail: dict[str, Any] | None
    seq: int
    updated_at: float
    fetched_at: float


class Delta(TypedDict):
    version: int
    match_id: str
    seq: int
    ts: float
    sport: str
    league: str
    kinds: list[str]
    changes: list[dict[str, Any]]
    events: list[dict[str, Any]]
    fetched_at: float


class DeadLetter(TypedDict):
    version: int
    stage: str  # "normalise", "diff", ...
    reason: str
    error_type: str
    provider: str | None
    sport: str | None
    endpoint: str | None
    body: str
    ts: float


def match_id(sport: str, provider: str, provider_id: str | int) -> str:
    """``{sport}-{provider}-{provider_id}``, the id used on every topic and channel."""
    return f"{sport}-{provider}-{provider_id}"
