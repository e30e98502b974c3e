from __future__ import annotations

import copy
from typing import Any

import jsonpatch
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.diff import MatchState, apply, diff, projection
from tables.records import Event, Match
from tables.schema_check import validate

NOW = 1_732_840_000.0


def make_match(**overrides: Any) -> Match:
    match: dict[str, Any] = {
        "version": 1,
        "id": "football-apifootball-1149519",
        "sport": "football",
        "provider": "apifootball",
        "provider_id": "1149519",
        "league": {"id": "39", "name": "Premier League", "country": "England",
                   "season": "2024", "round": "Regular Season - 13"},
        "home": {"id": "40", "name": "Liverpool", "logo": "https://media.example/teams/40.png"},
        "away": {"id": "50", "name": "Manchester City",
                 "logo": "https://media.example/teams/50.png"},
        "status": {"phase": "scheduled", "code": "NS", "label": "Not Started", "period": None,
                   "clock": None},
        "score": {"home": None, "away": None, "periods": {}},
        "start_time": "2024-12-01T16:00:00Z",
        "venue": {"id": "550", "name": "Anfield", "city": "Liverpool"},
        "events": [],
        "detail": None,
        "seq": 0,
        "updated_at": NOW - 10,
        "fetched_at": NOW - 10,
    }
    match.update(overrides)
    return match  # type: ignore[return-value]


def make_event(minute: int, type_: str = "goal", team: str = "home", player: str = "Salah",
               extra: int | None = None, detail: str | None = "Normal Goal") -> Event:
    return {
        "id": f"{minute}-{extra}-{type_}-{team}-{player}",
        "type": type_, "minute": minute, "extra": extra, "team": team,
        "player": {"id": None, "name": player}, "assist": None,
        "detail": detail, "comments": None,
    }


def live(match: Match, minute: int = 10, **overrides: Any) -> Match:
    out = copy.deepcopy(match)
    out["status"] = {"phase": "live", "code": "1H", "label": "First Half", "period": 1,
                     "clock": str(minute)}
    if out["score"]["home"] is None:
        out["score"] = {"home": 0, "away": 0, "periods": {"1H": {"home": 0, "away": 0}}}
    out.update(overrides)  # type: ignore[typeddict-item]
    return out


def fetched(match: Match, at: float) -> Match:
    out = copy.deepcopy(match)
    out["fetched_at"] = at
    return out


def check(prev: MatchState | None, result: Any) -> None:
    """The invariants every emitted delta keeps."""
    assert result.delta is not None and result.state is not None
    validate("delta", result.delta)
    validate("match", result.state["snapshot"])
    before = prev["snapshot"] if prev is not None else None
    assert apply(before, result.delta) == result.state["snapshot"]
    assert result.delta["seq"] == result.state["seq"] == result.state["snapshot"]["seq"]


def test_first_match_is_a_created_delta_with_seq_1() -> None:
    match = make_match()
    result = diff(None, match, now=NOW)
    check(None, result)
    delta = result.delta
    assert delta is not None and result.state is not None
    assert delta["kinds"] == ["created"]
    assert delta["seq"] == 1 and delta["ts"] == NOW and delta["league"] == "39"
    assert delta["match_id"] == match["id"] and delta["sport"] == "football"
    assert delta["fetched_at"] == match["fetched_at"]
    assert delta["changes"] == [{"op": "add", "path": "", "value": result.state["snapshot"]}]
    snapshot = result.state["snapshot"]
    assert snapshot["seq"] == 1 and snapshot["updated_at"] == NOW
    assert snapshot["fetched_at"] == match["fetched_at"]
    assert result.skipped is None
    assert match["seq"] == 0, "the input is not modified"


def test_kickoff_is_a_status_change_with_a_kickoff_event() -> None:
    first = diff(None, make_match(), now=NOW).state
    result = diff(first, fetched(live(make_match(), minute=1), NOW), now=NOW + 1)
    check(first, result)
    assert result.delta is not None
    assert result.delta["kinds"] == ["score", "status", "clock"]
    assert result.delta["seq"] == 2
    types = [e["type"] for e in result.delta["events"]]
    assert types == ["kickoff", "period"], "0-0 at kick-off is no scoring"
    assert result.delta["events"][0]["from"]["phase"] == "scheduled"
    assert result.delta["events"][0]["to"] == {"phase": "live", "code": "1H", "label": "First Half"}


