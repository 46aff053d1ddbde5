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
