"""metricdiff compare: alignment, deltas, verdicts, explanations, exit codes, JSON."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import numpy as np
import pytest
from typer.testing import CliRunner

import metricdiff
from conftest import load_schema, probs_of, random_logits, write_run
from metricdiff.cli import app

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "sample_runs"


def run_cli(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def compare_schema() -> dict:
    return load_schema("compare")


@pytest.fixture
def pair(tmp_path):
    """A baseline, an identical copy, and a clearly worse candidate (noisier logits)."""
    logits, labels = random_logits(800, 10, seed=21, signal=3)
    ids = np.random.default_rng(0).permutation(800) + 1000
    source = np.array(["web", "app"])[labels % 2].tolist()
    base = write_run(tmp_path / "base.parquet", labels, logits=logits, ids=ids,
                     extra={"source": source})
    same = write_run(tmp_path / "same.parquet", labels, logits=logits, ids=ids,
                     extra={"source": source})
    noise = np.random.default_rng(5).normal(0, 2.5, logits.shape).astype(np.float32)
    worse = write_run(tmp_path / "worse.parquet", labels, logits=logits + noise, ids=ids,
                      extra={"source": source})
    return base, same, worse, logits, labels, ids


def test_identical_runs_are_inconclusive_with_zero_deltas(pair):
    base, same, *_ = pair
    document = metricdiff.compare(str(base), str(same), resamples=200).to_dict()
    comparison = document["comparisons"][0]
    assert comparison["verdict"]["decision"] == "inconclusive"
    for name, row in comparison["deltas"].items():
        assert row["delta"] == 0, name
        if row["ci_low"] is not None:
            assert row["ci_low"] <= 0 <= row["ci_high"], name
    assert comparison["flips"] == {"fixed": 0, "broken": 0, "p_value": 1.0,
                                   "method": "McNemar exact"}
    assert document["best"] == "base"  # named after its file


def test_planted_regression_is_worse_and_fails_ci(pair, tmp_path):
    base, _, worse, *_ = pair
    result = run_cli("compare", f"main={base}", f"pr={worse}", "--fail-on", "worse",
                     "--resamples", "200", "-f", "json")
    assert result.exit_code == 1, result.stderr
    document = json.loads(result.stdout)
    verdict = document["comparisons"][0]["verdict"]
    assert verdict["decision"] == "worse"
    assert verdict["candidate"] == "pr"
    assert verdict["ci_low"] > 0  # NLL rose, the whole interval above zero
    assert document["failed"] is True
    assert run_cli("compare", base, worse, "--resamples", "50").exit_code == 0  # never
    not_better = run_cli("compare", base, base, "--fail-on", "not-better", "--resamples", "50")
    assert not_better.exit_code == 1


def test_swapping_runs_flips_every_delta(pair):
    base, _, worse, *_ = pair
    forward = metricdiff.compare(str(base), str(worse), resamples=100).to_dict()
    backward = metricdiff.compare(str(worse), str(base), resamples=100).to_dict()
    f, b = forward["comparisons"][0], backward["comparisons"][0]
    for name, row in f["deltas"].items():
        assert b["deltas"][name]["delta"] == pytest.approx(-row["delta"], abs=1e-12), name
    assert f["flips"]["fixed"] == b["flips"]["broken"]
    assert {f["verdict"]["decision"], b["verdict"]["decision"]} == {"better", "worse"}


def test_deltas_match_a_hand_computation(pair):
    base, _, worse, logits, labels, ids = pair
    comparison = metricdiff.compare(str(base), str(worse), resamples=50).to_dict()
    comparison = comparison["comparisons"][0]
    from scipy.special import log_softmax
    noise = np.random.default_rng(5).normal(0, 2.5, logits.shape).astype(np.float32)
    rows = np.arange(len(labels))
    nll_base = -log_softmax(logits.astype(np.float64), axis=1)[rows, labels]
    nll_worse = -log_softmax((logits + noise).astype(np.float64), axis=1)[rows, labels]
    assert comparison["deltas"]["nll"]["delta"] == pytest.approx(
        nll_worse.mean() - nll_base.mean(), rel=1e-6)
    correct_base = logits.argmax(axis=1) == labels
    correct_worse = (logits + noise).argmax(axis=1) == labels
    assert comparison["flips"]["fixed"] == int((~correct_base & correct_worse).sum())
    assert comparison["flips"]["broken"] == int((correct_base & ~correct_worse).sum())
    # the four flip groups split the NLL change exactly
    parts = sum(row["contribution"] for row in comparison["explanation"]["nll_by_flip"])
    assert parts == pytest.approx(comparison["deltas"]["nll"]["delta"], rel=1e-9)


def test_rankings_add_up_to_the_change(pair):
    base, _, worse, *_ = pair
    comparison = metricdiff.compare(str(base), str(worse), resamples=50, top=0,
                                    by=["source"]).to_dict()["comparisons"][0]
    delta = comparison["deltas"]["nll"]["delta"]
    ranked = comparison["ranked"]
    assert sum(r["contribution"] for r in ranked["classes"]["rows"]) == pytest.approx(delta)
    assert sum(r["contribution"] for r in ranked["slices"]["source"]["rows"]) == pytest.approx(
        delta)
    assert sum(r["contribution"] for r in ranked["confidence_bins"]["rows"]) == pytest.approx(
        delta)
    rises = [r["nll_rise"] for r in ranked["examples"]]
    assert rises == sorted(rises, reverse=True) and all(r > 0 for r in rises)
    contributions = [abs(r["contribution"]) for r in ranked["classes"]["rows"]]
    assert contributions == sorted(contributions, reverse=True)


def test_balanced_accuracy_attribution_splits_over_classes(pair):
    base, _, worse, *_ = pair
    comparison = metricdiff.compare(str(base), str(worse), resamples=50, top=0,
                                    primary="balanced_accuracy").to_dict()["comparisons"][0]
    classes = comparison["ranked"]["classes"]
    assert classes["metric"] == "balanced_accuracy"
    assert sum(r["contribution"] for r in classes["rows"]) == pytest.approx(
        comparison["deltas"]["balanced_accuracy"]["delta"])


def test_rows_are_joined_on_ids_not_positions(pair, tmp_path):
    base, _, _, logits, labels, ids = pair
    order = np.random.default_rng(1).permutation(len(labels))
    shuffled = write_run(tmp_path / "shuffled.parquet", labels[order], logits=logits[order],
                         ids=ids[order])
    comparison = metricdiff.compare(str(base), str(shuffled), resamples=20).to_dict()
    # exact but for the temperature, whose fit sums rows in file order (last-bit differences)
    assert all(abs(row["delta"]) < 1e-12 for row in comparison["comparisons"][0]["deltas"].values())
    assert comparison["alignment"]["keyed_by"] == "id"


def test_runs_in_the_same_id_order_line_up_as_a_join_would(tmp_path):
    """Runs written in the same order of increasing ids are lined up without a join; the
    result is the one a join gives when the candidate's rows are shuffled."""
    logits, labels = random_logits(400, 6, seed=8)
    other, _ = random_logits(400, 6, seed=9)
    ids = np.arange(400) * 3 + 7
    base = write_run(tmp_path / "base.parquet", labels, logits=logits, ids=ids)
    same_order = write_run(tmp_path / "same.parquet", labels, logits=other, ids=ids)
    order = np.random.default_rng(2).permutation(400)
    shuffled = write_run(tmp_path / "shuffled.parquet", labels[order], logits=other[order],
                         ids=ids[order])
    lined_up = metricdiff.compare(str(base), str(same_order), resamples=50).to_dict()
    joined = metricdiff.compare(str(base), str(shuffled), resamples=50).to_dict()
    for name, row in lined_up["comparisons"][0]["deltas"].items():
        assert row["delta"] == pytest.approx(joined["comparisons"][0]["deltas"][name]["delta"],
                                             rel=1e-9, abs=1e-12), name
    assert lined_up["alignment"]["keyed_by"] == joined["alignment"]["keyed_by"] == "id"


