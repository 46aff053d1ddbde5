"""Calibration of every class probability, not only the top one: sums per (class, bin).

For class j and equal-width bin b of the probability p_j (the bins of `ece`), with n examples:
n_jb examples fall in the bin, s_jb is the sum of their p_j, h_jb how many of them are of
class j. From these sums alone:

- classwise ECE (Kull et al. 2019): 1/K sum_j sum_b |h_jb - s_jb| / n, every class counted;
- the Brier decomposition (Murphy 1973), for each class's one-vs-rest Brier score and summed
  over classes, so that it splits the multiclass Brier score:
  reliability sum_jb (s_jb - h_jb)^2 / (n n_jb), resolution sum_jb n_jb (h_jb/n_jb - o_j)^2 / n
  with o_j = sum_b h_jb / n, uncertainty sum_j o_j (1 - o_j); with binned forecasts
  brier = reliability - resolution + uncertainty + within, the last term the spread of the
  forecasts inside their bins (Stephenson et al. 2008), found here as the remainder.

At most B - 1 probabilities of a row exceed 1/B, so only those are kept as entries; bin 0 of
every class is the class total minus its other bins, and its true-class count a dense count:
a few dense sums per class, whatever K is.

The sums are kept per block of examples, a block being a hash of the example's id (or of its
cluster), so two runs of the same examples have the same blocks. Intervals resample the blocks
(a block bootstrap): resampling single examples would need every class's weighted sum per
resample, K numbers per example.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .keyhash import key_hash
from .metrics import CLASSWISE, equal_width_bin

BLOCKS = 128  # blocks of examples of a comparison's block bootstrap
COMPACT_ENTRIES = 1 << 20  # entries gathered before they are summed per cell


def example_blocks(keys: np.ndarray, blocks: int) -> np.ndarray:
    """The block of each example, from its id or cluster key: the same key gives the same
    block in every run and every read, whatever the row order or shard split."""
    if blocks == 1:
        return np.zeros(len(keys), dtype=np.int64)
    z = key_hash(keys)
    return (z % np.uint64(blocks)).astype(np.int64)


@dataclass(frozen=True)
class ClasswisePlan:
    """What a run's read gathers for classwise calibration: the bins, how many blocks, and
    which of the file's rows to leave out (those not common to every run of a comparison)."""

    bins: int
    blocks: int = 1
    keep: np.ndarray | None = None  # per row of the file, in file order; None: every row
    first_row: int = 0  # the row keep[0] is about (a partition's plan holds its rows' alone)
    # instead of `keep`, where a cluster lined the runs up: each partition's kept rows, held
    # by its workers (align.Kept.offsets); the engine sends each task its own
    kept_parts: Any = field(default=None, compare=False)

    def rows(self, start: int, stop: int) -> "ClasswisePlan":
        """The plan for rows start..stop-1 alone: what a partition's task is sent."""
        if self.keep is None:
            return self
        return ClasswisePlan(self.bins, self.blocks, self.keep[start:stop], start)


