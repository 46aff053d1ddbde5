"""Ranked differences: which metrics moved most clearly, and which classes, slices, confidence
bins and examples the change of the primary metric comes from."""

from __future__ import annotations


import numpy as np

from .metrics import ClassCounts, MetricSettings, bin_edges, ratio
from .pairsums import FLIP_GROUPS, PairSums, ValueSums, WorstExamples
from .paired import Interval, contribution_interval_from_sums, per_example_values


def rank_metrics(deltas: dict[str, Interval], directions: dict[str, bool | None]) -> list[dict]:
    """Most clearly moved first: smallest p-value, then largest relative change."""
    rows = []
    for name, interval in deltas.items():
        if interval.p_value is None:
            continue
        rows.append({"metric": name, "delta": interval.delta, "p_value": interval.p_value,
                     "change": change_word(interval.delta, directions.get(name))})
    return sorted(rows, key=lambda row: (row["p_value"], -abs(row["delta"])))


def change_word(delta: float | None, higher_is_better: bool | None) -> str | None:
    if delta is None:
        return None
    if delta == 0:
        return "unchanged"
    if higher_is_better is None:
        return "up" if delta > 0 else "down"
    return "better" if (delta > 0) == higher_is_better else "worse"


def attributed_metric(primary: str, settings: MetricSettings) -> str:
    """The per-example mean whose change is split over groups of examples: the primary
    metric where it is one, else the mean NLL."""
    return primary if primary in per_example_values(settings) else "nll"


def class_contribution(primary: str, metric: str, by_class: np.ndarray, base: ClassCounts,
                       cand: ClassCounts) -> tuple[np.ndarray, str]:
    """Each class's contribution to the change of the primary metric, and the metric it is of:
    `by_class`, the change of the attributed `metric` split over the true classes, except
    for balanced accuracy and macro F1, which split over classes themselves."""
    num_classes = len(by_class)
    if primary == "balanced_accuracy":
        present = base.support > 0

        def recall(k: ClassCounts) -> np.ndarray:
            return np.divide(k.hits, k.support, out=np.zeros(num_classes), where=present)

        return (recall(cand) - recall(base)) / present.sum(), primary
    if primary == "macro_f1":
        base_present = (base.support > 0) | (base.predicted > 0)
        cand_present = (cand.support > 0) | (cand.predicted > 0)
        return cand.f1() / cand_present.sum() - base.f1() / base_present.sum(), primary
    return by_class, metric


def rank_classes(contribution: np.ndarray, metric: str, b: ClassCounts, c: ClassCounts,
                 class_names, limit: int) -> dict:
    """The classes whose contribution to the change is largest, from `class_contribution`."""
    seen = np.flatnonzero(contribution != 0)
    order = seen[np.argsort(-np.abs(contribution[seen]), kind="stable")][:limit or None]
    rows = [{"class": int(k), "name": class_names[k] if class_names is not None else str(k),
             "support": int(b.support[k]), "contribution": float(contribution[k]),
             "baseline_recall": ratio(b.hits[k], b.support[k]),
             "candidate_recall": ratio(c.hits[k], c.support[k]),
             "baseline_nll": ratio(b.nll_sum[k], b.support[k]),
             "candidate_nll": ratio(c.nll_sum[k], c.support[k])} for k in order]
    return {"metric": metric, "rows": rows}


def slice_rows(sums: ValueSums, n: int, metric: str, limit: int) -> dict:
    """The values largest in contribution first, from their sums of SLICE_COLUMNS."""
    count, attributed, base_hits, cand_hits, base_nll, cand_nll = sums.sums.T
    contribution = attributed / n
    order = np.argsort(-np.abs(contribution), kind="stable")[:limit or None]
    rows = [{"value": str(sums.keys[i]), "n": int(count[i]),
             "contribution": float(contribution[i]),
             "baseline_accuracy": float(base_hits[i] / count[i]),
             "candidate_accuracy": float(cand_hits[i] / count[i]),
             "baseline_nll": float(base_nll[i] / count[i]),
             "candidate_nll": float(cand_nll[i] / count[i])} for i in order]
    return {"metric": metric, "rows": rows}


