"""Who is calling: API keys from ``Authorization: Bearer``, ``X-API-Key`` or the
``api_key`` query parameter (for EventSource and WebSocket clients), resolved to a
:class:`Principal` with its tier.

Keys are looked up in Postgres and cached for a few seconds; a watcher polls for
revocations every :data:`REVOKE_POLL` seconds and calls back, so a revoked key
stops working on every edge within seconds, open streams included. A request
without a key is ``anonymous`` when that tier is enabled.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import asyncpg

from tables.api_keys import KeyStore, MalformedKey, matches, split
from web.tiers import Tier

log = logging.getLogger(__name__)

CACHE_TTL = 5.0
REVOKE_POLL = 1.0


class AuthError(Exception):
    """The caller presented a key that does not work. ``code`` is stable."""

    def __init__(self, code: str, message: str, status: int = 401) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status


@dataclass(frozen=True)
class Principal:
    key_id: str | None  # None: anonymous
    name: str
    tier: Tier
    client: str  # what rate limits count against

    @property
    def anonymous(self) -> bool:
        return self.key_id is None


def key_from(headers: Mapping[str, str], query: Mapping[str, str]) -> str | None:
    auth = headers.get("authorization")
    if auth:
        scheme, _, value = auth.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    value = headers.get("x-api-key") or query.get("api_key")
    return value.strip() if value else None


class Authenticator:
    def __init__(self, pool: asyncpg.Pool, schema: str, tiers: dict[str, Tier]) -> None:
        self.keys = KeyStore(pool, schema)
        self.tiers = tiers
        self._cache: dict[str, tuple[float, object]] = {}
        self.revoked: set[str] = set()
        self.on_revoke: list[Callable[[str], object]] = []
        self._task: asyncio.Task[None] | None = None

    async def authenticate(self, key: str | None, client_addr: str) -> Principal:
        if key is None:
            anon = self.tiers["anonymous"]
            if not anon.enabled:
                raise AuthError("key_required", "an API key is required")
            return Principal(None, "anonymous", anon, f"ip:{client_addr}")
        try:
            key_id, secret = split(key)
        except MalformedKey:
            raise AuthError("malformed_key", "malformed API key") from None
        record = await self._lookup(key_id)
        if record is None or not matches(secret, record.secret_hash):  # type: ignore[attr-defined]
            raise AuthError("unknown_key", "unknown API key")
        if record.revoked_at is not None or key_id in self.revoked:  # type: ignore[attr-defined]
            raise AuthError("revoked_key", "this API key was revoked")
        tier = self.tiers.get(record.tier)  # type: ignore[attr-defined]
        if tier is None or not tier.enabled:
            raise AuthError("unknown_tier", "this API key's tier is not offered", 403)
        return Principal(key_id, record.name, tier, f"key:{key_id}")  # type: ignore[attr-defined]

    async def _lookup(self, key_id: str) -> object | None:
        now = time.monotonic()
        hit = self._cache.get(key_id)
        if hit is not None and now - hit[0] < CACHE_TTL:
            return hit[1]
        try:
            record = await self.keys.get(key_id)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            if hit is not None:
                return hit[1]
            raise AuthError("auth_unavailable", "cannot check API keys right now", 503) from exc
        self._cache[key_id] = (now, record)
        if len(self._cache) > 100_000:
            self._cache.clear()
        return record

    async def start(self) -> None:
        self._task = asyncio.create_task(self._watch())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def _watch(self) -> None:
        since = dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=1)
        while True:
            await asyncio.sleep(REVOKE_POLL)
            try:
                rows = await self.keys.revoked_since(since)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.debug("revocation check failed: %r", exc)
                continue
            for key_id, at in rows:
                since = max(since, at)
                if key_id not in self.revoked:
                    self.revoked.add(key_id)
                    self._cache.pop(key_id, None)
                    for callback in self.on_revoke:
                        callback(key_id)
