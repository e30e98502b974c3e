"""``bts-guru dev``: the whole system on one machine.

Starts the embedded broker, Redis and Postgres (unless their URLs are given),
applies the schema, then the simulator, the workers and the edges as child
processes, and prints the URLs. SIGINT or SIGTERM stops every child, newest
first, and then the servers; a child that dies is reported and the whole stack
stops with exit status 1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from pipeline import embedded
from pipeline.settings import Settings
from tables import topics
from tables.migrate import migrate_url


@dataclasses.dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]

    def stop(self, timeout: float = 15.0) -> None:
        if self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(5)


#: The topics a deployment's data flows through (``docs/topics.md``).
DATA_TOPICS = (topics.RAW_FETCHES, topics.MATCH_UPDATES, topics.MATCH_DELTAS,
               topics.MATCH_SNAPSHOTS, topics.DEAD_LETTERS)


async def create_topics(s: Settings, names: Sequence[str] = DATA_TOPICS) -> None:
    """Create the topics ``names`` that do not exist yet with ``BTS_PARTITIONS`` partitions,
    as ``kafka-init`` does in production. Left to the first client that names them, the
    broker would create them with its own default, and a worker would place poll targets
    on partitions that do not exist."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.errors import TopicAlreadyExistsError

    from pipeline.connections import aiokafka_options

    admin = AIOKafkaAdminClient(bootstrap_servers=s.kafka_bootstrap, **aiokafka_options(s))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = [NewTopic(s.topic(name), num_partitions=s.partitions,
                           replication_factor=s.kafka_replication_factor)
                  for name in names if s.topic(name) not in existing]
        if wanted:
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(wanted)
    finally:
        await admin.close()


def _spawn(name: str, args: list[str], env: dict[str, str], log_dir: Path | None) -> Child:
    out = None
    if log_dir is not None:
        out = (log_dir / f"{name}.log").open("ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", *args], env=env, stdout=out, stderr=subprocess.STDOUT
        if out is not None else None, stdin=subprocess.DEVNULL, start_new_session=True,
    )
    return Child(name, proc)


def _wait_http(url: str, child: Child, timeout: float = 60.0) -> None:
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child.process.poll() is not None:
            raise RuntimeError(f"{child.name} exited with status {child.process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except (urllib.error.URLError, OSError):
            time.sleep(0.2)
    raise RuntimeError(f"{child.name} did not answer on {url} within {timeout:.0f} s")


def run_dev(args: argparse.Namespace, settings: Settings) -> int:
    data = Path(args.data_dir or settings.data_dir).resolve()
    data.mkdir(parents=True, exist_ok=True)
    servers: list[embedded.Embedded] = []
    children: list[Child] = []
    stopping = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    env_given = os.environ
    status = 0
    try:
        overrides: dict[str, object] = {}
        if not env_given.get("KAFKA_URL"):
            broker = embedded.start_broker(data / "logs")
            servers.append(broker)
            overrides["kafka_url"] = broker.url
        if not env_given.get("REDIS_URL"):
            redis = embedded.start_redis(data / "redis")
            servers.append(redis)
            overrides["redis_url"] = redis.url
        if not env_given.get("DATABASE_URL"):
            pg = embedded.start_postgres(data / "postgres")
            servers.append(pg)
            overrides["database_url"] = pg.url
        sim_port = args.sim_port or embedded.free_port()
        overrides["provider_url"] = f"http://127.0.0.1:{sim_port}"
        overrides["provider_mode"] = "rapidapi"
        overrides["clock_speed"] = args.speed
        overrides["clock_start"] = time.time()
        for key in ("apifootball_key", "apibasketball_key", "apihockey_key"):
            if not getattr(settings, key):
                overrides[key] = "dev-key"
        overrides["log_format"] = "text" if args.text_logs else settings.log_format
        s = dataclasses.replace(settings, **overrides)  # type: ignore[arg-type]
        applied = asyncio.run(migrate_url(s.database_url, s.db_schema))
        asyncio.run(create_topics(s))
        log_dir = data / "logs"
        log_dir.mkdir(exist_ok=True)
        base_env = {**os.environ, **s.env()}
        children.append(_spawn("simulator", ["simulate", "--port", str(sim_port), "--seed",
                                             str(args.seed), "--speed", str(args.speed),
                                             "--start", repr(s.clock_start)],
                               base_env, log_dir))
        worker_ports = [embedded.free_port() for _ in range(args.workers)]
        for i in range(args.workers):
            env = {**base_env, "BTS_DATA_DIR": str(data / f"worker-{i}"),
                   "WORKER_WEB_PORT": str(worker_ports[i])}
            children.append(_spawn(f"worker-{i}", ["worker"], env, log_dir))
        edge_urls = []
        for i in range(args.edges):
            port = args.edge_port + i
            children.append(_spawn(f"edge-{i}", ["edge", "--port", str(port)], base_env, log_dir))
            edge_urls.append(f"http://{s.edge_host}:{port}")
        for url, child in zip(edge_urls, children[-args.edges:]):
            _wait_http(url + "/healthz", child)
        print("BTS Guru is running (Ctrl-C stops everything)", flush=True)
        print(f"  schema       {', '.join(applied) or 'current'} in {s.db_schema}")
        print(f"  broker       {s.kafka_url}")
        print(f"  redis        {s.redis_url}")
        print(f"  postgres     {s.database_url}")
        print(f"  simulator    {s.provider_url}  (seed {args.seed}, speed x{args.speed:g})")
        for url in edge_urls:
            print(f"  demo page    {url}/")
            print(f"  SSE stream   {url}/v1/stream?channels=sport.football")
            print(f"  REST         {url}/v1/matches/{{id}}")
        for i, port in enumerate(worker_ports):
            print(f"  worker-{i}     http://127.0.0.1:{port}/metrics")
        print(f"  logs         {log_dir}", flush=True)
        while not stopping:
            for child in children:
                if child.process.poll() is not None:
                    print(f"bts-guru dev: {child.name} exited with status "
                          f"{child.process.returncode}; stopping everything", file=sys.stderr)
                    status = 1
                    stopping = True
                    break
            for server in servers:
                if not stopping and not server.alive():
                    print(f"bts-guru dev: embedded {server.name} exited; stopping everything",
                          file=sys.stderr)
                    status = 1
                    stopping = True
            time.sleep(0.2)
    except Exception as exc:  # noqa: BLE001 - report any start-up failure, then clean up
        print(f"bts-guru dev: {exc}", file=sys.stderr)
        status = 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        for child in reversed(children):
            child.stop()
        for server in reversed(servers):
            server.stop()
        print("bts-guru dev: stopped", flush=True)
    return status
