"""What every benchmark shares: the servers, isolated settings, child processes, results.

One broker (Tansu) is started for the run; Redis and Postgres are the local ones on
their standard ports when reachable, else embedded ones. Each benchmark works in its
own topic prefix, Redis key prefix and Postgres schema, and everything it starts is
stopped when it ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import psutil

from pipeline import embedded
from pipeline.settings import Settings

ROOT = Path(__file__).resolve().parent.parent

#: Tiers for the benchmarks: limits are checked on every request and stream but never reached.
TIERS = """
[anonymous]
enabled = true
rest_per_minute = 100000000
streams = 1000000
channels = ["public"]
history_hours = 1

[bench]
rest_per_minute = 100000000
streams = 1000000
channels = ["public", "private", "presence"]
history_hours = 24
"""


@dataclasses.dataclass
class Row:
    """One figure of the report."""

    bench: str
    figure: str
    value: float | None
    unit: str
    reference: str = "—"
    target: str = "—"
    ratio: float | None = None
    ok: bool | None = None
    note: str = ""

    def cells(self) -> list[str]:
        ratio = "—" if self.ratio is None else f"{self.ratio:.2f}"
        ok = {True: "yes", False: "no", None: "—"}[self.ok]
        return [self.figure, fmt(self.value, self.unit), self.reference, self.target, ratio, ok]


def fmt(value: float | None, unit: str = "") -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float) and not value.is_integer() and abs(value) < 100:
        text = f"{value:.3g}" if abs(value) < 10 else f"{value:.1f}"
    else:
        text = f"{value:,.0f}"
    return f"{text} {unit}".strip()


def pct(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    data = sorted(values)
    k = min(len(data) - 1, max(0, int(round(q / 100 * (len(data) - 1)))))
    return data[k]


def median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


class Log:
    def __init__(self) -> None:
        self.t0 = time.monotonic()

    def __call__(self, msg: str) -> None:
        print(f"[{time.monotonic() - self.t0:6.1f}s] {msg}", file=sys.stderr, flush=True)


log = Log()


# -- servers --------------------------------------------------------------------------------


class Env:
    """The run's broker, Redis and Postgres, and a way to make isolated settings."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.run_id = uuid.uuid4().hex[:6]
        self._servers: list[embedded.Embedded] = []
        self.kafka_url = ""
        self.redis_url = ""
        self.database_url = ""
        self.tiers_file = workdir / "tiers.toml"

    def start(self) -> None:
        self.tiers_file.write_text(TIERS)
        broker = embedded.start_broker(self.workdir / "broker")
        self._servers.append(broker)
        self.kafka_url = broker.url
        url = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"
        if _reachable(url, 6379):
            self.redis_url = url
        else:
            server = embedded.start_redis(self.workdir / "redis")
            self._servers.append(server)
            self.redis_url = server.url
        url = os.environ.get("DATABASE_URL") or "postgresql://postgres@127.0.0.1:5432/test"
        if _reachable(url, 5432) and asyncio.run(_pg_works(url)):
            self.database_url = url
        else:
            server = embedded.start_postgres(self.workdir / "postgres")
            self._servers.append(server)
            self.database_url = server.url

    def stop(self) -> None:
        for server in reversed(self._servers):
            server.stop()

    def settings(self, name: str, **overrides: Any) -> Settings:
        tag = f"b{self.run_id}{name}"
        values: dict[str, Any] = dict(
            kafka_url=self.kafka_url, redis_url=self.redis_url, database_url=self.database_url,
            topic_prefix=f"{tag}-", redis_prefix=f"{tag}:", db_schema=f"{tag}",
            app_id="w", partitions=4, store="memory",
            data_dir=str(self.workdir / name / "data"), fetch_wait_ms=10, log_format="text",
            log_level="warning", tiers_file=str(self.tiers_file), worker_web_port=0,
        )
        values.update(overrides)
        return Settings.from_env({}, **values)


