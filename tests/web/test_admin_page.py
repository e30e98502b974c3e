"""``/admin`` in headless Chromium against a real edge, worker and simulator: the page
shows the workers with their partitions, the quota and the connected clients, and keeps
updating; without the admin key the page and its API refuse."""

from __future__ import annotations

import asyncio
import contextlib
import time

import httpx
import pytest

from tests.support import SSE, Proc, free_port, wait_http, with_simulator
from tests.web.browser import Browser, require_chromium

KEY = "admin-Kx81-test"

#: The rows of one table of the page, as lists of cell texts.
ROWS = """(() => {{
  const el = document.getElementById({id!r});
  return el ? Array.from(el.rows).map(r => Array.from(r.cells).map(c => c.textContent)) : null;
}})()"""


@pytest.fixture(scope="module")
def chromium() -> str:
    return require_chromium("the admin page test")


async def test_admin_page_shows_live_status_and_needs_the_key(chromium, settings, pg,
                                                              redis_client, tmp_path) -> None:
    edge_port = free_port()
    logs = tmp_path / "logs"
    s, sim = with_simulator(settings, logs, edge_port=edge_port, worker_web_port=free_port(),
                            admin_key=KEY)
    worker = Proc("worker", ["worker"], s, logs)
    edge = Proc("edge", ["edge", "--port", str(edge_port)], s, logs)
    base = f"http://127.0.0.1:{edge_port}"
    browser = Browser(chromium, tmp_path / "chromium-profile", tmp_path / "chromium.log")
    page = None

    async def rows(table: str) -> list[list[str]]:
        return await page.evaluate(ROWS.format(id=table)) or []

    def data(table_rows: list[list[str]]) -> list[list[str]]:
        """The rows below the header ("none" when the table is empty)."""
        return [r for r in table_rows[1:]] if len(table_rows) > 1 else []

    try:
        await wait_http(base + "/healthz", edge)
        async with httpx.AsyncClient(timeout=10) as client:
            # without the key, or with a wrong one, neither the page nor its API answers
            for path, headers in (("/admin", {}), ("/admin?key=wrong", {}),
                                  ("/admin/api/status", {}),
                                  ("/admin/api/status", {"X-Admin-Key": "wrong"})):
                resp = await client.get(base + path, headers=headers)
                assert resp.status_code == 401, (path, resp.status_code)
                assert "BTS Guru" not in resp.text and "workers" not in resp.text

            await browser.start()
            page = await browser.page()
            await page.navigate(base + "/admin?key=wrong")
            await page.wait_for("document.readyState === 'complete'", 10)
            body = await page.evaluate("document.body.innerText")
            assert "admin_key_required" in body and "Workers" not in body, body

            async with SSE(client, base + "/v1/stream?channels=sport.football") as sse:
                await sse.next()  # registered: one connected SSE client
                await page.navigate(f"{base}/admin?key={KEY}")
                await page.wait_for("document.getElementById('updated')?.textContent"
                                    ".startsWith('updated')", 15)

                async def shown() -> bool:
                    workers = data(await rows("workers"))
                    quota = data(await rows("quota"))
                    clients = data(await rows("clients"))
                    return (len(workers) == 1 and workers[0][1] == "0,1,2,3"
                            and any(r[0] == "apifootball" and r[2] not in ("", "-") for r in quota)
                            and ["sse", "anonymous", "1"] in clients)

                deadline = time.monotonic() + 30
                while not await shown():
                    assert time.monotonic() < deadline, (
                        await rows("workers"), await rows("quota"), await rows("clients"),
                        page.console, page.exceptions, worker.log()[-2000:])
                    await asyncio.sleep(0.3)
                assert await page.evaluate("document.getElementById('problem').hidden") is True

                # it keeps updating by itself: the timestamp and the worker's counters move
                header = await rows("workers")
                raw_col = header[0].index("raw")
                first_raw = int(data(header)[0][raw_col])
                first_updated = await page.evaluate("document.getElementById('updated').textContent")
                deadline = time.monotonic() + 15
                while True:
                    now_rows = data(await rows("workers"))
                    updated = await page.evaluate("document.getElementById('updated').textContent")
                    if (now_rows and int(now_rows[0][raw_col]) > first_raw
                            and updated != first_updated):
                        break
                    assert time.monotonic() < deadline, (first_raw, now_rows, first_updated,
                                                         updated)
                    await asyncio.sleep(0.5)

            # the client left: the page shows it within a few heartbeats
            async def client_gone() -> bool:
                return ["sse", "anonymous", "1"] not in data(await rows("clients"))

            deadline = time.monotonic() + 20
            while not await client_gone():
                assert time.monotonic() < deadline, await rows("clients")
                await asyncio.sleep(0.5)

            # the page itself, without a key, cannot read the API
            status = await page.evaluate(
                "fetch('/admin/api/status', {cache: 'no-store'}).then(r => r.status)")
            assert status == 401
            assert not page.exceptions, page.exceptions
        assert sim.alive() and worker.alive() and edge.alive()
    finally:
        if page is not None:
            with contextlib.suppress(Exception):
                await page.close()
        browser.stop()
        for p in (edge, worker, sim):
            p.stop()
