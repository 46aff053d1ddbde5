"""The mergeable state of a comparison of two groups of runs (seeds of two configurations)
over their aligned examples: the group analogue of pairsums.PairSums.

The seeds x examples tests of every per-example mean, over all examples and within each class
(seeds.CrossedSums), and the ranked lists' sums over the groups' per-example means (by class,
by confidence bin, by slice value, the worst examples) are sums over the examples of what the
runs hold at each example. GroupSums gathers them from the runs' aligned columns, one piece at
a time here, one partition at a time where a cluster holds the runs, and the pieces merge.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .groups import GroupExamples
from .metrics import Mergeable, MetricSettings, merged_in_order
from .orderstats import Parts
from .paired import per_example_values
from .pairsums import (WorstExamples, bin_sums, given, joined_runs, rows_of, runs_of_table,
                       slice_sums)
from .perexample import PerExample
from .seeds import CrossedSums

# the per-example values whose change the class tests look at: recall (correctness) and NLL
CLASS_TESTED = ("accuracy", "nll")


@dataclass(frozen=True)
class GroupPlan:
    """What two groups' sums depend on besides the examples, fixed before they are gathered."""

    metrics: tuple[str, ...]  # the per-example means tested over all examples
    settings: MetricSettings
    num_classes: int
    runs: int  # in the baseline group; the candidate's follow
    paired: bool = False  # the i-th runs of both groups share a training seed
    clusters: int = 0  # with clustered examples, how many clusters; 0: independent examples
    attributed: str = "nll"  # the per-example mean whose change the ranked lists split
    top: int = 10  # the examples kept whose (mean) NLL rose the most


@dataclass(frozen=True)
class GroupSums(Mergeable):
    """Sums over the aligned examples of two groups of runs."""

    n: int
    means: dict  # metric -> CrossedSums over all examples (one group of examples)
    classes: dict  # CLASS_TESTED -> CrossedSums within each true class
    class_diff: np.ndarray  # the attributed change of the group means summed per true class
    bin_count: np.ndarray  # per equal-width bin of the baseline group's mean confidence
    bin_hits: np.ndarray  # (2, bins): the groups' mean correctness summed
    bin_diff: np.ndarray
    worst: WorstExamples  # of the groups' per-example means
    slices: dict  # slice column -> ValueSums of pairsums.SLICE_COLUMNS per value

    @staticmethod
    def of(bases: list[PerExample], cands: list[PerExample], plan: GroupPlan, ids: np.ndarray,
           clusters: np.ndarray | None = None,
           slices: dict[str, np.ndarray] | None = None) -> "GroupSums":
        """`ids` break ties among the worst examples; `clusters`: each example's cluster
        index; `slices`: each slice column's values of the examples."""
        values = per_example_values(plan.settings)
        matrices: dict[str, tuple[np.ndarray, np.ndarray]] = {}

        def matrix(name: str) -> tuple[np.ndarray, np.ndarray]:
            if name not in matrices:
                matrices[name] = (np.stack([values[name](pe) for pe in bases]),
                                  np.stack([values[name](pe) for pe in cands]))
            return matrices[name]

        label, K = bases[0].label, plan.num_classes
        everywhere = np.zeros(len(label), dtype=np.int64)
        means = {name: CrossedSums.of(*matrix(name), plan.paired, everywhere, 1, clusters,
                                      plan.clusters) for name in plan.metrics}
        classes = {name: CrossedSums.of(*matrix(name), plan.paired, label, K, clusters,
                                        plan.clusters) for name in CLASS_TESTED}
        base_mean, cand_mean = GroupExamples.of(bases, K), GroupExamples.of(cands, K)
        base_values, cand_values = matrix(plan.attributed)
        with np.errstate(invalid="ignore"):  # an infinite NLL in both groups: a NaN change
            attributed = cand_values.mean(axis=0) - base_values.mean(axis=0)
            rise = cand_mean.nll - base_mean.nll
        return GroupSums(
            n=len(label), means=means, classes=classes,
            class_diff=np.bincount(label, weights=attributed, minlength=K),
            **bin_sums(base_mean, cand_mean, attributed, plan.settings.ece_bins),
            worst=WorstExamples.of(base_mean, cand_mean, rise, ids, plan.top),
            slices=slice_sums(slices or {}, attributed, base_mean, cand_mean))

    def design_effect(self, name: str) -> float | None:
        """The clustered over the independent sampling variance of a metric's mean change."""
        sums = self.means[name]
        clustered, independent = sums.example_variance()[0][0], sums.independent_variance()[0]
        return float(clustered / independent) if independent > 0 else None


