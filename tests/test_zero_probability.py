"""Runs that put probability 0 on the true class (tree ensembles, k-NN, hard voting) are normal
runs: every defined metric is exact, the NLL is infinite and said to be, and --min-prob is the
one opt-in floor. References: scikit-learn and hand computations on the same probabilities."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sklearn.metrics import accuracy_score, log_loss, top_k_accuracy_score
from typer.testing import CliRunner

import metricdiff
from conftest import load_schema, probs_of, random_logits, write_run
from metricdiff.cli import app

N, K, ZEROS = 600, 8, 37


def forest_like(seed: int = 0, zeros: int = ZEROS) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities with exact zeros, as a forest's vote shares have; `zeros` rows give the
    true class 0."""
    logits, labels = random_logits(N, K, seed=seed)
    probs = probs_of(logits)
    rng = np.random.default_rng(seed)
    other = np.arange(K)[None, :] != labels[:, None]
    probs[other & (rng.random(probs.shape) < 0.3)] = 0.0  # zeros among the other classes
    probs[np.arange(N), probs.argmax(axis=1)] += 1e-3  # every row keeps a positive class
    hit = rng.choice(N, zeros, replace=False)
    probs[hit, labels[hit]] = 0.0
    probs[hit, (labels[hit] + 1) % K] += 0.05  # and the row still has its maximum elsewhere
    return probs / probs.sum(axis=1, keepdims=True), labels


@pytest.fixture(scope="module")
def zero_run(tmp_path_factory):
    probs, labels = forest_like()
    folder = tmp_path_factory.mktemp("zero")
    path = write_run(folder / "forest.parquet", labels, probs=probs, ids=np.arange(N))
    return str(path), probs, labels


def test_every_defined_metric_is_exact_and_the_nll_is_infinite(zero_run):
    path, probs, labels = zero_run
    result = metricdiff.report(path)
    metrics = result.metrics
    assert metrics["accuracy"] == pytest.approx(accuracy_score(labels, probs.argmax(axis=1)))
    # ranks by the documented rule: ties (here, classes at 0) go to the lower class index;
    # scikit-learn breaks ties the other way, so it is the reference only where none decide
    true = probs[np.arange(N), labels][:, None]
    rank = (probs > true).sum(axis=1) + ((probs == true) & (np.arange(K) < labels[:, None])).sum(1)
    assert metrics["top5_accuracy"] == pytest.approx((rank < 5).mean())
    decided = (probs == true).sum(axis=1) == 1
    assert (rank < 5)[decided].mean() == pytest.approx(top_k_accuracy_score(
        labels[decided], probs[decided], k=5, labels=np.arange(K)))
    brier = ((probs - np.eye(K)[labels]) ** 2).sum(axis=1).mean()
    assert metrics["brier"] == pytest.approx(brier, rel=1e-9)
    conf = probs.max(axis=1)
    assert metrics["mean_confidence"] == pytest.approx(conf.mean(), rel=1e-9)
    assert metrics["nll"] is None
    assert f"{ZEROS} of {N} examples" in result.unavailable["nll"]
    for name in ("temperature", "nll_calibrated", "ece_calibrated"):
        assert metrics[name] is None and "infinite at every temperature" in \
            result.unavailable[name]
    zero = result.loss_anatomy["zero_probability"]
    assert zero["count"] == ZEROS and zero["share"] == pytest.approx(ZEROS / N)
    assert result.loss_anatomy["wrong"]["nll_share"] is None  # a share of an infinite total
    document = result.to_dict()
    jsonschema.validate(document, load_schema("report"))


def test_minus_infinity_logits_are_probabilities_of_zero(zero_run, tmp_path):
    path, probs, labels = zero_run
    with np.errstate(divide="ignore"):
        log_probs = np.log(probs)
    as_logits = write_run(tmp_path / "logits.parquet", labels, logits=log_probs, ids=np.arange(N))
    from_probs = metricdiff.report(path).metrics
    from_logits = metricdiff.report(str(as_logits)).metrics
    for name, value in from_probs.items():
        if value is None:
            assert from_logits[name] is None, name
        else:
            assert from_logits[name] == pytest.approx(value, rel=1e-9, abs=1e-12), name


@pytest.mark.parametrize("batch_values", [8 * 7, 8 * 64, None])
def test_the_count_and_the_metrics_do_not_depend_on_batches(zero_run, batch_values):
    path, _, _ = zero_run
    whole = metricdiff.report(path).to_dict()
    split = metricdiff.report(path, batch_values=batch_values).to_dict()
    assert split["loss_anatomy"] == whole["loss_anatomy"]
    for name, value in whole["metrics"].items():
        assert split["metrics"][name] == (None if value is None else pytest.approx(value)), name


def floored_nll(probs: np.ndarray, labels: np.ndarray, eps: float) -> float:
    floored = np.maximum(probs, eps)
    floored /= floored.sum(axis=1, keepdims=True)
    return float(-np.log(floored[np.arange(len(labels)), labels]).mean())


