"""``bts-guru``: one console script for every process.

Bad arguments or settings print a message naming the bad value and exit with
status 2.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any

from pipeline.settings import WORKER_ROLES, Settings, SettingsError
from tables.records import SPORTS


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < value <= 100_000:
        raise argparse.ArgumentTypeError(f"{text!r} must be above 0 and at most 100000")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (0-65535)")
    return value


def _whole_number(lo: int, hi: int) -> Callable[[str], int]:
    """An argparse type: a whole number from ``lo`` to ``hi``, or a message naming the value."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"{text!r} must be from {lo} to {hi}")
        return value

    return parse


_count = _whole_number(1, 16)
_matches = _whole_number(1, 5000)


def _epoch(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of epoch seconds") from None
    if not 0 <= value <= 4e9:
        raise argparse.ArgumentTypeError(f"{text!r} is not between 0 and 4e9 epoch seconds")
    return value


def _seed(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer seed") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bts-guru", description="BTS Guru real-time sports data proxy")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    dev = sub.add_parser("dev", help="run everything on this machine with embedded servers")
    dev.add_argument("--edge-port", type=_port, default=8000, help="first edge HTTP port (default 8000)")
    dev.add_argument("--sim-port", type=_port, default=0, help="simulator port (default: a free one)")
    dev.add_argument("--speed", type=_positive_float, default=60.0, help="simulated seconds per real second")
    dev.add_argument("--seed", type=_seed, default=7, help="seed of the simulated day")
    dev.add_argument("--workers", type=_count, default=1, help="number of worker processes")
    dev.add_argument("--edges", type=_count, default=1, help="number of edge processes")
    dev.add_argument("--data-dir", default=None, help="where Redis, Postgres and workers keep data (default .bts-data)")
    dev.add_argument("--text-logs", action="store_true", help="human-readable logs")

    worker = sub.add_parser("worker", help="a Faust worker: pollers, agents, sinks")
    worker.add_argument(
        "--role", choices=WORKER_ROLES, default="all",
        help="all (default): pollers, normalise, detect and the sinks; pipeline: all but "
             "the sinks; sinks: only the Redis and Postgres sinks, as a consumer group of "
             "their own")

    edge = sub.add_parser("edge", help="the Starlette edge on uvicorn")
    edge.add_argument("--host", default=None)
    edge.add_argument("--port", type=_port, default=None)

    sim = sub.add_parser("simulate", help="the provider simulator as an HTTP server")
    sim.add_argument("--host", default="127.0.0.1")
    sim.add_argument("--port", type=_port, default=8800)
    sim.add_argument("--seed", type=_seed, default=7)
    sim.add_argument("--speed", type=_positive_float, default=1.0)
    sim.add_argument("--plan", choices=["free", "pro", "ultra", "mega"], default="pro")
    sim.add_argument("--start", type=_epoch, default=None,
                     help="simulated time at start-up, epoch seconds (default: now)")
    sim.add_argument("--matches", type=_matches, default=None,
                     help="matches per sport in the simulated day (default 30 football, 15 others)")

    sub.add_parser("migrate", help="apply the Postgres schema")

    status = sub.add_parser("status", help="live state: workers, lag, schedule, quota, clients, alerts")
    status.add_argument("--json", action="store_true", help="print one JSON document")
    status.add_argument("--watch", type=_positive_float, default=None, metavar="SECONDS",
                        help="redraw every SECONDS until Ctrl-C")

    from pipeline import replay

    replay.add_arguments(sub.add_parser(
        "replay", help="read history back from the delta topic (by match, channel, time or offset)"))

    keys = sub.add_parser("keys", help="create, list and revoke API keys")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    create = keys_sub.add_parser("create", help="create a key (shown once)")
    create.add_argument("--name", required=True, type=_key_name)
    create.add_argument("--tier", required=True)
    create.add_argument("--json", action="store_true")
    listing = keys_sub.add_parser("list", help="list keys (never the secrets)")
    listing.add_argument("--json", action="store_true")
    revoke = keys_sub.add_parser("revoke", help="revoke a key on every edge within seconds")
    revoke.add_argument("id", type=_key_id)
    revoke.add_argument("--json", action="store_true")
    return parser


def _key_name(text: str) -> str:
    if not 1 <= len(text) <= 100 or not text.isprintable():
        raise argparse.ArgumentTypeError(f"{text[:40]!r} must be 1-100 printable characters")
    return text


def _key_id(text: str) -> str:
    if len(text) != 12 or any(c not in "0123456789abcdef" for c in text):
        raise argparse.ArgumentTypeError(f"{text[:40]!r} is not a key id (12 hex digits)")
    return text


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"bts-guru: error: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=getattr(logging, settings.log_level.upper()),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    if args.command == "dev":
        from pipeline.dev import run_dev

        return run_dev(args, settings)
    if args.command == "worker":
        return run_worker(settings, args.role)
    if args.command == "edge":
        return run_edge(settings, args.host, args.port)
    if args.command == "simulate":
        from pipeline.simulator.server import run

        sizes = {sport: args.matches for sport in SPORTS} if args.matches else None
        run(args.host, args.port, seed=args.seed, speed=args.speed, plan=args.plan,
            start=args.start, sizes=sizes)
        return 0
    if args.command == "status":
        from pipeline.status import run_status

        return run_status(args, settings)
    if args.command == "migrate":
        from tables.migrate import migrate_url

        applied = asyncio.run(migrate_url(settings.database_url, settings.db_schema))
        print("applied: " + (", ".join(applied) if applied else "nothing, schema is current"))
        return 0
    if args.command == "keys":
        return run_keys(parser, args, settings)
    if args.command == "replay":
        from pipeline import replay

        replay.check(parser, args)
        return replay.run(args, settings)
    parser.error(f"unknown command {args.command!r}")
    return 2


def run_keys(parser: argparse.ArgumentParser, args: argparse.Namespace, settings: Settings) -> int:
    import json

    import asyncpg

    from tables.api_keys import KeyStore
    from tables.migrate import migrate
    from web.tiers import TierConfigError, load_tiers

    if args.keys_command == "create":
        try:
            tiers = load_tiers(settings.tiers_file or None)
        except TierConfigError as exc:
            print(f"bts-guru: error: {exc}", file=sys.stderr)
            return 2
        if args.tier not in tiers or args.tier == "anonymous":
            offered = ", ".join(t for t in tiers if t != "anonymous")
            print(f"bts-guru keys create: error: --tier {args.tier!r} is not a tier "
                  f"(offered: {offered})", file=sys.stderr)
            return 2

    async def go() -> int:
        pool = await asyncpg.create_pool(settings.database_url, min_size=1, max_size=1)
        try:
            async with pool.acquire() as conn:
                await migrate(conn, settings.db_schema)
            store = KeyStore(pool, settings.db_schema)
            if args.keys_command == "create":
                key, secret = await store.create(args.name, args.tier)
                if args.json:
                    print(json.dumps({"id": key.id, "key": secret, "tier": key.tier, "name": key.name}))
                else:
                    print(f"created key {key.id} ({key.name}, tier {key.tier})")
                    print(f"  {secret}")
                    print("  This is the only time the key is shown; store it now.")
                return 0
            if args.keys_command == "list":
                rows = [k.public() for k in await store.list()]
                if args.json:
                    print(json.dumps(rows))
                else:
                    print(f"{'id':<14}{'tier':<12}{'created':<27}{'revoked':<27}name")
                    for r in rows:
                        print(f"{r['id']:<14}{r['tier']:<12}{str(r['created_at'])[:25]:<27}"
                              f"{str(r['revoked_at'] or '-')[:25]:<27}{r['name']}")
                return 0
            key = await store.revoke(args.id)
            if key is None:
                print(f"bts-guru keys revoke: error: no key {args.id}", file=sys.stderr)
                return 1
            print(json.dumps(key.public()) if args.json else f"revoked {key.id} ({key.name})")
            return 0
        finally:
            await pool.close()

    return asyncio.run(go())


def run_worker(settings: Settings, role: str = "all") -> int:
    from pipeline.app import create_app

    make_worker(create_app(settings, role=role).app, settings).execute_from_commandline()
    return 0


def make_worker(app: Any, settings: Settings) -> Any:
    import faust

    worker = faust.Worker(app, loglevel=settings.log_level.upper(), quiet=True)
    # At WARNING and above, Faust's start-up spinner puts the root logger at DEBUG so that
    # every record turns it: aiokafka and Faust then build a record for each of their
    # debug lines, about 5 % of a busy worker's time, only for the handlers to drop it.
    worker.spinner = None
    return worker


def run_edge(settings: Settings, host: str | None, port: int | None) -> int:
    import uvicorn

    from web.app import create_app

    uvicorn.run(
        create_app(settings),
        host=host or settings.edge_host,
        port=port if port is not None else settings.edge_port,
        log_level=settings.log_level,
        lifespan="on",
        timeout_graceful_shutdown=5,
        ws_max_size=1024 * 1024,
        # Deltas are small: per-message compression would cost each WebSocket that offers
        # it (every browser does) about 40 KiB of compressor state for little gain.
        ws_per_message_deflate=False,
    )
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
