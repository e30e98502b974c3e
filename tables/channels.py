"""Channel names, the same on every transport (SSE, WebSocket, Pusher).

- ``sport.{sport}``: every match of a sport
- ``league.{sport}.{league_id}``: one competition
- ``match.{match_id}``: one match
- ``private-match.{match_id}``, ``presence-match.{match_id}``: authorised variants
"""

from __future__ import annotations

import re

from tables.records import SPORTS

MAX_CHANNEL_LENGTH = 164
_ID = r"[A-Za-z0-9_-]{1,64}"
_MATCH_ID = rf"(?P<sport>[a-z]+)-[a-z0-9]{{1,32}}-{_ID}"
_PATTERNS = (
    re.compile(r"^sport\.(?P<sport>[a-z]{1,32})$"),
    re.compile(rf"^league\.(?P<sport>[a-z]{{1,32}})\.{_ID}$"),
    re.compile(rf"^(?:private-|presence-)?match\.{_MATCH_ID}$"),
)


class ChannelError(ValueError):
    """A channel name that is malformed or names an unknown sport."""

    def __init__(self, channel: str, reason: str) -> None:
        super().__init__(f"invalid channel {channel[:80]!r}: {reason}")
        self.channel = channel
        self.reason = reason


def validate(channel: str) -> str:
    if not channel or len(channel) > MAX_CHANNEL_LENGTH:
        raise ChannelError(channel, f"length must be 1-{MAX_CHANNEL_LENGTH}")
    for pattern in _PATTERNS:
        m = pattern.match(channel)
        if m:
            if m.group("sport") not in SPORTS:
                raise ChannelError(channel, f"unknown sport {m.group('sport')!r}")
            return channel
    raise ChannelError(
        channel, "expected sport.{sport}, league.{sport}.{id} or match.{match_id}"
    )


def channels_for(sport: str, league_id: str, match_id: str) -> tuple[str, ...]:
    """The public channels a delta of this match is published on."""
    return (f"sport.{sport}", f"league.{sport}.{league_id}", f"match.{match_id}")
