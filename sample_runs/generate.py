#!/usr/bin/env python
"""Generate the sample runs in sample_runs/ and check what was planted in them.

    python sample_runs/generate.py            # rewrite every .parquet file here
    python sample_runs/generate.py --check    # print the check tables (markdown)
    python sample_runs/generate.py --out-dir DIR [--check]

Every run is a Parquet file with one row per validation example: `id`, `label`,
one prediction column (`logits` or `probs`, a fixed-size list of K numbers),
optional string columns usable as slices, and the class names as JSON in the
key-value metadata `metricdiff.classes`.  See README.md for what each run is.

Part 1 is synthetic: a 3,000-class, Zipf-imbalanced problem with three runs
whose loss and accuracy disagree for three different, deliberately planted
reasons.  Part 2 holds real predictions of small scikit-learn models on the
bundled `digits` data set.

Output is deterministic: fixed seeds, fixed pyarrow writer settings, so a run
of this script in the same environment rewrites every file bit for bit.
Only numpy, pyarrow, scipy and scikit-learn (with its threadpoolctl) are needed.
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax

HERE = Path(__file__).resolve().parent

# --------------------------------------------------------------------------
# Writing runs
# --------------------------------------------------------------------------

# zstd level 3 is the library default; pinned so a pyarrow default change
# cannot silently change the bytes.
ZSTD_LEVEL = 3
# About five row groups per file, so that readers have to cross batch
# boundaries when they stream a run.
ROW_GROUPS_PER_FILE = 5


def prediction_array(matrix: np.ndarray) -> pa.FixedSizeListArray:
    """(N, K) numpy matrix -> fixed_size_list<dtype, K> arrow array."""
    n_classes = matrix.shape[1]
    flat = pa.array(np.ascontiguousarray(matrix).reshape(-1))
    return pa.FixedSizeListArray.from_arrays(flat, n_classes)


def write_run(
    path: Path,
    ids: np.ndarray,
    labels: np.ndarray,
    prediction_name: str,
    prediction: np.ndarray,
    class_names: list[str],
    slices: dict[str, np.ndarray],
) -> None:
    """Write one run in the metricdiff run format."""
    assert prediction_name in ("logits", "probs")
    assert len(class_names) == prediction.shape[1]
    arrays = {
        "id": pa.array(ids, type=pa.int64()),
        "label": pa.array(labels, type=pa.int64()),
        prediction_name: prediction_array(prediction),
    }
    arrays.update({name: pa.array(values.tolist(), type=pa.string()) for name, values in slices.items()})
    schema = pa.schema([pa.field(name, array.type, nullable=False) for name, array in arrays.items()])
    schema = schema.with_metadata({b"metricdiff.classes": json.dumps(class_names).encode()})
    table = pa.Table.from_arrays(list(arrays.values()), schema=schema)
    pq.write_table(
        table,
        path,
        compression="zstd",
        compression_level=ZSTD_LEVEL,
        row_group_size=math.ceil(len(ids) / ROW_GROUPS_PER_FILE),
        # zstd finds the background repeated row after row on its own; a
        # dictionary over the float values on top of it made the Part 1 files
        # up to 15% larger and slower to write.  The small columns keep one.
        use_dictionary=[name for name in arrays if name != prediction_name],
    )


# --------------------------------------------------------------------------
# Part 1: a 3,000-class imbalanced problem
# --------------------------------------------------------------------------

N_CLASSES = 3000
N_EXAMPLES = 60_000
PROBLEM_SEED = 20240611
# Zipf-like prior over classes: p(rank r) ~ (r + 100) ** -1.4.  The offset
# keeps the very first classes from dominating; with 60k examples about 220
# head classes hold half of the examples and ~650 classes have 0-3 examples.
ZIPF_EXPONENT = 1.4
ZIPF_OFFSET = 100
SOURCES = np.array(["web", "mobile", "partner"])
SOURCE_SHARES = [0.55, 0.35, 0.10]
# Each class has a fixed list of look-alike classes that runs confuse it with,
# so confusions are consistent across runs (as with a real data set).
N_LOOKALIKES = 8
# Per row the logits differ from the shared background only on this many
# "special" classes: the predicted class, the true class and confusers.
N_SPECIAL = 6

HEAD, TORSO, TAIL = 0, 1, 2
GROUP_NAMES = ("head", "torso", "tail")


@dataclass(frozen=True)
class Problem:
    """The validation set shared by all three Part 1 runs."""

    ids: np.ndarray  # (N,) int64, unique, in file order
    labels: np.ndarray  # (N,) int64
    source: np.ndarray  # (N,) str slice column
    prior: np.ndarray  # (K,) class prior the labels were drawn from
    class_group: np.ndarray  # (K,) HEAD / TORSO / TAIL by validation frequency
    lookalikes: np.ndarray  # (K, N_LOOKALIKES) classes each class is confused with

    @property
    def group(self) -> np.ndarray:
        """(N,) frequency group of each example's true class."""
        return self.class_group[self.labels]


