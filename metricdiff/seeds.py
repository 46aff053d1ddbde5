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

from .paired import NOISE_CLUSTERS, NOISE_EXAMPLES, Interval, sampling_variance, t_test

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
    method = METHOD_CROSSED_PAIRED if paired else METHOD_CROSSED
    diff = cand.mean(axis=0) - base.mean(axis=0)  # per example: mean of runs minus mean of runs
    example_var, example_df = sampling_variance(diff, clusters)
    spreads = _spreads_of_means(base, cand, paired, clusters)
    return crossed_interval(float(diff.mean()), example_var, example_df, spreads, alpha, method,
                            NOISE_EXAMPLES if clusters is None else NOISE_CLUSTERS)


def class_mean_deltas(base: np.ndarray, cand: np.ndarray, labels: np.ndarray,
                      num_classes: int, alpha: float, paired: bool,
                      clusters: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The same test within every class at once: each class's change of the mean of a
    per-example value (NLL, or correctness for recall) and its p-value; NaN for a class with
    fewer than two examples (or clusters)."""
    diff = cand.mean(axis=0) - base.mean(axis=0)
    support = np.bincount(labels, minlength=num_classes)
    with np.errstate(invalid="ignore", divide="ignore"):
        delta = np.bincount(labels, weights=diff, minlength=num_classes) / support
    example_var, example_df = sampling_variance(diff, clusters, labels, num_classes)
    spreads = _spreads_of_means(base, cand, paired, clusters, labels, num_classes)
    variance, df, _ = crossed_variance(example_var, example_df, spreads)
    _, _, p_value = t_test(delta, np.sqrt(variance), np.where(example_df > 0, df, 0), alpha)
    return delta, p_value


def _spreads_of_means(base: np.ndarray, cand: np.ndarray, paired: bool,
                      clusters: np.ndarray | None, groups: np.ndarray | None = None,
                      count: int = 0) -> list[RunSpread]:
    if paired:  # one group of per-seed differences
        return [_spread_of_means(cand - base, clusters, groups, count)]
    return [_spread_of_means(base, clusters, groups, count),
            _spread_of_means(cand, clusters, groups, count)]


def _spread_of_means(values: np.ndarray, clusters: np.ndarray | None,
                     groups: np.ndarray | None, count: int) -> RunSpread:
    """Each run's mean (within each group of examples, with `groups`), and the spread example
    sampling alone would give them: the example-sampling variance of each run's deviation
    from the runs' per-example mean, summed over runs and divided by runs - 1 (its
    expectation is E[S^2] when seeds do not matter)."""
    runs = len(values)
    if groups is None:
        means = values.mean(axis=1)
    else:
        with np.errstate(invalid="ignore", divide="ignore"):
            means = np.stack([np.bincount(groups, weights=row, minlength=count)
                              for row in values]) / np.bincount(groups, minlength=count)
    if runs < 2:
        return RunSpread(means, np.nan)
    deviations = values - values.mean(axis=0)
    within = sum(sampling_variance(row, clusters, groups, count)[0]
                 for row in deviations) / (runs - 1)
    return RunSpread(means, within)


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
