import subprocess
import sys

import pytest


def run(*args, env=None):
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *args], capture_output=True,
                          text=True, env=env, timeout=60)


@pytest.mark.parametrize(
    "args",
    [
        ["dev", "--speed", "fast"],
        ["dev", "--edge-port", "99999"],
        ["dev", "--seed", "x"],
        ["dev", "--workers", "0"],
        ["simulate", "--port", "-1"],
        ["nonsense"],
    ],
)
def test_bad_arguments_exit_2_naming_the_value(args):
    result = run(*args)
    assert result.returncode == 2
    assert "error" in result.stderr


def test_bad_setting_exits_2_naming_the_variable():
    import os

    result = run("migrate", env={**os.environ, "DATABASE_URL": "mysql://nope"})
    assert result.returncode == 2
    assert "DATABASE_URL" in result.stderr


@pytest.mark.parametrize("level", ["warning", "info"])
def test_a_worker_logs_at_its_level_and_builds_no_debug_records(level, tmp_path):
    code = f"""
import logging, sys, faust
from pipeline.cli import make_worker
from pipeline.settings import Settings
settings = Settings.from_env({{"LOG_LEVEL": "{level}"}})
worker = make_worker(faust.App("t", datadir={str(tmp_path)!r}), settings)
worker._setup_logging()
print(logging.getLevelName(logging.getLogger().getEffectiveLevel()),
      logging.getLogger("aiokafka.conn").isEnabledFor(logging.DEBUG), file=sys.__stdout__)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [level.upper(), "False"]
