"""Scaling: pipeline throughput with 1, 2 and 3 worker processes (same input as ``pipeline``)."""

from __future__ import annotations

from pathlib import Path

from bench import common
from bench.common import Row, log
from bench.pipeline import split, through_workers


async def run(env: common.Env, workdir: Path, quick: bool) -> list[Row]:
    records, warm, updates, expected = split(quick)
    rows = []
    base = None
    for n in (1, 2, 3):
        value, note = await through_workers(env, workdir, f"scale{n}", n, records, warm, expected,
                                            updates)
        log(f"scaling: {n} workers {value} updates/s ({note})")
        if n == 1:
            base = value
        rows.append(Row("scaling", f"scaling: pipeline updates/s with {n} worker process"
                        + ("es" if n > 1 else ""), value, "/s",
                        reference="—" if n == 1 else f"1 worker {common.fmt(base, '/s')}",
                        target="reported (2 cores)", ratio=value / base if value and base else None,
                        note=note))
    return rows
