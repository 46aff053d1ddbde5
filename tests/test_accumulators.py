"""The mergeable states of the single-run statistics (metrics.Mergeable), the way torchmetrics
tests its metric states: the states of a run's batches, merged, equal the state of one pass
over all its examples, for any batch size and any split; and the values computed from a
state equal the metrics' own functions and a hand computation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from metricdiff.metrics import (BinSums, ClassCounts, MeanSums, calibration_error,
                                reliability_rows, reliability_table)
from metricdiff.perexample import PerExample

K, BINS, TOP_K = 7, 15, 3


def examples(n: int, seed: int) -> PerExample:
    rng = np.random.default_rng(seed)
    label = rng.integers(0, K, n).astype(np.int32)
    rank = np.where(rng.random(n) < 0.6, 0, rng.integers(1, K, n)).astype(np.int32)
    pred = np.where(rank == 0, label, (label + 1) % K).astype(np.int32)
    conf = np.round(rng.uniform(1 / K, 1, n), 3)  # rounded: examples on the bins' edges
    conf[:3] = [1.0, 0.0 + 1 / K, 2 / 15]  # the top edge, and an edge exactly
    nll = rng.exponential(1.0, n)
    return PerExample(label=label, pred=pred, rank=rank, conf=conf, nll=nll,
                      brier=rng.random(n), entropy=rng.random(n), nll_cal=nll * 0.9,
                      conf_cal=np.clip(conf * 0.95, 0, 1))


def states(pe: PerExample):
    return (BinSums.of(pe.conf, pe.correct, BINS, pe.nll), ClassCounts.of(pe, K),
            MeanSums.of(pe, TOP_K))


def merged_over(pe: PerExample, cuts: np.ndarray):
    parts = [states(pe.take(np.arange(a, b))) for a, b in zip(cuts[:-1], cuts[1:])]
    total = parts[0]
    for part in parts[1:]:
        total = tuple(a.merged(b) for a, b in zip(total, part))
    return total


def assert_same_state(a, b):
    for name, value in vars(a).items():
        other = getattr(b, name)
        if np.asarray(value).dtype.kind in "iub":
            assert np.array_equal(value, other), name  # counts: exactly
        else:
            np.testing.assert_allclose(value, other, rtol=1e-12, atol=1e-12, err_msg=name)


@pytest.mark.parametrize("batch", [1, 7, 64, 1000, 5000])
def test_merged_batches_equal_one_pass(batch):
    pe = examples(5000, batch)
    whole = states(pe)
    cuts = np.unique(np.r_[np.arange(0, len(pe), batch), len(pe)])
    for one, merged in zip(whole, merged_over(pe, cuts)):
        assert_same_state(one, merged)


@pytest.mark.parametrize("seed", range(5))
def test_merged_random_splits_in_any_order_equal_one_pass(seed):
    """Partitions of uneven sizes, merged in another order than the rows'."""
    rng = np.random.default_rng(100 + seed)
    pe = examples(3000, seed)
    order = rng.permutation(len(pe))
    cuts = np.unique(np.r_[0, np.sort(rng.choice(len(pe), 6, replace=False)), len(pe)])
    shuffled = pe.take(order)
    for one, merged in zip(states(pe), merged_over(shuffled, cuts)):
        assert_same_state(one, merged)


def test_values_from_a_merged_state_equal_the_metric_functions():
    pe = examples(4000, 9)
    bins, counts, means = merged_over(pe, np.array([0, 999, 1000, 2500, 4000]))
    ece, mce = calibration_error(pe.conf, pe.correct, BINS)
    assert bins.errors() == pytest.approx((ece, mce), rel=1e-12)
    for row, expected in zip(reliability_rows(bins), reliability_table(pe, BINS)):
        for name, value in expected.items():
            if value is None:  # an empty bin's rates
                assert row[name] is None, name
            else:
                assert row[name] == pytest.approx(value, rel=1e-12, abs=1e-15), name
    assert means.n == len(pe)
    assert means.mean("nll") == pytest.approx(pe.nll.mean(), rel=1e-12)
    assert means.mean("correct") == np.mean(pe.rank == 0)
    assert means.mean("topk") == np.mean(pe.rank < TOP_K)
    assert np.array_equal(counts.support, np.bincount(pe.label, minlength=K))


def test_bin_sums_by_hand():
    """Four examples: confidences 0.95 and 0.92 (bin 10 of 10), 0.28 and 0.25 (bin 3)."""
    conf = np.array([0.95, 0.92, 0.28, 0.25])
    correct = np.array([True, False, False, True])
    sums = BinSums.of(conf, correct, 10)
    assert sums.count[9] == 2 and sums.count[2] == 2 and sums.count.sum() == 4
    ece, mce = sums.errors()
    # bin 10: |1 - 1.87| = 0.87; bin 3: |1 - 0.53| = 0.47; ECE = 1.34 / 4, MCE = 0.87 / 2
    assert ece == pytest.approx(1.34 / 4) and mce == pytest.approx(0.435)
    empty = BinSums.of(np.array([]), np.array([], dtype=bool), 10)
    assert all(math.isnan(v) for v in empty.errors())
    assert empty.merged(sums).errors() == (ece, mce)