def frequency_groups(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Head / torso / tail group of every class.

    Classes are sorted by how many examples they have (ties by class index);
    head = the most frequent classes holding the first 50% of examples, torso
    the next 30%, tail the last 20% (including classes with no examples).
    A class belongs to the group in which its first example falls.
    """
    counts = np.bincount(labels, minlength=n_classes)
    order = np.argsort(-counts, kind="stable")
    examples_before = np.cumsum(counts[order]) - counts[order]
    share_before = examples_before / len(labels)
    groups = np.full(n_classes, TAIL, dtype=np.int8)
    groups[order[share_before < 0.8]] = TORSO
    groups[order[share_before < 0.5]] = HEAD
    return groups


def zipf_prior(rng: np.random.Generator) -> np.ndarray:
    """Class prior: Zipf-like over ranks, ranks shuffled over class indices.

    Shuffling means class index says nothing about frequency, as in real
    label sets, so a tool has to count to find head and tail classes.
    """
    ranks = np.arange(1, N_CLASSES + 1)
    by_rank = (ranks + ZIPF_OFFSET) ** -ZIPF_EXPONENT
    prior = by_rank[rng.permutation(N_CLASSES)]
    return prior / prior.sum()


def draw_lookalikes(prior: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """For every class, N_LOOKALIKES distinct other classes.

    Drawn with probability ~ sqrt(prior): confusers lean towards frequent
    classes, as they do in real models, without all being the same few.
    """
    weights = np.sqrt(prior)
    lookalikes = np.empty((N_CLASSES, N_LOOKALIKES), dtype=np.int64)
    for k in range(N_CLASSES):
        others = weights.copy()
        others[k] = 0.0
        lookalikes[k] = rng.choice(N_CLASSES, N_LOOKALIKES, replace=False, p=others / others.sum())
    return lookalikes


def make_problem() -> Problem:
    rng = np.random.default_rng(PROBLEM_SEED)
    prior = zipf_prior(rng)
    labels = rng.choice(N_CLASSES, N_EXAMPLES, p=prior)
    # Unique ids in no particular order: tools must join on id, not position.
    ids = rng.choice(10**9, N_EXAMPLES, replace=False).astype(np.int64)
    source = rng.choice(SOURCES, N_EXAMPLES, p=SOURCE_SHARES)
    return Problem(
        ids=ids,
        labels=labels.astype(np.int64),
        source=source,
        prior=prior,
        class_group=frequency_groups(labels, N_CLASSES),
        lookalikes=draw_lookalikes(prior, rng),
    )


def class_names() -> list[str]:
    return [f"class_{k:04d}" for k in range(N_CLASSES)]


# ---- turning a per-row plan into logits -----------------------------------


def background_logits(prior: np.ndarray, strength: float) -> np.ndarray:
    """The logit vector every row of a run starts from.

    strength * log(prior): 0 is a flat background, 1 the full class prior.
    Quantised to 1/8 nat and shifted so the largest value is 0.  Identical
    rows are what keeps 3,000-wide logits small on disk.
    """
    logits = strength * np.log(prior)
    logits = np.round((logits - logits.max()) * 8) / 8
    return logits.astype(np.float16)


def special_classes(problem: Problem, predicted: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(N, N_SPECIAL) distinct classes whose logits a row sets explicitly.

    Slot 0 is the predicted (top-1) class, slot 1 the true class when the
    prediction is wrong, and every other slot a look-alike of the true class.
    """
    labels = problem.labels
    wrong = predicted != labels
    candidates = rng.permuted(problem.lookalikes[labels], axis=1)
    # Move the predicted class (if it is a look-alike) to the back, keeping
    # the order of the others, so the first candidates are all usable.
    is_predicted = candidates == predicted[:, None]
    candidates = np.take_along_axis(candidates, np.argsort(is_predicted, axis=1, kind="stable"), axis=1)
    slots = np.empty((len(labels), N_SPECIAL), dtype=np.int64)
    slots[:, 0] = predicted
    slots[:, 1] = np.where(wrong, labels, candidates[:, 0])
    slots[:, 2:] = candidates[:, 1 : N_SPECIAL - 1]
    return slots


def logits_from_plan(background: np.ndarray, specials: np.ndarray, log_odds: np.ndarray) -> np.ndarray:
    """(N, K) float16 logits: the background plus the special classes.

    log_odds[i, j] is how many nats class specials[i, j] stands above the
    rest of the row taken as one block: its softmax probability is
    exp(a_j) / (1 + sum_k exp(a_k)), whatever the background looks like.
    """
    n_rows = len(specials)
    background_mass = np.exp(background.astype(np.float64))
    mass_rest = background_mass.sum() - background_mass[specials].sum(axis=1)
    logits = np.tile(background, (n_rows, 1))
    rows = np.arange(n_rows)[:, None]
    logits[rows, specials] = (np.log(mass_rest)[:, None] + log_odds).astype(np.float16)
    return logits


def log_odds_from_probs(probs: np.ndarray) -> np.ndarray:
    """Special-slot probabilities (rows sum < 1) -> log-odds vs the rest."""
    rest = 1.0 - probs.sum(axis=1, keepdims=True)
    return np.log(probs) - np.log(rest)


def decreasing_log_odds(top: np.ndarray, first_gap: np.ndarray, rng: np.random.Generator, mean_step: float) -> np.ndarray:
    """Log-odds of all slots: the top one, then each lower by a positive gap."""
    gaps = np.empty((len(top), N_SPECIAL - 1))
    gaps[:, 0] = first_gap
    gaps[:, 1:] = rng.exponential(mean_step, (len(top), N_SPECIAL - 2))
    return np.concatenate([top[:, None], top[:, None] - np.cumsum(gaps, axis=1)], axis=1)


def random_lookalike(problem: Problem, rng: np.random.Generator) -> np.ndarray:
    """One look-alike of each example's true class, the usual wrong answer."""
    pick = rng.integers(0, N_LOOKALIKES, len(problem.labels))
    return problem.lookalikes[problem.labels, pick]


# ---- the three runs ----------------------------------------------------------
#
# Each plan_* function returns (predicted class, log-odds of the special
# slots, background strength).  The numbers were tuned by hand against the
# --check output to land on the target table (see README.md).

# featA_hpB: under-confident.  The background is nearly flat, so a lot of
# probability sits on thousands of classes and the right answer wins with
# modest probability; sharpening (temperature < 1) removes that mass.
A_SEED = 1
A_BACKGROUND = 0.3
A_ERROR_RATE = 0.10
A_TOP_MEAN, A_TOP_SD = 0.0, 0.9
A_TRUTH_GAP = 0.3, 1.0  # wrong rows: truth this far below the top (min + exponential mean)
A_CONFUSER_GAP = 0.5, 0.7  # first confuser gap, min + exponential mean
A_STEP = 0.7


def plan_feat_a(problem: Problem, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, float]:
    n = len(problem.labels)
    wrong = rng.random(n) < A_ERROR_RATE
    predicted = np.where(wrong, random_lookalike(problem, rng), problem.labels)
    top = rng.normal(A_TOP_MEAN, A_TOP_SD, n)
    truth_gap = A_TRUTH_GAP[0] + rng.exponential(A_TRUTH_GAP[1], n)
    confuser_gap = A_CONFUSER_GAP[0] + rng.exponential(A_CONFUSER_GAP[1], n)
    first_gap = np.where(wrong, truth_gap, confuser_gap)
    return predicted, decreasing_log_odds(top, first_gap, rng, A_STEP), A_BACKGROUND


# featC_hpA: overconfident with a confidently-wrong tail.  Few errors, but
# each puts the truth tens of nats below the top class, so a handful of rows
# carry most of the loss; errors are concentrated in the "partner" slice.
C_SEED = 3
C_BACKGROUND = 0.5
C_ERROR_RATE = {"web": 0.033, "mobile": 0.033, "partner": 0.20}
C_TOP_MEAN, C_TOP_SD, C_TOP_MIN = 12.0, 3.0, 4.0
C_TRUTH_GAP = 6.0, 0.8, 30.0  # wrong rows: min + gamma(shape, scale), skewed, mean ~30 nats
C_TRUTH_GAP_MAX = 100.0  # beyond this even a badly overconfident net is implausible
C_CONFUSER_GAP = 6.0, 2.0
C_STEP = 1.0


def plan_feat_c(problem: Problem, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, float]:
    n = len(problem.labels)
    error_rate = np.vectorize(C_ERROR_RATE.get)(problem.source)
    wrong = rng.random(n) < error_rate
    predicted = np.where(wrong, random_lookalike(problem, rng), problem.labels)
    top = np.maximum(rng.normal(C_TOP_MEAN, C_TOP_SD, n), C_TOP_MIN)
    truth_gap = np.minimum(C_TRUTH_GAP[0] + rng.gamma(C_TRUTH_GAP[1], C_TRUTH_GAP[2], n), C_TRUTH_GAP_MAX)
    confuser_gap = C_CONFUSER_GAP[0] + rng.exponential(C_CONFUSER_GAP[1], n)
    first_gap = np.where(wrong, truth_gap, confuser_gap)
    return predicted, decreasing_log_odds(top, first_gap, rng, C_STEP), C_BACKGROUND


# featB_hpA: calibrated, good on head classes, gives up on the tail.  Each
# row first draws its top-1 probability, then is right with exactly that
# probability, so confidence matches accuracy.  Tail rows get a low top-1
# probability and, when wrong, a frequent class as the answer.
B_SEED = 2
B_BACKGROUND = 0.8
# Beta(a, b) of the top-1 probability per group; means .97 / .94 / .40.
B_TOP_PROB = {HEAD: (30.0, 0.93), TORSO: (15.0, 0.96), TAIL: (2.0, 3.0)}
# Wrong rows: the truth gets this share of the non-top mass (log-uniform).
B_TRUTH_SHARE_LOG = -9.5, -1.0
B_SPECIAL_SHARE = 0.5  # confusers' share of what is left; the rest is background
B_CONFUSER_DECAY = 0.5  # each confuser gets this times the previous one
B_MAX_RUNNER_UP = 0.8  # no other special slot above this times the top one


def draw_top_prob(problem: Problem, rng: np.random.Generator) -> np.ndarray:
    """Top-1 probability of every row, from its frequency group's Beta."""
    top = np.empty(len(problem.labels))
    group = problem.group
    for g, (a, b) in B_TOP_PROB.items():
        in_group = group == g
        top[in_group] = rng.beta(a, b, in_group.sum())
    return np.clip(top, 0.05, 0.999)


def head_class_guess(problem: Problem, rng: np.random.Generator) -> np.ndarray:
    """A frequent class per row, drawn from the head classes by prior."""
    head = np.flatnonzero(problem.class_group == HEAD)
    weights = problem.prior[head] / problem.prior[head].sum()
    return rng.choice(head, len(problem.labels), p=weights)


def plan_feat_b(problem: Problem, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, float]:
    n = len(problem.labels)
    top = draw_top_prob(problem, rng)
    wrong = rng.random(n) >= top
    tail = problem.group == TAIL
    wrong_answer = np.where(tail, head_class_guess(problem, rng), random_lookalike(problem, rng))
    predicted = np.where(wrong, wrong_answer, problem.labels)

    rest = 1.0 - top
    truth = rest * np.exp(rng.uniform(*B_TRUTH_SHARE_LOG, n))
    confuser_mass = (rest - np.where(wrong, truth, 0.0)) * B_SPECIAL_SHARE
    decay = B_CONFUSER_DECAY ** np.arange(N_SPECIAL - 1)
    # Wrong rows: slot 1 is the truth, the confusers fill slots 2..; right
    # rows: the confusers fill slots 1.. .
    probs = np.empty((n, N_SPECIAL))
    probs[:, 0] = top
    probs[:, 1:] = confuser_mass[:, None] * decay / decay.sum()
    probs[wrong, 2:] = confuser_mass[wrong, None] * decay[:-1] / decay[:-1].sum()
    probs[wrong, 1] = truth[wrong]
    # The top slot must stay the argmax, or "right with probability top"
    # would no longer hold; what a cap removes goes to the background.
    probs[:, 1:] = np.minimum(probs[:, 1:], B_MAX_RUNNER_UP * top[:, None])
    return predicted, log_odds_from_probs(probs), B_BACKGROUND


PART1_RUNS = {
    "featA_hpB": (plan_feat_a, A_SEED),
    "featB_hpA": (plan_feat_b, B_SEED),
    "featC_hpA": (plan_feat_c, C_SEED),
}


def write_part1(out_dir: Path) -> None:
    problem = make_problem()
    names = class_names()
    for run_name, (plan, seed) in PART1_RUNS.items():
        rng = np.random.default_rng(seed)
        predicted, log_odds, strength = plan(problem, rng)
        specials = special_classes(problem, predicted, rng)
        logits = logits_from_plan(background_logits(problem.prior, strength), specials, log_odds)
        # The plan's top slot must be what the stored (float16) logits predict.
        assert np.array_equal(logits.argmax(axis=1), predicted), run_name
        write_run(
            out_dir / f"{run_name}.parquet",
            problem.ids,
            problem.labels,
            "logits",
            logits,
            names,
            {"source": problem.source},
        )


# --------------------------------------------------------------------------
# Part 2: real models on scikit-learn's bundled digits data
# --------------------------------------------------------------------------

DIGITS_SPLIT_SEED = 0
DIGITS_VALIDATION_SHARE = 0.3
# Stands in for a log-probability of -inf, so files never hold infinities.
MOST_NEGATIVE_LOGIT = -1e4
# scikit-learn's default (1e-9) leaves the always-blank border pixels of some
# digits with a near-zero variance: log-probabilities then reach -7e9 and the
# mean NLL is ~6.6e5 nats.  1e-2 is a usual fix; the model stays overconfident.
GNB_VAR_SMOOTHING = 1e-2


def digits_split():
    """Digits data and a fixed stratified train/validation split of its rows."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    rows = np.arange(len(digits.target))
    train, val = train_test_split(
        rows,
        test_size=DIGITS_VALIDATION_SHARE,
        stratify=digits.target,
        random_state=DIGITS_SPLIT_SEED,
    )
    return digits.data, digits.target, np.sort(train), np.sort(val)


def ink_slice(images: np.ndarray) -> np.ndarray:
    """'light' / 'heavy' by total pixel intensity versus the median."""
    ink = images.sum(axis=1)
    return np.where(ink > np.median(ink), "heavy", "light")


def mlp_logits(model, images: np.ndarray) -> np.ndarray:
    """Pre-softmax outputs of a fitted StandardScaler + MLPClassifier pipeline.

    scikit-learn only exposes probabilities; replaying the forward pass gives
    the real logits, which never underflow the way probabilities can.
    """
    scaler, mlp = model.named_steps["standardscaler"], model.named_steps["mlpclassifier"]
    hidden = scaler.transform(images)
    for weights, bias in zip(mlp.coefs_[:-1], mlp.intercepts_[:-1]):
        hidden = np.maximum(hidden @ weights + bias, 0.0)  # relu, the default
    logits = hidden @ mlp.coefs_[-1] + mlp.intercepts_[-1]
    assert np.allclose(np.exp(log_softmax(logits, axis=1)), model.predict_proba(images))
    return logits


def digits_predictions() -> dict[str, tuple[str, np.ndarray]]:
    """Fit the models and return {run name: (column name, validation matrix)}."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.naive_bayes import GaussianNB
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    images, target, train, val = digits_split()
    x_train, y_train, x_val = images[train], target[train], images[val]

    logreg = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000))
    probs = logreg.fit(x_train, y_train).predict_proba(x_val)
    # A probability of exactly 0 for the true class would make NLL infinite.
    assert probs[np.arange(len(val)), target[val]].min() > 0

    # Gaussian naive Bayes is famously overconfident: its log-probabilities
    # reach -1,000 nats, whose exp is exactly 0.0, so it is stored as logits,
    # never as probs.  predict_log_proba gives no -inf here; if it ever did,
    # those entries would become MOST_NEGATIVE_LOGIT.
    gnb = GaussianNB(var_smoothing=GNB_VAR_SMOOTHING).fit(x_train, y_train)
    gnb_log_probs = gnb.predict_log_proba(x_val)
    gnb_log_probs[np.isneginf(gnb_log_probs)] = MOST_NEGATIVE_LOGIT

    mlp = make_pipeline(StandardScaler(), MLPClassifier(hidden_layer_sizes=(32,), max_iter=2000, random_state=0))
    mlp.fit(x_train, y_train)

    return {
        "digits_logreg": ("probs", probs),
        "digits_gnb": ("logits", gnb_log_probs),
        "digits_mlp": ("logits", mlp_logits(mlp, x_val).astype(np.float32)),
    }


