"""The messages a newcomer meets first: each names the file, the column and what to do."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

import metricdiff
from conftest import random_logits, write_run
from metricdiff import api
from metricdiff.cli import app


def one_line_error(*args: str) -> str:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 2, (result.exit_code, result.stdout, result.stderr)
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    return result.stderr


@pytest.mark.parametrize("ending", [".csv", ".tsv", ".jsonl", ".npy"])
def test_a_file_in_another_format_gets_the_conversion(tmp_path, ending):
    path = tmp_path / f"preds{ending}"
    pd.DataFrame({"label": [0, 1], "logit_0": [0.1, 0.9], "logit_1": [0.9, 0.1]}).to_csv(path)
    message = one_line_error("report", str(path))
    assert str(path) in message and "is not a run format" in message
    assert "to_parquet" in message or "save_predictions" in message


def test_numbered_class_columns_get_the_wide_names(tmp_path):
    path = tmp_path / "numbered.parquet"
    pq.write_table(pa.table({"label": [0, 1], "0": [0.2, 0.7], "1": [0.8, 0.3]}), path)
    message = one_line_error("report", str(path))
    assert "logit_0" in message and "prob_0" in message and "columns 0..1" in message


def test_a_column_of_unknown_kind_names_the_file(tmp_path):
    logits, labels = random_logits(20, 3)
    path = write_run(tmp_path / "scores.parquet", labels, logits=logits, pred_col="scores")
    message = one_line_error("report", str(path), "--pred-col", "scores")
    assert str(path) in message and "column 'scores'" in message and "--pred-kind" in message


def test_binary_probabilities_get_the_probability_recipe(tmp_path):
    with pytest.raises(metricdiff.UsageError, match=r"probs=np.stack\(\[1 - p, p\]"):
        metricdiff.save_predictions(tmp_path / "b.parquet", [0, 1], probs=np.array([0.2, 0.9]))
    with pytest.raises(metricdiff.UsageError, match=r"logits=np.stack\(\[np.zeros_like"):
        metricdiff.save_predictions(tmp_path / "b.parquet", [0, 1], logits=np.array([0.2, 0.9]))


def test_values_print_as_written(tmp_path):
    with pytest.raises(metricdiff.UsageError) as caught:
        metricdiff.save_predictions(tmp_path / "d.parquet", [0, 1], logits=np.eye(2),
                                    ids=np.array([7, 7]))
    assert "7 appears twice" in str(caught.value) and "np." not in str(caught.value)
    with pytest.raises(metricdiff.UsageError) as caught:
        metricdiff.save_predictions(tmp_path / "d.parquet", np.array([0, 1.5], dtype=object),
                                    logits=np.eye(2))
    assert "1.5" in str(caught.value) and "np." not in str(caught.value)


def test_labels_are_checked_before_any_prediction_is_read(tmp_path, monkeypatch):
    logits, labels = random_logits(200, 4)
    base = write_run(tmp_path / "base.parquet", labels, logits=logits, ids=np.arange(200))
    other = labels.copy()
    other[17] = (other[17] + 1) % 4
    cand = write_run(tmp_path / "cand.parquet", other, logits=logits, ids=np.arange(200))

    def no_prediction_read(*args, **kwargs):
        raise AssertionError("predictions were read before the labels were checked")

    monkeypatch.setattr(api, "load_run", no_prediction_read)
    with pytest.raises(metricdiff.InputError, match="1 examples have a different label") as err:
        metricdiff.compare(str(base), str(cand))
    assert err.value.path == str(cand)
    missing = write_run(tmp_path / "fewer.parquet", labels[:150], logits=logits[:150],
                        ids=np.arange(150))
    with pytest.raises(metricdiff.InputError, match="50 baseline ids missing"):
        metricdiff.compare(str(base), str(missing))
