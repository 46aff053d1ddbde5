"""Adversarial outputs: no file is ever destroyed, devices and pipes are written to as they
are, operating-system errors are one line with exit 2, and a closed pipe never changes what
the exit code means."""

from __future__ import annotations

import os
import resource
import stat
import subprocess
import sys

import numpy as np
import pytest

from conftest import random_logits, write_run

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def metricdiff(*args, stdout=subprocess.PIPE, preexec_fn=None, **kwargs):
    return subprocess.run([sys.executable, "-m", "metricdiff", *map(str, args)],
                          stdout=stdout, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                          preexec_fn=preexec_fn, **kwargs)


@pytest.fixture
def run(tmp_path):
    logits, labels = random_logits(120, 4, seed=0)
    return write_run(tmp_path / "run.parquet", labels, logits=logits, ids=np.arange(120))


def _one_line(result, code: int, fragment: str) -> None:
    assert result.returncode == code, (result.returncode, result.stderr)
    assert fragment in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


def test_an_output_that_is_an_input_is_refused_and_the_input_kept(run):
    before = run.read_bytes()
    _one_line(metricdiff("report", run, "--output", run), 2, "is an input of this command")
    _one_line(metricdiff("report", run, "--html", run), 2, "is an input of this command")
    assert run.read_bytes() == before


def test_two_outputs_on_one_path_are_refused(run, tmp_path):
    page = tmp_path / "x.html"
    _one_line(metricdiff("report", run, "--output", page, "--html", page), 2,
              "the same file as --output")
    link = tmp_path / "link.html"
    os.symlink(page, link)  # the same file under two names
    _one_line(metricdiff("report", run, "--output", link, "--html", page), 2, "the same file")


@pytest.mark.parametrize("device", ["/dev/null", "/dev/full"])
def test_devices_stay_devices(run, device):
    result = metricdiff("report", run, "--output", device)
    assert stat.S_ISCHR(os.stat(device).st_mode)  # not replaced by a regular file
    if device == "/dev/full":
        _one_line(result, 2, "No space left on device")
    else:
        assert result.returncode == 0, result.stderr


def test_dev_stdout_prints_and_a_link_keeps_pointing_at_its_target(run, tmp_path):
    result = metricdiff("report", run, "--output", "/dev/stdout", "-f", "json")
    assert result.returncode == 0 and result.stdout.lstrip().startswith("{")
    target = tmp_path / "target.json"
    target.write_text("old")
    os.chmod(target, 0o640)
    link = tmp_path / "link.json"
    os.symlink(target, link)
    assert metricdiff("report", run, "--output", link, "-f", "json").returncode == 0
    assert os.path.islink(link) and target.read_text().lstrip().startswith("{")
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o640  # its mode kept


def test_a_read_only_file_is_not_replaced(run, tmp_path):
    kept = tmp_path / "kept.txt"
    kept.write_text("keep me")
    os.chmod(kept, 0o444)
    _one_line(metricdiff("report", run, "--output", kept), 2, "is read-only")
    assert kept.read_text() == "keep me"


def test_a_file_size_limit_is_one_line_and_leaves_no_output(run, tmp_path):
    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (2000, 2000))

    page, out = tmp_path / "page.html", tmp_path / "out.json"
    result = metricdiff("report", run, "--output", out, "--html", page, "-f", "json",
                        preexec_fn=limit)
    _one_line(result, 2, "cannot write")
    assert not page.exists() and not out.exists()
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".metricdiff-")]


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_folder_is_one_line(run, tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    os.chmod(folder, 0o555)
    try:
        _one_line(metricdiff("report", run, "--output", folder / "x.txt"), 2, "cannot write")
    finally:
        os.chmod(folder, 0o755)


def test_a_file_name_too_long_is_one_line(run, tmp_path):
    _one_line(metricdiff("report", run, "--output", tmp_path / ("x" * 300)), 2, "cannot write")


def _piped_into_head(*args) -> tuple[int, str]:
    command = [sys.executable, "-m", "metricdiff", *map(str, args)]
    producer = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                cwd=ROOT)
    first = producer.stdout.readline()
    producer.stdout.close()  # what `| head -n1` does after one line
    stderr = producer.stderr.read().decode()
    producer.wait(timeout=60)
    return producer.returncode, stderr, first


def test_a_closed_pipe_keeps_the_exit_code_meaning(tmp_path):
    logits, labels = random_logits(3000, 5, seed=0)
    base = write_run(tmp_path / "base.parquet", labels, logits=logits, ids=np.arange(3000))
    better = logits.copy()
    better[np.arange(3000), labels] += 3  # clearly better: --fail-on worse must not fire
    cand = write_run(tmp_path / "cand.parquet", labels, logits=better, ids=np.arange(3000))
    for args in (["report", base], ["report", base, "-f", "json"],
                 ["compare", base, cand, "--fail-on", "worse", "--resamples", 0],
                 ["compare", base, cand, "--fail-on", "worse", "-f", "markdown"]):
        code, stderr, first = _piped_into_head(*args)
        assert first, args
        assert code == 0, (args, code, stderr)
        assert stderr == "", (args, stderr)
    code, _, _ = _piped_into_head("compare", cand, base, "--fail-on", "worse", "--resamples", 0)
    assert code == 1  # a real regression still fails, pipe or no pipe