def test_goal_changes_score_and_events_with_a_goal_event() -> None:
    start = live(make_match(), minute=20)
    state = diff(None, start, now=NOW).state
    goal = make_event(23)
    scored = live(start, minute=23, events=[goal],
                  score={"home": 1, "away": 0, "periods": {"1H": {"home": 1, "away": 0}}})
    result = diff(state, fetched(scored, NOW), now=NOW + 1)
    check(state, result)
    assert result.delta is not None
    assert result.delta["kinds"] == ["score", "events", "clock"]
    assert result.delta["events"] == [{
        "type": "goal", "id": goal["id"], "team": "home", "minute": 23, "extra": None,
        "player": "Salah", "assist": None, "detail": "Normal Goal",
        "score": {"home": 1, "away": 0},
    }]


def test_var_retraction_is_an_events_change_with_goal_cancelled() -> None:
    goal = make_event(23)
    scored = live(make_match(), minute=24, events=[goal],
                  score={"home": 1, "away": 0, "periods": {"1H": {"home": 1, "away": 0}}})
    state = diff(None, scored, now=NOW).state
    var = make_event(25, "var", detail="Goal cancelled")
    retracted = live(scored, minute=24, events=[var],
                     score={"home": 0, "away": 0, "periods": {"1H": {"home": 0, "away": 0}}})
    result = diff(state, fetched(retracted, NOW), now=NOW + 1)
    check(state, result)
    assert result.delta is not None
    assert result.delta["kinds"] == ["score", "events"]
    by_type = {e["type"]: e for e in result.delta["events"]}
    assert set(by_type) == {"var", "goal_cancelled"}, "no extra score event: the goal explains it"
    cancelled = by_type["goal_cancelled"]
    assert cancelled["id"] == goal["id"] and cancelled["goal_type"] == "goal"
    assert cancelled["score"] == {"home": 0, "away": 0}


def test_clock_tick_alone_is_a_clock_delta() -> None:
    state = diff(None, live(make_match(), minute=30), now=NOW).state
    result = diff(state, fetched(live(make_match(), minute=31), NOW), now=NOW + 1)
    check(state, result)
    assert result.delta is not None
    assert result.delta["kinds"] == ["clock"]
    assert result.delta["events"] == []


def test_logo_churn_and_reordered_events_emit_nothing() -> None:
    events = [make_event(10), make_event(10, "card", "away", "Rodri", detail="Yellow Card"),
              make_event(55, "substitution", "away", "Foden", detail=None)]
    match = live(make_match(), minute=60, events=events)
    state = diff(None, match, now=NOW).state
    assert state is not None

    reordered = fetched(match, NOW)
    reordered["events"] = list(reversed(reordered["events"]))
    result = diff(state, reordered, now=NOW + 1)
    assert (result.delta, result.skipped) == (None, "unchanged")

    churn = fetched(match, NOW)
    churn["home"]["logo"] = "https://cdn2.example/teams/40.png?v=2"
    churn["league"]["logo"] = "https://cdn2.example/leagues/39.png"  # type: ignore[typeddict-unknown-key]
    result = diff(state, churn, now=NOW + 1)
    assert (result.delta, result.skipped) == (None, "noise")
    assert projection(churn) == projection(match)


def test_answer_older_than_the_state_is_stale() -> None:
    state = diff(None, fetched(live(make_match(), minute=40), NOW), now=NOW).state
    older = fetched(live(make_match(), minute=39), NOW - 5)
    result = diff(state, older, now=NOW + 1)
    assert (result.delta, result.state, result.skipped) == (None, None, "stale")


def test_unchanged_newer_answer_moves_fetched_at_so_later_stale_ones_are_caught() -> None:
    at_10 = fetched(live(make_match(), minute=40), NOW)
    state = diff(None, at_10, now=NOW).state
    result = diff(state, fetched(at_10, NOW + 20), now=NOW + 20)
    assert result.delta is None and result.skipped == "unchanged"
    assert result.state is not None and result.state["fetched_at"] == NOW + 20
    assert result.state["seq"] == 1
    goal_from_before = live(at_10, minute=41, events=[make_event(41)],
                            score={"home": 1, "away": 0, "periods": {}})
    late = diff(result.state, fetched(goal_from_before, NOW + 15), now=NOW + 21)
    assert late.skipped == "stale"


