"""Change detection: compare a normalised Match with the last state of that match.

:func:`diff` is pure. Given the state stored for a match (or ``None``) and the
Match the normaliser just produced, it decides whether a client would act on
the difference and, if so, builds the next snapshot and the Delta that leads to
it. The detect agent stores ``result.state`` after the delta is on the broker.

Invariants
    * ``seq`` is 1 for the first delta of a match and grows by one per delta.
    * ``apply(prev_snapshot, delta) == next_snapshot`` exactly, including
      ``seq``, ``updated_at`` and ``fetched_at``. The first (``created``) delta
      carries ``[{"op": "add", "path": "", "value": snapshot}]``: an ``add`` at
      the root replaces the whole document (RFC 6902 §4.1), so it applies to
      "nothing yet" (``None`` or ``{}``) and needs no existing target, unlike
      ``replace``.
    * Re-processing a Match already seen, or one fetched earlier than the state,
      yields no delta (``skipped`` says why).

What counts as a change is decided on :func:`projection`, which leaves out
bookkeeping (``version``, ``seq``, ``updated_at``, ``fetched_at``), logo and
flag URLs, and the order of ``events``. A difference only in logos is
``"noise"``: it is not published on its own, and reaches clients with the next
real change.

Kinds
    ``created`` (first delta), ``score`` (totals or per-period scores),
    ``status`` (phase, code, label, period, or ``start_time``: a re-scheduled
    match is a status change for a client), ``events`` (added or retracted),
    ``clock`` (``status.clock``; a delta whose kinds are exactly ``["clock"]``
    is a clock tick that edges may coalesce), ``detail`` (``detail``, and the
    descriptive fields: league, team names and ids, venue).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, NotRequired, TypedDict, cast

import jsonpatch

from tables.records import (
    DELTA_KINDS,
    FINAL_PHASES,
    RECORD_VERSION,
    Delta,
    Event,
    Match,
)

__all__ = ["DiffResult", "MatchState", "apply", "diff", "projection"]


class MatchState(TypedDict):
    """What the detect agent keeps per match in its changelog-backed table.

    ``snapshot`` is the last published snapshot and ``seq`` its seq.
    ``fetched_at`` is the fetch time of the newest provider answer taken into
    account, which can be later than ``snapshot["fetched_at"]`` when newer
    answers brought nothing new.
    """

    snapshot: Match
    seq: int
    fetched_at: float
    #: provider time of the first answer in a row that was behind the snapshot (see :func:`behind`)
    behind_since: NotRequired[float]


@dataclass(frozen=True, slots=True)
class DiffResult:
    """The outcome of :func:`diff`.

    ``delta`` is the Delta to publish, or ``None`` with ``skipped`` naming why
    (``"unchanged"``, ``"noise"``, ``"stale"``). ``state`` is what to store for
    the match, or ``None`` when the stored state needs no update. A skipped
    answer that is newer than the state comes back with the state's
    ``fetched_at`` moved forward: storing it makes a still older answer that
    arrives later count as stale. Storing it is optional; it never changes seq.
    """

    delta: Delta | None
    state: MatchState | None
    skipped: str | None


SKIP_UNCHANGED = "unchanged"
SKIP_NOISE = "noise"
SKIP_STALE = "stale"

#: Seconds of provider time an answer behind the snapshot must persist to count as a correction.
BEHIND_ACCEPTED_AFTER = 300.0
_PHASE_RANK = {"scheduled": 0, "live": 1, "break": 1, "finished": 2}

#: Value of a field the provider payload did not include, when there is no previous snapshot.
ABSENT_DEFAULTS: dict[str, Any] = {"events": [], "detail": None, "venue": None}

GOAL_TYPES = frozenset({"goal", "own_goal", "penalty_goal"})

_BOOKKEEPING = ("version", "seq", "updated_at", "fetched_at")
_TEAM_NOISE = ("logo",)
_LEAGUE_NOISE = ("logo", "flag")
_STATUS_FIELDS = ("phase", "code", "label", "period")
_DESCRIPTIVE = ("provider", "provider_id", "league", "home", "away", "venue")


def event_order(event: Event) -> tuple[int, int, str]:
    """Sort key of match events: (minute, extra, id); a missing minute sorts first."""
    minute = event.get("minute")
    extra = event.get("extra")
    return (
        -1 if minute is None else minute,
        -1 if extra is None else extra,
        event["id"],
    )


def projection(match: Match | dict[str, Any]) -> dict[str, Any]:
    """The part of a Match a client acts on: two Matches with equal projections are the same."""
    out = {k: v for k, v in match.items() if k not in _BOOKKEEPING and k != "_absent"}
    for side in ("home", "away"):
        team = out.get(side)
        if isinstance(team, dict):
            out[side] = {k: v for k, v in team.items() if k not in _TEAM_NOISE}
    league = out.get("league")
    if isinstance(league, dict):
        out["league"] = {k: v for k, v in league.items() if k not in _LEAGUE_NOISE}
    events = out.get("events")
    if isinstance(events, list):
        out["events"] = sorted(events, key=event_order)
    return out


def apply(snapshot: Match | None, delta: Delta) -> Match:
    """Apply a delta's changes to the snapshot it follows; the input is not modified."""
    doc: dict[str, Any] = dict(snapshot) if snapshot is not None else {}
    return cast(Match, jsonpatch.apply_patch(doc, delta["changes"], in_place=False))


