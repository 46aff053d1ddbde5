"""Every metric against an independent reference: scikit-learn, scipy, or a naive loop."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax
from scipy.stats import entropy as scipy_entropy
from sklearn.metrics import (accuracy_score, balanced_accuracy_score, brier_score_loss, f1_score,
                             log_loss, precision_recall_fscore_support, top_k_accuracy_score)

import metricdiff
from conftest import probs_of, random_logits, write_run

# (rows, classes): binary, small, medium, and a 3,000-class problem
SHAPES = [(400, 2), (300, 3), (600, 10), (250, 3000)]


def naive_ece(conf, correct, bins):
    """Guo et al. 2017: bins (i/B, (i+1)/B], gap weighted by the bin's share of examples."""
    edges = np.linspace(0, 1, bins + 1)
    ece, mce = 0.0, 0.0
    for i in range(bins):
        inside = (conf > edges[i]) & (conf <= edges[i + 1])
        if i == 0:
            inside |= conf == 0
        if inside.any():
            gap = abs(correct[inside].mean() - conf[inside].mean())
            ece += inside.mean() * gap
            mce = max(mce, gap)
    return ece, mce


def naive_adaptive_ece(conf, correct, bins):
    order = sorted(range(len(conf)), key=lambda i: (conf[i], i))
    size, extra = divmod(len(conf), bins)
    ece, start = 0.0, 0
    for b in range(bins):
        stop = start + size + (1 if b < extra else 0)
        chunk = order[start:stop]
        ece += abs(sum(correct[i] for i in chunk) - sum(conf[i] for i in chunk))
        start = stop
    return ece / len(conf)


def reference_temperature(logits, labels):
    z = logits.astype(np.float64)

    def mean_nll(log_t):
        return -log_softmax(z / math.exp(log_t), axis=1)[np.arange(len(labels)), labels].mean()

    best = minimize_scalar(mean_nll, bounds=(math.log(0.01), math.log(100)), method="bounded",
                           options={"xatol": 1e-10})
    return math.exp(best.x), best.fun


@pytest.fixture(params=SHAPES, ids=lambda s: f"n{s[0]}_k{s[1]}")
def case(request, tmp_path):
    n, k = request.param
    logits, labels = random_logits(n, k, seed=n + k)
    path = write_run(tmp_path / "run.parquet", labels, logits=logits)
    result = metricdiff.report(str(path), top_k=min(5, k)).to_dict()
    return logits, labels, result


def test_loss_accuracy_brier_entropy_match_sklearn_and_scipy(case):
    logits, labels, result = case
    k = logits.shape[1]
    metrics = result["metrics"]
    probs = probs_of(logits)
    classes = list(range(k))
    assert metrics["n"] == len(labels)
    assert metrics["nll"] == pytest.approx(log_loss(labels, probs, labels=classes), rel=1e-7)
    assert metrics["accuracy"] == accuracy_score(labels, probs.argmax(axis=1))
    top = min(5, k)
    expected_top = (1.0 if k == 2 and top == 2 else
                    top_k_accuracy_score(labels, probs, k=top, labels=classes))
    assert metrics[f"top{top}_accuracy"] == pytest.approx(expected_top, abs=1e-12)
    assert metrics["brier"] == pytest.approx(
        brier_score_loss(labels, probs, labels=classes, scale_by_half=False), rel=1e-6)
    assert metrics["mean_entropy"] == pytest.approx(scipy_entropy(probs, axis=1).mean(), rel=1e-6)
    assert metrics["mean_confidence"] == pytest.approx(probs.max(axis=1).mean(), rel=1e-6)
    assert metrics["overconfidence"] == pytest.approx(
        probs.max(axis=1).mean() - metrics["accuracy"], abs=1e-7)


def test_class_metrics_match_sklearn(case):
    logits, labels, result = case
    pred = logits.argmax(axis=1)
    metrics = result["metrics"]
    assert metrics["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(labels, pred),
                                                         abs=1e-12)
    assert metrics["macro_f1"] == pytest.approx(
        f1_score(labels, pred, average="macro", zero_division=0), abs=1e-12)


def test_calibration_errors_match_naive_loops(case):
    logits, labels, result = case
    probs = probs_of(logits)
    conf, correct = probs.max(axis=1), (probs.argmax(axis=1) == labels).astype(float)
    ece, mce = naive_ece(conf, correct, 15)
    metrics = result["metrics"]
    assert metrics["ece"] == pytest.approx(ece, abs=1e-7)
    assert metrics["mce"] == pytest.approx(mce, abs=1e-7)
    assert metrics["ece_adaptive"] == pytest.approx(naive_adaptive_ece(conf, correct, 15),
                                                    abs=1e-7)


