"""The mergeable state of one baseline-candidate pair of runs over their aligned examples.

A pair's paired tests (the paired t of every per-example mean, McNemar's test of accuracy) and
the explanation's tables (NLL change by flip group with its intervals, the confidently wrong,
the head / torso / tail classes) are functions of sums over the examples. PairSums gathers
those sums from aligned per-example columns, and the sums of two sets of examples merge into
those of their union (metrics.Mergeable), so a pair is measured the same from one piece or
from many: batches here, partitions on a cluster. Every figure is computed from the sums
alone, in one place.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Protocol

import numpy as np

from .metrics import (GROUP_NAMES, CellSums, GroupMoments, Mergeable, MetricSettings, Moments,
                      equal_width_bin, merged_in_order, ratio, summed_per_key)
from .paired import (METHOD_T, METHOD_T_CLUSTERED, NOISE_CLUSTERS, NOISE_EXAMPLES, Interval,
                     clustered_mcnemar, clustered_variance, contribution_interval_from_sums,
                     mcnemar, per_example_values, t_test)
from .orderstats import Parts
from .perexample import PerExample

# the flip groups, in the order of the explanation's rows
FLIP_GROUPS = ("both_correct", "both_wrong", "fixed", "broken")
FIXED, BROKEN = FLIP_GROUPS.index("fixed"), FLIP_GROUPS.index("broken")


@dataclass(frozen=True)
class PairPlan:
    """What a pair's sums depend on besides the examples, fixed before they are gathered."""

    metrics: tuple[str, ...]  # the per-example means whose differences are tested
    settings: MetricSettings  # top_k, and the confidence of the "confidently wrong"
    class_group: tuple[int, ...]  # head / torso / tail index of each class (the baseline's)
    clusters: int = 0  # with clustered examples, how many clusters; 0: independent examples
    attributed: str = "nll"  # the per-example mean whose change is split over groups
    top: int = 10  # the examples kept whose NLL rose the most

    @property
    def num_classes(self) -> int:
        return len(self.class_group)


def flip_group(base: PerExample, cand: PerExample) -> np.ndarray:
    """Each example's flip group, an index into FLIP_GROUPS."""
    b, c = base.correct, cand.correct
    return np.where(b, np.where(c, 0, 3), np.where(c, 2, 1))