def diff(prev: MatchState | None, new: Match, *, now: float) -> DiffResult:
    """Compare ``new`` with the stored state ``prev`` and build the delta, if any.

    ``new`` may carry ``"_absent": [field, ...]``, the fields its source payload
    did not include; they are taken from the previous snapshot (or defaulted)
    and ``_absent`` never reaches the output. Neither argument is modified.

    An answer fetched before the state's ``fetched_at`` is stale. One fetched at
    the same time is compared as usual: either the same record processed again
    (unchanged) or another endpoint's answer from the same poll.
    """
    current = _fill_absent(new, prev["snapshot"] if prev is not None else None)
    fetched_at = float(current["fetched_at"])

    if prev is None:
        snapshot = _next_snapshot(current, seq=1, now=now)
        delta = _delta(snapshot, ["created"], [{"op": "add", "path": "", "value": snapshot}], [],
                       now=now)
        return DiffResult(delta, MatchState(snapshot=snapshot, seq=1, fetched_at=fetched_at), None)

    if fetched_at < prev["fetched_at"]:
        return DiffResult(None, None, SKIP_STALE)

    old = prev["snapshot"]
    if behind(old, current):
        since = prev.get("behind_since", fetched_at)
        if fetched_at - since < BEHIND_ACCEPTED_AFTER:
            # An old copy (a provider cache that stopped updating): held back, unless it
            # persists long enough to be a correction.
            held = MatchState(snapshot=old, seq=prev["seq"], fetched_at=prev["fetched_at"],
                              behind_since=since)
            return DiffResult(None, held, SKIP_STALE)
    before, after = projection(old), projection(current)
    if before == after:
        reason = SKIP_NOISE if _logos(old) != _logos(current) else SKIP_UNCHANGED
        state = None
        if fetched_at > prev["fetched_at"] or "behind_since" in prev:
            state = MatchState(snapshot=old, seq=prev["seq"],
                               fetched_at=max(fetched_at, prev["fetched_at"]))
        return DiffResult(None, state, reason)

    seq = prev["seq"] + 1
    snapshot = _next_snapshot(current, seq=seq, now=now)
    kinds = _kinds(before, after)
    changes = _patch(old, snapshot)
    events = _semantic_events(old, snapshot)
    delta = _delta(snapshot, kinds, changes, events, now=now)
    return DiffResult(delta, MatchState(snapshot=snapshot, seq=seq, fetched_at=fetched_at), None)


def behind(old: Match | dict[str, Any], new: Match | dict[str, Any]) -> bool:
    """Whether ``new`` describes an earlier moment of the match than ``old``: an earlier
    phase (finished back to live, live back to scheduled) or period, or a lower score
    without a VAR event more to take a goal back."""
    o_status, n_status = old.get("status") or {}, new.get("status") or {}
    o_rank, n_rank = _PHASE_RANK.get(o_status.get("phase")), _PHASE_RANK.get(n_status.get("phase"))
    if o_rank is None or n_rank is None:
        return False
    if n_rank != o_rank:
        return n_rank < o_rank
    if o_rank == 0:
        return False
    o_period, n_period = o_status.get("period"), n_status.get("period")
    if isinstance(o_period, int) and isinstance(n_period, int) and n_period != o_period:
        return n_period < o_period
    o_score, n_score = old.get("score") or {}, new.get("score") or {}
    lower = any(isinstance(o_score.get(side), int)
                and (not isinstance(n_score.get(side), int) or n_score[side] < o_score[side])
                for side in ("home", "away"))
    return lower and _count(new, "var") <= _count(old, "var")


