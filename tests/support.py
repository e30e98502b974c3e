"""Helpers for tests that run BTS Guru processes for real."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import httpx

from pipeline import embedded
from pipeline.settings import Settings


class Proc:
    """A ``bts-guru`` child process whose output goes to a log file."""

    def __init__(self, name: str, args: list[str], settings: Settings, log_dir: Path,
                 extra_env: dict[str, str] | None = None) -> None:
        self.name = name
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = log_dir / f"{name}.log"
        env = {**os.environ, **settings.env(), **(extra_env or {})}
        self._out = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "pipeline.cli", *args], env=env, stdout=self._out,
            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
        )

    def alive(self) -> bool:
        return self.process.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(5)
        self._out.close()
        return self.process.returncode

    def kill(self) -> None:
        self.stop(signal.SIGKILL)


async def wait_http(url: str, proc: Proc | None = None, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient() as client:
        while time.monotonic() < deadline:
            if proc is not None and not proc.alive():
                raise AssertionError(f"{proc.name} died:\n{proc.log()[-3000:]}")
            try:
                await client.get(url, timeout=1)
                return
            except httpx.HTTPError:
                await asyncio.sleep(0.1)
    raise AssertionError(f"{url} did not answer within {timeout} s")


@contextlib.contextmanager
def processes(*procs: Proc) -> Iterator[tuple[Proc, ...]]:
    try:
        yield procs
    finally:
        for p in reversed(procs):
            p.stop()


def free_port() -> int:
    return embedded.free_port()


def with_simulator(settings: Settings, log_dir: Path, **fields: object) -> tuple[Settings, Proc]:
    """The provider simulator (seed 7, 60 simulated seconds a second, its day starting
    now) on a free port, and ``settings`` pointed at it, with ``fields`` replaced too."""
    import dataclasses

    port, start = free_port(), time.time()
    s = dataclasses.replace(settings, provider_url=f"http://127.0.0.1:{port}", clock_speed=60.0,
                            clock_start=start, **fields)  # type: ignore[arg-type]
    sim = Proc("simulator", ["simulate", "--port", str(port), "--seed", "7", "--speed", "60",
                             "--start", repr(start)], s, log_dir)
    return s, sim


class SSE:
    """A minimal SSE reader over httpx that also reports comments (the first one means
    the subscription is registered)."""

    def __init__(self, client: httpx.AsyncClient, url: str, headers: dict[str, str] | None = None):
        self.client = client
        self.url = url
        self.headers = headers or {}
        self.response: httpx.Response | None = None
        self._lines = None
        self._cm = None

    async def __aenter__(self) -> SSE:
        self._cm = self.client.stream("GET", self.url, headers=self.headers)
        self.response = await self._cm.__aenter__()
        self._lines = self.response.aiter_lines()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._cm.__aexit__(*exc)

    async def next(self, timeout: float = 20.0) -> dict[str, str]:
        """The next event or comment: {"event", "data", "id"} or {"comment"}."""
        return await asyncio.wait_for(self._next(), timeout)

    async def _next(self) -> dict[str, str]:
        fields: dict[str, str] = {}
        async for line in self._lines:
            if line == "":
                fields.pop("retry", None)
                if fields:
                    return fields
                continue
            if line.startswith(":"):
                if not fields:
                    return {"comment": line[1:].strip()}
                continue
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if name == "data" and "data" in fields:
                fields["data"] += "\n" + value
            else:
                fields[name] = value
        raise EOFError("stream ended")

    async def events(self, kind: str, count: int, timeout: float = 20.0) -> list[dict[str, str]]:
        out = []
        deadline = time.monotonic() + timeout
        while len(out) < count:
            ev = await self.next(max(0.1, deadline - time.monotonic()))
            if ev.get("event") == kind:
                out.append(ev)
        return out


@contextlib.asynccontextmanager
async def local_webhook(handle: Callable[..., Awaitable[object]]) -> AsyncIterator[str]:
    """An aiohttp server on a free port that answers ``POST /hook`` with ``handle``; its URL."""
    from aiohttp import web

    app = web.Application()
    app.router.add_post("/hook", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/hook"
    finally:
        await runner.cleanup()