def test_an_old_copy_fetched_now_is_held_back_until_it_persists() -> None:
    scored = live(make_match(), minute=30, events=[make_event(23)],
                  score={"home": 1, "away": 0, "periods": {"1H": {"home": 1, "away": 0}}})
    state = diff(None, fetched(scored, NOW), now=NOW).state
    old_copy = live(make_match(), minute=20)  # a provider cache from before the goal
    held = diff(state, fetched(old_copy, NOW + 30), now=NOW + 30)
    assert (held.delta, held.skipped) == (None, "stale")
    assert held.state is not None and held.state["seq"] == 1
    assert held.state["behind_since"] == NOW + 30 and held.state["fetched_at"] == NOW
    still = diff(held.state, fetched(old_copy, NOW + 329), now=NOW + 329)
    assert still.delta is None and still.state is not None
    assert still.state["behind_since"] == NOW + 30
    # the same answer for five minutes of provider time is a correction, not a stale copy
    corrected = diff(still.state, fetched(old_copy, NOW + 330), now=NOW + 330)
    check(still.state, corrected)
    assert corrected.state is not None and "behind_since" not in corrected.state
    # a current answer ends the hold
    back = diff(held.state, fetched(scored, NOW + 40), now=NOW + 40)
    assert back.delta is None and back.state is not None and "behind_since" not in back.state


def test_what_counts_as_behind() -> None:
    from pipeline.diff import behind

    first = live(make_match(), minute=30,
                 score={"home": 1, "away": 0, "periods": {"1H": {"home": 1, "away": 0}}})
    second = copy.deepcopy(first)
    second["status"] = {**first["status"], "code": "2H", "label": "Second Half", "period": 2}
    finished = copy.deepcopy(second)
    finished["status"] = {**second["status"], "phase": "finished", "code": "FT"}
    assert behind(second, first) and behind(finished, second) and behind(first, make_match())
    assert not behind(first, second) and not behind(second, finished)
    lower = copy.deepcopy(first)
    lower["score"] = {"home": 0, "away": 0, "periods": {}}
    assert behind(first, lower)
    lower["events"] = [make_event(25, "var", detail="Goal cancelled")]
    assert not behind(first, lower), "a goal VAR takes back is not an old copy"
    postponed = copy.deepcopy(first)
    postponed["status"] = {**first["status"], "phase": "postponed"}
    assert not behind(first, postponed)


def test_same_record_twice_gives_one_delta() -> None:
    state = diff(None, make_match(), now=NOW).state
    record = fetched(live(make_match(), minute=5), NOW)
    first = diff(state, record, now=NOW + 1)
    check(state, first)
    again = diff(first.state, record, now=NOW + 2)
    assert (again.delta, again.state, again.skipped) == (None, None, "unchanged")


def test_absent_fields_are_kept_from_the_previous_snapshot() -> None:
    events = [make_event(12)]
    detail = {"statistics": [{"team": "home", "shots": 4}]}
    state = diff(None, live(make_match(), minute=30, events=events, detail=detail,
                            score={"home": 1, "away": 0, "periods": {}}), now=NOW).state
    partial = live(make_match(), minute=31, events=[], detail=None,
                   score={"home": 1, "away": 0, "periods": {}})
    partial["_absent"] = ["events", "detail"]  # type: ignore[typeddict-unknown-key]
    result = diff(state, fetched(partial, NOW), now=NOW + 1)
    check(state, result)
    assert result.delta is not None and result.state is not None
    assert result.delta["kinds"] == ["clock"]
    snapshot = result.state["snapshot"]
    assert snapshot["events"] == events and snapshot["detail"] == detail
    assert "_absent" not in snapshot
    assert "_absent" in partial, "the input is not modified"