class ClasswiseSums:
    """Per-(block, class, bin) sums of one run, fed chunk by chunk during its read."""

    def __init__(self, num_classes: int, bins: int, blocks: int):
        self.num_classes, self.bins, self.blocks = num_classes, bins, blocks
        self.size = np.zeros(blocks)  # examples per block
        self.brier = np.zeros(blocks)  # summed multiclass Brier score per block
        self.column = np.zeros((blocks, num_classes))  # sum of p_j per block
        self._keys: list[np.ndarray] = []  # cell of each entry: (block * K + class) * B + bin
        self._probs: list[np.ndarray] = []
        self._hits: list[np.ndarray] = []
        self._zero_hits: list[np.ndarray] = []  # block * K + class of true classes in bin 0
        self._pending = 0
        self.hits_zero = np.zeros((blocks, num_classes))  # true classes in bin 0, per block
        self.cells = np.empty(0, dtype=np.int64)  # distinct cells, sorted
        # per cell: entries, their summed p, how many are of the cell's class
        self.cell_count: np.ndarray = np.empty(0)
        self.cell_prob: np.ndarray = np.empty(0)
        self.cell_hits: np.ndarray = np.empty(0)

    def add(self, exp_shifted: np.ndarray, total: np.ndarray, labels: np.ndarray,
            pred: np.ndarray, brier: np.ndarray, block: np.ndarray) -> None:
        """One chunk: exp(logit - row max) (rows, K), its row sums, the labels, the top
        classes, each row's Brier score and block, the rows sorted by block."""
        inverse = 1.0 / total  # also the top class's p: its exp is 1
        edges = np.flatnonzero(np.diff(block)) + 1
        for part in np.split(np.arange(len(block)), edges):  # one block at a time
            g = block[part[0]]
            self.column[g] += inverse[part] @ exp_shifted[part]  # p summed over rows, float64
        self.size += np.bincount(block, minlength=self.blocks)
        self.brier += np.bincount(block, weights=brier, minlength=self.blocks)
        # entries: every p_j above 1/B (its bin, p and whether it is the true class). No p of a row
        # exceeds its top one, and the others share 1 - top: only rows where both exceed
        # 1/B are searched, in the chunk's own float type (a float64 threshold would make
        # numpy convert the chunk first) and a little below the threshold; every candidate
        # is then binned on its float64 p, and those of bin 0 are dropped.
        slack = 0.99 / self.bins
        rows = np.arange(len(labels))
        top = rows[inverse > slack]
        search = top[1.0 - inverse[top] > slack]
        cut = np.minimum(total[search] * slack,  # beyond float16's range no p exceeds 1/B
                         np.finfo(exp_shifted.dtype).max).astype(exp_shifted.dtype)
        searched = exp_shifted if len(search) == len(rows) else exp_shifted[search]
        found, cls = np.divmod(np.flatnonzero(searched > cut[:, None]), exp_shifted.shape[1])
        found = search[found]
        others = cls != pred[found]
        row = np.concatenate([top, found[others]])
        cls = np.concatenate([pred[top], cls[others]])
        prob = exp_shifted[row, cls] * inverse[row]
        which = equal_width_bin(prob, self.bins)
        upper = which > 0
        row, cls, prob, which = row[upper], cls[upper], prob[upper], which[upper]
        hit = cls == labels[row]
        # true classes in bin 0 (most rows, at large K) only count a hit there: a dense
        # (blocks, K) count, not an entry each
        low = equal_width_bin(exp_shifted[rows, labels] * inverse, self.bins) == 0
        self._zero_hits.append(block[low] * self.num_classes + labels[low])
        self._keys.append((block[row] * self.num_classes + cls) * self.bins + which)
        self._probs.append(prob)
        self._hits.append(hit)
        self._pending += len(row) + int(low.sum())
        if self._pending >= COMPACT_ENTRIES:
            self._compact()

    def _compact(self) -> None:
        if self._zero_hits:
            self.hits_zero += np.bincount(np.concatenate(self._zero_hits),
                                          minlength=self.hits_zero.size).reshape(
                                              self.hits_zero.shape)
            self._zero_hits = []
        keys = np.concatenate([self.cells, *self._keys])
        cells, cell = np.unique(keys, return_inverse=True)
        length = len(cells)
        old = len(self.cells)
        weights_prob = np.concatenate([self.cell_prob, *self._probs])
        weights_hits = np.concatenate([self.cell_hits, *[h.astype(np.float64)
                                                          for h in self._hits]])
        # the old cells carry their counts as weights; new entries count one each
        ones = np.concatenate([self.cell_count, np.ones(len(keys) - old)])
        self.cell_count = np.bincount(cell, weights=ones, minlength=length)
        self.cell_prob = np.bincount(cell, weights=weights_prob, minlength=length)
        self.cell_hits = np.bincount(cell, weights=weights_hits, minlength=length)
        self.cells = cells
        self._keys, self._probs, self._hits, self._pending = [], [], [], 0

    def finish(self) -> "ClasswiseSums":
        if self._keys or self._zero_hits:
            self._compact()
        return self

    @staticmethod
    def merged(parts: list["ClasswiseSums"]) -> "ClasswiseSums":
        """The sums of all the parts' examples together (parts of one run, finished)."""
        first = parts[0]
        if len(parts) == 1:
            return first
        total = ClasswiseSums(first.num_classes, first.bins, first.blocks)
        for name in ("size", "brier", "column", "hits_zero"):
            setattr(total, name, sum(getattr(p, name) for p in parts))
        # each part's cells enter as entries weighted by their counts: one compaction
        keys = np.concatenate([p.cells for p in parts])
        cells, cell = np.unique(keys, return_inverse=True)
        for name in ("cell_count", "cell_prob", "cell_hits"):
            weights = np.concatenate([getattr(p, name) for p in parts])
            setattr(total, name, np.bincount(cell, weights=weights, minlength=len(cells)))
        total.cells = cells
        return total


