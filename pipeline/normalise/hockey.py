"""API-Hockey v1 ``/games`` items into Match records.

Phases by status code: ``NS`` scheduled; ``P1``-``P3``, ``OT``, ``PT`` (penalty shots)
live; ``BT`` break; ``POST`` postponed; ``CANC`` cancelled; ``INTR`` suspended; ``ABD``
abandoned; ``AOT``, ``AP``, ``FT``, ``AW`` finished.

Periods: ``P1``-``P3`` are 1-3, overtime 4, penalty shots 5; ``BT`` and ``INTR`` carry
the last period that has a score. Per-period scores come from ``periods {first: "3-1",
second, third, overtime, penalties}`` as ``P1``, ``P2``, ``P3``, ``OT``, ``PEN``; the
score from ``scores {home, away}``. The clock is the game's ``timer`` while it is on.

The ``events`` field of a game is a flag (whether the provider has events for it), not a
list, so ``events`` is empty and ``detail`` null, neither marked absent.
"""

from __future__ import annotations

import re

from pipeline.normalise.common import (
    ON_PHASES,
    Node,
    Source,
    build_match,
    last_period,
    period_score,
    phase_of,
    team,
)
from pipeline.normalise.errors import WrongType
from tables.records import League, Match, PeriodScore, Score, Status

PROVIDER = "apihockey"
MATCH_ENDPOINTS = frozenset({"games"})

PHASES: dict[str, str] = {
    "NS": "scheduled",
    "P1": "live", "P2": "live", "P3": "live", "OT": "live", "PT": "live",
    "BT": "break",
    "POST": "postponed", "CANC": "cancelled", "INTR": "suspended", "ABD": "abandoned",
    "AOT": "finished", "AP": "finished", "FT": "finished", "AW": "finished",
}
#: (period name, field in ``periods``, period number)
PERIODS = (("P1", "first", 1), ("P2", "second", 2), ("P3", "third", 3),
           ("OT", "overtime", 4), ("PEN", "penalties", 5))
PERIOD_OF_CODE = {"P1": 1, "P2": 2, "P3": 3, "OT": 4, "PT": 5}
PAIR = re.compile(r"^\s*(\d+)\s*-\s*(\d+)\s*$")


def normalise_item(item: Node, src: Source) -> Match:
    provider_id = item.ident("id")
    status_node = item.obj("status")
    phase = phase_of(status_node, "short", PHASES)
    code = status_node.string("short")

    league_node = item.obj("league")
    country = item.opt_obj("country")
    league = League(
        id=league_node.ident("id"), name=league_node.string("name"),
        country=country.opt_string("name") if country is not None else None,
        season=league_node.text("season"), round=item.text("week"),
    )
    teams = item.obj("teams")

    periods: dict[str, PeriodScore] = {}
    started: list[int] = []
    node = item.opt_obj("periods")
    for name, key, number in PERIODS:
        text = node.opt_string(key) if node is not None else None
        if text is None or not text.strip():
            continue
        m = PAIR.match(text)
        if m is None:
            where = node.at(key) if node is not None else key
            raise WrongType(f"expected a score like \"3-1\", got {text!r}", where)
        periods[name] = period_score(int(m.group(1)), int(m.group(2)))
        started.append(number)
    scores = item.obj("scores")
    score = Score(home=scores.opt_count("home"), away=scores.opt_count("away"), periods=periods)

    period = PERIOD_OF_CODE.get(code)
    if period is None and code in ("BT", "INTR"):
        period = last_period(started)
    timer = item.text("timer")
    if timer is None:
        timer = status_node.text("timer")
    status = Status(
        phase=phase, code=code, label=status_node.opt_string("long") or code, period=period,
        clock=timer if phase in ON_PHASES else None,
    )
    return build_match(
        src, provider_id, league=league, home=team(teams, "home"), away=team(teams, "away"),
        status=status, score=score, start_time=item.utc("timestamp"), venue=None,
        events=[], detail=None,
    )
