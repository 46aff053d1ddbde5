"""Adversarial paths: glob characters in real names, links and loops, special files, Spark
folders, names that are not UTF-8. Each case: the right files are read, or one clear line and
exit 2."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import random_logits, write_run
from metricdiff.cli import app


def run_cli(*args):
    return CliRunner().invoke(app, [os.fsdecode(a) if isinstance(a, bytes) else str(a)
                                    for a in args])


def _rows(result) -> int:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)["metrics"]["n"]


def _one_line_error(result, fragment: str) -> None:
    assert result.exit_code == 2, result.output
    assert fragment in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.output


@pytest.fixture
def run_of(tmp_path):
    def make(path, rows: int, seed: int = 0):
        logits, labels = random_logits(rows, 4, seed=seed)
        path.parent.mkdir(parents=True, exist_ok=True)
        return write_run(path, labels, logits=logits, ids=np.arange(rows))
    return make


@pytest.mark.parametrize("name", ["run[1].parquet", "run*.parquet", "run?.parquet",
                                  "run[!x].parquet"])
def test_an_existing_name_with_glob_characters_is_that_file(tmp_path, run_of, name):
    run_of(tmp_path / "run1.parquet", 10)  # what the name would match as a pattern
    real = run_of(tmp_path / name, 30)
    assert _rows(run_cli("report", real, "-f", "json")) == 30


def test_a_pattern_that_matches_nothing_says_so(tmp_path):
    _one_line_error(run_cli("report", tmp_path / "nothing*.parquet"), "no file matches")


def test_a_folder_with_a_link_loop_reads_every_file_once(tmp_path, run_of):
    run = tmp_path / "run"
    run_of(run / "part-0.parquet", 40)
    run_of(run / "sub" / "part-1.parquet", 60, seed=1)
    os.symlink(run, run / "sub" / "loop")  # a cycle back to the top
    os.symlink(run / "part-0.parquet", run / "again.parquet")  # a second name for a file
    assert _rows(run_cli("report", run, "-f", "json")) == 100


def test_a_glob_matching_one_file_twice_reads_it_once(tmp_path, run_of):
    run_of(tmp_path / "a.parquet", 25)
    os.symlink(tmp_path / "a.parquet", tmp_path / "b.parquet")
    assert _rows(run_cli("report", tmp_path / "*.parquet", "-f", "json")) == 25


def test_hidden_and_bookkeeping_files_are_skipped_spark_folders_are_read(tmp_path, run_of):
    run = tmp_path / "run"
    run_of(run / "part.parquet" / "part-00000.snappy.parquet", 30)  # Spark / Dask layout
    run_of(run / "part.parquet" / "part-00001.snappy.parquet", 20, seed=1)
    (run / "part.parquet" / "_SUCCESS").write_text("")
    (run / ".metricdiff-half-written.parquet").write_bytes(b"PAR1 not really")
    (run / "_temporary").mkdir()
    (run / "_temporary" / "x.parquet").write_bytes(b"junk")
    assert _rows(run_cli("report", run, "-f", "json")) == 50


def test_a_fifo_is_refused_not_waited_on(tmp_path):
    fifo = tmp_path / "run.parquet"
    os.mkfifo(fifo)
    _one_line_error(run_cli("report", fifo), "not a regular file")
    folder = tmp_path / "folder"
    folder.mkdir()
    os.mkfifo(folder / "part.parquet")
    _one_line_error(run_cli("report", folder), "not a regular file")


def test_a_dangling_link_and_a_device_are_one_line_errors(tmp_path):
    os.symlink(tmp_path / "gone.parquet", tmp_path / "link.parquet")
    _one_line_error(run_cli("report", tmp_path / "*.parquet"), "cannot read")
    _one_line_error(run_cli("report", "/dev/null"), "not a regular file")


@pytest.mark.skipif(os.geteuid() == 0, reason="root lists any folder")
def test_a_folder_that_cannot_be_listed_says_so(tmp_path, run_of):
    run = tmp_path / "run"
    run_of(run / "sub" / "part.parquet", 10)
    os.chmod(run / "sub", 0)
    try:
        _one_line_error(run_cli("report", run), "cannot list this folder")
    finally:
        os.chmod(run / "sub", 0o755)


def test_a_file_name_that_is_not_utf8_is_named_in_the_error(tmp_path, run_of):
    source = run_of(tmp_path / "x.parquet", 10)
    odd = os.path.join(os.fsencode(tmp_path), b"caf\xe9.parquet")
    os.rename(source, odd)
    _one_line_error(run_cli("report", os.fsdecode(odd)), "not valid UTF-8")