def confidence_bin_rows(contribution: np.ndarray, metric: str, count: np.ndarray,
                        base_hits: np.ndarray, cand_hits: np.ndarray) -> dict:
    """The equal-width bins of the baseline's confidence, largest contribution first, from
    each bin's contribution, examples and correct predictions of each run."""
    bins = len(count)
    edges = bin_edges(bins)
    order = [i for i in np.argsort(-np.abs(contribution), kind="stable") if count[i]]
    rows = [{"lower": float(edges[i]), "upper": float(edges[i + 1]), "count": int(count[i]),
             "contribution": float(contribution[i]),
             "baseline_accuracy": float(base_hits[i] / count[i]),
             "candidate_accuracy": float(cand_hits[i] / count[i])} for i in order]
    return {"metric": metric, "grouped_by": "baseline confidence", "rows": rows}


def rank_examples(worst: WorstExamples, class_names) -> list[dict]:
    """The examples whose loss rose the most, to go and look at."""
    name = (lambda k: class_names[k]) if class_names is not None else int
    columns = worst.columns
    return [{"id": worst.ids[i].item() if hasattr(worst.ids[i], "item") else worst.ids[i],
             "label": name(int(columns["label"][i])),
             "baseline_pred": name(int(columns["baseline_pred"][i])),
             "candidate_pred": name(int(columns["candidate_pred"][i])),
             "baseline_nll": float(columns["baseline_nll"][i]),
             "candidate_nll": float(columns["candidate_nll"][i]),
             "nll_rise": float(worst.rise[i]),
             "baseline_conf": float(columns["baseline_conf"][i]),
             "candidate_conf": float(columns["candidate_conf"][i])}
            for i in range(len(worst.rise))]


def contribution_intervals(diff: np.ndarray, keys: np.ndarray, size: int, alpha: float,
                           clusters: np.ndarray | None = None
                           ) -> tuple[np.ndarray, np.ndarray]:
    """The t interval of each group's contribution sum_{i in k} diff_i / n (keys in
    [0, size)), from per-example changes: their sums per group, and per (group, cluster)
    cell with clusters, found by np.unique rather than a groups x clusters table."""
    n = len(diff)
    sums = np.bincount(keys, weights=diff, minlength=size)
    if clusters is None:
        return contribution_interval_from_sums(
            sums, n, alpha, np.bincount(keys, weights=diff * diff, minlength=size))
    count = int(clusters.max()) + 1
    sizes = np.bincount(clusters, minlength=count).astype(np.float64)
    cells, cell = np.unique(keys.astype(np.int64) * count + clusters, return_inverse=True)
    cell_sums = np.bincount(cell, weights=diff)
    owner, member = cells // count, cells % count
    return contribution_interval_from_sums(
        sums, n, alpha, np.bincount(owner, weights=cell_sums * cell_sums, minlength=size),
        clustered=(np.bincount(owner, weights=cell_sums * sizes[member], minlength=size),
                   float(np.dot(sizes, sizes)), count))


def add_contribution_intervals(comparison: dict, pair: PairSums, base: ClassCounts,
                               alpha: float) -> None:
    """ci_low and ci_high on the plotted contributions of one pair of runs, from its sums:
    the NLL change by example group, and the ranked classes (where the class contribution
    is a sum over its examples: not for macro F1, whose per-class F1 is not). `base`: the
    baseline's class counts."""
    low, high = pair.flip_intervals(alpha)
    for row in comparison["explanation"]["nll_by_flip"]:
        g = FLIP_GROUPS.index(row["group"])
        row["ci_low"], row["ci_high"] = low[g], high[g]
    ranked = comparison["ranked"]["classes"]
    metric = ranked["metric"]
    if metric == "balanced_accuracy":  # (recall change) / classes = sum over the class of
        support = _sized(base.support, len(pair.class_count))  # (cand - base correctness)
        #                                                       / (support x classes)
        present = int((support > 0).sum())
        with np.errstate(divide="ignore"):
            scale = np.where(support > 0, pair.n / (support * present), 0.0)
        low, high = pair.class_intervals("accuracy", alpha, scale)
    elif metric == "macro_f1":
        return
    else:
        low, high = pair.class_intervals("attributed", alpha)
    for row in ranked["rows"]:
        row["ci_low"], row["ci_high"] = low[row["class"]], high[row["class"]]


def _sized(values: np.ndarray, size: int) -> np.ndarray:
    """`values` cut or padded with zeros to `size` entries."""
    out = np.zeros(size, dtype=np.float64)
    out[:min(size, len(values))] = values[:size]
    return out
