"""Classwise ECE and the Brier decomposition against loops written from their definitions,
the same whatever the batch size, shard split, row order and block count, and their block
bootstrap checked by simulation."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import softmax

import metricdiff
from metricdiff.classwise import ClasswiseSums, classwise_values, example_blocks
from metricdiff.perexample import from_scores
from conftest import write_run


def naive_bin(p: float, bins: int) -> int:
    """Bin i holds (i/B, (i+1)/B]; 0 goes to bin 0, as the top-label ECE's bins."""
    for i in range(bins):
        if p <= (i + 1) / bins:
            return i
    return bins - 1


def naive(probs: np.ndarray, labels: np.ndarray, bins: int) -> dict[str, float]:
    """Kull et al.'s classwise ECE, Murphy's decomposition per class summed, and the
    within-bin terms of Stephenson et al. (2008) computed on their own, example by example."""
    n, k = probs.shape
    gap = reliability = resolution = uncertainty = within = 0.0
    for j in range(k):
        truth = (labels == j).astype(float)
        base_rate = truth.mean()
        uncertainty += base_rate * (1 - base_rate)
        which = np.array([naive_bin(p, bins) for p in probs[:, j]])
        for b in range(bins):
            member = which == b
            if not member.any():
                continue
            p, o = probs[member, j], truth[member]
            gap += abs(o.sum() - p.sum()) / n
            reliability += member.sum() * (p.mean() - o.mean()) ** 2 / n
            resolution += member.sum() * (o.mean() - base_rate) ** 2 / n
            within += (((p - p.mean()) ** 2).sum()
                       - 2 * ((p - p.mean()) * (o - o.mean())).sum()) / n
    return {"classwise_ece": gap / k, "brier_reliability": reliability,
            "brier_resolution": resolution, "brier_uncertainty": uncertainty,
            "brier_within": within}


def sums_of(logits, labels, bins=15, blocks=1, keys=None, batch=None):
    sums = ClasswiseSums(logits.shape[1], bins, blocks)
    batch = batch or len(labels)
    keys = np.arange(len(labels)) if keys is None else keys
    for start in range(0, len(labels), batch):
        rows = slice(start, start + batch)
        from_scores(logits[rows], labels[rows], None, sums, example_blocks(keys[rows], blocks))
    return sums.finish()


def random_case(seed: int, n: int, k: int, sharp: float = 3.0):
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, sharp, (n, k))
    labels = np.array([rng.choice(k, p=softmax(row / 1.5)) for row in logits])
    return logits, labels


@pytest.mark.parametrize("seed,n,k,bins", [(0, 300, 4, 15), (1, 500, 12, 10), (2, 200, 30, 5),
                                           (3, 400, 3, 1)])
def test_matches_the_definitions(seed, n, k, bins):
    logits, labels = random_case(seed, n, k)
    got = {name: float(v[0]) for name, v in classwise_values(sums_of(logits, labels,
                                                                     bins)).items()}
    want = naive(softmax(logits, axis=1), labels, bins)
    for name, value in want.items():
        assert got[name] == pytest.approx(value, rel=1e-9, abs=1e-12), name


def test_the_parts_add_up_to_the_brier_score():
    logits, labels = random_case(4, 600, 8)
    got = {name: float(v[0]) for name, v in classwise_values(sums_of(logits, labels)).items()}
    probs = softmax(logits, axis=1)
    brier = ((probs - np.eye(8)[labels]) ** 2).sum(axis=1).mean()
    parts = (got["brier_reliability"] - got["brier_resolution"] + got["brier_uncertainty"]
             + got["brier_within"])
    assert parts == pytest.approx(brier, rel=1e-10)


@pytest.mark.parametrize("blocks,batch", [(1, 7), (128, 100), (5, 33), (128, 1)])
def test_the_same_for_any_batches_and_blocks(blocks, batch):
    logits, labels = random_case(5, 350, 9)
    one = classwise_values(sums_of(logits, labels))
    other = classwise_values(sums_of(logits, labels, blocks=blocks, batch=batch))
    for name in one:
        assert other[name][0] == pytest.approx(one[name][0], rel=1e-10, abs=1e-14)


def test_blocks_follow_the_key_not_the_row():
    ids = np.random.default_rng(6).permutation(1000)
    blocks = example_blocks(ids, 128)
    order = np.argsort(ids)
    assert np.array_equal(example_blocks(ids[order], 128), blocks[order])
    counts = np.bincount(blocks, minlength=128)
    assert counts.min() > 0 and counts.max() < 25  # spread, about 7.8 a block
    text = np.array([f"ex{i}" for i in ids], dtype=object)
    assert np.array_equal(example_blocks(text, 128), example_blocks(text.copy(), 128))


def test_report_gives_the_numbers_across_shards_and_dtypes(tmp_path):
    logits, labels = random_case(7, 640, 6)
    want = naive(softmax(logits, axis=1), labels, 15)
    for i, (shards, dtype) in enumerate([(1, np.float64), (3, np.float64), (2, np.float32)]):
        path = write_run(tmp_path / f"run{i}", labels, logits=logits.astype(dtype),
                         ids=np.arange(640), shards=shards, row_group_size=50)
        if shards == 1:
            path = path.rename(tmp_path / f"run{i}.parquet")
        metrics = metricdiff.report(path, batch_values=600).metrics
        tolerance = 1e-9 if dtype == np.float64 else 1e-5
        for name, value in want.items():
            assert metrics[name] == pytest.approx(value, rel=tolerance, abs=1e-9), name


