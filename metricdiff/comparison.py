"""Several runs in, one comparison out: align, measure each run, pair each candidate with the
baseline, explain, rank, decide."""

from __future__ import annotations

import itertools
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from functools import partial
from typing import Any, Callable

import numpy as np

from .align import Alignment, AllRows, Kept, align_runs
from .explain import calibration_view, disagreements, reasons
from .metrics import (BLOCK_RESAMPLED, RESAMPLED, ClassCounts, ConfidenceOrder, MetricSettings,
                      RunSums, SummaryPlan, class_groups, headline, merged_in_order,
                      metric_directions, reliability_rows)
from .classtests import group_class_changes, pair_class_changes
from .classwise import BlockPlan, ClasswiseSums, classwise_metrics, classwise_values
from .curves import run_curves_of
from .detect import detectable
from .errors import InputError, UsageError
from .groups import (average_over_pairs, group_summaries, noise_floor_table,
                     run_pairs, spread_over_pairs)
from .paired import (FEW_PER_SUBSET, METHOD_NONE, BootstrapPlan, HeldClusters, Interval,
                     bootstrap, per_example_values, resample_values)
from .groupsums import GroupPlan, GroupSums, group_sums, held_group_sums, joined_group_sums
from .pairsums import PairPlan, PairSums, held_pair_sums, joined_pair_sums, pair_sums
from .seeds import crossed_mean_interval, resampled_metric_delta
from .orderstats import HeldRows, LocalParts, Parts
from .perexample import PerExample
from .pipeline import RunData
from .ranking import (add_contribution_intervals, attributed_metric, change_word,
                      class_contribution, confidence_bin_rows, rank_classes,
                      rank_examples, rank_metrics, slice_rows)
from .results import ComparisonReport, describe_run, reading_warnings, run_parts, run_sums
from .verdict import (Verdict, best_run, check_primary, check_settings, decide, holm,
                      should_fail)


@dataclass(frozen=True)
class CompareSettings:
    primary: str = "nll"
    alpha: float = 0.05
    min_effect: float = 0.0
    resamples: int = 1000
    seed: int = 0
    fail_on: str = "never"
    top: int = 10  # length of each ranked list
    allow_partial: bool = False
    paired_seeds: bool = False  # the i-th runs of every group share a training seed
    cluster: str | None = None  # the column whose equal values mark clustered examples
    fdr: float = 0.05  # false discovery rate of the per-class tests


