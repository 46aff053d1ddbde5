"""A temperature given, or fitted on another run (--temperature, --temperature-from): the
calibrated metrics use it exactly, and every output says where it came from."""

from __future__ import annotations

import jsonschema
import numpy as np
import pytest
from scipy.special import log_softmax
from typer.testing import CliRunner

import metricdiff
from conftest import load_schema, random_logits, write_run
from metricdiff.cli import app


def nll_at(logits: np.ndarray, labels: np.ndarray, t: float) -> float:
    return float(-log_softmax(logits.astype(np.float64) / t, axis=1)[np.arange(len(labels)),
                                                                      labels].mean())


@pytest.fixture
def splits(tmp_path):
    """A validation split (its own ids, no metadata) and a test split with a `source` column."""
    val_logits, val_labels = random_logits(400, 6, seed=1, scale=3.0)
    test_logits, test_labels = random_logits(500, 6, seed=2, scale=3.0)
    val = write_run(tmp_path / "val.parquet", val_labels, logits=val_logits,
                    ids=np.arange(1000, 1400))
    test = write_run(tmp_path / "test.parquet", test_labels, logits=test_logits,
                     ids=np.arange(500), extra={"source": ["a", "b"] * 250})
    return str(val), str(test), test_logits, test_labels


def test_a_given_temperature_is_applied_exactly(splits):
    _, test, logits, labels = splits
    result = metricdiff.report(test, temperature=2.5)
    assert result.metrics["temperature"] == 2.5
    # float32 logits: the per-example pass agrees with float64 to about 1e-7 (see perexample)
    assert result.metrics["nll_calibrated"] == pytest.approx(nll_at(logits, labels, 2.5),
                                                             rel=1e-6)
    assert result.run["temperature_source"] == "given with --temperature"
    assert not any("fitted on a sample" in w for w in result.warnings)
    jsonschema.validate(result.to_dict(), load_schema("report"))


def test_a_temperature_fitted_on_another_run(splits):
    val, test, logits, labels = splits
    fitted_there = metricdiff.report(val).metrics["temperature"]
    result = metricdiff.report(test, temperature_from=val, by=["source"])
    assert result.metrics["temperature"] == fitted_there  # the same sample, the same search
    assert result.metrics["nll_calibrated"] == pytest.approx(
        nll_at(logits, labels, fitted_there), rel=1e-6)
    assert val in result.run["temperature_source"]
    own = metricdiff.report(test).metrics
    assert own["nll_calibrated"] <= result.metrics["nll_calibrated"] + 1e-12  # in-sample wins
    out = CliRunner().invoke(app, ["report", test, "--temperature-from", val])
    assert out.exit_code == 0 and "--temperature-from" in out.stdout


@pytest.mark.parametrize("args, says", [
    (["--temperature", "0"], "--temperature"), (["--temperature", "nan"], "--temperature"),
    (["--temperature", "-1"], "--temperature"), (["--temperature", "1e9"], "--temperature"),
    (["--temperature", "2", "--temperature-from", "VAL"], "not both"),
    (["--temperature-from", "missing.parquet"], "missing.parquet")])
def test_bad_temperature_options_are_one_line(splits, args, says):
    val, test, _, _ = splits
    result = CliRunner().invoke(app, ["report", test, *[val if a == "VAL" else a for a in args]])
    assert result.exit_code == 2, result.stdout
    assert says in result.stderr and result.stderr.count("\n") == 1


def test_a_top_k_run_cannot_give_a_temperature(tmp_path, splits):
    import pyarrow as pa
    import pyarrow.parquet as pq

    _, test, _, _ = splits
    topk = tmp_path / "topk.parquet"
    pq.write_table(pa.table({"label": [0, 1], "topk_ids": [[0, 1], [1, 0]],
                             "topk_logprobs": [[-0.1, -2.5], [-0.2, -1.8]],
                             "label_logprob": [-0.1, -0.2]}), topk)
    with pytest.raises(metricdiff.InputError, match="top-k"):
        metricdiff.report(test, temperature_from=str(topk))


@pytest.mark.parametrize("model", ["gnb", "mlp"])
def test_the_readme_reproduction_of_the_committed_split(model):
    """The committed validation/test pairs: metricdiff's --temperature-from numbers are the
    ones generate_split.py --check computes with its own code (the README's table)."""
    import sys
    from pathlib import Path

    samples = Path(__file__).resolve().parent.parent / "sample_runs"
    sys.path.insert(0, str(samples))
    try:
        import generate_split
    finally:
        sys.path.remove(str(samples))
    split = samples / "split"
    val, test = (generate_split.load_run(split / f"{model}_{part}.parquet")
                 for part in ("val", "test"))
    t = generate_split.fitted_temperature(val.scores, val.labels)
    raw = generate_split.measures(test.scores, test.labels)
    scaled = generate_split.measures(test.scores / t, test.labels)
    metrics = metricdiff.report(split / f"{model}_test.parquet",
                                temperature_from=split / f"{model}_val.parquet").metrics
    assert metrics["temperature"] == pytest.approx(t, rel=1e-5)
    assert metrics["nll"] == pytest.approx(raw["nll"], rel=1e-9)
    assert metrics["ece"] == pytest.approx(raw["ece"], rel=1e-9)
    assert metrics["classwise_ece"] == pytest.approx(raw["classwise_ece"], rel=1e-9)
    assert metrics["accuracy"] == pytest.approx(raw["accuracy"], rel=1e-12)
    assert metrics["nll_calibrated"] == pytest.approx(scaled["nll"], rel=1e-5)
    assert metrics["ece_calibrated"] == pytest.approx(scaled["ece"], abs=1e-4)