def _count(match: Match | dict[str, Any], kind: str) -> int:
    return sum(1 for e in match.get("events") or [] if isinstance(e, dict) and e.get("type") == kind)


def _fill_absent(new: Match, prev: Match | None) -> dict[str, Any]:
    out: dict[str, Any] = dict(new)
    absent = out.pop("_absent", None) or ()
    for field in absent:
        if prev is not None and field in prev:
            out[field] = prev[field]  # type: ignore[literal-required]
        else:
            out[field] = copy.deepcopy(ABSENT_DEFAULTS.get(field))
    return out


def _next_snapshot(match: dict[str, Any], *, seq: int, now: float) -> Match:
    snapshot = dict(match)
    snapshot["events"] = sorted(match.get("events") or [], key=event_order)
    snapshot["seq"] = seq
    snapshot["updated_at"] = now
    return cast(Match, snapshot)


def _delta(snapshot: Match, kinds: list[str], changes: list[dict[str, Any]],
           events: list[dict[str, Any]], *, now: float) -> Delta:
    return Delta(
        version=RECORD_VERSION,
        match_id=snapshot["id"],
        seq=snapshot["seq"],
        ts=now,
        sport=snapshot["sport"],
        league=snapshot["league"]["id"],
        kinds=kinds,
        changes=changes,
        events=events,
        fetched_at=snapshot["fetched_at"],
    )


def _logos(match: Match | dict[str, Any]) -> tuple[Any, ...]:
    league = match.get("league") or {}
    return (
        (match.get("home") or {}).get("logo"),
        (match.get("away") or {}).get("logo"),
        *(league.get(k) for k in _LEAGUE_NOISE),
    )


def _kinds(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    found: set[str] = set()
    if before.get("score") != after.get("score"):
        found.add("score")
    b_status, a_status = before.get("status") or {}, after.get("status") or {}
    if any(b_status.get(k) != a_status.get(k) for k in _STATUS_FIELDS):
        found.add("status")
    if before.get("start_time") != after.get("start_time"):
        found.add("status")
    if b_status.get("clock") != a_status.get("clock"):
        found.add("clock")
    if before.get("events") != after.get("events"):
        found.add("events")
    if before.get("detail") != after.get("detail"):
        found.add("detail")
    if any(before.get(k) != after.get(k) for k in _DESCRIPTIVE):
        found.add("detail")
    rest = set(before) | set(after)
    rest -= {"score", "status", "start_time", "events", "detail", *_DESCRIPTIVE}
    if any(before.get(k) != after.get(k) for k in rest):
        found.add("detail")
    return [k for k in DELTA_KINDS if k in found]


def _patch(old: Match, new: Match) -> list[dict[str, Any]]:
    """RFC 6902 operations from ``old`` to ``new``, diffing only the top-level fields that differ.

    Each field's patch is checked by applying it: a minimal list diff can come
    out wrong for some reorderings, and then the field is replaced whole.
    """
    before: dict[str, Any] = dict(old)
    after: dict[str, Any] = dict(new)
    out: list[dict[str, Any]] = []
    for key in sorted(before.keys() | after.keys()):
        path = "/" + key.replace("~", "~0").replace("/", "~1")
        if key not in after:
            out.append({"op": "remove", "path": path})
        elif key not in before:
            out.append({"op": "add", "path": path, "value": after[key]})
        elif before[key] != after[key]:
            out.extend(_field_patch(path, before[key], after[key]))
    return out


def _field_patch(path: str, old: Any, new: Any) -> list[dict[str, Any]]:
    if isinstance(old, (dict, list)) and type(old) is type(new):
        ops: list[dict[str, Any]] = jsonpatch.make_patch(old, new).patch
        try:
            exact = jsonpatch.apply_patch(old, ops, in_place=False) == new
        except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException):
            exact = False
        if exact:
            for op in ops:
                op["path"] = path + op["path"]
                if "from" in op:
                    op["from"] = path + op["from"]
            return ops
    return [{"op": "replace", "path": path, "value": new}]