def build_comparison(runs: list[RunData], settings: CompareSettings = CompareSettings(),
                     metric_settings: MetricSettings = MetricSettings(),
                     groups: list[str] | None = None,
                     alignment: Alignment | None = None) -> ComparisonReport:
    """Compare each candidate group of runs with the baseline group (the first). `groups`
    names the group of each run; by default every run is a group of its own. `alignment`:
    the runs lined up already, from their keys (runs whose columns a cluster holds have no
    ids or labels here)."""
    directions = metric_directions(metric_settings.top_k)
    check_primary(settings.primary, directions)
    check_settings(settings.alpha, settings.min_effect, settings.fail_on, settings.fdr)
    members = _members(runs, groups, settings.paired_seeds)
    grouped = any(len(indices) > 1 for indices in members.values())
    alignment = alignment or align_runs(runs, settings.allow_partial)
    aligned = [_lined_up(run, rows) for run, rows in zip(runs, alignment.rows)]
    # a pair's or two groups' statistics come from the workers' parts when a cluster holds
    # the runs (HeldRows), else from the columns here
    num_classes = runs[0].num_classes
    # a run whose every example is compared has the sums its main pass gathered; one
    # compared on part of them, the sums of those, part by part
    parts = [run_parts(run) if len(rows) == run.n else _kept_parts(run, rows, pe)
             for run, rows, pe in zip(runs, alignment.rows, aligned)]
    sums = [run_sums(run, metric_settings) if len(rows) == run.n
            else _sums_of(compared, SummaryPlan.of(metric_settings), num_classes)
            for run, rows, compared in zip(runs, alignment.rows, parts)]
    counts = [run_sum.classes for run_sum in sums]
    # each run's numbers are independent of the others', and numpy's sorts and passes release
    # the GIL: two threads measure two runs in about the time of one
    with ThreadPoolExecutor(max_workers=2) as pool:
        summaries = list(pool.map(partial(_summary, metric_settings=metric_settings),
                                  runs, aligned, sums, parts))
    for summary, group in zip(summaries, _group_of_each(members, len(runs))):
        summary["group"] = group

    names = list(members)
    base_idx = members[names[0]]
    class_group = class_groups(counts[base_idx[0]], metric_settings.class_groups)
    clusters, cluster_keys = _clusters(runs, alignment, aligned, settings.cluster)
    plan = BootstrapPlan(alignment.n, settings.resamples, settings.seed, clusters,
                         _unit_keys(aligned[alignment.in_order or 0], alignment, cluster_keys))
    draws: list[dict[str, np.ndarray] | None] = [None] * len(runs)
    if settings.resamples > 0:  # every run on the same resamples, drawn once for all
        available = [{m for m in RESAMPLED if summary["metrics"][m] is not None}
                     for summary in summaries]
        draws = [*resample_values(aligned, num_classes, metric_settings.ece_bins, available,
                                  plan)]
    block_plan = _block_plan(runs, settings, plan)
    if block_plan is not None:
        weights = block_plan.weights()
        with ThreadPoolExecutor(max_workers=2) as pool:  # numpy's work, without the GIL
            block_draws = list(pool.map(lambda run: None if run.classwise is None
                                        else _block_draws(run.classwise, weights), runs))
        for run_draws, extra in zip(draws, block_draws):
            if run_draws is not None and extra is not None:
                run_draws.update(extra)
    group_values = group_summaries(members, summaries, runs)
    pair_of = _PairSumsOf(runs, alignment, aligned, summaries, class_group, plan, settings,
                          metric_settings)
    if grouped:
        pairs = [_group_deltas(base_idx, members[name], summaries,
                               pair_of.groups(base_idx, members[name]), draws, plan,
                               block_plan, settings) for name in names[1:]]
    else:
        pairs = [_deltas(summaries[0]["metrics"], summaries[i]["metrics"], pair_of(0, i),
                         plan, block_plan, draws[0], draws[i], settings)
                 for i in range(1, len(runs))]

    primary_p = [pair[settings.primary].p_value if settings.primary in pair else None
                 for pair in pairs]
    adjusted = holm(primary_p)
    verdicts = [decide(name, settings.primary, pair.get(settings.primary),
                       bool(directions[settings.primary]), p_adj, settings.alpha,
                       settings.min_effect, tested=sum(p is not None for p in primary_p),
                       why_unavailable=_why_unavailable(
                           settings.primary, [summaries[i] for i in base_idx + members[name]]))
                for name, pair, p_adj in zip(names[1:], pairs, adjusted)]

    comparisons = []
    for name, deltas, verdict in zip(names[1:], pairs, verdicts):
        cand_idx = members[name]
        measured: PairSums | GroupSums = (pair_of.groups(base_idx, cand_idx) if grouped
                                          else pair_of(0, cand_idx[0]))
        if grouped:
            comparison = _group_comparison(base_idx, cand_idx, runs, pair_of, counts,
                                           group_values, names[0], name, deltas, verdict,
                                           directions, settings, metric_settings)
        else:
            comparison = _comparison(runs[0], runs[cand_idx[0]],
                                     pair_of(0, cand_idx[0]), (counts[0], counts[cand_idx[0]]),
                                     deltas, verdict, summaries[0], summaries[cand_idx[0]],
                                     directions, alignment, num_classes, settings,
                                     metric_settings)
        primary = deltas.get(settings.primary)
        comparison["noise"] = list(primary.noise if primary is not None else plan.noise)
        comparison["detectable"] = detectable(
            primary, settings.alpha, plan.n, None if plan.clusters is None else plan.units,
            round((len(base_idx) + len(cand_idx)) / 2))
        comparison["clusters"] = _cluster_summary(plan, settings, metric_settings, measured)
        _add_class_changes(comparison, group_class_changes(measured, settings.fdr)
                           if isinstance(measured, GroupSums)
                           else pair_class_changes(measured, settings.fdr))
        if not grouped:  # for groups, an interval over examples alone would leave out seeds
            add_contribution_intervals(comparison, pair_of(0, cand_idx[0]), counts[0],
                                       settings.alpha)
        comparisons.append(comparison)
    floor = None
    if len(base_idx) > 1:
        floor = _seed_noise_floor(names[0], base_idx, runs, pair_of, summaries, draws, plan,
                                  comparisons, settings)
    return ComparisonReport(
        settings={**asdict(settings), "ci_level": 1 - settings.alpha,
                  "metric_settings": asdict(metric_settings)
                  | {"class_groups": list(metric_settings.class_groups)}},
        alignment={"keyed_by": alignment.keyed_by, "n": alignment.n,
                   "dropped": {run.name: d for run, d in zip(runs, alignment.dropped)}},
        runs=summaries,
        directions=directions,
        comparisons=comparisons,
        best=best_run(names[0], verdicts, bool(directions[settings.primary])),
        failed=should_fail(verdicts, settings.fail_on),
        warnings=_warnings(runs, alignment, plan),
        groups=group_values,
        seed_noise=floor,
    )