def group_sums(bases: list[PerExample], cands: list[PerExample], plan: GroupPlan,
               ids: np.ndarray, clusters: np.ndarray | None = None, piece: int = 1 << 20,
               slices: dict[str, np.ndarray] | None = None) -> GroupSums:
    """Two groups' sums over aligned columns held here, `piece` examples at a time merged in
    order: the way a cluster's partitions merge, and a bounded scratch memory."""
    found = []
    for start in range(0, max(len(ids), 1), piece):
        rows = slice(start, start + piece)
        found.append(GroupSums.of([rows_of(pe, rows) for pe in bases],
                                  [rows_of(pe, rows) for pe in cands], plan, ids[rows],
                                  None if clusters is None else clusters[rows],
                                  {col: values[rows] for col, values in (slices or {}).items()}))
    return merged_in_order(found)


def held_group_sums(parts: list[Parts], keys: list[Parts], slice_parts: Parts, plan: GroupPlan,
                    clusters: Parts | None = None) -> GroupSums | None:
    """Two groups' sums computed where the runs' parts are held, when every run is cut into
    the same parts holding the same examples in the same order: each part lines up its own
    rows. None where a part of one run holds other examples than the first's. `parts` and
    `keys`: the baseline group's runs, then the candidate group's."""
    found = parts[0].map_with(_part_group_sums, [*parts[1:], *keys, slice_parts,
                                                  *given(clusters)], plan, len(parts)).gather()
    if any(part is None for part in found):
        return None
    return merged_in_order(found)


def _part_group_sums(*args) -> GroupSums | None:
    """One part's sums: the part of every run, then of every run's keys, the slice values,
    the cluster indices if any; then the plan and the number of runs."""
    *held, plan, runs = args
    examples, keys = held[:runs], [ids for ids, _ in held[runs:2 * runs]]
    slices, *clusters = held[2 * runs:]
    if any(not np.array_equal(ids, keys[0]) for ids in keys[1:]) or any(
            not np.array_equal(pe.label, examples[0].label) for pe in examples[1:]):
        return None  # lined up by id instead; a changed label is the alignment's error
    return GroupSums.of(list(examples[:plan.runs]), list(examples[plan.runs:]), plan, keys[0],
                        clusters[0] if clusters else None, slices)


def joined_group_sums(parts: list[Parts], keys: list[Parts], slice_parts: Parts,
                      plan: GroupPlan, clusters: Parts | None = None,
                      common: list[Parts] | None = None) -> GroupSums:
    """Two groups' sums where the runs' parts hold their examples in other orders or splits,
    or where some run is compared on part of its examples: the runs joined on their ids
    (pairsums.joined_runs), each joined part's sums merged in order."""
    return merged_in_order(joined_runs(parts, keys, slice_parts, clusters,
                                       [f"r{i}_" for i in range(len(parts))], common)
                           .map(_table_group_sums, plan, len(parts)).gather())


def _table_group_sums(table, plan: GroupPlan, runs: int) -> GroupSums:
    examples, ids, clusters, slices = runs_of_table(table, [f"r{i}_" for i in range(runs)])
    return GroupSums.of(examples[:plan.runs], examples[plan.runs:], plan, ids, clusters, slices)

