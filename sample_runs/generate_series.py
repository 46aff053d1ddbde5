#!/usr/bin/env python
"""Generate the checkpoint series in sample_runs/series/ and check them.

    python sample_runs/generate_series.py            # train both networks, rewrite the files
    python sample_runs/generate_series.py --check    # print the check tables (markdown)
    python sample_runs/generate_series.py --out-dir DIR [--check]

What it makes
-------------
Two small networks trained on one fixed 4-class problem, with the validation
predictions saved after every epoch, so that `metricdiff series` has real
training runs to read:

    series/wide/epoch01.parquet ... epoch20.parquet     two hidden layers of 128 units
    series/narrow/epoch01.parquet ... epoch20.parquet   one hidden layer of 16 units

The data are ``make_classification`` (20 features, 12 informative, 2 clusters
per class, class_sep 1.0, no flipped labels): 1,000 training examples and
2,500 validation examples. The networks are written here in numpy (ReLU
layers, softmax cross-entropy, He initialisation), trained by mini-batch SGD
with momentum 0.9, learning rate 0.01, batches of 16, no weight decay and no
early stopping, for 20 epochs. The logits are the networks' own outputs,
saved as float32.

Why
---
A wide network on a thousand examples fits its training set (training
accuracy reaches 1.0 by epoch 11). After that the easiest way to lower the
training loss is to grow the logits: validation NLL turns up after epoch 6
while validation accuracy keeps creeping up. This is the "NLL overfitting" of
Guo et al. (2017, On Calibration of Modern Neural Networks, section 3): the
network becomes over-confident, the temperature that best calibrates it keeps
rising, and the NLL at that temperature keeps falling. The narrow network has
not fitted its training set after 20 epochs; its NLL and accuracy improve
together. ``--check`` measures this from the files with its own code.

Output is deterministic: fixed seeds, BLAS held to one thread (threadpoolctl,
which comes with scikit-learn), and metricdiff's own writer, whose Parquet
settings are pinned; a run in the same environment rewrites every file bit for
bit. Training takes a few seconds.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

N_TRAIN = 1_000
N_VAL = 2_500
CLASSES = 4
EPOCHS = 20
LEARNING_RATE = 0.01
MOMENTUM = 0.9
BATCH = 16
# name -> (hidden layer sizes, seed of its weights and batch order)
ARCHITECTURES = {"wide": ((128, 128), 1), "narrow": ((16,), 2)}
ECE_BINS = 15


# --------------------------------------------------------------------------
# Data and training
# --------------------------------------------------------------------------

def dataset() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Standardised features (with the training set's mean and sd) and labels, train and
    validation; make_classification shuffles its rows, so the first N_TRAIN are a random
    training set."""
    from sklearn.datasets import make_classification

    x, y = make_classification(n_samples=N_TRAIN + N_VAL, n_features=20, n_informative=12,
                               n_redundant=4, n_classes=CLASSES, n_clusters_per_class=2,
                               class_sep=1.0, flip_y=0.0, random_state=0)
    mean, sd = x[:N_TRAIN].mean(axis=0), x[:N_TRAIN].std(axis=0)
    x = (x - mean) / sd
    return x[:N_TRAIN], y[:N_TRAIN], x[N_TRAIN:], y[N_TRAIN:]