def test_temperature_matches_scipy(case):
    logits, labels, result = case
    metrics = result["metrics"]
    temperature, best_nll = reference_temperature(logits, labels)
    assert metrics["temperature"] == pytest.approx(temperature, rel=1e-4)
    assert metrics["nll_calibrated"] == pytest.approx(best_nll, rel=1e-7)
    assert metrics["nll_calibrated"] <= metrics["nll"] + 1e-12
    scaled = probs_of(logits.astype(np.float64) / metrics["temperature"])
    correct = (scaled.argmax(axis=1) == labels).astype(float)
    assert metrics["ece_calibrated"] == pytest.approx(
        naive_ece(scaled.max(axis=1), correct, 15)[0], abs=1e-6)


def test_per_class_table_matches_sklearn(tmp_path):
    logits, labels = random_logits(800, 12, seed=5)
    path = write_run(tmp_path / "run.parquet", labels, logits=logits)
    rows = metricdiff.report(str(path), worst_classes=0).to_dict()["per_class"]["rows"]
    pred = logits.argmax(axis=1)
    precision, recall, f1, support = precision_recall_fscore_support(
        labels, pred, labels=range(12), zero_division=0)
    nll = -log_softmax(logits.astype(np.float64), axis=1)[np.arange(len(labels)), labels]
    assert len(rows) == 12
    for row in rows:
        c = row["class"]
        assert row["support"] == support[c]
        assert row["recall"] == pytest.approx(recall[c])
        assert row["precision"] == pytest.approx(precision[c])
        assert row["f1"] == pytest.approx(f1[c])
        assert row["nll"] == pytest.approx(nll[labels == c].mean(), rel=1e-6)
    errors = [r["errors"] for r in rows]
    assert errors == sorted(errors, reverse=True), "worst classes come first"


def test_loss_anatomy_by_hand(tmp_path):
    logits, labels = random_logits(1000, 8, seed=3, signal=3)
    path = write_run(tmp_path / "run.parquet", labels, logits=logits)
    anatomy = metricdiff.report(str(path)).to_dict()["loss_anatomy"]
    probs = probs_of(logits)
    nll = -np.log(probs[np.arange(len(labels)), labels])
    correct = probs.argmax(axis=1) == labels
    assert anatomy["correct"]["count"] == correct.sum()
    assert anatomy["correct"]["mean_nll"] == pytest.approx(nll[correct].mean(), rel=1e-6)
    assert anatomy["wrong"]["nll_share"] == pytest.approx(nll[~correct].sum() / nll.sum(),
                                                          rel=1e-6)
    worst = np.sort(nll)[::-1]
    assert anatomy["worst_1pct_nll_share"] == pytest.approx(worst[:10].sum() / nll.sum(), rel=1e-6)
    assert anatomy["worst_10pct_nll_share"] == pytest.approx(worst[:100].sum() / nll.sum(),
                                                             rel=1e-6)
    confident_wrong = ~correct & (probs.max(axis=1) >= 0.9)
    assert anatomy["confidently_wrong"]["count"] == confident_wrong.sum()


def test_class_groups_on_a_tiny_hand_case(tmp_path):
    # supports: class 0 -> 5, class 1 -> 3, class 2 -> 1, class 3 -> 1, class 4 -> 0
    labels = np.array([0, 0, 0, 0, 0, 1, 1, 1, 2, 3])
    logits = np.full((10, 5), -2.0, dtype=np.float32)
    logits[np.arange(10), [0, 0, 0, 0, 1, 1, 1, 0, 0, 3]] = 2.0  # predictions
    path = write_run(tmp_path / "run.parquet", labels, logits=logits)
    groups = {g["group"]: g for g in metricdiff.report(str(path)).to_dict()["class_groups"]}
    # head: class 0 (starts at 0% < 50%); torso: class 1 (starts at 50%) ; tail: 2, 3, 4
    assert (groups["head"]["classes"], groups["torso"]["classes"], groups["tail"]["classes"]) == (
        1, 1, 3)
    assert groups["head"]["accuracy"] == pytest.approx(4 / 5)
    assert groups["torso"]["accuracy"] == pytest.approx(2 / 3)
    assert groups["tail"]["accuracy"] == pytest.approx(1 / 2)
    # 3 errors in all (rows 4, 7, 8): one from each group
    assert groups["tail"]["error_share"] == pytest.approx(1 / 3)
    assert groups["head"]["predicted_share"] == pytest.approx(6 / 10)