def test_absent_fields_without_previous_snapshot_take_defaults() -> None:
    match = make_match(events=[make_event(3)])
    match["_absent"] = ["events", "detail"]  # type: ignore[typeddict-unknown-key]
    result = diff(None, match, now=NOW)
    check(None, result)
    assert result.state is not None
    assert result.state["snapshot"]["events"] == [] and result.state["snapshot"]["detail"] is None
    assert "_absent" not in result.state["snapshot"]


def test_basketball_score_without_events_is_a_score_event() -> None:
    game = make_match(
        id="basketball-apibasketball-4242", sport="basketball", provider="apibasketball",
        provider_id="4242", league={"id": "12", "name": "NBA", "country": "USA",
                                    "season": "2024-2025", "round": None},
        status={"phase": "live", "code": "Q2", "label": "Quarter 2", "period": 2,
                "clock": "08:21"},
        score={"home": 30, "away": 28, "periods": {"Q1": {"home": 25, "away": 20},
                                                   "Q2": {"home": 5, "away": 8}}},
    )
    state = diff(None, game, now=NOW).state
    later = copy.deepcopy(game)
    later["score"] = {"home": 33, "away": 28, "periods": {"Q1": {"home": 25, "away": 20},
                                                          "Q2": {"home": 8, "away": 8}}}
    result = diff(state, fetched(later, NOW), now=NOW + 1)
    check(state, result)
    assert result.delta is not None
    assert result.delta["kinds"] == ["score"]
    assert result.delta["events"] == [{"type": "score", "from": {"home": 30, "away": 28},
                                       "home": 33, "away": 28, "team": "home", "points": 3}]


def test_period_change_and_final() -> None:
    state = diff(None, live(make_match(), minute=45), now=NOW).state
    half = live(make_match(), minute=45)
    half["status"] = {"phase": "break", "code": "HT", "label": "Halftime", "period": 1,
                      "clock": "45"}
    result = diff(state, fetched(half, NOW), now=NOW + 1)
    check(state, result)
    assert result.delta is not None
    assert [e["type"] for e in result.delta["events"]] == ["status"]
    second = copy.deepcopy(half)
    second["status"] = {"phase": "live", "code": "2H", "label": "Second Half", "period": 2,
                        "clock": "46"}
    result2 = diff(result.state, fetched(second, NOW + 1), now=NOW + 2)
    check(result.state, result2)
    assert result2.delta is not None
    assert [e["type"] for e in result2.delta["events"]] == ["status", "period"]
    assert result2.delta["events"][1] == {"type": "period", "from": 1, "to": 2, "code": "2H"}
    done = copy.deepcopy(second)
    done["status"] = {"phase": "finished", "code": "FT", "label": "Match Finished", "period": 2,
                      "clock": "90"}
    result3 = diff(result2.state, fetched(done, NOW + 2), now=NOW + 3)
    check(result2.state, result3)
    assert result3.delta is not None and result3.delta["seq"] == 4
    assert result3.delta["events"][0]["type"] == "final"


def test_corrected_event_is_an_amendment_not_a_cancellation() -> None:
    wrong = make_event(23, player="M. Salah")
    scored = live(make_match(), minute=24, events=[wrong],
                  score={"home": 1, "away": 0, "periods": {}})
    state = diff(None, scored, now=NOW).state
    right = make_event(23, player="Mohamed Salah")
    result = diff(state, fetched(live(scored, minute=24, events=[right]), NOW), now=NOW + 1)
    check(state, result)
    assert result.delta is not None
    assert [(e["type"], e.get("amends")) for e in result.delta["events"]] == [
        ("goal", wrong["id"])]


def test_patch_stays_exact_when_the_list_diff_is_wrong(monkeypatch: Any) -> None:
    events = [make_event(10), make_event(20, "card", detail="Yellow Card")]
    state = diff(None, live(make_match(), minute=30, events=events), now=NOW).state
    wrong = [{"op": "remove", "path": "/0"}]
    monkeypatch.setattr(jsonpatch, "make_patch",
                        lambda a, b: jsonpatch.JsonPatch(wrong if isinstance(a, list) else []))
    changed = live(make_match(), minute=30, events=[events[1], make_event(25)])
    result = diff(state, fetched(changed, NOW), now=NOW + 1)
    check(state, result)
    assert result.delta is not None and result.state is not None
    assert result.delta["changes"][0] == {
        "op": "replace", "path": "/events", "value": result.state["snapshot"]["events"]}