def _reachable(url: str, default_port: int) -> bool:
    from urllib.parse import urlparse

    p = urlparse(url)
    return embedded.port_open(p.hostname or "127.0.0.1", p.port or default_port)


async def _pg_works(url: str) -> bool:
    import asyncpg

    try:
        conn = await asyncpg.connect(url, timeout=3)
    except Exception:  # noqa: BLE001 - any failure means "use the embedded one"
        return False
    await conn.close()
    return True


async def prepare(settings: Settings, topics: Sequence[str] = ("match-deltas",),
                  migrate: bool = True) -> None:
    """Create the benchmark's topics and apply its Postgres schema."""
    if topics:
        from pipeline.dev import create_topics

        await create_topics(settings, topics)
    if migrate:
        from tables.migrate import migrate_url

        await migrate_url(settings.database_url, settings.db_schema)


async def cleanup(settings: Settings) -> None:
    """Drop the benchmark's Postgres schema and Redis keys."""
    import asyncpg
    import redis.asyncio as aioredis

    from tables.migrate import quote_ident

    with contextlib.suppress(Exception):
        conn = await asyncpg.connect(settings.database_url, timeout=5)
        try:
            await conn.execute(f"DROP SCHEMA IF EXISTS {quote_ident(settings.db_schema)} CASCADE")
        finally:
            await conn.close()
    with contextlib.suppress(Exception):
        client = aioredis.Redis.from_url(settings.redis_url)
        try:
            keys = [k async for k in client.scan_iter(match=settings.redis_prefix + "*", count=1000)]
            for i in range(0, len(keys), 1000):
                await client.delete(*keys[i:i + 1000])
        finally:
            await client.aclose()


# -- child processes ------------------------------------------------------------------------


class Proc:
    """A child process in its own session, output to a log file; ``stop`` ends its group."""

    def __init__(self, name: str, argv: list[str], log_dir: Path, env: dict[str, str] | None = None,
                 stdin: bool = False) -> None:
        self.name = name
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = log_dir / f"{name}.log"
        self._log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            argv, env={**os.environ, **(env or {})}, cwd=ROOT,
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE if stdin else self._log, stderr=self._log,
            start_new_session=True,
        )

    @classmethod
    def cli(cls, name: str, args: list[str], settings: Settings, log_dir: Path,
            extra_env: dict[str, str] | None = None) -> Proc:
        return cls(name, [sys.executable, "-m", "pipeline.cli", *args], log_dir,
                   {**settings.env(), **(extra_env or {})})

    @classmethod
    def module(cls, name: str, module: str, args: list[str], log_dir: Path,
               env: dict[str, str] | None = None, stdin: bool = False) -> Proc:
        return cls(name, [sys.executable, "-m", module, *args], log_dir, env, stdin)

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def rss(self) -> int:
        return psutil.Process(self.pid).memory_info().rss

    def cpu_seconds(self) -> float:
        """CPU time (user + system, every thread) the process has used so far."""
        times = psutil.Process(self.pid).cpu_times()
        return times.user + times.system

    def stop(self, timeout: float = 15.0) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(5)
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                with contextlib.suppress(Exception):
                    stream.close()
        self._log.close()


@contextlib.contextmanager
def running(*procs: Proc) -> Iterator[tuple[Proc, ...]]:
    try:
        yield procs
    finally:
        for p in reversed(procs):
            p.stop()


class Talker:
    """A child that answers one JSON line per command written to its stdin."""

    def __init__(self, proc: Proc) -> None:
        self.proc = proc

    async def read(self, timeout: float) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        stdout = self.proc.process.stdout
        assert stdout is not None
        line = await asyncio.wait_for(loop.run_in_executor(None, stdout.readline), timeout)
        if not line:
            raise RuntimeError(f"{self.proc.name} ended:\n{self.proc.log()[-3000:]}")
        return json.loads(line)

    async def ask(self, command: dict[str, Any], timeout: float = 60.0) -> dict[str, Any]:
        self.send(command)
        return await self.read(timeout)

    def send(self, command: dict[str, Any]) -> None:
        stdin = self.proc.process.stdin
        assert stdin is not None
        stdin.write((json.dumps(command) + "\n").encode())
        stdin.flush()


