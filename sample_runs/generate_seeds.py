#!/usr/bin/env python
"""Generate the multi-seed sample runs in sample_runs/seeds/ and check them.

    python sample_runs/generate_seeds.py            # train the 10 models, rewrite the files
    python sample_runs/generate_seeds.py --check    # print the check tables (markdown)
    python sample_runs/generate_seeds.py --out-dir DIR [--check]

What it makes
-------------
Ten real runs of scikit-learn's MLPClassifier on one fixed 20-class problem,
for comparing *groups of seeds* rather than single runs:

    seeds/base/seed0/val.parquet ... seed4/   hidden_layer_sizes=(64,),  alpha=1e-4
    seeds/wide/seed0/val.parquet ... seed4/   hidden_layer_sizes=(256,), alpha=1.0

Within a configuration only ``random_state`` (0..4: weight initialisation and
mini-batch order) changes; data, split and every other setting are fixed.

Why
---
The two configurations differ for real: the group means of the NLL are many
seed standard deviations apart and every wide seed beats every base seed.
Yet seed noise alone is already "significant" example by example: some pairs
of base seeds differ with p < 0.05 by a paired t-test over the validation
examples, because such a test treats the examples as the only source of
variance and ignores that retraining with another seed moves the whole run
(and, here, that examples come in correlated clusters: with the cluster means
as the units, no pair of seeds differs significantly).  A tool that compares
one run with another cannot tell seed noise from a real change; one that
compares groups of seeds can.  ``--check`` measures these facts on the files.

Data and clusters
-----------------
``make_classification`` draws latent points (20 classes, Zipf-like class
weights, 5% flipped labels, 30 informative of 40 features).  Every example is
an *observation* of a latent point: the latent point plus independent
Gaussian noise (sd 2.0 per feature).  Each training example observes its own
latent point.  The validation set holds 245 other latent points, each
observed 5 to 20 times (3,034 examples); the observations of one latent point
form a ``cluster`` (metadata column, int) and share its label, flipped or not
- near-duplicates such as several photos of one object.  Errors within a
cluster are therefore correlated (``--check`` reports the intra-cluster
correlation).  Training and validation examples have the same distribution.
Validation rows are shuffled, so clusters are not contiguous; ids are 0..n-1
in file order, the same ids and labels in all ten files.

Each file stores float64 ``probs`` (``predict_proba``) through
``metricdiff.writer.save_predictions``.  Output is deterministic: fixed seeds,
BLAS limited to one thread, so a run in the same environment rewrites every
file bit for bit.  Training takes well under a minute.
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from scipy import stats

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "seeds"

# --------------------------------------------------------------------------
# The problem
# --------------------------------------------------------------------------

DATA_SEED = 7  # make_classification
NOISE_SEED = 11  # observation noise, cluster sizes, row order
N_CLASSES = 20
N_FEATURES = 40
N_INFORMATIVE = 30
N_REDUNDANT = 5
CLASS_SEP = 1.7
FLIP_Y = 0.05
N_TRAIN = 12_000
N_VAL_CLUSTERS = 245
CLUSTER_SIZES = (5, 20)  # inclusive
OBSERVATION_NOISE = 2.0  # sd per feature
# Zipf-like prior: p(rank r) ~ 1 / (r + 3); the rarest class gets ~1.4%.
CLASS_WEIGHTS = 1.0 / (np.arange(N_CLASSES) + 3.0)
CLASS_WEIGHTS /= CLASS_WEIGHTS.sum()

# --------------------------------------------------------------------------
# The runs
# --------------------------------------------------------------------------

SEEDS = range(5)
# max_iter is capped to keep training fast; the resulting ConvergenceWarning
# is expected and silenced.  Everything else is scikit-learn's default (adam).
COMMON = dict(max_iter=80)
CONFIGS = {
    "base": dict(hidden_layer_sizes=(64,), alpha=1e-4),
    "wide": dict(hidden_layer_sizes=(256,), alpha=1.0),
}
ALPHA = 0.05  # significance level of the checks


@dataclass
class Split:
    X_train: np.ndarray
    y_train: np.ndarray
    X_val: np.ndarray
    y_val: np.ndarray
    cluster: np.ndarray
    ids: np.ndarray


def make_split() -> Split:
    """The fixed data set: noisy observations of make_classification points."""
    from sklearn.datasets import make_classification

    latent, latent_y = make_classification(
        n_samples=N_TRAIN + N_VAL_CLUSTERS,
        n_features=N_FEATURES,
        n_informative=N_INFORMATIVE,
        n_redundant=N_REDUNDANT,
        n_classes=N_CLASSES,
        n_clusters_per_class=2,
        weights=list(CLASS_WEIGHTS[:-1]),
        flip_y=FLIP_Y,
        class_sep=CLASS_SEP,
        shuffle=True,  # so the last points are a random held-out set
        random_state=DATA_SEED,
    )
    rng = np.random.default_rng(NOISE_SEED)
    # Validation: each held-out latent point observed 5-20 times.
    centers, center_y = latent[N_TRAIN:], latent_y[N_TRAIN:]
    sizes = rng.integers(CLUSTER_SIZES[0], CLUSTER_SIZES[1] + 1, N_VAL_CLUSTERS)
    cluster = np.repeat(np.arange(N_VAL_CLUSTERS), sizes)
    X_val = centers[cluster] + rng.normal(0.0, OBSERVATION_NOISE, (len(cluster), N_FEATURES))
    y_val = center_y[cluster]
    order = rng.permutation(len(cluster))  # clusters are not contiguous in the files
    X_val, y_val, cluster = X_val[order], y_val[order], cluster[order]
    # Training: one observation of each of its own latent points.
    X_train = latent[:N_TRAIN] + rng.normal(0.0, OBSERVATION_NOISE, (N_TRAIN, N_FEATURES))
    y_train = latent_y[:N_TRAIN]
    return Split(X_train, y_train, X_val, y_val.astype(np.int64), cluster.astype(np.int64),
                 np.arange(len(y_val), dtype=np.int64))


def run_path(out_dir: Path, config: str, seed: int) -> Path:
    # one folder per run, so that `NAME=sample_runs/seeds/base/seed*/` names the group
    return out_dir / config / f"seed{seed}" / "val.parquet"


def write_all(out_dir: Path) -> None:
    # threadpoolctl ships with scikit-learn.  One BLAS thread makes the fits
    # reproducible bit for bit (and is no slower for networks this small).
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier
    from threadpoolctl import threadpool_limits

    sys.path.insert(0, str(HERE.parent))  # the metricdiff in this tree, if not installed
    from metricdiff.writer import save_predictions

    split = make_split()
    print(f"train {len(split.y_train)} examples, validation {len(split.y_val)} examples in "
          f"{N_VAL_CLUSTERS} clusters, {N_CLASSES} classes")
    start = time.perf_counter()
    with threadpool_limits(limits=1):
        for config, params in CONFIGS.items():
            for seed in SEEDS:
                run_path(out_dir, config, seed).parent.mkdir(parents=True, exist_ok=True)
                t0 = time.perf_counter()
                model = MLPClassifier(random_state=seed, **COMMON, **params)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", ConvergenceWarning)
                    model.fit(split.X_train, split.y_train)
                probs = model.predict_proba(split.X_val).astype(np.float64)
                path = save_predictions(run_path(out_dir, config, seed), split.y_val,
                                        probs=probs, ids=split.ids, cluster=split.cluster)
                true = probs[np.arange(len(split.y_val)), split.y_val]
                print(f"{config} seed {seed}: nll {-np.log(true).mean():.4f}  accuracy "
                      f"{(probs.argmax(axis=1) == split.y_val).mean():.4f}  train accuracy "
                      f"{model.score(split.X_train, split.y_train):.4f}  "
                      f"{model.n_iter_} epochs  {time.perf_counter() - t0:.1f} s  -> "
                      f"{path.relative_to(out_dir)}")
    print(f"trained and wrote {len(CONFIGS) * len(SEEDS)} runs in "
          f"{time.perf_counter() - start:.0f} s")


# --------------------------------------------------------------------------
# Checking the files (read with pyarrow, independently of metricdiff)
# --------------------------------------------------------------------------


@dataclass
class Run:
    ids: np.ndarray
    labels: np.ndarray
    cluster: np.ndarray
    nll: np.ndarray  # per example
    correct: np.ndarray  # per example, bool


def load_run(path: Path) -> Run:
    table = pq.read_table(path)
    ids = table.column("id").to_numpy()
    labels = table.column("label").to_numpy()
    probs_col = table.column("probs").combine_chunks()
    width = probs_col.type.list_size
    probs = probs_col.values.to_numpy().reshape(-1, width)
    order = np.argsort(ids, kind="stable")
    ids, labels, probs = ids[order], labels[order], probs[order]
    cluster = table.column("cluster").to_numpy()[order]
    true = probs[np.arange(len(labels)), labels]
    return Run(ids, labels, cluster, -np.log(true), probs.argmax(axis=1) == labels)


def mcnemar_p(a: np.ndarray, b: np.ndarray) -> float:
    """Exact McNemar: binomial test on the examples that only one of the runs gets right."""
    only_a = int((a & ~b).sum())
    only_b = int((~a & b).sum())
    if only_a + only_b == 0:
        return 1.0
    return float(stats.binomtest(only_a, only_a + only_b, 0.5).pvalue)


def cluster_means(values: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Mean of `values` in each cluster, clusters in sorted order."""
    _, g = np.unique(groups, return_inverse=True)
    return np.bincount(g, weights=values) / np.bincount(g)


