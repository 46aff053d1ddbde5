"""metricdiff series: checkpoints of a training run, their numbers, the diagnosis of the gap
between the lowest NLL and the highest accuracy, two series compared checkpoint by checkpoint,
every output format."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import jsonschema
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from scipy import stats
from typer.testing import CliRunner

import metricdiff
from conftest import list_array, load_schema, write_run
from metricdiff.cli import app, terminal_text

ROOT = Path(__file__).resolve().parent.parent
SERIES = ROOT / "sample_runs" / "series"
WIDE = str(SERIES / "wide" / "epoch*.parquet")
NARROW = str(SERIES / "narrow" / "epoch*.parquet")
METRICS = ("nll", "accuracy", "ece", "temperature", "nll_calibrated")
K, N = 4, 600


def run_cli(*args, env=None):
    return CliRunner(env=env).invoke(app, [str(a) for a in args])


def softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    return np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)


def problem(seed: int = 0, n: int = N):
    """Fixed logits of a model and labels drawn from its own softmax: calibrated at T = 1."""
    rng = np.random.default_rng(seed)
    mu = rng.normal(0, 1.5, (n, K))
    labels = (softmax(mu).cumsum(axis=1) > rng.random(n)[:, None]).argmax(axis=1)
    return rng, mu, labels


def write_series(folder: Path, logits: list[np.ndarray], labels, ids=None) -> str:
    """One file per checkpoint, epoch1 ... epochN, several row groups each; returns the glob."""
    folder.mkdir(parents=True, exist_ok=True)
    ids = np.arange(len(labels)) if ids is None else ids
    for i, z in enumerate(logits, 1):
        write_run(folder / f"epoch{i}.parquet", labels, logits=z.astype(np.float32), ids=ids,
                  row_group_size=128)
    return str(folder / "epoch*.parquet")


@pytest.fixture(scope="module")
def wide():
    return metricdiff.series(WIDE).to_dict()


@pytest.fixture(scope="module")
def two():
    return metricdiff.series({"wide": WIDE, "narrow": NARROW}).to_dict()


# ----------------------------------------------------------------------------- numbers

def test_every_number_is_the_one_report_gives_on_that_checkpoint(wide):
    checkpoints = wide["series"][0]["checkpoints"]
    assert [c["name"] for c in checkpoints] == [f"epoch{i:02d}" for i in range(1, 21)]
    for checkpoint in checkpoints:
        report = metricdiff.report(checkpoint["path"]).to_dict()
        for name in METRICS:
            assert checkpoint["metrics"][name] == report["metrics"][name], (checkpoint, name)
        assert checkpoint["n"] == report["run"]["n"]


def _check_script():
    """sample_runs/generate_series.py: its --check numbers are computed with its own numpy
    and scipy code, from the files alone."""
    spec = importlib.util.spec_from_file_location("generate_series",
                                                  ROOT / "sample_runs" / "generate_series.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_numbers_agree_with_an_independent_computation(two):
    script = _check_script()
    for entry in two["series"]:
        checkpoints = entry["checkpoints"]
        independent = [script.checkpoint_numbers(Path(c["path"])) for c in checkpoints]
        for ours, theirs in zip(checkpoints, independent):
            for name in ("nll", "accuracy", "ece", "nll_calibrated"):
                assert ours["metrics"][name] == pytest.approx(theirs[name], rel=1e-7, abs=1e-9)
            assert ours["metrics"]["temperature"] == pytest.approx(theirs["temperature"],
                                                                   rel=1e-5)
            n, correct = theirs["n"], int(theirs["per_correct"].sum())
            exact = stats.binomtest(correct, n).proportion_ci(0.95, method="exact")
            assert ours["intervals"]["accuracy"]["low"] == pytest.approx(exact.low, rel=1e-9)
            assert ours["intervals"]["accuracy"]["high"] == pytest.approx(exact.high, rel=1e-9)
            low, high = stats.t.interval(0.95, n - 1, loc=theirs["nll"],
                                         scale=stats.sem(theirs["per_nll"]))
            assert (ours["intervals"]["nll"]["low"], ours["intervals"]["nll"]["high"]) == \
                pytest.approx((low, high), rel=1e-6)
        pairs = len(checkpoints) * (len(checkpoints) - 1) // 2
        assert entry["adjustment"]["pairs"] == pairs
        for span in entry["spans"]:
            found = script.paired(independent[span["from"]], independent[span["to"]], pairs)
            for name, (delta, p_adjusted) in found.items():
                change = span["changes"][name]
                assert change["delta"] == pytest.approx(delta, rel=1e-6, abs=1e-12)
                assert change["p_adjusted"] == pytest.approx(p_adjusted, rel=1e-5, abs=1e-12)


def test_the_sample_series_shows_nll_overfitting_while_accuracy_rises(wide, two):
    entry = wide["series"][0]
    best_nll, best_accuracy = entry["best"]["nll"], entry["best"]["accuracy"]
    assert best_nll["index"] < best_accuracy["index"]
    later = entry["checkpoints"][best_accuracy["index"]]["metrics"]
    earlier = entry["checkpoints"][best_nll["index"]]["metrics"]
    assert later["nll"] > earlier["nll"] and later["accuracy"] > earlier["accuracy"]
    assert entry["diagnosis"]["kind"] == "over-confidence growing"
    gap = entry["spans"][0]
    assert gap["kind"] == "gap" and gap["changes"]["nll"]["change"] == "rises"
    assert gap["changes"]["nll_calibrated"]["change"] == "falls"
    assert gap["temperature"]["to"] > gap["temperature"]["from"]
    # said as it is: the rise of accuracy is within noise once the choice is accounted for
    assert not gap["changes"]["accuracy"]["significant"]
    assert "accuracy +0.0176, within noise" in entry["diagnosis"]["sentence"]
    assert "Guo et al. 2017" in entry["diagnosis"]["sentence"]
    narrow = two["series"][1]
    assert narrow["name"] == "narrow" and narrow["diagnosis"]["kind"] == "no gap"


# ----------------------------------------------------------------------------- diagnosis

def test_only_the_temperature_growing_is_over_confidence(tmp_path):
    _, mu, labels = problem()
    pattern = write_series(tmp_path / "t", [mu * s for s in (1.0, 1.5, 2.0, 3.0, 4.0)], labels)
    entry = metricdiff.series(pattern).to_dict()["series"][0]
    accuracy = {c["metrics"]["accuracy"] for c in entry["checkpoints"]}
    assert len(accuracy) == 1  # the ranking never changes
    assert entry["best"]["nll"]["index"] == 0
    assert entry["best"]["accuracy"]["index"] == 4  # equal accuracy: the last
    assert entry["diagnosis"]["kind"] == "over-confidence growing"
    changes = entry["spans"][0]["changes"]
    assert changes["nll"]["change"] == "rises"
    assert not changes["nll_calibrated"]["significant"]  # the same model at every T
    assert abs(changes["nll_calibrated"]["delta"]) < 1e-6
    assert "accuracy unchanged" in entry["diagnosis"]["sentence"]


def _degrading(mu, labels, rng):
    """Accuracy rises (wrong examples get fixed one checkpoint after another) while the right
    examples' runner-up class closes in on the true one: their probabilities get worse in a
    way no temperature undoes."""
    rows = np.arange(len(labels))
    top = mu.argmax(axis=1)
    correct = top == labels
    ranked = np.argsort(-mu, axis=1)
    second = np.where(ranked[:, 0] == labels, ranked[:, 1], ranked[:, 0])
    gap = mu[rows, top] - mu[rows, labels]
    flip_at = rng.integers(1, 5, len(labels))
    fixed = ~correct & (rng.random(len(labels)) < 0.3)
    margin = mu[rows, labels] - mu[rows, second]
    checkpoints = []
    for t in range(5):
        z = mu.copy()
        z[rows, labels] += np.where(fixed & (t >= flip_at), gap + 0.3, 0.0)
        target = np.maximum(margin * (1 - 0.25 * t), 0.05)
        z[rows[correct], second[correct]] = mu[rows[correct], labels[correct]] - target[correct]
        checkpoints.append(z)
    return checkpoints


def test_a_model_that_really_degrades_is_real_degradation(tmp_path):
    rng, mu, labels = problem()
    entry = metricdiff.series(write_series(tmp_path / "d", _degrading(mu, labels, rng),
                                           labels)).to_dict()["series"][0]
    changes = entry["spans"][0]["changes"]
    assert changes["accuracy"]["change"] == "rises"
    assert changes["nll"]["change"] == "rises"
    assert changes["nll_calibrated"]["change"] == "rises"
    assert entry["diagnosis"]["kind"] == "real degradation"


def test_no_change_is_not_called_a_change_at_about_the_rate_alpha(tmp_path):
    """200 pairs of checkpoints drawn from one distribution (the same model, fresh noise):
    each test of a change between them fires at about alpha, and the diagnosis claims a gap
    at most that often."""
    rng, mu, labels = problem(seed=1, n=200)
    claims = {name: 0 for name in ("nll", "accuracy", "nll_calibrated")}
    tests, diagnosed = 0, 0
    for sim in range(200):
        logits = [mu + rng.normal(0, 1, mu.shape) for _ in range(2)]
        entry = metricdiff.series(write_series(tmp_path / f"n{sim % 2}", logits,
                                               labels)).to_dict()["series"][0]
        diagnosed += entry["diagnosis"]["kind"] != "no gap"
        for span in entry["spans"]:
            tests += 1
            for name in claims:
                claims[name] += span["changes"][name]["significant"]
            assert "rises" not in span["sentence"] or span["changes"]["nll"]["significant"] \
                or span["changes"]["accuracy"]["significant"] \
                or span["changes"]["nll_calibrated"]["significant"]
    assert tests > 100
    for name, count in claims.items():
        assert 0.01 <= count / tests <= 0.10, (name, count, tests)
    assert diagnosed / 200 <= 0.08


def test_choosing_among_many_checkpoints_is_paid_for(tmp_path):
    """Six checkpoints of one unchanging model: the lowest NLL and highest accuracy are picked
    by chance, and the Bonferroni level keeps the gap from being called real."""
    rng, mu, labels = problem(seed=2, n=200)
    raw, adjusted = 0, 0
    for sim in range(40):
        logits = [mu + rng.normal(0, 1, mu.shape) for _ in range(6)]
        entry = metricdiff.series(write_series(tmp_path / f"m{sim % 2}", logits,
                                               labels)).to_dict()["series"][0]
        assert entry["adjustment"]["pairs"] == 15
        changes = [c for span in entry["spans"] for c in span["changes"].values()]
        raw += any(c["p_value"] < 0.05 for c in changes)
        adjusted += any(c["significant"] for c in changes)
    assert adjusted <= 2  # a claim in at most alpha of 40 series, give or take
    assert raw >= 3 * max(1, adjusted)  # what choosing without paying for it would claim


def test_an_infinite_nll_is_said_and_not_diagnosed(tmp_path):
    """The more accurate checkpoint gives one true class probability 0: its NLL is infinite
    (unavailable), so there is no test of the gap and no diagnosis to make."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 200)
    early = rng.dirichlet([1, 1, 1], 200)
    late = early.copy()
    late[np.arange(200), labels] += 2.0
    late /= late.sum(axis=1, keepdims=True)
    late[0] = 0.0
    late[0, (labels[0] + 1) % 3] = 1.0
    for epoch, probs in ((1, early), (2, late)):
        write_run(tmp_path / f"epoch{epoch}.parquet", labels, probs=probs, ids=np.arange(200))
    entry = metricdiff.series(str(tmp_path / "epoch*.parquet")).to_dict()["series"][0]
    assert entry["checkpoints"][1]["metrics"]["nll"] is None
    assert (entry["best"]["nll"]["index"], entry["best"]["accuracy"]["index"]) == (0, 1)
    assert entry["diagnosis"]["kind"] == "undetermined"
    assert "NLL: no test, unavailable at epoch2 (infinite: 1 of 200" in entry["spans"][0][
        "sentence"]


