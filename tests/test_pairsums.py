"""PairSums, the mergeable state of a baseline-candidate pair: merged over any split of the
aligned examples, in any order, it is the state of one pass (counts exactly, sums to the
rounding of a sum), and the tests and tables it gives equal independent references: scipy's
paired t and binomial test, the CR1 formula by hand, and direct counts over the examples."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from metricdiff.metrics import GROUP_NAMES, GroupMoments, MetricSettings, Moments
from metricdiff.paired import per_example_values
from metricdiff.pairsums import (FLIP_GROUPS, CellSums, PairPlan, PairSums, WorstExamples,
                                 flip_group, pair_sums)
from metricdiff.perexample import PerExample
from metricdiff.ranking import contribution_intervals

K = 9
SETTINGS = MetricSettings()
METRICS = tuple(per_example_values(SETTINGS))
CLASS_GROUP = tuple(int(g) for g in np.arange(K) % 3)
IDS = np.arange(10_000) * 3 + 5  # the alignment's ids, increasing


def run(n: int, seed: int) -> PerExample:
    rng = np.random.default_rng(seed)
    label = rng.integers(0, K, n).astype(np.int32)
    rank = np.where(rng.random(n) < 0.55, 0, rng.integers(1, K, n)).astype(np.int32)
    pred = np.where(rank == 0, label, (label + 1 + rng.integers(0, K - 1, n)) % K)
    conf = rng.uniform(1 / K, 1, n)
    nll = rng.exponential(1.0, n)
    return PerExample(label=label, pred=pred.astype(np.int32), rank=rank, conf=conf, nll=nll,
                      brier=rng.random(n), entropy=rng.random(n), nll_cal=nll * 0.9,
                      conf_cal=conf * 0.95)


def pair(n: int, seed: int) -> tuple[PerExample, PerExample]:
    base, cand = run(n, seed), run(n, seed + 1000)
    cand.label = base.label  # the same examples
    return base, cand


def plan(clusters: int = 0) -> PairPlan:
    return PairPlan(METRICS, SETTINGS, CLASS_GROUP, clusters)


def assert_same_state(a, b) -> None:
    for name, value in vars(a).items():
        other = getattr(b, name)
        if isinstance(value, (CellSums, WorstExamples, GroupMoments)):
            assert_same_state(value, other)
        elif isinstance(value, dict):
            assert value.keys() == other.keys()
            for key in value:
                if isinstance(value[key], Moments):
                    assert value[key].n == other[key].n
                    assert value[key].mean == pytest.approx(other[key].mean, rel=1e-12)
                    assert value[key].m2 == pytest.approx(other[key].m2, rel=1e-12)
                else:
                    np.testing.assert_allclose(value[key], other[key], rtol=1e-12, atol=1e-12)
        elif value is None:
            assert other is None, name
        elif np.asarray(value).dtype.kind in "iub":
            assert np.array_equal(value, other), name  # counts: exactly
        else:
            np.testing.assert_allclose(value, other, rtol=1e-12, atol=1e-12, err_msg=name)


def merged_over(base, cand, order, cuts, clusters=None, count=0) -> PairSums:
    total = None
    for a, b in zip(cuts[:-1], cuts[1:]):
        rows = order[a:b]
        part = PairSums.of(base.take(rows), cand.take(rows), plan(count), IDS[rows],
                           None if clusters is None else clusters[rows])
        total = part if total is None else total.merged(part)
    assert total is not None
    return total


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("clustered", [False, True])
def test_merged_random_splits_in_any_order_equal_one_pass(seed, clustered):
    """Partitions of uneven sizes (one of a single example), in another order than the rows'."""
    rng = np.random.default_rng(seed)
    n = 2000
    base, cand = pair(n, seed)
    clusters = rng.integers(0, 40, n) if clustered else None
    count = 40 if clustered else 0
    one = PairSums.of(base, cand, plan(count), IDS[:n], clusters)
    cuts = np.unique(np.r_[0, 1, np.sort(rng.choice(n, 5, replace=False)), n])
    assert_same_state(one, merged_over(base, cand, rng.permutation(n), cuts, clusters, count))
    assert_same_state(one, pair_sums(base, cand, plan(count), IDS[:n], clusters, piece=137))