def _members(runs: list[RunData], groups: list[str] | None,
             paired_seeds: bool) -> dict[str, list[int]]:
    """Group name -> indices of its runs, groups in the order they first appear."""
    groups = groups if groups is not None else [run.name for run in runs]
    if len(groups) != len(runs):
        raise UsageError(f"{len(groups)} group names for {len(runs)} runs")
    members: dict[str, list[int]] = {}
    for index, group in enumerate(groups):
        members.setdefault(group, []).append(index)
    if len(members) < 2:
        raise UsageError(f"every run is in the group '{groups[0]}': compare needs a baseline "
                         "and at least one candidate (give the candidate runs another name)")
    sizes = {name: len(indices) for name, indices in members.items()}
    if paired_seeds and len(set(sizes.values())) > 1:
        raise UsageError("--paired-seeds needs the same number of runs in every group, got "
                         + ", ".join(f"{name}: {size}" for name, size in sizes.items()))
    return members


def _group_of_each(members: dict[str, list[int]], runs: int) -> list[str]:
    group = [""] * runs
    for name, indices in members.items():
        for index in indices:
            group[index] = name
    return group


def _why_unavailable(metric: str, summaries: list[dict]) -> str | None:
    """The first reason a run of the pair gives for not having the metric."""
    for summary in summaries:
        reason = summary["unavailable"].get(metric)
        if reason:
            return f"{summary['name']}: {reason}"
    return None


def _unit_keys(base: PerExample | HeldRows, alignment: Alignment,
               cluster_keys: np.ndarray | None) -> np.ndarray | Parts:
    """What names the bootstrap's units: the clusters' keys, the examples' ids (or row
    numbers), or, for runs lined up on a cluster, the keys of the compared rows the parts
    of `base` hold (the run in the alignment's order, if one is)."""
    if cluster_keys is not None:
        return cluster_keys
    if alignment.ids is not None:
        return alignment.ids
    assert isinstance(base, HeldRows) and base.key_parts is not None  # a cluster holds them
    return base.kept_keys() if isinstance(base.rows, Kept) else base.key_parts


def _clusters(runs: list[RunData], alignment: Alignment,
              aligned: list[PerExample | HeldRows], column: str | None
              ) -> tuple[np.ndarray | HeldClusters | None, np.ndarray | None]:
    """Each aligned example's cluster as an index 0..C-1, and the clusters' keys (text) in
    that order; every run must agree on them. (None, None) without a cluster column. For
    runs a cluster holds, each run's parts of indices."""
    if column is None:
        return None, None
    if alignment.ids is None and not isinstance(alignment.rows[0], Kept):
        return _held_clusters(runs, column)  # lined up from digests of keys and clusters
    if all(isinstance(pe, HeldRows) for pe in aligned):
        return _held_clusters(runs, column, [pe for pe in aligned if isinstance(pe, HeldRows)])
    clusters = [run.clusters for run in runs if run.clusters is not None]
    assert len(clusters) == len(runs)  # every layout was read with this cluster column
    keys = clusters[0][alignment.rows[0]]
    for run, run_clusters, rows in zip(runs[1:], clusters[1:], alignment.rows[1:]):
        differ = run_clusters[rows] != keys
        if differ.any():
            raise InputError(f"{int(differ.sum())} examples are in another cluster than in the "
                             f"baseline {runs[0].name}; expected the same clusters in every run",
                             path=run.layout.path, column=column)
    unique, index = np.unique(keys.astype(str), return_inverse=True)
    _check_clusters(runs[0], len(unique), column)
    return index, unique


def _clusters_here(plan: BootstrapPlan) -> np.ndarray | None:
    """The examples' clusters, where the columns they go with are held here."""
    assert not isinstance(plan.clusters, HeldClusters), "the workers hold the clusters"
    return plan.clusters


def _held_clusters(runs: list[RunData], column: str, lined_up: list[HeldRows] | None = None
                   ) -> tuple[HeldClusters, np.ndarray]:
    """The clusters of runs a cluster holds: the distinct keys of the baseline's compared
    rows, and each run's parts of indices. `lined_up`: the runs as lined up here from their
    ids (compared on part of their examples), whose clusters are checked to agree there."""
    held = [run.cluster_parts for run in runs if run.cluster_parts is not None]
    assert len(held) == len(runs)  # every run was read with this cluster column
    compared = held[0] if lined_up is None else lined_up[0].kept(held[0])
    unique = np.unique(np.concatenate(compared.map(_distinct).gather()))
    _check_clusters(runs[0], len(unique), column)
    if lined_up is not None:
        tables = [rows.kept_keys().map_with(_cluster_table, [rows.kept(parts)])
                  for rows, parts in zip(lined_up, held)]
        for run, table in zip(runs[1:], tables[1:]):
            differ = sum(tables[0].merged(table, on="key").map(_differ).gather())
            if differ:
                raise InputError(f"{differ} examples are in another cluster than in the "
                                 f"baseline {runs[0].name}; expected the same clusters in "
                                 "every run", path=run.layout.path, column=column)
    return HeldClusters(len(unique), tuple(parts.map(_cluster_index, unique)
                                           for parts in held)), unique


