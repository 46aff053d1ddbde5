"""--cross-fit: each half of the examples scored with the temperature fitted on the other,
against a scipy fit of its own; and why: the in-sample calibrated NLL is optimistic."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax

import metricdiff
from metricdiff.classwise import example_blocks
from conftest import write_run


def fitted_t(logits, labels) -> float:
    def nll(log_t):
        return -log_softmax(logits / np.exp(log_t), axis=1)[np.arange(len(labels)),
                                                              labels].mean()
    return float(np.exp(minimize_scalar(nll, bounds=(-5, 5), method="bounded",
                                        options={"xatol": 1e-10}).x))


def nll_at(logits, labels, t) -> np.ndarray:
    return -log_softmax(logits / t, axis=1)[np.arange(len(labels)), labels]


def overconfident(rng, n, k=6):
    truth = rng.normal(0, 1.5, (n, k))
    labels = (np.exp(log_softmax(truth, axis=1)).cumsum(axis=1)
              > rng.random((n, 1))).argmax(axis=1)
    return 2.5 * (truth + rng.normal(0, 0.5, (n, k))), labels


def test_matches_a_fit_on_each_half(tmp_path):
    logits, labels = overconfident(np.random.default_rng(1), 800)
    ids = np.arange(1000, 1800)
    path = write_run(tmp_path / "run.parquet", labels, logits=logits, ids=ids)
    half = example_blocks(ids, 2)
    t = [fitted_t(logits[half == h], labels[half == h]) for h in (0, 1)]
    scored = np.where(half == 0, nll_at(logits, labels, t[1]), nll_at(logits, labels, t[0]))
    document = metricdiff.report(path, cross_fit=True).to_dict()
    assert document["metrics"]["nll_calibrated"] == pytest.approx(scored.mean(), rel=1e-6)
    assert document["metrics"]["temperature"] == pytest.approx(fitted_t(logits, labels),
                                                               rel=1e-5)
    assert document["run"]["temperature_source"].startswith("cross-fitted")
    assert f"{t[0]:.4g}" in document["run"]["temperature_source"]
    compared = metricdiff.compare(path, path, resamples=0, cross_fit=True).to_dict()
    assert compared["runs"][0]["metrics"]["nll_calibrated"] == pytest.approx(scored.mean(),
                                                                             rel=1e-6)


def test_it_goes_with_no_given_temperature(tmp_path):
    logits, labels = overconfident(np.random.default_rng(2), 50)
    path = write_run(tmp_path / "run.parquet", labels, logits=logits, ids=np.arange(50))
    with pytest.raises(metricdiff.UsageError, match="--cross-fit"):
        metricdiff.report(path, cross_fit=True, temperature=1.5)


def test_in_sample_is_optimistic_and_cross_fitting_is_not():
    """On small validation sets the NLL at a temperature fitted on the same rows is below
    what that temperature gives on fresh rows; the cross-fitted NLL is not below it (it is a
    little above: each half's temperature is fitted on half the rows). Each gap has the
    sample's own luck taken out as a control variate: its NLL at the population's best T*
    minus the fresh NLL at T*, a term of mean 0."""
    rng = np.random.default_rng(3)
    fresh_logits, fresh_labels = overconfident(rng, 100_000)
    best = fitted_t(fresh_logits, fresh_labels)
    fresh_at_best = nll_at(fresh_logits, fresh_labels, best).mean()
    gaps_in, gaps_cross = [], []
    for _ in range(120):
        logits, labels = overconfident(rng, 120)
        luck = nll_at(logits, labels, best).mean() - fresh_at_best
        t = fitted_t(logits, labels)
        half = example_blocks(np.arange(120), 2)
        th = [fitted_t(logits[half == h], labels[half == h]) for h in (0, 1)]
        cross = np.where(half == 0, nll_at(logits, labels, th[1]),
                         nll_at(logits, labels, th[0])).mean()
        fresh_cross = np.mean([nll_at(fresh_logits, fresh_labels, x).mean() for x in th])
        gaps_in.append(nll_at(logits, labels, t).mean()
                       - nll_at(fresh_logits, fresh_labels, t).mean() - luck)
        gaps_cross.append(cross - fresh_cross - luck)
    se_in = np.std(gaps_in) / np.sqrt(len(gaps_in))
    se_cross = np.std(gaps_cross) / np.sqrt(len(gaps_cross))
    assert np.mean(gaps_in) < -3 * se_in  # optimistic, beyond noise
    assert np.mean(gaps_cross) > -2 * se_cross  # not optimistic
