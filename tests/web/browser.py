"""Headless Chromium driven over the Chrome DevTools Protocol (a WebSocket).

The browser is found on ``PATH`` (``chromium``, ``chromium-browser``,
``google-chrome``) or at ``$CHROMIUM``; nothing is installed here. On Debian and
Ubuntu: ``apt-get install -y chromium``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import websockets

INSTALL_HINT = "apt-get install -y chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-dev-shm-usage", "--no-first-run", "--no-default-browser-check",
         "--mute-audio", "--remote-debugging-port=0"]


def require_chromium(what: str) -> str:
    """The Chromium binary, or a test failure saying how to install it."""
    import pytest

    binary = find_chromium()
    if binary is None:
        pytest.fail(f"headless Chromium is needed for {what} and was not found on "
                    f"PATH (nor at $CHROMIUM); install it with: {INSTALL_HINT}", pytrace=False)
    return binary


def find_chromium() -> str | None:
    explicit = os.environ.get("CHROMIUM")
    if explicit:
        return explicit if Path(explicit).exists() else None
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


class CDPError(RuntimeError):
    pass


class Page:
    """One tab: navigate, evaluate JavaScript, read the console."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self.console: list[str] = []
        self.exceptions: list[str] = []
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            async for raw in self.ws:
                msg = json.loads(raw)
                if "id" in msg:
                    fut = self._pending.pop(msg["id"], None)
                    if fut is not None and not fut.done():
                        if "error" in msg:
                            fut.set_exception(CDPError(str(msg["error"])))
                        else:
                            fut.set_result(msg.get("result", {}))
                elif msg.get("method") == "Runtime.consoleAPICalled":
                    args = msg["params"].get("args", [])
                    self.console.append(" ".join(str(a.get("value", a.get("description", "")))
                                                 for a in args))
                elif msg.get("method") == "Runtime.exceptionThrown":
                    details = msg["params"].get("exceptionDetails", {})
                    self.exceptions.append(str(details.get("exception", {}).get("description")
                                               or details.get("text")))
        except websockets.ConnectionClosed:
            pass
        finally:
            for fut in self._pending.values():
                if not fut.done():
                    fut.set_exception(CDPError("the DevTools connection closed"))

    async def call(self, method: str, timeout: float = 20.0, **params: Any) -> Any:
        msg_id = next(self._ids)
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[msg_id] = fut
        await self.ws.send(json.dumps({"id": msg_id, "method": method, "params": params}))
        return await asyncio.wait_for(fut, timeout)

    async def navigate(self, url: str) -> None:
        await self.call("Page.enable")
        await self.call("Runtime.enable")
        result = await self.call("Page.navigate", url=url)
        if result.get("errorText"):
            raise CDPError(f"cannot open {url}: {result['errorText']}")

    async def evaluate(self, expression: str) -> Any:
        result = await self.call("Runtime.evaluate", expression=expression, returnByValue=True,
                                 awaitPromise=True)
        if "exceptionDetails" in result:
            raise CDPError(f"{expression[:80]!r} threw: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def wait_for(self, expression: str, timeout: float, interval: float = 0.1) -> Any:
        """Evaluate ``expression`` until it is truthy; its value."""
        deadline = time.monotonic() + timeout
        value = None
        while time.monotonic() < deadline:
            value = await self.evaluate(expression)
            if value:
                return value
            await asyncio.sleep(interval)
        raise AssertionError(f"{expression[:120]!r} still {value!r} after {timeout} s")

    async def close(self) -> None:
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._reader
        await self.ws.close()


class Browser:
    """A headless Chromium process with its own profile directory."""

    def __init__(self, binary: str, profile: Path, log_path: Path) -> None:
        profile.mkdir(parents=True, exist_ok=True)
        self.profile = profile
        self.log_path = log_path
        self._log = log_path.open("ab")
        self.process = subprocess.Popen(
            [binary, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
            stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True)
        self.port: int | None = None

    async def start(self, timeout: float = 30.0) -> None:
        marker = self.profile / "DevToolsActivePort"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"chromium exited with {self.process.returncode}:\n"
                                     f"{self.log_path.read_text(errors='replace')[-3000:]}")
            if marker.exists():
                first = marker.read_text().splitlines()[:1]
                if first and first[0].isdigit():
                    self.port = int(first[0])
                    return
            await asyncio.sleep(0.1)
        raise AssertionError(f"chromium did not open its DevTools port within {timeout} s")

    async def page(self) -> Page:
        """The first tab (the ``about:blank`` it started with)."""
        async with httpx.AsyncClient() as client:
            for _ in range(50):
                targets = (await client.get(f"http://127.0.0.1:{self.port}/json/list")).json()
                pages = [t for t in targets if t.get("type") == "page"]
                if pages:
                    ws = await websockets.connect(pages[0]["webSocketDebuggerUrl"], max_size=None)
                    return Page(ws)
                await asyncio.sleep(0.1)
        raise AssertionError("chromium has no page target")

    def stop(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(5)
        self._log.close()