def _cluster_table(keys: tuple, clusters: np.ndarray):
    import pandas as pd

    return pd.DataFrame({"key": keys[0], "cluster": np.asarray(clusters).astype(str)})


def _differ(table) -> int:
    return int((table["cluster_x"] != table["cluster_y"]).sum())


def _distinct(clusters: np.ndarray) -> np.ndarray:
    return np.unique(clusters.astype(str))


def _cluster_index(clusters: np.ndarray, unique: np.ndarray) -> np.ndarray:
    return np.searchsorted(unique, clusters.astype(str))


def _check_clusters(base: RunData, count: int, column: str) -> None:
    if count < 2:
        raise InputError("every example is in one cluster; expected two clusters or more",
                         path=base.layout.path, column=column)


def _add_class_changes(comparison: dict, found: dict) -> None:
    """The per-class tests: counts in the comparison, q-values on the ranked classes."""
    per_class = found.pop("per_class")
    comparison["class_changes"] = found
    for row in comparison["ranked"]["classes"]["rows"]:
        k = row["class"]
        for name in ("recall_p", "recall_q", "nll_p", "nll_q"):
            row[name] = float(per_class[name][k])


def _cluster_summary(plan: BootstrapPlan, settings: CompareSettings,
                     metric_settings: MetricSettings, sums: PairSums | GroupSums
                     ) -> dict | None:
    """Clusters, and the effective sample size: n over the design effect, the ratio of the
    clustered to the independent variance of the primary metric's per-example change (of
    the NLL change where the primary is not a mean over examples; for groups, of the change
    of the runs' mean). None where a run lacks that metric."""
    if plan.clusters is None:
        return None
    metric = attributed_metric(settings.primary, metric_settings)
    effect = (sums.design_effect(metric) if isinstance(sums, GroupSums) or metric in sums.diffs
              else None)
    return {"column": settings.cluster, "count": plan.units,
            "metric": metric,
            "design_effect": effect,
            "effective_n": plan.n / effect if effect else None}


def _group_deltas(base_idx: list[int], cand_idx: list[int], summaries: list[dict],
                  group: GroupSums, draws: list, plan: BootstrapPlan,
                  block_plan: BlockPlan | None,
                  settings: CompareSettings) -> dict[str, Interval]:
    """Every metric all runs of both groups have: the difference of group means with an
    interval over seeds and examples (seeds.py)."""
    members = base_idx + cand_idx
    order = list(summaries[0]["metrics"])  # the registry's order
    both = {name for name in order if name != "n"
            and all(summaries[i]["metrics"][name] is not None for i in members)}
    deltas: dict[str, Interval] = {}
    for name, sums in group.means.items():
        if name in both:
            deltas[name] = crossed_mean_interval(sums, settings.alpha, settings.paired_seeds)

    def run_values(indices: list[int], name: str) -> np.ndarray:
        return np.array([summaries[i]["metrics"][name] for i in indices])

    for name in RESAMPLED:
        if name in both and draws[0] is not None:
            deltas[name] = resampled_metric_delta(
                run_values(base_idx, name), run_values(cand_idx, name),
                [draws[i][name] for i in base_idx], [draws[i][name] for i in cand_idx],
                settings.alpha, settings.paired_seeds, plan.units - 1, plan.noise[0])
    for name in BLOCK_RESAMPLED:
        if name in both and block_plan is not None and draws[0] is not None:
            deltas[name] = resampled_metric_delta(
                run_values(base_idx, name), run_values(cand_idx, name),
                [draws[i][name] for i in base_idx], [draws[i][name] for i in cand_idx],
                settings.alpha, settings.paired_seeds, block_plan.units - 1,
                block_plan.noise[0])
    if "temperature" in both:
        delta = run_values(cand_idx, "temperature").mean() - run_values(base_idx,
                                                                        "temperature").mean()
        deltas["temperature"] = Interval(float(delta), None, None, None, METHOD_NONE)
    return {name: deltas[name] for name in order if name in deltas}


def _block_plan(runs: list[RunData], settings: CompareSettings,
                plan: BootstrapPlan) -> BlockPlan | None:
    """The block bootstrap of the classwise metrics, over the blocks that hold examples (the
    same in every run: blocks follow the example's id, or its cluster)."""
    sums = runs[0].classwise
    if settings.resamples == 0 or sums is None:
        return None
    return BlockPlan(int((sums.size > 0).sum()), settings.resamples, settings.seed, plan.noise)


def _block_draws(sums: ClasswiseSums, weights: np.ndarray) -> dict[str, np.ndarray]:
    """Each BLOCK_RESAMPLED metric on the sample (column 0) and on every resample, as
    (1, 1 + resamples) arrays, the layout of the example bootstrap's draws; the weights of
    the plan's blocks spread over all blocks, empty ones weighing nothing."""
    full = np.zeros((len(weights), sums.blocks))
    full[:, sums.size > 0] = weights
    values = classwise_values(sums, full)
    return {name: values[name][None, :] for name in BLOCK_RESAMPLED}