async def wait_http(url: str, proc: Proc | None = None, timeout: float = 60.0) -> None:
    import aiohttp

    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            if proc is not None and not proc.alive():
                raise RuntimeError(f"{proc.name} died:\n{proc.log()[-3000:]}")
            try:
                async with session.get(url, timeout=aiohttp.ClientTimeout(total=2)) as r:
                    await r.read()
                    return
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError):
                await asyncio.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout} s")


def start_edge(settings: Settings, log_dir: Path, name: str = "edge") -> tuple[Proc, str]:
    port = embedded.free_port()
    proc = Proc.cli(name, ["edge", "--port", str(port)], settings, log_dir)
    return proc, f"http://127.0.0.1:{port}"


async def edge_ready(settings: Settings, url: str, proc: Proc) -> None:
    """The edge answers and its delta feed has reached the topic."""
    await wait_http(url + "/healthz", proc)
    await asyncio.sleep(1.0)


def clients_proc(name: str, log_dir: Path) -> Talker:
    return Talker(Proc.module(name, "bench.clients", [], log_dir, stdin=True))


async def produce_deltas(settings: Settings, count: int, *, rate: float | None = None,
                         matches: int = 50, start_seq: dict[str, int] | None = None,
                         prefix: str = "football-apifootball-9") -> dict[str, int]:
    """Send ``count`` deltas straight to ``match-deltas`` (``fetched_at`` = send time)."""
    from aiokafka import AIOKafkaProducer

    from tables import codec

    seqs = dict(start_seq or {})
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, linger_ms=1,
                                max_batch_size=256 * 1024)
    await producer.start()
    topic = settings.topic("match-deltas")
    try:
        t0 = time.perf_counter()
        futs = []
        for i in range(count):
            if rate:
                ahead = t0 + i / rate - time.perf_counter()
                if ahead > 0:
                    await asyncio.sleep(ahead)
            mid = f"{prefix}{i % matches:05d}"
            seq = seqs.get(mid, 0) + 1
            seqs[mid] = seq
            now = time.time()
            d = {"version": 1, "match_id": mid, "seq": seq, "ts": now, "sport": "football",
                 "league": "39", "kinds": ["score"],
                 "changes": [{"op": "replace", "path": "/score/home", "value": seq % 10},
                             {"op": "replace", "path": "/status/clock", "value": str(seq % 90)}],
                 "events": [{"type": "goal", "team": "home", "minute": seq % 90,
                             "player": "A. Player"}],
                 "fetched_at": now}
            futs.append(await producer.send(topic, codec.dumps(d), key=mid.encode()))
        for f in futs:
            await f
    finally:
        await producer.stop()
    return seqs


# -- the report -----------------------------------------------------------------------------


COLUMNS = ["figure", "value", "reference (same run)", "target", "ratio", "meets target"]


def table_text(rows: Sequence[Row]) -> str:
    cells = [COLUMNS] + [r.cells() for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(COLUMNS))]
    lines = []
    for n, c in enumerate(cells):
        lines.append("  ".join(x.ljust(w) for x, w in zip(c, widths)).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def table_markdown(rows: Sequence[Row]) -> str:
    out = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in rows:
        out.append("| " + " | ".join(c.replace("|", "\\|") for c in r.cells()) + " |")
    return "\n".join(out)


def machine() -> dict[str, str]:
    cpu = platform.processor() or "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "cpu": cpu,
        "cores": str(psutil.cpu_count(logical=True)),
        "ram": f"{psutil.virtual_memory().total / 2**30:.1f} GiB",
        "kernel": f"{platform.system()} {platform.release()}",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "load": ", ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


def git_commit() -> str:
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                             text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, check=True).stdout.strip()
        return sha + (" (with uncommitted changes)" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
