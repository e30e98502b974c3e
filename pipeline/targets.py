"""Poll targets and how often each is worth polling: pure functions of what is known.

A :class:`PollTarget` is one upstream call repeated on a schedule. :func:`plan`
turns the state of the day (matches by phase and start time, which matches
clients watch) into the targets of one sport, with intervals in provider
seconds:

- football ``fixtures?live=all`` (every live match with its events, one call):
  every 15 s while a match is in play or about to start (within 2 min, or up to an
  hour late), every 5 min otherwise;
- basketball and hockey ``games?date=D`` (their only aggregated call): every 15 s
  while a game of that day is in play or about to start, else by time to the next
  start (30 min within two hours, 3 h otherwise);
- the day's football schedule ``fixtures?date=D``: by time to the next kick-off,
  as above;
- football ``fixtures?ids=a-b-…`` (20 per call, with events, lineups and
  statistics) for watched matches in play, every minute;
- a finished match is confirmed once by ``fixtures?id=`` and then dropped.

:func:`stretch` spreads a provider's remaining daily budget: priorities are served
in order and the first one that does not fit, and every one after it, has its
intervals stretched.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

LIVE_INTERVAL = 15.0
DETAIL_INTERVAL = 60.0
IDLE_LIVE_INTERVAL = 300.0
SOON_INTERVAL = 1800.0
FAR_INTERVAL = 3 * 3600.0
MAX_INTERVAL = 6 * 3600.0
SOON = 2 * 3600.0
ABOUT_TO_START = 2 * 60.0
IDS_PER_CALL = 20

PROVIDER_OF = {"football": "apifootball", "basketball": "apibasketball", "hockey": "apihockey"}
ENDPOINT_OF = {"football": "fixtures", "basketball": "games", "hockey": "games"}


@dataclass(frozen=True)
class KnownMatch:
    provider_id: str
    phase: str
    start: float  # provider epoch seconds


@dataclass
class PollTarget:
    key: str
    sport: str
    endpoint: str
    params: dict[str, str]
    priority: int
    interval: float
    once: bool = False
    next_due: float = 0.0
    last_polled: float | None = None
    #: the budget refused a call: not again before this provider time
    not_before: float = 0.0
    meta: dict[str, str] = field(default_factory=dict)

    @property
    def provider(self) -> str:
        return PROVIDER_OF[self.sport]


def day_of(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).strftime("%Y-%m-%d")


def _by_time_to_start(matches: list[KnownMatch], now: float) -> float:
    upcoming = [m.start - now for m in matches if m.phase == "scheduled" and m.start >= now - 3600]
    if not upcoming:
        return FAR_INTERVAL
    nearest = min(upcoming)
    return SOON_INTERVAL if nearest <= SOON else FAR_INTERVAL


def _active(m: KnownMatch, now: float) -> bool:
    if m.phase in ("live", "break", "suspended"):
        return True
    return m.phase == "scheduled" and now - 3600 <= m.start <= now + ABOUT_TO_START


def plan(sport: str, now: float, matches: list[KnownMatch], watched: set[str],
         *, known: bool = True) -> list[PollTarget]:
    """The targets of one sport at provider time ``now``.

    ``known`` is False while nothing is known of the day yet: then every aggregated
    call is made at the live cadence until the first answers arrive.
    """
    endpoint = ENDPOINT_OF[sport]
    today = day_of(now)
    targets: list[PollTarget] = []
    active = [m for m in matches if _active(m, now)]
    if sport == "football":
        live_interval = LIVE_INTERVAL if (active or not known) else IDLE_LIVE_INTERVAL
        targets.append(PollTarget("football:live", sport, endpoint, {"live": "all"}, 0, live_interval))
        days = {today} | {day_of(m.start) for m in active}
        for day in sorted(days):
            todays = [m for m in matches if day_of(m.start) == day]
            interval = _by_time_to_start(todays, now) if known else LIVE_INTERVAL
            targets.append(PollTarget(f"football:date:{day}", sport, endpoint, {"date": day}, 2, interval))
        live_watched = sorted(m.provider_id for m in matches
                              if m.phase in ("live", "break") and m.provider_id in watched)
        for i in range(0, len(live_watched), IDS_PER_CALL):
            batch = live_watched[i:i + IDS_PER_CALL]
            targets.append(PollTarget(f"football:ids:{batch[0]}:{len(batch)}", sport, endpoint,
                                      {"ids": "-".join(batch)}, 1, DETAIL_INTERVAL))
    else:
        days = {today} | {day_of(m.start) for m in active}
        for day in sorted(days):
            todays = [m for m in matches if day_of(m.start) == day]
            live = any(_active(m, now) for m in todays) or not known
            interval = LIVE_INTERVAL if live else _by_time_to_start(todays, now)
            targets.append(PollTarget(f"{sport}:date:{day}", sport, endpoint, {"date": day},
                                      0 if live else 2, interval))
    return targets


def carry_over(new: PollTarget, old: PollTarget | None, interval: float, now: float) -> None:
    """Schedule ``new``, a re-planned ``old``: ``interval`` (already stretched to the budget)
    after its last poll, and never before a time the budget asked to wait for."""
    if old is None:
        new.next_due = now
        return
    new.last_polled = old.last_polled
    new.not_before = old.not_before
    due = old.next_due if old.last_polled is None else old.last_polled + interval
    new.next_due = max(due, new.not_before)


def confirm_targets(sport: str, finished_ids: list[str]) -> list[PollTarget]:
    """One-shot calls that confirm the final state of matches that left the live list."""
    out = []
    for i in range(0, len(finished_ids), IDS_PER_CALL):
        batch = sorted(finished_ids[i:i + IDS_PER_CALL])
        params = {"ids": "-".join(batch)} if len(batch) > 1 else {"id": batch[0]}
        out.append(PollTarget(f"{sport}:confirm:{batch[0]}:{len(batch)}", sport, ENDPOINT_OF[sport],
                              params, 1, 0.0, once=True))
    return out


def demand(targets: list[PollTarget]) -> list[float]:
    """Calls per provider second wanted, by priority 0-3."""
    out = [0.0, 0.0, 0.0, 0.0]
    for t in targets:
        if not t.once and t.interval > 0:
            out[min(t.priority, 3)] += 1.0 / t.interval
    return out


def stretch(total_demand: list[float], pace: float) -> list[float]:
    """Interval factors by priority so that the demand fits ``pace`` (calls per second)."""
    left = pace
    factors = []
    for d in total_demand:
        if d <= 0:
            factors.append(1.0)
        elif d <= left:
            factors.append(1.0)
            left -= d
        else:
            factors.append(d / left if left > 1e-9 else MAX_INTERVAL)
            left = 0.0
    return factors
