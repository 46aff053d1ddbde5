"""The one place where thresholds live and decisions are made: better, worse or inconclusive."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .errors import UsageError
from .metrics import BLOCK_RESAMPLED, RESAMPLED

if TYPE_CHECKING:  # a type only: importing paired would pull scipy into every start-up
    from .paired import Interval

DECISIONS = ("better", "worse", "inconclusive")
FAIL_ON = ("never", "worse", "not-better")


@dataclass(frozen=True)
class Verdict:
    candidate: str
    metric: str
    decision: str  # one of DECISIONS
    delta: float | None
    ci_low: float | None
    ci_high: float | None
    p_value: float | None
    p_value_adjusted: float | None  # Holm over all candidates
    method: str
    reason: str


def check_primary(metric: str, directions: dict[str, bool | None]) -> None:
    if metric not in directions:
        raise UsageError(f"unknown --primary metric '{metric}'; expected one of: "
                         f"{', '.join(m for m, d in directions.items() if d is not None)}")
    if directions[metric] is None:
        raise UsageError(f"--primary {metric} has no better direction; expected one of: "
                         f"{', '.join(m for m, d in directions.items() if d is not None)}")


def check_settings(alpha: float, min_effect: float, fail_on: str,
                   fdr: float = 0.05) -> None:
    if not 0 < alpha < 1:
        raise UsageError(f"--alpha must be between 0 and 1, got {alpha}")
    if not 0 < fdr < 1:
        raise UsageError(f"--fdr must be between 0 and 1, got {fdr}")
    if not 0 <= min_effect < math.inf:  # NaN and infinity too
        raise UsageError(f"--min-effect must be 0 or more, got {min_effect}")
    if fail_on not in FAIL_ON:
        raise UsageError(f"--fail-on must be one of {', '.join(FAIL_ON)}, got '{fail_on}'")


def min_resamples(alpha: float) -> int:
    """Resamples a bootstrap needs at `alpha`: at least one in each tail of its interval, and a
    smallest possible p of 1 / (R + 1) below alpha."""
    return math.ceil(2 / alpha)


def check_resamples(primary: str, resamples: int, alpha: float) -> None:
    if primary in (*RESAMPLED, *BLOCK_RESAMPLED) and resamples < min_resamples(alpha):
        raise UsageError(f"--primary {primary} is tested by the bootstrap: --resamples must be "
                         f"at least {min_resamples(alpha)} at --alpha {alpha:g}, got {resamples}")


def holm(p_values: list[float | None]) -> list[float | None]:
    """Holm's step-down adjustment; None (no test) stays None and does not count."""
    tested = sorted((p, i) for i, p in enumerate(p_values) if p is not None)
    adjusted: list[float | None] = [None] * len(p_values)
    running = 0.0
    m = len(tested)
    for rank, (p, i) in enumerate(tested):
        running = max(running, min(1.0, (m - rank) * p))
        adjusted[i] = running
    return adjusted


def decide(candidate: str, metric: str, interval: Interval | None, higher_is_better: bool,
           p_adjusted: float | None, alpha: float, min_effect: float,
           tested: int = 1, why_unavailable: str | None = None,
           family: str = "candidates") -> Verdict:
    """`tested`: the candidates Holm adjusted over (`family` names them: the checkpoints of
    a series). The interval and the raw p tell the same story (one reference distribution);
    the adjusted p, which decides, is labelled apart. `why_unavailable`: a run's reason for
    not having the metric, when one has none."""
    if (interval is None or interval.p_value is None or p_adjusted is None
            or interval.ci_low is None or interval.ci_high is None
            or not math.isfinite(interval.ci_low) or not math.isfinite(interval.ci_high)):
        return Verdict(candidate, metric, "inconclusive", None, None, None, None, None,
                       interval.method if interval else "", f"{metric} is unavailable for "
                       "this pair of runs, so nothing can be decided on it"
                       + (f" ({why_unavailable})" if why_unavailable else ""))
    delta = interval.delta
    improvement = delta if higher_is_better else -delta
    moved = "rose" if delta > 0 else ("fell" if delta < 0 else "did not move")
    level = f"{100 * (1 - alpha):g}%"
    adjusted = (f"; Holm-adjusted over {tested} {family} p{_p_text(p_adjusted)}"
                if tested > 1 else "")
    noise = " and ".join(interval.noise)
    facts = (f"{metric} {moved} by {abs(delta):.4g} ({level} CI {interval.ci_low:+.4g} to "
             f"{interval.ci_high:+.4g}, p{_p_text(interval.p_value)}{adjusted}; noise: {noise})")
    if p_adjusted >= alpha:
        decision, why = "inconclusive", "not distinguishable from noise"
    elif abs(delta) < min_effect:
        decision, why = "inconclusive", f"significant but smaller than --min-effect {min_effect:g}"
    elif improvement > 0:
        decision, why = "better", f"{'higher' if higher_is_better else 'lower'} is better"
    else:
        decision, why = "worse", f"{'higher' if higher_is_better else 'lower'} is better"
    return Verdict(candidate, metric, decision, delta, interval.ci_low, interval.ci_high,
                   interval.p_value, p_adjusted, interval.method, f"{facts}: {decision}, {why}.")


def _p_text(p: float) -> str:
    return " < 0.001" if p < 0.001 else f" = {p:.3f}"


def best_run(baseline: str, verdicts: list[Verdict], higher_is_better: bool) -> str:
    """The candidate that is significantly better by the largest effect, else the baseline."""
    better = [(v.delta, v.candidate) for v in verdicts
              if v.decision == "better" and v.delta is not None]
    if not better:
        return baseline
    sign = 1 if higher_is_better else -1
    return max(better, key=lambda pair: sign * pair[0])[1]


def should_fail(verdicts: list[Verdict], fail_on: str) -> bool:
    if fail_on == "worse":
        return any(v.decision == "worse" for v in verdicts)
    if fail_on == "not-better":
        return any(v.decision != "better" for v in verdicts)
    return False
