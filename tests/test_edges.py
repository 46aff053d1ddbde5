"""Valid edge cases: they must work, with defined numbers."""

from __future__ import annotations

import math

import numpy as np
import pytest
from typer.testing import CliRunner

import metricdiff
from conftest import random_logits, write_run
from metricdiff.cli import app


def test_one_class_is_trivially_right(tmp_path):
    """K=1: the only class has probability 1. Loss 0, accuracy 1, perfectly calibrated."""
    path = write_run(tmp_path / "k1.parquet", np.zeros(40, dtype=np.int64),
                     logits=np.random.default_rng(0).normal(size=(40, 1)).astype(np.float32))
    metrics = metricdiff.report(str(path)).to_dict()["metrics"]
    assert metrics["nll"] == 0 and metrics["accuracy"] == 1 and metrics["top5_accuracy"] == 1
    assert metrics["ece"] == 0 and metrics["brier"] == 0 and metrics["mean_entropy"] == 0
    assert metrics["nll_calibrated"] == 0


def test_a_single_example(tmp_path):
    path = write_run(tmp_path / "one.parquet", np.array([2]),
                     logits=np.array([[0.1, 0.5, 2.0]], np.float32), extra={"s": ["x"]})
    document = metricdiff.report(str(path), by=["s"]).to_dict()
    p = math.exp(2.0) / (math.exp(0.1) + math.exp(0.5) + math.exp(2.0))
    assert document["metrics"]["nll"] == pytest.approx(-math.log(p), rel=1e-6)
    assert document["metrics"]["ece"] == pytest.approx(1 - p, rel=1e-6)
    assert document["slices"]["s"]["rows"][0]["n"] == 1
    assert document["noise_floor"]["accuracy"] is None


def test_a_class_with_no_support_is_left_out_of_recall_averages(tmp_path):
    labels = np.array([0, 0, 1, 1, 1])
    logits = np.full((5, 4), -3.0, np.float32)
    logits[np.arange(5), [0, 2, 1, 1, 3]] = 3.0  # classes 2 and 3 predicted, never true
    document = metricdiff.report(str(write_run(tmp_path / "r.parquet", labels,
                                               logits=logits)), worst_classes=0).to_dict()
    assert document["metrics"]["balanced_accuracy"] == pytest.approx((1 / 2 + 2 / 3) / 2)
    rows = {r["class"]: r for r in document["per_class"]["rows"]}
    assert rows[2]["support"] == 0 and rows[2]["recall"] is None and rows[2]["f1"] == 0


def test_unicode_class_names_slice_values_and_string_ids(tmp_path):
    names = ["猫", "chien", "ñandú|x"]
    labels = [names[i] for i in [0, 1, 2, 0]]
    path = write_run(tmp_path / "u.parquet", labels, class_names=names,
                     logits=np.eye(3, dtype=np.float32)[[0, 1, 1, 0]] * 4,
                     ids=["a", "b", "c", "d"], extra={"région": ["île", "é", "île", "x"]})
    for fmt in ("table", "json", "markdown"):
        result = CliRunner().invoke(app, ["report", str(path), "--by", "région", "-f", fmt])
        assert result.exit_code == 0, result.stderr
        assert "île" in result.stdout
    document = metricdiff.compare(str(path), str(path), resamples=10).to_dict()
    assert document["comparisons"][0]["verdict"]["decision"] == "inconclusive"
    assert [r["name"] for r in document["runs"]] == ["u", "u#2"]


def test_thirty_thousand_classes(tmp_path):
    logits, labels = random_logits(64, 30_000, seed=3, signal=6)
    path = write_run(tmp_path / "wide.parquet", labels, logits=logits, row_group_size=16)
    metrics = metricdiff.report(str(path)).to_dict()["metrics"]
    from scipy.special import log_softmax
    nll = -log_softmax(logits.astype(np.float64), axis=1)[np.arange(64), labels].mean()
    assert metrics["nll"] == pytest.approx(nll, rel=1e-7)
    assert metrics["accuracy"] == (logits.argmax(axis=1) == labels).mean()


def test_binary_problem_top5_is_one(tmp_path):
    logits, labels = random_logits(100, 2, seed=4)
    metrics = metricdiff.report(str(write_run(tmp_path / "b.parquet", labels,
                                              logits=logits))).to_dict()["metrics"]
    assert metrics["top5_accuracy"] == 1.0