# -- property: any sequence of provider answers ---------------------------------------------

MUTATIONS = ("tick", "goal", "away_goal", "var", "card", "sub", "period", "logo", "reorder",
             "repeat", "stale", "absent", "detail", "finish", "rename", "correct")


def mutate(match: Match, op: str, n: int) -> Match:
    m: dict[str, Any] = copy.deepcopy(dict(match))
    status, score = m["status"], m["score"]
    minute = int(status["clock"] or 0) + 1
    if op == "tick":
        status["clock"] = str(minute)
    elif op in ("goal", "away_goal"):
        side = "home" if op == "goal" else "away"
        m["events"].append(make_event(minute, "goal", side, f"Scorer {n}"))
        score[side] = (score[side] or 0) + 1
    elif op == "var":
        goals = [e for e in m["events"] if e["type"] == "goal"]
        if goals:
            gone = goals[-1]
            m["events"].remove(gone)
            side = gone["team"] or "home"
            score[side] = (score[side] or 1) - 1
            m["events"].append(make_event(minute, "var", side, f"Ref {n}",
                                          detail="Goal cancelled"))
    elif op == "card":
        m["events"].append(make_event(minute, "card", "away", f"Player {n}", extra=n % 3,
                                      detail="Yellow Card"))
    elif op == "sub":
        m["events"].append(make_event(minute, "substitution", "home", f"Sub {n}", detail=None))
    elif op == "period":
        status["period"] = (status["period"] or 0) + 1
        status["code"] = f"P{status['period']}"
        score["periods"][status["code"]] = {"home": 0, "away": 0}
    elif op == "logo":
        m["home"]["logo"] = f"https://cdn.example/40.png?v={n}"
    elif op == "reorder":
        m["events"].reverse()
    elif op == "absent":
        m["events"] = []
        m["detail"] = None
        m["_absent"] = ["events", "detail"]
    elif op == "detail":
        m["detail"] = {"statistics": [{"team": "home", "shots": n}]}
    elif op == "finish":
        status.update(phase="finished", code="FT", label="Match Finished")
    elif op == "rename":
        m["venue"] = {"id": "550", "name": f"Anfield {n}", "city": "Liverpool"}
    elif op == "correct" and m["events"]:
        event = m["events"][0]
        event["player"] = {"id": None, "name": f"Corrected {n}"}
        event["id"] = f"{event['id']}-c{n}"
    return m  # type: ignore[return-value]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(MUTATIONS), min_size=1, max_size=40))
def test_any_sequence_of_answers_gives_gapless_exact_deltas(ops: list[str]) -> None:
    truth = live(make_match(), minute=0)
    state: MatchState | None = None
    seqs: list[int] = []
    last: Match | None = None
    for n, op in enumerate(["start", *ops]):
        at = NOW + n
        if op == "start":
            record = fetched(truth, at)
        elif op == "repeat":
            if last is None:
                continue
            record = last
        elif op == "stale":
            record = fetched(mutate(truth, "goal", n), at - 1000)
        else:
            truth_next = mutate(truth, op, n)
            record = fetched(truth_next, at)
            truth = copy.deepcopy(truth_next)
            truth.pop("_absent", None)  # type: ignore[typeddict-item]
            if op == "absent" and state is not None:
                truth["events"] = copy.deepcopy(state["snapshot"]["events"])
                truth["detail"] = copy.deepcopy(state["snapshot"]["detail"])
        result = diff(state, record, now=at + 0.5)
        if op == "stale" and state is not None:
            assert result.skipped == "stale"
        if op == "repeat":
            assert result.delta is None
        if result.delta is None:
            assert result.skipped in ("unchanged", "noise", "stale")
            if result.state is not None:
                assert result.state["seq"] == state["seq"]  # type: ignore[index]
                state = result.state
            continue
        check(state, result)
        assert result.state is not None
        assert "_absent" not in result.state["snapshot"]
        seqs.append(result.delta["seq"])
        state = result.state
        last = record
    assert seqs == list(range(1, len(seqs) + 1))
