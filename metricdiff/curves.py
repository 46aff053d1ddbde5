"""The curves the HTML page draws, with their bands, as plain data: computed here, in the
analysis, so that JSON readers get exactly what the page shows.

- The smoothed reliability curve (Blasiok and Nakkiran 2023): accuracy as a smooth function
  of top-1 confidence, the curve whose distance from the diagonal the smooth ECE measures, at
  the smooth ECE's own fixed-point bandwidth (smoothece.py; it matches relplot's curve).
- The risk-coverage curve (Geifman and El-Yaniv 2017): the error rate among the c% most
  confident examples, with the tie rule of metrics.selective_from_sums (a confidence shared by
  several examples is one threshold; the group at a cut is taken in proportion, which is the
  expectation over every order of its ties), so it passes through risk_at_80/90/95 and ends at
  the error rate.

Both bands are pointwise percentile bootstraps: examples resampled with replacement (a fixed
seed), the curve recomputed on each resample, and at each plotted point the 2.5% and 97.5%
quantiles. They show the sampling noise of the curve at each point, not a band that holds the
whole curve at once. The reliability band keeps the bandwidth of the sample (as relplot's
does), so it is the noise of the curve at that bandwidth, not of the bandwidth choice.
"""

from __future__ import annotations

import numpy as np

from .metrics import ConfidenceGroups, ConfidenceOrder, confidence_groups, one_part, risk_at
from .orderstats import Parts
from .smoothece import grid_sizes, reliability_curve, smooth_fit_of

CURVE_POINTS = 101  # confidence 0, 0.01, ..., 1
COVERAGE_POINTS = 100  # coverage 1%, 2%, ..., 100%
RESAMPLES = 200  # relplot's number of bootstrap curves
LEVEL = 0.95
# A point of the smoothed curve with fewer examples than this within one bandwidth of it is
# left out (null): there the curve is the kernel's extrapolation, and relplot fades it out.
MIN_NEAR = 10
RISK_CELL_SHARE = 0.01  # of the examples ahead, in a cell the risk resamples draw from
BLOCK_VALUES = 1 << 21  # resampled weights held at once (16 MB), whatever n and the resamples
STREAM = 14  # this module's own random stream: [seed, STREAM, curve], apart from paired.py's


def run_curves(conf: np.ndarray, correct: np.ndarray, seed: int = 0) -> dict | None:
    """Both curves of one run, JSON-ready; None without examples."""
    return run_curves_of(ConfidenceOrder(one_part(conf, correct)), seed)


def run_curves_of(by_conf: ConfidenceOrder, seed: int = 0) -> dict | None:
    """Both curves of a run held in parts (a cluster's), from sums over the parts: the
    smoothing grids, and the groups of equal confidence in order (ConfidenceGroups)."""
    if by_conf.n == 0:
        return None
    return {"reliability": smoothed_reliability_of(by_conf.parts, by_conf.n, seed),
            "risk_coverage": risk_coverage_of(by_conf.groups, seed)}


