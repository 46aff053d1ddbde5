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
from scipy import special

from .paired import Interval, sampling_variance

NOISE_EXAMPLES = "examples"
NOISE_CLUSTERS = "clusters"
NOISE_SEEDS = "seeds"

METHOD_CROSSED = "seeds x examples variance components, Satterthwaite t"
METHOD_CROSSED_PAIRED = "paired seeds x examples variance components, Satterthwaite t"


@dataclass(frozen=True)
class RunSpread:
    """One group's metric over its runs, with the part of its spread that example sampling
    alone would make: `within` estimates E[S^2] if every seed gave the same model."""

    values: np.ndarray  # the metric of each run
    within: float

    @property
    def between(self) -> float:
        """S^2, the sample variance of the runs' values."""
        return float(self.values.var(ddof=1)) if len(self.values) > 1 else math.nan

    @property
    def seed_variance(self) -> float | None:
        """sigma_seed^2 per run, truncated at 0; None with a single run (not estimable)."""
        if len(self.values) < 2:
            return None
        return max(0.0, self.between - self.within)


def crossed_interval(delta: float, example_var: float, example_df: int,
                     spreads: list[RunSpread], alpha: float, method: str,
                     unit: str = NOISE_EXAMPLES) -> Interval:
    """Interval and p-value of a difference of group means from its variance components.

    `spreads` holds each group's runs (or, with paired seeds, the one group of per-seed
    deltas). A group of one run has no seed variance of its own: it borrows the pooled
    estimate of the groups that have one (assumes equal seed variance; labelled in the noise
    sources). The t reference has Satterthwaite's degrees of freedom, so two runs per side
    give a wide interval, not a wrong one; interval and p come from the same t.
    """
    estimable = [s for s in spreads if s.seed_variance is not None]
    # a single run's seed variance is the df-weighted pool of the others': its share of the
    # variance falls on each estimable group in proportion to that group's df
    borrowed = sum(1 / len(s.values) for s in spreads if s.seed_variance is None)
    pooled_df = sum(len(s.values) - 1 for s in estimable)
    variance = example_var
    seed_var = 0.0
    df_terms = example_var ** 2 / example_df if example_df > 0 else math.inf
    for spread in estimable:
        df = len(spread.values) - 1
        coefficient = 1 / len(spread.values) + borrowed * df / pooled_df
        if spread.seed_variance > 0:
            seed_var += coefficient * spread.seed_variance
            variance += coefficient * spread.seed_variance
            df_terms += (coefficient * spread.between) ** 2 / df
    noise = (unit, NOISE_SEEDS) if estimable else (unit,)
    if not math.isfinite(variance):  # too few examples to estimate anything
        return Interval(delta, None, None, None, method, noise=noise)
    if variance == 0:  # no spread at all (often: every difference 0)
        return Interval(delta, delta, delta, 1.0 if delta == 0 else 0.0, method, noise=noise)
    df = variance ** 2 / df_terms if df_terms > 0 else math.inf
    se = math.sqrt(variance)
    t_crit = special.stdtrit(df, 1 - alpha / 2) if math.isfinite(df) else special.ndtri(
        1 - alpha / 2)
    tail = special.stdtr(df, -abs(delta) / se) if math.isfinite(df) else special.ndtr(
        -abs(delta) / se)
    return Interval(delta, delta - t_crit * se, delta + t_crit * se, float(min(1.0, 2 * tail)),
                    method, df=float(df), se=se, noise=noise, seed_var=seed_var)


def mean_metric_delta(base: np.ndarray, cand: np.ndarray, alpha: float, paired: bool,
                      clusters: np.ndarray | None = None) -> Interval:
    """A metric that is a mean over examples: `base` and `cand` are (runs, examples) matrices
    of per-example values on the same examples. Every variance has a closed form."""
    method = METHOD_CROSSED_PAIRED if paired else METHOD_CROSSED
    diff = cand.mean(axis=0) - base.mean(axis=0)  # per example: mean of runs minus mean of runs
    example_var, example_df = sampling_variance(diff, clusters)
    if paired:
        spreads = [_spread_of_means(cand - base, clusters)]
    else:
        spreads = [_spread_of_means(base, clusters), _spread_of_means(cand, clusters)]
    return crossed_interval(float(diff.mean()), example_var, example_df, spreads, alpha, method,
                            NOISE_EXAMPLES if clusters is None else NOISE_CLUSTERS)


def _spread_of_means(values: np.ndarray, clusters: np.ndarray | None) -> RunSpread:
    """Each run's mean, and the spread example sampling alone would give them: the example
    sampling variance of each run's deviation from the runs' per-example mean, summed over
    runs and divided by runs - 1 (its expectation is E[S^2] when seeds do not matter)."""
    means = values.mean(axis=1)
    runs = len(values)
    if runs < 2:
        return RunSpread(means, math.nan)
    deviations = values - values.mean(axis=0)
    within = sum(sampling_variance(row, clusters)[0] for row in deviations) / (runs - 1)
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
        return RunSpread(values, math.nan)
    # across runs, within each resample: how far apart example sampling pushes the runs
    return RunSpread(values, float(deviations.var(axis=0, ddof=1).mean()))


def seed_spread(values: list[float | None]) -> float | None:
    """The seed-to-seed standard deviation of a metric over a group's runs (None below 2)."""
    present = [v for v in values if v is not None]
    if len(present) < 2 or len(present) < len(values):
        return None
    return float(np.std(present, ddof=1))
