"""``python -m bench [--only NAME,…] [--quick] [--no-write]``: every benchmark, one table.

Prints the table and writes ``docs/benchmarks.md`` (unless ``--no-write``) with the
date, the machine, the commit and the command.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import importlib
import sys
import tempfile
import time
import traceback
from pathlib import Path

from bench import common
from bench.common import Row, log

#: name → module, in the order they run (and are reported)
BENCHMARKS = {
    "pipeline": "bench.pipeline",
    "latency": "bench.latency",
    "fanout": "bench.fanout",
    "concurrent": "bench.concurrent",
    "memory": "bench.memory",
    "rest": "bench.rest",
    "upstream": "bench.upstream",
    "scaling": "bench.scaling",
}
REPORT = common.ROOT / "docs" / "benchmarks.md"


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="comma-separated benchmarks: " + ", ".join(BENCHMARKS))
    parser.add_argument("--quick", action="store_true", help="small sizes (about 2 minutes in all)")
    parser.add_argument("--no-write", action="store_true", help=f"do not write {REPORT.relative_to(common.ROOT)}")
    parser.add_argument("--report", default=str(REPORT), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.only.split(",") if n.strip()] or list(BENCHMARKS)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; one of {', '.join(BENCHMARKS)}")
    args.names = names
    return args


def run_all(names: list[str], quick: bool, workdir: Path) -> tuple[list[Row], dict[str, float]]:
    env = common.Env(workdir)
    env.start()
    log(f"broker {env.kafka_url}, redis {env.redis_url}, postgres {env.database_url}")
    rows: list[Row] = []
    seconds: dict[str, float] = {}
    try:
        for name in names:
            module = importlib.import_module(BENCHMARKS[name])
            log(f"== {name}")
            t0 = time.monotonic()
            try:
                rows += asyncio.run(module.run(env, workdir / name, quick))
            except Exception as exc:  # noqa: BLE001 - one failed benchmark must not hide the rest
                traceback.print_exc()
                rows.append(Row(name, f"{name}: failed ({type(exc).__name__}: {exc})"[:160], None, ""))
            seconds[name] = time.monotonic() - t0
            log(f"== {name} took {seconds[name]:.0f} s")
    finally:
        env.stop()
    return rows, seconds


def write_report(path: Path, rows: list[Row], seconds: dict[str, float], command: str,
                 started: dt.datetime, quick: bool) -> None:
    m = common.machine()
    notes = [f"- **{r.figure}**: {r.note}" for r in rows if r.note]
    existing = path.read_text() if path.exists() else ""
    marker = "## Profile"
    profile = existing[existing.index(marker):] if marker in existing else ""
    text = "\n".join([
        "# Benchmarks",
        "",
        f"Written by `{command}`{' (quick sizes: indicative only)' if quick else ''}. "
        "Run it again to refresh every figure below; `make bench ARGS=--quick` for a fast check.",
        "",
        f"- date: {started:%Y-%m-%d %H:%M} UTC, {sum(seconds.values()):.0f} s in all "
        f"({', '.join(f'{k} {v:.0f} s' for k, v in seconds.items())})",
        f"- machine: {m['cpu']}, {m['cores']} cores, {m['ram']} RAM, {m['kernel']}, {m['python']}"
        f" (load average at the end: {m['load']})",
        f"- commit: {common.git_commit()}",
        "",
        "Every reference is measured in the same run, on the same machine, with the same",
        "clients. Clients always run in processes of their own; on two cores they compete",
        "with the servers they measure, and so do the broker, Redis and Postgres.",
        "",
        common.table_markdown(rows),
        "",
        *(["Notes:", "", *notes, ""] if notes else []),
        (Path(__file__).with_name("method.md").read_text().rstrip() + "\n"),
    ])
    if profile:
        text += "\n" + profile.rstrip() + "\n"
    path.write_text(text)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    started = dt.datetime.now(dt.timezone.utc)
    command = "python -m bench" + (" " + " ".join(sys.argv[1:]) if sys.argv[1:] else "")
    with tempfile.TemporaryDirectory(prefix="bts-bench-") as d:
        rows, seconds = run_all(args.names, args.quick, Path(d))
    print()
    print(common.table_text(rows))
    for r in rows:
        if r.note:
            print(f"  {r.figure}: {r.note}")
    print(f"\n{sum(seconds.values()):.0f} s in all")
    if not args.no_write:
        write_report(Path(args.report), rows, seconds, command, started, args.quick)
        print(f"written to {args.report}")
    return 1 if any(r.value is None and "failed" in r.figure for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
