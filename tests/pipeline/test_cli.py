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