@dataclass(frozen=True)
class PairSums(Mergeable):
    """Sums over a pair's aligned examples. Arrays per flip group have FLIP_GROUPS' order,
    per class group GROUP_NAMES'; `*_by_cluster` (clusters x ...) only with clusters."""

    n: int
    diffs: dict  # metric -> Moments of the candidate's minus the baseline's value
    diff_by_cluster: dict | None  # metric -> sum of those differences in each cluster
    cluster_sizes: np.ndarray | None
    flip_count: np.ndarray
    flip_base_nll: np.ndarray  # sum of the baseline's NLL in each flip group
    flip_cand_nll: np.ndarray
    flip_nll_diff: np.ndarray  # sum of the NLL change
    flip_nll_diff_sq: np.ndarray  # sum of its square (the contributions' intervals)
    flip_by_cluster: np.ndarray | None  # (clusters, groups): examples of each group
    flip_nll_by_cluster: np.ndarray | None  # (clusters, groups): NLL change summed
    nll_total: np.ndarray  # (baseline, candidate) NLL summed over every example
    wrong_confident: np.ndarray  # (baseline, candidate) wrong at confidence >= threshold
    wrong_confident_nll: np.ndarray  # their NLLs summed, each run's own
    wrong_confident_diff: np.ndarray  # NLL change summed over the candidate's
    group_examples: np.ndarray  # per class group (of the true class)
    group_hits: np.ndarray  # (2, groups): correct predictions of baseline, candidate
    group_predicted: np.ndarray  # (2, groups): predictions of a class in the group
    group_nll_diff: np.ndarray
    class_count: np.ndarray  # per true class (every field class_*)
    class_diff: np.ndarray  # the attributed metric's change summed, and its square's
    class_diff_sq: np.ndarray
    class_acc_diff: np.ndarray  # the correctness change summed, and its square's
    class_acc_diff_sq: np.ndarray
    class_fixed: np.ndarray  # examples the candidate fixed, and broke, per true class
    class_broken: np.ndarray
    class_acc: GroupMoments  # of the correctness change within each class
    class_nll: GroupMoments  # of the NLL change within each class
    class_cells: CellSums | None  # with clusters, per (class, cluster): CELL_COLUMNS
    bin_count: np.ndarray  # per equal-width bin of the baseline's confidence (every bin_*)
    bin_hits: np.ndarray  # (2, bins): correct predictions of baseline, candidate
    bin_diff: np.ndarray  # the attributed metric's change summed
    worst: "WorstExamples"
    slices: dict  # slice column -> ValueSums of SLICE_COLUMNS per value

    @staticmethod
    def of(base: PerExample, cand: PerExample, plan: PairPlan, ids: np.ndarray,
           clusters: np.ndarray | None = None,
           slices: dict[str, np.ndarray] | None = None) -> "PairSums":
        """`ids`: the examples' ids (row numbers where runs have none), which break ties
        among the worst examples as the alignment's order does. `clusters`: each example's
        cluster index (0 .. plan.clusters - 1), with clusters. `slices`: each slice
        column's values of the examples."""
        groups, count = len(FLIP_GROUPS), plan.clusters
        flip = flip_group(base, cand)
        with np.errstate(invalid="ignore"):  # an infinite NLL on both sides: a NaN change
            nll_diff = cand.nll - base.nll
        values = per_example_values(plan.settings)
        diffs = {name: values[name](cand) - values[name](base) for name in plan.metrics}
        with np.errstate(invalid="ignore"):
            attributed = values[plan.attributed](cand) - values[plan.attributed](base)
        acc_diff = cand.correct.astype(np.float64) - base.correct

        def per_flip(weights=None) -> np.ndarray:
            return np.bincount(flip, weights=weights, minlength=groups)

        by_cluster = sizes = cells = cell_nll = None
        if clusters is not None:
            by_cluster = {name: np.bincount(clusters, weights=diff, minlength=count)
                          for name, diff in diffs.items()}
            sizes = np.bincount(clusters, minlength=count)
            cell = clusters.astype(np.int64) * groups + flip
            cells = np.bincount(cell, minlength=count * groups).reshape(count, groups)
            cell_nll = np.bincount(cell, weights=nll_diff,
                                   minlength=count * groups).reshape(count, groups)
        wrong = np.stack([~pe.correct & (pe.conf >= plan.settings.confident_wrong)
                          for pe in (base, cand)])
        class_group = np.asarray(plan.class_group, dtype=np.int64)
        example_group = class_group[base.label]
        size = len(GROUP_NAMES)

        def per_group(keys: np.ndarray, weights=None) -> np.ndarray:
            return np.bincount(keys, weights=weights, minlength=size)

        return PairSums(
            n=len(base), diffs={name: Moments.of(diff) for name, diff in diffs.items()},
            diff_by_cluster=by_cluster, cluster_sizes=sizes,
            flip_count=per_flip(), flip_base_nll=per_flip(base.nll),
            flip_cand_nll=per_flip(cand.nll), flip_nll_diff=per_flip(nll_diff),
            flip_nll_diff_sq=per_flip(nll_diff * nll_diff),
            flip_by_cluster=cells, flip_nll_by_cluster=cell_nll,
            nll_total=np.array([base.nll.sum(), cand.nll.sum()]),
            wrong_confident=wrong.sum(axis=1),
            wrong_confident_nll=np.array([base.nll[wrong[0]].sum(), cand.nll[wrong[1]].sum()]),
            wrong_confident_diff=np.array(nll_diff[wrong[1]].sum()),
            group_examples=per_group(example_group),
            group_hits=np.stack([per_group(example_group, pe.correct) for pe in (base, cand)]),
            group_predicted=np.stack([per_group(class_group[pe.pred]) for pe in (base, cand)]),
            group_nll_diff=per_group(example_group, nll_diff),
            **_class_sums(base.label, attributed, acc_diff, nll_diff, flip, plan, clusters),
            **bin_sums(base, cand, attributed, plan.settings.ece_bins),
            worst=WorstExamples.of(base, cand, nll_diff, ids, plan.top),
            slices=slice_sums(slices or {}, attributed, base, cand))

    @property
    def clustered(self) -> bool:
        return self.cluster_sizes is not None

    def variance(self, name: str) -> tuple[float, int]:
        """The sampling variance of the mean change of a metric, and its df: over examples,
        or cluster-robust with clusters."""
        moments = self.diffs[name]
        if self.diff_by_cluster is None:
            return moments.variance_of_mean()
        assert self.cluster_sizes is not None
        return clustered_variance(self.diff_by_cluster[name], self.cluster_sizes, moments)

    def independent_variance(self, name: str) -> float:
        """The sampling variance of the mean change as if the examples were independent."""
        return self.diffs[name].variance_of_mean()[0]

    def paired_t(self, name: str, alpha: float) -> Interval:
        """Interval and two-sided p-value of the mean change of a metric, as scipy's
        ttest_rel; with clusters, the cluster-robust variance on C - 1 df."""
        moments = self.diffs[name]
        delta = moments.mean if moments.n else float("nan")
        variance, df = self.variance(name)
        noise = (NOISE_CLUSTERS,) if self.clustered else (NOISE_EXAMPLES,)
        method = METHOD_T_CLUSTERED if self.clustered else METHOD_T
        if df < 1:  # one example (or one cluster): nothing to test against
            return Interval(delta, None, None, None, method, noise=noise)
        se = float(np.sqrt(variance))
        low, high, p_value = t_test(delta, se, df, alpha)
        return Interval(delta, float(low), float(high), float(p_value), method, df, se, noise)

    def accuracy_test(self, alpha: float) -> Interval:
        """McNemar's exact test of the accuracy change, or the clustered McNemar test."""
        if self.flip_by_cluster is None:
            return mcnemar(int(self.flip_count[FIXED]), int(self.flip_count[BROKEN]), self.n,
                           alpha)
        return clustered_mcnemar(self.flip_by_cluster[:, FIXED],
                                 self.flip_by_cluster[:, BROKEN], self.n, alpha)

    def nll_by_flip(self) -> list[dict]:
        """How the mean NLL change splits over the flip groups: each group's summed change
        over all n, so the contributions add up to the whole change."""
        total = self.flip_nll_diff.sum() / self.n
        rows = []
        for g, name in enumerate(FLIP_GROUPS):
            count = int(self.flip_count[g])
            contribution = float(self.flip_nll_diff[g] / self.n)
            rows.append({
                "group": name, "count": count,
                "baseline_nll": float(self.flip_base_nll[g] / count) if count else None,
                "candidate_nll": float(self.flip_cand_nll[g] / count) if count else None,
                "contribution": contribution, "share": ratio(contribution, total)})
        return rows

    def flip_intervals(self, alpha: float) -> tuple[np.ndarray, np.ndarray]:
        """The t interval of each flip group's contribution to the NLL change."""
        if self.flip_nll_by_cluster is None:
            return contribution_interval_from_sums(self.flip_nll_diff, self.n, alpha,
                                                   self.flip_nll_diff_sq)
        assert self.cluster_sizes is not None
        cells = self.flip_nll_by_cluster
        sizes = self.cluster_sizes.astype(np.float64)
        return contribution_interval_from_sums(
            self.flip_nll_diff, self.n, alpha, (cells * cells).sum(axis=0),
            clustered=(cells.T @ sizes, float(np.dot(sizes, sizes)), len(sizes)))

    def class_intervals(self, diff: str, alpha: float,
                        scale: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The t interval of each class's contribution to a change: of the attributed metric
        (`diff` "attributed"), or of accuracy ("accuracy"), each class's share of it then
        multiplied by `scale` (the balanced accuracy's n / (support x classes))."""
        sums, squares = ((self.class_diff, self.class_diff_sq) if diff == "attributed"
                         else (self.class_acc_diff, self.class_acc_diff_sq))
        if scale is None:
            scale = np.ones(len(sums))
        sums, squares = sums * scale, squares * scale * scale
        if self.class_cells is None:
            return contribution_interval_from_sums(sums, self.n, alpha, squares)
        assert self.cluster_sizes is not None
        cells = self.class_cells
        column = 0 if diff == "attributed" else 1
        cell_sums = cells.sums[:, column] * scale[cells.owner]
        sizes = self.cluster_sizes.astype(np.float64)
        size = len(sums)
        return contribution_interval_from_sums(
            sums, self.n, alpha,
            np.bincount(cells.owner, weights=cell_sums * cell_sums, minlength=size),
            clustered=(np.bincount(cells.owner, weights=cell_sums * sizes[cells.member],
                                   minlength=size), float(np.dot(sizes, sizes)), len(sizes)))

    def class_mean_test(self, change: str) -> tuple[np.ndarray, np.ndarray]:
        """Each class's mean change of correctness ("accuracy") or of NLL ("nll") and the
        p-value of its t test: over examples, or cluster-robust with clusters; NaN for a
        class with fewer than two examples (or clusters)."""
        from .seeds import crossed_variance  # the one-pair case of the groups' variance

        moments = self.class_acc if change == "accuracy" else self.class_nll
        if self.class_cells is None:
            variance, df = moments.variance_of_means()
        else:
            cells = self.class_cells
            variance, df = moments.clustered_variance_of_means(
                cells.owner, cells.sums[:, CELL_COLUMNS.index(change)],
                cells.sums[:, CELL_COLUMNS.index("examples")])
        with np.errstate(invalid="ignore"):
            delta = np.where(moments.n > 0, moments.mean, np.nan)
        total, crossed_df, _ = crossed_variance(variance, df, [])
        _, _, p_value = t_test(delta, np.sqrt(total), np.where(df > 0, crossed_df, 0), 0.05)
        return delta, p_value

    def design_effect(self, name: str) -> float | None:
        """The clustered over the independent sampling variance of a metric's mean change."""
        clustered, independent = self.variance(name)[0], self.independent_variance(name)
        return clustered / independent if independent > 0 else None

    def confident_wrong(self, threshold: float) -> dict:
        """The examples each run gets wrong at a confidence of `threshold` or more."""
        total = self.flip_nll_diff.sum() / self.n
        contribution = float(self.wrong_confident_diff / self.n)
        return {"threshold": threshold, "baseline_count": int(self.wrong_confident[0]),
                "candidate_count": int(self.wrong_confident[1]),
                "baseline_nll_share": ratio(self.wrong_confident_nll[0], self.nll_total[0]),
                "candidate_nll_share": ratio(self.wrong_confident_nll[1], self.nll_total[1]),
                "contribution": contribution, "share": ratio(contribution, total)}

    def class_groups(self) -> list[dict]:
        """Contributions of head / torso / tail classes (by baseline support) to the changes
        of accuracy and of NLL."""
        n = self.n
        acc_parts = (self.group_hits[1] - self.group_hits[0]) / n
        nll_parts = self.group_nll_diff / n
        total_acc, total_nll = acc_parts.sum(), nll_parts.sum()
        predicted = self.group_predicted / n
        rows = []
        for g, name in enumerate(GROUP_NAMES):
            count = int(self.group_examples[g])
            rows.append({
                "group": name, "examples": count,
                "baseline_accuracy": float(self.group_hits[0, g] / count) if count else None,
                "candidate_accuracy": float(self.group_hits[1, g] / count) if count else None,
                "baseline_predicted_share": float(predicted[0, g]),
                "candidate_predicted_share": float(predicted[1, g]),
                "accuracy_contribution": float(acc_parts[g]),
                "accuracy_share": ratio(acc_parts[g], total_acc),
                "nll_contribution": float(nll_parts[g]),
                "nll_share": ratio(nll_parts[g], total_nll)})
        return rows


def pair_sums(base: PerExample, cand: PerExample, plan: PairPlan, ids: np.ndarray,
              clusters: np.ndarray | None = None, piece: int = 1 << 20,
              slices: dict[str, np.ndarray] | None = None) -> PairSums:
    """A pair's sums over aligned columns, gathered `piece` examples at a time and merged in
    order: the way a cluster's partitions are merged, and a bounded scratch memory."""
    total = None
    for start in range(0, max(len(base), 1), piece):
        rows = slice(start, start + piece)
        sums = PairSums.of(rows_of(base, rows), rows_of(cand, rows), plan, ids[rows],
                           None if clusters is None else clusters[rows],
                           {col: values[rows] for col, values in (slices or {}).items()})
        total = sums if total is None else total.merged(sums)
    assert total is not None
    return total


def held_pair_sums(parts: list[Parts], keys: list[Parts], slice_parts: Parts, plan: PairPlan,
                   clusters: Parts | None = None) -> PairSums | None:
    """A pair's sums computed where its parts are held, when the two runs are cut into the
    same parts holding the same examples in the same order (co-partitioned: the same eval
    set written the same way): each part pairs its own rows, and the parts' sums merge in
    row order. None where a part of one run holds other examples than the other's: then
    the runs must be lined up first. `parts`, `keys`: the baseline's, then the
    candidate's; `clusters`: each part's cluster indices, if any."""
    (base_parts, cand_parts), (base_keys, cand_keys) = parts, keys
    found = base_parts.map_with(_part_pair_sums, [cand_parts, base_keys, cand_keys,
                                                  slice_parts, *given(clusters)],
                                plan).gather()
    if any(part is None for part in found):
        return None
    return merged_in_order(found)


def given(clusters: Parts | None) -> list[Parts]:
    return [] if clusters is None else [clusters]


def _part_pair_sums(base: PerExample, cand: PerExample, base_keys: tuple, cand_keys: tuple,
                    slices: dict, *rest) -> PairSums | None:
    """One part's pair sums, or None when the two runs' parts hold other examples. `rest`:
    the part's cluster indices, if any, then the PairPlan."""
    *clusters, plan = rest
    (base_ids, _), (cand_ids, _) = base_keys, cand_keys
    if not np.array_equal(base_ids, cand_ids):
        return None
    if not np.array_equal(base.label, cand.label):
        return None  # the lining up reports such a run with its one-line error
    return PairSums.of(base, cand, plan, base_ids, clusters[0] if clusters else None, slices)


def joined_pair_sums(parts: list[Parts], keys: list[Parts], slice_parts: Parts, plan: PairPlan,
                     clusters: Parts | None = None,
                     common: list[Parts] | None = None) -> PairSums:
    """A pair's sums where the two runs' parts hold their examples in other orders or
    splits, or where some run is compared on part of its examples: the runs joined on their
    ids (joined_runs), each joined part's sums merged in order."""
    return merged_in_order(joined_runs(parts, keys, slice_parts, clusters, ["b_", "c_"], common)
                           .map(_table_pair_sums, plan).gather())


def joined_runs(parts: list[Parts], keys: list[Parts], slice_parts: Parts,
                clusters: Parts | None, prefixes: list[str],
                common: list[Parts] | None = None) -> Parts:
    """Runs' parts as tables keyed by id (or row number), each run's columns under its
    prefix, the first run's slice values and cluster indices with them, joined on the key
    by the engine (Dask's shuffle, on a cluster): the examples every run holds, and every
    one of `common` (the keys of the comparison's other runs, where some run is compared on
    part of its examples)."""
    tables = [run.map_with(keyed_table, [run_keys, *([slice_parts, *given(clusters)]
                                                    if i == 0 else [])], prefix)
              for i, (run, run_keys, prefix) in enumerate(zip(parts, keys, prefixes))]
    tables += [other.map(_key_table) for other in common or []]
    joined = tables[0]
    for table in tables[1:]:
        joined = joined.merged(table, on="key")
    return joined


def _key_table(keys: tuple):
    import pandas as pd

    return pd.DataFrame({"key": keys[0]})


def keyed_table(examples: PerExample, keys: tuple, *rest):
    """A part's per-example columns as a table, `prefix` before their names, keyed by id.
    `rest`: the part's slice values and its cluster indices where given, then the prefix."""
    import pandas as pd

    *extra, prefix = rest
    slices = extra[0] if extra else {}
    key, _ = keys
    table = pd.DataFrame({f"{prefix}{f.name}": np.asarray(getattr(examples, f.name))
                          for f in fields(PerExample)})
    for col, values in slices.items():
        table[f"slice_{col}"] = np.asarray(values)
    if len(extra) > 1:
        table["cluster"] = extra[1]
    table.insert(0, "key", key)
    return table


def _table_pair_sums(table, plan: PairPlan) -> PairSums:
    (base, cand), ids, clusters, slices = runs_of_table(table, ["b_", "c_"])
    return PairSums.of(base, cand, plan, ids, clusters, slices)


def runs_of_table(table, prefixes: list[str]) -> tuple[list[PerExample], np.ndarray,
                                                       np.ndarray | None, dict]:
    """A joined table of keyed_table's back in columns: each run's examples (by the prefix
    of its columns), the keys, the cluster indices (if any) and the slice values."""
    def run(prefix: str) -> PerExample:
        return PerExample(**{f.name: table[f"{prefix}{f.name}"].to_numpy()
                             for f in fields(PerExample)})

    slices = {name[len("slice_"):]: table[name].to_numpy() for name in table.columns
              if name.startswith("slice_")}
    clusters = table["cluster"].to_numpy() if "cluster" in table.columns else None
    return [run(prefix) for prefix in prefixes], table["key"].to_numpy(), clusters, slices


def rows_of(pe: PerExample, rows: slice) -> PerExample:
    if rows.start == 0 and rows.stop >= len(pe):
        return pe
    return pe.take(np.arange(len(pe))[rows])


# the sums of each value of a slice column: examples, the attributed change, each run's hits
# and NLL
SLICE_COLUMNS = ("examples", "attributed", "baseline_hits", "candidate_hits", "baseline_nll",
                 "candidate_nll")


@dataclass(frozen=True)
class ValueSums(Mergeable):
    """Sums of some columns per distinct value (text, ascending) of a column of the
    examples: those of two sets of examples merge value by value."""

    keys: np.ndarray
    sums: np.ndarray  # (values, columns)

    @staticmethod
    def of(values: np.ndarray, columns: np.ndarray) -> "ValueSums":
        keys, value = np.unique(np.asarray(values).astype(str), return_inverse=True)
        return ValueSums(keys, summed_per_key(value, columns, len(keys)))

    def merged(self, other: "ValueSums") -> "ValueSums":
        keys, index = np.unique(np.r_[self.keys, other.keys], return_inverse=True)
        return ValueSums(keys, summed_per_key(index, np.r_[self.sums, other.sums], len(keys)))


# the sums of each (class, cluster) cell: the attributed change, the correctness change, the
# NLL change, and the examples
CELL_COLUMNS = ("attributed", "accuracy", "nll", "examples")


def _class_sums(label: np.ndarray, attributed: np.ndarray, acc_diff: np.ndarray,
                nll_diff: np.ndarray, flip: np.ndarray, plan: PairPlan,
                clusters: np.ndarray | None) -> dict:
    size = plan.num_classes

    def per_class(weights=None) -> np.ndarray:
        return np.bincount(label, weights=weights, minlength=size)

    with np.errstate(invalid="ignore"):
        squares = attributed * attributed
    return {"class_count": per_class(), "class_diff": per_class(attributed),
            "class_diff_sq": per_class(squares), "class_acc_diff": per_class(acc_diff),
            "class_acc_diff_sq": per_class(acc_diff * acc_diff),
            "class_fixed": per_class(flip == FIXED).astype(np.int64),
            "class_broken": per_class(flip == BROKEN).astype(np.int64),
            "class_acc": GroupMoments.of(acc_diff, label, size),
            "class_nll": GroupMoments.of(nll_diff, label, size),
            "class_cells": None if clusters is None else CellSums.of(
                label, clusters, plan.clusters,
                np.stack([attributed, acc_diff, nll_diff, np.ones(len(label))], axis=1))}


def slice_sums(slices: dict[str, np.ndarray], attributed: np.ndarray, base: "Listed",
               cand: "Listed") -> dict:
    """Per slice column, the SLICE_COLUMNS summed per value of the examples."""
    return {col: ValueSums.of(values, np.stack(
        [np.ones(len(values)), attributed, base.correct, cand.correct, base.nll, cand.nll],
        axis=1)) for col, values in slices.items()}


def bin_sums(base: "Listed", cand: "Listed", attributed: np.ndarray, bins: int) -> dict:
    """Per equal-width bin of the baseline's confidence: examples, each side's hits, and the
    attributed change summed."""
    which = equal_width_bin(base.conf, bins)

    def per_bin(weights=None) -> np.ndarray:
        return np.bincount(which, weights=weights, minlength=bins)

    return {"bin_count": per_bin(), "bin_hits": np.stack([per_bin(base.correct),
                                                           per_bin(cand.correct)]),
            "bin_diff": per_bin(attributed)}


class Listed(Protocol):
    """What the ranked lists read of a run: its PerExample, or a group's averages."""

    label: np.ndarray
    pred: np.ndarray
    conf: np.ndarray
    nll: np.ndarray

    @property
    def correct(self) -> np.ndarray: ...


@dataclass(frozen=True)
class WorstExamples(Mergeable):
    """The examples whose NLL rose the most, at most `top`, worst first (ties: by id): those
    of two sets of examples merge into those of their union."""

    top: int
    rise: np.ndarray
    ids: np.ndarray
    columns: dict  # label, and each run's prediction, NLL and confidence, of each example

    @staticmethod
    def of(base: Listed, cand: Listed, rise: np.ndarray, ids: np.ndarray,
           top: int) -> "WorstExamples":
        rows = np.flatnonzero(rise > 0)
        if len(rows) > top:  # a partial selection first: the full sort is of top rows only
            rows = rows[np.argpartition(-rise[rows], top - 1)[:top]] if top else rows[:0]
            kth = rise[rows].min() if top else np.inf
            rows = np.flatnonzero(rise >= kth)  # every example tied with the last one kept
        columns = {"label": base.label[rows], "baseline_pred": base.pred[rows],
                   "candidate_pred": cand.pred[rows], "baseline_nll": base.nll[rows],
                   "candidate_nll": cand.nll[rows], "baseline_conf": base.conf[rows],
                   "candidate_conf": cand.conf[rows]}
        return WorstExamples(top, rise[rows], ids[rows], columns)._kept()

    def _kept(self) -> "WorstExamples":
        if self.ids.dtype.kind in "iuf":  # by rise, then id
            order = np.lexsort((self.ids, -self.rise))[:self.top]
        else:  # text ids: np.lexsort takes no objects; a Python sort, of the rows kept
            order = np.array(sorted(range(len(self.rise)),
                                    key=lambda i: (-self.rise[i], self.ids[i]))[:self.top],
                             dtype=np.int64)
        return WorstExamples(self.top, self.rise[order], self.ids[order],
                             {name: values[order] for name, values in self.columns.items()})

    def merged(self, other: "WorstExamples") -> "WorstExamples":
        return WorstExamples(self.top, np.r_[self.rise, other.rise],
                             np.concatenate([self.ids, other.ids]),
                             {name: np.r_[values, other.columns[name]]
                              for name, values in self.columns.items()})._kept()
