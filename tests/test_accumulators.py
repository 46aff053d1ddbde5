"""The mergeable states of the single-run statistics (metrics.Mergeable), the way torchmetrics
tests its metric states: the states of a run's batches, merged, equal the state of one pass
over all its examples, for any batch size and any split; and the values computed from a
state equal the metrics' own functions and a hand computation."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from conftest import random_logits, to_rounding, write_run
from metricdiff.classwise import ClasswisePlan
from metricdiff.io import ReadOptions
from metricdiff.metrics import (BinSums, ClassCounts, MeanSums, MetricSettings, RunSums,
                                SummaryPlan, calibration_error, reliability_rows)
from metricdiff.perexample import PerExample
from metricdiff.pipeline import RunAssembler, RunPart, load_run
from metricdiff.results import build_report
from test_formats import write_topk

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
    one_pass = reliability_rows(BinSums.of(pe.conf, pe.correct, BINS, pe.nll))
    for row, expected in zip(reliability_rows(bins), one_pass):
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


def run_sums_over(pe: PerExample, cuts: np.ndarray, num_classes: int) -> RunSums:
    parts = [RunSums.of(pe.take(np.arange(a, b)), PLAN, num_classes)
             for a, b in zip(cuts[:-1], cuts[1:])]
    total = parts[0]
    for part in parts[1:]:
        total = total.merged(part)
    return total


def assert_same_run_sums(a: RunSums, b: RunSums):
    assert a.plan == b.plan
    for name in ("means", "bins", "bins_calibrated", "classes"):
        assert_same_state(getattr(a, name), getattr(b, name))


PLAN = SummaryPlan(top_k=TOP_K, bins=BINS)


@pytest.mark.parametrize("seed", range(3))
def test_run_sums_of_batches_with_classes_seen_as_they_come(seed):
    """A top-k run's classes are known only as they are seen: each batch counts the classes
    up to its own largest, and the merged counts, padded to K, are the run's."""
    rng = np.random.default_rng(seed)
    pe = examples(2000, seed)
    order = np.argsort(pe.label, kind="stable")  # the early batches see few classes
    pe = pe.take(order)
    cuts = np.unique(np.r_[0, np.sort(rng.choice(len(pe), 5, replace=False)), len(pe)])
    first = RunSums.of(pe.take(np.arange(cuts[1])), PLAN, 0)
    assert len(first.classes.support) < K  # counts of two lengths are merged below
    merged = run_sums_over(pe, cuts, 0)
    padded = replace(merged, classes=merged.classes.padded(K))
    assert_same_run_sums(RunSums.of(pe, PLAN, K), padded)


def test_run_sums_are_the_functions_values():
    pe = examples(3000, 4)
    sums = run_sums_over(pe, np.array([0, 1, 1500, 3000]), K)
    assert sums.bins_calibrated.errors()[0] == pytest.approx(
        calibration_error(pe.conf_cal, pe.correct, BINS)[0], rel=1e-12)
    with pytest.raises(AssertionError):  # states gathered with other settings do not merge
        sums.merged(RunSums.of(pe, SummaryPlan(top_k=1, bins=BINS), K))


def reports_from_the_pass_and_from_the_columns(path, **options):
    """The report of a run whose main pass gathered its RunSums, and the report of the same
    run with the sums computed afresh from its per-example columns."""
    read = ReadOptions(**options)
    settings = MetricSettings()
    run = load_run(str(path), options=read, classwise=ClasswisePlan(settings.ece_bins),
                   summary=SummaryPlan.of(settings))
    assert run.sums is not None
    fresh = build_report(replace(run, sums=None), settings).to_dict()
    return build_report(run, settings).to_dict(), fresh


