"""Selective prediction (AUROC of confidence, AURC, risk at a coverage) against scikit-learn,
naive loops and a hand-worked case with ties; the resampled form against repeated rows; and
the paired bootstrap's intervals by simulation with a known population difference."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

import metricdiff
from conftest import random_logits, write_run
from metricdiff import paired
from metricdiff.metrics import SELECTIVE, selective_prediction
from test_paired import paired_bootstrap, per_example


def naive_aurc(conf: np.ndarray, correct: np.ndarray) -> float:
    """Distinct confidences: the mean over k of the error rate of the k most confident."""
    errors = ~correct[np.argsort(-conf)]
    return float(np.mean(np.cumsum(errors) / np.arange(1, len(conf) + 1)))


def test_a_hand_worked_case_with_ties():
    # two examples tie at 0.9 (one right, one wrong), one right at 0.5
    values = selective_prediction(np.array([0.9, 0.9, 0.5]), np.array([True, False, True]))
    assert values["auroc"] == pytest.approx(0.25)  # the tie counts half, 0.5 loses to 0.9
    assert values["aurc"] == pytest.approx(2 / 3 * 1 / 2 + 1 / 3 * 1 / 3)
    assert values["risk_at_80"] == pytest.approx(1 / 2.4)  # 2.4 kept: the tie, 0.4 of the last
    assert values["risk_at_95"] == pytest.approx(1 / 2.85)


@pytest.mark.parametrize("seed", range(5))
def test_against_scikit_learn_and_a_naive_loop(seed):
    rng = np.random.default_rng(seed)
    conf = rng.random(700)
    correct = rng.random(700) < conf
    values = selective_prediction(conf, correct)
    assert values["auroc"] == pytest.approx(roc_auc_score(correct, conf), rel=1e-12)
    assert values["aurc"] == pytest.approx(naive_aurc(conf, correct), rel=1e-12)
    errors = ~correct[np.argsort(-conf)]
    for coverage in (80, 90, 95):
        kept = 700 * coverage // 100  # a whole number of examples here
        assert values[f"risk_at_{coverage}"] == pytest.approx(errors[:kept].mean(), rel=1e-12)
    coarse = np.round(conf, 1)  # many ties: scikit-learn counts them half too
    assert selective_prediction(coarse, correct)["auroc"] == pytest.approx(
        roc_auc_score(correct, coarse), rel=1e-12)


def test_undefined_auroc_says_why(tmp_path):
    logits, labels = random_logits(50, 3, signal=50.0)
    logits[np.arange(50), labels] += 100  # every prediction right
    result = metricdiff.report(str(write_run(tmp_path / "r.parquet", labels, logits=logits)))
    assert result.metrics["accuracy"] == 1.0 and result.metrics["auroc"] is None
    assert "every one is right" in result.unavailable["auroc"]
    assert result.metrics["aurc"] == 0.0


def test_resample_weights_act_as_repeated_rows():
    rng = np.random.default_rng(7)
    n = 300
    correct = rng.random(n) < 0.7
    pe = per_example(correct, np.round(rng.uniform(0.3, 0.99, n), 2), rng.integers(0, 4, n))
    weights = rng.poisson(1.0, (3, n)).astype(np.float64)
    resampled = paired.ResampleView(pe, 4, 15).metrics(weights, set(SELECTIVE))
    for row in range(3):
        repeat = np.repeat(np.arange(n), weights[row].astype(int))
        expected = selective_prediction(pe.conf[repeat], pe.correct[repeat])
        for name in SELECTIVE:
            assert resampled[name][row] == pytest.approx(expected[name], rel=1e-10), name


def beta_model(rng, n, shared_u, shared_v, correct, a):
    """Right answers' confidence ~ Beta(a, 1), wrong ones' ~ U(0, 1): AUROC = a / (a + 1)."""
    return np.where(correct, shared_u ** (1 / a), shared_v)


def test_auroc_interval_covers_the_population_difference():
    rng = np.random.default_rng(11)
    n, trials, hits = 800, 200, 0
    truth = 3 / 4 - 2 / 3
    for trial in range(trials):
        correct = rng.random(n) < 0.7
        label = rng.integers(0, 4, n)
        u, v = rng.random(n), rng.random(n)  # shared: the two runs are paired
        base = per_example(correct, beta_model(rng, n, u, v, correct, 2.0), label)
        cand = per_example(correct, beta_model(rng, n, u, v, correct, 3.0), label)
        interval = paired_bootstrap(base, cand, 4, {"auroc"}, resamples=300, seed=trial)["auroc"]
        hits += interval.ci_low <= truth <= interval.ci_high
    assert 0.90 <= hits / trials <= 0.99


def test_same_model_is_rarely_called_different():
    """Two runs of one model on the same examples (independent confidence noise, the same
    right and wrong answers): the false-call rate of each selective metric is near 5%."""
    rng = np.random.default_rng(12)
    n, trials = 800, 200
    calls = dict.fromkeys(("auroc", "aurc", "risk_at_90"), 0)
    for trial in range(trials):
        correct = rng.random(n) < 0.7
        label = rng.integers(0, 4, n)
        runs = [per_example(correct, beta_model(rng, n, rng.random(n), rng.random(n), correct,
                                                2.0), label) for _ in range(2)]
        result = paired_bootstrap(*runs, 4, set(calls), resamples=300, seed=trial)
        for name in calls:
            calls[name] += result[name].p_value < 0.05
    for name, count in calls.items():
        assert 0.01 <= count / trials <= 0.10, (name, count)
