"""The bin-free and debiased calibration errors against their authors' own packages (relplot
for the smooth ECE, uncertainty-calibration for Kumar et al.'s estimator), their resampled
forms against repeated rows, and their tests by simulation."""

from __future__ import annotations

import numpy as np
import pytest

from metricdiff import paired
from metricdiff.metrics import (debiased_rms_calibration_error, debiased_rms_from_sums,
                                mass_bin_edges)
from test_paired import paired_bootstrap, per_example

from metricdiff.smoothece import SmoothECE, smooth_ece

calibration = pytest.importorskip("calibration")  # the uncertainty-calibration package
relplot = pytest.importorskip("relplot")


def top_label_probs(conf: np.ndarray, correct: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Three-class probabilities whose top-1 is `conf`, and labels right where `correct`."""
    probs = np.stack([conf, (1 - conf) * 0.6, (1 - conf) * 0.4], axis=1)
    return probs, np.where(correct, 0, 1)


@pytest.mark.parametrize("n", [40, 300, 5000])
@pytest.mark.parametrize("bins", [5, 15])
def test_matches_kumar_et_al(n, bins):
    rng = np.random.default_rng(n + bins)
    conf = rng.uniform(0.5, 1, n)
    correct = rng.random(n) < conf ** 1.5
    probs, labels = top_label_probs(conf, correct)
    reference = calibration.lower_bound_scaling_ce(probs, labels, p=2, debias=True,
                                                   num_bins=bins, mode="top-label")
    assert debiased_rms_calibration_error(conf, correct, bins) == pytest.approx(reference,
                                                                                rel=1e-10)


def test_resample_weights_act_as_repeated_rows_in_fixed_bins():
    rng = np.random.default_rng(3)
    n = 400
    conf = rng.uniform(0.4, 0.99, n)
    pe = per_example(rng.random(n) < conf, conf, rng.integers(0, 3, n))
    view = paired.ResampleView(pe, 3, 15)
    weights = rng.poisson(1.0, (4, n)).astype(np.float64)
    resampled = view.metrics(weights, {"rmsce_debiased"})["rmsce_debiased"]
    which = np.searchsorted(mass_bin_edges(conf, 15), conf)  # bins stay those of the sample
    for row in range(4):
        sums = [np.bincount(which, weights=weights[row] * v, minlength=15)[None, :]
                for v in (np.ones(n), conf, pe.correct)]
        assert resampled[row] == pytest.approx(debiased_rms_from_sums(*sums)[0], rel=1e-12)


def test_it_removes_the_upward_bias_of_the_plug_in_estimate():
    """On calibrated predictions the true calibration error is 0; the plug-in RMS error of
    a few hundred examples is well above it, the debiased one much closer."""
    rng = np.random.default_rng(5)
    plug_in, debiased = [], []
    for _ in range(200):
        conf = rng.uniform(0.5, 1, 300)
        correct = rng.random(300) < conf  # calibrated by construction
        which = np.searchsorted(mass_bin_edges(conf, 15), conf)
        count = np.bincount(which).astype(float)
        gap = np.bincount(which, weights=conf - correct) / np.maximum(count, 1)
        plug_in.append(np.sqrt((count * gap ** 2).sum() / 300))
        debiased.append(debiased_rms_calibration_error(conf, correct, 15))
    assert np.mean(debiased) < 0.5 * np.mean(plug_in)


def false_call_rate(metric: str, trials: int, n: int, resamples: int, seed: int) -> float:
    """Two runs of one model (the same right and wrong answers, independent confidence
    noise): how often the paired bootstrap calls them different at alpha = 0.05."""
    rng = np.random.default_rng(seed)
    calls = 0
    for trial in range(trials):
        correct = rng.random(n) < 0.75
        runs = [per_example(correct, np.where(correct, rng.beta(4, 1, n), rng.beta(2, 1, n)),
                            rng.integers(0, 4, n)) for _ in range(2)]
        result = paired_bootstrap(*runs, 4, {metric}, resamples=resamples, seed=trial)
        calls += result[metric].p_value < 0.05
    return calls / trials


def test_same_model_is_rarely_called_different():
    assert 0.01 <= false_call_rate("rmsce_debiased", 200, 800, 300, seed=6) <= 0.10


@pytest.mark.parametrize("n", [25, 400, 20_000])
@pytest.mark.parametrize("shape", ["over", "under", "calibrated", "peaked", "one value"])
def test_smooth_ece_matches_relplot(n, shape):
    rng = np.random.default_rng(n)
    conf = {"over": rng.uniform(0.3, 1, n), "under": rng.uniform(0.1, 0.7, n),
            "calibrated": rng.random(n), "peaked": rng.uniform(0.97, 1, n),
            "one value": np.full(n, 0.8)}[shape]
    truth = {"over": conf ** 2, "under": np.sqrt(conf)}.get(shape, conf)
    correct = rng.random(n) < truth
    assert smooth_ece(conf, correct) == pytest.approx(relplot.smECE(conf, correct), rel=1e-9,
                                                      abs=1e-15)


def test_smooth_ece_weights_act_as_repeated_rows():
    rng = np.random.default_rng(8)
    n = 300
    conf = rng.uniform(0.4, 1, n)
    correct = rng.random(n) < conf ** 1.5
    weights = rng.poisson(1.0, (5, n)).astype(np.float64)
    resampled = SmoothECE(conf, correct).values(weights)
    for row in range(5):
        repeat = np.repeat(np.arange(n), weights[row].astype(int))
        assert resampled[row] == pytest.approx(relplot.smECE(conf[repeat], correct[repeat]),
                                               rel=1e-9)


def test_smooth_ece_of_one_model_is_rarely_called_different():
    assert 0.01 <= false_call_rate("smooth_ece", 120, 400, 100, seed=9) <= 0.10


def test_smooth_ece_blocks_from_two_threads_do_not_mix():
    """resample_values fills blocks of one run's resamples from two threads at once."""
    from concurrent.futures import ThreadPoolExecutor

    rng = np.random.default_rng(10)
    conf = rng.uniform(0.3, 1, 500)
    smooth = SmoothECE(conf, rng.random(500) < conf)
    blocks = [rng.poisson(1.0, (rows, 500)).astype(np.float64) for rows in (7, 30, 11, 54)]
    alone = [smooth.values(block) for block in blocks]
    with ThreadPoolExecutor(max_workers=2) as pool:
        together = list(pool.map(smooth.values, blocks * 3))
    for got, expected in zip(together, alone * 3):
        np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("rows", [1, 7, 1000])
def test_a_parts_grids_spread_in_pieces_equal_the_resamples_sparse_spread(monkeypatch, rows):
    """A run's own grids (bincounts, SPREAD_ROWS rows at a time) and a block of resamples'
    (one sparse product) are two ways to one spread: weights of 1 give the same grids."""
    from types import SimpleNamespace

    from metricdiff import smoothece

    monkeypatch.setattr(smoothece, "SPREAD_ROWS", rows)
    rng = np.random.default_rng(11)
    conf = np.r_[rng.uniform(0, 1, 300), 0.0, 1.0]  # both ends of the grid too
    correct = rng.random(len(conf)) < conf
    for size in (1001, 3001):
        pieces = smoothece.part_grids(SimpleNamespace(conf=conf, correct=correct), size)
        product = smoothece.spread_grids(
            smoothece.spread_matrix(conf, conf - correct, size), np.ones((1, len(conf))))
        np.testing.assert_allclose(pieces, product, rtol=0, atol=1e-12)