def write_part2(out_dir: Path) -> None:
    # threadpoolctl ships with scikit-learn.  A multi-threaded BLAS adds up in
    # an order that depends on the thread count, which moves the fitted
    # weights in the last bits; one thread gives the same bytes on any machine.
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        predictions = digits_predictions()
    images, target, _, val = digits_split()
    names = [str(d) for d in range(10)]
    for run_name, (column, matrix) in predictions.items():
        write_run(
            out_dir / f"{run_name}.parquet",
            val.astype(np.int64),
            target[val].astype(np.int64),
            column,
            matrix,
            names,
            {"ink": ink_slice(images[val])},
        )


# --------------------------------------------------------------------------
# --check: recompute the planted properties from the files alone
# --------------------------------------------------------------------------

CHUNK_ROWS = 2048
ECE_BINS = 15


@dataclass
class LoadedRun:
    ids: np.ndarray
    labels: np.ndarray
    scores: np.ndarray  # (N, K) logits, or log(probs) for a probs run
    prediction_name: str
    slices: dict[str, np.ndarray]
    class_names: list[str]


def load_run(path: Path) -> LoadedRun:
    table = pq.read_table(path)
    class_names = json.loads(table.schema.metadata[b"metricdiff.classes"])
    name = "logits" if "logits" in table.column_names else "probs"
    column = table.column(name).combine_chunks()
    matrix = column.flatten().to_numpy().reshape(len(table), column.type.list_size)
    if name == "probs":
        assert np.allclose(matrix.sum(axis=1), 1.0)
        with np.errstate(divide="ignore"):
            matrix = np.log(matrix)
    slices = {c: np.asarray(table.column(c).to_pylist()) for c in table.column_names if c not in ("id", "label", name)}
    return LoadedRun(
        ids=table.column("id").to_numpy(),
        labels=table.column("label").to_numpy(),
        scores=matrix,
        prediction_name=name,
        slices=slices,
        class_names=class_names,
    )


