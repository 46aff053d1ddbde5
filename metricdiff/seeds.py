"""Deltas between groups of runs (several training seeds of one configuration) that count both
sources of noise: which validation examples were drawn, and which seeds were trained.

The runs of every group are scored on the same examples, so seeds and examples are crossed,
not nested. A run's metric is modelled as configuration + seed effect + example-sampling
noise; the difference of two group means then has the variance

    Var(delta) = Var_examples(delta) + sigma_seed(A)^2 / m_A + sigma_seed(B)^2 / m_B

where Var_examples(delta) is the example-sampling variance of the difference of group means
with the seeds held fixed (it carries the shared example effects and the seed-by-example
interaction), and sigma_seed^2 is the variance of a run's metric over seeds beyond what example
sampling alone would make it vary. Each sigma_seed^2 is estimated by the between-run variance
S^2 minus its example-sampling part W (the method of moments of a crossed random-effects
model, truncated at 0), and the degrees of freedom of the sum by Satterthwaite (1946). For a
metric that is a mean over examples every piece has a closed form; for the others (ECE, macro
F1...) Var_examples and W come from the paired bootstrap that every run already shares.

With --paired-seeds the i-th runs of both groups share a seed: the unit is then the per-seed
delta, and the same formula runs on one group of deltas.

Welch's t-test on per-seed values would estimate only the seed part: it treats the validation
set as fixed, so it misses the example-sampling noise of the shared examples.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .metrics import CellSums, GroupMoments, Mergeable
from .paired import NOISE_CLUSTERS, NOISE_EXAMPLES, Interval, t_test

NOISE_SEEDS = "seeds"

METHOD_CROSSED = "seeds x examples variance components, Satterthwaite t"
METHOD_CROSSED_PAIRED = "paired seeds x examples variance components, Satterthwaite t"


@dataclass(frozen=True)
class RunSpread:
    """One group's metric over its runs (axis 0; further axes: classes), with the part of its
    spread that example sampling alone would make: `within` estimates E[S^2] if every seed
    gave the same model."""

    values: np.ndarray  # the metric of each run
    within: np.ndarray | float

    @property
    def runs(self) -> int:
        return len(self.values)

    @property
    def between(self) -> np.ndarray:
        """S^2, the sample variance of the runs' values."""
        return self.values.var(axis=0, ddof=1)

    @property
    def seed_variance(self) -> np.ndarray:
        """sigma_seed^2 per run, truncated at 0 (needs two runs)."""
        return np.maximum(0.0, self.between - self.within)


def crossed_variance(example_var, example_df, spreads: list[RunSpread]):
    """Var(delta) = example part + seed parts, its Satterthwaite degrees of freedom, and the
    seed part alone; element by element (a metric, or every class at once).

    A group of one run has no seed variance of its own: it borrows the df-weighted pool of
    the groups that have one (assumes equal seed variance), whose share then falls on each
    estimable group in proportion to that group's df.
    """
    example_var = np.asarray(example_var, dtype=np.float64)
    estimable = [s for s in spreads if s.runs > 1]
    borrowed = sum(1 / s.runs for s in spreads if s.runs == 1)
    pooled_df = sum(s.runs - 1 for s in estimable)
    variance = example_var.copy()
    seed_var = np.zeros_like(example_var)
    with np.errstate(invalid="ignore", divide="ignore"):
        df_terms = np.where(np.asarray(example_df) > 0, example_var ** 2 / example_df, np.inf)
        for spread in estimable:
            coefficient = 1 / spread.runs + borrowed * (spread.runs - 1) / pooled_df
            part = coefficient * spread.seed_variance
            seed_var = seed_var + part
            variance = variance + part
            df_terms = df_terms + np.where(part > 0, (coefficient * spread.between) ** 2
                                           / (spread.runs - 1), 0.0)
        df = np.where(df_terms > 0, variance ** 2 / df_terms, np.inf)
    # without a seed part the sum is the example part alone: its df, not a rounding of it
    df = np.where(seed_var > 0, df, np.asarray(example_df, dtype=np.float64))
    return variance, df, seed_var


