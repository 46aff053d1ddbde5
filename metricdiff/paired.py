"""Paired differences between two runs on the same examples: intervals and tests.

Means of per-example values (NLL, accuracy, Brier...) are compared with the paired t interval
and test, which is what a bootstrap of a mean converges to and is exact enough at the sizes of
validation sets; accuracy also gets McNemar's exact test on the flipped examples. Metrics that
are not means of per-example values (ECE, macro F1...) use a paired bootstrap: the same
resampled example indices for both runs, a fixed seed, and percentile intervals.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Protocol

import numpy as np
from scipy import special  # scipy.stats would add a second to every start-up

from .keyhash import counter_uniforms, key_hash, salt, smallest
from .metrics import (SELECTIVE, GroupMoments, MetricSettings, Moments, adaptive_from_copies,
                      class_scores_from_sums, confidence_groups, debiased_rms_from_sums,
                      ece_from_sums,
                      equal_width_bin, mass_bin_edges, mce_from_sums, selective_from_sums)
from .orderstats import HeldRows, LocalParts, Parts
from .perexample import PerExample
from .smoothece import SmoothECE

METHOD_T = "paired t"
METHOD_T_CLUSTERED = "paired t, cluster-robust (CR1)"
METHOD_MCNEMAR = "McNemar exact test and interval"
METHOD_CLUSTERED_MCNEMAR = "clustered McNemar (Durkalski 2003)"
METHOD_BOOTSTRAP = "paired bootstrap"
METHOD_NONE = "fitted parameter: no interval"


NOISE_EXAMPLES = "examples"
NOISE_CLUSTERS = "clusters"


@dataclass(frozen=True)
class Interval:
    """A delta with its interval and p-value, both from one reference distribution, so that
    the interval excludes 0 exactly when p < alpha."""

    delta: float
    ci_low: float | None
    ci_high: float | None
    p_value: float | None
    method: str
    df: float | None = None  # of the t reference, where there is one
    se: float | None = None  # standard error of the delta, where the method has one
    noise: tuple[str, ...] = (NOISE_EXAMPLES,)  # the sources of noise the interval covers
    seed_var: float | None = None  # the part of se^2 that comes from training seeds


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


def paired_t(baseline: np.ndarray, candidate: np.ndarray, alpha: float,
             clusters: np.ndarray | None = None) -> Interval:
    """Interval and two-sided p-value of mean(candidate - baseline), as scipy's ttest_rel;
    with clusters (an index per example), the cluster-robust variance on C - 1 df."""
    diff = candidate - baseline
    delta = float(diff.mean()) if len(diff) else math.nan
    variance, df = sampling_variance(diff, clusters)
    noise = (NOISE_EXAMPLES,) if clusters is None else (NOISE_CLUSTERS,)
    method = METHOD_T if clusters is None else METHOD_T_CLUSTERED
    if df < 1:  # one example (or one cluster): nothing to test against
        return Interval(delta, None, None, None, method, noise=noise)
    se = math.sqrt(variance)
    low, high, p_value = t_test(delta, se, df, alpha)
    return Interval(delta, float(low), float(high), float(p_value), method, df, se, noise)


def t_test(delta, se, df, alpha: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two-sided t interval bounds and p-value of `delta` with standard error `se` on `df`
    degrees of freedom (inf: the normal), element by element. The one place a t reference is
    read, so every interval and its p agree. se 0 (every difference equal): the interval is
    the point and p is 1 for a zero delta, else 0; no df or no se: NaN."""
    delta, se, df = (np.asarray(x, dtype=np.float64) for x in (delta, se, df))
    with np.errstate(invalid="ignore", divide="ignore"):
        t_crit = special.stdtrit(df, 1 - alpha / 2)
        p_value = 2 * special.stdtr(df, -np.abs(delta) / se)
    flat = se == 0
    p_value = np.where(flat, np.where(delta == 0, 1.0, 0.0), p_value)
    half = np.where(flat, 0.0, t_crit * se)
    untestable = ~(df > 0) | np.isnan(se)
    nan = np.full(np.shape(p_value), np.nan)
    return (np.where(untestable, nan, delta - half), np.where(untestable, nan, delta + half),
            np.where(untestable, nan, p_value))