def test_best_checkpoints_and_their_ties():
    from metricdiff.checkpoints import best_index

    assert best_index([0.5, 0.4, 0.4, 0.6], higher=False) == 1  # NLL: the first
    assert best_index([0.7, 0.8, 0.8, 0.6], higher=True) == 2  # accuracy: the last
    assert best_index([None, None], higher=True) is None


# ----------------------------------------------------------------------------- layouts

def test_a_step_column_splits_one_run_like_separate_files(tmp_path):
    rng, mu, labels = problem(seed=3, n=300)
    logits = [mu * s + rng.normal(0, 0.3, mu.shape) for s in (0.8, 1.0, 1.6)]
    separate = metricdiff.series(write_series(tmp_path / "files", logits, labels)).to_dict()
    steps = np.repeat([100, 200, 300], len(labels))
    order = np.random.default_rng(4).permutation(len(steps))  # steps interleaved in the file
    matrix = np.concatenate(logits).astype(np.float32)[order]
    table = pa.table({"id": np.tile(np.arange(len(labels)), 3)[order],
                      "label": np.tile(labels, 3)[order], "logits": list_array(matrix),
                      "step": steps[order]})
    pq.write_table(table, tmp_path / "steps.parquet", row_group_size=100)
    split = metricdiff.series(str(tmp_path / "steps.parquet")).to_dict()
    entry = split["series"][0]
    assert [c["name"] for c in entry["checkpoints"]] == ["step=100", "step=200", "step=300"]
    assert [c["step"] for c in entry["checkpoints"]] == [100, 200, 300]
    assert entry["step_source"] == "column step" and split["settings"]["step_col"] == "step"
    for ours, theirs in zip(entry["checkpoints"], separate["series"][0]["checkpoints"]):
        for name in METRICS:
            assert ours["metrics"][name] == pytest.approx(theirs["metrics"][name], rel=1e-12)
        for name, bounds in ours["intervals"].items():
            assert (bounds["low"], bounds["high"]) == pytest.approx(
                (theirs["intervals"][name]["low"], theirs["intervals"][name]["high"]), rel=1e-12)
    assert entry["diagnosis"]["kind"] == separate["series"][0]["diagnosis"]["kind"]
    for ours, theirs in zip(entry["spans"], separate["series"][0]["spans"]):
        for name in ours["changes"]:
            assert ours["changes"][name]["p_value"] == pytest.approx(
                theirs["changes"][name]["p_value"], rel=1e-9)
    # --step-col names another column; the same split
    pq.write_table(table.rename_columns(["id", "label", "logits", "global_step"]),
                   tmp_path / "global.parquet", row_group_size=100)
    renamed = metricdiff.series(str(tmp_path / "global.parquet"), step_col="global_step")
    assert [c["metrics"] for c in renamed.to_dict()["series"][0]["checkpoints"]] == \
        [c["metrics"] for c in entry["checkpoints"]]


