"""Paired differences between two runs on the same examples: intervals and tests.

Means of per-example values (NLL, accuracy, Brier...) are compared with the paired t interval
and test, which is what a bootstrap of a mean converges to and is exact enough at the sizes of
validation sets; accuracy also gets McNemar's exact test on the flipped examples. Metrics that
are not means of per-example values (ECE, macro F1...) use a paired bootstrap: the same
resampled example indices for both runs, a fixed seed, and percentile intervals.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy import special  # scipy.stats would add a second to every start-up

from .metrics import MetricSettings, equal_width_bin
from .perexample import PerExample

METHOD_T = "paired t"
METHOD_MCNEMAR = "paired t interval; McNemar exact test"
METHOD_BOOTSTRAP = "paired bootstrap"
METHOD_NONE = "fitted parameter: no interval"


@dataclass(frozen=True)
class Interval:
    delta: float
    ci_low: float | None
    ci_high: float | None
    p_value: float | None
    method: str


def per_example_values(settings: MetricSettings) -> dict[str, Callable[[PerExample], np.ndarray]]:
    """Metrics that are the mean of one number per example."""
    return {
        "nll": lambda pe: pe.nll,
        "accuracy": lambda pe: pe.correct.astype(np.float64),
        f"top{settings.top_k}_accuracy": lambda pe: (pe.rank < settings.top_k).astype(np.float64),
        "brier": lambda pe: pe.brier,
        "mean_confidence": lambda pe: pe.conf,
        "overconfidence": lambda pe: pe.conf - pe.correct,
        "mean_entropy": lambda pe: pe.entropy,
        "nll_calibrated": lambda pe: pe.nll_cal,
    }


def paired_t(baseline: np.ndarray, candidate: np.ndarray, alpha: float) -> Interval:
    """Interval and two-sided p-value of mean(candidate - baseline), as scipy's ttest_rel."""
    diff = candidate - baseline
    n = len(diff)
    delta = float(diff.mean())
    se = float(diff.std(ddof=1) / math.sqrt(n)) if n > 1 else math.nan
    if not se > 0:  # every difference equal (often all zero): no spread to test against
        p_value = 1.0 if delta == 0 else (0.0 if n > 1 else math.nan)
        low, high = (delta, delta) if n > 1 else (math.nan, math.nan)
        return Interval(delta, low, high, p_value, METHOD_T)
    t_crit = special.stdtrit(n - 1, 1 - alpha / 2)
    p_value = float(2 * special.stdtr(n - 1, -abs(delta / se)))
    return Interval(delta, delta - t_crit * se, delta + t_crit * se, p_value, METHOD_T)


def mcnemar_exact(fixed: int, broken: int) -> float:
    """Two-sided exact McNemar p-value: a binomial test of fixed vs broken at p = 1/2."""
    flips = fixed + broken
    if flips == 0:
        return 1.0
    return float(min(1.0, 2 * special.bdtr(min(fixed, broken), flips, 0.5)))


