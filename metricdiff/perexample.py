"""A batch of predictions -> a handful of numbers per example (pure numpy).

Everything downstream works on these compact columns, never on the K-wide matrix, so a run of
any size needs memory for one batch of predictions plus a few numbers per row. Each value
depends only on its own row, so batch size and shard split cannot change any number.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from .io import Batch


@dataclass
class PerExample:
    """Per-example columns of one run (or one batch of it), all of the same length."""

    label: np.ndarray  # int64 true class
    pred: np.ndarray  # int64 top-1 class (ties: the lowest class index)
    rank: np.ndarray  # int64 position of the true class in the ranking; 0 = correct;
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
        return PerExample(**{f.name: getattr(self, f.name)[index] for f in fields(self)})

    @staticmethod
    def concat(parts: list["PerExample"]) -> "PerExample":
        return PerExample(**{f.name: np.concatenate([getattr(p, f.name) for p in parts])
                             for f in fields(PerExample)})


def from_batch(batch: Batch, temperature: float | None) -> PerExample:
    if batch.scores is not None:
        return from_scores(batch.scores, batch.labels, temperature)
    return from_topk(batch.topk_ids, batch.topk_logprobs, batch.label_logprob, batch.labels)


def from_scores(scores: np.ndarray, labels: np.ndarray, temperature: float | None) -> PerExample:
    """Per-example statistics from logits (or log-probabilities, which are logits too).

    Elementwise work stays in the input's float precision; every sum over classes is
    accumulated in float64, so results agree with a float64 reference to about 1e-7.
    """
    n, k = scores.shape
    rows = np.arange(n)
    row_max = scores.max(axis=1)
    shifted = scores - row_max[:, None]  # <= 0; -inf where a probability was exactly 0
    exp_shifted = np.exp(shifted)
    total = exp_shifted.sum(axis=1, dtype=np.float64)  # >= 1: the top class contributes 1
    log_total = np.log(total)
    true_shifted = shifted[rows, labels].astype(np.float64)
    nll = log_total - true_shifted
    conf = 1.0 / total

    pred = scores.argmax(axis=1).astype(np.int64)
    true_score = scores[rows, labels][:, None]
    above = (scores > true_score).sum(axis=1)
    tied_before = ((scores == true_score) & (np.arange(k)[None, :] < labels[:, None])).sum(axis=1)
    rank = (above + tied_before).astype(np.int64)

    sum_sq = np.einsum("ij,ij->i", exp_shifted, exp_shifted, dtype=np.float64)
    p_true = np.exp(-nll)
    brier = sum_sq / total**2 - 2.0 * p_true + 1.0
    # entropy = log Z - E_p[shifted]
    weighted = np.einsum("ij,ij->i", exp_shifted, shifted, dtype=np.float64)
    zero_prob_rows = np.isnan(weighted)  # 0 * -inf from a probability of exactly 0, which adds 0
    if zero_prob_rows.any():
        e, s = exp_shifted[zero_prob_rows], shifted[zero_prob_rows]
        weighted[zero_prob_rows] = np.where(e > 0, e * np.where(e > 0, s, 0), 0).sum(axis=1)
    entropy = log_total - weighted / total

    if temperature is None:
        nll_cal = np.full(n, np.nan)
        conf_cal = np.full(n, np.nan)
    else:
        scaled_total = np.exp(shifted / temperature).sum(axis=1, dtype=np.float64)
        nll_cal = np.log(scaled_total) - true_shifted / temperature
        conf_cal = 1.0 / scaled_total
    return PerExample(label=labels.astype(np.int64), pred=pred, rank=rank, conf=conf, nll=nll,
                      brier=brier, entropy=np.maximum(entropy, 0.0), nll_cal=nll_cal,
                      conf_cal=conf_cal)


def from_topk(topk_ids: np.ndarray, topk_logprobs: np.ndarray, label_logprob: np.ndarray,
              labels: np.ndarray) -> PerExample:
    """Top-k runs: exact loss, accuracy and confidence; Brier, entropy and temperature unknown."""
    n, k = topk_ids.shape
    listed = topk_ids == labels[:, None]
    # position of the true class among the listed ones, or k when it is not listed
    rank = np.where(listed.any(axis=1), listed.argmax(axis=1), k).astype(np.int64)
    unknown = np.full(n, np.nan)
    return PerExample(label=labels.astype(np.int64), pred=topk_ids[:, 0].astype(np.int64),
                      rank=rank, conf=np.exp(topk_logprobs[:, 0]), nll=-label_logprob,
                      brier=unknown, entropy=unknown.copy(), nll_cal=unknown.copy(),
                      conf_cal=unknown.copy())
