"""Per-example columns -> metric values and the breakdowns that explain them.

Every function here takes the compact per-example arrays of one run, its mergeable sums, or
its parts (orderstats.Parts, on a cluster's workers or the one part of the local engine) and
returns plain, JSON-ready data. A metric that is undefined (an empty group, a top-k run's
Brier score) is None in the output and its reason is listed; it is never guessed.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, fields, is_dataclass
from types import SimpleNamespace
from typing import Any, Callable

import numpy as np

from .keyhash import counter_uniforms, key_hash, salt
from .orderstats import (LocalParts, Parts, RunOrder, float_keys, float_values, range_bounds,
                         rows_of)
from .perexample import PerExample
from .smoothece import smooth_ece_of


@dataclass(frozen=True)
class MetricInfo:
    name: str
    higher_is_better: bool | None  # None: neither direction is better (n, temperature)
    description: str


def metric_registry(top_k: int = 5) -> dict[str, MetricInfo]:
    """All single-run metrics with their direction; the one place directions are declared."""
    rows = [
        ("n", None, "number of examples"),
        ("nll", False, "mean cross-entropy of the true class, nats"),
        ("accuracy", True, "share of examples whose top-1 class is the true class"),
        (f"top{top_k}_accuracy", True, f"share with the true class among the top {top_k}"),
        ("brier", False, "multiclass Brier score: mean of sum over classes of (p - onehot)^2"),
        ("ece", False, "expected calibration error, equal-width bins on top-1 confidence"),
        ("ece_adaptive", False, "expected calibration error, equal-mass bins"),
        ("mce", False, "maximum calibration error over the non-empty equal-width bins"),
        ("mean_confidence", None, "mean top-1 probability"),
        ("overconfidence", None, "mean confidence minus accuracy (> 0: over-confident)"),
        ("mean_entropy", None, "mean entropy of the predicted distribution, nats"),
        ("balanced_accuracy", True, "mean recall over the classes present in the labels"),
        ("macro_f1", True, "unweighted mean F1 over classes present in labels or predictions"),
        ("temperature", None, "single temperature T minimising NLL of softmax(logits / T)"),
        ("nll_calibrated", False, "mean NLL after dividing logits by the fitted temperature"),
        ("ece_calibrated", False, "ECE after dividing logits by the fitted temperature"),
        ("smooth_ece", False, "smooth ECE: kernel-smoothed calibration error without bins "
         "(Blasiok and Nakkiran 2023)"),
        ("rmsce_debiased", False, "root-mean-square calibration error, debiased, equal-mass "
         "bins (Kumar et al. 2019)"),
        ("classwise_ece", False, "classwise ECE: calibration of every class probability, "
         "1/K sum over classes of the binned gap (Kull et al. 2019)"),
        ("brier_reliability", False, "Brier reliability: the calibration part of the Brier "
         "score, binned, summed over classes (Murphy 1973)"),
        ("brier_resolution", True, "Brier resolution: how far the binned forecasts set the "
         "examples apart from the class base rates (Murphy 1973)"),
        ("brier_uncertainty", None, "Brier uncertainty: 1 - sum of squared class shares of "
         "the labels; the same for every run of one validation set"),
        ("brier_within", None, "the rest of the Brier score, from forecasts spread within "
         "their bins: brier - reliability + resolution - uncertainty"),
        ("auroc", True, "AUROC of top-1 confidence for telling right answers from wrong ones"),
        ("aurc", False, "area under the risk-coverage curve (Geifman and El-Yaniv 2017)"),
        *((f"risk_at_{c}", False, f"error rate of the {c}% most confident examples")
          for c in (80, 90, 95)),
    ]
    return {name: MetricInfo(name, better, text) for name, better, text in rows}


# Metrics that are not a mean of per-example values: their intervals come from the paired
# bootstrap (paired.py), and a verdict on one needs enough resamples (verdict.py).
RESAMPLED = ("ece", "ece_adaptive", "mce", "balanced_accuracy", "macro_f1", "ece_calibrated",
             "smooth_ece", "rmsce_debiased", "auroc", "aurc", "risk_at_80", "risk_at_90",
             "risk_at_95")


# Metrics from the per-(class, bin) sums of classwise.py: resampled by blocks of examples.
CLASSWISE = ("classwise_ece", "brier_reliability", "brier_resolution", "brier_uncertainty",
             "brier_within")
BLOCK_RESAMPLED = ("classwise_ece", "brier_reliability", "brier_resolution")


def metric_directions(top_k: int = 5) -> dict[str, bool | None]:
    """Metric -> True if higher is better, False if lower is, None if neither."""
    return {name: info.higher_is_better for name, info in metric_registry(top_k).items()}


@dataclass(frozen=True)
class MetricSettings:
    top_k: int = 5
    ece_bins: int = 15
    confident_wrong: float = 0.9  # confidence at or above which a wrong answer is "confident"
    class_groups: tuple[float, float] = (0.5, 0.8)  # cumulative example share ending head, torso
    worst_classes: int = 10
    noise_batch: int = 32
    seed: int = 0
    max_slice_values: int = 50


def _mean(values: np.ndarray) -> float | None:
    return float(np.mean(values)) if len(values) else None


def ratio(num: float, den: float) -> float | None:
    """num / den; None where den is 0 or infinite (a share of an infinite NLL)."""
    return float(num / den) if den and math.isfinite(den) else None


# ----------------------------------------------------------------------------- calibration

def bin_edges(bins: int) -> np.ndarray:
    return np.linspace(0.0, 1.0, bins + 1)


def equal_width_bin(conf: np.ndarray, bins: int) -> np.ndarray:
    """Bin i holds (edge_i, edge_i+1]; a confidence of exactly 1.0 is in the last bin."""
    return np.clip(np.searchsorted(bin_edges(bins), conf, side="left") - 1, 0, bins - 1)


class Mergeable:
    """A statistic's state: sums over examples, field by field. The states of two sets of
    examples merge into the state of their union by adding them, so batches of one pass, or
    partitions on a cluster, give the state of the whole run (to the rounding of a sum)."""

    def merged(self, other):
        assert is_dataclass(self)  # each state is a dataclass of its sums
        return type(self)(**{f.name: _added(getattr(self, f.name), getattr(other, f.name))
                             for f in fields(self)})


def merged_in_order(states: list):
    """Parts' states merged in their order (that of the rows: sums round the same way on
    every engine)."""
    total = states[0]
    for state in states[1:]:
        total = total.merged(state)
    return total


def _added(a: Any, b: Any) -> Any:
    """Two states' field added: nested states merged, dicts of states key by key; arrays per
    class of two lengths (a top-k run's classes are known as they are seen) added over the
    longer one; None (a part of the state not gathered) stays None."""
    if isinstance(a, Mergeable):
        return a.merged(b)
    if a is None:
        assert b is None, b
        return None
    if isinstance(a, dict):
        assert a.keys() == b.keys(), (a.keys(), b.keys())
        return {key: _added(a[key], b[key]) for key in a}
    if isinstance(a, SummaryPlan):  # the settings that both states were gathered with
        assert a == b, (a, b)
        return a
    if isinstance(a, np.ndarray) and a.shape != b.shape:
        a, b = (a, b) if len(a) >= len(b) else (b, a)
        total = a.copy()
        total[:len(b)] += b
        return total
    return a + b


@dataclass(frozen=True)
class Moments(Mergeable):
    """The count, mean and sum of squared deviations of some values. Merged by Chan, Golub and
    LeVeque's update rather than added as sums of squares: sum(v^2) - n mean^2 loses every
    digit of a small spread about a large mean."""

    n: int
    mean: float
    m2: float

    @staticmethod
    def of(values: np.ndarray) -> "Moments":
        if not len(values):
            return Moments(0, 0.0, 0.0)
        mean = float(values.mean())
        with np.errstate(invalid="ignore"):  # an infinite value: the spread is NaN, as var's
            centred = values - mean
            return Moments(len(values), mean, float(np.dot(centred, centred)))

    def merged(self, other: "Moments") -> "Moments":
        n = self.n + other.n
        if not self.n or not other.n:
            return self if other.n == 0 else other
        with np.errstate(invalid="ignore"):
            step = other.mean - self.mean
            return Moments(n, self.mean + step * other.n / n,
                           self.m2 + other.m2 + step * step * self.n * other.n / n)

    def variance_of_mean(self) -> tuple[float, int]:
        """s^2 / n, the sampling variance of the mean of independent values, and its df."""
        if self.n < 2:
            return math.nan, 0
        return self.m2 / (self.n - 1) / self.n, self.n - 1


@dataclass(frozen=True)
class GroupMoments(Mergeable):
    """Moments of some values within each group at once (arrays, one entry per group):
    counts, means and sums of squared deviations, merged group by group as Moments are."""

    n: np.ndarray
    mean: np.ndarray
    m2: np.ndarray

    @staticmethod
    def of(values: np.ndarray, groups: np.ndarray, count: int) -> "GroupMoments":
        n = np.bincount(groups, minlength=count).astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            # two passes, about each group's mean: sum(v^2) - sum(v)^2 / n loses every
            # digit when the spread is small next to the mean
            mean = np.where(n > 0, np.bincount(groups, weights=values, minlength=count) / n,
                            0.0)
            centred = values - mean[groups]
            return GroupMoments(n, mean, np.bincount(groups, weights=centred * centred,
                                                     minlength=count))

    def merged(self, other: "GroupMoments") -> "GroupMoments":
        n = self.n + other.n
        with np.errstate(invalid="ignore", divide="ignore"):
            step = other.mean - self.mean
            share = np.where(n > 0, other.n / n, 0.0)
            return GroupMoments(n, self.mean + step * share,
                                self.m2 + other.m2 + step * step * self.n * share)

    def variance_of_means(self) -> tuple[np.ndarray, np.ndarray]:
        """s^2 / n of each group's mean, and its df (NaN and 0 below two values)."""
        df = self.n - 1
        with np.errstate(invalid="ignore", divide="ignore"):
            variance = self.m2 / df / self.n
        return np.where(df >= 1, variance, np.nan), np.maximum(df, 0).astype(np.int64)

    def clustered_variance_of_means(self, owner: np.ndarray, sums: np.ndarray,
                                    sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The CR1 variance of each group's mean, from the sums and sizes of its (group,
        cluster) cells (`owner`: each cell's group), and its df: cells - 1."""
        count = len(self.n)
        units = np.bincount(owner, minlength=count)
        df = units - 1
        with np.errstate(invalid="ignore", divide="ignore"):
            centred = sums - sizes * self.mean[owner]
            variance = (units / df * np.bincount(owner, weights=centred * centred,
                                                 minlength=count) / self.n ** 2)
        return np.where(df >= 1, variance, np.nan), np.maximum(df, 0)


@dataclass(frozen=True)
class CellSums(Mergeable):
    """Sums per (group, cluster) cell, for the cells that hold examples only (a groups x
    clusters table would be mostly empty): each cell's key group * clusters + cluster, in
    increasing order, and its sums (one column per quantity)."""

    clusters: int
    keys: np.ndarray
    sums: np.ndarray  # (cells, quantities)

    @staticmethod
    def of(groups: np.ndarray, clusters: np.ndarray, count: int,
           values: np.ndarray) -> "CellSums":
        """`values`: (examples, quantities)."""
        keys, cell = np.unique(groups.astype(np.int64) * count + clusters, return_inverse=True)
        return CellSums(count, keys, summed_per_key(cell, values, len(keys)))

    def merged(self, other: "CellSums") -> "CellSums":
        assert self.clusters == other.clusters
        keys, cell = np.unique(np.r_[self.keys, other.keys], return_inverse=True)
        return CellSums(self.clusters, keys,
                        summed_per_key(cell, np.r_[self.sums, other.sums], len(keys)))

    @property
    def owner(self) -> np.ndarray:
        return self.keys // self.clusters

    @property
    def member(self) -> np.ndarray:
        return self.keys % self.clusters


def summed_per_key(cell: np.ndarray, values: np.ndarray, cells: int) -> np.ndarray:
    """Each column of `values` (rows, columns) summed over the rows of each key 0..cells-1."""
    return np.stack([np.bincount(cell, weights=column, minlength=cells)
                     for column in values.T], axis=1)


@dataclass(frozen=True)
class BinSums(Mergeable):
    """Equal-width confidence bins: examples, hits, confidences and NLLs summed per bin; ECE,
    MCE and the reliability table are computed from these sums alone."""

    count: np.ndarray
    hits: np.ndarray
    conf: np.ndarray
    nll: np.ndarray

    @staticmethod
    def of(conf: np.ndarray, correct: np.ndarray, bins: int,
           nll: np.ndarray | None = None) -> "BinSums":
        which = equal_width_bin(conf, bins)
        return BinSums(count=np.bincount(which, minlength=bins),
                       hits=np.bincount(which, weights=correct, minlength=bins),
                       conf=np.bincount(which, weights=conf, minlength=bins),
                       nll=np.zeros(bins) if nll is None
                       else np.bincount(which, weights=nll, minlength=bins))

    def errors(self) -> tuple[float, float]:
        """(ECE, MCE), as in Guo et al. 2017; NaN for no examples."""
        gap = self.hits - self.conf
        return (float(ece_from_sums(gap, self.count.sum())),
                float(mce_from_sums(gap, self.count)))


# The statistics below are written once, as functions of sums along the last axis: of one
# run (one row) or of a block of resamples (one row each), whose sums are weighted counts.

def ece_from_sums(gap: np.ndarray, n: np.ndarray) -> np.ndarray:
    """ECE from each bin's summed (correct - confidence) and the number of examples; NaN for
    none."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.abs(gap).sum(axis=-1) / n


def mce_from_sums(gap: np.ndarray, count: np.ndarray) -> np.ndarray:
    """MCE: the largest |accuracy - confidence| of a bin that holds examples; NaN for none."""
    with np.errstate(invalid="ignore", divide="ignore"):
        worst = np.where(count > 0, np.abs(gap) / count, -np.inf).max(axis=-1)
    return np.where(np.isneginf(worst), np.nan, worst)


def class_scores_from_sums(support: np.ndarray, predicted: np.ndarray, hits: np.ndarray
                           ) -> tuple[np.ndarray, np.ndarray]:
    """(balanced accuracy, macro F1) from per-class counts: mean recall over the classes
    present in the labels, and mean F1 = 2TP / (2TP + FP + FN) over the classes present in
    labels or predictions."""
    present = support > 0
    seen = present | (predicted > 0)
    f1 = f1_from_sums(support, predicted, hits)
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = np.where(present, hits / support, 0.0)
        return recall.sum(axis=-1) / present.sum(axis=-1), f1.sum(axis=-1) / seen.sum(axis=-1)


def f1_from_sums(support: np.ndarray, predicted: np.ndarray, hits: np.ndarray) -> np.ndarray:
    """F1 per class, 2TP / (2TP + FP + FN); 0 where the class is never seen nor predicted."""
    den = support + predicted
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, 2.0 * hits / den, 0.0)


def adaptive_from_copies(copies: np.ndarray, gap: np.ndarray, bins: int) -> np.ndarray:
    """Adaptive ECE (equal-mass bins) of each row of `copies` (rows, examples): how often
    each example is counted, the examples in confidence order, `gap` their correct -
    confidence. `copies` is overwritten.

    Copies are laid out in confidence order; a bin's sum is the difference of cumulative
    sums at its edges, with the example that straddles an edge split between two bins.
    Fewer copies than bins leave the last bins empty (np.array_split's single-row bins).
    """
    size = copies.shape[1]
    running = _running_sums(copies, out=np.empty_like(copies))
    totals = np.floor(running[:, -1])
    edges = mass_cuts(totals[:, None], bins)
    j = np.minimum([np.searchsorted(row, row_edges, side="left")
                    for row, row_edges in zip(running, edges)], size - 1)
    # `copies` is not needed any more: its memory takes the products and their sums (each
    # fresh block-sized temporary costs its page faults again)
    cumulative = _running_sums(np.multiply(copies, gap, out=copies), out=copies)
    # sums over the copies before example j (those of examples 0 .. j-1)
    previous, first = np.maximum(j - 1, 0), j == 0
    copies_before = np.where(first, 0.0, np.take_along_axis(running, previous, axis=1))
    gap_before = np.where(first, 0.0, np.take_along_axis(cumulative, previous, axis=1))
    at_edges = gap_before + (edges - copies_before) * gap[j]
    return adaptive_from_edge_sums(at_edges, totals)


def mass_cuts(totals, bins: int):
    """Where equal-mass bins start and end, as counts of examples (or copies) before each
    edge: as np.array_split, every bin holds total // bins, the first total % bins one more."""
    cut = np.arange(bins + 1)
    return cut * (totals // bins) + np.minimum(cut, totals % bins)


def adaptive_from_edge_sums(at_edges: np.ndarray, totals: np.ndarray) -> np.ndarray:
    """Adaptive ECE from the sums of correct - confidence over the examples before each
    equal-mass edge, (rows, bins + 1), in confidence order."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.abs(np.diff(at_edges, axis=1)).sum(axis=1) / totals


def _running_sums(values: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Cumulative sums along each row, row by row: numpy releases the GIL in a 1-D cumsum but
    holds it through a 2-D one along axis 1 (numpy 2.4), and blocks run on two threads."""
    for row, row_out in zip(values, out):
        np.cumsum(row, out=row_out)
    return out


def calibration_error(conf: np.ndarray, correct: np.ndarray, bins: int) -> tuple[float, float]:
    """(ECE, MCE) with equal-width bins, as in Guo et al. 2017."""
    return BinSums.of(conf, correct, bins).errors()


# ------------------------------------------------------------------ debiased calibration error

def mass_bin_edges(conf: np.ndarray, bins: int) -> np.ndarray:
    """order_mass_edges of these confidences."""
    return order_mass_edges(RunOrder(one_part(conf, np.zeros(len(conf), bool)), "conf"), bins)


def order_mass_edges(order: RunOrder, bins: int) -> np.ndarray:
    """Upper edges of equal-mass bins as Kumar et al. 2019 draw them: the sorted confidences
    cut into `bins` runs, each edge halfway between one run's last value and the next run's
    first; the last edge is 1. Ties fall in one bin. Bin of c: searchsorted(edges, c)."""
    runs = max(1, min(bins, order.n))
    starts = mass_cuts(order.n, runs)[1:-1]  # the first row of every run but the first
    values = float_values(order.keys_at(np.concatenate([starts - 1, starts])))
    last, first = values[:len(starts)], values[len(starts):]
    return np.unique(np.array([*((last + first) / 2.0), 1.0]))


def _mass_bin_sums(examples, edges: np.ndarray) -> np.ndarray:
    """A part's (count, confidence, hits) per bin of order_mass_edges: (3, bins)."""
    which = np.searchsorted(edges, examples.conf)
    return np.stack([np.bincount(which, minlength=len(edges)).astype(np.float64),
                     np.bincount(which, weights=examples.conf, minlength=len(edges)),
                     np.bincount(which, weights=examples.correct, minlength=len(edges))])


def debiased_rms_from_sums(count: np.ndarray, conf_sum: np.ndarray,
                           hits: np.ndarray) -> np.ndarray:
    """The debiased root-mean-square calibration error of Kumar et al. 2019, for each row of
    per-bin sums (rows, bins): sqrt(max(0, sum_b n_b/n [(conf_b - acc_b)^2 -
    acc_b (1 - acc_b) / (n_b - 1)])). The subtracted term is the plug-in estimate's expected
    excess from sampling noise in each bin's accuracy; a bin of fewer than 2 adds 0."""
    n = count.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        acc, mean_conf = hits / count, conf_sum / count
        term = (mean_conf - acc) ** 2 - acc * (1 - acc) / (count - 1)
    term = np.where(count >= 2, term, 0.0)
    return np.sqrt(np.maximum((count * term).sum(axis=1) / n, 0.0))


def debiased_rms_calibration_error(conf: np.ndarray, correct: np.ndarray, bins: int) -> float:
    return debiased_rms_of(RunOrder(one_part(conf, correct), "conf"), bins)


def debiased_rms_of(by_conf: RunOrder, bins: int) -> float:
    """The debiased RMS calibration error of a run held in parts, sorted by confidence."""
    if by_conf.n == 0:
        return float("nan")
    edges = order_mass_edges(by_conf, bins)
    count, conf_sum, hits = sum(by_conf.parts.map(_mass_bin_sums, edges).gather())[:, None, :]
    return float(debiased_rms_from_sums(count, conf_sum, hits)[0])


def one_part(conf: np.ndarray, correct: np.ndarray) -> LocalParts:
    """A run of these confidences and correctness, as the one part of the local engine."""
    return LocalParts([SimpleNamespace(conf=np.asarray(conf, dtype=np.float64),
                                       correct=np.asarray(correct, dtype=bool))])


# ------------------------------------------------------------------------ selective prediction

COVERAGES = (80, 90, 95)  # percent of examples kept, most confident first, for risk_at_<c>
SELECTIVE = ("auroc", "aurc", *(f"risk_at_{c}" for c in COVERAGES))


def confidence_groups(conf: np.ndarray) -> tuple[np.ndarray, int]:
    """Each example's group of equal confidence, numbered from the most confident (0), and
    the number of groups. Tied confidences are one threshold: no order within them is made
    up (so any sort will do: no stable one is needed)."""
    distinct, group = np.unique(-conf, return_inverse=True)
    return group.astype(np.int64, copy=False), len(distinct)


def risk_at(count: np.ndarray, errors: np.ndarray, coverages: np.ndarray
            ) -> tuple[np.ndarray, np.ndarray]:
    """The risk at each coverage (a share of examples in (0, 1]) for each row of per-group
    sums of example weights and weighted errors (rows, groups), most confident group first;
    and the group each cut falls in. The groups before the cut are kept whole, the
    group at the cut in proportion (its expected errors under a random order of its ties)."""
    cum_n = np.cumsum(count, axis=1)
    kept = cum_n[:, -1:] * coverages[None, :]
    errors_kept, cut = _errors_kept(count, errors, kept, np.zeros(len(count)),
                                    np.zeros(len(count)))
    return errors_kept / kept, cut


def _errors_kept(count: np.ndarray, errors: np.ndarray, kept: np.ndarray,
                 before_n: np.ndarray, before_errors: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray]:
    """The expected errors among the `kept` (rows, cuts) most confident examples, and the
    group each cut falls in, for groups that follow `before_n` examples with
    `before_errors` errors (rows,); NaN for a cut outside these groups."""
    if count.shape[1] == 0:  # an empty range of confidence: no cut falls in it
        return np.full(kept.shape, np.nan), np.zeros(kept.shape, dtype=np.int64)
    cum_n = before_n[:, None] + np.cumsum(count, axis=1)
    cum_errors = before_errors[:, None] + np.cumsum(errors, axis=1)
    target = kept * (1 - 1e-12)  # rounding never skips a group
    cut = np.stack([np.searchsorted(row, row_target) for row, row_target in zip(cum_n, target)])
    inside = cut < count.shape[1]
    cut = np.minimum(cut, count.shape[1] - 1)
    rows = np.arange(len(count))[:, None]
    n_ahead = cum_n[rows, cut] - count[rows, cut]
    errors_ahead = cum_errors[rows, cut] - errors[rows, cut]
    with np.errstate(invalid="ignore", divide="ignore"):
        share = (kept - n_ahead) / count[rows, cut]
        inside &= target > before_n[:, None]
        return np.where(inside, errors_ahead + share * errors[rows, cut], np.nan), cut


def selective_from_sums(count: np.ndarray, errors: np.ndarray) -> dict[str, np.ndarray]:
    """AUROC, AURC and the risk at each coverage, for each row of per-group sums
    (rows, groups) of example weights and of weighted errors, most confident group first.

    AUROC: the chance that a right answer is more confident than a wrong one, ties counting
    half. AURC (Geifman and El-Yaniv 2017): the mean over examples of the error rate among
    the examples at least as confident, i.e. the area under the risk-coverage curve with one
    step per distinct confidence. risk_at_<c>: the error rate of the c% most confident, the
    group at the cut taken in proportion (the expectation under a random order of its ties).
    """
    n, wrong = count.sum(axis=1), errors.sum(axis=1)
    kept = n[:, None] * np.array(COVERAGES)[None, :] / 100
    none = np.zeros(len(count))
    return _selective_of(n, wrong, selective_part(count, errors, none, none, wrong, kept))


# The sums of a run of consecutive groups that make the selective metrics: (rows,) of the
# AURC's sum of count x risk, and of the AUROC's right-over-wrong pairs; (rows, cuts) of the
# errors kept at each cut that falls in these groups (NaN elsewhere). They add up over runs.
SelectivePart = tuple[np.ndarray, np.ndarray, np.ndarray]


def selective_part(count: np.ndarray, errors: np.ndarray, before_n: np.ndarray,
                   before_errors: np.ndarray, wrong: np.ndarray,
                   kept: np.ndarray) -> SelectivePart:
    """The sums of consecutive groups (rows, groups), most confident first, that follow
    `before_n` examples with `before_errors` errors, in runs of `wrong` errors in all;
    `kept`: the examples kept at each cut (rows, cuts)."""
    cum_n = before_n[:, None] + np.cumsum(count, axis=1)
    cum_wrong = before_errors[:, None] + np.cumsum(errors, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        risk = np.where(cum_n > 0, cum_wrong / cum_n, 0.0)
        # right answers of each group against the wrong ones less confident, and half its own
        beaten = (count - errors) * (wrong[:, None] - cum_wrong + 0.5 * errors)
    errors_kept, _ = _errors_kept(count, errors, kept, before_n, before_errors)
    return (count * risk).sum(axis=1), beaten.sum(axis=1), errors_kept


def _selective_of(n: np.ndarray, wrong: np.ndarray, part: SelectivePart
                  ) -> dict[str, np.ndarray]:
    """The selective metrics from the sums of every group (selective_part, added up)."""
    aurc_sum, beaten, errors_kept = part
    right = n - wrong
    out = {}
    with np.errstate(invalid="ignore", divide="ignore"):
        out["aurc"] = aurc_sum / n
        out["auroc"] = np.where((right > 0) & (wrong > 0), beaten / (right * wrong), np.nan)
        kept = n[:, None] * np.array(COVERAGES)[None, :] / 100
        for column, coverage in enumerate(COVERAGES):
            out[f"risk_at_{coverage}"] = errors_kept[:, column] / kept[:, column]
    return out


def selective_prediction(conf: np.ndarray, correct: np.ndarray) -> dict[str, float | None]:
    """The selective-prediction metrics of one run (see selective_from_sums)."""
    return selective_of(ConfidenceOrder(one_part(conf, correct)))


class ConfidenceGroups:
    """A run's groups of equal confidence, exactly, without the run in one place: its rows
    moved into ranges of confidence, one per part, cut at the run's own quantiles
    (RunOrder), so that tied confidences never straddle two ranges (on a cluster, by Dask's
    shuffle; locally, by one sort). Each range holds its distinct confidences, most confident
    first, with their examples and errors, where it lies; a statistic of the groups in order
    is a sum over the ranges, each given the examples and errors of the more confident
    ranges (`ahead`)."""

    def __init__(self, parts: Parts, by_conf: RunOrder):
        ranges = parts.by_ranges(_confidence_keys,
                                 range_bounds(by_conf, len(parts.map(rows_of).gather())))
        self.groups = ranges.map(_confidence_group_sums)  # ranges ascending, groups descending
        totals = np.array(self.groups.map(_group_totals).gather(),
                          dtype=np.float64).reshape(-1, 2)
        self.ahead = np.cumsum(totals[::-1], axis=0)[::-1] - totals  # (ranges, 2)
        self.n, self.wrong = (float(total) for total in totals.sum(axis=0))

    def each(self, fn: Callable[..., Any], *args: Any) -> list:
        """fn(groups, ahead, *args) of every range, where it is held."""
        return self.groups.map_each(_with_ahead, [(fn, a, args) for a in self.ahead]).gather()

    def at_cuts(self, kept: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The expected errors among the `kept` most confident examples, and the confidence
        of the group at each cut (selective_part's rule)."""
        found = self.each(_cut_sums, self.wrong, kept)
        return (np.nansum(np.stack([errors for errors, _ in found]), axis=0),
                np.nansum(np.stack([conf for _, conf in found]), axis=0))


class ConfidenceOrder(RunOrder):
    """A run in confidence order, with its groups of equal confidence: each is made once,
    when a statistic first asks for it, and serves every statistic of the run (the
    equal-mass bins, the selective-prediction metrics, the risk-coverage curve), so that a
    run is sorted and (on a cluster) shuffled by confidence once."""

    def __init__(self, parts: Parts):
        super().__init__(parts, "conf")

    @functools.cached_property
    def groups(self) -> ConfidenceGroups:
        return ConfidenceGroups(self.parts, self)


def _with_ahead(groups, job):
    fn, ahead, args = job
    return fn(groups, ahead, *args)


def selective_of(by_conf: ConfidenceOrder) -> dict[str, float | None]:
    """The selective-prediction metrics of a run held in parts (ConfidenceGroups)."""
    if by_conf.n == 0:
        return dict.fromkeys(SELECTIVE)
    groups = by_conf.groups
    n, wrong = np.array([groups.n]), np.array([groups.wrong])
    kept = n[:, None] * np.array(COVERAGES)[None, :] / 100
    found = groups.each(_selective_sums, wrong, kept)
    aurc = sum(part[0] for part in found)
    beaten = sum(part[1] for part in found)
    errors_kept = np.nansum(np.stack([part[2] for part in found]), axis=0)
    values = _selective_of(n, wrong, (aurc, beaten, errors_kept))
    return {name: (None if np.isnan(values[name][0]) else float(values[name][0]))
            for name in SELECTIVE}


def _parts_of(pe: PerExample | None, parts: Parts | None) -> Parts:
    """The parts given, else the examples as one part (a run's columns held here)."""
    if parts is not None:
        return parts
    assert pe is not None, "neither the examples nor their parts"
    return LocalParts([pe])


def _infinite_nlls(examples: PerExample) -> int:
    return int(np.isposinf(examples.nll).sum())


def _confidence_keys(examples) -> tuple[np.ndarray, np.ndarray]:
    return float_keys(examples.conf), (~examples.correct).astype(np.float64)[:, None]


def _confidence_group_sums(keyed: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, ...]:
    """Each distinct confidence of a range, most confident first, with its examples and
    errors."""
    keys, values = keyed
    distinct, group = np.unique(~keys, return_inverse=True)
    return (float_values(~distinct), np.bincount(group, minlength=len(distinct)).astype(
        np.float64), np.bincount(group, weights=values[:, 0], minlength=len(distinct)))


def _group_totals(groups: tuple[np.ndarray, ...]) -> tuple[float, float]:
    return float(groups[1].sum()), float(groups[2].sum())


def _selective_sums(groups: tuple[np.ndarray, ...], ahead: np.ndarray, wrong: np.ndarray,
                    kept: np.ndarray) -> SelectivePart:
    _, count, errors = groups
    return selective_part(count[None, :], errors[None, :], ahead[:1], ahead[1:], wrong, kept)


def _cut_sums(groups: tuple[np.ndarray, ...], ahead: np.ndarray, wrong: float,
              kept: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    conf, count, errors = groups
    if not len(count):
        return np.full(len(kept), np.nan), np.full(len(kept), np.nan)
    errors_kept, cut = _errors_kept(count[None, :], errors[None, :], kept[None, :], ahead[:1],
                                    ahead[1:])
    return errors_kept[0], np.where(np.isnan(errors_kept[0]), np.nan, conf[cut[0]])


def adaptive_calibration_error(conf: np.ndarray, correct: np.ndarray, bins: int) -> float:
    return adaptive_ece_of(RunOrder(one_part(conf, correct), "conf"), bins)


def adaptive_ece_of(by_conf: RunOrder, bins: int) -> float:
    """ECE over equal-mass bins of a run held in parts, sorted by confidence: `bins` runs of
    sizes differing by at most one (ties keep row order)."""
    if by_conf.n == 0:
        return math.nan
    at_edges = by_conf.first_sums(mass_cuts(by_conf.n, bins))
    return float(adaptive_from_edge_sums(at_edges, np.array([by_conf.n]))[0])


Z95 = 1.959963984540054  # the normal distribution's 97.5% point: two-sided 95%


def wilson_interval(hits: float, count: float, z: float = Z95
                    ) -> tuple[float | None, float | None]:
    """Wilson's score interval of a proportion, hits of count (95% by default): unlike the
    normal one it stays in [0, 1] and keeps its width at 0 or all hits; None, None for no
    trials."""
    if count <= 0:
        return None, None
    p, z2 = hits / count, z * z / count
    centre = (p + z2 / 2) / (1 + z2)
    half = z * math.sqrt(p * (1 - p) / count + z2 / (4 * count)) / (1 + z2)
    return max(0.0, centre - half), min(1.0, centre + half)


def reliability_rows(sums: BinSums) -> list[dict]:
    """The reliability table from a run's bin sums (merged over its batches or partitions)."""
    bins = len(sums.count)
    edges = bin_edges(bins)
    count, hits, conf_sum, nll_sum = sums.count, sums.hits, sums.conf, sums.nll
    nll_total = float(nll_sum.sum())
    rows = []
    for i in range(bins):
        low, high = wilson_interval(float(hits[i]), float(count[i]))
        rows.append({
            "lower": float(edges[i]), "upper": float(edges[i + 1]), "count": int(count[i]),
            "accuracy": ratio(hits[i], count[i]),
            "accuracy_low": low, "accuracy_high": high,  # Wilson 95%
            "mean_confidence": ratio(conf_sum[i], count[i]),
            "gap": ratio(conf_sum[i] - hits[i], count[i]),
            "nll_share": ratio(nll_sum[i], nll_total),
        })
    return rows


# ----------------------------------------------------------------------------- classes

@dataclass(frozen=True)
class ClassCounts(Mergeable):
    support: np.ndarray  # examples whose true class is c
    predicted: np.ndarray  # examples predicted as c
    hits: np.ndarray  # examples of class c predicted correctly
    nll_sum: np.ndarray  # summed NLL of the examples of class c

    @staticmethod
    def of(pe: PerExample, num_classes: int) -> "ClassCounts":
        correct = pe.correct
        return ClassCounts(
            support=np.bincount(pe.label, minlength=num_classes),
            predicted=np.bincount(pe.pred, minlength=num_classes),
            hits=np.bincount(pe.label[correct], minlength=num_classes),
            nll_sum=np.bincount(pe.label, weights=pe.nll, minlength=num_classes),
        )

    @staticmethod
    def mean(runs: list["ClassCounts"]) -> "ClassCounts":
        """Counts averaged over runs (a group of seeds); one run is returned as it is."""
        if len(runs) == 1:
            return runs[0]
        size = max(len(c.support) for c in runs)  # top-k runs: the classes each has seen
        runs = [c.padded(size) for c in runs]
        return ClassCounts(*(np.mean([getattr(c, f) for c in runs], axis=0)
                             for f in ("support", "predicted", "hits", "nll_sum")))

    def padded(self, num_classes: int) -> "ClassCounts":
        """The counts over `num_classes` classes, those never seen at 0."""
        return self.merged(ClassCounts(*(np.zeros(num_classes, dtype=dtype) for dtype in
                                         (np.int64, np.int64, np.int64, np.float64))))

    def f1(self) -> np.ndarray:
        return f1_from_sums(self.support, self.predicted, self.hits)


def balanced_accuracy(counts: ClassCounts) -> float:
    return float(class_scores_from_sums(counts.support, counts.predicted, counts.hits)[0])


def macro_f1(counts: ClassCounts) -> float:
    return float(class_scores_from_sums(counts.support, counts.predicted, counts.hits)[1])


def class_groups(counts: ClassCounts, cuts: tuple[float, float]) -> np.ndarray:
    """0 = head, 1 = torso, 2 = tail. Classes are ranked by support (ties: lower index first);
    head holds the most frequent classes up to the first cut of examples, torso up to the
    second, tail the rest, including classes with no example."""
    order = np.lexsort((np.arange(len(counts.support)), -counts.support))
    share_before = np.concatenate([[0.0], np.cumsum(counts.support[order])[:-1]])
    share_before /= max(1, counts.support.sum())
    group_in_order = np.where(share_before < cuts[0], 0, np.where(share_before < cuts[1], 1, 2))
    group_in_order[counts.support[order] == 0] = 2
    groups = np.empty(len(order), dtype=np.int64)
    groups[order] = group_in_order
    return groups


GROUP_NAMES = ("head", "torso", "tail")


def class_group_table(pe: PerExample | None, counts: ClassCounts, cuts: tuple[float, float],
                      parts: Parts | None = None) -> list[dict]:
    """Head, torso and tail classes (class_groups): their examples' share, accuracy and NLL.
    From each part's sums per group, once the groups are known from the class counts;
    `parts`: as headline's."""
    groups = class_groups(counts, cuts)
    sums = sum(_parts_of(pe, parts).map(_class_group_sums, groups).gather())
    examples, predicted, hits, nll = sums
    n, total_errors, nll_total = examples.sum(), examples.sum() - hits.sum(), nll.sum()
    return [{"group": name,
             "classes": int((groups == g).sum()),
             "examples": int(examples[g]),
             "example_share": ratio(examples[g], n),
             "predicted_share": ratio(predicted[g], n),
             "accuracy": ratio(hits[g], examples[g]),
             "nll": ratio(nll[g], examples[g]),
             "error_share": ratio(examples[g] - hits[g], total_errors),
             "nll_share": ratio(nll[g], nll_total)}
            for g, name in enumerate(GROUP_NAMES)]


def _class_group_sums(examples, groups: np.ndarray) -> np.ndarray:
    """A part's (examples, predictions, hits, NLL) per class group: (4, groups)."""
    member, size = groups[examples.label], len(GROUP_NAMES)
    return np.stack([np.bincount(member, minlength=size).astype(np.float64),
                     np.bincount(groups[examples.pred], minlength=size).astype(np.float64),
                     np.bincount(member, weights=examples.correct, minlength=size),
                     np.bincount(member, weights=examples.nll, minlength=size)])


def per_class_table(counts: ClassCounts, class_names: tuple[str, ...] | None,
                    limit: int) -> list[dict]:
    """Classes that cost the most: most misclassified examples first, then highest total NLL.
    Only classes that occur in the labels or the predictions are listed; limit 0 lists all."""
    errors = counts.support - counts.hits
    seen = np.flatnonzero((counts.support > 0) | (counts.predicted > 0))
    order = seen[np.lexsort((seen, -counts.nll_sum[seen], -errors[seen]))]
    if limit:
        order = order[:limit]
    f1 = counts.f1()
    rows = []
    for c in order:
        rows.append({
            "class": int(c),
            "name": class_names[c] if class_names is not None else str(c),
            "support": int(counts.support[c]),
            "predicted": int(counts.predicted[c]),
            "errors": int(errors[c]),
            "recall": ratio(counts.hits[c], counts.support[c]),
            "precision": ratio(counts.hits[c], counts.predicted[c]),
            "f1": float(f1[c]),
            "nll": ratio(counts.nll_sum[c], counts.support[c]),
        })
    return rows


# ----------------------------------------------------------------------------- loss anatomy

def loss_anatomy(pe: PerExample | None, confident_wrong: float, parts: Parts | None = None) -> dict:
    """Where the NLL comes from, from sums over the parts. `parts`: as headline's."""
    parts = _parts_of(pe, parts)
    n, nll_total, right, right_nll, wrong, wrong_nll, confident, confident_nll, zero = \
        sum(parts.map(_anatomy_sums, confident_wrong).gather())
    # the NLL of the worst 1% and 10% of the examples (at least one each)
    tops = np.array([max(1, math.ceil(fraction * n)) for fraction in (0.01, 0.10)])
    worst = RunOrder(parts, "nll_desc").first_sums(tops)[0] if n else np.zeros(2)
    return {
        "correct": {"count": int(right), "mean_nll": ratio(right_nll, right) if right else None,
                    "nll_share": ratio(right_nll, nll_total)},
        "wrong": {"count": int(wrong), "mean_nll": ratio(wrong_nll, wrong) if wrong else None,
                  "nll_share": ratio(wrong_nll, nll_total)},
        "worst_1pct_nll_share": ratio(worst[0], nll_total),
        "worst_10pct_nll_share": ratio(worst[1], nll_total),
        "confidently_wrong": {"threshold": confident_wrong, "count": int(confident),
                              "share": ratio(confident, n),
                              "nll_share": ratio(confident_nll, nll_total)},
        "zero_probability": {"count": int(zero), "share": ratio(zero, n)},
    }


def _anatomy_sums(examples: PerExample, confident_wrong: float) -> np.ndarray:
    """A part's examples and NLL: in all, right, wrong, confidently wrong; and how many have
    an infinite NLL."""
    nll, correct = examples.nll, examples.correct
    wrong = ~correct
    confident = wrong & (examples.conf >= confident_wrong)
    return np.array([len(nll), nll.sum(), correct.sum(), nll[correct].sum(), wrong.sum(),
                     nll[wrong].sum(), confident.sum(), nll[confident].sum(),
                     np.isposinf(nll).sum()], dtype=np.float64)


# ----------------------------------------------------------------------------- slices

@dataclass(frozen=True)
class SliceSums(Mergeable):
    """The sums behind a slice table: per distinct value (text, ascending), its examples,
    hits, NLL and confidence summed, and its equal-width confidence bins' examples, hits and
    confidences (bins on the last axis). Two sets of examples merge value by value."""

    keys: np.ndarray
    sums: np.ndarray  # (values, 4): examples, hits, NLL, confidence
    bins: np.ndarray  # (values, 3, bins): examples, hits, confidence

    @staticmethod
    def of(pe: PerExample, values: np.ndarray, bins: int) -> "SliceSums":
        keys, value = np.unique(np.asarray(values).astype(str), return_inverse=True)
        size = len(keys)
        cell = value * bins + equal_width_bin(pe.conf, bins)
        correct = pe.correct.astype(np.float64)

        def per(index: np.ndarray, count: int, weights=None) -> np.ndarray:
            return np.bincount(index, weights=weights, minlength=count).astype(np.float64)

        sums = np.stack([per(value, size), per(value, size, correct), per(value, size, pe.nll),
                         per(value, size, pe.conf)], axis=1)
        binned = np.stack([per(cell, size * bins), per(cell, size * bins, correct),
                           per(cell, size * bins, pe.conf)]).reshape(3, size, bins)
        return SliceSums(keys, sums, binned.transpose(1, 0, 2))

    def merged(self, other: "SliceSums") -> "SliceSums":
        keys, index = np.unique(np.r_[self.keys, other.keys], return_inverse=True)
        sums = np.zeros((len(keys), *self.sums.shape[1:]))
        binned = np.zeros((len(keys), *self.bins.shape[1:]))
        for part, where in ((self, index[:len(self.keys)]), (other, index[len(self.keys):])):
            sums[where] += part.sums
            binned[where] += part.bins
        return SliceSums(keys, sums, binned)

    def table(self, limit: int) -> dict:
        """The `limit` largest values (ties: in text order), with the few numbers worth
        showing for a slice."""
        count, hits, nll, conf = self.sums.T
        order = np.lexsort((self.keys, -count))
        rows = []
        for i in order[:limit]:
            accuracy, confidence = hits[i] / count[i], conf[i] / count[i]
            bin_count, bin_hits, bin_conf = self.bins[i]
            rows.append({"value": str(self.keys[i]), "n": int(count[i]),
                         "accuracy": float(accuracy), "nll": float(nll[i] / count[i]),
                         "ece": float(ece_from_sums(bin_hits - bin_conf, bin_count.sum())),
                         "mean_confidence": float(confidence),
                         "overconfidence": float(confidence - accuracy)})
        return {"values": int(len(self.keys)), "shown": len(rows), "rows": rows}


def slice_tables(parts: Parts, slice_parts: Parts, bins: int, limit: int) -> dict:
    """The table of every slice column of a run held in parts, with `slice_parts` holding
    each part's slice values (column -> values)."""
    found = parts.map_with(_slice_sums, [slice_parts], bins).gather()
    if not found or not found[0]:
        return {}
    merged = found[0]
    for part in found[1:]:
        merged = {col: sums.merged(part[col]) for col, sums in merged.items()}
    return {col: sums.table(limit) for col, sums in merged.items()}


def _slice_sums(examples: PerExample, slices: dict, bins: int) -> dict:
    return {col: SliceSums.of(examples, values, bins) for col, values in slices.items()}


# ----------------------------------------------------------------------------- noise floor

# The noise floor measures at most this many batches: their spread is known to a fraction of
# a percent by then, and a run of any size gives the client at most this many batches' rows.
MAX_NOISE_BATCHES = 100_000
NOISE_STREAM = 15  # the keyed draws of the batches' rows beyond it: [seed, NOISE_STREAM]


def noise_floor(pe: PerExample, batch_size: int, seed: int) -> dict:
    """noise_floor_of a run in one piece."""
    return noise_floor_of(LocalParts([pe]), batch_size, seed)


def noise_floor_of(parts: Parts, batch_size: int, seed: int) -> dict:
    """How much accuracy and NLL move between random mini-batches of a run (held in parts) by
    chance alone.

    Rows are shuffled with a fixed seed and cut into whole batches. `disagree_rate` is the
    share of consecutive batch pairs where loss and accuracy point opposite ways about which
    batch is better (both rise or both fall), i.e. how often a per-batch disagreement is
    pure noise. A run of more than MAX_NOISE_BATCHES batches is measured on that many: the
    rows with the smallest keyed uniforms (of the seed and the row), in that order.
    """
    sizes = parts.map(rows_of).gather()
    n = int(sum(sizes))
    batches = n // batch_size
    measured = min(batches, MAX_NOISE_BATCHES)
    result: dict[str, Any] = {"batch_size": batch_size, "batches": batches,
                              "measured_batches": measured, "seed": seed}
    if batches < 2:
        return result | {"accuracy": None, "nll": None, "disagree_rate": None}
    totals = parts.map(_noise_totals).gather()
    hits = sum(total[0] for total in totals)
    infinite = sum(total[1] for total in totals)
    moments = totals[0][2]
    for total in totals[1:]:
        moments = moments.merged(total[2])
    if measured == batches:
        correct, nll = (np.concatenate(column) for column in
                        zip(*parts.map(_correct_and_nll).gather()))
        order = np.random.default_rng(seed).permutation(n)[: batches * batch_size]
        correct, nll = correct[order], nll[order]
    else:
        correct, nll = _keyed_rows(parts, sizes, measured * batch_size, seed)
    accuracy = correct.reshape(measured, batch_size).mean(axis=1)
    nll = nll.reshape(measured, batch_size).mean(axis=1)
    with np.errstate(invalid="ignore"):  # inf - inf where true classes have probability 0
        d_acc, d_nll = np.diff(accuracy), np.diff(nll)
    moved = (d_acc != 0) & (d_nll != 0)
    disagree = moved & (np.sign(d_acc) == np.sign(d_nll))
    p = hits / n

    def spread(values: np.ndarray) -> dict:
        low, high = np.percentile(values, [5, 95])
        return {"std": float(values.std(ddof=1)), "p5": float(low), "p95": float(high)}

    result["accuracy"] = spread(accuracy) | {"expected_std": math.sqrt(p * (1 - p) / batch_size)}
    if infinite:  # true classes at probability 0: no NLL to spread
        return result | {"nll": None, "disagree_rate": None}
    nll_std = math.sqrt(moments.m2 / (n - 1))
    return result | {
        "nll": spread(nll) | {"expected_std": nll_std / math.sqrt(batch_size)},
        "disagree_rate": ratio(disagree.sum(), moved.sum()),
    }


def _noise_totals(examples: PerExample) -> tuple[int, int, Moments]:
    nll = examples.nll
    return int(examples.correct.sum()), int(np.isposinf(nll).sum()), Moments.of(nll)


def _correct_and_nll(examples: PerExample) -> tuple[np.ndarray, np.ndarray]:
    return examples.correct, examples.nll


def _keyed_rows(parts: Parts, sizes: list, count: int, seed: int
                ) -> tuple[np.ndarray, np.ndarray]:
    """The correctness and NLL of the `count` rows of the run with the smallest uniforms
    keyed on (seed, row), in increasing order of those: a random subset in random order,
    drawn where the parts are. Each part sends the rows below a threshold a little above
    count / n, so the client receives about `count` rows (again with a higher one, should
    too few fall below it)."""
    n = sum(sizes)
    firsts = np.r_[0, np.cumsum(sizes)[:-1]].astype(np.int64)
    share = count / n
    while True:
        threshold = min(1.0, share * 1.05 + 10 / n)
        found = parts.map_each(_rows_below, [(int(first), seed, threshold)
                                             for first in firsts]).gather()
        uniforms = np.concatenate([u for u, _, _ in found])
        if len(uniforms) >= count or threshold >= 1.0:
            break
        share *= 2
    order = np.argsort(uniforms, kind="stable")[:count]
    return (np.concatenate([c for _, c, _ in found])[order],
            np.concatenate([v for _, _, v in found])[order])


def _rows_below(examples: PerExample, job: tuple[int, int, float]
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    first, seed, threshold = job
    rows = np.arange(first, first + len(examples.nll), dtype=np.int64)
    uniforms = counter_uniforms(key_hash(rows), salt(seed, NOISE_STREAM), 0, 1)[0]
    kept = np.flatnonzero(uniforms < threshold)
    return uniforms[kept], examples.correct[kept], examples.nll[kept]


# ----------------------------------------------------------------------------- headline

@dataclass(frozen=True)
class MeanSums(Mergeable):
    """The headline's means over examples, as their sums and the count of examples."""

    n: int
    nll: float
    correct: int
    topk: int  # true class among the top_k first
    brier: float
    conf: float
    entropy: float
    nll_cal: float

    @staticmethod
    def of(pe: PerExample, top_k: int) -> "MeanSums":
        return MeanSums(n=len(pe), nll=float(pe.nll.sum()),
                        correct=int(np.count_nonzero(pe.correct)),
                        topk=int(np.count_nonzero(pe.rank < top_k)),
                        brier=float(pe.brier.sum()), conf=float(pe.conf.sum()),
                        entropy=float(pe.entropy.sum()), nll_cal=float(pe.nll_cal.sum()))

    def mean(self, name: str) -> float:
        return getattr(self, name) / self.n if self.n else math.nan


@dataclass(frozen=True)
class SummaryPlan:
    """What a run's RunSums depend on besides its examples, fixed before they are gathered."""

    top_k: int
    bins: int

    @staticmethod
    def of(settings: MetricSettings) -> "SummaryPlan":
        return SummaryPlan(settings.top_k, settings.ece_bins)


@dataclass(frozen=True)
class RunSums(Mergeable):
    """The sums behind a run's headline means, its calibration bins and its per-class
    counts. The main pass gathers them batch by batch (on the workers, with the Dask engine),
    and they are merged in row order."""

    plan: SummaryPlan
    means: MeanSums
    bins: BinSums  # equal-width bins of the confidence, with the NLLs of the reliability table
    bins_calibrated: BinSums  # of the confidence after temperature scaling
    classes: ClassCounts

    @staticmethod
    def of(pe: PerExample, plan: SummaryPlan, num_classes: int) -> "RunSums":
        """`num_classes`: at least this many classes (0: as many as the examples show)."""
        return RunSums(plan=plan, means=MeanSums.of(pe, plan.top_k),
                       bins=BinSums.of(pe.conf, pe.correct, plan.bins, pe.nll),
                       bins_calibrated=BinSums.of(pe.conf_cal, pe.correct, plan.bins),
                       classes=ClassCounts.of(pe, num_classes))


def headline(pe: PerExample | None, run_sums: RunSums, rank_depth: int | None,
             settings: MetricSettings, temperature: float | None,
             classwise: dict[str, float] | None = None,
             parts: Parts | None = None,
             by_conf: ConfidenceOrder | None = None) -> tuple[dict, dict[str, str]]:
    """All single-run metrics, and the reasons for those that are unavailable. `run_sums`:
    the examples' RunSums at the settings' top_k and bins. `classwise`: the CLASSWISE
    metrics, from the run's per-(class, bin) sums. `parts`: the same examples in parts (a
    cluster's), for the statistics of an order; default: `pe` as one part. `by_conf`: the
    parts in confidence order, where the caller uses them too (the curves)."""
    parts = _parts_of(pe, parts)
    by_conf = by_conf if by_conf is not None else ConfidenceOrder(parts)
    sums, counts = run_sums.means, run_sums.classes
    ece, mce = run_sums.bins.errors()
    accuracy = sums.mean("correct")
    confidence = sums.mean("conf")
    topk_name = f"top{settings.top_k}_accuracy"
    values: dict[str, float | None] = {
        "n": sums.n,
        "nll": sums.mean("nll"),
        "accuracy": accuracy,
        topk_name: sums.mean("topk"),
        "brier": sums.mean("brier"),
        "ece": ece,
        "ece_adaptive": adaptive_ece_of(by_conf, settings.ece_bins),
        "mce": mce,
        "mean_confidence": confidence,
        "overconfidence": confidence - accuracy,
        "mean_entropy": sums.mean("entropy"),
        "balanced_accuracy": balanced_accuracy(counts),
        "macro_f1": macro_f1(counts),
        "temperature": temperature,
        "nll_calibrated": sums.mean("nll_cal"),
        "ece_calibrated": run_sums.bins_calibrated.errors()[0],
        "smooth_ece": smooth_ece_of(parts),
        "rmsce_debiased": debiased_rms_of(by_conf, settings.ece_bins),
        **(classwise or dict.fromkeys(CLASSWISE)),
        **selective_of(by_conf),
    }
    unavailable: dict[str, str] = {}
    if classwise is None:
        for name in CLASSWISE:
            unavailable[name] = "needs the whole predicted distribution (top-k run)"
    if rank_depth is not None and settings.top_k > rank_depth:
        unavailable[topk_name] = f"the run lists only the top {rank_depth} classes"
    for name in ("brier", "mean_entropy"):
        value = values[name]
        if value is not None and math.isnan(value):
            unavailable[name] = "needs the whole predicted distribution (top-k run)"
    if values["auroc"] is None:
        unavailable["auroc"] = ("undefined: needs both right and wrong predictions, and every "
                                f"one is {'right' if accuracy == 1 else 'wrong'}")
    zero = int(sum(parts.map(_infinite_nlls).gather()))
    if zero:
        unavailable["nll"] = (f"infinite: {zero:,} of {sums.n:,} examples give the true class "
                              "probability 0 (--min-prob floors the probabilities)")
    if temperature is None:
        why = ("needs the whole predicted distribution (top-k run)" if rank_depth is not None
               else "the NLL is infinite at every temperature (true classes of probability 0)")
        for name in ("temperature", "nll_calibrated", "ece_calibrated"):
            unavailable[name] = why
    for name in unavailable:
        values[name] = None
    return values, unavailable