def _name(ref: Any) -> str | None:
    return ref.get("name") if isinstance(ref, dict) else None


def _total(match: Match) -> dict[str, int | None]:
    score = match.get("score") or {}
    return {"home": score.get("home"), "away": score.get("away")}


def _event_fields(event: Event) -> dict[str, Any]:
    return {
        "id": event["id"],
        "team": event.get("team"),
        "minute": event.get("minute"),
        "extra": event.get("extra"),
        "player": _name(event.get("player")),
        "assist": _name(event.get("assist")),
        "detail": event.get("detail"),
    }


def _status_events(old: Match, new: Match) -> Iterable[dict[str, Any]]:
    b, a = old["status"], new["status"]
    change = {
        "from": {"phase": b["phase"], "code": b["code"], "label": b["label"]},
        "to": {"phase": a["phase"], "code": a["code"], "label": a["label"]},
    }
    if b["phase"] != a["phase"]:
        if b["phase"] == "scheduled" and a["phase"] in ("live", "break"):
            kind = "kickoff"
        elif a["phase"] == "finished":
            kind = "final"
        elif a["phase"] in ("postponed", "cancelled"):
            kind = a["phase"]
        else:
            kind = "status"
        yield {"type": kind, **change}
    elif b["code"] != a["code"] or b["label"] != a["label"]:
        yield {"type": "status", **change}
    if b.get("period") != a.get("period"):
        yield {"type": "period", "from": b.get("period"), "to": a.get("period"), "code": a["code"]}
    if old.get("start_time") != new.get("start_time") and a["phase"] not in FINAL_PHASES:
        yield {"type": "rescheduled", "from": old.get("start_time"), "to": new.get("start_time")}


def _match_events(old: Match, new: Match) -> tuple[list[dict[str, Any]], bool]:
    """Semantic events for added and retracted match events, and whether any was a goal."""
    before = {e["id"]: e for e in old.get("events") or []}
    after = {e["id"]: e for e in new.get("events") or []}
    added = [e for i, e in after.items() if i not in before]
    removed = [e for i, e in before.items() if i not in after]
    score = _total(new)

    def slot(e: Event) -> tuple[Any, ...]:
        return (e["type"], e.get("team"), e.get("minute"), e.get("extra"))

    # Event ids derive from content, so a provider correcting a detail (a player's
    # name) looks like a removal plus an addition at the same moment: an amendment.
    removed_by_slot: dict[tuple[Any, ...], list[Event]] = {}
    for e in removed:
        removed_by_slot.setdefault(slot(e), []).append(e)

    out: list[dict[str, Any]] = []
    goals = False
    amended: set[str] = set()
    for e in sorted(added, key=event_order):
        item: dict[str, Any] = {"type": e["type"], **_event_fields(e)}
        candidates = removed_by_slot.get(slot(e))
        if candidates:
            replaced = candidates.pop(0)
            amended.add(replaced["id"])
            item["amends"] = replaced["id"]
        elif e["type"] in GOAL_TYPES:
            goals = True
        if e["type"] in GOAL_TYPES:
            item["score"] = score
        out.append(item)
    for e in sorted(removed, key=event_order):
        if e["id"] in amended:
            continue
        if e["type"] in GOAL_TYPES:
            goals = True
            out.append({"type": "goal_cancelled", "goal_type": e["type"], **_event_fields(e),
                        "score": score})
        else:
            out.append({"type": "event_cancelled", "event_type": e["type"], **_event_fields(e)})
    return out, goals


def _semantic_events(old: Match, new: Match) -> list[dict[str, Any]]:
    out = list(_status_events(old, new))
    from_events, goals = _match_events(old, new)
    out.extend(from_events)
    before, after = _total(old), _total(new)
    moved = [side for side in ("home", "away") if (after[side] or 0) != (before[side] or 0)]
    if moved and not goals:
        item: dict[str, Any] = {"type": "score", "from": before, **after}
        raised = [side for side in moved if (after[side] or 0) > (before[side] or 0)]
        if len(raised) == 1:
            item["team"] = raised[0]
            item["points"] = (after[raised[0]] or 0) - (before[raised[0]] or 0)
        out.append(item)
    return out