def test_reliability_table_sums_to_the_run(small_run):
    path, logits, labels, _ = small_run
    result = metricdiff.report(str(path), ece_bins=10).to_dict()
    bins = result["confidence_bins"]
    assert len(bins) == 10
    assert sum(b["count"] for b in bins) == len(labels)
    assert sum(b["nll_share"] for b in bins) == pytest.approx(1.0)
    filled = [b for b in bins if b["count"]]
    assert sum(b["count"] * abs(b["gap"]) for b in filled) / len(labels) == pytest.approx(
        result["metrics"]["ece"])


def test_confidence_of_exactly_one_lands_in_the_last_bin(tmp_path):
    labels = np.array([0, 1, 1])
    probs = np.array([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]])
    path = write_run(tmp_path / "run.parquet", labels, probs=probs)
    result = metricdiff.report(str(path), ece_bins=15).to_dict()
    assert result["confidence_bins"][-1]["count"] == 2
    assert result["confidence_bins"][7]["count"] == 1  # 0.5 is in (7/15, 8/15]
    assert result["metrics"]["ece"] == pytest.approx(naive_ece(
        np.array([1.0, 1.0, 0.5]), np.array([1.0, 1.0, 1.0]), 15)[0])


def test_noise_floor_is_the_spread_of_random_batches(tmp_path):
    logits, labels = random_logits(3200, 10, seed=9)
    path = write_run(tmp_path / "run.parquet", labels, logits=logits)
    floor = metricdiff.report(str(path), noise_batch=32, seed=4).to_dict()["noise_floor"]
    correct = (logits.argmax(axis=1) == labels)
    order = np.random.default_rng(4).permutation(len(labels))
    per_batch = correct[order].reshape(100, 32).mean(axis=1)
    assert floor["batches"] == 100
    assert floor["accuracy"]["std"] == pytest.approx(per_batch.std(ddof=1))
    p = correct.mean()
    assert floor["accuracy"]["expected_std"] == pytest.approx(math.sqrt(p * (1 - p) / 32))
    # the binomial standard error describes random batches well on 100 of them
    assert floor["accuracy"]["std"] == pytest.approx(floor["accuracy"]["expected_std"], rel=0.25)
    assert 0 <= floor["disagree_rate"] <= 1


def test_noise_floor_of_a_perfect_run_has_no_disagreement(tmp_path):
    labels = np.arange(200) % 4
    logits = np.eye(4, dtype=np.float32)[labels] * 10
    path = write_run(tmp_path / "run.parquet", labels, logits=logits)
    floor = metricdiff.report(str(path)).to_dict()["noise_floor"]
    assert floor["accuracy"]["std"] == 0
    assert floor["disagree_rate"] is None  # accuracy never moves between batches


def test_temperature_search_limits(tmp_path):
    """Uninformative logits want T -> infinity: clamped at 100, with a warning."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 5, 300)
    logits = rng.normal(size=(300, 5)).astype(np.float32)
    path = write_run(tmp_path / "run.parquet", labels, logits=logits)
    document = metricdiff.report(str(path)).to_dict()
    assert document["metrics"]["temperature"] == 100.0
    assert any("search limit" in w for w in document["warnings"])
    assert document["metrics"]["nll_calibrated"] == pytest.approx(math.log(5), rel=1e-3)


def test_rank_of_the_true_class_with_ties_is_a_stable_sort():
    """Rank = position of the true class when classes are sorted by descending score, ties by
    class index (a stable argsort of -score); scores rounded to make ties common."""
    from metricdiff.perexample import from_scores

    rng = np.random.default_rng(3)
    scores = np.round(rng.normal(0, 1, (2000, 12)), 1).astype(np.float32)
    labels = rng.integers(0, 12, 2000)
    order = np.argsort(-scores, axis=1, kind="stable")
    expected = np.argmax(order == labels[:, None], axis=1)
    pe = from_scores(scores, labels, temperature=None)
    assert np.array_equal(pe.rank, expected)
    assert np.array_equal(pe.pred, order[:, 0])
    tied = (scores == scores[np.arange(2000), labels][:, None]).sum(axis=1) > 1
    assert tied.mean() > 0.2  # the case under test does occur