def sampling_variance(values: np.ndarray, clusters: np.ndarray | None = None,
                      groups: np.ndarray | None = None, count: int = 0):
    """Variance of the mean of `values` over a fresh draw of examples, and its degrees of
    freedom: s^2 / n for independent examples; for examples drawn in clusters (cluster index
    per example, 0..C-1), the cluster-robust sandwich C/(C-1) * sum_c (sum_i in c of
    (v_i - mean))^2 / n^2 with C - 1 degrees of freedom (the CR1 estimator).

    With `groups` (an index per example, 0..count-1, e.g. the class), the same for the mean
    within each group at once: arrays of `count` variances and dfs (NaN and 0 where a group
    has fewer than two examples or clusters)."""
    if groups is not None:
        return _grouped_sampling_variance(values, clusters, groups, count)
    moments = Moments.of(values)
    if clusters is None:
        return moments.variance_of_mean()
    if len(values) < 2:
        return math.nan, 0
    count = int(clusters.max()) + 1
    return clustered_variance(np.bincount(clusters, weights=values, minlength=count),
                              np.bincount(clusters, minlength=count), moments)


def clustered_variance(sums: np.ndarray, sizes: np.ndarray,
                       moments: Moments) -> tuple[float, int]:
    """The CR1 sampling variance of the mean of values drawn in clusters, from each
    cluster's sum of the values and its size, and its C - 1 df: mergeable sums, so that it
    is one formula however the examples were split (paired.py, pairsums.py)."""
    count, n = len(sums), moments.n
    if count < 2 or n < 2:
        return math.nan, 0
    with np.errstate(invalid="ignore"):
        centred = sums - sizes * moments.mean
        return float(count / (count - 1) * np.dot(centred, centred) / n ** 2), count - 1