def crossed_interval(delta: float, example_var: float, example_df: int,
                     spreads: list[RunSpread], alpha: float, method: str,
                     unit: str = NOISE_EXAMPLES) -> Interval:
    """Interval and p-value of a difference of group means from its variance components, on
    a t reference with Satterthwaite's degrees of freedom: two runs per side give a wide
    interval, not a wrong one; interval and p come from the same t."""
    variance, df, seed_var = (float(x) for x in crossed_variance(example_var, example_df,
                                                                 spreads))
    noise = (unit, NOISE_SEEDS) if any(s.runs > 1 for s in spreads) else (unit,)
    if not math.isfinite(variance):  # too few examples to estimate anything
        return Interval(delta, None, None, None, method, noise=noise)
    se = math.sqrt(variance)
    low, high, p_value = t_test(delta, se, df, alpha)
    return Interval(delta, float(low), float(high), float(p_value), method, df=df, se=se,
                    noise=noise, seed_var=seed_var)


def mean_metric_delta(base: np.ndarray, cand: np.ndarray, alpha: float, paired: bool,
                      clusters: np.ndarray | None = None) -> Interval:
    """A metric that is a mean over examples: `base` and `cand` are (runs, examples) matrices
    of per-example values on the same examples. Every variance has a closed form."""
    everywhere = np.zeros(base.shape[1], dtype=np.int64)
    return crossed_mean_interval(
        CrossedSums.of(base, cand, paired, everywhere, 1, clusters, _count(clusters)), alpha,
        paired)


