"""Subscription tiers, read from a TOML file (``web/tiers.toml`` unless ``BTS_TIERS_FILE``)."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

DEFAULT_FILE = Path(__file__).with_name("tiers.toml")
CHANNEL_KINDS = ("public", "private", "presence")


class TierConfigError(ValueError):
    pass


@dataclass(frozen=True)
class Tier:
    name: str
    rest_per_minute: int
    streams: int
    channels: frozenset[str]
    history_hours: float
    client_events: bool = False
    enabled: bool = True

    def allows_channel(self, channel: str) -> bool:
        if channel.startswith("private-"):
            return "private" in self.channels
        if channel.startswith("presence-"):
            return "presence" in self.channels
        return "public" in self.channels


def load_tiers(path: str | Path | None = None) -> dict[str, Tier]:
    file = Path(path) if path else DEFAULT_FILE
    try:
        data = tomllib.loads(file.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise TierConfigError(f"cannot read tiers file {file}: {exc}") from exc
    tiers: dict[str, Tier] = {}
    for name, spec in data.items():
        if not isinstance(spec, dict):
            raise TierConfigError(f"tier {name!r} in {file} is not a table")
        try:
            chans = frozenset(spec.get("channels", ["public"]))
            unknown = chans - set(CHANNEL_KINDS)
            if unknown:
                raise TierConfigError(f"tier {name!r}: unknown channel kinds {sorted(unknown)}")
            tiers[name] = Tier(
                name=name,
                rest_per_minute=int(spec["rest_per_minute"]),
                streams=int(spec["streams"]),
                channels=chans,
                history_hours=float(spec.get("history_hours", 24)),
                client_events=bool(spec.get("client_events", False)),
                enabled=bool(spec.get("enabled", True)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, TierConfigError):
                raise
            raise TierConfigError(f"tier {name!r} in {file}: {exc!r}") from exc
    if "anonymous" not in tiers:
        tiers["anonymous"] = Tier("anonymous", 0, 0, frozenset(), 0, enabled=False)
    return tiers
