"""The option parser's own errors are one line with exit 2, like every other error."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RUN = os.path.join("sample_runs", "digits_gnb.parquet")


def metricdiff(*args):
    return subprocess.run([sys.executable, "-m", "metricdiff", *args], capture_output=True,
                          text=True, cwd=ROOT)


@pytest.mark.parametrize("args, fragment", [
    (["report", RUN, "--bins", "abc"], "'--bins'"),
    (["report", RUN, "--format", "yaml"], "'yaml' is not one of"),
    (["report"], "Missing argument"),
    (["report", RUN, "--no-such-option"], "No such option"),
    (["report", "-odd.parquet"], "put '--' before it"),
    (["nosuch"], "No such command"),
    (["compare", RUN, RUN, "--fail-on", "maybe"], "'maybe' is not one of"),
])
def test_parser_errors_are_one_line(args, fragment):
    result = metricdiff(*args)
    assert result.returncode == 2, result
    assert fragment in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("metricdiff: error: ")
    assert result.stdout == ""


def test_a_path_starting_with_a_dash_works_after_double_dash(tmp_path):
    result = metricdiff("report", "--", "-missing.parquet")
    assert result.returncode == 2 and "-missing.parquet: no such file" in result.stderr