class Network:
    """A multi-layer perceptron: ReLU hidden layers, a linear output layer (the logits)."""

    def __init__(self, sizes: list[int], rng: np.random.Generator):
        self.weights = [rng.normal(0.0, math.sqrt(2.0 / fan_in), (fan_in, fan_out))
                        for fan_in, fan_out in zip(sizes[:-1], sizes[1:])]
        self.biases = [np.zeros(fan_out) for fan_out in sizes[1:]]
        self.velocity = [np.zeros_like(p) for p in self.weights + self.biases]

    def forward(self, x: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
        """Every layer's input, and the logits."""
        inputs = [x]
        for w, b in zip(self.weights[:-1], self.biases[:-1]):
            inputs.append(np.maximum(inputs[-1] @ w + b, 0.0))
        return inputs, inputs[-1] @ self.weights[-1] + self.biases[-1]

    def step(self, x: np.ndarray, y: np.ndarray) -> None:
        """One SGD step with momentum on the mean cross-entropy of the batch."""
        inputs, logits = self.forward(x)
        grad = np.exp(log_softmax(logits))
        grad[np.arange(len(y)), y] -= 1.0
        grad /= len(y)
        grads_w, grads_b = [], []
        for layer in range(len(self.weights) - 1, -1, -1):
            grads_w.append(inputs[layer].T @ grad)
            grads_b.append(grad.sum(axis=0))
            if layer:
                grad = (grad @ self.weights[layer].T) * (inputs[layer] > 0)
        params = self.weights + self.biases
        for param, velocity, g in zip(params, self.velocity, grads_w[::-1] + grads_b[::-1]):
            velocity *= MOMENTUM
            velocity -= LEARNING_RATE * g
            param += velocity


def log_softmax(z: np.ndarray) -> np.ndarray:
    """Row-wise log-softmax in float64, shifted by the row maximum (no overflow)."""
    z = z.astype(np.float64)
    shifted = z - z.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def train(hidden: tuple[int, ...], seed: int, x_train, y_train, x_val):
    """Yield the validation logits (float32) after each epoch."""
    rng = np.random.default_rng(seed)
    net = Network([x_train.shape[1], *hidden, CLASSES], rng)
    for _ in range(EPOCHS):
        order = rng.permutation(len(x_train))
        for start in range(0, len(order), BATCH):
            rows = order[start:start + BATCH]
            net.step(x_train[rows], y_train[rows])
        yield net.forward(x_val)[1].astype(np.float32)


def write_all(out_dir: Path) -> None:
    sys.path.insert(0, str(ROOT))  # metricdiff's writer, from this checkout
    from threadpoolctl import threadpool_limits

    from metricdiff.writer import save_predictions

    x_train, y_train, x_val, y_val = dataset()
    ids = np.arange(N_TRAIN, N_TRAIN + N_VAL)  # the row of make_classification's output
    names = [f"class_{c}" for c in range(CLASSES)]
    # one BLAS thread: a multi-threaded BLAS sums in an order that depends on the thread
    # count, which moves the weights in their last bits, epoch after epoch
    with threadpool_limits(limits=1):
        for arch, (hidden, seed) in ARCHITECTURES.items():
            folder = out_dir / "series" / arch
            folder.mkdir(parents=True, exist_ok=True)
            for epoch, logits in enumerate(train(hidden, seed, x_train, y_train, x_val), 1):
                save_predictions(folder / f"epoch{epoch:02d}.parquet", y_val, logits=logits,
                                 ids=ids, class_names=names)


# --------------------------------------------------------------------------
# --check: the key numbers, recomputed from the files alone
# --------------------------------------------------------------------------

def read_checkpoint(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ids, labels and logits (float64) of one file, read with pyarrow alone."""
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    column = table.column("logits").combine_chunks()
    logits = column.flatten().to_numpy().reshape(len(table), column.type.list_size)
    return (table.column("id").to_numpy(), table.column("label").to_numpy(),
            logits.astype(np.float64))


def nll_at(logits: np.ndarray, labels: np.ndarray, temperature: float) -> np.ndarray:
    return -log_softmax(logits / temperature)[np.arange(len(labels)), labels]


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The T minimising mean NLL, searched on log T in [0.01, 100] (metricdiff's range)."""
    from scipy.optimize import minimize_scalar

    found = minimize_scalar(lambda log_t: nll_at(logits, labels, math.exp(log_t)).mean(),
                            bounds=(math.log(0.01), math.log(100.0)), method="bounded",
                            options={"xatol": 1e-7})
    return math.exp(found.x)


def ece(confidence: np.ndarray, correct: np.ndarray) -> float:
    """15 equal-width bins of top-1 confidence (a confidence of 1 in the last), weighted by
    their size."""
    bins = np.clip(np.ceil(confidence * ECE_BINS).astype(int) - 1, 0, ECE_BINS - 1)
    return float(sum((bins == b).mean() * abs(correct[bins == b].mean()
                                              - confidence[bins == b].mean())
                     for b in range(ECE_BINS) if (bins == b).any()))


def checkpoint_numbers(path: Path) -> dict:
    """NLL, accuracy, ECE, temperature and calibrated NLL of one checkpoint, with the
    per-example values the paired tests need."""
    ids, labels, logits = read_checkpoint(path)
    log_p = log_softmax(logits)
    nll = -log_p[np.arange(len(labels)), labels]
    correct = log_p.argmax(axis=1) == labels
    temperature = fit_temperature(logits, labels)
    calibrated = nll_at(logits, labels, temperature)
    return {"ids": ids, "labels": labels, "per_nll": nll, "per_correct": correct,
            "per_nll_calibrated": calibrated, "n": len(labels), "nll": nll.mean(),
            "accuracy": correct.mean(), "ece": ece(np.exp(log_p.max(axis=1)), correct),
            "temperature": temperature, "nll_calibrated": calibrated.mean()}


def paired(first: dict, second: dict, pairs: int) -> dict:
    """second minus first: paired t (NLL, calibrated NLL) and McNemar's exact test
    (accuracy), p multiplied by the pairs of checkpoints (Bonferroni), by scipy.stats."""
    from scipy import stats

    assert np.array_equal(first["ids"], second["ids"]), "checkpoints list other examples"
    out = {}
    for name in ("nll", "nll_calibrated"):
        a, b = first[f"per_{name}"], second[f"per_{name}"]
        out[name] = ((b - a).mean(), min(1.0, stats.ttest_rel(b, a).pvalue * pairs))
    fixed = int((~first["per_correct"] & second["per_correct"]).sum())
    broken = int((first["per_correct"] & ~second["per_correct"]).sum())
    p = stats.binomtest(fixed, fixed + broken).pvalue if fixed + broken else 1.0
    out["accuracy"] = ((fixed - broken) / first["n"], min(1.0, p * pairs))
    return out


def check_series(folder: Path) -> tuple[list[list[str]], list[str]]:
    paths = sorted(folder.glob("epoch*.parquet"))
    numbers = [checkpoint_numbers(path) for path in paths]
    rows = [[path.stem, str(c["n"])] + [f"{c[m]:.4f}" for m in
                                         ("nll", "accuracy", "ece", "temperature",
                                          "nll_calibrated")]
            for path, c in zip(paths, numbers)]
    nll = [c["nll"] for c in numbers]
    accuracy = [c["accuracy"] for c in numbers]
    best_nll = int(np.argmin(nll))  # the first of equal ones
    best_acc = len(accuracy) - 1 - int(np.argmax(accuracy[::-1]))  # the last of equal ones
    last = len(numbers) - 1
    pairs = len(numbers) * (len(numbers) - 1) // 2
    lines = [f"{folder.name}: lowest NLL {paths[best_nll].stem} ({nll[best_nll]:.4f}, accuracy "
             f"{accuracy[best_nll]:.4f}); highest accuracy {paths[best_acc].stem} "
             f"({accuracy[best_acc]:.4f}, NLL {nll[best_acc]:.4f}); last {paths[last].stem} "
             f"(NLL {nll[last]:.4f}, accuracy {accuracy[last]:.4f})"]
    for first, second in sorted({tuple(sorted((best_nll, best_acc))), (best_nll, last)}):
        if first == second:
            continue
        found = paired(numbers[first], numbers[second], pairs)
        lines.append(f"{folder.name}: {paths[first].stem} -> {paths[second].stem}: " + "; ".join(
            f"{name} {delta:+.4f} (p x {pairs} = {p:.2g})" for name, (delta, p) in found.items()))
    return rows, lines


def check_all(out_dir: Path) -> None:
    digest = hashlib.sha256()
    files = sorted((out_dir / "series").glob("*/epoch*.parquet"))
    for path in files:
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    print(f"{len(files)} files, {sum(p.stat().st_size for p in files):,} bytes; sha256 of "
          f"their sha256s in path order: {digest.hexdigest()}")
    for arch in ARCHITECTURES:
        rows, lines = check_series(out_dir / "series" / arch)
        print(f"\n### {arch}\n")
        header = ["checkpoint", "n", "NLL", "acc", "ECE", "T", "NLL@T"]
        print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
        print("\n".join("| " + " | ".join(row) + " |" for row in rows))
        print()
        print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true",
                        help="check the existing files instead of writing them")
    parser.add_argument("--out-dir", type=Path, default=HERE,
                        help="where series/ is (default: here)")
    args = parser.parse_args()
    if args.check:
        check_all(args.out_dir)
        return
    write_all(args.out_dir)


if __name__ == "__main__":
    main()
