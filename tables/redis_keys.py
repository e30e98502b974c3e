"""The Redis key layout. Every key starts with the configured prefix.

| key | type | holds |
|---|---|---|
| ``{p}match:{id}`` | string | the current Match snapshot, JSON (orjson), TTL by phase |
| ``{p}live:{sport}`` | set | ids of matches in play |
| ``{p}league:{sport}:{league}`` | sorted set | match ids scored by start time |
| ``{p}day:{YYYY-MM-DD}`` | sorted set | match ids of a UTC day scored by start time |
| ``{p}sport:{sport}`` | sorted set | every known match of a sport by start time |
| ``{p}watch:{edge}`` | hash | match id → subscriber count, published by each edge |
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RedisKeys:
    prefix: str

    def match(self, match_id: str) -> str:
        return f"{self.prefix}match:{match_id}"

    def live(self, sport: str) -> str:
        return f"{self.prefix}live:{sport}"

    def league(self, sport: str, league_id: str) -> str:
        return f"{self.prefix}league:{sport}:{league_id}"

    def day(self, day: str) -> str:
        return f"{self.prefix}day:{day}"

    def sport(self, sport: str) -> str:
        return f"{self.prefix}sport:{sport}"

    def watch(self, edge_id: str) -> str:
        return f"{self.prefix}watch:{edge_id}"

    def watch_pattern(self) -> str:
        return f"{self.prefix}watch:*"


#: Seconds a snapshot stays in Redis after its last update, by phase. ``None``: no expiry.
TTL_BY_PHASE: dict[str, int | None] = {
    "scheduled": None,
    "live": None,
    "break": None,
    "suspended": None,
    "finished": 6 * 3600,
    "abandoned": 6 * 3600,
    "postponed": 1800,
    "cancelled": 1800,
}