def test_runs_without_ids_line_up_by_row_order(tmp_path):
    logits, labels = random_logits(300, 5, seed=2)
    a = write_run(tmp_path / "a.parquet", labels, logits=logits)
    b = write_run(tmp_path / "b.parquet", labels, probs=probs_of(logits * 0.5))
    document = metricdiff.compare(str(a), str(b), resamples=20).to_dict()
    assert document["alignment"] == {"keyed_by": "row order", "n": 300,
                                     "dropped": {"a": 0, "b": 0}}
    short = write_run(tmp_path / "short.parquet", labels[:200], logits=logits[:200])
    result = run_cli("compare", a, short)
    assert result.exit_code == 2 and "200 rows" in result.stderr and "row order" in result.stderr


def assert_one_line_error(result, *fragments):
    assert result.exit_code == 2, (result.stdout, result.stderr)
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, (fragment, result.stderr)


def test_different_id_sets_are_an_error_unless_partial(pair, tmp_path):
    base, _, _, logits, labels, ids = pair
    other_ids = ids.copy()
    other_ids[:7] += 100_000
    other = write_run(tmp_path / "other.parquet", labels, logits=logits, ids=other_ids)
    assert_one_line_error(run_cli("compare", base, other), "7 baseline ids missing",
                          "7 ids only here", "--allow-partial")
    document = json.loads(run_cli("compare", base, other, "--allow-partial", "-f", "json",
                                  "--resamples", "20").stdout)
    assert document["alignment"]["n"] == len(labels) - 7
    assert document["alignment"]["dropped"]["other"] == 7
    assert any("7 rows left out" in w for w in document["warnings"])