def _grouped_sampling_variance(values: np.ndarray, clusters: np.ndarray | None,
                               groups: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
    moments = GroupMoments.of(values, groups, count)
    if clusters is None:
        return moments.variance_of_means()
    # sums over each (group, cluster) cell; cells found by np.unique, not C x count
    width = int(clusters.max()) + 1
    cells, cell = np.unique(groups.astype(np.int64) * width + clusters, return_inverse=True)
    return moments.clustered_variance_of_means(cells // width, np.bincount(cell, weights=values),
                                               np.bincount(cell).astype(np.float64))

def contribution_interval_from_sums(sums: np.ndarray, n: int, alpha: float,
                                    squares: np.ndarray,
                                    clustered: tuple[np.ndarray, float, int] | None = None
                                    ) -> tuple[np.ndarray, np.ndarray]:
    """The t interval of each group's contribution sums_k / n: the mean over all n examples
    of diff_i [key_i = k], so its sampling variance is that of a mean, s^2 / n on n - 1 df,
    from `squares` = sum_{i in k} diff_i^2. With clusters, the cluster-robust CR1 of
    paired.sampling_variance on C - 1 df, from `squares` = sum_c S_kc^2 (S_kc the change
    summed over the examples of group k in cluster c) and `clustered` = (sum_c S_kc m_c,
    sum_c m_c^2, C), m_c the size of cluster c."""
    size = len(sums)
    contribution = sums / n
    with np.errstate(invalid="ignore"):  # an infinite change of NLL: no interval
        if clustered is None:
            variance = ((squares - n * contribution ** 2) / (n - 1) / n if n > 1
                        else np.full(size, np.nan))
            df = n - 1
        else:
            cross, sizes_squared, count = clustered
            spread = squares - 2 * contribution * cross + contribution ** 2 * sizes_squared
            variance = (count / (count - 1) * spread / n ** 2 if count > 1
                        else np.full(size, np.nan))
            df = count - 1
    low, high, _ = t_test(contribution, np.sqrt(np.maximum(variance, 0.0)), df, alpha)
    return low, high


def mcnemar_exact(fixed, broken):
    """Two-sided exact McNemar p-value: a binomial test of fixed vs broken at p = 1/2 (no
    flips: 1). Counts may be arrays (one test per element)."""
    fixed, broken = np.asarray(fixed), np.asarray(broken)
    flips = fixed + broken
    with np.errstate(invalid="ignore"):
        p_value = np.minimum(1.0, 2 * special.bdtr(np.minimum(fixed, broken), flips, 0.5))
    p_value = np.where(flips == 0, 1.0, p_value)
    return float(p_value) if p_value.ndim == 0 else p_value


def mcnemar(fixed: int, broken: int, n: int, alpha: float) -> Interval:
    """Accuracy change with McNemar's exact test and the interval that inverts it: given the
    flips, fixed ~ Binomial(flips, pi) and delta = flips * (2 pi - 1) / n, so the
    Clopper-Pearson interval of pi maps to one of delta that excludes 0 exactly when the
    test's p < alpha."""
    flips = fixed + broken
    if flips == 0:
        return Interval(0.0, 0.0, 0.0, 1.0, METHOD_MCNEMAR)
    low = special.betaincinv(fixed, broken + 1, alpha / 2) if fixed else 0.0
    high = special.betaincinv(fixed + 1, broken, 1 - alpha / 2) if broken else 1.0
    scale = flips / n
    delta = (fixed - broken) / n
    se = math.sqrt(max(0.0, flips / n - delta ** 2) / n)  # of the mean of +1 / 0 / -1 values
    return Interval(delta, float(scale * (2 * low - 1)), float(scale * (2 * high - 1)),
                    mcnemar_exact(fixed, broken), METHOD_MCNEMAR, se=se)


def clustered_mcnemar(fixed: np.ndarray, broken: np.ndarray, n: int, alpha: float) -> Interval:
    """McNemar's test for clustered pairs (Durkalski et al. 2003): with d_k = fixed - broken in
    cluster k, X^2 = (sum d_k)^2 / sum d_k^2 on 1 df; one example per cluster gives McNemar's
    chi-square. The interval delta +- z sqrt(sum d_k^2) / n uses the same variance, so it
    excludes 0 exactly when p < alpha."""
    d = (fixed - broken).astype(np.float64)
    delta = float(d.sum() / n)
    spread = math.sqrt(float(np.dot(d, d)))
    if spread == 0:
        return Interval(0.0, 0.0, 0.0, 1.0, METHOD_CLUSTERED_MCNEMAR, noise=(NOISE_CLUSTERS,))
    z = special.ndtri(1 - alpha / 2)
    p_value = float(2 * special.ndtr(-abs(d.sum()) / spread))
    return Interval(delta, delta - z * spread / n, delta + z * spread / n, p_value,
                    METHOD_CLUSTERED_MCNEMAR, se=spread / n, noise=(NOISE_CLUSTERS,))


class ResampleView:
    """What the resampled metrics of one run need, computed once; each metric then takes a
    block of resamples: a (resamples, examples) matrix of weights, how often each resample
    drew each example.

    Every metric here is a function of weighted sums per bin or per class, so a whole block
    costs one batched bincount per sum, not one call per resample.
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
        self.group, groups = confidence_groups(pe.conf)  # ties of confidence, most confident first
        self.errors = 1.0 - self.correct
        # Kumar et al.'s equal-mass bins, drawn once on this sample's confidences
        edges = mass_bin_edges(pe.conf, bins)
        self.mass_bin = np.searchsorted(edges, pe.conf)
        self.conf = pe.conf
        self.smooth = SmoothECE(pe.conf, pe.correct)
        self._lengths = {"bin": bins, "bin_cal": bins, "label": num_classes, "pred": num_classes,
                         "group": groups, "mass_bin": len(edges)}
        self._bincount_keys: dict[tuple[str, int], np.ndarray] = {}

    def metrics(self, weights: np.ndarray, wanted: set[str]) -> dict[str, np.ndarray]:
        """Each wanted metric on each row of `weights` (resamples x examples)."""
        out = {}
        total = weights.sum(axis=1)
        scratch = np.empty_like(weights)  # for weights x per-example values, one at a time
        if wanted & {"ece", "mce"}:
            count = self._sums("bin", weights)
            gap = self._sums("bin", np.multiply(weights, self.gap, out=scratch))
            out["ece"] = ece_from_sums(gap, total)
            out["mce"] = mce_from_sums(gap, count)
        if "ece_calibrated" in wanted:
            gap = self._sums("bin_cal", np.multiply(weights, self.gap_cal, out=scratch))
            out["ece_calibrated"] = ece_from_sums(gap, total)
        if "ece_adaptive" in wanted:
            copies = np.take(weights, self.by_conf, axis=1)
            out["ece_adaptive"] = adaptive_from_copies(copies, self.gap_by_conf, self.bins)
        if wanted & {"balanced_accuracy", "macro_f1"}:
            support = self._sums("label", weights)
            predicted = self._sums("pred", weights)
            hits = self._sums("label", np.multiply(weights, self.correct, out=scratch))
            out["balanced_accuracy"], out["macro_f1"] = class_scores_from_sums(
                support, predicted, hits)
        if "smooth_ece" in wanted:
            out["smooth_ece"] = self.smooth.values(weights)
        if "rmsce_debiased" in wanted:
            count = self._sums("mass_bin", weights)
            conf_sum = self._sums("mass_bin", np.multiply(weights, self.conf, out=scratch))
            hits = self._sums("mass_bin", np.multiply(weights, self.correct, out=scratch))
            out["rmsce_debiased"] = debiased_rms_from_sums(count, conf_sum, hits)
        if wanted & set(SELECTIVE):
            count = self._sums("group", weights)
            errors = self._sums("group", np.multiply(weights, self.errors, out=scratch))
            out.update(selective_from_sums(count, errors))
        return out

    def _sums(self, keys: str, weights: np.ndarray) -> np.ndarray:
        """Weighted counts per key (bin or class) of every resample of a block: one bincount
        over all its rows, each row's keys shifted past the previous row's."""
        length = self._lengths[keys]
        rows = len(weights)
        shifted = self._bincount_keys.get((keys, rows))
        if shifted is None:  # the same for every block of this many rows: built once
            shifted = (getattr(self, keys)[None, :] + length * np.arange(rows)[:, None]).ravel()
            self._bincount_keys[(keys, rows)] = shifted
        counts = np.bincount(shifted, weights=weights.ravel(), minlength=rows * length)
        return counts.reshape(rows, length)


# Up to this many examples the bootstrap resamples all of them (about 1 ms a resample). Above
# it, the cost of a resample would grow with n, so the bag of little bootstraps (Kleiner et al.
# 2014) takes over:
# LITTLE_SUBSETS random subsets of n**0.7 examples each, each resampled with Poisson weights
# that add up to n on average, so every resample still stands for a set of about n examples.
FULL_BOOTSTRAP_MAX = 20_000
LITTLE_SUBSETS = 10
LITTLE_EXPONENT = 0.7
# A subset's units are chosen from those drawn below size / units plus this many standard
# deviations of the count below it: fewer fall below once in about 10^15 subsets.
SUBSET_MARGIN = 8.0


@dataclass(frozen=True)
class HeldClusters:
    """Each example's cluster where a cluster's workers hold the runs: for each run, parts of
    cluster indices (0 .. count - 1), part for part with its examples' parts."""

    count: int
    parts: tuple[Parts, ...]


@dataclass(frozen=True)
class BootstrapPlan:
    """Which examples each subset holds and how each resample weights them; deterministic in
    (n, resamples, seed, clusters, keys), so every run of a comparison gets the same resamples.

    The units drawn are the examples, or with `clusters` (a cluster index 0..C-1 per
    example) whole clusters: every example of a cluster then gets its cluster's weight.
    `keys` names each unit (the examples' ids, or the clusters' keys; by default their
    positions), or holds them in parts where a cluster's workers keep them (each part: its
    units' keys and the position of its first unit). The bag of little bootstraps draws from
    the keys alone (keyhash.py): which subsets a unit is in and its weight in each resample
    follow from (seed, key, subset, resample), whatever the order of the units or how they
    are split up.
    """

    n: int
    resamples: int
    seed: int
    clusters: np.ndarray | HeldClusters | None = field(default=None, compare=False)
    keys: np.ndarray | Parts | None = field(default=None, compare=False)

    @property
    def units(self) -> int:
        """How many independent units there are to draw: examples, or clusters."""
        if isinstance(self.clusters, HeldClusters):
            return self.clusters.count
        return self.n if self.clusters is None else int(self.clusters.max()) + 1

    @property
    def noise(self) -> tuple[str, ...]:
        return (NOISE_EXAMPLES,) if self.clusters is None else (NOISE_CLUSTERS,)

    centred = False  # deviations from the sample's own delta (see bootstrap)

    @property
    def little(self) -> bool:
        return self.units > FULL_BOOTSTRAP_MAX

    @property
    def subsets(self) -> int:
        return min(LITTLE_SUBSETS, self.resamples) if self.little else 1

    @property
    def per_subset(self) -> int:
        return -(-self.resamples // self.subsets)  # ceiling: at least `resamples` in all

    @property
    def method(self) -> str:
        what = "examples" if self.clusters is None else "clusters"
        if not self.little:
            return (f"{METHOD_BOOTSTRAP}, {self.resamples} resamples"
                    + ("" if self.clusters is None else " of whole clusters"))
        return (f"bag of little bootstraps, {self.subsets} subsets of {self.size} {what} x "
                f"{self.per_subset} resamples")

    def subset_units(self, j: int) -> np.ndarray | None:
        """The units (examples or clusters) of subset j, or None for all of them."""
        return self._subsets[j][0] if self.little else None

    def subset_keys(self, j: int) -> np.ndarray | None:
        """The keys of subset j's units, in the order of their positions; None for all."""
        return self._subsets[j][2] if self.little else None

    @functools.cached_property
    def _subsets(self) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Each subset's units (positions, increasing), their keys' hashes and their keys."""
        keys = self.keys
        if keys is None or isinstance(keys, np.ndarray):
            keys = LocalParts([(np.arange(self.units) if keys is None else keys, 0)])
            return choose_subsets(keys, self.seed, self.subsets, self.size, self.units)
        # held by a cluster: a run lined up in order of id, or one in its own order whose
        # positions are not the alignment's, so the units are put in order of id
        return choose_subsets(keys, self.seed, self.subsets, self.size, self.units,
                              by_key=True)

    def subset(self, j: int) -> np.ndarray | None:
        """Indices of the examples of subset j, or None for all examples (for clusters the
        workers hold, None: their parts find the subset's examples)."""
        units = self.subset_units(j)
        if units is None or self.clusters is None:
            return units
        if isinstance(self.clusters, HeldClusters):
            return None
        return np.flatnonzero(np.isin(self.clusters, units))

    @property
    def size(self) -> int:
        """Units in each subset."""
        return int(self.units ** LITTLE_EXPONENT) if self.little else self.units

    @property
    def scale(self) -> float:
        """The weight of every unit in a subset's own value: it stands for all units."""
        return self.units / self.size

    @property
    def block_rows(self) -> int:
        """Resamples weighed together: a block of weights holds about BLOCK_VALUES entries."""
        examples = self.size * self.n / self.units  # examples in a subset, on average
        return max(1, int(BLOCK_VALUES // examples))

    @property
    def blocks(self) -> int:
        return -(-self.per_subset // self.block_rows)

    def weight_block(self, j: int, b: int) -> np.ndarray:
        """Resampling weights of block b of subset j (SubsetWeights.block)."""
        return self.subset_weights(j).block(b)

    def subset_weights(self, j: int) -> "SubsetWeights":
        """What draws subset j's weights, to be sent where its examples are measured."""
        return SubsetWeights(
            self.seed, j, self.per_subset, self.block_rows, self.units,
            self._subsets[j][1] if self.little else None, self.units / self.size,
            self._local_clusters(j))

    def _local_clusters(self, j: int) -> np.ndarray | None:
        """For each example of subset j, the position of its cluster among the subset's;
        None without clusters, or where the workers find them (HeldRows.in_clusters)."""
        if self.clusters is None or isinstance(self.clusters, HeldClusters):
            return None
        units = self.subset_units(j)
        examples = self.subset(j)
        if units is None:
            return self.clusters
        return np.searchsorted(units, self.clusters[examples])


def choose_subsets(key_parts: Parts, seed: int, subsets: int, size: int, units: int,
                   by_key: bool = False) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """The little bootstrap's subsets, uniformly random: subset j holds the `size` units
    whose draw in subset j's stream is the smallest, and each is given as its units'
    positions, hashes and keys, in increasing order of position (`by_key`: of key, the
    order runs found by id give; the same where the units are lined up in order of key).
    Each part of the keys sends only its units drawn below a threshold a little above the
    size-th smallest's expected value (in the rare case too few fall below, the threshold
    doubles): what comes back is about `size` units a subset, however many units and parts
    there are."""
    threshold = min(1.0, max(size + SUBSET_MARGIN * math.sqrt(size), 1.0) / units)
    while True:
        found = key_parts.map(subset_candidates, seed, subsets, threshold).gather()
        chosen = []
        for j in range(subsets):
            positions, draws, hashes, keys = (np.concatenate(column)
                                              for column in zip(*(part[j] for part in found)))
            if len(positions) < size:
                break
            keep = smallest(draws, size)
            keep = keep[np.argsort((keys if by_key else positions)[keep], kind="stable")]
            chosen.append((positions[keep], hashes[keep], keys[keep]))
        else:
            return chosen
        threshold = min(1.0, 2 * threshold)


def subset_candidates(keys: tuple[np.ndarray, int], seed: int, subsets: int, threshold: float
                      ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """For each subset, the units of one part drawn below `threshold` in its stream: their
    positions, draws, hashes and keys. `keys`: the part's units' keys, and its first's
    position."""
    unit_keys, first = keys
    hashes = key_hash(unit_keys)
    found = []
    for j in range(subsets):
        draws = counter_uniforms(hashes, salt(seed, j, 0), 0, 1)[0]
        below = np.flatnonzero(draws < threshold)
        found.append((below + first, draws[below], hashes[below], unit_keys[below]))
    return found


@dataclass(frozen=True)
class SubsetWeights:
    """How the resamples of one subset weight its examples: a few numbers and the hashes of
    the subset's units, never the whole run's keys (a worker draws them from these)."""

    seed: int
    subset: int
    per_subset: int  # resamples of the subset
    block_rows: int  # resamples weighed together
    units: int  # units of the whole run
    hashes: np.ndarray | None  # the little bootstraps': the subset's units'; None: all units
    rate: float  # the mean of a unit's Poisson count in a little bootstrap
    local_clusters: np.ndarray | None  # each example's unit within the subset, if clustered

    @property
    def blocks(self) -> int:
        return -(-self.per_subset // self.block_rows)

    def block(self, b: int) -> np.ndarray:
        """Resampling weights of block b: a (resamples, examples of the subset) matrix whose
        rows are resamples b * block_rows, b * block_rows + 1, ... of the subset. Blocks can
        be drawn in any order, or at once."""
        rows = min(self.block_rows, self.per_subset - b * self.block_rows)
        if self.hashes is None:  # draw every unit with replacement, count each one's copies
            # (at most FULL_BOOTSTRAP_MAX units, lined up in order of id: any row order or
            # split of the rows gives the same positions)
            units = self.units
            rng = np.random.default_rng([self.seed, self.subset, 1, b])
            drawn = rng.integers(0, units, (rows, units))
            drawn += units * np.arange(rows)[:, None]
            weights = np.bincount(drawn.ravel(), minlength=rows * units).reshape(rows, units)
        else:
            # Poisson(units / size) counts: the multinomial's large-n limit at a fraction of
            # its cost, and each unit's own, drawn from its key
            uniforms = counter_uniforms(self.hashes, salt(self.seed, self.subset, 1),
                                        b * self.block_rows, rows)
            weights = poisson(uniforms, self.rate)
        weights = weights.astype(np.float64)
        if self.local_clusters is None:
            return weights
        return np.take(weights, self.local_clusters, axis=1)  # each example, its cluster's


def poisson(u: np.ndarray, mean: float) -> np.ndarray:
    """Poisson(mean) draws from uniforms u on [0, 1), by inverting the distribution
    function: the smallest k with u < F(k). Exact like rng.poisson, and several times faster
    where millions of draws share one mean.
    """
    cdf, guide = _poisson_table(mean)
    draws = guide[(u * len(guide)).astype(np.intp)]
    behind = np.flatnonzero(u >= cdf[draws])  # only draws in a slice that holds a step of F
    while len(behind):
        draws.flat[behind] += 1
        behind = behind[u.flat[behind] >= cdf[draws.flat[behind]]]
    return draws


@functools.lru_cache(maxsize=4)
def _poisson_table(mean: float, cells: int = 1 << 16) -> tuple[np.ndarray, np.ndarray]:
    """F(k) up to where it reaches 1.0 in float64, and a guide: for each of `cells` equal
    slices of [0, 1), the answer at the slice's lower end."""
    k = np.arange(int(mean + 40 * math.sqrt(mean) + 40))
    cdf = special.pdtr(k, mean)
    cdf = cdf[: np.searchsorted(cdf, 1.0) + 1]
    cdf[-1] = 1.0
    return cdf, np.searchsorted(cdf, np.arange(cells) / cells, side="right")


# Resamples are weighed in blocks of about this many weights, so that a block's temporaries
# (a few matrices of this size) stay small however many resamples are asked for.
BLOCK_VALUES = 1 << 18


def resample_values(runs: list[PerExample | HeldRows], num_classes: int, bins: int,
                    wanted: list[set[str]], plan: BootstrapPlan) -> list[dict[str, np.ndarray]]:
    """Each wanted metric of each run on every resample, the runs sharing each resample's
    weights (drawn once). Per run and metric: an array (subsets, 1 + resamples per subset)
    whose first column is the subset's own value (every example weighted n / size). A run
    held by a cluster's workers (HeldRows) sends each subset's examples alone."""
    draws = [{name: np.empty((plan.subsets, plan.per_subset + 1)) for name in names}
             for names in wanted]
    jobs = [(r, j) for r, names in enumerate(wanted) if names for j in range(plan.subsets)]

    def subset_index(j: int) -> np.ndarray:
        subset = plan.subset(j)
        return np.arange(plan.n) if subset is None else subset

    # a held run's subsets are measured by the workers, all submitted before any is awaited
    held = {}
    for r, j in jobs:
        run = runs[r]
        if isinstance(run, HeldRows) and isinstance(plan.clusters, HeldClusters):
            held[r, j] = run.in_clusters(plan.clusters.parts[r], plan.subset_units(j)).map(
                subset_draws_in_clusters, plan.subset_weights(j), plan.scale, num_classes,
                bins, wanted[r])
        elif isinstance(run, HeldRows):
            held[r, j] = run.held(subset_index(j), plan.subset_keys(j)).map(
                subset_draws, plan.subset_weights(j), plan.scale, num_classes, bins, wanted[r])

    def here(job: tuple[int, int]) -> dict[str, np.ndarray]:
        r, j = job
        run, subset = runs[r], plan.subset(j)
        assert isinstance(run, PerExample)  # the held runs' subsets are measured above
        return subset_draws(run if subset is None else run.take(subset),
                            plan.subset_weights(j), plan.scale, num_classes, bins, wanted[r])

    # numpy does most of this work without the GIL: two threads keep both cores busy
    with ThreadPoolExecutor(max_workers=2) as pool:
        found = dict(zip([job for job in jobs if job not in held],
                         pool.map(here, [job for job in jobs if job not in held])))
    found.update({job: parts.gather()[0] for job, parts in held.items()})
    for (r, j), values in found.items():
        for name, row in values.items():
            draws[r][name][j] = row
    return draws


def subset_draws(examples: PerExample, weights: SubsetWeights, scale: float,
                 num_classes: int, bins: int, wanted: set[str]) -> dict[str, np.ndarray]:
    """Each wanted metric of one run on one subset: its own value (every example weighted
    `scale`), then its value on each of the subset's resamples, (1 + per_subset,)."""
    view = ResampleView(examples, num_classes, bins)
    out = {name: np.empty(1 + weights.per_subset) for name in wanted}

    def fill(first_column: int, block: np.ndarray) -> None:
        for name, values in view.metrics(block, wanted).items():
            if name in out:
                out[name][first_column:first_column + len(block)] = values

    fill(0, np.full((1, len(examples)), scale))
    for b in range(weights.blocks):
        fill(1 + b * weights.block_rows, weights.block(b))
    return out


def subset_draws_in_clusters(piece: tuple[PerExample, np.ndarray], weights: SubsetWeights,
                             scale: float, num_classes: int, bins: int, wanted: set[str]
                             ) -> dict[str, np.ndarray]:
    """subset_draws of a subset of clusters found where the examples are held: `piece` is
    its examples and each one's cluster's position among the subset's clusters."""
    examples, local_clusters = piece
    return subset_draws(examples, dataclasses.replace(weights, local_clusters=local_clusters),
                        scale, num_classes, bins, wanted)


class ResamplePlan(Protocol):
    """What an interval needs of a bootstrap plan: of examples here, of blocks in
    classwise.py."""

    @property
    def units(self) -> int: ...
    @property
    def subsets(self) -> int: ...
    @property
    def per_subset(self) -> int: ...
    @property
    def method(self) -> str: ...
    @property
    def noise(self) -> tuple[str, ...]: ...
    @property
    def centred(self) -> bool: ...


def bootstrap(observed: dict[str, float], baseline_draws: dict[str, np.ndarray],
              candidate_draws: dict[str, np.ndarray], plan: ResamplePlan,
              alpha: float) -> dict[str, Interval]:
    """Paired bootstrap intervals and p-values of candidate-minus-baseline.

    Both runs were resampled with the same plan, so each resampled delta is paired. Within a
    subset, deviations of the resampled deltas from a centre estimate the sampling
    distribution; the interval is the observed delta plus the averaged quantiles of those
    deviations. The centre is the plan's choice, each measured by simulation (README):
    the subset's own delta for the example bootstrap (with all examples in one subset: the
    percentile interval), which keeps two runs of one model called different at about alpha
    (centred on the resamples' mean instead, smooth_ece's false calls rose from 5% to 9.5%);
    the resamples' mean for the block bootstrap of classwise.py, whose classwise ECE interval
    otherwise covered its expected delta 86% of the time instead of 96%. Subsets of fewer
    than FEW_PER_SUBSET resamples pool their deviations before the quantiles are taken. The
    p-value inverts that same interval: the smallest level at which it excludes 0, never
    below 1 / (R + 1) since finitely many resamples cannot show a smaller one.
    """
    results = {}
    if plan.units < 2 or plan.subsets * plan.per_subset * alpha / 2 < 1:
        # one example (or cluster) has no sampling spread to show, and too few resamples have
        # no resample in a tail of the interval: no interval rather than a false one
        return {name: Interval(float(delta), None, None, None, plan.method, noise=plan.noise)
                for name, delta in observed.items()}
    for name, delta in observed.items():
        deltas = candidate_draws[name] - baseline_draws[name]
        resampled = deltas[:, 1:]
        centre = resampled.mean(axis=1, keepdims=True) if plan.centred else deltas[:, :1]
        deviations = np.sort(resampled - centre, axis=1)
        se = float(np.sqrt(deviations.var(axis=1, ddof=1).mean()))
        if plan.subsets > 1 and plan.per_subset < FEW_PER_SUBSET:
            deviations = np.sort(deviations.ravel())[None, :]  # pooled over the subsets
        low, high = _mean_quantile(deviations, alpha / 2), _mean_quantile(deviations,
                                                                          1 - alpha / 2)
        p_value = max(_inverted_p(deviations, float(delta)), 1 / (deviations.size + 1))
        results[name] = Interval(float(delta), float(delta + low), float(delta + high),
                                 p_value, plan.method, se=se, noise=plan.noise)
    return results


# With fewer resamples than this per subset, the little bootstraps pool their subsets'
# deviations: a subset's own 2.5% and 97.5% quantiles, from a few resamples, fall short of
# its tails. Measured on simulated pairs of equal models at alpha 0.05 (tests/test_paired.py):
# 20 per subset, averaged quantiles called 11% of 1,000 pairs different (ECE; 8-11% on the
# other metrics), pooled 6-7% (3% adaptive ECE). At 100 per subset averaging is right
# (600 pairs: 3-5.5%), and pooling would widen the intervals by the spread of the subsets'
# centres (adaptive ECE: 1.2% false calls, 11% wider).
FEW_PER_SUBSET = 100


def _mean_quantile(sorted_rows: np.ndarray, level: float) -> float:
    """The quantile at `level` of each row (numpy's linear rule), averaged over rows."""
    position = level * (sorted_rows.shape[1] - 1)
    below = int(math.floor(position))
    above = min(below + 1, sorted_rows.shape[1] - 1)
    share = position - below
    return float(((1 - share) * sorted_rows[:, below] + share * sorted_rows[:, above]).mean())


def _inverted_p(sorted_rows: np.ndarray, delta: float) -> float:
    """Smallest alpha whose interval delta + [q(alpha/2), q(1 - alpha/2)] excludes 0:
    found by bisection on the level, the averaged quantile being monotone in it."""
    if delta == 0:
        return 1.0
    # by symmetry, a negative delta is a positive one of the mirrored deviations
    rows = sorted_rows if delta > 0 else -sorted_rows[:, ::-1]
    target = -abs(delta)  # the lower bound excludes 0 while q(level) > target
    if _mean_quantile(rows, 0.0) > target:
        return 0.0
    if _mean_quantile(rows, 0.5) <= target:
        return 1.0
    lo, hi = 0.0, 0.5  # q(lo) <= target < q(hi)
    for _ in range(60):
        mid = (lo + hi) / 2
        if _mean_quantile(rows, mid) > target:
            hi = mid
        else:
            lo = mid
    return min(1.0, 2 * hi)
