"""Smooth ECE (Blasiok and Nakkiran 2023): a calibration error without bins.

The residuals conf - correct are smoothed over confidence with a Gaussian kernel reflected at
0 and 1; smECE_sigma is the mean absolute smoothed residual, weighted by the smoothed density.
The bandwidth is the fixed point sigma = smECE_sigma, found by bisection. Every step follows
the reference implementation, relplot 1.0 (its default reflected kernel, grid sizes, the
density floor of 1e-4 and 10 bisection steps), so the two agree to float rounding. Only the
how differs: the convolutions go through the FFT, and a block of resamples is spread onto
the grid by one sparse product (the matrix built once per grid size), which together make
bootstrap resamples affordable. Everything is computed for many rows of example weights at
once (one row: a run; more rows: its resamples).
"""

from __future__ import annotations

import math
from functools import partial
from types import SimpleNamespace
from typing import Callable

import numpy as np
from scipy import sparse

from .orderstats import LocalParts, Parts, total_rows

DENSITY_FLOOR = 1e-4  # relplot adds this to the smoothed density
MIN_SIGMA = 0.001  # bisection stops treating smaller bandwidths as distinct
BISECTION_STEPS = 10
SPREAD_ROWS = 1 << 20  # rows a part's grids are spread from at a time


def grid_sizes(sigmas: np.ndarray) -> np.ndarray:
    """Points of the grid the kernel runs on: relplot's max(2000, round(20 / sigma)) halved
    (numpy rounds half to even, as Python's round does)."""
    return np.maximum(2000, np.round(20 / sigmas)).astype(np.int64) // 2 + 1


def evaluation_counts(sigmas: np.ndarray) -> np.ndarray:
    """Points the smoothed curves are summed over: max(round(10 / sigma), 200)."""
    return np.maximum(np.round(10 / sigmas), 200).astype(np.int64)


