"""Adversarial options: every numeric option checked for kind, NaN, sign and range before any
run is read; an explicitly named column that is missing is an error; a comparison too small
to test gives no verdict, and says why."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

import metricdiff
from conftest import random_logits, write_run
from metricdiff.cli import app
from metricdiff.errors import UsageError


def run_cli(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture
def pair(tmp_path):
    logits, labels = random_logits(200, 5, seed=0)
    other, _ = random_logits(200, 5, seed=1)
    a = write_run(tmp_path / "a.parquet", labels, logits=logits, ids=np.arange(200))
    b = write_run(tmp_path / "b.parquet", labels, logits=other, ids=np.arange(200))
    return a, b


BAD = [
    ("--prob-tolerance", "nan"), ("--prob-tolerance", "-1"), ("--prob-tolerance", "inf"),
    ("--prob-tolerance", "2"), ("--min-effect", "nan"), ("--min-effect", "-0.1"),
    ("--min-effect", "inf"), ("--alpha", "nan"), ("--alpha", "0"), ("--alpha", "1"),
    ("--fdr", "nan"), ("--seed", "-1"), ("--bins", "0"), ("--bins", "1000000000"),
    ("--top-k", "0"), ("--resamples", "-5"), ("--resamples", "100000000"), ("--top", "-1"),
    ("--class-groups", "0.9,0.5"), ("--class-groups", "nan,0.5"),
]


@pytest.mark.parametrize("option, value", BAD)
def test_out_of_range_numbers_are_refused_before_reading(tmp_path, option, value):
    missing = tmp_path / "not-read.parquet"  # the check must come before any reading
    result = run_cli("compare", missing, missing, option, value)
    assert result.exit_code == 2, result.output
    assert option in result.stderr and "Traceback" not in result.output
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("option, value", [("--seed", "-1"), ("--bins", "100000"),
                                           ("--batch-size", "0"), ("--worst", "-2"),
                                           ("--prob-tolerance", "nan")])
def test_report_checks_its_numbers_too(tmp_path, option, value):
    result = run_cli("report", tmp_path / "not-read.parquet", option, value)
    assert result.exit_code == 2 and option in result.stderr, result.output


def test_the_library_raises_usage_errors_not_value_errors(pair):
    a, b = pair
    for kwargs in ({"seed": -1}, {"resamples": 2.5}, {"top_k": True}, {"prob_tolerance": "x"}):
        with pytest.raises(UsageError):
            metricdiff.compare(a, b, **kwargs)
    with pytest.raises(UsageError):
        metricdiff.report(a, seed=-1)


def test_a_named_id_column_that_is_missing_is_an_error(pair):
    a, b = pair
    result = run_cli("compare", a, b, "--id-col", "example_id")
    assert result.exit_code == 2 and "--id-col column 'example_id' not found" in result.stderr


def test_without_ids_the_fallback_to_row_order_is_said(tmp_path):
    logits, labels = random_logits(50, 3, seed=0)
    a = write_run(tmp_path / "a.parquet", labels, logits=logits)
    b = write_run(tmp_path / "b.parquet", labels, logits=logits[::-1].copy())
    doc = json.loads(run_cli("compare", a, b, "--resamples", 0, "-f", "json").stdout)
    assert doc["alignment"]["keyed_by"] == "row order"
    assert any("lined up by row order" in w for w in doc["warnings"])


def test_one_example_gives_no_verdict_and_says_why(tmp_path):
    a = write_run(tmp_path / "a.parquet", np.array([0]), logits=np.array([[2.0, 0.0]]))
    b = write_run(tmp_path / "b.parquet", np.array([0]), logits=np.array([[0.0, 2.0]]))
    for primary in ("nll", "accuracy", "ece"):
        doc = json.loads(run_cli("compare", a, b, "--primary", primary, "-f", "json").stdout)
        verdict = doc["comparisons"][0]["verdict"]
        assert verdict["decision"] == "inconclusive", primary
        assert "nan" not in verdict["reason"]
        for row in doc["comparisons"][0]["deltas"].values():
            assert row["significant"] is False


def test_a_bootstrapped_primary_needs_enough_resamples(pair):
    a, b = pair
    for resamples in ("0", "10"):
        result = run_cli("compare", a, b, "--primary", "ece", "--resamples", resamples)
        assert result.exit_code == 2
        assert "--resamples must be at least 40 at --alpha 0.05" in result.stderr
    # the other bootstrapped metrics get no interval rather than one from too few resamples
    doc = json.loads(run_cli("compare", a, b, "--resamples", "10", "-f", "json").stdout)
    assert doc["comparisons"][0]["deltas"]["ece"]["p_value"] is None


def test_cross_fit_with_too_few_examples_for_two_halves_names_the_file(tmp_path):
    logits, labels = random_logits(1, 4, seed=3)
    path = write_run(tmp_path / "one.parquet", labels, logits=logits, ids=np.arange(1))
    result = run_cli("report", path, "--cross-fit")
    assert result.exit_code == 2, result.output
    assert "--cross-fit" in result.stderr and "one.parquet" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.output


@pytest.mark.parametrize("other", [("--temperature", "1.5"), ("--temperature-from", "a")])
def test_cross_fit_does_not_go_with_a_given_temperature(pair, other):
    a, _ = pair
    value = str(a) if other[1] == "a" else other[1]
    result = run_cli("report", a, "--cross-fit", other[0], value)
    assert result.exit_code == 2 and "--cross-fit" in result.stderr, result.output
    assert len(result.stderr.strip().splitlines()) == 1


def test_classwise_metrics_as_the_primary_need_enough_resamples(pair):
    result = run_cli("compare", *pair, "--primary", "classwise_ece", "--resamples", "10")
    assert result.exit_code == 2 and "--resamples" in result.stderr, result.output
    ok = run_cli("compare", *pair, "--primary", "brier_reliability", "--resamples", "100",
                 "--format", "json")
    assert ok.exit_code == 0, ok.output
    verdict = json.loads(ok.stdout)["comparisons"][0]["verdict"]
    assert verdict["metric"] == "brier_reliability" and verdict["method"].startswith("block")
