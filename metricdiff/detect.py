"""What a comparison could detect: the smallest change of the primary metric it would find
at 80% power, and roughly how many examples (or runs per side) would find the change seen.

The formulas are the normal-approximation ones for a paired design (Miller 2024, "Adding
error bars to evals"): a change d is found with power 1 - beta when |d| >= (z_{1-alpha/2} +
z_{1-beta}) * se. The example part of se^2 shrinks as 1/n (1/clusters with --cluster), the
seed part as 1/runs per side; projections hold the other part fixed.
"""

from __future__ import annotations

import math

from scipy import special

from .paired import Interval

POWER = 0.8


def detectable(interval: Interval | None, alpha: float, n: int, clusters: int | None,
               runs: int) -> dict | None:
    """Minimum detectable effect at POWER and alpha, and the examples (clusters, with
    --cluster; or runs per side) that would detect the observed delta; None where the
    interval has no standard error. A None count: no number of them alone would do."""
    if interval is None or interval.se is None or not interval.se > 0:
        return None
    z_normal = special.ndtri(1 - alpha / 2) + special.ndtri(POWER)
    z = z_normal  # the MDE of this comparison uses its own t reference, where it has one
    if interval.df is not None and math.isfinite(interval.df) and interval.df > 0:
        z = special.stdtrit(interval.df, 1 - alpha / 2) + special.stdtrit(interval.df, POWER)
    seed_part = interval.seed_var or 0.0
    example_part = interval.se ** 2 - seed_part
    # the variance at which the observed delta would be found (normal quantiles: the df of
    # a larger comparison is not known in advance)
    target = (interval.delta / z_normal) ** 2
    examples = clusters_needed = runs_needed = None
    if target > seed_part and example_part > 0:
        ratio = example_part / (target - seed_part)
        examples = math.ceil(n * ratio)
        clusters_needed = math.ceil(clusters * ratio) if clusters is not None else None
    if seed_part > 0 and target > example_part:
        runs_needed = math.ceil(runs * seed_part / (target - example_part))
    return {"power": POWER, "alpha": alpha, "mde": float(z * interval.se),
            "examples_needed": examples, "clusters_needed": clusters_needed,
            "runs_needed_per_side": runs_needed}
