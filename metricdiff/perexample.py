"""A batch of predictions -> a handful of numbers per example (pure numpy).

Everything downstream works on these compact columns, never on the K-wide matrix, so a run of
any size needs memory for one batch of predictions plus a few numbers per row. Each value
depends only on its own row, so batch size and shard split cannot change any number.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING

import numpy as np

from .io import Batch

if TYPE_CHECKING:
    from .classwise import ClasswiseSums


@dataclass
class PerExample:
    """Per-example columns of one run (or one batch of it), all of the same length."""

    # label, pred and rank are class indices: int32 (class_indices), int64 beyond its range
    label: np.ndarray  # true class
    pred: np.ndarray  # top-1 class (ties: the lowest class index)
    rank: np.ndarray  # position of the true class in the ranking; 0 = correct;
    #                   for top-k runs, k stands for "not among the k listed"
    conf: np.ndarray  # float64 top-1 probability
    nll: np.ndarray  # float64 -log p(true class), nats
    brier: np.ndarray  # float64 sum_c (p_c - [c = y])^2; nan when not computable (top-k)
    entropy: np.ndarray  # float64 -sum_c p_c log p_c; nan when not computable (top-k)
    nll_cal: np.ndarray  # float64 nll at the fitted temperature; nan when none was fitted
    conf_cal: np.ndarray  # float64 top-1 probability at the fitted temperature

    @property
    def correct(self) -> np.ndarray:
        return self.rank == 0

    def __len__(self) -> int:
        return len(self.label)

    def take(self, index: np.ndarray) -> "PerExample":
        label = self.label[index]
        return PerExample(**{f.name: _take(getattr(self, f.name), index, len(label))
                             for f in fields(self)})

    @staticmethod
    def concat(parts: list["PerExample"]) -> "PerExample":
        return PerExample(**{f.name: join_columns([getattr(p, f.name) for p in parts])
                             for f in fields(PerExample)})

    def __reduce__(self):
        # an unknown column travels as its length (pickle would send n NaNs to the client)
        return _rebuilt, ({f.name: _packed(getattr(self, f.name)) for f in fields(self)},)

    def without_temperature(self) -> None:
        """Forget the calibrated columns: no temperature applies (true classes at
        probability 0 make the NLL infinite at every temperature)."""
        self.nll_cal = self.conf_cal = unknown(len(self))


def unknown(rows: int) -> np.ndarray:
    """A column of NaN that takes no memory: one value seen through a zero stride (top-k
    runs know no Brier score, entropy or temperature). Read-only, as a column should be."""
    return np.broadcast_to(np.float64(np.nan), (rows,))


def is_unknown(values: np.ndarray) -> bool:
    return values.ndim == 1 and values.strides == (0,) and values.dtype == np.float64 \
        and (len(values) == 0 or bool(np.isnan(values[0])))


def _packed(values: np.ndarray) -> np.ndarray | int:
    return len(values) if is_unknown(values) else values


def _rebuilt(columns: dict) -> PerExample:
    return PerExample(**{name: unknown(values) if isinstance(values, int) else values
                         for name, values in columns.items()})


def _take(values: np.ndarray, index: np.ndarray, rows: int) -> np.ndarray:
    return unknown(rows) if is_unknown(values) else values[index]


def join_columns(parts: list[np.ndarray]) -> np.ndarray:
    """The parts of a column end to end; unknown where every part is."""
    if parts and all(is_unknown(part) for part in parts):
        return unknown(sum(len(part) for part in parts))
    return np.concatenate(parts)


def class_indices(values: np.ndarray) -> np.ndarray:
    """Class indices (or ranks) as int32, exact below 2^31 and half the memory of int64 in
    the columns a run holds per example; int64 where a value is beyond int32."""
    if len(values) == 0 or (values.min() >= -(1 << 31) and values.max() < 1 << 31):
        return values.astype(np.int32)
    return values.astype(np.int64)


def from_batch(batch: Batch, temperature: float | np.ndarray | None,
               classwise: "ClasswiseSums | None" = None,
               blocks: np.ndarray | None = None) -> PerExample:
    """`classwise`, with each row's block (`blocks`; -1 leaves a row out of it): the sums of
    classwise calibration, gathered in the same pass."""
    if batch.scores is not None:
        return from_scores(batch.scores, batch.labels, temperature, classwise, blocks)
    assert batch.topk_ids is not None and batch.topk_logprobs is not None \
        and batch.label_logprob is not None  # a batch holds scores or all three top-k columns
    return from_topk(batch.topk_ids, batch.topk_logprobs, batch.label_logprob, batch.labels)


def floor_probabilities(scores: np.ndarray, min_prob: float) -> np.ndarray:
    """Log-probabilities of max(p, min_prob) renormalised, from logits (float64): the opt-in
    floor that makes a probability of 0 cost a finite loss (--min-prob)."""
    shifted = scores.astype(np.float64) - scores.max(axis=1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    floored = np.maximum(log_p, math.log(min_prob))
    return floored - np.log(np.exp(floored).sum(axis=1, keepdims=True))


# Rows are processed in chunks of about this many values, so that the temporaries of a chunk
# stay in cache: exp over a cached chunk runs about three times faster than over a large batch.
CHUNK_VALUES = 1 << 18


def from_scores(scores: np.ndarray, labels: np.ndarray,
                temperature: float | np.ndarray | None,
                classwise: "ClasswiseSums | None" = None,
                blocks: np.ndarray | None = None) -> PerExample:
    """Per-example statistics from logits (or log-probabilities, which are logits too).

    Elementwise work stays in the input's float precision; the normaliser (sum of exp over
    classes) is accumulated in float64, the two other sums over classes by BLAS dot products,
    so results agree with a float64 reference to about 1e-7 relative.

    `temperature` may be one per row (cross-fitting). With `classwise`, rows go through in the
    order of their blocks, so that each chunk adds its probabilities to one or two blocks'
    class sums.
    """
    n, k = scores.shape
    columns = {name: np.empty(n) for name in ("conf", "nll", "brier", "entropy", "nll_cal",
                                              "conf_cal")}
    pred = np.empty(n, dtype=np.int32)  # k < 2^31 classes: int32 holds every index
    rank = np.empty(n, dtype=np.int32)
    step = max(1, CHUNK_VALUES // k)
    shifted = np.empty((min(step, n), k), dtype=scores.dtype)  # reused by every chunk
    exp_shifted = np.empty_like(shifted)
    order = None
    if classwise is not None:
        assert blocks is not None  # given together
        if classwise.blocks > 1 or (blocks < 0).any():
            order = np.argsort(blocks, kind="stable")
    chunk_out = {name: np.empty(min(step, n)) for name in columns}  # reused by every chunk
    chunk_pred, chunk_rank = np.empty(min(step, n), np.int32), np.empty(min(step, n), np.int32)
    for start in range(0, n, step):
        stop = min(start + step, n)
        rows = slice(start, stop) if order is None else order[start:stop]
        size = stop - start
        out = {name: buffer[:size] for name, buffer in chunk_out.items()}
        _chunk(scores[rows], labels[rows], _rows_of(temperature, rows), shifted[:size],
               exp_shifted[:size], out, chunk_pred[:size], chunk_rank[:size], classwise,
               None if blocks is None else blocks[rows])
        for name, col in columns.items():
            col[rows] = out[name]
        pred[rows], rank[rows] = chunk_pred[:size], chunk_rank[:size]
    return PerExample(label=labels.astype(np.int32), pred=pred, rank=rank, **columns)


def _rows_of(temperature, rows):
    return temperature[rows] if isinstance(temperature, np.ndarray) else temperature


def _chunk(scores, labels, temperature, shifted, exp_shifted, out, pred, rank,
           classwise=None, blocks=None) -> None:
    """Fill the per-example outputs of one chunk of rows, in place."""
    rows = np.arange(len(labels))
    pred[:] = scores.argmax(axis=1)
    row_max = scores[rows, pred]  # the maximum, without a second pass
    with np.errstate(over="ignore"):  # a float32 gap beyond 3.4e38 becomes -inf: its exp is 0
        np.subtract(scores, row_max[:, None], out=shifted)  # <= 0; -inf where a p was 0
    np.exp(shifted, out=exp_shifted)
    total = exp_shifted.sum(axis=1, dtype=np.float64)  # >= 1: the top class contributes 1
    log_total = np.log(total)
    # the true class's gap in float64: exact, where a float32 subtraction could overflow
    true_shifted = scores[rows, labels].astype(np.float64) - row_max.astype(np.float64)
    out["nll"][:] = log_total - true_shifted
    out["conf"][:] = 1.0 / total

    rank[:] = 0
    wrong = np.flatnonzero(pred != labels)  # where the true class is not first, find its rank
    if len(wrong):
        rank[wrong] = _rank(scores[wrong], labels[wrong])

    sum_sq = row_dot(exp_shifted, exp_shifted)
    out["brier"][:] = sum_sq / total**2 - 2.0 * np.exp(-out["nll"]) + 1.0
    # entropy = log Z - E_p[shifted]
    with np.errstate(invalid="ignore"):  # 0 * -inf is expected here and mended just below
        weighted = row_dot(exp_shifted, shifted)
    zero_prob_rows = np.isnan(weighted)  # 0 * -inf from a probability of exactly 0, which adds 0
    if zero_prob_rows.any():
        e, s = exp_shifted[zero_prob_rows], shifted[zero_prob_rows]
        weighted[zero_prob_rows] = np.where(e > 0, e * np.where(e > 0, s, 0), 0).sum(axis=1)
    out["entropy"][:] = np.maximum(log_total - weighted / total, 0.0)
    if classwise is not None:
        kept = blocks >= 0  # sorted: rows left out come first
        first = int(np.argmax(kept)) if kept.any() else len(kept)
        if first < len(kept):
            classwise.add(exp_shifted[first:], total[first:], labels[first:], pred[first:],
                          out["brier"][first:], blocks[first:])

    if temperature is None:
        out["nll_cal"][:] = np.nan
        out["conf_cal"][:] = np.nan
        return
    inverse_t = (1.0 / temperature if not isinstance(temperature, np.ndarray)
                 else (1.0 / temperature)[:, None].astype(shifted.dtype))
    np.multiply(shifted, inverse_t, out=exp_shifted)
    np.exp(exp_shifted, out=exp_shifted)
    scaled_total = exp_shifted.sum(axis=1, dtype=np.float64)
    out["nll_cal"][:] = np.log(scaled_total) - true_shifted / temperature
    out["conf_cal"][:] = 1.0 / scaled_total


def _rank(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Position of the true class when classes are sorted by score, ties by class index."""
    true_score = scores[np.arange(len(labels)), labels][:, None]
    rank = np.count_nonzero(scores > true_score, axis=1)
    # a row ties when another class has the true class's score (rare): lower classes go first
    tied = np.flatnonzero(np.count_nonzero(scores == true_score, axis=1) > 1)
    if len(tied):
        before = np.arange(scores.shape[1]) < labels[tied, None]
        rank[tied] += np.count_nonzero((scores[tied] == true_score[tied]) & before, axis=1)
    return rank


def row_dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise dot products through BLAS: fast, with blocked float32 accumulation."""
    return (a[:, None, :] @ b[:, :, None]).ravel().astype(np.float64)


def from_topk(topk_ids: np.ndarray, topk_logprobs: np.ndarray, label_logprob: np.ndarray,
              labels: np.ndarray) -> PerExample:
    """Top-k runs: exact loss, accuracy and confidence; Brier, entropy and temperature unknown."""
    n, k = topk_ids.shape
    listed = topk_ids == labels[:, None]
    # position of the true class among the listed ones, or k when it is not listed
    rank = np.where(listed.any(axis=1), listed.argmax(axis=1), k).astype(np.int32)
    return PerExample(label=class_indices(labels), pred=class_indices(topk_ids[:, 0]),
                      rank=rank, conf=np.exp(topk_logprobs[:, 0]), nll=-label_logprob,
                      brier=unknown(n), entropy=unknown(n), nll_cal=unknown(n),
                      conf_cal=unknown(n))
