"""API keys: ``bts_{id}_{secret}``. Only SHA-256 of the secret is stored.

The id is public (it names the key in listings and usage); the secret is 32
random bytes. Keys are compared in constant time.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

import asyncpg

from tables.migrate import quote_ident

KEY_RE = re.compile(r"^bts_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")


class MalformedKey(ValueError):
    """A string that cannot be an API key."""


@dataclass(frozen=True)
class ApiKey:
    id: str
    name: str
    tier: str
    created_at: dt.datetime
    revoked_at: dt.datetime | None
    secret_hash: bytes = b""

    def public(self) -> dict[str, object]:
        return {
            "id": self.id, "name": self.name, "tier": self.tier,
            "created_at": self.created_at.isoformat(),
            "revoked_at": self.revoked_at.isoformat() if self.revoked_at else None,
        }


def new_key() -> tuple[str, str, bytes]:
    """(key id, the full key to show once, the hash to store)."""
    key_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    return key_id, f"bts_{key_id}_{secret}", hash_secret(secret)


def hash_secret(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def split(key: str) -> tuple[str, str]:
    m = KEY_RE.match(key)
    if not m:
        raise MalformedKey("malformed API key")
    return m.group(1), m.group(2)


def matches(secret: str, stored_hash: bytes) -> bool:
    return hmac.compare_digest(hash_secret(secret), stored_hash)


class KeyStore:
    def __init__(self, pool: asyncpg.Pool, schema: str) -> None:
        self.pool = pool
        self.t = f"{quote_ident(schema)}.api_keys"

    async def create(self, name: str, tier: str) -> tuple[ApiKey, str]:
        key_id, full, digest = new_key()
        async with self.pool.acquire() as conn:
            row = await conn.fetchrow(
                f"INSERT INTO {self.t} (id, name, tier, secret_hash) VALUES ($1, $2, $3, $4)"
                " RETURNING id, name, tier, created_at, revoked_at, secret_hash",
                key_id, name, tier, digest)
        return ApiKey(**dict(row)), full

    async def list(self) -> list[ApiKey]:
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(
                f"SELECT id, name, tier, created_at, revoked_at FROM {self.t} ORDER BY created_at")
        return [ApiKey(**dict(r)) for r in rows]

    async def revoke(self, key_id: str) -> ApiKey | None:
        async with self.pool.acquire() as conn:
            row = await conn.fetchrow(
                f"UPDATE {self.t} SET revoked_at = coalesce(revoked_at, now()) WHERE id = $1"
                " RETURNING id, name, tier, created_at, revoked_at", key_id)
        return ApiKey(**dict(row)) if row else None

    async def get(self, key_id: str) -> ApiKey | None:
        async with self.pool.acquire() as conn:
            row = await conn.fetchrow(
                f"SELECT id, name, tier, created_at, revoked_at, secret_hash FROM {self.t}"
                " WHERE id = $1", key_id)
        return ApiKey(**dict(row)) if row else None

    async def revoked_since(self, since: dt.datetime) -> list[tuple[str, dt.datetime]]:
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(
                f"SELECT id, revoked_at FROM {self.t} WHERE revoked_at IS NOT NULL"
                " AND revoked_at > $1", since)
        return [(r["id"], r["revoked_at"]) for r in rows]
