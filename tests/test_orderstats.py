"""Order statistics of a run held in parts (orderstats.py): the k-th key and the sums over the
first k rows in (key, row) order, and the statistics built on them, against one stable sort
of the whole run, for any split into parts (empty ones included)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from conftest import Close
from metricdiff.metrics import (ClassCounts, adaptive_calibration_error, adaptive_ece_of,
                                class_group_table, class_groups, debiased_rms_of, loss_anatomy)
from metricdiff import orderstats
from metricdiff.orderstats import LocalParts, RunOrder, float_keys, float_values
from metricdiff.perexample import PerExample
from metricdiff.smoothece import smooth_ece, smooth_ece_of


def split(pe: PerExample, cuts) -> LocalParts:
    """pe in consecutive parts cut at these rows."""
    bounds = [0, *cuts, len(pe)]
    return LocalParts([pe.take(np.arange(a, b)) for a, b in zip(bounds[:-1], bounds[1:])])


def examples(n: int, seed: int, decimals: int = 2) -> PerExample:
    rng = np.random.default_rng(seed)
    conf = np.round(rng.uniform(0.2, 1, n), decimals)  # rounded: many ties
    correct = rng.random(n) < conf
    nll = np.round(rng.exponential(1.0, n), decimals)
    label = np.zeros(n, dtype=np.int32)
    return PerExample(label=label, pred=label, rank=(~correct).astype(np.int32), conf=conf,
                      nll=nll, brier=nll, entropy=nll, nll_cal=nll, conf_cal=conf)


def random_cuts(rng, n: int) -> list[int]:
    return sorted(rng.integers(0, n + 1, size=rng.integers(0, 6)).tolist())  # repeats: empty


def test_float_keys_keep_the_order_of_floats_and_invert():
    values = np.array([-np.inf, -1e300, -2.5, -1e-300, -0.0, 0.0, 5e-324, 1e-300, 0.5, 1.0,
                       1e300, np.inf])
    keys = float_keys(values)
    assert np.all(np.diff(keys.astype(object)) >= 0)
    assert keys[4] == keys[5]  # -0.0 is 0.0
    assert np.array_equal(float_values(keys), values + 0.0)


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("few", [0, 7, orderstats.FEW_KEYS])
def test_kth_keys_and_first_sums_are_those_of_one_stable_sort(seed, few, monkeypatch):
    """`few`: rows of an interval whose keys are brought here (0: counted down to one key;
    7: a few rounds of counts, then the keys)."""
    monkeypatch.setattr(orderstats, "FEW_KEYS", few)
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 4000))
    pe = examples(n, seed, decimals=int(rng.integers(0, 3)))
    order = RunOrder(split(pe, random_cuts(rng, n)), "conf")
    ranks = rng.integers(0, n, size=9)
    assert np.array_equal(float_values(order.keys_at(ranks)), np.sort(pe.conf)[ranks])
    stable = np.argsort(pe.conf, kind="stable")
    gap = (pe.correct - pe.conf)[stable]
    counts = np.array([0, n, *rng.integers(0, n + 1, size=6)])
    want = np.concatenate([[0.0], np.cumsum(gap)])[counts]
    assert np.allclose(order.first_sums(counts)[0], want, rtol=0, atol=1e-12)


def test_ties_across_parts_are_taken_in_row_order():
    """Four rows of one confidence over three parts: the first three in (key, row) order
    are rows 0, 1 and 2, whichever part each is in."""
    pe = examples(4, 0)
    pe.conf[:] = 0.5
    pe.rank[:] = [0, 1, 0, 1]  # gaps 0.5, -0.5, 0.5, -0.5
    for cuts in ([1, 3], [2, 2], [0, 1, 2, 3]):
        order = RunOrder(split(pe, cuts), "conf")
        assert order.first_sums(np.array([1, 2, 3, 4]))[0].tolist() == [0.5, 0.0, 0.5, 0.0]


@pytest.mark.parametrize("seed", range(6))
def test_statistics_of_an_order_do_not_depend_on_the_parts(seed):
    rng = np.random.default_rng(100 + seed)
    n = int(rng.integers(30, 3000))
    pe = examples(n, seed)
    whole = LocalParts([pe])
    parts = split(pe, random_cuts(rng, n))
    for bins in (1, 15, n + 5):
        for statistic in (adaptive_ece_of, debiased_rms_of):
            assert Close(statistic(RunOrder(parts, "conf"), bins)) == \
                statistic(RunOrder(whole, "conf"), bins)
    assert Close(smooth_ece_of(parts)) == smooth_ece(pe.conf, pe.correct)
    for name in ("worst_1pct_nll_share", "worst_10pct_nll_share"):
        assert Close(loss_anatomy(pe, 0.9, parts)[name]) == loss_anatomy(pe, 0.9)[name]


def test_class_groups_from_parts_are_those_of_the_examples():
    """The head/torso/tail table from parts' sums against a direct count over the examples."""
    rng = np.random.default_rng(7)
    n, k = 3000, 40
    pe = examples(n, 3)
    pe.label = np.minimum(rng.zipf(1.5, n) - 1, k - 1).astype(np.int32)  # a long tail
    pe.pred = np.where(pe.correct, pe.label, rng.integers(0, k, n)).astype(np.int32)
    counts = ClassCounts.of(pe, k)
    groups = class_groups(counts, (0.5, 0.9))
    table = class_group_table(pe, counts, (0.5, 0.9), split(pe, [100, 100, 2500]))
    for g, row in enumerate(table):
        member = groups[pe.label] == g
        assert row["examples"] == member.sum()
        assert row["predicted_share"] == pytest.approx((groups[pe.pred] == g).mean(), abs=1e-15)
        assert row["accuracy"] == pytest.approx(pe.correct[member].mean(), abs=1e-14)
        assert row["nll"] == pytest.approx(pe.nll[member].mean(), rel=1e-12)
        assert row["error_share"] == pytest.approx((~pe.correct & member).sum()
                                                   / (~pe.correct).sum(), abs=1e-15)
        assert row["nll_share"] == pytest.approx(pe.nll[member].sum() / pe.nll.sum(), rel=1e-12)