@pytest.mark.parametrize("batch_values", [12 * 7, 12 * 100, 1 << 22])
@pytest.mark.parametrize("layout", ["full", "topk"])
def test_the_sums_of_the_main_pass_give_the_report_of_one_pass(tmp_path, batch_values, layout):
    """Batches of 7 rows, of 100, one batch: the report built from the sums the main pass
    merged batch by batch is the report of the whole columns, to the rounding of a sum."""
    logits, labels = random_logits(700, 12, seed=5)
    if layout == "topk":
        path = write_topk(tmp_path / "r.parquet", logits, labels, 4)
    else:
        path = write_run(tmp_path / "r.parquet", labels, logits=logits, row_group_size=90)
    from_pass, from_columns = reports_from_the_pass_and_from_the_columns(
        path, batch_values=batch_values)
    assert to_rounding(from_pass) == to_rounding(from_columns)
    assert from_pass["metrics"]["n"] == 700


def test_parts_added_in_any_order_merge_in_row_order():
    """A cluster's parts come in any order; their sums are added in row order all the same,
    so two reads of a run give the same bits."""
    pe = examples(900, 3)
    cuts = [0, 100, 350, 351, 900]
    parts = [(a, RunPart(pe.take(np.arange(a, b)), None, {}, None, None,
                         RunSums.of(pe.take(np.arange(a, b)), PLAN, K)))
             for a, b in zip(cuts[:-1], cuts[1:])]
    results = []
    for order in ([0, 1, 2, 3], [3, 1, 0, 2], [2, 3, 1, 0]):
        assembler = RunAssembler(len(pe))
        for i in order:
            assembler.add(*parts[i])
        results.append(assembler.result().sums)
    in_rows = run_sums_over(pe, np.array(cuts), K)
    for sums in results:
        for name in ("means", "bins", "bins_calibrated", "classes"):
            for field_name, value in vars(getattr(sums, name)).items():
                expected = getattr(getattr(in_rows, name), field_name)
                assert np.array_equal(value, expected, equal_nan=True), (name, field_name)


def test_documents_to_rounding_still_tell_a_real_difference():
    assert to_rounding({"x": [0.1 + 0.2]}) == to_rounding({"x": [0.3]})
    assert to_rounding({"x": [0.3 + 1e-10]}) != to_rounding({"x": [0.3]})
    assert to_rounding({"x": 1e6 * (1 + 1e-13)}) == to_rounding({"x": 1e6})
    assert to_rounding({"x": 1e6 * (1 + 1e-11)}) != to_rounding({"x": 1e6})


@pytest.mark.parametrize("seed", range(3))
def test_slice_sums_merged_over_splits_give_a_direct_grouping(seed):
    """A slice table from SliceSums of random parts, merged, equals a pandas groupby over the
    examples (n, accuracy, NLL, confidence) and each value's own ECE."""
    import pandas as pd

    from metricdiff.metrics import SliceSums

    rng = np.random.default_rng(seed)
    pe = examples(3000, seed)
    values = rng.choice(["web", "app", "partner", "kiosk", "x"], 3000, p=[.4, .3, .2, .09, .01])
    cuts = np.unique(np.r_[0, np.sort(rng.choice(3000, 4, replace=False)), 3000])
    order = rng.permutation(3000)
    merged = None
    for a, b in zip(cuts[:-1], cuts[1:]):
        rows = order[a:b]
        part = SliceSums.of(pe.take(rows), values[rows], BINS)
        merged = part if merged is None else merged.merged(part)
    assert merged is not None
    table = merged.table(limit=4)
    frame = pd.DataFrame({"value": values, "correct": pe.correct, "nll": pe.nll,
                          "conf": pe.conf})
    sizes = frame.groupby("value").size().sort_values(ascending=False, kind="stable")
    assert table["values"] == 5 and table["shown"] == 4
    assert [row["value"] for row in table["rows"]] == list(sizes.index[:4])
    for row in table["rows"]:
        member = values == row["value"]
        group = frame[member]
        assert row["n"] == len(group)
        assert row["accuracy"] == pytest.approx(group["correct"].mean(), rel=1e-12)
        assert row["nll"] == pytest.approx(group["nll"].mean(), rel=1e-12)
        assert row["mean_confidence"] == pytest.approx(group["conf"].mean(), rel=1e-12)
        ece, _ = calibration_error(pe.conf[member], pe.correct[member], BINS)
        assert row["ece"] == pytest.approx(ece, rel=1e-12)
