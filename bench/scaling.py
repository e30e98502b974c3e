"""Scaling: pipeline throughput with 1, 2 and 3 worker processes.

The input is the first third of ``pipeline``'s (80 steps of live answers instead of 240):
each worker count is a full run, and three of them at full size took 17 minutes of a
slow afternoon on two cores.
"""

from __future__ import annotations

from pathlib import Path

from bench import common
from bench.common import Row, log
from bench.pipeline import STEPS, split, through_workers


async def run(env: common.Env, workdir: Path, quick: bool) -> list[Row]:
    records, warm, updates, expected = split(quick, STEPS // 3)
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