def test_moments_merge_keeps_a_small_spread_about_a_large_mean():
    """Sums of squares would lose every digit here; Chan's update keeps them."""
    rng = np.random.default_rng(3)
    values = 1e8 + rng.normal(scale=1e-3, size=10_000)
    merged = Moments.of(values[:1]).merged(Moments.of(values[1:3333])).merged(
        Moments.of(values[3333:]))
    assert merged.n == len(values)
    assert merged.m2 / (len(values) - 1) == pytest.approx(values.var(ddof=1), rel=1e-6)


@pytest.mark.parametrize("name", METRICS)
def test_paired_t_is_scipys_ttest_rel(name):
    base, cand = pair(3000, 7)
    value = per_example_values(SETTINGS)[name]
    interval = pair_sums(base, cand, plan(), IDS[:3000], piece=500).paired_t(name, 0.05)
    reference = stats.ttest_rel(value(cand), value(base))
    low, high = reference.confidence_interval(0.95)
    assert interval.delta == pytest.approx(float(np.mean(value(cand) - value(base))), rel=1e-12)
    assert interval.p_value == pytest.approx(reference.pvalue, rel=1e-9)
    assert (interval.ci_low, interval.ci_high) == pytest.approx((low, high), rel=1e-9)
    assert interval.df == 2999


def test_clustered_variance_is_the_cr1_formula_by_hand():
    rng = np.random.default_rng(11)
    n, count = 1500, 30
    base, cand = pair(n, 11)
    clusters = rng.integers(0, count, n)
    sums = pair_sums(base, cand, plan(count), IDS[:len(base)], clusters, piece=211)
    diff = cand.nll - base.nll
    centred = pd.Series(diff - diff.mean()).groupby(clusters).sum().to_numpy()
    by_hand = count / (count - 1) * float((centred ** 2).sum()) / n ** 2
    variance, df = sums.variance("nll")
    assert variance == pytest.approx(by_hand, rel=1e-10)
    assert df == count - 1
    interval = sums.paired_t("nll", 0.05)
    t = stats.t.ppf(0.975, count - 1)
    assert interval.ci_high - interval.delta == pytest.approx(t * math.sqrt(by_hand), rel=1e-9)


def test_mcnemar_counts_and_p_value_match_a_direct_count():
    base, cand = pair(2500, 5)
    sums = pair_sums(base, cand, plan(), IDS[:len(base)], piece=300)
    fixed = int((~base.correct & cand.correct).sum())
    broken = int((base.correct & ~cand.correct).sum())
    test = sums.accuracy_test(0.05)
    assert test.delta == pytest.approx((fixed - broken) / 2500, rel=1e-12)
    assert test.p_value == pytest.approx(
        stats.binomtest(fixed, fixed + broken, 0.5).pvalue, rel=1e-9)


def test_clustered_mcnemar_uses_each_clusters_flips():
    rng = np.random.default_rng(8)
    n, count = 1200, 25
    base, cand = pair(n, 8)
    clusters = rng.integers(0, count, n)
    test = pair_sums(base, cand, plan(count), IDS[:n], clusters, piece=100).accuracy_test(0.05)
    d = (pd.Series((~base.correct & cand.correct).astype(int)
                   - (base.correct & ~cand.correct).astype(int)).groupby(clusters).sum())
    chi2 = float(d.sum()) ** 2 / float((d ** 2).sum())
    assert test.p_value == pytest.approx(stats.chi2.sf(chi2, 1), rel=1e-9)