def icc_oneway(values: np.ndarray, groups: np.ndarray) -> float:
    """ICC(1) from a one-way ANOVA with unequal group sizes (k0 correction)."""
    _, g = np.unique(groups, return_inverse=True)
    k = np.bincount(g).astype(np.float64)
    n, n_groups = len(values), len(k)
    means = np.bincount(g, weights=values) / k
    ms_between = (k * (means - values.mean()) ** 2).sum() / (n_groups - 1)
    ms_within = ((values - means[g]) ** 2).sum() / (n - n_groups)
    k0 = (n - (k ** 2).sum() / n) / (n_groups - 1)
    return float((ms_between - ms_within) / (ms_between + (k0 - 1) * ms_within))


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def check_all(out_dir: Path) -> int:
    runs = {(config, seed): load_run(run_path(out_dir, config, seed))
            for config in CONFIGS for seed in SEEDS}
    first = next(iter(runs.values()))
    for key, run in runs.items():
        assert np.array_equal(run.ids, first.ids), f"{key}: ids differ"
        assert np.array_equal(run.labels, first.labels), f"{key}: labels differ"
        assert np.array_equal(run.cluster, first.cluster), f"{key}: clusters differ"
    n = len(first.ids)
    sizes = np.bincount(np.unique(first.cluster, return_inverse=True)[1])
    print(f"## Seed groups: {n} validation examples, {len(sizes)} clusters of "
          f"{sizes.min()}-{sizes.max()} (mean {sizes.mean():.1f}), "
          f"{len(np.unique(first.labels))} classes\n")

    # Files
    rows, total_bytes, total_blocks = [], 0, 0
    for config in CONFIGS:
        for seed in SEEDS:
            path = run_path(out_dir, config, seed)
            st = path.stat()
            total_bytes += st.st_size
            total_blocks += st.st_blocks * 512
            rows.append([f"{config}/{path.name}", f"{st.st_size:,}"])
    rows.append(["total (apparent)", f"{total_bytes:,}"])
    rows.append(["total (disk, as du)", f"{total_blocks:,}"])
    print(markdown_table(["file", "bytes"], rows) + "\n")

    # Per seed
    rows = []
    summary = {}
    for config in CONFIGS:
        nll = np.array([runs[config, s].nll.mean() for s in SEEDS])
        acc = np.array([runs[config, s].correct.mean() for s in SEEDS])
        summary[config] = (nll, acc)
        for s, (x, a) in enumerate(zip(nll, acc)):
            rows.append([config, str(s), f"{x:.4f}", f"{a:.4f}"])
        rows.append([f"**{config} mean ± sd**", "0-4", f"{nll.mean():.4f} ± {nll.std(ddof=1):.4f}",
                     f"{acc.mean():.4f} ± {acc.std(ddof=1):.4f}"])
    print(markdown_table(["config", "seed", "nll", "accuracy"], rows) + "\n")
    print("sd: over the 5 seeds (ddof=1).\n")

    # Seed pairs within a configuration
    significant = {}
    for config in CONFIGS:
        rows, count_nll, count_acc, count_cluster = [], 0, 0, 0
        for i, j in itertools.combinations(SEEDS, 2):
            a, b = runs[config, i], runs[config, j]
            p_nll = float(stats.ttest_rel(a.nll, b.nll).pvalue)
            p_acc = mcnemar_p(a.correct, b.correct)
            p_cluster = float(stats.ttest_rel(cluster_means(a.nll, a.cluster),
                                              cluster_means(b.nll, b.cluster)).pvalue)
            count_nll += p_nll < ALPHA
            count_acc += p_acc < ALPHA
            count_cluster += p_cluster < ALPHA
            rows.append([f"{i} vs {j}", f"{a.nll.mean() - b.nll.mean():+.4f}", f"{p_nll:.3g}",
                         "yes" if p_nll < ALPHA else "", f"{a.correct.mean() - b.correct.mean():+.4f}",
                         f"{p_acc:.3g}", "yes" if p_acc < ALPHA else "",
                         f"{p_cluster:.3g}", "yes" if p_cluster < ALPHA else ""])
        significant[config] = (count_nll, count_acc)
        print(f"### {config}: seed pairs, one pair at a time over the {n} examples\n")
        print(markdown_table(["pair", "Δ nll", "p (paired t)", f"p < {ALPHA}", "Δ accuracy",
                              "p (McNemar exact)", f"p < {ALPHA}", "p (paired t, cluster means)",
                              f"p < {ALPHA}"], rows))
        print(f"\n{config}: {count_nll} of 10 seed pairs with p < {ALPHA} on nll, "
              f"{count_acc} of 10 on accuracy (examples as independent); "
              f"{count_cluster} of 10 on nll with the {len(sizes)} cluster means as the units.\n")

    # Between configurations
    (nll_b, acc_b), (nll_w, acc_w) = summary["base"], summary["wide"]
    welch_nll = stats.ttest_ind(nll_b, nll_w, equal_var=False)
    welch_acc = stats.ttest_ind(acc_b, acc_w, equal_var=False)
    gap = nll_b.mean() - nll_w.mean()
    spread = max(nll_b.std(ddof=1), nll_w.std(ddof=1))
    print("### base vs wide, over seeds\n")
    print(markdown_table(
        ["metric", "base mean", "wide mean", "wide - base", "Welch t", "df", "p"],
        [["nll", f"{nll_b.mean():.4f}", f"{nll_w.mean():.4f}", f"{-gap:+.4f}",
          f"{welch_nll.statistic:.2f}", f"{welch_nll.df:.1f}", f"{welch_nll.pvalue:.3g}"],
         ["accuracy", f"{acc_b.mean():.4f}", f"{acc_w.mean():.4f}", f"{acc_w.mean() - acc_b.mean():+.4f}",
          f"{welch_acc.statistic:.2f}", f"{welch_acc.df:.1f}", f"{welch_acc.pvalue:.3g}"]]))
    print(f"\nnll gap / largest seed sd: {gap / spread:.1f}; worst wide seed {nll_w.max():.4f} "
          f"vs best base seed {nll_b.min():.4f}.\n")

    # Clusters
    diff_mean = (np.mean([runs["wide", s].nll for s in SEEDS], axis=0)
                 - np.mean([runs["base", s].nll for s in SEEDS], axis=0))
    matched = [icc_oneway(runs["wide", s].nll - runs["base", s].nll, first.cluster) for s in SEEDS]
    same_config = [icc_oneway(runs["base", i].nll - runs["base", j].nll, first.cluster)
                   for i, j in itertools.combinations(SEEDS, 2)]
    print("### Intra-cluster correlation (one-way ANOVA ICC(1))\n")
    print(markdown_table(["per-example quantity", "ICC"], [
        ["nll, base seed 0", f"{icc_oneway(runs['base', 0].nll, first.cluster):.3f}"],
        ["nll difference, wide mean - base mean (5 seeds each)", f"{icc_oneway(diff_mean, first.cluster):.3f}"],
        ["nll difference, wide seed s - base seed s (s = 0..4)",
         f"{min(matched):.3f} to {max(matched):.3f}"],
        ["nll difference, base seed i - base seed j (10 pairs)",
         f"{min(same_config):.3f} to {max(same_config):.3f}"],
    ]) + "\n")

    # What the files were built to show
    conditions = [
        ("real change: nll gap > 3 x seed sd, and every wide seed better than every base seed",
         gap > 3 * spread and nll_w.max() < nll_b.min()),
        (f"seed noise: at least one base pair with paired-t p < {ALPHA} on nll",
         significant["base"][0] >= 1),
        ("every file under 1 MB, all together under 6 MB (on disk)",
         max(os.stat(run_path(out_dir, c, s)).st_size for c in CONFIGS for s in SEEDS) < 1_000_000
         and total_blocks < 6_000_000),
    ]
    print("### Design checks\n")
    print(markdown_table(["condition", "met"], [[text, "yes" if ok else "**NO**"]
                                                 for text, ok in conditions]))
    return 0 if all(ok for _, ok in conditions) else 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true",
                        help="check the existing files instead of writing them")
    parser.add_argument("--out-dir", type=Path, default=DEFAULT_OUT,
                        help="where the base/ and wide/ folders live (default: sample_runs/seeds)")
    args = parser.parse_args()
    if args.check:
        sys.exit(check_all(args.out_dir))
    write_all(args.out_dir)


if __name__ == "__main__":
    main()