class SmoothECE:
    """Smooth ECE of one run's confidences, for any rows of example weights."""

    def __init__(self, conf: np.ndarray, correct: np.ndarray):
        self.conf = np.asarray(conf, dtype=np.float64)
        self.residual = self.conf - correct
        self._matrices: dict[int, sparse.csc_matrix] = {}  # spread_matrix, per grid size

    def values(self, weights: np.ndarray) -> np.ndarray:
        """smECE at its own fixed-point bandwidth, for each row of weights (rows, examples).
        Safe to call from several threads: each call keeps its own grids."""
        return self.fit(weights)[0]

    def fit(self, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(smECE, its fixed-point bandwidth) for each row of weights."""
        return _fixed_point(_Block(partial(self._grids, weights)), len(weights))

    def _grids(self, weights: np.ndarray, size: int) -> np.ndarray:
        # the matrix depends on the grid alone: every block of resamples reuses it
        if size not in self._matrices:
            self._matrices[size] = spread_matrix(self.conf, self.residual, size)
        return spread_grids(self._matrices[size], weights)


def _fixed_point(block: "_Block", rows: int) -> tuple[np.ndarray, np.ndarray]:
    """(smECE, its fixed-point bandwidth) of each of the block's rows, by bisection."""
    at_one = block.at(np.ones(rows))
    done = at_one > 1.0  # the fixed point is above 1: relplot returns sigma = 1
    high, low = np.ones(rows), np.zeros(rows)
    for _ in range(BISECTION_STEPS):
        mid = (high + low) / 2
        below = (mid < MIN_SIGMA) | (mid < block.at(mid))
        low = np.where(below, mid, low)
        high = np.where(below, high, mid)
    sigma = np.where(done, 1.0, high)
    return np.where(done, at_one, block.at(sigma)), sigma


class _Block:
    """One block of weight rows, with the grids and spectra its bisection steps share. The
    values smoothed are the residuals conf - correct for smECE, the correctness for the
    reliability curve."""

    def __init__(self, grids: Callable[[int], np.ndarray]):
        self.grids = grids  # grid size -> (2, rows, size): see spread_grids
        self._spectra: dict[int, tuple[np.ndarray, int]] = {}

    def at(self, sigmas: np.ndarray) -> np.ndarray:
        """smECE_sigma for each row at its own sigma; rows that share a grid and evaluation
        points (most of them: both are fixed for sigma above 0.05) are done in one batch."""
        out = np.empty(len(sigmas))
        shapes = np.stack([grid_sizes(sigmas), evaluation_counts(sigmas)], axis=1)
        for size, points in np.unique(shapes, axis=0).tolist():
            rows = np.flatnonzero((shapes[:, 0] == size) & (shapes[:, 1] == points))
            smoothed = self.smoothed(rows, sigmas[rows], size)
            t = np.linspace(0, 1, points)
            r = _interpolate(t, smoothed[0])
            density = _interpolate(t, smoothed[1]) + DENSITY_FLOOR
            out[rows] = np.abs(r).sum(axis=1) / density.sum(axis=1)
        return out

    def smoothed(self, rows: np.ndarray, sigmas: np.ndarray, size: int) -> np.ndarray:
        """The kernel-smoothed grids of weighted values and of weights, (2, rows, size), of
        the given rows at their sigmas (all on grids of `size` points)."""
        spectrum, fft_size = self._spectrum(size)
        kernels, which = _kernel_spectra(sigmas, size, fft_size)
        full = np.fft.irfft(spectrum[:, rows] * kernels[which][None], fft_size)
        return full[:, :, size - 1:2 * size - 1]  # see _spectrum

    def _spectrum(self, size: int) -> tuple[np.ndarray, int]:
        """The FFT of the mirrored grids of values and of weights, (2, rows, bins): the
        same at every bandwidth, so computed once per grid size and block of weights.

        relplot keeps the middle `size` values of np.convolve(mirrored, kernel, "valid").
        Those need only the mirrored values from size // 2 on, 2 size - 1 of them; in their
        linear convolution with the kernel they are outputs size - 1 .. 2 size - 2, which a
        circular convolution of length >= 2 size - 1 gives unaliased."""
        if size not in self._spectra:
            grids = self.grids(size)
            mirrored = np.concatenate([grids[..., ::-1][..., :-1], grids,
                                       grids[..., ::-1][..., 1:]], axis=-1)
            window = mirrored[..., size // 2:size // 2 + 2 * size - 1]
            fft_size = 1 << (2 * size - 2).bit_length()
            self._spectra[size] = (np.fft.rfft(window, fft_size), fft_size)
        return self._spectra[size]


def _neighbours(conf: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Each confidence's left neighbour on a grid of `size` points, and its share of the
    right one: an example is split linearly between the two (relplot's
    smooth_round_to_grid)."""
    scaled = conf * (size - 1)
    left = np.clip(scaled.astype(np.int64), 0, size - 2)
    return left, scaled - left


def spread_matrix(conf: np.ndarray, values: np.ndarray, size: int) -> sparse.csc_matrix:
    """Each example's value, and its weight 1, split between its two neighbours on a grid of
    `size` points: a (2 size, examples) matrix, column i holding example i's four shares
    (rows: the grid of values, then of weights)."""
    left, frac = _neighbours(conf, size)
    rows = np.stack([left, left + 1, size + left, size + left + 1], axis=1).ravel()
    shares = np.stack([values * (1 - frac), values * frac, 1 - frac, frac], axis=1).ravel()
    starts = np.arange(0, len(rows) + 1, 4)
    return sparse.csc_matrix((shares, rows, starts), shape=(2 * size, len(conf)))


def spread_grids(matrix: sparse.csc_matrix, weights: np.ndarray) -> np.ndarray:
    """Weighted values and weights on the grid of a spread_matrix, (2, rows, size), for each
    row of example weights: one sparse product for all rows, the matrix reused by every
    block of resamples. Sums over examples, so the grids of a run's parts add up to the
    run's."""
    grids = np.asarray(matrix @ weights.T)  # (2 size, rows)
    return grids.reshape(2, -1, len(weights)).transpose(0, 2, 1)


def part_grids(examples, size: int) -> np.ndarray:
    """The grids of spread_grids for one part of a run (its residuals conf - correct, every
    weight 1), (2, 1, size), by two bincounts per SPREAD_ROWS rows: for a single row of
    weights, building the matrix costs more than it saves (at 5 million rows about 0.3 s
    and 500 MB, where the bincounts take half the time), and in pieces the temporaries stay
    a few tens of MB at any size."""
    grids = np.zeros((2, 1, size))
    for start in range(0, len(examples.conf), SPREAD_ROWS):
        rows = slice(start, start + SPREAD_ROWS)
        conf = np.asarray(examples.conf[rows], dtype=np.float64)
        left, frac = _neighbours(conf, size)
        keys = np.concatenate([left, left + 1])

        def spread(values: np.ndarray) -> np.ndarray:
            parts = np.concatenate([values * (1 - frac), values * frac])
            return np.bincount(keys, weights=parts, minlength=size)

        grids[:, 0] += np.stack([spread(conf - examples.correct[rows]),
                                 spread(np.ones(len(conf)))])
    return grids


def _kernel_spectra(sigmas: np.ndarray, size: int, fft_size: int
                    ) -> tuple[np.ndarray, np.ndarray]:
    """The FFT of relplot's Gaussian sampled on the grid, once per distinct sigma, and which
    one each row takes."""
    distinct, which = np.unique(sigmas, return_inverse=True)
    t = np.linspace(0, 1, size)[None, :]
    sigma = distinct[:, None]
    kernel = np.exp(-(t - 0.5) ** 2 / (2 * sigma ** 2)) / (math.sqrt(2 * math.pi) * sigma)
    return np.fft.rfft(kernel, fft_size), which


def _interpolate(t: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Linear interpolation of each row, given at i / (size - 1), at the points t."""
    size = grid.shape[1]
    index = np.clip((t * (size - 1)).astype(np.int64), 0, size - 2)
    residual = (t - index / (size - 1)) * (size - 1)
    return grid[:, index] * (1 - residual) + grid[:, index + 1] * residual


def reliability_curve(conf: np.ndarray, correct: np.ndarray, sigma: float, t: np.ndarray,
                      weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """relplot's smoothed reliability curve at the points t for bandwidth sigma, and the
    density of confidences there, for each row of example weights (default: one row of
    ones); each (rows, len(t)).

    The curve is the kernel-smoothed correctness over the smoothed weight (plus relplot's
    floor, on the scale of example counts): relplot's KernelSmoother with the reflected
    kernel, not re-centred. The density is the smoothed weight over the total weight, as
    relplot's kde (its area over [0, 1] is about 1)."""
    conf = np.asarray(conf, dtype=np.float64)
    weights = np.ones((1, len(conf))) if weights is None else weights
    rows = len(weights)
    correct = np.asarray(correct, dtype=np.float64)
    block = _Block(lambda size: spread_grids(spread_matrix(conf, correct, size), weights))
    size = int(grid_sizes(np.array([sigma]))[0])
    smoothed = block.smoothed(np.arange(rows), np.full(rows, float(sigma)), size)
    hits, mass = _interpolate(t, smoothed[0]), _interpolate(t, smoothed[1])
    return hits / (mass + DENSITY_FLOOR), mass / weights.sum(axis=1, keepdims=True)


def smooth_ece_of(parts: "Parts") -> float:
    """The smooth ECE of a run held in parts: each grid is the sum of the parts' grids."""
    return smooth_fit_of(parts)[0]


def smooth_fit_of(parts: "Parts") -> tuple[float, float]:
    """(smooth ECE, its fixed-point bandwidth) of a run held in parts; NaN without rows."""
    if total_rows(parts) == 0:
        return float("nan"), float("nan")

    def grids(size: int) -> np.ndarray:  # once per size: _Block keeps its spectrum
        return sum(parts.map(part_grids, size).gather())

    ece, sigma = _fixed_point(_Block(grids), 1)
    return float(ece[0]), float(sigma[0])


def smooth_ece(conf: np.ndarray, correct: np.ndarray) -> float:
    """The smooth ECE of one run."""
    return smooth_ece_of(LocalParts([SimpleNamespace(conf=conf, correct=correct)]))
