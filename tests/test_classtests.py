"""Per-class change tests against scipy references, the BH adjustment against scipy's, and the
false discovery rate and power on simulated runs where the changed classes are known."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy import stats

from metricdiff.classtests import benjamini_hochberg, class_changes
from metricdiff.errors import InputError, UsageError
from metricdiff.paired import mcnemar_exact, paired_t
from metricdiff.perexample import PerExample


def run(label: np.ndarray, correct: np.ndarray, nll: np.ndarray, num_classes: int) -> PerExample:
    """A run with every PerExample column filled; a wrong example predicts the next class."""
    n = len(label)
    conf = np.exp(-nll)
    return PerExample(label=label, pred=np.where(correct, label, (label + 1) % num_classes),
                      rank=np.where(correct, 0, 1).astype(np.int64), conf=conf, nll=nll,
                      brier=np.zeros(n), entropy=np.zeros(n), nll_cal=nll.copy(),
                      conf_cal=conf.copy())


def random_run(rng: np.random.Generator, label: np.ndarray, num_classes: int,
               accuracy: np.ndarray) -> PerExample:
    """Each example right with its class's probability; its NLL drawn given right or wrong
    (wrong answers cost more), so that NLL differences are realistic, not normal."""
    correct = rng.random(len(label)) < accuracy[label]
    nll = np.where(correct, rng.exponential(0.3, len(label)),
                   1.0 + rng.exponential(1.0, len(label)))
    return run(label, correct, nll, num_classes)


def random_pair(seed: int, num_classes: int = 50, n: int = 3000):
    """Two runs whose recall and NLL move by a different amount in each class, some by a lot,
    so that the p-values range from tiny to 1."""
    rng = np.random.default_rng(seed)
    label = rng.integers(0, num_classes, n)
    accuracy = rng.uniform(0.4, 0.95, num_classes)
    base = random_run(rng, label, num_classes, accuracy)
    moved = np.clip(accuracy + rng.normal(0, 0.15, num_classes), 0, 1)
    cand = random_run(rng, label, num_classes, moved)
    nll_shift = rng.uniform(0, 0.6, num_classes) * (rng.random(num_classes) < 0.5)
    return base, run(label, cand.correct, cand.nll + nll_shift[label], num_classes)


# ----------------------------------------------------------------------------- references

def test_recall_p_values_match_scipy_binomtest():
    base, cand = random_pair(1)
    result = class_changes(base, cand, 50)["per_class"]
    checked = 0
    for k in range(50):
        member = base.label == k
        fixed = int((~base.correct & cand.correct & member).sum())
        broken = int((base.correct & ~cand.correct & member).sum())
        if fixed + broken:
            expected = stats.binomtest(fixed, fixed + broken, 0.5).pvalue
            checked += expected < 0.5  # count the informative ones: the test must see some
        else:
            expected = 1.0
        assert result["recall_p"][k] == pytest.approx(expected, rel=1e-12, abs=1e-300), k
        assert result["recall_p"][k] == pytest.approx(mcnemar_exact(fixed, broken), rel=1e-12)
        assert result["recall_delta"][k] == pytest.approx((fixed - broken) / member.sum())
    assert checked >= 10


def test_nll_p_values_match_scipy_ttest_rel():
    base, cand = random_pair(2)
    result = class_changes(base, cand, 50, fdr=0.1)["per_class"]
    small = 0
    for k in range(50):
        member = base.label == k
        expected = stats.ttest_rel(cand.nll[member], base.nll[member])
        assert result["nll_p"][k] == pytest.approx(expected.pvalue, rel=1e-10, abs=1e-300), k
        ours = paired_t(base.nll[member], cand.nll[member], alpha=0.1)
        assert result["nll_p"][k] == pytest.approx(ours.p_value, rel=1e-10, abs=1e-300)
        assert result["nll_delta"][k] == pytest.approx(ours.delta, rel=1e-12)
        small += expected.pvalue < 1e-3
    assert small >= 5  # tiny p-values were compared too, not only p near 1


def test_benjamini_hochberg_matches_scipy():
    rng = np.random.default_rng(3)
    # a mix of nulls and small p-values, with ties, zeros and ones
    p = np.concatenate([rng.random(300), rng.random(60) * 1e-4, [0.0, 1.0, 0.5, 0.5, 0.5]])
    rng.shuffle(p)
    expected = stats.false_discovery_control(p, method="bh")
    np.testing.assert_allclose(benjamini_hochberg(p), expected, rtol=1e-12, atol=0)


def test_benjamini_hochberg_skips_nan():
    rng = np.random.default_rng(4)
    p = rng.random(200) ** 3
    p[rng.choice(200, 40, replace=False)] = np.nan
    q = benjamini_hochberg(p)
    tested = ~np.isnan(p)
    assert np.array_equal(np.isnan(q), ~tested)
    np.testing.assert_allclose(q[tested], stats.false_discovery_control(p[tested], method="bh"),
                               rtol=1e-12, atol=0)


def test_benjamini_hochberg_by_hand():
    # sorted: 0.01 x 4/1 = 0.04; 0.02 x 4/2 = 0.04; 0.03 x 4/3 = 0.04; 0.9 x 4/4 = 0.9
    assert benjamini_hochberg(np.array([0.9, 0.03, 0.01, 0.02])) == pytest.approx(
        [0.9, 0.04, 0.04, 0.04])
    # capped at 1, monotone: 0.8 x 2 = 1.6 -> 1, 0.9 x 1 = 0.9 is lower and wins
    assert benjamini_hochberg(np.array([0.8, 0.9])) == pytest.approx([0.9, 0.9])
    assert benjamini_hochberg(np.array([])).shape == (0,)
    assert np.isnan(benjamini_hochberg(np.array([np.nan, np.nan]))).all()


def test_counts_follow_q_values_and_directions():
    base, cand = random_pair(5)
    result = class_changes(base, cand, 50, fdr=0.2)
    pc = result["per_class"]
    np.testing.assert_array_equal(pc["recall_q"], benjamini_hochberg(pc["recall_p"]))
    np.testing.assert_array_equal(pc["nll_q"], benjamini_hochberg(pc["nll_p"]))
    found = pc["recall_q"] < 0.2
    assert result["recall"]["better"] == int((found & (pc["recall_delta"] > 0)).sum())
    assert result["recall"]["worse"] == int((found & (pc["recall_delta"] < 0)).sum())
    found = pc["nll_q"] < 0.2
    assert result["nll"]["better"] == int((found & (pc["nll_delta"] < 0)).sum())
    assert result["nll"]["worse"] == int((found & (pc["nll_delta"] > 0)).sum())
    assert result["recall"]["better"] + result["recall"]["worse"] > 0  # the seed has changes
    assert result["nll"]["better"] + result["nll"]["worse"] > 0
    assert result["fdr"] == 0.2 and result["classes_tested"] == 50


# ----------------------------------------------------------------------------- simulation

SIM_CLASSES, SIM_CHANGED, SIM_PER_CLASS, FDR = 200, 20, 200, 0.05


def simulated_pair(rng: np.random.Generator, changed: int):
    """Classes 0..changed-1 lose 0.3 of recall in the candidate; in every other class the
    candidate's answers are drawn from the same distribution as the baseline's, independently
    per example, so they differ from the baseline only by chance."""
    label = np.repeat(np.arange(SIM_CLASSES), SIM_PER_CLASS)
    accuracy = rng.uniform(0.55, 0.9, SIM_CLASSES)
    worse = accuracy.copy()
    worse[:changed] -= 0.3
    base = random_run(rng, label, SIM_CLASSES, accuracy)
    cand = random_run(rng, label, SIM_CLASSES, worse)
    return base, cand


def test_false_discovery_rate_is_controlled_and_power_is_high():
    rng = np.random.default_rng(6)
    reps = 200
    fdp = {"recall": [], "nll": []}
    power = {"recall": [], "nll": []}
    for _ in range(reps):
        base, cand = simulated_pair(rng, SIM_CHANGED)
        pc = class_changes(base, cand, SIM_CLASSES, fdr=FDR)["per_class"]
        # fewer right answers also cost NLL (wrong ones cost more), so both families change
        for family in ("recall", "nll"):
            found = pc[f"{family}_q"] < FDR
            false = int(found[SIM_CHANGED:].sum())
            fdp[family].append(false / max(1, int(found.sum())))
            power[family].append(found[:SIM_CHANGED].mean())
    for family in ("recall", "nll"):
        values = np.array(fdp[family])
        se = values.std(ddof=1) / np.sqrt(reps)
        # BH promises E[FDP] <= fdr * (null share) = 0.045 for independent tests
        assert values.mean() <= FDR + 3 * se, (family, values.mean(), se)
        assert np.mean(power[family]) >= 0.9, (family, np.mean(power[family]))


def test_global_null_rejects_anything_in_at_most_fdr_of_runs():
    # With no class changed every discovery is false, FDP is 1 or 0, and BH's FDR bound
    # becomes a bound on the chance of any rejection at all.
    rng = np.random.default_rng(7)
    reps = 300
    any_found = {"recall": 0, "nll": 0}
    for _ in range(reps):
        base, cand = simulated_pair(rng, changed=0)
        pc = class_changes(base, cand, SIM_CLASSES, fdr=FDR)["per_class"]
        for family in any_found:
            any_found[family] += bool((pc[f"{family}_q"] < FDR).any())
    se = np.sqrt(FDR * (1 - FDR) / reps)
    for family, count in any_found.items():
        assert count / reps <= FDR + 3 * se, (family, count / reps)


# ----------------------------------------------------------------------------- edge cases

def test_class_without_examples_is_nan_and_not_counted():
    base, cand = random_pair(8, num_classes=50)
    # 53 classes: 50, 51 and 52 have no example
    result = class_changes(base, cand, 53, fdr=0.2)
    assert result["classes_tested"] == 50
    for name, values in result["per_class"].items():
        assert len(values) == 53
        assert np.isnan(values[50:]).all(), name
        assert not np.isnan(values[:50]).any(), name
    # untested classes change nothing: the first 50 get the same q-values as with 50 classes
    fifty = class_changes(base, cand, 50, fdr=0.2)
    np.testing.assert_array_equal(result["per_class"]["recall_q"][:50],
                                  fifty["per_class"]["recall_q"])
    assert result["recall"] == fifty["recall"] and result["nll"] == fifty["nll"]


def test_all_identical_differences_follow_paired_t():
    label = np.repeat([0, 1, 2, 3], 10)
    correct = np.ones(40, dtype=bool)
    base_nll = np.arange(40) / 4.0
    shift = np.select([label == 0, label == 1, label == 2], [0.0, 0.5, -0.25], 0.0)
    cand_nll = base_nll + shift  # exact in binary: every difference of a class is equal
    cand_nll[label == 3] += np.linspace(-0.1, 0.3, 10)  # class 3 has a spread
    base, cand = run(label, correct, base_nll, 4), run(label, correct, cand_nll, 4)
    pc = class_changes(base, cand, 4)["per_class"]
    assert pc["nll_p"][:3].tolist() == [1.0, 0.0, 0.0]
    assert pc["nll_delta"][:3].tolist() == [0.0, 0.5, -0.25]
    for k in range(4):
        member = label == k
        ours = paired_t(base_nll[member], cand_nll[member], alpha=0.05)
        assert pc["nll_p"][k] == pytest.approx(ours.p_value, rel=1e-10), k
    assert 0 < pc["nll_p"][3] < 1


def test_identical_differences_whose_mean_is_inexact_still_have_no_spread():
    # 0.1 added to varied values: the differences (cand - base) are all the same float here,
    # yet their mean, sum / n, need not be; the rule must still see se 0 (p exactly 0)
    label = np.zeros(3, dtype=np.int64)
    base_nll = np.array([0.5, 0.5, 0.5])
    base = run(label, np.ones(3, bool), base_nll, 1)
    cand = run(label, np.ones(3, bool), base_nll + 0.1, 1)
    pc = class_changes(base, cand, 1)["per_class"]
    assert pc["nll_p"][0] == 0.0 and pc["nll_delta"][0] == 0.5 + 0.1 - 0.5


def test_run_compared_with_itself_changes_nothing():
    base, _ = random_pair(9)
    result = class_changes(base, base, 50)
    assert result["recall"] == {"tested": 50, "better": 0, "worse": 0}
    assert result["nll"] == {"tested": 50, "better": 0, "worse": 0}
    pc = result["per_class"]
    for name in ("recall_p", "recall_q", "nll_p", "nll_q"):
        assert (pc[name] == 1.0).all(), name
    assert (pc["recall_delta"] == 0).all() and (pc["nll_delta"] == 0).all()


def test_single_example_class_has_recall_test_but_no_nll_test():
    label = np.array([0, 0, 0, 1])
    base = run(label, np.array([True, True, False, True]), np.array([0.1, 0.2, 2.0, 0.3]), 2)
    cand = run(label, np.array([True, False, True, False]), np.array([0.2, 1.5, 0.4, 1.9]), 2)
    result = class_changes(base, cand, 2)
    pc = result["per_class"]
    assert pc["recall_delta"][1] == -1.0 and pc["recall_p"][1] == 1.0  # one flip: p = 1
    assert np.isnan(pc["nll_p"][1]) and np.isnan(pc["nll_q"][1])
    assert pc["nll_delta"][1] == pytest.approx(1.6)
    assert result["nll"]["tested"] == 1 and result["recall"]["tested"] == 2


def test_non_finite_nll_difference_is_untested_not_a_crash():
    label = np.array([0, 0, 0, 1, 1, 1])
    base_nll = np.array([0.1, np.inf, 0.3, 0.2, 0.4, 0.6])
    for cand_nll in ([0.2, np.inf, 0.1, 0.3, 0.1, 0.5],  # inf - inf: NaN
                     [0.2, 0.9, np.inf, 0.3, 0.1, 0.5]):  # -inf and +inf in one class
        base = run(label, np.ones(6, bool), base_nll, 2)
        cand = run(label, np.ones(6, bool), np.array(cand_nll), 2)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no RuntimeWarning either
            result = class_changes(base, cand, 2)
        pc = result["per_class"]
        assert np.isnan(pc["nll_p"]).tolist() == [True, False]
        assert result["nll"]["tested"] == 1 and result["recall"]["tested"] == 2


def test_empty_runs_give_nan_everywhere():
    empty = run(np.array([], dtype=np.int64), np.array([], bool), np.array([]), 3)
    result = class_changes(empty, empty, 3)
    assert result["classes_tested"] == 0
    assert all(np.isnan(v).all() for v in result["per_class"].values())


def test_bad_input_is_refused_with_a_clear_message():
    base, cand = random_pair(10, num_classes=5, n=50)
    with pytest.raises(InputError, match="same examples: 50 vs 49"):
        class_changes(base, cand.take(np.arange(49)), 5)
    other = cand.take(np.arange(50))
    other.label = (other.label + 1) % 5
    with pytest.raises(InputError, match="labels differ between the runs at example 0"):
        class_changes(base, other, 5)
    with pytest.raises(InputError, match="outside the 3 classes"):
        class_changes(base, cand, 3)
    for fdr in (0, 1, -0.1, 1.5):
        with pytest.raises(UsageError, match="fdr must be between 0 and 1"):
            class_changes(base, cand, 5, fdr=fdr)
    with pytest.raises(UsageError, match="p-values must lie in"):
        benjamini_hochberg(np.array([0.2, 1.2]))