def _summary(run: RunData, pe: PerExample | HeldRows, sums: RunSums, parts: Parts,
             metric_settings: MetricSettings) -> dict:
    by_conf = ConfidenceOrder(parts)  # for the metrics and the curves
    values, unavailable = headline(pe if isinstance(pe, PerExample) else None, sums,
                                   run.rank_depth, metric_settings, run.temperature,
                                   classwise_metrics(run.classwise), parts, by_conf)
    return {**describe_run(run), "n": len(pe), "metrics": values, "unavailable": unavailable,
            "confidence_bins": reliability_rows(sums.bins),
            "curves": run_curves_of(by_conf, metric_settings.seed)}


def _kept_parts(run: RunData, rows: np.ndarray | AllRows, pe: PerExample | HeldRows
                ) -> Parts:
    """The compared examples of a run compared on part of them, in the run's own row order
    (as a cluster's parts hold them: an order statistic's ties keep that order)."""
    if isinstance(pe, HeldRows):
        return pe.kept()
    rows = np.asarray(rows)
    if bool((rows[1:] > rows[:-1]).all()):  # lined up in its own row order already
        return LocalParts([pe])
    assert run.examples is not None  # a run read here, with its columns
    return LocalParts([run.examples.take(np.sort(rows))])


def _sums_of(parts: Parts, plan: SummaryPlan, num_classes: int) -> RunSums:
    """The RunSums of a run's examples in parts: each part's, merged in order."""
    return merged_in_order(parts.map(RunSums.of, plan, num_classes).gather())


def _lined_up(run: RunData, rows: np.ndarray | AllRows) -> PerExample | HeldRows:
    """A run's examples in the alignment's order; no copy when they already are in it.
    Those of a run whose columns stay on a cluster's workers stay there (HeldRows)."""
    if run.examples is None:
        assert run.parts is not None  # a run read without its columns is held in parts
        return HeldRows(run.parts, rows, run.key_parts)
    if isinstance(rows, AllRows) or (len(rows) == run.n
                                     and np.array_equal(rows, np.arange(len(rows)))):
        return run.examples
    return run.examples.take(rows)


def _here(examples: PerExample | HeldRows) -> PerExample:
    """Examples whose columns are held here: a cluster's runs are read with their columns
    wherever a statistic of this module needs them (api.compare)."""
    assert isinstance(examples, PerExample), "the columns are held by the workers alone"
    return examples


def _deltas(base_values: dict, cand_values: dict, pair: PairSums, plan: BootstrapPlan,
            block_plan: BlockPlan | None, base_draws: dict | None, cand_draws: dict | None,
            settings: CompareSettings) -> dict[str, Interval]:
    """Every metric both runs have: paired t for per-example means, McNemar's exact test for
    accuracy, a paired bootstrap for the rest; the temperature gets its delta only."""
    both = {name for name in base_values
            if base_values[name] is not None and cand_values[name] is not None and name != "n"}
    deltas: dict[str, Interval] = {name: pair.paired_t(name, settings.alpha)
                                   for name in pair.diffs}
    if "accuracy" in deltas:  # McNemar's test, and the interval that inverts it
        deltas["accuracy"] = pair.accuracy_test(settings.alpha)
    wanted = {name for name in RESAMPLED if name in both}
    if wanted and base_draws is not None and cand_draws is not None:
        observed = {name: cand_values[name] - base_values[name] for name in wanted}
        deltas.update(bootstrap(observed, base_draws, cand_draws, plan, settings.alpha))
    by_blocks = {name for name in BLOCK_RESAMPLED if name in both}
    if by_blocks and block_plan is not None and base_draws is not None \
            and cand_draws is not None:
        observed = {name: cand_values[name] - base_values[name] for name in by_blocks}
        deltas.update(bootstrap(observed, base_draws, cand_draws, block_plan, settings.alpha))
    if "temperature" in both:
        deltas["temperature"] = Interval(cand_values["temperature"] - base_values["temperature"],
                                         None, None, None, METHOD_NONE)
    order = list(base_values)  # the registry's order
    return {name: deltas[name] for name in order if name in deltas}


