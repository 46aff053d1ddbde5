"""Temperature scaling: the single T that minimises mean NLL of softmax(scores / T).

Mean NLL is convex in beta = 1/T, and its derivative is mean(E_p[z] - z_true), which rises
with beta. A safeguarded Newton search on that derivative converges in a handful of passes
over the sample, far fewer than a derivative-free search would need.
"""

from __future__ import annotations

import numpy as np

from .perexample import row_dot

T_MIN, T_MAX = 0.01, 100.0
# Probabilities of exactly 0 arrive as -inf; in the fit they stand at this many nats below the
# row maximum, where exp(beta * floor) underflows to ~1e-44 or less for every T in range.
_FLOOR = -1e4
_CHUNK_VALUES = 1 << 18  # rows are processed in cache-sized chunks of about this many values


class TemperatureSample:
    """Shifted scores (row maximum subtracted) and the true-class entries of the sampled rows."""

    def __init__(self, shifted_parts: list[np.ndarray], true_parts: list[np.ndarray]):
        self.shifted = np.concatenate(shifted_parts) if shifted_parts else np.empty((0, 0))
        self.true_shifted = np.concatenate(true_parts) if true_parts else np.empty(0)
        self.shifted_squared = self.shifted * self.shifted  # the same at every beta

    @staticmethod
    def part(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        shifted = scores - scores.max(axis=1, keepdims=True)
        np.maximum(shifted, _FLOOR, out=shifted)
        return shifted, shifted[np.arange(len(labels)), labels].astype(np.float64)

    def __len__(self) -> int:
        return len(self.true_shifted)

    def slope_and_curvature(self, beta: float) -> tuple[float, float]:
        """d/dbeta and d2/dbeta2 of the mean NLL: mean(E[z] - z_y) and mean(Var[z])."""
        slope = curvature = 0.0
        step = max(1, _CHUNK_VALUES // max(1, self.shifted.shape[1]))
        weights = np.empty((min(step, len(self)), self.shifted.shape[1]), self.shifted.dtype)
        for start in range(0, len(self), step):
            rows = slice(start, start + step)
            shifted = self.shifted[rows]
            chunk = weights[:len(shifted)]
            np.multiply(shifted, beta, out=chunk)
            np.exp(chunk, out=chunk)  # each row's maximum is 0: no overflow
            total = chunk.sum(axis=1, dtype=np.float64)
            first = row_dot(chunk, shifted) / total
            second = row_dot(chunk, self.shifted_squared[rows]) / total
            slope += float(np.sum(first - self.true_shifted[rows]))
            curvature += float(np.sum(np.maximum(second - first * first, 0.0)))
        return slope / len(self), curvature / len(self)


BETA_MIN, BETA_MAX = 1.0 / T_MAX, 1.0 / T_MIN
GROWTH = 4.0  # bracket expansion factor
RELATIVE_STEP = 1e-7  # float32 scores resolve beta to about this; finer steps chase noise


def fit_temperature(sample: TemperatureSample) -> float:
    """Return T in [T_MIN, T_MAX] minimising mean NLL on the sample (clamped at the ends).

    From beta = 1, the bracket around the root of the slope is widened geometrically until the
    slope changes sign (or a search limit is reached, which is then the answer); inside it,
    Newton steps, with bisection whenever a step would leave the bracket. A handful of passes
    over the sample in the usual case.
    """
    beta = 1.0
    slope, curvature = sample.slope_and_curvature(beta)
    lo, hi = BETA_MIN, BETA_MAX
    if slope < 0:  # the optimum has a larger beta: widen upwards
        while slope < 0 and beta < BETA_MAX:
            lo, beta = beta, min(beta * GROWTH, BETA_MAX)
            slope, curvature = sample.slope_and_curvature(beta)
    else:  # a smaller beta: widen downwards
        while slope > 0 and beta > BETA_MIN:
            hi, beta = beta, max(beta / GROWTH, BETA_MIN)
            slope, curvature = sample.slope_and_curvature(beta)
    if (slope < 0 and beta == BETA_MAX) or (slope > 0 and beta == BETA_MIN):
        return 1.0 / beta  # still falling (or rising) at a search limit: clamp there
    for _ in range(100):
        if slope > 0:
            hi = beta
        elif slope < 0:
            lo = beta
        else:
            return 1.0 / beta
        step = beta - slope / curvature if curvature > 0 else np.nan
        new_beta = step if lo < step < hi else 0.5 * (lo + hi)
        if abs(new_beta - beta) <= RELATIVE_STEP * beta:
            return 1.0 / new_beta
        beta = new_beta
        slope, curvature = sample.slope_and_curvature(beta)
    return 1.0 / beta
