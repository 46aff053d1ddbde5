"""Groups of runs (several seeds of one configuration): which runs pair with which, per-group
means and seed-to-seed spreads, figures averaged over run pairs, and the seed noise floor."""

from __future__ import annotations

import itertools
import numbers
from dataclasses import dataclass

import numpy as np

from .paired import Interval
from .perexample import PerExample
from .seeds import seed_spread


def run_pairs(base_idx: list[int], cand_idx: list[int], paired_seeds: bool
              ) -> list[tuple[int, int]]:
    """The (baseline run, candidate run) pairs an explanation is averaged over: the i-th with
    the i-th when seeds are paired, otherwise every baseline run with every candidate run
    (then a mean over pairs is exactly the difference of group means, for every figure that
    is a mean over examples)."""
    if paired_seeds:
        return list(zip(base_idx, cand_idx))
    return list(itertools.product(base_idx, cand_idx))


@dataclass
class GroupExamples:
    """Per-example values averaged over a group's runs, with the attribute names of
    PerExample that the ranked lists read; `correct` is the share of runs that got it right
    and `pred` the class most runs predicted (ties: the lowest)."""

    label: np.ndarray
    pred: np.ndarray
    correct: np.ndarray
    conf: np.ndarray
    nll: np.ndarray

    @staticmethod
    def of(runs: list[PerExample], num_classes: int) -> "GroupExamples":
        preds = np.stack([pe.pred for pe in runs])
        # the most frequent prediction per example: count votes per (example, class) pair
        n = preds.shape[1]
        keys = (np.arange(n)[None, :] * num_classes + preds).ravel()
        uniq, votes = np.unique(keys, return_counts=True)
        example, klass = np.divmod(uniq, num_classes)
        order = np.lexsort((klass, -votes, example))  # per example: most votes, lowest class
        first = np.ones(len(order), dtype=bool)
        first[1:] = example[order][1:] != example[order][:-1]
        mode = np.empty(n, dtype=np.int64)
        mode[example[order][first]] = klass[order][first]
        return GroupExamples(label=runs[0].label, pred=mode,
                             correct=np.mean([pe.correct for pe in runs], axis=0),
                             conf=np.mean([pe.conf for pe in runs], axis=0),
                             nll=np.mean([pe.nll for pe in runs], axis=0))

    def __len__(self) -> int:
        return len(self.label)


def average_over_pairs(records: list):
    """The mean of same-shaped records (dicts, lists, numbers): numbers are averaged, other
    values kept where every record agrees (else None)."""
    return _over_pairs(records, lambda values: float(np.mean(values)) if len(values) > 1
                       else values[0])


def spread_over_pairs(records: list):
    """The standard deviation over pairs of every number in the records (None below two
    pairs); other values kept where every record agrees."""
    return _over_pairs(records, lambda values: float(np.std(values, ddof=1))
                       if len(values) > 1 else None)


def _over_pairs(records: list, reduce):
    """Walk same-shaped records together, reducing each list of numbers found at one place."""
    first = records[0]
    if isinstance(first, dict):
        return {key: _over_pairs([r[key] for r in records], reduce) for key in first}
    if isinstance(first, list):
        return [_over_pairs(list(items), reduce) for items in zip(*records)]
    present = [r for r in records if r is not None]
    if present and _numbers(present):  # a figure undefined in some pairs (an empty group):
        return reduce(present)  # over the pairs where it is defined
    return first if all(r == first for r in records) else None


def _numbers(values: list) -> bool:
    return all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in values)


def group_summaries(members: dict[str, list[int]], summaries: list[dict], runs) -> list[dict]:
    """Per group: its runs (name and path), each metric's mean over them and its seed-to-seed
    standard deviation (None for a single run)."""
    out = []
    for name, indices in members.items():
        metrics = summaries[indices[0]]["metrics"]
        mean, sd = {}, {}
        for metric in metrics:
            values = [summaries[i]["metrics"][metric] for i in indices]
            present = None not in values
            mean[metric] = float(np.mean(values)) if present else None
            sd[metric] = seed_spread(values)
        mean["n"] = metrics["n"]
        sd["n"] = None
        out.append({"name": name, "size": len(indices),
                    "runs": [{"name": runs[i].name, "path": runs[i].layout.path}
                             for i in indices],
                    "mean": mean, "sd": sd})
    return out


def noise_floor_table(pair_deltas: list[dict[str, Interval]], alpha: float) -> dict:
    """How different two runs of one configuration are: per metric, the differences between
    every pair of baseline runs and how many of them the one-pair test calls significant."""
    table = {}
    for name in pair_deltas[0]:
        intervals = [pair[name] for pair in pair_deltas if name in pair]
        p_values = [i.p_value for i in intervals if i.p_value is not None]
        if len(p_values) < len(intervals):
            continue
        diffs = np.abs([i.delta for i in intervals])
        significant = sum(p < alpha for p in p_values)
        table[name] = {"pairs": len(intervals), "mean_abs_diff": float(diffs.mean()),
                       "max_abs_diff": float(diffs.max()), "significant_pairs": int(significant),
                       "significant_share": significant / len(intervals)}
    return table
