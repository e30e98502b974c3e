"""API-Basketball v1 ``/games`` items into Match records.

Phases by status code: ``NS`` scheduled; ``Q1``-``Q4``, ``OT`` live; ``BT``, ``HT`` break;
``FT``, ``AOT``, ``AWD`` finished; ``POST`` postponed; ``CANC`` cancelled; ``SUSP``
suspended; ``ABD`` abandoned.

Periods: ``Q1``-``Q4`` are 1-4 and overtime (every overtime: the provider sums them in
``over_time``) is 5. ``HT`` is 2; ``BT`` and ``SUSP`` carry the last period that has a
score. Per-period scores ``Q1``..``Q4``, ``OT`` come from ``quarter_1``..``quarter_4`` and
``over_time``; the score is ``total``. The clock is ``status.timer`` while the game is on.

Games carry no play-by-play and no detail, so ``events`` is empty and ``detail`` null,
and neither is marked absent: there is nothing else to fetch.
"""

from __future__ import annotations

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
from tables.records import League, Match, PeriodScore, Score, Status

PROVIDER = "apibasketball"
MATCH_ENDPOINTS = frozenset({"games"})

PHASES: dict[str, str] = {
    "NS": "scheduled",
    "Q1": "live", "Q2": "live", "Q3": "live", "Q4": "live", "OT": "live",
    "BT": "break", "HT": "break",
    "FT": "finished", "AOT": "finished", "AWD": "finished",
    "POST": "postponed", "CANC": "cancelled", "SUSP": "suspended", "ABD": "abandoned",
}
#: (period name, field in ``scores.home|away``, period number)
PERIODS = (("Q1", "quarter_1", 1), ("Q2", "quarter_2", 2), ("Q3", "quarter_3", 3),
           ("Q4", "quarter_4", 4), ("OT", "over_time", 5))
PERIOD_OF_CODE = {"Q1": 1, "Q2": 2, "HT": 2, "Q3": 3, "Q4": 4, "OT": 5}


def normalise_item(item: Node, src: Source) -> Match:
    provider_id = item.ident("id")
    status_node = item.obj("status")
    phase = phase_of(status_node, "short", PHASES)
    code = status_node.string("short")

    league_node = item.obj("league")
    country = item.opt_obj("country")
    week = item.text("week")
    league = League(
        id=league_node.ident("id"), name=league_node.string("name"),
        country=country.opt_string("name") if country is not None else None,
        season=league_node.text("season"),
        round=week if week is not None else item.text("stage"),
    )
    teams = item.obj("teams")

    scores = item.obj("scores")
    home_s, away_s = scores.opt_obj("home"), scores.opt_obj("away")
    periods: dict[str, PeriodScore] = {}
    started: list[int] = []
    for name, key, number in PERIODS:
        h = home_s.opt_count(key) if home_s is not None else None
        a = away_s.opt_count(key) if away_s is not None else None
        if h is not None or a is not None:
            periods[name] = period_score(h, a)
            started.append(number)
    score = Score(
        home=home_s.opt_count("total") if home_s is not None else None,
        away=away_s.opt_count("total") if away_s is not None else None,
        periods=periods,
    )
    period = PERIOD_OF_CODE.get(code)
    if period is None and code in ("BT", "SUSP"):
        period = last_period(started)
    status = Status(
        phase=phase, code=code, label=status_node.opt_string("long") or code, period=period,
        clock=status_node.text("timer") if phase in ON_PHASES else None,
    )
    return build_match(
        src, provider_id, league=league, home=team(teams, "home"), away=team(teams, "away"),
        status=status, score=score, start_time=item.utc("timestamp"), venue=None,
        events=[], detail=None,
    )
