"""Which classes changed beyond noise between two runs, or two groups of runs, on the same
examples.

Each class gets two tests: of its recall (McNemar's exact test on the class's examples that
one run gets right and the other wrong; with groups or clusters, the same t test as the
headline metrics on the class's correctness) and of its mean NLL (the paired t test; with
groups, the seeds x examples t test of seeds.py). With thousands of classes a few hundred
would pass at 5% by chance alone, so each family of tests is corrected with
Benjamini-Hochberg: among the classes reported as changed, the expected share of false
discoveries is at most `fdr` (classes use disjoint examples, so their tests are independent
of the example noise, which is what BH needs).

Every class is tested at once from per-class sums, through the same functions as the
headline tests (paired.mcnemar_exact, paired.t_test via seeds.crossed_class_test).
"""

from __future__ import annotations

import numpy as np

from .errors import InputError, UsageError
from .metrics import MetricSettings
from .paired import mcnemar_exact
from .pairsums import PairPlan, PairSums, pair_sums
from .perexample import PerExample
from .groupsums import GroupPlan, GroupSums, group_sums
from .seeds import crossed_class_test

METHOD = ("per class: McNemar exact test of recall, paired t test of mean NLL; "
          "Benjamini-Hochberg false discovery rate, each family separately")
METHOD_SHARED = ("per class: t tests of recall and of mean NLL with the headline tests' noise "
                 "sources; Benjamini-Hochberg false discovery rate, each family separately")


def class_changes(base: PerExample | list[PerExample], cand: PerExample | list[PerExample],
                  num_classes: int, fdr: float = 0.05, paired: bool = False,
                  clusters: np.ndarray | None = None) -> dict:
    """Per-class recall and mean-NLL changes from `base` to `cand` (one run each, or the runs
    of two groups), with BH q-values.

    Arrays have one entry per class, NaN where the class was not tested: no example for
    either test, a single example (or a non-finite NLL difference) for the NLL test. A class
    counts as better or worse when its q-value is below `fdr`.
    """
    bases = base if isinstance(base, list) else [base]
    cands = cand if isinstance(cand, list) else [cand]
    for run in bases[1:] + cands:
        if len(run) != len(bases[0]):
            raise InputError(f"the runs must hold the same examples: {len(bases[0])} vs "
                             f"{len(run)}")
        if not np.array_equal(run.label, bases[0].label):
            first = int(np.flatnonzero(run.label != bases[0].label)[0])
            raise InputError(f"labels differ between the runs at example {first}: "
                             f"{bases[0].label[first]} vs {run.label[first]}")
    label = bases[0].label
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) \
            or num_classes < 1:
        raise UsageError(f"num_classes must be a whole number of at least 1, got {num_classes!r}")
    if len(label) and (label.min() < 0 or label.max() >= num_classes):
        bad = int(np.flatnonzero((label < 0) | (label >= num_classes))[0])
        raise InputError(f"label {label[bad]} at example {bad} is outside the "
                         f"{num_classes} classes 0..{num_classes - 1}")
    if not 0 < fdr < 1:
        raise UsageError(f"fdr must be between 0 and 1 (exclusive), got {fdr}")
    return _class_changes(bases, cands, int(num_classes), float(fdr), paired, clusters)