def class_mean_deltas(base: np.ndarray, cand: np.ndarray, labels: np.ndarray,
                      num_classes: int, alpha: float, paired: bool,
                      clusters: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The same test within every class at once: each class's change of the mean of a
    per-example value (NLL, or correctness for recall) and its p-value; NaN for a class with
    fewer than two examples (or clusters)."""
    return crossed_class_test(CrossedSums.of(base, cand, paired, labels, num_classes, clusters,
                                             _count(clusters)), alpha)


def _count(clusters: np.ndarray | None) -> int:
    return 0 if clusters is None else int(clusters.max()) + 1


@dataclass(frozen=True)
class SpreadSums(Mergeable):
    """One set of runs on the same examples (a group; with paired seeds, the per-seed
    differences): per run and group of examples, the sum of its values and the moments of
    its deviation from the runs' per-example mean (arrays (runs, groups))."""

    sums: np.ndarray
    deviations: GroupMoments

    @staticmethod
    def of(values: np.ndarray, deviations: np.ndarray, keys: np.ndarray,
           count: int) -> "SpreadSums":
        moments = [GroupMoments.of(row, keys, count) for row in deviations]
        return SpreadSums(np.stack([np.bincount(keys, weights=row, minlength=count)
                                    for row in values]),
                          GroupMoments(*(np.stack([getattr(m, name) for m in moments])
                                         for name in ("n", "mean", "m2"))))

    def run(self, r: int) -> GroupMoments:
        return GroupMoments(self.deviations.n[r], self.deviations.mean[r],
                            self.deviations.m2[r])


@dataclass(frozen=True)
class CrossedSums(Mergeable):
    """The mergeable sums behind the seeds x examples test of a per-example mean, within each
    group of examples at once (keys 0..count-1: one group for the whole set, or the true
    classes): the moments of the per-example difference of the two groups' run means, and
    the spreads of the runs ("base" and "cand", or "paired"); with clusters, per (group,
    cluster) cell the sums of the difference, of each run's deviation, and the examples."""

    diff: GroupMoments
    spreads: dict  # name -> SpreadSums
    cells: CellSums | None

    @staticmethod
    def of(base: np.ndarray, cand: np.ndarray, paired: bool, keys: np.ndarray, count: int,
           clusters: np.ndarray | None = None, cluster_count: int = 0) -> "CrossedSums":
        """`base`, `cand`: (runs, examples) values; `clusters`: each example's cluster index
        (0 .. cluster_count - 1), if any."""
        with np.errstate(invalid="ignore"):  # an infinite NLL on both sides: NaN, as numpy's
            diff = cand.mean(axis=0) - base.mean(axis=0)
            sets = {"paired": cand - base} if paired else {"base": base, "cand": cand}
            deviations = {name: values - values.mean(axis=0) for name, values in sets.items()}
        spreads = {name: SpreadSums.of(values, deviations[name], keys, count)
                   for name, values in sets.items()}
        cells = None
        if clusters is not None:
            columns = [diff, *(row for rows in deviations.values() for row in rows),
                       np.ones(len(diff))]
            cells = CellSums.of(keys, clusters, cluster_count, np.stack(columns, axis=1))
        return CrossedSums(GroupMoments.of(diff, keys, count), spreads, cells)

    def example_variance(self) -> tuple[np.ndarray, np.ndarray]:
        """The example-sampling variance of each group's mean difference, and its df."""
        return self._variance(self.diff, 0)

    def independent_variance(self) -> np.ndarray:
        """The same as if the examples were independent (the design effect's denominator)."""
        return self.diff.variance_of_means()[0]

    def run_spreads(self) -> list[RunSpread]:
        """Each set of runs' means per group, with the spread example sampling alone gives
        them: the sampling variance of each run's deviation from the runs' per-example mean,
        summed over runs and divided by runs - 1 (its expectation is E[S^2] when seeds do not
        matter)."""
        found, column = [], 1  # the cells' columns: the difference, then each deviation
        for spread in self.spreads.values():
            runs = len(spread.sums)
            with np.errstate(invalid="ignore", divide="ignore"):
                means = spread.sums / self.diff.n
            within = np.nan if runs < 2 else sum(
                self._variance(spread.run(r), column + r)[0] for r in range(runs)) / (runs - 1)
            found.append(RunSpread(means, within))
            column += runs
        return found

    def _variance(self, moments: GroupMoments, column: int) -> tuple[np.ndarray, np.ndarray]:
        if self.cells is None:
            return moments.variance_of_means()
        cells = self.cells
        return moments.clustered_variance_of_means(cells.owner, cells.sums[:, column],
                                                   cells.sums[:, -1])


def crossed_mean_interval(sums: CrossedSums, alpha: float, paired: bool) -> Interval:
    """The interval of a mean's change over all examples, from CrossedSums of one group."""
    method = METHOD_CROSSED_PAIRED if paired else METHOD_CROSSED
    example_var, example_df = sums.example_variance()
    spreads = [RunSpread(s.values[:, 0], float(np.ravel(s.within)[0]))
               for s in sums.run_spreads()]
    delta = float(sums.diff.mean[0]) if sums.diff.n[0] else math.nan
    return crossed_interval(delta, float(example_var[0]), int(example_df[0]), spreads, alpha,
                            method, NOISE_EXAMPLES if sums.cells is None else NOISE_CLUSTERS)


def crossed_class_test(sums: CrossedSums, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """Each group's (class's) mean change and the p-value of its seeds x examples t test."""
    with np.errstate(invalid="ignore"):
        delta = np.where(sums.diff.n > 0, sums.diff.mean, np.nan)
    example_var, example_df = sums.example_variance()
    variance, df, _ = crossed_variance(example_var, example_df, sums.run_spreads())
    _, _, p_value = t_test(delta, np.sqrt(variance), np.where(example_df > 0, df, 0), alpha)
    return delta, p_value


def resampled_metric_delta(base_values: np.ndarray, cand_values: np.ndarray,
                           base_draws: list[np.ndarray], cand_draws: list[np.ndarray],
                           alpha: float, paired: bool, example_df: int,
                           unit: str = NOISE_EXAMPLES) -> Interval:
    """A metric that is not a mean over examples: each run's value, and its draws on the
    shared bootstrap resamples (arrays (subsets, 1 + resamples), first column the subset's own
    value). Example-sampling variances are the bootstrap's; averaged over subsets."""
    method = METHOD_CROSSED_PAIRED if paired else METHOD_CROSSED
    base_dev = np.stack([_deviations(d) for d in base_draws])  # (runs, subsets, resamples)
    cand_dev = np.stack([_deviations(d) for d in cand_draws])
    delta_dev = cand_dev.mean(axis=0) - base_dev.mean(axis=0)
    example_var = float(delta_dev.var(axis=1, ddof=1).mean())
    delta = float(cand_values.mean() - base_values.mean())
    if paired:
        spreads = [_spread_of_draws(cand_values - base_values, cand_dev - base_dev)]
    else:
        spreads = [_spread_of_draws(base_values, base_dev),
                   _spread_of_draws(cand_values, cand_dev)]
    return crossed_interval(delta, example_var, example_df, spreads, alpha, method, unit)


def _deviations(draws: np.ndarray) -> np.ndarray:
    return draws[:, 1:] - draws[:, :1]


def _spread_of_draws(values: np.ndarray, deviations: np.ndarray) -> RunSpread:
    if len(values) < 2:
        return RunSpread(values, np.nan)
    # across runs, within each resample: how far apart example sampling pushes the runs
    return RunSpread(values, float(deviations.var(axis=0, ddof=1).mean()))


def seed_spread(values: list[float | None]) -> float | None:
    """The seed-to-seed standard deviation of a metric over a group's runs (None below 2)."""
    present = [v for v in values if v is not None]
    if len(present) < 2 or len(present) < len(values):
        return None
    return float(np.std(present, ddof=1))