def _comparison(base_run: RunData, cand_run: RunData, pair: PairSums,
                class_counts: tuple[ClassCounts, ClassCounts], deltas: dict[str, Interval],
                verdict: Verdict, base_summary: dict,
                cand_summary: dict, directions: dict, alignment: Alignment, num_classes: int,
                settings: CompareSettings, metric_settings: MetricSettings) -> dict:
    base_values, cand_values = base_summary["metrics"], cand_summary["metrics"]
    delta_rows = _delta_rows(deltas, base_values, cand_values, directions, settings.alpha)
    flips = pair.nll_by_flip()
    counts = {row["group"]: row["count"] for row in flips}
    temperatures = (base_values.get("temperature"), cand_values.get("temperature"))
    calibration = calibration_view(deltas, temperatures)
    confident = pair.confident_wrong(metric_settings.confident_wrong)
    group_rows = pair.class_groups()
    class_names = base_run.layout.class_names
    attributed = attributed_metric(settings.primary, metric_settings)
    by_class, class_metric = class_contribution(settings.primary, attributed,
                                                pair.class_diff / pair.n, *class_counts)
    slices = {col: slice_rows(sums, pair.n, attributed, settings.top)
              for col, sums in pair.slices.items()}
    return {
        "baseline": base_run.name,
        "candidate": cand_run.name,
        "primary": settings.primary,
        "deltas": delta_rows,
        "flips": {"fixed": counts["fixed"], "broken": counts["broken"],
                  "p_value": deltas["accuracy"].p_value, "method": "McNemar exact"},
        "verdict": asdict(verdict),
        "explanation": {
            "disagreements": disagreements(deltas, directions, settings.primary, settings.alpha,
                                           verdict.decision),
            "nll_by_flip": flips,
            "calibration": calibration,
            "confidently_wrong": confident,
            "class_groups": group_rows,
            "reasons": reasons(flips, calibration, confident, group_rows, deltas,
                               settings.alpha),
        },
        "ranked": {
            "metrics": rank_metrics(deltas, directions),
            "classes": rank_classes(by_class, class_metric, *class_counts, class_names,
                                    settings.top),
            "slices": slices,
            "confidence_bins": confidence_bin_rows(pair.bin_diff / pair.n, attributed,
                                                   pair.bin_count, *pair.bin_hits),
            "examples": rank_examples(pair.worst, class_names),
        },
    }


def _delta_rows(deltas: dict[str, Interval], base_values: dict, cand_values: dict,
                directions: dict, alpha: float) -> dict:
    rows = {}
    for name, interval in deltas.items():
        baseline = base_values[name]
        rows[name] = {
            "baseline": baseline, "candidate": cand_values[name], "delta": interval.delta,
            "relative": interval.delta / abs(baseline) if baseline else None,
            "ci_low": interval.ci_low, "ci_high": interval.ci_high,
            "p_value": interval.p_value, "method": interval.method,
            "df": interval.df, "noise": list(interval.noise),
            "change": change_word(interval.delta, directions.get(name)),
            "significant": interval.p_value is not None and interval.p_value < alpha,
        }
    return rows


def _group_comparison(base_idx: list[int], cand_idx: list[int], runs: list[RunData],
                      pair_of: "_PairSumsOf", counts: list[ClassCounts],
                      group_values: list[dict], base_name: str, cand_name: str,
                      deltas: dict[str, Interval], verdict: Verdict, directions: dict,
                      settings: CompareSettings, metric_settings: MetricSettings) -> dict:
    """A candidate group against the baseline group: the deltas of group means; every figure
    of the explanation is the mean over run pairs, with its spread over them."""
    means = {group["name"]: group["mean"] for group in group_values}
    pairs = run_pairs(base_idx, cand_idx, settings.paired_seeds)
    sums = [pair_of(b, c) for b, c in pairs]
    flips = [pair.nll_by_flip() for pair in sums]
    confident = [pair.confident_wrong(metric_settings.confident_wrong) for pair in sums]
    group_rows = [pair.class_groups() for pair in sums]
    mean_flips, mean_confident = average_over_pairs(flips), average_over_pairs(confident)
    mean_groups = average_over_pairs(group_rows)
    _reshare(mean_flips, mean_confident, mean_groups, deltas)
    temperatures = (means[base_name].get("temperature"), means[cand_name].get("temperature"))
    calibration = calibration_view(deltas, temperatures)
    counts_by = {row["group"]: row["count"] for row in mean_flips}
    group = pair_of.groups(base_idx, cand_idx)
    # a group's class counts are its runs' means (contributions are linear in the runs)
    base_counts = ClassCounts.mean([counts[i] for i in base_idx])
    cand_counts = ClassCounts.mean([counts[i] for i in cand_idx])
    attributed = attributed_metric(settings.primary, metric_settings)
    by_class, class_metric = class_contribution(settings.primary, attributed,
                                                group.class_diff / group.n, base_counts,
                                                cand_counts)
    class_names = runs[base_idx[0]].layout.class_names
    return {
        "baseline": base_name,
        "candidate": cand_name,
        "primary": settings.primary,
        "runs": {"baseline": [runs[i].name for i in base_idx],
                 "candidate": [runs[i].name for i in cand_idx]},
        "pairs_averaged": len(pairs),
        "deltas": _delta_rows(deltas, means[base_name], means[cand_name], directions,
                              settings.alpha),
        "flips": {"fixed": counts_by["fixed"], "broken": counts_by["broken"],
                  "p_value": deltas["accuracy"].p_value, "method": deltas["accuracy"].method,
                  "mean_over_pairs": len(pairs)},
        "verdict": asdict(verdict),
        "explanation": {
            "disagreements": disagreements(deltas, directions, settings.primary, settings.alpha,
                                           verdict.decision),
            "nll_by_flip": mean_flips,
            "calibration": calibration,
            "confidently_wrong": mean_confident,
            "class_groups": mean_groups,
            "reasons": reasons(mean_flips, calibration, mean_confident, mean_groups, deltas,
                               settings.alpha, pairs=len(pairs)),
            "spread_over_pairs": {"nll_by_flip": spread_over_pairs(flips),
                                  "confidently_wrong": spread_over_pairs(confident),
                                  "class_groups": spread_over_pairs(group_rows)},
        },
        "ranked": {
            "metrics": rank_metrics(deltas, directions),
            "classes": rank_classes(by_class, class_metric, base_counts, cand_counts,
                                    class_names, settings.top),
            "slices": {col: slice_rows(sums, group.n, attributed, settings.top)
                       for col, sums in group.slices.items()},
            "confidence_bins": confidence_bin_rows(group.bin_diff / group.n, attributed,
                                                   group.bin_count, *group.bin_hits),
            "examples": rank_examples(group.worst, class_names),
        },
    }


