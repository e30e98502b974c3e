"""Versioned Postgres migrations.

Files ``tables/migrations/NNNN_name.sql`` are applied in order, each in its own
transaction, and recorded in ``schema_migrations``. An advisory lock makes
concurrent runs (several workers starting at once) safe. Tables live in the
schema named by the settings, so test runs and deployments never mix.
"""

from __future__ import annotations

import importlib.resources
import re

import asyncpg

_FILE_RE = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")
_LOCK_ID = 0x6274_7367  # "btsg"


def migrations() -> list[tuple[int, str, str]]:
    """(version, name, sql) of every shipped migration, in order."""
    found = []
    for entry in importlib.resources.files("tables").joinpath("migrations").iterdir():
        m = _FILE_RE.match(entry.name)
        if m:
            found.append((int(m.group(1)), entry.name, entry.read_text(encoding="utf-8")))
    return sorted(found)


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


async def migrate(conn: asyncpg.Connection, schema: str) -> list[str]:
    """Apply every pending migration in ``schema``; returns the names applied."""
    applied: list[str] = []
    await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_ID)
    try:
        await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {quote_ident(schema)}")
        await conn.execute(f"SET search_path TO {quote_ident(schema)}")
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version int PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        for version, name, sql in migrations():
            if version in done:
                continue
            async with conn.transaction():
                await conn.execute(sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", version, name
                )
            applied.append(name)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_ID)
    return applied


async def migrate_url(url: str, schema: str) -> list[str]:
    conn = await asyncpg.connect(url)
    try:
        return await migrate(conn, schema)
    finally:
        await conn.close()
