"""Which classes changed beyond noise between two runs on the same examples.

Each class gets two paired tests: McNemar's exact test of its recall (the examples of the
class that one run gets right and the other wrong) and a paired t test of its mean NLL. With
thousands of classes a few hundred would pass at 5% by chance alone, so each family of tests
is corrected with Benjamini-Hochberg: among the classes reported as changed, the expected
share of false discoveries is at most `fdr` (classes use disjoint examples, so their tests
are independent, which is what BH needs).

Everything is computed for all classes at once from per-class sums (np.bincount), with the
same formulas as paired.mcnemar_exact and paired.paired_t: a million examples and thousands
of classes take milliseconds, where a loop over classes would take seconds.
"""

from __future__ import annotations

import numpy as np
from scipy import special  # not scipy.stats: it would add a second to every start-up

from .errors import InputError, UsageError
from .perexample import PerExample

METHOD = ("per class: McNemar exact test of recall, paired t test of mean NLL; "
          "Benjamini-Hochberg false discovery rate, each family separately")


def class_changes(base: PerExample, cand: PerExample, num_classes: int,
                  fdr: float = 0.05) -> dict:
    """Per-class recall and mean-NLL changes from `base` to `cand`, with BH q-values.

    Arrays have one entry per class, NaN where the class was not tested: no example for
    either test, a single example (or a non-finite NLL difference) for the NLL test. A class
    counts as better or worse when its q-value is below `fdr`.
    """
    if len(base) != len(cand):
        raise InputError(f"the runs must hold the same examples: {len(base)} vs {len(cand)}")
    if not np.array_equal(base.label, cand.label):
        first = int(np.flatnonzero(base.label != cand.label)[0])
        raise InputError(f"labels differ between the runs at example {first}: "
                         f"{base.label[first]} vs {cand.label[first]}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) \
            or num_classes < 1:
        raise UsageError(f"num_classes must be a whole number of at least 1, got {num_classes!r}")
    if len(base) and (base.label.min() < 0 or base.label.max() >= num_classes):
        bad = int(np.flatnonzero((base.label < 0) | (base.label >= num_classes))[0])
        raise InputError(f"label {base.label[bad]} at example {bad} is outside the "
                         f"{num_classes} classes 0..{num_classes - 1}")
    if not 0 < fdr < 1:
        raise UsageError(f"fdr must be between 0 and 1 (exclusive), got {fdr}")
    return _class_changes(base, cand, int(num_classes), float(fdr))


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


def _class_changes(base: PerExample, cand: PerExample, num_classes: int, fdr: float) -> dict:
    label = base.label
    support = np.bincount(label, minlength=num_classes)
    present = support > 0

    recall_delta, recall_p = _recall_tests(label, base.correct, cand.correct, support)
    with np.errstate(invalid="ignore"):  # inf - inf (p = 0 in both runs): NaN, left untested
        diff = cand.nll - base.nll
    nll_delta, nll_p = _nll_tests(label, diff, support)
    recall_q, nll_q = _bh(recall_p), _bh(nll_p)

    with np.errstate(invalid="ignore"):  # NaN (untested) compares False: not counted
        recall_found, nll_found = recall_q < fdr, nll_q < fdr
    return {
        "fdr": fdr,
        "method": METHOD,
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


def _recall_tests(label: np.ndarray, base_correct: np.ndarray, cand_correct: np.ndarray,
                  support: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Recall change per class and McNemar's exact p-value, as paired.mcnemar_exact."""
    k = len(support)
    fixed = np.bincount(label[~base_correct & cand_correct], minlength=k)
    broken = np.bincount(label[base_correct & ~cand_correct], minlength=k)
    flips = fixed + broken
    present = support > 0
    delta = np.full(k, np.nan)
    delta[present] = (fixed[present] - broken[present]) / support[present]
    p = np.full(k, np.nan)
    p[present] = 1.0  # no flips: nothing moved, nothing to test against
    moved = flips > 0
    p[moved] = np.minimum(1.0, 2 * special.bdtr(np.minimum(fixed, broken)[moved],
                                                flips[moved], 0.5))
    return delta, p


def _nll_tests(label: np.ndarray, diff: np.ndarray, support: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray]:
    """Mean NLL difference per class and the paired t p-value, as paired.paired_t."""
    k = len(support)
    present = support > 0
    count = np.maximum(support, 1)  # divides only where the class is present
    delta = np.full(k, np.nan)
    delta[present] = (np.bincount(label, weights=diff, minlength=k) / count)[present]
    finite = np.bincount(label, weights=~np.isfinite(diff), minlength=k) == 0
    # Two passes, sums of squares about each class's mean: the one-pass formula
    # sum(d^2) - sum(d)^2 / n loses every digit when the spread is small next to the mean.
    centred = diff - np.where(finite & present, delta, 0.0)[label]
    sum_sq = np.bincount(label, weights=centred * centred, minlength=k)
    # A class whose differences are all equal has se 0 exactly; sums of squares need not see
    # that (the mean of equal values can be off in the last bit), so compare each difference
    # with one of its class's own. Whichever example wins the fancy assignment is fine.
    some = np.zeros(k)
    some[label] = diff
    unequal = np.bincount(label, weights=diff != some[label], minlength=k) > 0

    p = np.full(k, np.nan)
    testable = present & (support > 1) & finite  # one example: no spread to estimate
    spread = testable & unequal
    flat = testable & ~unequal
    # every difference equal: p 1 if they are all 0, else 0 (paired_t's rule)
    p[flat] = np.where(some[flat] == 0, 1.0, 0.0)
    delta[flat] = some[flat]  # exact, not a sum divided back
    n = support[spread]
    se = np.sqrt(sum_sq[spread] / (n - 1) / n)
    p[spread] = 2 * special.stdtr(n - 1, -np.abs(delta[spread] / se))
    return delta, p