def test_adaptive_ece_by_hand():
    """Six examples in two equal-mass bins: confidences 0.1, 0.2, 0.3 | 0.7, 0.8, 0.9 with
    one, then three right: |1/3 - 0.2| * 3/6 + |1 - 0.8| * 3/6 = 0.1667."""
    conf = np.array([0.9, 0.1, 0.8, 0.2, 0.7, 0.3])
    correct = np.array([True, True, True, False, True, False])
    assert adaptive_calibration_error(conf, correct, 2) == pytest.approx(
        abs(1 / 3 - 0.2) / 2 + abs(1 - 0.8) / 2, abs=1e-15)


def test_worst_shares_by_hand():
    """200 examples of NLL 1 and one of NLL 99: the worst 1% (3 examples) hold 101 of 299."""
    pe = examples(201, 1)
    pe.nll[:] = 1.0
    pe.nll[57] = 99.0
    anatomy = loss_anatomy(pe, 0.9, split(pe, [50, 60, 60]))
    assert math.isclose(anatomy["worst_1pct_nll_share"], 101 / 299, rel_tol=1e-15)
    assert math.isclose(anatomy["worst_10pct_nll_share"], (99 + 20) / 299, rel_tol=1e-15)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("decimals", [1, 2, 6])
def test_selective_metrics_over_ranges_of_parts_equal_one_part(seed, decimals):
    """The rows moved into ranges of confidence (ties never split across ranges), each range
    summed given the more confident ones: AUROC, AURC and the risks of one pass over the run,
    to the rounding of a sum, and scikit-learn's AUROC (ties count half)."""
    from sklearn.metrics import roc_auc_score

    from metricdiff.metrics import ConfidenceOrder, selective_of, selective_prediction
    from metricdiff.orderstats import range_bounds

    rng = np.random.default_rng(seed)
    pe = examples(3000, seed, decimals)
    whole = selective_prediction(pe.conf, pe.correct)
    parts = split(pe, random_cuts(rng, len(pe)))
    by_conf = ConfidenceOrder(parts)
    for ranges in (1, 2, 5, 40):
        assert range_bounds(by_conf, ranges).size <= ranges - 1
    held = selective_of(by_conf)  # as many ranges as parts
    assert held == {name: Close(value) for name, value in whole.items()}
    assert whole["auroc"] == pytest.approx(roc_auc_score(pe.correct, pe.conf), rel=1e-12)


