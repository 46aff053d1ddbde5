"""The library API: report / compare objects, to_pandas, and the CLI being a thin layer."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import metricdiff
from conftest import random_logits, write_run


@pytest.fixture
def two_runs(tmp_path):
    logits, labels = random_logits(300, 6, seed=8)
    source = np.array(["a", "b", "c"])[labels % 3].tolist()
    a = write_run(tmp_path / "a.parquet", labels, logits=logits, ids=np.arange(300),
                  extra={"source": source})
    noise = np.random.default_rng(1).normal(0, 1.5, logits.shape).astype(np.float32)
    b = write_run(tmp_path / "b.parquet", labels, logits=logits + noise, ids=np.arange(300),
                  extra={"source": source})
    return str(a), str(b)


def test_report_tables_match_the_dict(two_runs):
    result = metricdiff.report(two_runs[0], by=["source"], worst_classes=0)
    document = result.to_dict()
    metrics = result.to_pandas("metrics")
    assert isinstance(metrics, pd.DataFrame)
    assert metrics.loc["nll", "value"] == document["metrics"]["nll"]
    assert not metrics.loc["nll", "higher_is_better"]
    classes = result.to_pandas("classes")
    assert len(classes) == len(document["per_class"]["rows"]) == 6
    slices = result.to_pandas("slices")
    assert set(slices["value"]) == {"a", "b", "c"} and (slices["column"] == "source").all()
    assert result.to_pandas("confidence_bins")["count"].sum() == 300
    with pytest.raises(metricdiff.UsageError, match="unknown table"):
        result.to_pandas("nope")


def test_comparison_tables_match_the_dict(two_runs):
    result = metricdiff.compare(*two_runs, by=["source"], resamples=50)
    document = result.to_dict()
    deltas = result.to_pandas("deltas")
    nll = deltas[deltas["metric"] == "nll"].iloc[0]
    assert nll["delta"] == document["comparisons"][0]["deltas"]["nll"]["delta"]
    assert nll["candidate_run"] == "b"
    runs = result.to_pandas("runs")
    assert list(runs.columns) == ["a", "b"]
    assert runs.loc["accuracy", "a"] == document["runs"][0]["metrics"]["accuracy"]
    assert result.to_pandas("verdicts").iloc[0]["decision"] in ("better", "worse",
                                                                "inconclusive")
    flips = result.to_pandas("nll_by_flip")
    assert flips["contribution"].sum() == pytest.approx(nll["delta"])


def test_public_names_are_library_only():
    assert set(metricdiff.__all__) >= {"report", "compare", "MetricdiffError", "InputError",
                                       "UsageError"}
    import sys
    assert "typer" not in {m.split(".")[0] for m in sys.modules if m.startswith("metricdiff")}


def test_docstring_examples_run(monkeypatch):
    """The numpydoc examples of the public functions, run as doctests from the repo root."""
    import doctest
    from pathlib import Path

    import metricdiff.api
    import metricdiff.writer

    monkeypatch.chdir(Path(__file__).resolve().parent.parent)
    for module in (metricdiff.api,):
        failures, tried = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
        assert tried > 0 and failures == 0


def test_paths_may_be_pathlike(tmp_path, two_runs):
    from pathlib import Path

    a, b = two_runs
    classes = tmp_path / "classes.txt"
    classes.write_text("\n".join(f"c{i}" for i in range(6)))
    by_str = metricdiff.report(a).to_dict()
    by_path = metricdiff.report(Path(a), classes_file=classes).to_dict()
    assert by_path["metrics"] == by_str["metrics"]
    saved = metricdiff.save_predictions(tmp_path / "saved.parquet", [0, 1, 1],
                                        logits=np.eye(3)[[0, 1, 2]] * 2.0)
    assert metricdiff.report(saved).metrics["n"] == 3  # report(save_predictions(...))
    compared = metricdiff.compare(Path(a), Path(b), resamples=200).to_dict()
    assert [run["name"] for run in compared["runs"]] == ["a", "b"]
    groups = metricdiff.compare({"x": [Path(a)], "y": Path(b)}, resamples=200).to_dict()
    assert [g["name"] for g in groups["groups"]] == ["x", "y"]


def test_a_run_is_named_by_its_stem_everywhere(two_runs):
    a, b = two_runs
    assert metricdiff.report(a).to_dict()["run"]["name"] == "a"
    assert metricdiff.report(a).to_dict()["run"]["path"] == a
    assert metricdiff.compare(a, b, resamples=200).to_dict()["runs"][0]["name"] == "a"
    assert metricdiff.report(a, name="mine").to_dict()["run"]["name"] == "mine"


def test_unknown_tables_list_every_table(two_runs):
    a, b = two_runs
    with pytest.raises(metricdiff.UsageError) as caught:
        metricdiff.report(a).to_pandas("nope")
    for table in ("metrics", "classes", "class_groups", "confidence_bins", "slices"):
        assert table in str(caught.value)
        metricdiff.report(a, by=["source"]).to_pandas(table)  # each one named exists
    with pytest.raises(metricdiff.UsageError) as caught:
        metricdiff.compare(a, b, resamples=200).to_pandas("nope")
    for table in ("runs", "groups", "deltas", "verdicts", "classes", "slices",
                  "confidence_bins", "examples", "nll_by_flip"):
        assert table in str(caught.value)


def test_directions_in_words_and_labels_as_numbers(two_runs):
    a, b = two_runs
    for document in (metricdiff.report(a).to_dict(),
                     metricdiff.compare(a, b, resamples=200).to_dict()):
        assert document["schema_version"] == "2.2"
        for metric, higher in document["directions"].items():
            assert document["better"][metric] == {True: "higher", False: "lower",
                                                  None: None}[higher]
    examples = metricdiff.compare(a, b, resamples=200).to_dict()["comparisons"][0]["ranked"][
        "examples"]
    assert examples and all(isinstance(row[key], int) for row in examples
                            for key in ("label", "baseline_pred", "candidate_pred"))
