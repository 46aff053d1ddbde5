"""GroupSums, the mergeable state of two groups of runs: merged over any split of the aligned
examples, in any order, and from parts lined up part by part or joined on id, it gives the
figures of one pass; and those figures equal direct computations over the runs' matrices
(the difference of group means, the seeds x examples variance by hand, per-class and per-bin
groupings, the largest rise of the mean NLL)."""

from __future__ import annotations

import numpy as np
import pytest

from metricdiff.groupsums import (GroupPlan, GroupSums, group_sums, held_group_sums,
                                  joined_group_sums)
from metricdiff.metrics import MetricSettings
from metricdiff.orderstats import LocalParts
from metricdiff.paired import per_example_values
from metricdiff.perexample import PerExample
from metricdiff.seeds import crossed_class_test, crossed_mean_interval
from test_pairsums import K, SETTINGS, run

METRICS = tuple(per_example_values(SETTINGS))
N = 1500
IDS = np.arange(N) * 7 + 3


def groups(seed: int, runs: int = 3) -> tuple[list[PerExample], list[PerExample]]:
    made = [run(N, seed * 100 + r) for r in range(2 * runs)]
    for pe in made[1:]:
        pe.label = made[0].label  # the same examples
    return made[:runs], made[runs:]


def plan(paired: bool = False, clusters: int = 0, runs: int = 3) -> GroupPlan:
    return GroupPlan(METRICS, SETTINGS, K, runs, paired, clusters, top=7)


def figures(sums: GroupSums, paired: bool) -> dict:
    """Every number a comparison reads from the sums."""
    found: dict = {"n": sums.n, "class_diff": sums.class_diff, "bin_count": sums.bin_count,
                   "bin_hits": sums.bin_hits, "bin_diff": sums.bin_diff,
                   "worst_ids": sums.worst.ids, "worst_rise": sums.worst.rise}
    for name, crossed in sums.means.items():
        interval = crossed_mean_interval(crossed, 0.05, paired)
        found[name] = (interval.delta, interval.ci_low, interval.ci_high, interval.p_value,
                       interval.df)
        found[f"{name}_design"] = sums.design_effect(name)
    for name, crossed in sums.classes.items():
        found[f"class_{name}"] = crossed_class_test(crossed, 0.05)
    for col, values in sums.slices.items():
        found[f"slice_{col}"] = (values.keys, values.sums)
    return found


def assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for name in a:
        left, right = a[name], b[name]
        if isinstance(left, tuple) and left and isinstance(left[0], np.ndarray) \
                and left[0].dtype.kind == "U":
            assert np.array_equal(left[0], right[0]), name
            np.testing.assert_allclose(left[1], right[1], rtol=1e-10, err_msg=name)
        elif np.asarray(left).dtype.kind in "iu":
            assert np.array_equal(left, right), name  # counts and ids: exactly
        else:
            np.testing.assert_allclose(np.asarray(left, dtype=float),
                                       np.asarray(right, dtype=float), rtol=1e-9, atol=1e-12,
                                       equal_nan=True, err_msg=name)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("paired", [False, True])
@pytest.mark.parametrize("clustered", [False, True])
def test_merged_random_splits_in_any_order_equal_one_pass(seed, paired, clustered):
    rng = np.random.default_rng(seed)
    bases, cands = groups(seed)
    clusters = rng.integers(0, 60, N) if clustered else None
    count = 60 if clustered else 0
    slices = {"source": np.array(["a", "b", "c", "d"])[rng.integers(0, 4, N)]}
    one = GroupSums.of(bases, cands, plan(paired, count), IDS, clusters, slices)
    order = rng.permutation(N)
    cuts = np.unique(np.r_[0, 1, np.sort(rng.choice(N, 5, replace=False)), N])
    total = None
    for a, b in zip(cuts[:-1], cuts[1:]):
        rows = order[a:b]
        part = GroupSums.of([pe.take(rows) for pe in bases], [pe.take(rows) for pe in cands],
                            plan(paired, count), IDS[rows],
                            None if clusters is None else clusters[rows],
                            {"source": slices["source"][rows]})
        total = part if total is None else total.merged(part)
    assert total is not None
    assert_same(figures(one, paired), figures(total, paired))
    assert_same(figures(one, paired),
                figures(group_sums(bases, cands, plan(paired, count), IDS, clusters, piece=211,
                                   slices=slices), paired))