def test_duplicate_ids_are_an_error(pair, tmp_path):
    base, _, _, logits, labels, ids = pair
    dup = ids.copy()
    dup[5] = dup[6]
    other = write_run(tmp_path / "dup.parquet", labels, logits=logits, ids=dup)
    assert_one_line_error(run_cli("compare", base, other), "dup.parquet", "column 'id'",
                          "1 ids appear more than once", str(dup[6]))


def test_same_id_with_a_different_label_is_an_error(pair, tmp_path):
    base, _, _, logits, labels, ids = pair
    changed = labels.copy()
    changed[10] = (changed[10] + 1) % 10
    other = write_run(tmp_path / "relabel.parquet", changed, logits=logits, ids=ids)
    assert_one_line_error(run_cli("compare", base, other), "column 'label'",
                          "1 examples have a different label", str(ids[10]))


def test_different_class_counts_are_an_error(pair, tmp_path):
    base, _, _, logits, labels, ids = pair
    other = write_run(tmp_path / "k11.parquet", labels, ids=ids,
                      logits=np.hstack([logits, np.zeros((len(labels), 1), np.float32)]))
    assert_one_line_error(run_cli("compare", base, other), "11 classes", "has 10")


@pytest.mark.parametrize("args,fragment", [
    (["--primary", "loss"], "unknown --primary metric 'loss'"),
    (["--primary", "mean_confidence"], "no better direction"),
    (["--alpha", "1.5"], "--alpha"),
    (["--by", "country"], "'country'"),
])
def test_bad_compare_options(pair, args, fragment):
    base, same, *_ = pair
    assert_one_line_error(run_cli("compare", base, same, *args), fragment)


@pytest.mark.parametrize("args,fragment", [
    (["--primary", "loss"], "unknown --primary metric 'loss'"),
    (["--alpha", "0"], "--alpha"),
    (["--min-effect", "-1"], "--min-effect"),
])
def test_bad_settings_are_reported_before_any_run_is_read(tmp_path, args, fragment):
    """Runs that do not exist: the error names the setting, so nothing was read first."""
    missing = [tmp_path / "nowhere_a.parquet", tmp_path / "nowhere_b.parquet"]
    assert_one_line_error(run_cli("compare", *missing, *args), fragment)


def test_compare_needs_two_runs(pair):
    assert_one_line_error(run_cli("compare", pair[0]), "at least one candidate")