@pytest.mark.parametrize("eps", [1e-15, 1e-6])
def test_min_prob_floors_and_renormalises(zero_run, eps):
    path, probs, labels = zero_run
    result = metricdiff.report(path, min_prob=eps)
    expected = floored_nll(probs, labels, eps)
    assert result.metrics["nll"] == pytest.approx(expected, rel=1e-9)
    floored = np.maximum(probs, eps)
    floored /= floored.sum(axis=1, keepdims=True)
    assert result.metrics["nll"] == pytest.approx(log_loss(labels, floored, labels=range(K)),
                                                  rel=1e-9)
    assert result.metrics["temperature"] is not None  # a finite loss has a minimiser
    assert result.to_dict()["run"]["min_prob"] == eps
    assert any(f"floored at {eps:g}" in w for w in result.warnings)


def run_cli(*args: str):
    return CliRunner().invoke(app, list(args))


@pytest.mark.parametrize("output_format", ["table", "markdown", "json"])
def test_every_format_says_the_nll_is_infinite_or_floored(zero_run, output_format):
    path, _, _ = zero_run
    plain = run_cli("report", path, "--format", output_format)
    assert plain.exit_code == 0, plain.stdout
    assert "probability 0" in plain.stdout
    floored = run_cli("report", path, "--format", output_format, "--min-prob", "1e-15")
    assert floored.exit_code == 0, floored.stdout
    assert "floored at 1e-15" in floored.stdout


def test_compare_on_nll_cannot_decide_and_says_why(zero_run, tmp_path):
    path, probs, labels = zero_run
    clean = probs_of(random_logits(N, K, seed=0)[0])
    baseline = write_run(tmp_path / "clean.parquet", labels, probs=clean, ids=np.arange(N))
    result = metricdiff.compare(str(baseline), path, primary="nll", resamples=200)
    verdict = result.comparisons[0]["verdict"]
    assert verdict["decision"] == "inconclusive"
    assert "forest" in verdict["reason"] and "probability 0" in verdict["reason"]
    assert "nll" not in result.comparisons[0]["deltas"]
    jsonschema.validate(result.to_dict(), load_schema("compare"))
    on_accuracy = metricdiff.compare(str(baseline), path, primary="accuracy", resamples=200)
    assert on_accuracy.comparisons[0]["verdict"]["decision"] in ("better", "worse",
                                                                 "inconclusive")
    assert on_accuracy.comparisons[0]["deltas"]["accuracy"]["p_value"] is not None
    cli = run_cli("compare", str(baseline), path, "--fail-on", "worse", "--resamples", "200")
    assert cli.exit_code == 0, cli.stdout  # no regression can be shown on an infinite loss
    assert "probability 0" in cli.stdout


def test_topk_runs_with_an_impossible_true_class(tmp_path):
    path = tmp_path / "topk.parquet"
    pq.write_table(pa.table({
        "label": [0, 2, 1],
        "topk_ids": [[0, 1], [1, 0], [1, 0]],
        "topk_logprobs": [[-0.1, -2.5], [-0.2, -1.8], [-0.3, -1.5]],
        "label_logprob": [-0.1, -np.inf, -0.3]}), path)
    result = metricdiff.report(str(path))
    assert result.metrics["nll"] is None and "1 of 3" in result.unavailable["nll"]
    assert result.metrics["accuracy"] == pytest.approx(2 / 3)
    floored = run_cli("report", str(path), "--min-prob", "1e-9")
    assert floored.exit_code == 2 and "top-k" in floored.stderr


def test_min_prob_is_checked(zero_run):
    path, _, _ = zero_run
    for bad in ("0", "-1e-9", "nan", "0.5"):
        result = run_cli("report", path, "--min-prob", bad)
        assert result.exit_code == 2 and "--min-prob" in result.stderr, (bad, result.stderr)
    assert run_cli("report", path, "--min-prob", "0.1").exit_code == 0  # K = 8: 1/K is 0.125
    twenty_classes = str(write_run(Path(path).parent / "k20.parquet", np.arange(20),
                                   probs=np.eye(20)))
    with pytest.raises(metricdiff.InputError, match="below 1/K"):
        metricdiff.report(twenty_classes, min_prob=0.05)


def test_the_writer_saves_such_runs(tmp_path):
    probs, labels = forest_like(seed=3)
    path = metricdiff.save_predictions(tmp_path / "saved.parquet", labels, probs=probs)
    assert metricdiff.report(path).loss_anatomy["zero_probability"]["count"] == ZEROS
    with np.errstate(divide="ignore"):
        as_logits = metricdiff.save_predictions(tmp_path / "log.parquet", labels,
                                                logits=np.log(probs))
    assert metricdiff.report(as_logits).metrics["nll"] is None


def test_probabilities_saved_as_logits_are_flagged(tmp_path):
    logits, labels = random_logits(300, 5, seed=4)
    path = write_run(tmp_path / "mixed_up.parquet", labels, logits=probs_of(logits))
    warnings = metricdiff.report(str(path)).warnings
    assert any("look like probabilities" in w for w in warnings)
    real = write_run(tmp_path / "real.parquet", labels, logits=logits)
    assert not any("look like probabilities" in w for w in metricdiff.report(str(real)).warnings)
    doc = json.loads(run_cli("report", str(path), "--format", "json").stdout)
    assert any("look like probabilities" in w for w in doc["warnings"])
