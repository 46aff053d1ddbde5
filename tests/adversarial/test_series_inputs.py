"""Adversarial inputs of `metricdiff series`: step columns that cannot split a run, checkpoints
that do not belong together, series that cannot be paired, files that are not there. Each is
one line on stderr naming the file (and column), exit code 2, no traceback."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from conftest import list_array, random_logits, write_run
from metricdiff.cli import app


def run_cli(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def _one_line_error(result, *fragments):
    assert result.exit_code == 2, (result.exit_code, result.output)
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr


@pytest.fixture
def checkpoints(tmp_path):
    """Three checkpoints of 80 examples, 3 classes, ids 0..79."""
    folder = tmp_path / "run"
    folder.mkdir()
    logits, labels = random_logits(80, 3, seed=0)
    for epoch in (1, 2, 3):
        write_run(folder / f"epoch{epoch}.parquet", labels, logits=logits * epoch,
                  ids=np.arange(80))
    return folder, logits, labels


def _steps_file(path, steps, logits, labels):
    n = len(steps)
    table = pa.table({"id": np.arange(n) % len(labels), "label": np.resize(labels, n),
                      "logits": list_array(np.resize(logits, (n, logits.shape[1]))),
                      "step": steps})
    pq.write_table(table, path)
    return path


def test_a_step_column_with_one_value(tmp_path, checkpoints):
    _, logits, labels = checkpoints
    path = _steps_file(tmp_path / "one.parquet", pa.array([7] * 80), logits, labels)
    _one_line_error(run_cli("series", path), "one.parquet", "column 'step'",
                    "every row has step 7")


@pytest.mark.parametrize("steps, says", [
    (pa.array([f"epoch{i % 2}" for i in range(80)]), "type string, expected numbers"),
    (pa.array([True, False] * 40), "type bool, expected numbers"),
    (pa.array([None] + [1] * 79, type=pa.int64()), "null step"),
    (pa.array([float("nan")] + [1.0] * 79), "expected a finite number"),
    (pa.array([1.0] * 40 + [float("inf")] * 40), "expected a finite number"),
])
def test_steps_that_are_not_numbers(tmp_path, checkpoints, steps, says):
    _, logits, labels = checkpoints
    path = _steps_file(tmp_path / "bad.parquet", steps, logits, labels)
    _one_line_error(run_cli("series", path), "bad.parquet", "column 'step'", says)


def test_a_step_column_that_is_not_there(tmp_path, checkpoints):
    folder, *_ = checkpoints
    _one_line_error(run_cli("series", folder / "epoch1.parquet", "--step-col", "epoch"),
                    "epoch1.parquet", "--step-col column 'epoch' not found", "label, logits")
    _one_line_error(run_cli("series", folder / "epoch1.parquet"), "epoch1.parquet",
                    "one checkpoint", "--step-col")
    _one_line_error(run_cli("series", f"{folder}/epoch*.parquet", "--step-col", "step"),
                    "--step-col splits a series given as one run")


def test_checkpoints_with_different_classes(checkpoints):
    folder, logits, labels = checkpoints
    wider = np.concatenate([logits, logits[:, :1]], axis=1)
    write_run(folder / "epoch4.parquet", labels, logits=wider, ids=np.arange(80))
    _one_line_error(run_cli("series", f"{folder}/epoch*.parquet"), "epoch4.parquet",
                    "4 classes", "3")
    (folder / "epoch4.parquet").unlink()
    write_run(folder / "epoch4.parquet", labels, logits=logits, ids=np.arange(80),
              class_names=["cat", "dog", "bird"])
    write_run(folder / "epoch5.parquet", labels, logits=logits, ids=np.arange(80),
              class_names=["cat", "dog", "fish"])
    _one_line_error(run_cli("series", folder / "epoch4.parquet", folder / "epoch5.parquet"),
                    "epoch5.parquet", "class names differ", "'fish' vs 'bird'")


def test_checkpoints_of_other_examples(checkpoints):
    folder, logits, labels = checkpoints
    write_run(folder / "epoch4.parquet", labels, logits=logits, ids=np.arange(80) + 5)
    _one_line_error(run_cli("series", f"{folder}/epoch*.parquet"), "epoch4.parquet",
                    "column 'id'", "ids differ")
    shuffled = labels.copy()
    shuffled[:3] = (shuffled[:3] + 1) % 3
    write_run(folder / "epoch4.parquet", shuffled, logits=logits, ids=np.arange(80))
    _one_line_error(run_cli("series", f"{folder}/epoch*.parquet"), "epoch4.parquet",
                    "column 'label'", "different label")


def test_series_of_different_lengths(tmp_path, checkpoints):
    folder, logits, labels = checkpoints
    _one_line_error(run_cli("series", f"a={folder}/epoch*.parquet",
                            f"b={folder}/epoch[12].parquet"),
                    "series a has 3 checkpoints and b has 2")
    steps = _steps_file(tmp_path / "steps.parquet", np.repeat([1, 2], 80), logits, labels)
    _one_line_error(run_cli("series", f"a={folder}/epoch*.parquet", f"b={steps}"),
                    "series a has 3 checkpoints and b has 2")


def test_missing_files(tmp_path, checkpoints):
    folder, *_ = checkpoints
    _one_line_error(run_cli("series", folder / "epoch1.parquet", folder / "epoch9.parquet"),
                    "epoch9.parquet", "no such file or folder")
    _one_line_error(run_cli("series", f"{tmp_path}/nothing/epoch*.parquet"),
                    "nothing/epoch*.parquet", "no file matches this pattern")
    _one_line_error(run_cli("series", f"{tmp_path}/nothing*/"), "no folder matches")
    _one_line_error(run_cli("series", f"{tmp_path}/ru*"), "matches folders only",
                    "end it with '/'")


def test_series_that_cannot_be_told_apart(checkpoints):
    folder, *_ = checkpoints
    first, second = folder / "epoch1.parquet", folder / "epoch2.parquet"
    _one_line_error(run_cli("series", f"a={first}", second), "name every checkpoint's series",
                    "epoch2.parquet")
    _one_line_error(run_cli("series", f"a={first}", f"b={second}", f"c={first}"),
                    "two series at most, got 3")
    _one_line_error(run_cli("series", first, second, "--fail-on", "worse"), "two series")
    _one_line_error(run_cli("series", f"a={first}", f"a={second}", f"b={first}", f"b={second}",
                            "--primary", "ece", "--resamples", "10"), "--resamples")
    _one_line_error(run_cli("series", first, second, "--alpha", "2"), "--alpha")