def test_json_equals_library_and_validates(pair):
    base, same, worse, *_ = pair
    result = run_cli("compare", f"base={base}", f"same={same}", f"worse={worse}", "-f", "json",
                     "--resamples", "50", "--by", "source")
    document = json.loads(result.stdout)
    jsonschema.validate(document, compare_schema())
    library = metricdiff.compare(str(base), str(same), str(worse),
                                 names=["base", "same", "worse"], resamples=50,
                                 by=["source"]).to_dict()
    assert document == library
    verdicts = [c["verdict"] for c in document["comparisons"]]
    assert all(v["p_value_adjusted"] >= v["p_value"] for v in verdicts)  # Holm
    assert document["best"] == "base"


# ----------------------------------------------------------------------------- sample runs

@pytest.fixture(scope="module")
def sample_comparison():
    runs = [SAMPLES / f"{name}.parquet" for name in ("featA_hpB", "featB_hpA", "featC_hpA")]
    return metricdiff.compare(*map(str, runs), names=["featA_hpB", "featB_hpA", "featC_hpA"],
                              resamples=100, by=["source"]).to_dict()


def test_sample_runs_verdicts_follow_the_primary_metric(sample_comparison):
    decisions = {c["candidate"]: c["verdict"]["decision"]
                 for c in sample_comparison["comparisons"]}
    assert decisions == {"featB_hpA": "better", "featC_hpA": "worse"}  # under NLL
    assert sample_comparison["best"] == "featB_hpA"
    jsonschema.validate(sample_comparison, compare_schema())


def test_sample_runs_name_the_planted_reasons(sample_comparison):
    by_candidate = {c["candidate"]: c for c in sample_comparison["comparisons"]}
    b = by_candidate["featB_hpA"]["explanation"]
    # featB: lower loss but lower accuracy: featA's loss is miscalibration (under-confidence),
    # and featB gives up on tail classes
    assert b["calibration"]["finding"] == "reversed"
    assert {d["metric"] for d in b["disagreements"]} >= {"accuracy"}
    tail = next(g for g in b["class_groups"] if g["group"] == "tail")
    assert tail["accuracy_contribution"] < 0
    assert tail["candidate_accuracy"] < tail["baseline_accuracy"] - 0.3
    text = " ".join(b["reasons"])
    assert "miscalibration" in text and "tail" in text
    # featC: higher accuracy but higher loss: a confidently-wrong tail
    c = by_candidate["featC_hpA"]["explanation"]
    assert c["confidently_wrong"]["candidate_count"] > 2000
    assert c["confidently_wrong"]["candidate_nll_share"] > 0.9
    broken = next(g for g in c["nll_by_flip"] if g["group"] == "broken")
    assert broken["contribution"] > by_candidate["featC_hpA"]["deltas"]["nll"]["delta"]
    assert "Confidently wrong" in " ".join(c["reasons"])
    # and the partner slice is where featC's loss rose most
    slices = by_candidate["featC_hpA"]["ranked"]["slices"]["source"]["rows"]
    assert slices[0]["value"] == "partner"


def test_sample_runs_under_accuracy_pick_featc(tmp_path):
    runs = [str(SAMPLES / f"{n}.parquet") for n in ("featA_hpB", "featB_hpA", "featC_hpA")]
    document = metricdiff.compare(*runs, primary="accuracy", resamples=0).to_dict()
    decisions = [c["verdict"]["decision"] for c in document["comparisons"]]
    assert decisions == ["worse", "better"]
    assert document["best"] == "featC_hpA"


def test_sample_comparison_markdown_fits_a_pull_request_comment(sample_comparison):
    from metricdiff.render.compare_markdown import render_comparison_markdown

    markdown = render_comparison_markdown(sample_comparison)
    assert len(markdown) < 65_536  # GitHub's limit for a comment body
    assert markdown.count("<details>") == markdown.count("</details>") > 0
    assert "featB\\_hpA" in markdown and "**better**" in markdown


