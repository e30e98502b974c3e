"""The benchmark command at tiny sizes: every benchmark runs and produces rows.

Speed is never asserted here; ``python -m bench`` measures it.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("name", ["fanout", "memory", "latency"])
def test_streaming_benchmarks_produce_rows(name, tmp_path):
    report = tmp_path / "benchmarks.md"
    out = subprocess.run(
        [sys.executable, "-m", "bench", "--only", name, "--quick", "--report", str(report)],
        cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "failed" not in out.stdout, out.stdout
    text = report.read_text()
    assert "| figure |" in text and "- machine:" in text and "- commit:" in text
    rows = [line for line in text.splitlines() if line.startswith("| ") and "figure" not in line]
    assert rows and all("n/a" not in r.split("|")[2] for r in rows), text
    if name == "latency":
        # each row's note breaks the time down by stage, read back from the topics
        notes = [line for line in text.splitlines() if line.startswith("- **end-to-end")]
        assert len(notes) == 6, text
        assert all("update produced" in n and "delta produced" in n and "n/a" not in n
                   for n in notes), text


def test_plain_loop_reference_counts_updates():
    from bench import pipeline

    records = pipeline.dataset(True)[:50]
    rate, updates, deltas = pipeline.plain_loop(records)
    assert updates > 0 and deltas > 0 and rate > 0


def test_table_renders_every_row():
    from bench.common import Row, table_markdown, table_text

    rows = [Row("x", "a figure", 12.5, "ms", reference="p50 3 ms", target="≤ 100 ms", ok=True),
            Row("x", "another", None, "")]
    assert "12.5 ms" in table_text(rows) and "n/a" in table_markdown(rows)