def test_compare_sees_the_same_values_on_rows_in_another_order(tmp_path):
    logits, labels = random_case(8, 500, 5)
    other, _ = random_case(9, 500, 5)
    ids = np.arange(500)
    shuffle = np.random.default_rng(1).permutation(500)
    a = write_run(tmp_path / "a.parquet", labels, logits=logits, ids=ids)
    b = write_run(tmp_path / "b.parquet", labels[shuffle], logits=other[shuffle],
                  ids=ids[shuffle])
    result = metricdiff.compare(a, b, resamples=200).to_dict()
    runs = {run["name"]: run["metrics"] for run in result["runs"]}
    for name, value in naive(softmax(other, axis=1), labels, 15).items():
        assert runs["b"][name] == pytest.approx(value, rel=1e-9), name
    delta = result["comparisons"][0]["deltas"]["classwise_ece"]
    assert delta["method"].startswith("block bootstrap")
    assert delta["ci_low"] <= delta["delta"] <= delta["ci_high"]


def test_partial_compare_measures_the_common_examples_only(tmp_path):
    logits, labels = random_case(10, 400, 4)
    a = write_run(tmp_path / "a.parquet", labels, logits=logits, ids=np.arange(400))
    b = write_run(tmp_path / "b.parquet", labels[:300], logits=logits[:300],
                  ids=np.arange(300))
    result = metricdiff.compare(a, b, resamples=200, allow_partial=True).to_dict()
    want = naive(softmax(logits[:300], axis=1), labels[:300], 15)["classwise_ece"]
    for run in result["runs"]:
        assert run["metrics"]["classwise_ece"] == pytest.approx(want, rel=1e-9)


# ----------------------------------------------------------------------- block bootstrap

def simulated_pair(rng, n: int, k: int, sharpen: float):
    """Two models of one data set: labels drawn from true probabilities, each model seeing
    them through its own noise; the candidate's logits multiplied by `sharpen`."""
    truth = rng.normal(0, 2.0, (n, k))
    labels = (softmax(truth, axis=1).cumsum(axis=1) > rng.random((n, 1))).argmax(axis=1)
    base = truth + rng.normal(0, 0.7, (n, k))
    cand = sharpen * (truth + rng.normal(0, 0.7, (n, k)))
    return labels, base, cand


def block_intervals(labels, base, cand, resamples: int, seed: int):
    from metricdiff.classwise import BlockPlan
    from metricdiff.comparison import _block_draws
    from metricdiff.paired import bootstrap

    sums = [sums_of(logits, labels, blocks=128) for logits in (base, cand)]
    plan = BlockPlan(int((sums[0].size > 0).sum()), resamples, seed, ("examples",))
    weights = plan.weights()
    draws = [_block_draws(s, weights) for s in sums]
    observed = {name: float(draws[1][name][0, 0] - draws[0][name][0, 0]) for name in draws[0]}
    return bootstrap(observed, draws[0], draws[1], plan, 0.05)


def test_equal_models_are_called_different_at_about_alpha():
    """Two models made the same way: every call of a difference is a false one."""
    rng = np.random.default_rng(11)
    calls = {name: 0 for name in ("classwise_ece", "brier_reliability", "brier_resolution")}
    trials = 150
    for trial in range(trials):
        labels, base, cand = simulated_pair(rng, 1500, 6, 1.0)
        for name, interval in block_intervals(labels, base, cand, 200, trial).items():
            calls[name] += interval.p_value < 0.05
    for name, count in calls.items():
        # 150 trials at a 5% rate: 7.5 expected; 16 or more has probability < 0.3%
        assert count <= 16, (name, count)


def test_intervals_cover_the_expected_difference():
    """A sharper candidate: the interval of each delta covers the delta's mean over data
    sets (its sampling distribution's centre) about 95% of the time."""
    rng = np.random.default_rng(12)
    trials = 150
    deltas, intervals = [], []
    for trial in range(trials):
        labels, base, cand = simulated_pair(rng, 1500, 6, 1.6)
        result = block_intervals(labels, base, cand, 200, trial)
        deltas.append({name: i.delta for name, i in result.items()})
        intervals.append(result)
    for name in deltas[0]:
        centre = np.mean([d[name] for d in deltas])
        covered = sum(i[name].ci_low <= centre <= i[name].ci_high for i in intervals)
        # 95% of 150 is 142.5; below 133 has probability < 0.5%
        assert covered >= 133, (name, covered, centre)
        assert abs(centre) > 0  # a real difference was simulated


def test_the_brier_sentence_names_a_part_only_beyond_noise():
    from metricdiff.explain import _brier_sentence
    from metricdiff.paired import Interval

    def delta(value, p):
        return Interval(value, value - 0.01, value + 0.01, p, "paired t")

    sharper = {"brier": delta(-0.05, 0.001), "brier_reliability": delta(-0.004, 0.3),
               "brier_resolution": delta(0.04, 0.001)}
    said = _brier_sentence(sharper, 0.05)
    assert "within-bin rest -0.0060" in said  # -0.05 - (-0.004) + 0.04
    assert said.endswith("sharpness: how well the runs tell classes apart.")
    assert "not beyond noise, p = 0.3" in said
    noisy = {**sharper, "brier": delta(-0.05, 0.2)}
    assert "Most of" not in _brier_sentence(noisy, 0.05)
    calibrated = {"brier": delta(-0.05, 0.001), "brier_reliability": delta(-0.045, 0.001),
                  "brier_resolution": delta(0.001, 0.8)}
    assert _brier_sentence(calibrated, 0.05).endswith("is calibration.")
    assert _brier_sentence({"brier": delta(-0.05, 0.001)}, 0.05) is None
