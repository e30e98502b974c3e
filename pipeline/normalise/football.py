"""API-Football v3 ``/fixtures`` items into Match records.

Phases by status code: ``TBD``, ``NS`` scheduled; ``1H``, ``2H``, ``ET``, ``P``, ``LIVE``
live; ``HT``, ``BT`` break; ``SUSP``, ``INT`` suspended; ``FT``, ``AET``, ``PEN`` finished;
``PST`` postponed; ``CANC`` cancelled; ``ABD`` abandoned; ``AWD``, ``WO`` finished (not
played: the provider's label says so and is kept).

Period numbers: first half 1, second half 2, extra time 3 (its first half, up to minute
105 and its stoppage) and 4 (its second half), penalty shoot-out (``P``) 5. A break
carries the number of the period just played: ``HT`` is 1; ``BT`` is 2 before extra
time (elapsed 90 or unknown) and 3 between its halves. ``LIVE``, ``SUSP`` and ``INT``
take the period the elapsed minute falls in, or null without one. Other phases: null.

Clock: the elapsed minute as text, ``"90+3"`` when ``status.extra`` counts stoppage
minutes; set in the phases where the match is on (live, break, suspended), else null.

Per-period scores: ``1H`` is the half-time score, ``2H`` the goals of the second half
(full time minus half time; during the second half, the goals so far minus half
time), ``ET`` the goals of extra time, ``PEN`` the shoot-out. Only periods with a value.

Partial payloads: ``fixtures?date=``/``league=`` items carry neither events nor lineups
and statistics, ``live=`` items carry events only, ``id``/``ids`` items carry all. What
the item did not carry is listed under ``_absent`` (``"events"``, ``"detail"``), with
``events`` empty and ``detail`` null in its place.

Events have no provider id. Each gets ``id`` = the first 8 bytes (hex) of a BLAKE2b hash
of (type, detail, minute, extra, team side, player id or name, occurrence), where the
occurrence counts exact repeats of the same tuple after the events were put in a
canonical order; so a re-ordered provider array yields the same ids and the same list.
Shoot-out kicks (``comments: "Penalty Shootout"``) become ``shootout_kick`` with the
provider's kick number as ``extra``.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

import orjson

from pipeline.normalise.common import (
    ON_PHASES,
    Node,
    Source,
    build_match,
    period_score,
    phase_of,
    team,
    venue,
)
from tables.records import Event, League, Match, PeriodScore, Ref, Score, Status

PROVIDER = "apifootball"
#: Endpoints whose ``response[]`` is a list of fixtures.
MATCH_ENDPOINTS = frozenset({"fixtures"})

PHASES: dict[str, str] = {
    "TBD": "scheduled", "NS": "scheduled",
    "1H": "live", "2H": "live", "ET": "live", "P": "live", "LIVE": "live",
    "HT": "break", "BT": "break",
    "SUSP": "suspended", "INT": "suspended",
    "FT": "finished", "AET": "finished", "PEN": "finished",
    "PST": "postponed", "CANC": "cancelled", "ABD": "abandoned",
    "AWD": "finished", "WO": "finished",
}

GOAL_KINDS = {
    "normal goal": "goal", "own goal": "own_goal", "penalty": "penalty_goal",
    "missed penalty": "missed_penalty",
}
EVENT_KINDS = {"card": "card", "subst": "substitution", "var": "var"}
SHOOTOUT = "penalty shootout"
GRID = re.compile(r"^\s*(\d+)\s*:\s*(\d+)\s*$")


def normalise_item(item: Node, src: Source) -> Match:
    fixture = item.obj("fixture")
    provider_id = fixture.ident("id")
    status_node = fixture.obj("status")
    phase = phase_of(status_node, "short", PHASES)
    code = status_node.string("short")
    elapsed = status_node.opt_integer("elapsed")
    extra = status_node.opt_integer("extra")

    league_node = item.obj("league")
    league = League(
        id=league_node.ident("id"), name=league_node.string("name"),
        country=league_node.opt_string("country"), season=league_node.text("season"),
        round=league_node.opt_string("round"),
    )
    teams = item.obj("teams")
    home, away = team(teams, "home"), team(teams, "away")
    sides = {home["id"]: "home", away["id"]: "away"}

    status = Status(
        phase=phase, code=code, label=status_node.opt_string("long") or code,
        period=_period(code, elapsed),
        clock=_clock(elapsed, extra) if phase in ON_PHASES else None,
    )
    absent: list[str] = []
    events_raw = item.opt_array("events")
    if events_raw is None:
        absent.append("events")
    events = _events(events_raw or [], item.at("events"), sides)

    detail: dict[str, Any] | None = None
    if item.has("lineups") or item.has("statistics"):
        detail = {
            "statistics": _statistics(item.opt_array("statistics") or [], item.at("statistics"),
                                      sides),
            "lineups": _lineups(item.opt_array("lineups") or [], item.at("lineups"), sides),
        }
    else:
        absent.append("detail")

    return build_match(
        src, provider_id, league=league, home=home, away=away, status=status,
        score=_score(item, code), start_time=fixture.utc("timestamp"),
        venue=venue(fixture.opt_obj("venue")), events=events, detail=detail, absent=absent,
    )


def _period(code: str, elapsed: int | None) -> int | None:
    fixed = {"1H": 1, "HT": 1, "2H": 2, "P": 5}
    if code in fixed:
        return fixed[code]
    if code == "ET":
        return 4 if elapsed is not None and elapsed > 105 else 3
    if code == "BT":
        return 3 if elapsed is not None and elapsed > 90 else 2
    if code in ("LIVE", "SUSP", "INT") and elapsed is not None:
        return 1 if elapsed <= 45 else 2 if elapsed <= 90 else 3 if elapsed <= 105 else 4
    return None


def _clock(elapsed: int | None, extra: int | None) -> str | None:
    if elapsed is None:
        return None
    return f"{elapsed}+{extra}" if extra else str(elapsed)


def _pair(score: Node | None, key: str) -> tuple[int | None, int | None]:
    node = score.opt_obj(key) if score is not None else None
    if node is None:
        return None, None
    return node.opt_count("home"), node.opt_count("away")


def _minus(a: int | None, b: int | None) -> int | None:
    """Goals between two running scores; None when unknown or inconsistent."""
    return None if a is None or b is None or a < b else a - b


def _score(item: Node, code: str) -> Score:
    goals = item.obj("goals")
    home, away = goals.opt_count("home"), goals.opt_count("away")
    score = item.opt_obj("score")
    ht, ft = _pair(score, "halftime"), _pair(score, "fulltime")
    if code == "2H" and ft == (None, None):
        ft = (home, away)
    parts = {
        "1H": ht,
        "2H": (_minus(ft[0], ht[0]), _minus(ft[1], ht[1])),
        "ET": _pair(score, "extratime"),
        "PEN": _pair(score, "penalty"),
    }
    periods: dict[str, PeriodScore] = {
        name: period_score(h, a) for name, (h, a) in parts.items() if h is not None or a is not None
    }
    return Score(home=home, away=away, periods=periods)


def _ref(node: Node | None) -> Ref | None:
    if node is None:
        return None
    ref = Ref(id=node.opt_ident("id"), name=node.opt_string("name"))
    return None if ref["id"] is None and ref["name"] is None else ref


def _side(node: Node | None, sides: dict[str, str]) -> str | None:
    if node is None:
        return None
    team_id = node.opt_ident("id")
    return sides.get(team_id) if team_id is not None else None


def _kind(ptype: str, detail: str | None, comments: str | None) -> str:
    t = ptype.strip().lower()
    if t == "goal":
        if comments is not None and comments.strip().lower() == SHOOTOUT:
            return "shootout_kick"
        return GOAL_KINDS.get((detail or "").strip().lower(), "goal")
    return EVENT_KINDS.get(t, t or "unknown")


def _order(value: int | None) -> int:
    return -1 if value is None else value


def _first(pair: tuple[bytes, Event]) -> bytes:
    return pair[0]


def _canonical(events: list[Event]) -> list[bytes]:
    """Each event as JSON with sorted keys, to put the events in a canonical order.

    The order is that of ``json.dumps(e, sort_keys=True, ensure_ascii=False)``, which the
    ids were first defined by: orjson escapes every character as that does (checked for
    all of Unicode in the tests), UTF-8 bytes sort as the code points do, and the only
    other difference, the space after each separator, cannot decide an order (two texts
    that agree up to a separator both have it). orjson refuses integers beyond 64 bits;
    those events are ordered by ``json`` itself.
    """
    try:
        return [orjson.dumps(e, option=orjson.OPT_SORT_KEYS) for e in events]
    except orjson.JSONEncodeError:
        return [json.dumps(e, sort_keys=True, ensure_ascii=False).encode() for e in events]


def _identity(parts: list[str | int | None]) -> bytes:
    """``json.dumps(parts, ensure_ascii=False)`` as UTF-8, for a flat list of strings,
    integers and nulls, without building an encoder per event."""
    try:
        return b"[" + b", ".join([orjson.dumps(p) for p in parts]) + b"]"
    except orjson.JSONEncodeError:
        return json.dumps(parts, ensure_ascii=False).encode()


def _events(items: list[Any], path: str, sides: dict[str, str]) -> list[Event]:
    staged: list[Event] = []
    for i, raw in enumerate(items):
        node = Node(raw, f"{path}[{i}]")
        time = node.obj("time")
        ptype = node.string("type")
        detail, comments = node.opt_string("detail"), node.opt_string("comments")
        staged.append(Event(
            id="", type=_kind(ptype, detail, comments),
            minute=time.opt_integer("elapsed"), extra=time.opt_integer("extra"),
            team=_side(node.opt_obj("team"), sides),
            player=_ref(node.opt_obj("player")), assist=_ref(node.opt_obj("assist")),
            detail=detail, comments=comments,
        ))
    staged = [e for _, e in sorted(zip(_canonical(staged), staged), key=_first)]
    seen: dict[bytes, int] = {}
    for event in staged:
        who = event["player"]
        identity = _identity(
            [event["type"], event["detail"], event["minute"], event["extra"], event["team"],
             (who["id"] if who["id"] is not None else who["name"]) if who else None])
        n = seen.get(identity, 0)
        seen[identity] = n + 1
        digest = hashlib.blake2b(b"%s#%d" % (identity, n), digest_size=8)
        event["id"] = digest.hexdigest()
    staged.sort(key=lambda e: (_order(e["minute"]), _order(e["extra"]), e["id"]))
    return staged


def _statistics(items: list[Any], path: str, sides: dict[str, str]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for i, raw in enumerate(items):
        node = Node(raw, f"{path}[{i}]")
        side = _side(node.obj("team"), sides)
        values: dict[str, Any] = {}
        stats = node.opt_array("statistics") or []
        for j, entry in enumerate(stats):
            stat = Node(entry, f"{node.at('statistics')}[{j}]")
            values[stat.string("type")] = stat.scalar("value")
        if side is not None:
            out[side] = dict(sorted(values.items()))
    return {side: out[side] for side in ("home", "away") if side in out}


def _grid(grid: str | None) -> tuple[int, int]:
    m = GRID.match(grid) if grid is not None else None
    return (int(m.group(1)), int(m.group(2))) if m else (1_000_000, 1_000_000)


def _player(entry: Any, path: str) -> dict[str, Any]:
    node = Node(entry, path).obj("player")
    return {"id": node.opt_ident("id"), "name": node.opt_string("name"),
            "number": node.opt_integer("number"), "pos": node.opt_string("pos"),
            "grid": node.opt_string("grid")}


def _roster_order(p: dict[str, Any]) -> tuple[tuple[int, int], int, str, str]:
    return (_grid(p["grid"]), _order(p["number"]), p["id"] or "", p["name"] or "")


def _lineups(items: list[Any], path: str, sides: dict[str, str]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for i, raw in enumerate(items):
        node = Node(raw, f"{path}[{i}]")
        side = _side(node.obj("team"), sides)
        xi_at, subs_at = node.at("startXI"), node.at("substitutes")
        xi = [_player(p, f"{xi_at}[{j}]") for j, p in enumerate(node.opt_array("startXI") or [])]
        subs = [_player(p, f"{subs_at}[{j}]")
                for j, p in enumerate(node.opt_array("substitutes") or [])]
        if side is not None:
            out[side] = {
                "formation": node.opt_string("formation"),
                "coach": _ref(node.opt_obj("coach")),
                "start_xi": sorted(xi, key=_roster_order),
                "substitutes": sorted(subs, key=_roster_order),
            }
    return {side: out[side] for side in ("home", "away") if side in out}