def _reshare(flips: list[dict], confident: dict, group_rows: list[dict],
             deltas: dict[str, Interval]) -> None:
    """Shares of a change, after averaging over pairs: the mean contribution over the group
    delta (a mean of per-pair ratios would mean nothing where pair deltas differ in sign)."""
    def share(part, whole):
        return part / whole if whole else None

    nll, accuracy = deltas["nll"].delta, deltas["accuracy"].delta
    for row in flips:
        row["share"] = share(row["contribution"], nll)
    confident["share"] = share(confident["contribution"], nll)
    for row in group_rows:
        row["accuracy_share"] = share(row["accuracy_contribution"], accuracy)
        row["nll_share"] = share(row["nll_contribution"], nll)


def _seed_noise_floor(base_name: str, base_idx: list[int], runs: list[RunData],
                      pair_of: "_PairSumsOf", summaries: list[dict], draws: list,
                      plan: BootstrapPlan, comparisons: list[dict],
                      settings: CompareSettings) -> dict:
    """How different two runs of the baseline configuration are, by the one-pair test, and
    whether each candidate's change of the primary metric is larger than that."""
    pairs = list(itertools.combinations(base_idx, 2))
    pair_deltas = [_deltas(summaries[i]["metrics"], summaries[j]["metrics"], pair_of(i, j),
                           plan, None, draws[i], draws[j], settings)
                   for i, j in pairs]
    table = noise_floor_table(pair_deltas, settings.alpha)
    primary = table.get(settings.primary)
    against = []
    for comparison in comparisons:
        row = comparison["deltas"].get(settings.primary)
        if row is None or primary is None:
            continue
        size = abs(row["delta"])
        against.append({"candidate": comparison["candidate"], "delta": row["delta"],
                        "ratio_to_mean_seed_difference": (size / primary["mean_abs_diff"]
                                                          if primary["mean_abs_diff"] else None),
                        "beyond_every_seed_pair": size > primary["max_abs_diff"],
                        "significant": row["significant"]})
    return {"group": base_name, "runs": [runs[i].name for i in base_idx],
            "pairs": len(pairs), "alpha": settings.alpha, "metrics": table,
            "candidates": against}