def row_chunks(n_rows: int):
    for start in range(0, n_rows, CHUNK_ROWS):
        yield slice(start, min(start + CHUNK_ROWS, n_rows))


def per_row_stats(scores: np.ndarray, labels: np.ndarray):
    """NLL of the true class, top-1 class and top-1 probability per row."""
    nll, confidence = np.empty(len(labels)), np.empty(len(labels))
    top = np.empty(len(labels), dtype=np.int64)
    for rows in row_chunks(len(labels)):
        log_p = log_softmax(scores[rows].astype(np.float64), axis=1)
        nll[rows] = -log_p[np.arange(len(log_p)), labels[rows]]
        top[rows] = log_p.argmax(axis=1)
        confidence[rows] = np.exp(log_p.max(axis=1))
    return nll, top, confidence


def mean_nll_at_temperature(scores: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    # float32 halves the time of this inner loop; sums are kept in float64.
    total = 0.0
    for rows in row_chunks(len(labels)):
        log_p = log_softmax(scores[rows].astype(np.float32) / np.float32(temperature), axis=1)
        total += -log_p[np.arange(len(log_p)), labels[rows]].astype(np.float64).sum()
    return total / len(labels)


def fit_temperature(scores: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """The single temperature minimising mean NLL (searched on log T)."""
    result = minimize_scalar(
        lambda log_t: mean_nll_at_temperature(scores, labels, math.exp(log_t)),
        bounds=(math.log(0.01), math.log(1000.0)),
        method="bounded",
        options={"xatol": 1e-3},
    )
    return math.exp(result.x), float(result.fun)


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray) -> float:
    """15 equal-width bins on top-1 confidence, weighted by bin size."""
    bins = np.clip(np.ceil(confidence * ECE_BINS).astype(int) - 1, 0, ECE_BINS - 1)
    ece = 0.0
    for b in range(ECE_BINS):
        in_bin = bins == b
        if in_bin.any():
            ece += in_bin.mean() * abs(correct[in_bin].mean() - confidence[in_bin].mean())
    return ece


def worst_share(nll: np.ndarray, fraction: float = 0.01) -> float:
    """Share of the total NLL carried by the worst `fraction` of rows."""
    k = max(1, math.ceil(fraction * len(nll)))
    return float(np.sort(nll)[-k:].sum() / nll.sum())


def check_run(run: LoadedRun) -> tuple[dict, list[list[str]]]:
    """The summary metrics of one run, and its per-group / per-slice rows."""
    nll, top, confidence = per_row_stats(run.scores, run.labels)
    correct = top == run.labels
    temperature, nll_after = fit_temperature(run.scores, run.labels)
    group = frequency_groups(run.labels, len(run.class_names))[run.labels]
    stats = {
        "n": len(run.labels),
        "NLL": nll.mean(),
        "acc": correct.mean(),
        "conf": confidence.mean(),
        "ECE": expected_calibration_error(confidence, correct),
        "T": temperature,
        "NLL@T": nll_after,
    }
    for g, name in enumerate(GROUP_NAMES):
        stats[f"acc {name}"] = correct[group == g].mean()
    stats["worst1% share"] = worst_share(nll)
    stats["wrong conf>=.9"] = int((~correct & (confidence >= 0.9)).sum())

    parts = {"top1=right": correct, "top1=wrong": ~correct}
    parts.update({f"group={name}": group == g for g, name in enumerate(GROUP_NAMES)})
    for column, values in run.slices.items():
        parts.update({f"{column}={value}": values == value for value in np.unique(values)})
    breakdown = [
        [part, str(mask.sum()), f"{correct[mask].mean():.3f}", f"{nll[mask].mean():.3f}", f"{nll[mask].sum() / nll.sum():.3f}"]
        for part, mask in parts.items()
        if mask.any()
    ]
    return stats, breakdown


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def format_value(value) -> str:
    if isinstance(value, (int, np.integer)):
        return str(value)
    return f"{value:.3f}"


def file_row(path: Path) -> list[str]:
    """Size and layout of one file, to confirm the writer settings."""
    parquet = pq.ParquetFile(path)
    prediction = next(f for f in parquet.schema_arrow if f.name in ("logits", "probs"))
    return [
        path.name,
        f"{path.stat().st_size:,}",
        str(parquet.metadata.num_rows),
        str(parquet.metadata.num_row_groups),
        f"{prediction.name}: {prediction.type}",
    ]


def check_all(out_dir: Path) -> None:
    paths = sorted(out_dir.glob("*.parquet"))
    print(markdown_table(["file", "bytes", "rows", "row groups", "prediction"], [file_row(p) for p in paths]))
    total = sum(p.stat().st_size for p in paths)
    print(f"\ntotal: {total:,} bytes\n")

    # One run in memory at a time (a Part 1 run is 360 MB of float16);
    # only ids and labels are kept to compare runs with each other.
    summary_rows, breakdown_rows, keys = [], [], {}
    for path in paths:
        run = load_run(path)
        keys[path.stem] = (run.class_names, run.ids, run.labels)
        stats, breakdown = check_run(run)
        summary_rows.append([path.stem] + [format_value(value) for value in stats.values()])
        breakdown_rows += [[path.stem] + row for row in breakdown]
        del run

    for names in check_shared_examples(keys):
        print(f"same ids and labels, same order: {', '.join(names)}")
    print()
    print(markdown_table(["run"] + list(stats), summary_rows))
    print()
    print(markdown_table(["run", "part", "n", "acc", "NLL", "share of NLL"], breakdown_rows))


def check_shared_examples(keys: dict[str, tuple]) -> list[list[str]]:
    """Runs of one problem (same class names) must list the same ids and
    labels in the same order.  keys: run -> (class names, ids, labels).
    Returns the run names grouped by problem."""
    by_problem: dict[tuple[str, ...], list[str]] = {}
    for name, (class_names, _, _) in keys.items():
        by_problem.setdefault(tuple(class_names), []).append(name)
    for names in by_problem.values():
        _, ids, labels = keys[names[0]]
        assert len(np.unique(ids)) == len(ids), f"{names[0]}: duplicate ids"
        for other in names[1:]:
            assert np.array_equal(ids, keys[other][1]), f"{other}: ids differ from {names[0]}"
            assert np.array_equal(labels, keys[other][2]), f"{other}: labels differ from {names[0]}"
    return list(by_problem.values())


# --------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="check the existing files instead of writing them")
    parser.add_argument("--out-dir", type=Path, default=HERE, help="where the .parquet files live (default: here)")
    args = parser.parse_args()
    if args.check:
        check_all(args.out_dir)
        return
    args.out_dir.mkdir(parents=True, exist_ok=True)
    write_part1(args.out_dir)
    write_part2(args.out_dir)


if __name__ == "__main__":
    main()