def test_the_mean_test_is_the_variance_components_by_hand():
    """Two groups of three runs, independent examples: Var = s^2(diff)/n + seed parts
    (S^2 - W)+ / m per group, W the runs' deviations' sampling variance pooled; the
    Satterthwaite df of that sum."""
    from scipy import stats

    bases, cands = groups(7)
    cands[1].nll = cands[1].nll + 0.05  # a seed effect, so that a seed part is estimated
    sums = group_sums(bases, cands, plan(), IDS)
    base = np.stack([pe.nll for pe in bases])
    cand = np.stack([pe.nll for pe in cands])
    diff = cand.mean(axis=0) - base.mean(axis=0)
    example_var = diff.var(ddof=1) / N
    terms, parts = [example_var ** 2 / (N - 1)], [example_var]
    for values in (base, cand):
        between = values.mean(axis=1).var(ddof=1)
        within = sum((row - values.mean(axis=0)).var(ddof=1) / N for row in values) / 2
        part = max(0.0, between - within) / 3
        parts.append(part)
        if part > 0:
            terms.append((between / 3) ** 2 / 2)
    variance = sum(parts)
    df = variance ** 2 / sum(terms)
    interval = crossed_mean_interval(sums.means["nll"], 0.05, False)
    assert interval.delta == pytest.approx(diff.mean(), rel=1e-12)
    assert interval.se == pytest.approx(np.sqrt(variance), rel=1e-9)
    assert interval.df == pytest.approx(df, rel=1e-9)
    t = diff.mean() / np.sqrt(variance)
    assert interval.p_value == pytest.approx(2 * stats.t.sf(abs(t), df), rel=1e-8)
    assert parts[2] > 0  # the seed effect was seen


def test_ranked_sums_match_a_direct_grouping_of_the_group_means():
    bases, cands = groups(3)
    sums = group_sums(bases, cands, plan(), IDS)
    attributed = (np.mean([pe.nll for pe in cands], axis=0)
                  - np.mean([pe.nll for pe in bases], axis=0))
    label = bases[0].label
    np.testing.assert_allclose(sums.class_diff,
                               [attributed[label == k].sum() for k in range(K)], rtol=1e-10)
    conf = np.mean([pe.conf for pe in bases], axis=0)
    which = np.minimum((conf * SETTINGS.ece_bins).astype(int), SETTINGS.ece_bins - 1)
    assert np.array_equal(sums.bin_count, np.bincount(which, minlength=SETTINGS.ece_bins))
    hits = np.mean([pe.correct for pe in cands], axis=0)
    np.testing.assert_allclose(sums.bin_hits[1],
                               np.bincount(which, weights=hits, minlength=SETTINGS.ece_bins))
    rise = attributed  # the attributed metric is the NLL: the same rise
    assert sums.worst.ids[0] == IDS[np.argmax(rise)]
    assert sums.worst.rise[0] == pytest.approx(rise.max())
    assert np.all(np.diff(sums.worst.rise) <= 0) and len(sums.worst.ids) == 7


def test_parts_lined_up_or_joined_give_the_sums_of_one_pass():
    """The runs cut into the same parts: each part lines up its own rows; the candidates'
    rows in another order: held_group_sums says so (None), and the join on id gives them."""
    bases, cands = groups(5)
    runs = bases + cands
    one = group_sums(bases, cands, plan(), IDS)
    cuts = [0, 400, 401, 1100, N]

    def in_parts(pe: PerExample, order: np.ndarray) -> tuple[LocalParts, LocalParts]:
        pieces = [order[a:b] for a, b in zip(cuts[:-1], cuts[1:])]
        return (LocalParts([pe.take(rows) for rows in pieces]),
                LocalParts([(IDS[rows], pe.label[rows]) for rows in pieces]))

    same = [in_parts(pe, np.arange(N)) for pe in runs]
    slices = LocalParts([{} for _ in cuts[:-1]])
    held = held_group_sums([p for p, _ in same], [k for _, k in same], slices, plan())
    assert held is not None
    assert_same(figures(one, False), figures(held, False))
    order = np.random.default_rng(1).permutation(N)
    other = same[:3] + [in_parts(pe, order) for pe in cands]
    parts, keys = [p for p, _ in other], [k for _, k in other]
    assert held_group_sums(parts, keys, slices, plan()) is None
    assert_same(figures(one, False), figures(joined_group_sums(parts, keys, slices, plan()),
                                             False))


def test_a_key_list_of_other_runs_keeps_the_common_examples_alone():
    """Where another run holds part of the examples, the join keeps those every run holds."""
    bases, cands = groups(6, runs=1)
    kept = np.sort(np.random.default_rng(2).choice(N, 900, replace=False))
    one = group_sums([pe.take(kept) for pe in bases], [pe.take(kept) for pe in cands],
                     plan(runs=1), IDS[kept])
    whole = [(LocalParts([pe]), LocalParts([(IDS, pe.label)])) for pe in bases + cands]
    joined = joined_group_sums([p for p, _ in whole], [k for _, k in whole],
                               LocalParts([{}]), plan(runs=1),
                               common=[LocalParts([(IDS[kept], bases[0].label[kept])])])
    assert joined.n == 900
    assert_same(figures(one, False), figures(joined, False))


def test_settings_reach_the_sums():
    bases, cands = groups(8)
    top3 = MetricSettings(top_k=3)
    sums = group_sums(bases, cands, GroupPlan(("top3_accuracy",), top3, K, 3), IDS)
    expected = (np.mean([pe.rank < 3 for pe in cands], axis=0)
                - np.mean([pe.rank < 3 for pe in bases], axis=0)).mean()
    assert crossed_mean_interval(sums.means["top3_accuracy"], 0.05,
                                 False).delta == pytest.approx(expected)