@dataclass(frozen=True)
class BlockPlan:
    """The block bootstrap of a comparison: resamples of the blocks with replacement, the same
    for every run (deterministic in blocks, resamples and seed)."""

    units: int  # blocks
    resamples: int
    seed: int
    noise: tuple[str, ...]

    subsets = 1
    centred = True  # deviations from the resamples' mean (see paired.bootstrap)

    @property
    def per_subset(self) -> int:
        return self.resamples

    @property
    def method(self) -> str:
        return f"block bootstrap, {self.units} blocks of examples x {self.resamples} resamples"

    def weights(self) -> np.ndarray:
        """(1 + resamples, blocks): how often each resample drew each block; row 0 is the
        sample itself."""
        rng = np.random.default_rng([self.seed, 2])
        drawn = rng.integers(0, self.units, (self.resamples, self.units))
        drawn += self.units * np.arange(self.resamples)[:, None]
        counts = np.bincount(drawn.ravel(), minlength=self.resamples * self.units)
        return np.vstack([np.ones((1, self.units)),
                          counts.reshape(self.resamples, self.units).astype(np.float64)])


RESAMPLE_ROWS = 64  # resamples evaluated together: their per-cell sums stay a few MB


def classwise_metrics(sums: ClasswiseSums | None) -> dict[str, float] | None:
    """The sample's own CLASSWISE values, or None when the run has no sums (top-k)."""
    if sums is None:
        return None
    return {name: float(values[0]) for name, values in classwise_values(sums).items()}


def classwise_values(sums: ClasswiseSums, weights: np.ndarray | None = None
                     ) -> dict[str, np.ndarray]:
    """Each metric of CLASSWISE for each row of block weights (rows, blocks); without
    weights, the sample's own values (one row).

    Per class, bin 0 and the totals of the other bins are dense (blocks, K) matrices, so
    their resampled sums are matrix products; the cells of bins 1..B-1 that hold an entry in
    some block are a sparse (cells, blocks) matrix."""
    from scipy import sparse

    if weights is None:
        weights = np.ones((1, sums.blocks))
    k, bins, blocks = sums.num_classes, sums.bins, sums.blocks
    block, class_bin = np.divmod(sums.cells, k * bins)
    cls = class_bin // bins  # cells are of bins 1..B-1; bin 0 is what they leave

    def per_class(values: np.ndarray) -> np.ndarray:  # (blocks, K) sums over a class's cells
        return np.bincount(block * k + cls, weights=values, minlength=blocks * k
                           ).reshape(blocks, k)

    count_upper = per_class(sums.cell_count)
    prob_zero = sums.column - per_class(sums.cell_prob)  # p summed over bin 0
    hits_zero = sums.hits_zero
    support = hits_zero + per_class(sums.cell_hits)
    cells, column_of = np.unique(class_bin, return_inverse=True)

    def by_cell(values: np.ndarray):  # (cells, blocks), for products with weights.T
        return sparse.csr_matrix((values, (column_of, block)), shape=(len(cells), blocks))

    upper_count, upper_hits = by_cell(sums.cell_count), by_cell(sums.cell_hits)
    upper_gap = by_cell(sums.cell_hits - sums.cell_prob)
    out: dict[str, list[np.ndarray]] = {name: [] for name in CLASSWISE}
    for start in range(0, len(weights), RESAMPLE_ROWS):
        w = weights[start:start + RESAMPLE_ROWS]
        n = w @ sums.size
        # bin 0 of each class: what its other bins leave of the class totals, (rows, K)
        count0, prob0, hits0 = n[:, None] - w @ count_upper, w @ prob_zero, w @ hits_zero
        share = (w @ support) / n[:, None]  # o_j, each class's share of the labels
        gap0 = hits0 - prob0
        # the other bins' cells, (cells, rows)
        count, hits, gap = (np.asarray(m @ w.T) for m in (upper_count, upper_hits, upper_gap))
        inverse, inverse0 = _inverse(count), _inverse(count0)  # empty bins weigh 0
        reliability = (((gap * inverse) * gap).sum(axis=0)
                       + ((gap0 * inverse0) * gap0).sum(axis=1)) / n
        sharpness = ((hits * inverse) * hits).sum(axis=0) + ((hits0 * inverse0)
                                                              * hits0).sum(axis=1)
        squared_shares = (share * share).sum(axis=1)
        resolution = sharpness / n - squared_shares
        uncertainty = 1.0 - squared_shares
        out["classwise_ece"].append((np.abs(gap).sum(axis=0) + np.abs(gap0).sum(axis=1))
                                    / (k * n))
        out["brier_reliability"].append(reliability)
        out["brier_resolution"].append(resolution)
        out["brier_uncertainty"].append(uncertainty)
        out["brier_within"].append(w @ sums.brier / n - reliability + resolution - uncertainty)
    return {name: np.concatenate(parts) for name, parts in out.items()}


def _inverse(count: np.ndarray) -> np.ndarray:
    """1 / count, and 0 where a bin holds no example (it adds nothing to any sum)."""
    return np.divide(1.0, count, out=np.zeros_like(count), where=count > 0)
