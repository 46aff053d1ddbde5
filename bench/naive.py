"""The by-hand way: the pandas / scikit-learn script a user writes without metricdiff.

It computes the headline numbers of `metricdiff report` (NLL, accuracy, top-5 accuracy,
15-bin ECE) the obvious way: load the whole file into a DataFrame, stack the logits into one
matrix, softmax, and call scikit-learn. Nothing is tuned on purpose: the benchmark measures
what this typical script costs.

    python bench/naive.py RUN.parquet
"""

from __future__ import annotations

import json
import sys

import numpy as np
import pandas as pd
import scipy.special
from sklearn.metrics import accuracy_score, log_loss, top_k_accuracy_score

ECE_BINS = 15


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray) -> float:
    """Equal-width bins (i/15, (i+1)/15] on the top-1 confidence."""
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == labels
    bin_index = np.clip(np.ceil(confidence * ECE_BINS).astype(int) - 1, 0, ECE_BINS - 1)
    ece = 0.0
    for b in range(ECE_BINS):
        in_bin = bin_index == b
        if in_bin.any():
            ece += in_bin.mean() * abs(correct[in_bin].mean() - confidence[in_bin].mean())
    return float(ece)


def main(path: str) -> None:
    df = pd.read_parquet(path)
    logits = np.stack(df.logits.values)
    labels = df.label.to_numpy()
    classes = np.arange(logits.shape[1])  # some rare classes may have no example
    probs = scipy.special.softmax(logits, axis=1)
    metrics = {
        "nll": log_loss(labels, probs, labels=classes),
        "accuracy": accuracy_score(labels, probs.argmax(axis=1)),
        "top5_accuracy": top_k_accuracy_score(labels, probs, k=5, labels=classes),
        "ece": expected_calibration_error(probs, labels),
    }
    print(json.dumps({k: float(v) for k, v in metrics.items()}))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python bench/naive.py RUN.parquet")
    main(sys.argv[1])
