"""Adversarial numbers: finite inputs at the edge of their type give finite, exact results."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy.optimize import minimize_scalar
from scipy.special import logsumexp
from typer.testing import CliRunner

from conftest import write_run
from metricdiff.cli import app
from metricdiff.temperature import TemperatureSample, fit_temperature


def run_cli(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.mark.parametrize("dtype", [np.float16, np.float32])  # float64 gaps fit in float64
def test_finite_logits_of_huge_magnitude_give_an_exact_nll(tmp_path, dtype):
    big = float(np.finfo(dtype).max) * 0.9
    logits = np.array([[big, -big], [-big, big], [1.0, 0.0], [0.0, 1.0]], dtype=dtype)
    labels = np.array([1, 1, 0, 1])
    path = write_run(tmp_path / "run.parquet", labels, logits=logits)
    doc = json.loads(run_cli("report", path, "-f", "json").stdout)
    expected = np.mean([logsumexp(row.astype(np.float64)) - row[y] for row, y
                        in zip(logits.astype(np.float64), labels)])
    assert doc["metrics"]["nll"] == pytest.approx(expected, rel=1e-12)
    assert "nll" not in doc["unavailable"]


def _exact_nll(scores: np.ndarray, labels: np.ndarray, t: float) -> float:
    z = scores.astype(np.float64) / t
    return float(np.mean(logsumexp(z, axis=1) - z[np.arange(len(labels)), labels]))


def test_the_temperature_is_the_minimiser_when_true_logits_sit_far_below_the_maximum():
    rng = np.random.default_rng(4)
    n, k = 10_000, 10
    scores = rng.normal(0, 3, (n, k)).astype(np.float32)
    labels = rng.integers(0, k, n)
    far = rng.random(n) < 0.01  # 1% of rows: the true class 3e4 nats below the top
    scores[far, labels[far]] = scores[far].max(axis=1) - 3e4
    sample = TemperatureSample()
    sample.add(scores, labels)
    fitted = fit_temperature(sample)
    best = minimize_scalar(lambda t: _exact_nll(scores, labels, t), bounds=(0.01, 100),
                           method="bounded", options={"xatol": 1e-9})
    assert fitted == pytest.approx(best.x, rel=1e-4)
    assert _exact_nll(scores, labels, fitted) <= best.fun + 1e-9


def test_zero_probabilities_still_fit_a_finite_temperature():
    with np.errstate(divide="ignore"):
        scores = np.log(np.array([[0.7, 0.3, 0.0], [0.1, 0.9, 0.0], [0.5, 0.5, 0.0]]))
    sample = TemperatureSample()
    sample.add(scores, np.array([0, 1, 0]))
    assert math.isfinite(fit_temperature(sample))


def test_a_signalling_nan_is_refused_without_a_numpy_warning(tmp_path):
    """Casting a signalling NaN raises numpy's 'invalid' flag: in a reader thread, where the
    CLI's errstate does not reach, that used to print a RuntimeWarning before the error."""
    import subprocess
    import sys

    import pyarrow as pa
    import pyarrow.parquet as pq

    snan = np.array([0x7F800001, 0x3F000000], dtype=np.uint32).view(np.float32)
    path = tmp_path / "snan.parquet"
    pq.write_table(pa.table({
        "label": [0, 1], "topk_ids": [[0, 1], [1, 0]],
        "topk_logprobs": pa.array([[-0.1, -2.5], [-0.2, -1.8]], type=pa.list_(pa.float32())),
        "label_logprob": pa.array(snan, type=pa.float32())}), path)
    result = subprocess.run([sys.executable, "-m", "metricdiff", "report", str(path)],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "Warning" not in result.stderr, result.stderr
