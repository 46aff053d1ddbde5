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


# Up to this many examples the bootstrap resamples all of them (about 1 ms a resample). Above it, the cost of a
# resample would grow with n, so the bag of little bootstraps (Kleiner et al. 2014) takes over:
# LITTLE_SUBSETS random subsets of n**0.7 examples each, each resampled with Poisson weights
# that add up to n on average, so every resample still stands for a set of about n examples.
FULL_BOOTSTRAP_MAX = 20_000
LITTLE_SUBSETS = 10
LITTLE_EXPONENT = 0.7


@dataclass(frozen=True)
class BootstrapPlan:
    """Which examples each subset holds and how each resample weights them; deterministic in
    (n, resamples, seed), so every run of a comparison gets the same resamples."""

    n: int
    resamples: int
    seed: int

    @property
    def little(self) -> bool:
        return self.n > FULL_BOOTSTRAP_MAX

    @property
    def subsets(self) -> int:
        return min(LITTLE_SUBSETS, self.resamples) if self.little else 1

    @property
    def per_subset(self) -> int:
        return -(-self.resamples // self.subsets)  # ceiling: at least `resamples` in all

    @property
    def method(self) -> str:
        if not self.little:
            return f"{METHOD_BOOTSTRAP}, {self.resamples} resamples"
        size = int(self.n ** LITTLE_EXPONENT)
        return (f"bag of little bootstraps, {self.subsets} subsets of {size} examples x "
                f"{self.per_subset} resamples")

    def subset(self, j: int) -> np.ndarray | None:
        """Indices of subset j, or None for all examples."""
        if not self.little:
            return None
        rng = np.random.default_rng([self.seed, j, 0])
        return np.sort(rng.choice(self.n, int(self.n ** LITTLE_EXPONENT), replace=False))

    def weights(self, j: int):
        """The resampling weights of subset j, one array per resample."""
        rng = np.random.default_rng([self.seed, j, 1])
        if not self.little:
            for _ in range(self.per_subset):
                yield np.bincount(rng.integers(0, self.n, self.n), minlength=self.n)
            return
        size = int(self.n ** LITTLE_EXPONENT)
        for _ in range(self.per_subset):
            # Poisson(n / size) counts: the multinomial's large-n limit at a fraction of its
            # cost (numpy draws a multinomial one category at a time)
            yield rng.poisson(self.n / size, size)


def resample_values(runs: list[PerExample], num_classes: int, bins: int,
                    wanted: list[set[str]], plan: BootstrapPlan) -> list[dict[str, np.ndarray]]:
    """Each wanted metric of each run on every resample, the runs sharing each resample's
    weights (drawn once). Per run and metric: an array (subsets, 1 + resamples per subset)
    whose first column is the subset's own value (every example weighted n / size)."""
    draws = [{name: np.empty((plan.subsets, plan.per_subset + 1)) for name in names}
             for names in wanted]
    for j in range(plan.subsets):
        subset = plan.subset(j)
        views = [ResampleView(pe if subset is None else pe.take(subset), num_classes, bins)
                 for pe in runs]
        size = len(views[0].label)
        weight_sets = [np.full(size, plan.n / size)] + list(plan.weights(j))
        for r, weights in enumerate(weight_sets):
            weights = weights.astype(np.float64)
            for view, names, run_draws in zip(views, wanted, draws):
                for name, value in view.metrics(weights, names).items():
                    if name in run_draws:
                        run_draws[name][j, r] = value
    return draws


def bootstrap(observed: dict[str, float], baseline_draws: dict[str, np.ndarray],
              candidate_draws: dict[str, np.ndarray], plan: BootstrapPlan,
              alpha: float) -> dict[str, Interval]:
    """Paired bootstrap intervals and p-values of candidate-minus-baseline.

    Both runs were resampled with the same plan, so each resampled delta is paired. Within a
    subset, deviations of the resampled deltas from the subset's own delta estimate the
    sampling distribution; the interval is the observed delta plus the averaged quantiles of
    those deviations (with all examples in one subset: the percentile interval). p-value: the
    share of deviations at least as large as the observed delta's distance from zero,
    counted as (c + 1) / (R + 1) so that it is never exactly 0 from finitely many resamples.
    """
    results = {}
    for name, delta in observed.items():
        deltas = candidate_draws[name] - baseline_draws[name]
        deviations = deltas[:, 1:] - deltas[:, :1]
        low, high = np.quantile(deviations, [alpha / 2, 1 - alpha / 2], axis=1).mean(axis=1)
        extreme = int(np.sum(np.abs(deviations) >= abs(delta) - 1e-15))
        results[name] = Interval(float(delta), float(delta + low), float(delta + high),
                                 (extreme + 1) / (deviations.size + 1), plan.method)
    return results
