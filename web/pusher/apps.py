"""Pusher apps: id, key, secret, allowed origins, client events, connection quota.

One app comes from ``PUSHER_APP_ID`` / ``PUSHER_APP_KEY`` / ``PUSHER_APP_SECRET``;
``PUSHER_APPS_FILE`` names a TOML file of several, which then replaces it::

    [[apps]]
    id = "scores"
    key = "scores-key"
    secret = "a-long-random-secret"
    allowed_origins = ["https://scores.example.com", "*.example.org"]  # default ["*"]
    enabled = true                 # false: connections get 4003
    client_events = false          # default: PUSHER_CLIENT_EVENTS
    max_connections = 0            # across every edge; 0: no limit
"""

from __future__ import annotations

import fnmatch
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from pipeline.settings import Settings


class AppConfigError(ValueError):
    """The apps file cannot be read or describes an app badly."""


@dataclass(frozen=True)
class App:
    id: str
    key: str
    secret: str
    enabled: bool = True
    allowed_origins: tuple[str, ...] = ("*",)
    client_events: bool = False
    max_connections: int = 0

    def origin_allowed(self, origin: str | None) -> bool:
        """Browsers always send ``Origin``; a client that sends none is not a browser."""
        if origin is None or "*" in self.allowed_origins:
            return True
        host = urlparse(origin).hostname or ""
        return any(fnmatch.fnmatchcase(origin, pattern) or fnmatch.fnmatchcase(host, pattern)
                   for pattern in self.allowed_origins)


class Apps:
    def __init__(self, apps: list[App]) -> None:
        if not apps:
            raise AppConfigError("at least one Pusher app is needed")
        self.all = apps
        self.by_key = {a.key: a for a in apps}
        self.by_id = {a.id: a for a in apps}
        if len(self.by_key) != len(apps) or len(self.by_id) != len(apps):
            raise AppConfigError("Pusher app ids and keys must be unique")

    @property
    def default(self) -> App:
        return self.all[0]

    @classmethod
    def from_settings(cls, settings: Settings) -> Apps:
        if settings.pusher_apps_file:
            return cls(load_file(settings.pusher_apps_file, settings.pusher_client_events))
        return cls([App(settings.pusher_app_id, settings.pusher_app_key, settings.pusher_app_secret,
                        client_events=settings.pusher_client_events)])


def load_file(path: str | Path, client_events: bool = False) -> list[App]:
    file = Path(path)
    try:
        data = tomllib.loads(file.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise AppConfigError(f"cannot read Pusher apps file {file}: {exc}") from exc
    entries = data.get("apps")
    if not isinstance(entries, list) or not entries:
        raise AppConfigError(f"{file}: expected one or more [[apps]] tables")
    return [_app(file, i, spec, client_events) for i, spec in enumerate(entries)]


def _app(file: Path, index: int, spec: Any, client_events: bool) -> App:
    where = f"{file}: app #{index + 1}"
    if not isinstance(spec, dict):
        raise AppConfigError(f"{where} is not a table")
    for field in ("id", "key", "secret"):
        value = spec.get(field)
        if not isinstance(value, str) or not value.strip():
            raise AppConfigError(f"{where}: {field} must be a non-empty string")
    origins = spec.get("allowed_origins", ["*"])
    if not isinstance(origins, list) or not all(isinstance(o, str) for o in origins):
        raise AppConfigError(f"{where}: allowed_origins must be a list of strings")
    try:
        max_connections = int(spec.get("max_connections", 0))
    except (TypeError, ValueError):
        raise AppConfigError(f"{where}: max_connections must be an integer") from None
    return App(
        id=spec["id"].strip(), key=spec["key"].strip(), secret=spec["secret"].strip(),
        enabled=bool(spec.get("enabled", True)), allowed_origins=tuple(origins),
        client_events=bool(spec.get("client_events", client_events)),
        max_connections=max(0, max_connections),
    )