def test_a_step_larger_than_the_temperature_sample_is_fitted_on_its_first_rows(tmp_path):
    rng, mu, labels = problem(seed=5, n=300)
    logits = [mu * s + rng.normal(0, 0.3, mu.shape) for s in (0.7, 1.4)]
    matrix = np.concatenate(logits).astype(np.float32)
    table = pa.table({"id": np.tile(np.arange(300), 2), "label": np.tile(labels, 2),
                      "logits": list_array(matrix), "step": np.repeat([1, 2], 300)})
    pq.write_table(table, tmp_path / "steps.parquet", row_group_size=64)
    result = metricdiff.series(str(tmp_path / "steps.parquet"), temperature_values=K * 50)
    checkpoints = result.to_dict()["series"][0]["checkpoints"]
    for step, checkpoint in enumerate(checkpoints):
        assert any("sample of 50 of 300 rows" in w for w in checkpoint["warnings"])
        head = write_run(tmp_path / f"head{step}.parquet", labels[:50],
                         logits=logits[step][:50].astype(np.float32), ids=np.arange(50))
        assert checkpoint["metrics"]["temperature"] == \
            metricdiff.report(str(head)).metrics["temperature"]


def test_a_glob_is_taken_in_natural_order_and_a_given_order_is_kept(tmp_path):
    _, mu, labels = problem(n=200)
    folder = tmp_path / "run"
    folder.mkdir()
    for epoch in (1, 2, 9, 10, 11):
        write_run(folder / f"epoch{epoch}.parquet", labels, logits=mu * epoch / 5,
                  ids=np.arange(len(labels)))
    entry = metricdiff.series(str(folder / "epoch*.parquet")).to_dict()["series"][0]
    assert [c["name"] for c in entry["checkpoints"]] == \
        ["epoch1", "epoch2", "epoch9", "epoch10", "epoch11"]
    assert [c["step"] for c in entry["checkpoints"]] == [1, 2, 9, 10, 11]
    assert entry["name"] == "run"
    shell_order = sorted(str(p) for p in folder.glob("epoch*.parquet"))  # an unquoted glob
    result = metricdiff.series(*shell_order).to_dict()
    assert [c["name"] for c in result["series"][0]["checkpoints"]] == \
        ["epoch1", "epoch10", "epoch11", "epoch2", "epoch9"]
    assert any("not the natural order" in w for w in result["warnings"])
    assert result["series"][0]["step_source"] == "positions"