def test_ranges_hold_every_row_once_and_never_split_a_key():
    from metricdiff.orderstats import range_bounds

    pe = examples(2000, 5, decimals=1)  # nine distinct confidences
    parts = split(pe, [100, 1500])
    bounds = range_bounds(RunOrder(parts, "conf"), 7)
    ranges = parts.by_ranges(lambda p: (float_keys(p.conf), p.nll[:, None]), bounds).gather()
    assert sum(len(keys) for keys, _ in ranges) == len(pe)
    seen = [set(keys.tolist()) for keys, _ in ranges]
    assert all(not (a & b) for i, a in enumerate(seen) for b in seen[i + 1:])
    for (keys, _), (later, _) in zip(ranges[:-1], ranges[1:]):
        if len(keys) and len(later):
            assert keys.max() < later.min()


@pytest.mark.parametrize("seed", range(3))
def test_curves_over_ranges_of_parts_equal_one_part(seed):
    """The smoothed reliability curve (grids summed over parts) and the risk-coverage curve
    with its band (cells summed over ranges of confidence) of a run in parts are those of
    the run in one piece."""
    from conftest import to_rounding
    from metricdiff.curves import run_curves, run_curves_of
    from metricdiff.metrics import ConfidenceOrder

    rng = np.random.default_rng(seed)
    pe = examples(2500, seed, decimals=2)
    parts = split(pe, random_cuts(rng, len(pe)))
    held = run_curves_of(ConfidenceOrder(parts), seed=3)
    assert to_rounding(held) == to_rounding(run_curves(pe.conf, pe.correct, seed=3))


def test_noise_floor_beyond_its_batches_measures_the_keyed_rows_over_any_split(monkeypatch):
    """Above MAX_NOISE_BATCHES, the batches are the rows with the smallest keyed uniforms of
    (seed, row), in that order: any split into parts gives the same numbers, and they are
    the spread of those rows' batch means computed directly."""
    from metricdiff import metrics
    from metricdiff.keyhash import counter_uniforms, key_hash, salt

    monkeypatch.setattr(metrics, "MAX_NOISE_BATCHES", 40)
    rng = np.random.default_rng(12)
    pe = examples(32 * 150 + 7, 12, decimals=6)
    whole = metrics.noise_floor(pe, 32, seed=3)
    assert whole["batches"] == 150 and whole["measured_batches"] == 40
    held = metrics.noise_floor_of(split(pe, random_cuts(rng, len(pe))), 32, seed=3)
    assert held == {key: (value if not isinstance(value, dict) else
                          {k: Close(v) for k, v in value.items()})
                    for key, value in whole.items()}
    uniforms = counter_uniforms(key_hash(np.arange(len(pe))), salt(3, metrics.NOISE_STREAM),
                                0, 1)[0]
    rows = np.argsort(uniforms)[:40 * 32]
    accuracy = pe.correct[rows].reshape(40, 32).mean(axis=1)
    nll = pe.nll[rows].reshape(40, 32).mean(axis=1)
    assert whole["accuracy"]["std"] == pytest.approx(accuracy.std(ddof=1), rel=1e-12)
    assert whole["nll"]["p95"] == pytest.approx(np.percentile(nll, 95), rel=1e-12)
    assert whole["nll"]["expected_std"] == pytest.approx(pe.nll.std(ddof=1) / math.sqrt(32),
                                                         rel=1e-10)
    below = metrics.noise_floor(pe.take(np.arange(32 * 40)), 32, seed=3)  # every batch
    assert below["measured_batches"] == below["batches"] == 40