class _PairSumsOf:
    """The PairSums of two runs by their indices, and the GroupSums of two groups of runs,
    gathered once each (a pair serves its deltas, its explanation and its intervals)."""

    def __init__(self, runs: list[RunData], alignment: Alignment,
                 aligned: list[PerExample | HeldRows],
                 summaries: list[dict], class_group: np.ndarray, plan: BootstrapPlan,
                 compare: CompareSettings, settings: MetricSettings):
        self.runs, self.alignment, self.aligned = runs, alignment, aligned
        self.ids, self.summaries, self.plan = alignment.ids, summaries, plan
        # the baseline's slice values of the aligned examples
        self.slices = {col: values[alignment.rows[0]] for col, values in runs[0].slices.items()}
        self.class_group, self.settings = tuple(int(g) for g in class_group), settings
        self.attributed = attributed_metric(compare.primary, settings)
        self.top, self.paired_seeds = compare.top, compare.paired_seeds
        self.done: dict[tuple[int, int], PairSums] = {}
        self.done_groups: dict[tuple[tuple[int, ...], tuple[int, ...]], GroupSums] = {}

    def __call__(self, base: int, cand: int) -> PairSums:
        if (base, cand) not in self.done:
            plan = PairPlan(self._tested([base, cand]), self.settings, self.class_group,
                            self._clusters(), self.attributed, self.top)
            found = self._from_parts([base, cand], plan, held_pair_sums, joined_pair_sums)
            if found is None:
                assert self.ids is not None  # runs lined up here, from their keys
                found = pair_sums(_here(self.aligned[base]), _here(self.aligned[cand]), plan,
                                  self.ids, _clusters_here(self.plan), slices=self.slices)
            self.done[base, cand] = found
        return self.done[base, cand]

    def groups(self, base_idx: list[int], cand_idx: list[int]) -> GroupSums:
        """The GroupSums of a baseline group and a candidate group of runs."""
        key = tuple(base_idx), tuple(cand_idx)
        if key not in self.done_groups:
            members = [*base_idx, *cand_idx]
            # the per-example means every run has, and the one the cluster summary reads
            tested = tuple(name for name in per_example_values(self.settings)
                           if name in self._tested(members) or name == self.attributed)
            plan = GroupPlan(tested, self.settings, len(self.class_group), len(base_idx),
                             self.paired_seeds, self._clusters(), self.attributed, self.top)
            found = self._from_parts(members, plan, held_group_sums, joined_group_sums)
            if found is None:
                assert self.ids is not None  # runs lined up here, from their keys
                found = group_sums([_here(self.aligned[i]) for i in base_idx],
                                   [_here(self.aligned[i]) for i in cand_idx], plan, self.ids,
                                   _clusters_here(self.plan), slices=self.slices)
            self.done_groups[key] = found
        return self.done_groups[key]

    def _from_parts(self, members: list[int], plan: PairPlan | GroupPlan,
                    held_sums: Callable[..., Any], joined_sums: Callable[..., Any]) -> Any:
        """The sums of these runs (the baseline side first) from the parts a cluster holds:
        part by part where every run is compared whole and the runs are co-partitioned,
        else joined on their ids by the engine (which keeps the examples every run holds).
        None where the runs are held here."""
        held = self._held(members)
        if held is None:
            return None
        parts, keys, slices, clusters = held
        found = held_sums(parts, keys, slices, plan, clusters) if self._whole() else None
        if found is None:
            found = joined_sums(parts, keys, slices, plan, clusters, self._common(members))
        return found

    def _tested(self, members: list[int]) -> tuple[str, ...]:
        """The per-example means every one of these runs has."""
        metrics = [self.summaries[i]["metrics"] for i in members]
        return tuple(name for name in per_example_values(self.settings)
                     if all(values.get(name) is not None for values in metrics))

    def _clusters(self) -> int:
        return 0 if self.plan.clusters is None else self.plan.units

    def _whole(self) -> bool:
        """Whether every example of every run is compared."""
        return all(len(rows) == run.n for rows, run in zip(self.alignment.rows, self.runs))

    def _common(self, members: list[int]) -> list[Parts]:
        """The keys of the other runs, where some run is compared on part of its examples:
        joined with these runs', they keep the examples every run holds."""
        if self._whole():
            return []
        return [run.key_parts for i, run in enumerate(self.runs)
                if i not in members and run.key_parts is not None]

    def _held(self, members: list[int]
              ) -> tuple[list[Parts], list[Parts], Parts, Parts | None] | None:
        """Where a cluster holds these runs: their parts, their keys' parts, the first run's
        slice values (the comparison's baseline's, for its pairs) and cluster indices; None
        where the runs are held here."""
        runs = [self.runs[i] for i in members]
        clusters = self.plan.clusters
        if (clusters is not None and not isinstance(clusters, HeldClusters)) or any(
                run.parts is None or run.key_parts is None or run.slice_parts is None
                for run in runs):
            return None
        parts = [run.parts for run in runs if run.parts is not None]
        keys = [run.key_parts for run in runs if run.key_parts is not None]
        slices = runs[0].slice_parts
        assert slices is not None
        return (parts, keys, slices,
                None if clusters is None else clusters.parts[members[0]])


def _warnings(runs: list[RunData], alignment: Alignment, plan: BootstrapPlan) -> list[str]:
    warnings = []
    if plan.resamples > 0 and plan.little and plan.per_subset < FEW_PER_SUBSET:
        warnings.append(
            f"{plan.resamples} resamples give each of the little bootstraps' {plan.subsets} "
            f"subsets {plan.per_subset}, too few for a subset's own tails: their deviations "
            "are pooled, and measured, two models made the same way are still called "
            "different on ECE 6-7% of the time at alpha 0.05; use --resamples 1000 or more")
    if alignment.keyed_by == "row order":
        warnings.append("no run has an 'id' column: examples were lined up by row order "
                        "(--id-col names another column)")
    for run, dropped in zip(runs, alignment.dropped):
        if dropped:
            warnings.append(f"{run.name}: {dropped} rows left out, their ids are not in every "
                            "run (--allow-partial)")
    for run in runs:
        warnings += [f"{run.name}: {warning}" for warning in reading_warnings(run)]
        if run.temperature is not None and 0 < run.temperature_rows < run.n:
            warnings.append(f"{run.name}: temperature fitted on a sample of "
                            f"{run.temperature_rows} of {run.n} rows")
    return warnings