def test_checkpoints_in_folders_of_shards(tmp_path):
    _, mu, labels = problem(n=200)
    for epoch in (1, 2, 3):
        write_run(tmp_path / f"ckpt{epoch}", labels, logits=mu * epoch, ids=np.arange(200),
                  shards=2)
    entry = metricdiff.series(f"{tmp_path}/ckpt*/").to_dict()["series"][0]
    assert [c["name"] for c in entry["checkpoints"]] == ["ckpt1", "ckpt2", "ckpt3"]
    assert entry["checkpoints"][1]["metrics"]["nll"] == \
        metricdiff.report(str(tmp_path / "ckpt2")).metrics["nll"]


# ----------------------------------------------------------------------------- two series

def test_two_series_run_compares_paired_comparison_at_each_checkpoint(two):
    comparison = two["comparison"]
    assert (comparison["baseline"], comparison["candidate"]) == ("wide", "narrow")
    assert comparison["holm_over"] == 20 and comparison["resamples"] == 0
    raw = []
    for c in comparison["checkpoints"][::6]:
        index = c["index"]
        paths = [two["series"][i]["checkpoints"][index]["path"] for i in (0, 1)]
        expected = metricdiff.compare({"wide": paths[0], "narrow": paths[1]},
                                      resamples=0).to_dict()["comparisons"][0]
        for name in ("nll", "accuracy", "nll_calibrated"):
            for key in ("delta", "ci_low", "ci_high", "p_value"):
                assert c["deltas"][name][key] == expected["deltas"][name][key]
        raw.append(c["verdict"]["p_value"])
    p_values = [c["verdict"]["p_value"] for c in comparison["checkpoints"]]
    ranked = sorted(range(20), key=lambda i: p_values[i])
    holm, running = [0.0] * 20, 0.0
    for rank, i in enumerate(ranked):
        running = max(running, min(1.0, (20 - rank) * p_values[i]))
        holm[i] = running
    for c, adjusted in zip(comparison["checkpoints"], holm):
        assert c["verdict"]["p_value_adjusted"] == pytest.approx(adjusted, rel=1e-12)
        expected = ("inconclusive" if adjusted >= 0.05 else
                    "better" if c["verdict"]["delta"] < 0 else "worse")
        assert c["verdict"]["decision"] == expected
        assert "Holm-adjusted over 20 checkpoints" in c["verdict"]["reason"]
    decisions = [c["verdict"]["decision"] for c in comparison["checkpoints"]]
    assert decisions[0] == "worse" and decisions[-1] == "better"  # NLL: narrow ends better
    assert comparison["decisions"] == {w: decisions.count(w)
                                       for w in ("better", "worse", "inconclusive")}