def test_tables_match_a_direct_grouping_of_the_examples():
    base, cand = pair(4000, 21)
    sums = pair_sums(base, cand, plan(), IDS[:len(base)], piece=999)
    n = len(base)
    frame = pd.DataFrame({"flip": np.array(FLIP_GROUPS)[flip_group(base, cand)],
                          "base": base.nll, "cand": cand.nll, "diff": cand.nll - base.nll})
    grouped = frame.groupby("flip")
    for row in sums.nll_by_flip():
        g = row["group"]
        assert row["count"] == len(grouped.get_group(g))
        assert row["baseline_nll"] == pytest.approx(grouped.get_group(g)["base"].mean())
        assert row["candidate_nll"] == pytest.approx(grouped.get_group(g)["cand"].mean())
        assert row["contribution"] == pytest.approx(grouped.get_group(g)["diff"].sum() / n)
    # the flip groups' contributions add up to the whole change
    assert sum(r["contribution"] for r in sums.nll_by_flip()) == pytest.approx(
        frame["diff"].mean(), rel=1e-12)

    threshold = SETTINGS.confident_wrong
    wrong = ~cand.correct & (cand.conf >= threshold)
    found = sums.confident_wrong(threshold)
    assert found["candidate_count"] == int(wrong.sum())
    assert found["baseline_count"] == int((~base.correct & (base.conf >= threshold)).sum())
    assert found["candidate_nll_share"] == pytest.approx(cand.nll[wrong].sum() / cand.nll.sum())
    assert found["contribution"] == pytest.approx(frame["diff"][wrong].sum() / n)

    group = np.asarray(CLASS_GROUP)[base.label]
    for g, row in enumerate(sums.class_groups()):
        member = group == g
        assert row["group"] == GROUP_NAMES[g] and row["examples"] == int(member.sum())
        assert row["candidate_accuracy"] == pytest.approx(cand.correct[member].mean())
        assert row["accuracy_contribution"] == pytest.approx(
            (cand.correct[member].sum() - base.correct[member].sum()) / n)
        assert row["baseline_predicted_share"] == pytest.approx(
            (np.asarray(CLASS_GROUP)[base.pred] == g).mean())


def clustered_pair(n: int, seed: int, count: int, clustered: bool):
    """A pair, its clusters (or None) and its sums, gathered in pieces."""
    rng = np.random.default_rng(seed)
    base, cand = pair(n, seed)
    clusters = rng.integers(0, count, n) if clustered else None
    sums = pair_sums(base, cand, plan(count if clustered else 0), IDS[:n], clusters,
                     piece=700)
    return base, cand, clusters, sums


@pytest.mark.parametrize("clustered", [False, True])
def test_flip_intervals_equal_those_from_the_examples(clustered):
    """The merged sums give the intervals that the per-example computation gives."""
    base, cand, clusters, sums = clustered_pair(3000, 4, 50, clustered)
    low, high = sums.flip_intervals(0.05)
    ref_low, ref_high = contribution_intervals(cand.nll - base.nll, flip_group(base, cand),
                                               len(FLIP_GROUPS), 0.05, clusters)
    np.testing.assert_allclose(low, ref_low, rtol=1e-9)
    np.testing.assert_allclose(high, ref_high, rtol=1e-9)