def test_group_rows_match_a_pandas_groupby(pair):
    """Per confidence bin and per class group (head/torso/tail), the accuracies, counts and
    contributions of the comparison against pandas groupby on softmax from scipy."""
    import pandas as pd
    from scipy.special import log_softmax, softmax

    base, _, worse, logits, labels, ids = pair
    noise = np.random.default_rng(5).normal(0, 2.5, logits.shape).astype(np.float32)
    comparison = metricdiff.compare(str(base), str(worse), resamples=0).to_dict()[
        "comparisons"][0]
    rows = np.arange(len(labels))
    frame = pd.DataFrame({
        "label": labels,
        "bin": pd.cut(softmax(logits.astype(np.float64), axis=1).max(axis=1),
                      np.linspace(0, 1, 16), labels=False),
        "base_ok": logits.argmax(axis=1) == labels,
        "cand_ok": (logits + noise).argmax(axis=1) == labels,
        "base_pred": logits.argmax(axis=1), "cand_pred": (logits + noise).argmax(axis=1),
        "d_nll": (log_softmax(logits.astype(np.float64), axis=1)[rows, labels]
                  - log_softmax((logits + noise).astype(np.float64), axis=1)[rows, labels]),
    })
    n = len(frame)

    by_bin = frame.groupby("bin").agg(count=("bin", "size"), base=("base_ok", "mean"),
                                      cand=("cand_ok", "mean"), nll=("d_nll", "sum"))
    got = {round(r["lower"] * 15): r for r in comparison["ranked"]["confidence_bins"]["rows"]}
    assert set(got) == set(by_bin.index)
    for b, expected in by_bin.iterrows():
        assert got[b]["count"] == expected["count"]
        assert got[b]["baseline_accuracy"] == pytest.approx(expected["base"], rel=1e-12)
        assert got[b]["candidate_accuracy"] == pytest.approx(expected["cand"], rel=1e-12)
        assert got[b]["contribution"] == pytest.approx(expected["nll"] / n, rel=1e-6, abs=1e-12)

    # head: most frequent classes while fewer than 50% of examples come before them, torso to 80%
    support = frame["label"].value_counts().sort_index(kind="stable")
    support = support.sort_values(ascending=False, kind="stable")
    before = (support.cumsum() - support) / n
    group_of = pd.Series(np.select([before < 0.5, before < 0.8], [0, 1], 2), support.index)
    frame["group"] = frame["label"].map(group_of)
    names = ("head", "torso", "tail")
    for row in comparison["explanation"]["class_groups"]:
        member = frame[frame["group"] == names.index(row["group"])]
        assert row["examples"] == len(member)
        assert row["baseline_accuracy"] == pytest.approx(member["base_ok"].mean(), rel=1e-12)
        assert row["candidate_accuracy"] == pytest.approx(member["cand_ok"].mean(), rel=1e-12)
        assert row["accuracy_contribution"] == pytest.approx(
            (member["cand_ok"].sum() - member["base_ok"].sum()) / n, abs=1e-12)
        assert row["nll_contribution"] == pytest.approx(member["d_nll"].sum() / n, rel=1e-6)
        predicted = frame["base_pred"].map(group_of).fillna(2) == names.index(row["group"])
        assert row["baseline_predicted_share"] == pytest.approx(predicted.mean(), rel=1e-12)
        predicted = frame["cand_pred"].map(group_of).fillna(2) == names.index(row["group"])
        assert row["candidate_predicted_share"] == pytest.approx(predicted.mean(), rel=1e-12)


def test_few_resamples_for_the_little_bootstraps_are_warned_of():
    """60,000 examples: the bag of little bootstraps. 200 resamples are 20 per subset, too
    few for honest intervals (measured), and the comparison says so; the default 1,000 (100
    per subset) does not warn."""
    import os

    samples = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                           "sample_runs")
    base, cand = (os.path.join(samples, name) for name in ("featA_hpB.parquet",
                                                          "featB_hpA.parquet"))
    few = metricdiff.compare(base, cand, resamples=200).to_dict()
    assert "little" in few["comparisons"][0]["deltas"]["ece"]["method"]
    said = [w for w in few["warnings"] if "resamples give each" in w]
    assert len(said) == 1 and "10 subsets 20" in said[0] and "--resamples 1000" in said[0]
    default = metricdiff.compare(base, cand).to_dict()
    assert not any("resamples give each" in w for w in default["warnings"])
