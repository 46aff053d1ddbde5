"""Output survives the environment: an ASCII-only stdout, a bogus MPLBACKEND."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
A = os.path.join("sample_runs", "digits_gnb.parquet")
B = os.path.join("sample_runs", "digits_mlp.parquet")


def metricdiff(*args, **env):
    return subprocess.run([sys.executable, "-m", "metricdiff", *map(str, args)],
                          capture_output=True, cwd=ROOT, env={**os.environ, **env})


@pytest.mark.parametrize("args", [["report", A], ["compare", A, B],
                                  ["compare", A, B, "-f", "markdown"], ["report", A, "-f", "json"],
                                  ["report", "missing.parquet"]])
def test_an_ascii_stdout_gets_ascii_symbols(args):
    result = metricdiff(*args, PYTHONIOENCODING="ascii")
    assert result.returncode in (0, 2), result.stderr
    result.stdout.decode("ascii")  # nothing but ASCII, and no crash
    assert b"Traceback" not in result.stderr and b"internal error" not in result.stderr
    if args[0] == "compare" and "-f" not in args:
        assert b"->" in result.stdout or b"|" in result.stdout


def test_a_bogus_matplotlib_backend_still_draws_the_page(tmp_path):
    pytest.importorskip("matplotlib")
    page = tmp_path / "page.html"
    result = metricdiff("report", A, "--html", page, MPLBACKEND="bogus")
    assert result.returncode == 0, result.stderr
    assert b'<svg role="img"' in page.read_bytes()
