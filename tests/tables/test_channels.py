import pytest

from tables.channels import ChannelError, channels_for, validate


@pytest.mark.parametrize(
    "name",
    ["sport.football", "league.hockey.57", "match.football-apifootball-1149519",
     "private-match.basketball-apibasketball-1", "presence-match.hockey-apihockey-9"],
)
def test_valid_channels(name):
    assert validate(name) == name


@pytest.mark.parametrize(
    "name",
    ["", "sport.", "sport.curling", "league.football", "match.x", "sport.football ",
     "a" * 200, "match.football-apifootball-1/2", "league.football.39.1", "sport.FOOTBALL"],
)
def test_invalid_channels(name):
    with pytest.raises(ChannelError):
        validate(name)


def test_channels_for_a_match():
    assert channels_for("football", "39", "football-apifootball-1") == (
        "sport.football", "league.football.39", "match.football-apifootball-1")
