"""Temperature scaling: the single T that minimises mean NLL of softmax(scores / T).

Mean NLL is convex in beta = 1/T, and its derivative is mean(E_p[z] - z_true), which rises
with beta. A safeguarded Newton search on that derivative converges in a handful of passes
over the sample, far fewer than a derivative-free search would need.
"""

from __future__ import annotations

import math

import numpy as np

from .perexample import row_dot

T_MIN, T_MAX = 0.01, 100.0
# Probabilities of exactly 0 arrive as -inf; in the fit they (and only they) stand at this many
# nats below the row maximum, where exp(beta * floor) underflows to ~1e-44 or less for every T
# in range. Finite scores are kept as they are, however far below the maximum.
_FLOOR = -1e4
_CHUNK_VALUES = 1 << 18  # rows are processed in cache-sized chunks of about this many values


class TemperatureSample:
    """Shifted scores (row maximum subtracted) and the true-class entries of the sampled rows,
    kept as the batches they were read in (no copy into one array)."""

    def __init__(self):
        self.shifted: list[np.ndarray] = []
        self.true_shifted: list[np.ndarray] = []

    def add(self, scores: np.ndarray, labels: np.ndarray) -> None:
        row_max = scores.max(axis=1, keepdims=True)
        with np.errstate(over="ignore"):  # a float32 gap beyond 3.4e38 becomes -inf: its exp is 0
            shifted = scores - row_max
        shifted[np.isneginf(shifted)] = _FLOOR
        self.shifted.append(shifted)
        # the true class's gap in float64: exact, where float32 would overflow
        true = scores[np.arange(len(labels)), labels].astype(np.float64) - row_max[:, 0]
        self.true_shifted.append(np.where(np.isneginf(true), _FLOOR, true))

    def __len__(self) -> int:
        return sum(len(part) for part in self.true_shifted)

    def slope_and_curvature(self, beta: float) -> tuple[float, float]:
        """d/dbeta and d2/dbeta2 of the mean NLL: mean(E[z] - z_y) and mean(Var[z]).

        Per-row terms first, summed once at the end: the result does not depend on how the
        sample was split into batches and chunks.
        """
        slopes, variances = [], []
        for shifted_part, true_part in zip(self.shifted, self.true_shifted):
            step = max(1, _CHUNK_VALUES // max(1, shifted_part.shape[1]))
            weights = np.empty((min(step, len(shifted_part)), shifted_part.shape[1]),
                               shifted_part.dtype)
            weighted = np.empty_like(weights)
            for start in range(0, len(shifted_part), step):
                shifted = shifted_part[start:start + step]
                chunk, moment = weights[:len(shifted)], weighted[:len(shifted)]
                np.multiply(shifted, beta, out=chunk)
                np.exp(chunk, out=chunk)  # each row's maximum is 0: no overflow
                total = chunk.sum(axis=1, dtype=np.float64)
                first = row_dot(chunk, shifted) / total
                np.multiply(chunk, shifted, out=moment)
                second = row_dot(moment, shifted) / total
                slopes.append(first - true_part[start:start + step])
                variances.append(np.maximum(second - first * first, 0.0))
        return float(np.concatenate(slopes).mean()), float(np.concatenate(variances).mean())


BETA_MIN, BETA_MAX = 1.0 / T_MAX, 1.0 / T_MIN
GROWTH = 4.0  # how far a step may go beyond the sampled betas while one side is unbounded
RELATIVE_STEP = 1e-7  # float32 scores resolve beta to about this; finer steps chase noise


def fit_temperature(sample: TemperatureSample) -> float:
    """Return T in [T_MIN, T_MAX] minimising mean NLL on the sample (clamped at the ends).

    Newton steps on the slope from beta = 1, kept inside a bracket [lo, hi] that holds the
    root: each evaluated beta moves one end of it, by the slope's sign. A step that would leave
    the bracket goes GROWTH times further out while one end is still a search limit (so a
    limit is reached in a few passes, and is then the answer if the slope keeps its sign
    there), and to the bracket's geometric middle otherwise.
    """
    lo, hi = BETA_MIN, BETA_MAX
    beta = 1.0
    for _ in range(100):
        slope, curvature = sample.slope_and_curvature(beta)
        if slope == 0:
            return 1.0 / beta
        if slope > 0:
            hi = beta
        else:
            lo = beta
        if lo == BETA_MAX or hi == BETA_MIN:  # still falling (rising) at a search limit
            return 1.0 / beta
        step = beta - slope / curvature if curvature > 0 else math.nan
        if not lo < step < hi:
            if slope < 0 and hi == BETA_MAX:
                step = min(beta * GROWTH, BETA_MAX)
            elif slope > 0 and lo == BETA_MIN:
                step = max(beta / GROWTH, BETA_MIN)
            else:
                step = math.sqrt(lo * hi)
        if abs(step - beta) <= RELATIVE_STEP * beta:
            return 1.0 / step
        beta = step
    return 1.0 / beta