def test_ranked_bins_and_classes_match_a_direct_grouping():
    base, cand = pair(3000, 31)
    n, bins = len(base), SETTINGS.ece_bins
    sums = pair_sums(base, cand, plan(), IDS[:n], piece=450)
    frame = pd.DataFrame({"label": base.label, "diff": cand.nll - base.nll,
                          "bin": np.clip(np.ceil(base.conf * bins).astype(int) - 1, 0, bins - 1),
                          "base_hit": base.correct, "cand_hit": cand.correct})
    by_bin = frame.groupby("bin").sum().reindex(range(bins), fill_value=0)
    np.testing.assert_allclose(sums.bin_diff, by_bin["diff"], rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(sums.bin_count, frame.groupby("bin").size().reindex(
        range(bins), fill_value=0))
    np.testing.assert_array_equal(sums.bin_hits, [by_bin["base_hit"], by_bin["cand_hit"]])
    by_class = frame.groupby("label")["diff"].sum().reindex(range(K), fill_value=0)
    np.testing.assert_allclose(sums.class_diff, by_class, rtol=1e-12, atol=1e-12)


def test_worst_examples_are_the_largest_rises_ties_by_id_over_any_split():
    rng = np.random.default_rng(2)
    n, top = 2000, 10
    base, cand = pair(n, 2)
    cand.nll[rng.choice(n, 40, replace=False)] = base.nll.max() + 50.0  # rises tied...
    rise = cand.nll - base.nll
    ids = rng.permutation(n) * 7  # ...broken by id, which is not the row order
    expected = sorted((i for i in range(n) if rise[i] > 0), key=lambda i: (-rise[i], ids[i]))
    order = rng.permutation(n)
    cuts = np.unique(np.r_[0, np.sort(rng.choice(n, 6, replace=False)), n])
    worst = None
    for a, b in zip(cuts[:-1], cuts[1:]):
        rows = order[a:b]
        part = WorstExamples.of(base.take(rows), cand.take(rows), rise[rows], ids[rows], top)
        worst = part if worst is None else worst.merged(part)
    assert worst is not None
    np.testing.assert_array_equal(worst.ids, ids[expected[:top]])
    np.testing.assert_array_equal(worst.rise, rise[expected[:top]])
    np.testing.assert_array_equal(worst.columns["candidate_pred"], cand.pred[expected[:top]])
    text_ids = np.array([f"ex-{i}" for i in ids], dtype=object)  # text ids sort as text
    by_text = sorted((i for i in range(n) if rise[i] > 0), key=lambda i: (-rise[i], text_ids[i]))
    text = WorstExamples.of(base, cand, rise, text_ids, top)
    assert list(text.ids) == list(text_ids[by_text[:top]])


@pytest.mark.parametrize("clustered", [False, True])
def test_class_intervals_equal_those_from_the_examples(clustered):
    n = 3000
    base, cand, clusters, sums = clustered_pair(n, 9, 60, clustered)
    low, high = sums.class_intervals("attributed", 0.05)
    ref_low, ref_high = contribution_intervals(cand.nll - base.nll, base.label, K, 0.05,
                                               clusters)
    np.testing.assert_allclose(low, ref_low, rtol=1e-9)
    np.testing.assert_allclose(high, ref_high, rtol=1e-9)
    support = np.bincount(base.label, minlength=K)
    scale = n / (support * K)
    acc = cand.correct.astype(np.float64) - base.correct
    low, high = sums.class_intervals("accuracy", 0.05, scale)
    ref_low, ref_high = contribution_intervals(acc * scale[base.label], base.label, K, 0.05,
                                               clusters)
    np.testing.assert_allclose(low, ref_low, rtol=1e-9)
    np.testing.assert_allclose(high, ref_high, rtol=1e-9)


def test_slice_sums_merge_value_by_value_and_rank_as_a_direct_grouping():
    from metricdiff.ranking import slice_rows

    rng = np.random.default_rng(6)
    n = 2500
    base, cand = pair(n, 6)
    values = {"source": rng.choice(["web", "app", "partner"], n, p=[.5, .3, .2])}
    sums = pair_sums(base, cand, plan(), IDS[:n], piece=333, slices=values)
    one = PairSums.of(base, cand, plan(), IDS[:n], None, values)
    np.testing.assert_array_equal(sums.slices["source"].keys, one.slices["source"].keys)
    np.testing.assert_allclose(sums.slices["source"].sums, one.slices["source"].sums,
                               rtol=1e-12)
    table = slice_rows(sums.slices["source"], n, "nll", limit=2)
    frame = pd.DataFrame({"value": values["source"], "diff": cand.nll - base.nll,
                          "hit": cand.correct})
    contribution = frame.groupby("value")["diff"].sum() / n
    top = contribution.abs().sort_values(ascending=False).index[:2]
    assert [row["value"] for row in table["rows"]] == list(top)
    for row in table["rows"]:
        group = frame[frame["value"] == row["value"]]
        assert row["n"] == len(group)
        assert row["contribution"] == pytest.approx(contribution[row["value"]], rel=1e-12)
        assert row["candidate_accuracy"] == pytest.approx(group["hit"].mean(), rel=1e-12)