class ResampleView:
    """What the resampled metrics of one run need, computed once; each metric then takes
    per-example weights (how often the resample drew each example).

    Calibration errors only need, per bin, the summed (correct - confidence) and, for the
    MCE, the count: one weighted bincount each.
    """

    def __init__(self, pe: PerExample, num_classes: int, bins: int):
        self.num_classes = num_classes
        self.bins = bins
        self.correct = pe.correct.astype(np.float64)
        self.label = pe.label
        self.pred = pe.pred
        self.gap = self.correct - pe.conf
        self.gap_cal = self.correct - np.nan_to_num(pe.conf_cal)
        self.bin = equal_width_bin(pe.conf, bins)
        self.bin_cal = equal_width_bin(np.nan_to_num(pe.conf_cal), bins)
        self.by_conf = np.argsort(pe.conf, kind="stable")
        self.gap_by_conf = self.gap[self.by_conf]

    def metrics(self, weights: np.ndarray, wanted: set[str]) -> dict[str, float]:
        out = {}
        total = weights.sum()
        if wanted & {"ece", "mce"}:
            count = np.bincount(self.bin, weights=weights, minlength=self.bins)
            gap = np.abs(np.bincount(self.bin, weights=weights * self.gap, minlength=self.bins))
            filled = count > 0
            out["ece"] = float(gap.sum() / total)
            out["mce"] = float(np.max(gap[filled] / count[filled]))
        if "ece_calibrated" in wanted:
            gap = np.bincount(self.bin_cal, weights=weights * self.gap_cal, minlength=self.bins)
            out["ece_calibrated"] = float(np.abs(gap).sum() / total)
        if "ece_adaptive" in wanted:
            out["ece_adaptive"] = self._adaptive(weights)
        if wanted & {"balanced_accuracy", "macro_f1"}:
            k = self.num_classes
            support = np.bincount(self.label, weights=weights, minlength=k)
            predicted = np.bincount(self.pred, weights=weights, minlength=k)
            hits = np.bincount(self.label, weights=weights * self.correct, minlength=k)
            present = support > 0
            out["balanced_accuracy"] = float(np.mean(hits[present] / support[present]))
            seen = present | (predicted > 0)
            out["macro_f1"] = float(np.mean(2 * hits[seen] / (support[seen] + predicted[seen])))
        return out

    def _adaptive(self, weights: np.ndarray) -> float:
        """Equal-mass bins over the resample, each drawn copy of an example one row.

        Copies are laid out in confidence order; a bin's sum is the difference of cumulative
        sums at its edges, with the example that straddles an edge split between two bins.
        """
        w = weights[self.by_conf]
        copies = np.cumsum(w)
        total = int(copies[-1])
        bins = min(self.bins, total)
        sizes = np.full(bins, total // bins)
        sizes[: total % bins] += 1  # as np.array_split: the first bins take one more
        edges = np.concatenate([[0], np.cumsum(sizes)])
        cumulative = np.concatenate([[0.0], np.cumsum(w * self.gap_by_conf)])
        before = np.concatenate([[0.0], copies])
        j = np.minimum(np.searchsorted(copies, edges, side="left"), len(copies) - 1)
        at_edges = cumulative[j] + (edges - before[j]) * self.gap_by_conf[j]
        return float(np.abs(np.diff(at_edges)).sum()) / total


RESAMPLED = ("ece", "ece_adaptive", "mce", "balanced_accuracy", "macro_f1", "ece_calibrated")


def bootstrap(baseline: ResampleView, candidate: ResampleView, wanted: set[str],
              resamples: int, seed: int, alpha: float,
              baseline_draws: dict[str, np.ndarray] | None = None) -> dict[str, Interval]:
    """Paired bootstrap of candidate-minus-baseline for each wanted metric.

    Both runs get the same resampled examples: the seed fixes the sequence of resamples, so
    the baseline's resampled values are the same for every candidate and can be passed in
    (`baseline_draws`, from `resample_values`) instead of being computed again. p-value: the
    share of resampled deltas at least as far from the observed delta as the observed delta
    is from zero (the bootstrap distribution shifted to the null), counted as (c + 1) / (R + 1)
    so that it is never reported as exactly 0 from a finite number of resamples.
    """
    n = len(baseline.label)
    if baseline_draws is None:
        baseline_draws = resample_values(baseline, wanted, resamples, seed)
    candidate_draws = resample_values(candidate, wanted, resamples, seed, n)
    ones = np.ones(n)
    base_obs, cand_obs = baseline.metrics(ones, wanted), candidate.metrics(ones, wanted)
    results = {}
    for name in wanted:
        delta = cand_obs[name] - base_obs[name]
        values = candidate_draws[name] - baseline_draws[name]
        low, high = np.quantile(values, [alpha / 2, 1 - alpha / 2])
        extreme = int(np.sum(np.abs(values - delta) >= abs(delta) - 1e-15))
        results[name] = Interval(float(delta), float(low), float(high),
                                 (extreme + 1) / (resamples + 1), METHOD_BOOTSTRAP)
    return results


def resample_values(view: ResampleView, wanted: set[str], resamples: int, seed: int,
                    n: int | None = None) -> dict[str, np.ndarray]:
    """Each wanted metric of one run on each of the seeded resamples of its examples."""
    n = n or len(view.label)
    rng = np.random.default_rng(seed)
    draws = {name: np.empty(resamples) for name in wanted}
    for r in range(resamples):
        weights = np.bincount(rng.integers(0, n, n), minlength=n).astype(np.float64)
        for name, value in view.metrics(weights, wanted).items():
            if name in draws:
                draws[name][r] = value
    return draws
