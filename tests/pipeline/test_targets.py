import datetime as dt

from pipeline import targets as tg

NOW = dt.datetime(2026, 11, 29, 18, 0, tzinfo=dt.timezone.utc).timestamp()


def m(pid, phase, start_offset):
    return tg.KnownMatch(str(pid), phase, NOW + start_offset)


def by_key(targets):
    return {t.key: t for t in targets}


def test_football_live_cadence_while_a_match_is_in_play():
    t = by_key(tg.plan("football", NOW, [m(1, "live", -1800)], set()))
    assert t["football:live"].interval == tg.LIVE_INTERVAL
    assert t["football:live"].params == {"live": "all"}


def test_football_idles_when_nothing_is_live_or_near():
    t = by_key(tg.plan("football", NOW, [m(1, "scheduled", 5 * 3600)], set()))
    assert t["football:live"].interval == tg.IDLE_LIVE_INTERVAL
    assert t["football:date:2026-11-29"].interval == tg.FAR_INTERVAL


def test_upcoming_kickoff_tightens_the_schedule_poll():
    t = by_key(tg.plan("football", NOW, [m(1, "scheduled", 3600)], set()))
    assert t["football:date:2026-11-29"].interval == tg.SOON_INTERVAL


def test_watched_live_matches_get_detail_in_batches_of_20():
    matches = [m(i, "live", -600) for i in range(45)]
    watched = {str(i) for i in range(0, 45, 1)} - {"3"}
    detail = [t for t in tg.plan("football", NOW, matches, watched) if "ids" in t.params]
    assert [len(t.params["ids"].split("-")) for t in detail] == [20, 20, 4]
    assert all(t.priority == 1 and t.interval == tg.DETAIL_INTERVAL for t in detail)
    assert "3" not in "-".join(t.params["ids"] for t in detail).split("-")


def test_unwatched_matches_get_no_detail():
    assert not [t for t in tg.plan("football", NOW, [m(1, "live", 0)], set()) if "ids" in t.params]


def test_basketball_polls_the_date_list_live_only_while_games_are_on():
    live = by_key(tg.plan("basketball", NOW, [m(1, "live", -600)], set()))
    idle = by_key(tg.plan("basketball", NOW, [m(1, "finished", -9000)], set()))
    assert live["basketball:date:2026-11-29"].interval == tg.LIVE_INTERVAL
    assert live["basketball:date:2026-11-29"].priority == 0
    assert idle["basketball:date:2026-11-29"].interval == tg.FAR_INTERVAL


def test_a_game_that_started_yesterday_keeps_yesterdays_list():
    t = by_key(tg.plan("hockey", NOW + 6.5 * 3600, [m(1, "live", 5.5 * 3600)], set()))
    assert "hockey:date:2026-11-29" in t and "hockey:date:2026-11-30" in t


def test_nothing_known_yet_polls_at_live_cadence():
    t = by_key(tg.plan("hockey", NOW, [], set(), known=False))
    assert t["hockey:date:2026-11-29"].interval == tg.LIVE_INTERVAL


def test_confirm_targets_are_one_shot():
    (single,) = tg.confirm_targets("football", ["9"])
    assert single.once and single.params == {"id": "9"}
    batch = tg.confirm_targets("football", [str(i) for i in range(25)])
    assert [len(b.params["ids"].split("-")) for b in batch] == [20, 5]


def test_stretch_serves_priorities_in_order():
    assert tg.stretch([0.1, 0.1, 0.1, 0.1], 1.0) == [1.0, 1.0, 1.0, 1.0]
    f = tg.stretch([0.5, 0.2, 0.4, 0.1], 0.8)
    assert f[0] == 1.0 and f[1] == 1.0
    assert abs(f[2] - 4.0) < 1e-9
    assert f[3] == tg.MAX_INTERVAL


def test_live_cadence_starts_two_minutes_before_kickoff():
    soon = by_key(tg.plan("football", NOW, [m(1, "scheduled", 5 * 60)], set()))
    assert soon["football:live"].interval == tg.IDLE_LIVE_INTERVAL
    near = by_key(tg.plan("football", NOW, [m(1, "scheduled", 90)], set()))
    assert near["football:live"].interval == tg.LIVE_INTERVAL
    late = by_key(tg.plan("hockey", NOW, [m(1, "scheduled", -50 * 60)], set()))
    assert late["hockey:date:2026-11-29"].interval == tg.LIVE_INTERVAL


def test_plans_are_as_fine_in_provider_time_at_any_clock_speed():
    from pipeline.poller import plan_every

    assert plan_every(1.0) == 1.0  # the real clock: every second
    assert plan_every(480.0) * 480 == 15.0  # a fast simulated day: every 15 provider seconds
    assert plan_every(20.0) * 20 == 15.0


def test_a_replanned_target_keeps_its_stretched_interval_and_its_wait():
    old = tg.PollTarget("basketball:date:2026-11-29", "basketball", "games", {}, 0, 15.0)
    old.last_polled, old.next_due = NOW, NOW + 60.0  # polled, stretched four times
    new = tg.PollTarget(old.key, "basketball", "games", {}, 0, 15.0)
    tg.carry_over(new, old, 60.0, NOW + 1)
    assert new.next_due == NOW + 60.0 and new.last_polled == NOW
    # the budget refused a call and asked to wait an hour: re-planning keeps the wait
    old.not_before = old.next_due = NOW + 3600.0
    again = tg.PollTarget(old.key, "basketball", "games", {}, 0, 15.0)
    tg.carry_over(again, old, 15.0, NOW + 2)
    assert again.next_due == NOW + 3600.0
    # a new target is due at once; one never polled keeps its due time
    fresh = tg.PollTarget("hockey:date:2026-11-29", "hockey", "games", {}, 0, 15.0)
    tg.carry_over(fresh, None, 15.0, NOW)
    assert fresh.next_due == NOW
    unpolled = tg.PollTarget(fresh.key, "hockey", "games", {}, 0, 15.0)
    fresh.next_due = NOW + 5
    tg.carry_over(unpolled, fresh, 15.0, NOW + 1)
    assert unpolled.next_due == NOW + 5