def benjamini_hochberg(p: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg q-values (adjusted p-values); NaN means untested: it stays NaN and
    does not count among the tests."""
    p = np.asarray(p, dtype=np.float64)
    if p.ndim != 1:
        raise UsageError(f"benjamini_hochberg expects a 1-D array of p-values, got shape {p.shape}")
    if np.any((p < 0) | (p > 1)):
        raise UsageError(f"p-values must lie in [0, 1], got values from {np.nanmin(p)} to "
                         f"{np.nanmax(p)}")
    return _bh(p)


def _bh(p: np.ndarray) -> np.ndarray:
    q = np.full(len(p), np.nan)
    tested = np.flatnonzero(~np.isnan(p))
    order = tested[np.argsort(p[tested], kind="stable")]
    m = len(order)
    scaled = p[order] * m / np.arange(1, m + 1)
    # q_(i) = min over j >= i of p_(j) m / j: a running minimum from the largest p down
    q[order] = np.minimum(1.0, np.minimum.accumulate(scaled[::-1])[::-1])
    return q


def _class_changes(bases: list[PerExample], cands: list[PerExample], num_classes: int,
                   fdr: float, paired: bool, clusters: np.ndarray | None) -> dict:
    if len(bases) == 1 and len(cands) == 1:  # one pair: from its mergeable sums
        plan = PairPlan((), MetricSettings(), (0,) * num_classes,
                        0 if clusters is None else int(clusters.max()) + 1, top=0)
        return pair_class_changes(pair_sums(bases[0], cands[0], plan,
                                            np.arange(len(bases[0])), clusters), fdr)
    group = GroupPlan((), MetricSettings(), num_classes, len(bases), paired,
                     0 if clusters is None else int(clusters.max()) + 1, top=0)
    return group_class_changes(group_sums(bases, cands, group, np.arange(len(bases[0])),
                                          clusters), fdr)


def group_class_changes(group: GroupSums, fdr: float) -> dict:
    """class_changes of two groups of runs, from their sums: recall and mean NLL by the
    seeds x examples t test of seeds.py on each class's examples."""
    recall_delta, recall_p = crossed_class_test(group.classes["accuracy"], fdr)
    nll_delta, nll_p = crossed_class_test(group.classes["nll"], fdr)
    present = group.classes["accuracy"].diff.n > 0
    return _found(recall_delta, recall_p, nll_delta, nll_p, present, fdr, METHOD_SHARED)


def pair_class_changes(pair: PairSums, fdr: float) -> dict:
    """class_changes of one pair of runs, from the pair's sums: recall by McNemar's exact
    test on each class's flips (a t test on its correctness with clusters), mean NLL by the
    paired t test."""
    support = pair.class_count
    present = support > 0
    if pair.class_cells is None:
        fixed, broken = pair.class_fixed, pair.class_broken
        with np.errstate(invalid="ignore", divide="ignore"):
            recall_delta = np.where(present, (fixed - broken) / support, np.nan)
        recall_p = np.where(present, mcnemar_exact(fixed, broken), np.nan)
        method = METHOD
    else:
        recall_delta, recall_p = pair.class_mean_test("accuracy")
        method = METHOD_SHARED
    nll_delta, nll_p = pair.class_mean_test("nll")
    return _found(recall_delta, recall_p, nll_delta, nll_p, present, fdr, method)


def _found(recall_delta: np.ndarray, recall_p: np.ndarray, nll_delta: np.ndarray,
           nll_p: np.ndarray, present: np.ndarray, fdr: float, method: str) -> dict:
    """The classes found changed at the false discovery rate `fdr`, each family apart."""
    nll_p = np.where(np.isfinite(nll_delta), nll_p, np.nan)
    recall_q, nll_q = _bh(recall_p), _bh(nll_p)

    with np.errstate(invalid="ignore"):  # NaN (untested) compares False: not counted
        recall_found, nll_found = recall_q < fdr, nll_q < fdr
    return {
        "fdr": fdr,
        "method": method,
        "classes_tested": int(present.sum()),
        "recall": {"tested": int((~np.isnan(recall_p)).sum()),
                   "better": int((recall_found & (recall_delta > 0)).sum()),
                   "worse": int((recall_found & (recall_delta < 0)).sum())},
        "nll": {"tested": int((~np.isnan(nll_p)).sum()),  # lower NLL is better
                "better": int((nll_found & (nll_delta < 0)).sum()),
                "worse": int((nll_found & (nll_delta > 0)).sum())},
        "per_class": {"recall_delta": recall_delta, "recall_p": recall_p, "recall_q": recall_q,
                      "nll_delta": nll_delta, "nll_p": nll_p, "nll_q": nll_q},
    }