def _band(samples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The pointwise percentile band of (resamples, points) curves."""
    low, high = np.quantile(samples, [(1 - LEVEL) / 2, (1 + LEVEL) / 2], axis=0)
    return low, high


def _blocks(width: int) -> list[int]:
    """Resamples per block, for blocks of at most BLOCK_VALUES weights of `width` each."""
    step = max(1, min(RESAMPLES, BLOCK_VALUES // max(1, width)))
    return [min(step, RESAMPLES - start) for start in range(0, RESAMPLES, step)]


# ----------------------------------------------------------------------------- reliability

def grid_cells(conf: np.ndarray, correct: np.ndarray, sigma: float
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """grid_cells_of one run's examples."""
    return grid_cells_of(one_part(conf, correct), sigma)


def grid_cells_of(parts: Parts, sigma: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The examples pooled by (cell of the smoothing grid at sigma, correctness): each cell's
    mean confidence, correctness and count, empty cells left out.

    The grid splits an example's weight between its two neighbouring grid points in
    proportion to its place between them; that split is linear, so a cell's examples put
    together at their mean confidence give the same grid, and the curve of the cells with
    their counts as weights is the curve of the examples. Resampling cells (multinomial
    counts) instead of examples then costs the number of cells, not of examples; what it
    leaves out is where within a cell (a tenth of a bandwidth at most) each drawn example
    lies."""
    size = int(grid_sizes(np.array([sigma]))[0])
    count, conf_sum = sum(parts.map(_cell_sums, size).gather())
    cells = np.flatnonzero(count)
    return conf_sum[cells] / count[cells], (cells % 2).astype(bool), count[cells]


def _cell_sums(examples, size: int) -> np.ndarray:
    """(examples, summed confidence) of each (grid cell, correctness) of a part: (2, 2 size)."""
    conf = np.asarray(examples.conf, dtype=np.float64)
    key = np.clip((conf * (size - 1)).astype(np.int64), 0, size - 2) * 2 + examples.correct
    return np.stack([np.bincount(key, minlength=2 * size).astype(np.float64),
                     np.bincount(key, weights=conf, minlength=2 * size)])


def smoothed_reliability_of(parts: Parts, n: int, seed: int = 0) -> dict:
    """The smoothed reliability curve on CURVE_POINTS confidences, with its bootstrap band,
    the density of confidences, and the bandwidth (the smooth ECE's fixed point), of a run
    of n examples held in parts."""
    ece, sigma = smooth_fit_of(parts)
    t = np.linspace(0, 1, CURVE_POINTS)
    cell_conf, cell_correct, count = grid_cells_of(parts, sigma)
    curve, density = reliability_curve(cell_conf, cell_correct, sigma, t, count[None, :])
    rng = np.random.default_rng([seed, STREAM, 0])
    share = count / n
    samples = []
    for rows in _blocks(len(count)):
        drawn = rng.multinomial(n, share, size=rows).astype(np.float64)
        samples.append(reliability_curve(cell_conf, cell_correct, sigma, t, drawn)[0])
    low, high = _band(np.concatenate(samples))
    near = n * density[0] * 2 * sigma  # examples within one bandwidth, about
    shown = near >= MIN_NEAR
    points = [{"confidence": float(x), "accuracy": float(v) if ok else None,
               "low": float(lo) if ok else None, "high": float(hi) if ok else None,
               "density": float(d)}
              for x, v, lo, hi, d, ok in zip(t, curve[0], low, high, density[0], shown)]
    return {"bandwidth": sigma, "smooth_ece": ece, "level": LEVEL,
            "resamples": RESAMPLES, "seed": seed, "min_examples_near": MIN_NEAR,
            "points": points}


# ----------------------------------------------------------------------------- risk-coverage

def _raw_cells(before: np.ndarray) -> np.ndarray:
    """The cell of each group with `before` examples ahead of it (ascending), numbered with
    gaps: cell widths of one example up to 1 / RISK_CELL_SHARE examples, then
    RISK_CELL_SHARE of the examples ahead, so about (1 + ln(RISK_CELL_SHARE * n)) /
    RISK_CELL_SHARE cells."""
    steps = before * RISK_CELL_SHARE
    position = np.where(steps < 1, steps, 1 + np.log(np.maximum(steps, 1)))
    return np.floor(position / RISK_CELL_SHARE).astype(np.int64)


def risk_coverage_steps(conf: np.ndarray, correct: np.ndarray
                        ) -> tuple[np.ndarray, np.ndarray]:
    """The whole risk-coverage curve, one step per distinct confidence (most confident
    first): (coverage, risk) at each threshold. AURC is its mean over examples."""
    group, groups = confidence_groups(conf)
    count = np.bincount(group, minlength=groups).astype(np.float64)
    cum_n = np.cumsum(count)
    cum_errors = np.cumsum(np.bincount(group, weights=~correct, minlength=groups))
    return cum_n / len(conf), cum_errors / cum_n


def risk_coverage(conf: np.ndarray, correct: np.ndarray, seed: int = 0) -> dict:
    """risk_coverage_of one run's examples."""
    return risk_coverage_of(ConfidenceOrder(one_part(conf, correct)).groups, seed)


def risk_coverage_of(groups: ConfidenceGroups, seed: int = 0) -> dict:
    """The risk at COVERAGE_POINTS coverages, with its bootstrap band and the confidence
    threshold each coverage keeps, of a run's groups of equal confidence."""
    n = groups.n
    coverages = np.arange(1, COVERAGE_POINTS + 1) / COVERAGE_POINTS
    errors_kept, thresholds = groups.at_cuts(n * coverages)
    risk = errors_kept / (n * coverages)
    # The resamples draw from cells of whole groups next to each other in confidence: the
    # sums of each cell are drawn exactly (multinomial counts of its right and wrong
    # examples); only the order within the cell at a cut is averaged over, as within a group
    # of ties. Cells hold one example, or 1 / RISK_CELL_SHARE of the more confident ones:
    # the averaged part of a cut stays a small share of the examples it keeps. Each range
    # of confidence gives its cells' sums, numbered with gaps; numbered here without.
    found = groups.each(_cell_counts)
    raw, right, wrong = (np.concatenate([part[i] for part in found]) for i in range(3))
    numbered, cell = np.unique(raw, return_inverse=True)
    cells = len(numbered)
    sizes = np.stack([np.bincount(cell, weights=right, minlength=cells),
                      np.bincount(cell, weights=wrong, minlength=cells)], axis=1).ravel()
    kinds = np.flatnonzero(sizes)  # (cell, right or wrong) holding examples
    share = sizes[kinds] / n
    rng = np.random.default_rng([seed, STREAM, 1])
    samples = []
    for rows in _blocks(2 * cells):
        flat = np.zeros((rows, 2 * cells))
        flat[:, kinds] = rng.multinomial(int(n), share, size=rows)
        sums = flat.reshape(rows, cells, 2)  # (right, wrong) of each cell
        samples.append(risk_at(sums[:, :, 0] + sums[:, :, 1], sums[:, :, 1], coverages)[0])
    low, high = _band(np.concatenate(samples))
    points = [{"coverage": float(c), "risk": float(r), "low": float(lo), "high": float(hi),
               "threshold": float(t)}
              for c, r, lo, hi, t in zip(coverages, risk, low, high, thresholds)]
    return {"level": LEVEL, "resamples": RESAMPLES, "seed": seed, "points": points}


def _cell_counts(groups: tuple[np.ndarray, ...], ahead: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A range's cells (numbered with gaps) with their right and wrong examples."""
    _, count, errors = groups
    raw = _raw_cells(ahead[0] + np.cumsum(count) - count)
    numbered, cell = np.unique(raw, return_inverse=True)
    return (numbered, np.bincount(cell, weights=count - errors, minlength=len(numbered)),
            np.bincount(cell, weights=errors, minlength=len(numbered)))