def test_exit_codes_follow_compare():
    """--fail-on as compare's, judged on the verdict at every checkpoint: narrow is worse than
    wide on NLL early in training, so it fails 'worse'; the first five epochs have no verdict
    'better' for wide as candidate either."""
    early = [str(SERIES / arch / "epoch0[1-5].parquet") for arch in ("wide", "narrow")]
    pair = ["wide=" + early[0], "narrow=" + early[1]]
    assert run_cli("series", *pair, "-f", "json").exit_code == 0
    result = run_cli("series", *pair, "--fail-on", "worse", "-f", "json")
    assert result.exit_code == 1 and json.loads(result.stdout)["failed"] is True
    result = run_cli("series", *pair[::-1], "--fail-on", "not-better", "-f", "json")
    assert result.exit_code == 0, result.stdout  # wide better than narrow at all five
    result = run_cli("series", WIDE, "--fail-on", "worse")
    assert result.exit_code == 2 and "two series" in result.stderr


# ----------------------------------------------------------------------------- outputs

def test_json_validates_and_equals_the_library(wide, two):
    schema = load_schema("series")
    jsonschema.validate(wide, schema)
    jsonschema.validate(two, schema)
    result = run_cli("series", WIDE, "--format", "json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout) == wide


def test_to_pandas_tables(two):
    result = metricdiff.series({"wide": WIDE, "narrow": NARROW})
    frame = result.to_pandas()
    assert len(frame) == 40 and set(frame["series"]) == {"wide", "narrow"}
    assert (frame["nll_low"] < frame["nll"]).all() and (frame["nll"] < frame["nll_high"]).all()
    changes = result.to_pandas("changes")
    assert set(changes["metric"]) == {"nll", "accuracy", "nll_calibrated"}
    assert len(result.to_pandas("verdicts")) == 20
    with pytest.raises(metricdiff.UsageError, match="unknown table"):
        result.to_pandas("nope")


@pytest.mark.parametrize("width", (60, 80, 120))
def test_the_terminal_fits_any_width(two, width, monkeypatch):
    monkeypatch.setenv("COLUMNS", str(width))
    text = terminal_text(two, to_stdout=False)
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= width
    assert not [line for line in lines if line != line.rstrip()]
    for entry in two["series"]:
        for c in entry["checkpoints"]:  # numbers are never cut
            assert f"{c['metrics']['nll']:.4f}" in text
    assert "Holm-adjusted over 20 checkpoints" in " ".join(text.split())
    assert lines[-1].strip().endswith(".")  # the answer again, last


def test_markdown_and_html(two, tmp_path):
    from test_html import assert_self_contained

    result = run_cli("series", "wide=" + WIDE, "narrow=" + NARROW, "--format", "markdown",
                     "--html", tmp_path / "s.html")
    assert result.exit_code == 0, result.stderr
    markdown = result.stdout
    assert markdown.startswith("## metricdiff series")
    assert "| checkpoint | nll | accuracy | ece | temperature | nll\\_calibrated | best |" \
        in markdown
    assert "over-confidence growing" in markdown and "Guo et al. 2017" in markdown
    page = (tmp_path / "s.html").read_text(encoding="utf-8")
    assert_self_contained(page)
    for kind in ("nll", "accuracy", "nll_calibrated", "temperature"):
        assert f'data-plot="series-{kind}"' in page
    assert 'data-plot="series-change"' in page
    assert page.count('<svg role="img"') == 5


def test_precision_and_one_series_html(tmp_path):
    result = run_cli("series", WIDE, "--precision", "2", "--html", tmp_path / "one.html")
    assert result.exit_code == 0, result.stderr
    assert re.search(r"epoch06\s+0\.56\s+0\.79", result.stdout)
    page = (tmp_path / "one.html").read_text(encoding="utf-8")
    assert page.count('<svg role="img"') == 4  # no change plot for one series


def test_readme_documents_series():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "## Runs over training" in readme and "Guo et al. 2017" in readme
    assert "metricdiff series" in readme


def test_the_generator_is_in_the_samples_target_and_its_readme():
    makefile = (ROOT / "Makefile").read_text()
    assert "sample_runs/generate_series.py" in makefile
    assert "generate_series.py --check" in (ROOT / "sample_runs" / "README.md").read_text()
    size = sum(p.stat().st_size for p in SERIES.rglob("*.parquet"))
    assert size < 2_000_000
