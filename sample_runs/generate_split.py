"""Write the validation/test pairs of sample_runs/split/, or check them (--check).

Two models fitted on 60% of scikit-learn's `digits`; their predictions on a disjoint 20%
validation split and 20% test split are saved as separate runs with different ids, the way
the calibration literature fits a temperature on one and reports on the other (Guo et al.
2017; Kull et al. 2019):

    split/gnb_val.parquet, split/gnb_test.parquet   GaussianNB(var_smoothing=1e-2), logits
    split/mlp_val.parquet, split/mlp_test.parquet   StandardScaler + MLPClassifier((32,)), logits

`--check` reads the four files and computes, with its own numpy/scipy code (not
metricdiff's): the temperature fitted on each validation run by scipy's bounded scalar search
on log T, and the test run's NLL, ECE (15 equal-width bins) and classwise ECE (Kull et al.'s
definition, one loop per class) before and after dividing its logits by that temperature.
The README sets these beside `metricdiff report TEST --temperature-from VAL`.

    python sample_runs/generate_split.py [--out-dir DIR] [--check]
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax

from generate import expected_calibration_error, ink_slice, load_run, mlp_logits, write_run

SPLIT_SEED = 0
SHARES = (0.6, 0.2, 0.2)  # train, validation, test
ECE_BINS = 15


def three_way_split(target: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stratified train / validation / test rows of the digits data, each sorted."""
    from sklearn.model_selection import train_test_split

    rows = np.arange(len(target))
    train, rest = train_test_split(rows, train_size=SHARES[0], stratify=target,
                                   random_state=SPLIT_SEED)
    val, test = train_test_split(rest, test_size=SHARES[2] / (SHARES[1] + SHARES[2]),
                                 stratify=target[rest], random_state=SPLIT_SEED)
    return np.sort(train), np.sort(val), np.sort(test)


def write_split(out_dir: Path) -> None:
    from sklearn.datasets import load_digits
    from sklearn.naive_bayes import GaussianNB
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    digits = load_digits()
    images, target = digits.data, digits.target
    train, val, test = three_way_split(target)
    names = [str(c) for c in range(10)]
    out_dir.mkdir(parents=True, exist_ok=True)
    with threadpool_limits(limits=1):  # a multi-threaded BLAS moves the fitted weights
        gnb = GaussianNB(var_smoothing=1e-2).fit(images[train], target[train])
        mlp = make_pipeline(StandardScaler(), MLPClassifier((32,), max_iter=2000,
                                                            random_state=0))
        mlp.fit(images[train], target[train])
        for rows, part in ((val, "val"), (test, "test")):
            gnb_logits = gnb.predict_log_proba(images[rows])
            assert np.isfinite(gnb_logits).all()
            for model, logits in (("gnb", gnb_logits), ("mlp", mlp_logits(mlp, images[rows]))):
                write_run(out_dir / f"{model}_{part}.parquet", rows, target[rows], "logits",
                          logits, names, {"ink": ink_slice(images[rows])})


def fitted_temperature(scores: np.ndarray, labels: np.ndarray) -> float:
    def nll(log_t: float) -> float:
        log_p = log_softmax(scores / math.exp(log_t), axis=1)
        return float(-log_p[np.arange(len(labels)), labels].mean())

    result = minimize_scalar(nll, bounds=(math.log(0.01), math.log(100.0)), method="bounded",
                             options={"xatol": 1e-10})
    return math.exp(result.x)


def classwise_ece(probs: np.ndarray, labels: np.ndarray) -> float:
    """Kull et al. 2019: the mean over classes of the binned ECE of that class's probability,
    bins (i/B, (i+1)/B] as the top-label ECE's (a probability of 0 in the first)."""
    total = 0.0
    for c in range(probs.shape[1]):
        p, hit = probs[:, c], labels == c
        bins = np.clip(np.ceil(p * ECE_BINS).astype(int) - 1, 0, ECE_BINS - 1)
        for b in range(ECE_BINS):
            member = bins == b
            total += abs(hit[member].sum() - p[member].sum()) / len(p)
    return total / probs.shape[1]


def measures(scores: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    log_p = log_softmax(scores, axis=1)
    probs = np.exp(log_p)
    confidence, correct = probs.max(axis=1), probs.argmax(axis=1) == labels
    return {"nll": float(-log_p[np.arange(len(labels)), labels].mean()),
            "ece": expected_calibration_error(confidence, correct),
            "classwise_ece": classwise_ece(probs, labels),
            "accuracy": float(correct.mean())}


def check(out_dir: Path) -> None:
    print("| model | T fitted on val | test NLL | test NLL at T | test ECE | test ECE at T | "
          "test classwise ECE | at T | test accuracy |")
    print("|---|---|---|---|---|---|---|---|---|")
    for model in ("gnb", "mlp"):
        val, test = (load_run(out_dir / f"{model}_{part}.parquet") for part in ("val", "test"))
        assert not set(val.ids) & set(test.ids), "validation and test share examples"
        t = fitted_temperature(val.scores, val.labels)
        raw, scaled = measures(test.scores, test.labels), measures(test.scores / t, test.labels)
        print(f"| {model} ({len(val.labels)} val, {len(test.labels)} test) | {t:.4f} | "
              f"{raw['nll']:.4f} | {scaled['nll']:.4f} | {raw['ece']:.4f} | "
              f"{scaled['ece']:.4f} | {raw['classwise_ece']:.4f} | "
              f"{scaled['classwise_ece']:.4f} | {raw['accuracy']:.4f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, default=Path(__file__).parent / "split")
    parser.add_argument("--check", action="store_true", help="check the files, write nothing")
    args = parser.parse_args()
    if not args.check:
        write_split(args.out_dir)
    check(args.out_dir)


if __name__ == "__main__":
    main()
