"""Groups of runs (seeds), clusters, per-class tests and the statements built on them: through
the CLI and the library, in every format, with their bad inputs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import jsonschema
import numpy as np
import pytest
from scipy import stats
from typer.testing import CliRunner

import metricdiff
from metricdiff.cli import app
from metricdiff.errors import UsageError
from metricdiff.render.compare_markdown import render_comparison_markdown
from metricdiff.render.html import render_comparison_html

from conftest import nulled, write_run

N, K = 600, 6
SCHEMA = json.loads((Path(metricdiff.__file__).parent / "schema" / "compare.schema.json")
                    .read_text())


def run_cli(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def _logits(labels: np.ndarray, seed: int, effect: float) -> np.ndarray:
    """A shared example difficulty, a per-seed temperature and noise: runs of one
    configuration differ by their seed only; `effect` boosts the true class."""
    shared = np.random.default_rng(99).normal(0, 1, (len(labels), K))
    shared[np.arange(len(labels)), labels] += 1.2
    rng = np.random.default_rng(seed)
    logits = shared * (1 + rng.normal(0, 0.1)) + rng.normal(0, 0.8, (len(labels), K))
    logits[np.arange(len(labels)), labels] += effect
    return logits.astype(np.float32)


@pytest.fixture(scope="module")
def seeds(tmp_path_factory) -> Path:
    """runs/{main,pr}/seed{0..3}/part-*.parquet; pr is really better; a cluster column."""
    root = tmp_path_factory.mktemp("runs")
    labels = np.random.default_rng(5).integers(0, K, N)
    clusters = (np.arange(N) // 6).tolist()
    for config, effect in (("main", 0.0), ("pr", 0.6)):
        for s in range(4):
            folder = root / config / f"seed{s}"
            folder.parent.mkdir(exist_ok=True)
            write_run(folder, labels, logits=_logits(labels, 10 * s + (config == "pr"), effect),
                      ids=np.arange(N), extra={"cluster": clusters}, shards=2)
    return root


def _group_args(root: Path, config: str, runs: int = 4) -> list[str]:
    return [f"{config}={root / config / f'seed{s}'}" for s in range(runs)]


def _json(result) -> dict:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_repeated_names_make_groups_and_json_validates(seeds):
    doc = _json(run_cli("compare", *_group_args(seeds, "main"), *_group_args(seeds, "pr"),
                        "--resamples", 100, "-f", "json"))
    jsonschema.validate(doc, SCHEMA)
    assert [g["name"] for g in doc["groups"]] == ["main", "pr"]
    assert [g["size"] for g in doc["groups"]] == [4, 4]
    assert [r["group"] for r in doc["runs"]] == ["main"] * 4 + ["pr"] * 4
    main = doc["groups"][0]
    nlls = [r["metrics"]["nll"] for r in doc["runs"][:4]]
    assert main["mean"]["nll"] == pytest.approx(np.mean(nlls), rel=1e-12)
    assert main["sd"]["nll"] == pytest.approx(np.std(nlls, ddof=1), rel=1e-12)
    assert main["runs"][0]["path"] == str(seeds / "main" / "seed0")
    c = doc["comparisons"][0]
    assert c["noise"] == ["examples", "seeds"]
    assert c["deltas"]["nll"]["noise"] == ["examples", "seeds"]
    assert c["verdict"]["decision"] == "better"  # the planted effect survives the seeds
    assert c["pairs_averaged"] == 16 and c["runs"]["candidate"][0] == "pr/seed0"
    assert doc["seed_noise"]["pairs"] == 6 and doc["seed_noise"]["group"] == "main"


def test_folder_pattern_is_the_same_as_naming_each_run(seeds):
    named = _json(run_cli("compare", *_group_args(seeds, "main"), *_group_args(seeds, "pr"),
                          "--resamples", 50, "-f", "json"))
    pattern = _json(run_cli("compare", f"main={seeds}/main/seed*/", f"pr={seeds}/pr/seed*/",
                            "--resamples", 50, "-f", "json"))
    assert pattern["comparisons"][0]["deltas"] == named["comparisons"][0]["deltas"]
    # an unnamed pattern is named after its parent folder
    unnamed = _json(run_cli("compare", f"{seeds}/main/seed*/", f"{seeds}/pr/seed*/",
                            "--resamples", 0, "-f", "json"))
    assert [g["name"] for g in unnamed["groups"]] == ["main", "pr"]


def test_a_glob_of_files_is_still_the_shards_of_one_run(seeds):
    doc = _json(run_cli("compare", f"a={seeds}/main/seed0/*.parquet",
                        f"b={seeds}/pr/seed0/*.parquet", "--resamples", 0, "-f", "json"))
    assert [g["size"] for g in doc["groups"]] == [1, 1]
    assert len(doc["runs"][0]["files"]) == 2


def test_library_mapping_equals_the_cli(seeds):
    result = metricdiff.compare({"main": [seeds / "main" / f"seed{s}" for s in range(4)],
                                 "pr": [seeds / "pr" / f"seed{s}" for s in range(4)]},
                                resamples=50)
    cli = _json(run_cli("compare", *_group_args(seeds, "main"), *_group_args(seeds, "pr"),
                        "--resamples", 50, "-f", "json"))
    library = json.loads(json.dumps(result.to_dict()))
    for doc in (library, cli):
        for run in doc["runs"]:
            run.pop("path"), run.pop("files")
        for group in doc["groups"]:
            group.pop("runs")
    assert library == cli


def test_group_delta_is_the_difference_of_group_means_and_agrees_with_its_p(seeds):
    doc = _json(run_cli("compare", *_group_args(seeds, "main"), *_group_args(seeds, "pr"),
                        "--resamples", 100, "-f", "json"))
    means = {g["name"]: g["mean"] for g in doc["groups"]}
    for name, row in doc["comparisons"][0]["deltas"].items():
        assert row["delta"] == pytest.approx(means["pr"][name] - means["main"][name], abs=1e-12)
        if row["p_value"] is not None:
            excludes = row["ci_low"] > 0 or row["ci_high"] < 0
            assert excludes == (row["p_value"] < 0.05), name


def test_paired_seeds_takes_deltas_seed_by_seed(seeds):
    doc = _json(run_cli("compare", *_group_args(seeds, "main"), *_group_args(seeds, "pr"),
                        "--paired-seeds", "--resamples", 0, "-f", "json"))
    c = doc["comparisons"][0]
    assert c["pairs_averaged"] == 4
    assert "paired seeds" in c["deltas"]["nll"]["method"]
    per_seed = [doc["runs"][4 + s]["metrics"]["nll"] - doc["runs"][s]["metrics"]["nll"]
                for s in range(4)]
    assert c["deltas"]["nll"]["delta"] == pytest.approx(np.mean(per_seed), abs=1e-12)


def test_one_run_per_side_says_seeds_were_not_measured(seeds):
    a, b = seeds / "main" / "seed0", seeds / "pr" / "seed0"
    doc = _json(run_cli("compare", a, b, "--resamples", 0, "-f", "json"))
    assert doc["comparisons"][0]["noise"] == ["examples"]
    assert doc["seed_noise"] is None
    for fmt in ("table", "markdown"):
        out = run_cli("compare", a, b, "--resamples", 0, "-f", fmt).stdout
        assert "seeds not measured" in out


def test_every_format_shows_the_groups_and_the_seed_noise_floor(seeds):
    args = [*_group_args(seeds, "main"), *_group_args(seeds, "pr"), "--resamples", 50]
    doc = _json(run_cli("compare", *args, "-f", "json"))
    table = run_cli("compare", *args).stdout
    markdown = render_comparison_markdown(doc)
    page = render_comparison_html(doc)
    for text in (table, markdown, page):
        assert "main (4 runs" in text and "pr (4 runs)" in text
        assert "Seed noise floor" in text
        assert "training seeds" in text
        assert "the mean difference between two main runs" in " ".join(text.split())
    mean, sd = doc["groups"][0]["mean"]["nll"], doc["groups"][0]["sd"]["nll"]
    assert f"{mean:.4f} ± {sd:.4f}" in table


def test_seed_noise_floor_counts_what_the_one_pair_test_calls(seeds):
    doc = _json(run_cli("compare", *_group_args(seeds, "main"), *_group_args(seeds, "pr"),
                        "--resamples", 0, "-f", "json"))
    floor = doc["seed_noise"]["metrics"]["nll"]
    pairs = [(i, j) for i in range(4) for j in range(i + 1, 4)]
    called, diffs = 0, []
    for i, j in pairs:  # the same pairs, one by one, as a user would compare them
        one = _json(run_cli("compare", seeds / "main" / f"seed{i}", seeds / "main" / f"seed{j}",
                            "--resamples", 0, "-f", "json"))["comparisons"][0]["deltas"]["nll"]
        called += one["p_value"] < 0.05
        diffs.append(abs(one["delta"]))
    assert floor["significant_pairs"] == called
    assert floor["mean_abs_diff"] == pytest.approx(np.mean(diffs), rel=1e-12)
    assert floor["max_abs_diff"] == pytest.approx(max(diffs), rel=1e-12)


def test_cluster_option_resamples_clusters_and_reports_the_effective_size(seeds):
    a, b = seeds / "main" / "seed0", seeds / "pr" / "seed0"
    plain = _json(run_cli("compare", a, b, "--resamples", 100, "-f", "json"))["comparisons"][0]
    doc = _json(run_cli("compare", a, b, "--resamples", 100, "--cluster", "cluster",
                        "-f", "json"))
    jsonschema.validate(doc, SCHEMA)
    c = doc["comparisons"][0]
    assert c["noise"] == ["clusters"] and c["clusters"]["count"] == N // 6
    assert c["deltas"]["accuracy"]["method"].startswith("clustered McNemar")
    assert "whole clusters" in c["deltas"]["ece"]["method"]
    # the cluster-robust variance of the NLL change, by hand
    nll = c["deltas"]["nll"]
    assert nll["delta"] == plain["deltas"]["nll"]["delta"]
    assert nll["df"] == N // 6 - 1
    ratio = c["clusters"]["design_effect"]
    assert c["clusters"]["effective_n"] == pytest.approx(N / ratio)


def test_clustered_paired_t_matches_a_hand_computation():
    from metricdiff.paired import paired_t

    rng = np.random.default_rng(3)
    clusters = rng.integers(0, 40, 500)
    base = rng.normal(size=500) + rng.normal(size=40)[clusters]
    cand = base + 0.1 + rng.normal(size=40)[clusters] * 0.3 + rng.normal(size=500) * 0.2
    diff = cand - base
    sums = np.array([np.sum(diff[clusters == c] - diff.mean()) for c in range(40)])
    variance = 40 / 39 * np.sum(sums ** 2) / 500 ** 2
    p = 2 * stats.t.sf(abs(diff.mean()) / math.sqrt(variance), 39)
    interval = paired_t(base, cand, 0.05, clusters)
    assert interval.p_value == pytest.approx(p, rel=1e-9)
    half = stats.t.ppf(0.975, 39) * math.sqrt(variance)
    assert interval.ci_low == pytest.approx(diff.mean() - half, rel=1e-9)


def test_minimum_detectable_effect_follows_the_normal_formula(seeds):
    doc = _json(run_cli("compare", seeds / "main" / "seed0", seeds / "main" / "seed1",
                        "--resamples", 0, "-f", "json"))
    c = doc["comparisons"][0]
    nll = c["deltas"]["nll"]
    t_crit = stats.t.ppf(0.975, nll["df"])
    se = (nll["ci_high"] - nll["delta"]) / t_crit
    expected = (t_crit + stats.t.ppf(0.8, nll["df"])) * se
    assert c["detectable"]["mde"] == pytest.approx(expected, rel=1e-9)
    if c["verdict"]["decision"] == "inconclusive":
        # the examples needed bring the normal-approximation power to 80% at the observed delta
        n_needed = c["detectable"]["examples_needed"]
        z = abs(nll["delta"]) / (se * math.sqrt(N / n_needed))
        assert stats.norm.cdf(z - stats.norm.ppf(0.975)) == pytest.approx(0.8, abs=0.01)


def test_per_class_counts_and_q_values_in_every_format(seeds):
    args = [seeds / "main" / "seed0", seeds / "pr" / "seed0", "--resamples", 0]
    doc = _json(run_cli("compare", *args, "-f", "json"))
    found = doc["comparisons"][0]["class_changes"]
    assert found["fdr"] == 0.05 and found["classes_tested"] == K
    rows = doc["comparisons"][0]["ranked"]["classes"]["rows"]
    assert all(0 <= r["recall_q"] <= 1 and r["recall_q"] >= r["recall_p"] for r in rows)
    worse = found["recall"]["worse"]
    for text in (run_cli("compare", *args).stdout, render_comparison_markdown(doc)):
        assert f"recall {found['recall']['better']} better, {worse} worse" in text


def test_markdown_writes_a_direction_only_for_significant_changes(seeds):
    doc = _json(run_cli("compare", seeds / "main" / "seed0", seeds / "main" / "seed1",
                        "--resamples", 50, "-f", "json"))
    markdown = render_comparison_markdown(doc)
    for name, row in doc["comparisons"][0]["deltas"].items():
        # rows of the delta tables: 8 columns, the last the change
        lines = [ln for ln in markdown.splitlines()
                 if ln.startswith(f"| `{name}` |") and ln.count(" | ") == 7]
        assert lines, name
        for line in lines:
            change = line.split("|")[-2].strip()
            if row["change"] in ("better", "worse"):
                assert change == (row["change"] if row["significant"] else "n.s."), line


def test_holm_adjusted_p_is_labelled_apart_from_the_interval(seeds):
    doc = _json(run_cli("compare", seeds / "main" / "seed0", seeds / "pr" / "seed0",
                        seeds / "pr" / "seed1", "--resamples", 0, "-f", "json"))
    for c in doc["comparisons"]:
        verdict = c["verdict"]
        assert "Holm-adjusted over 2 candidates" in verdict["reason"]
        assert verdict["p_value"] == c["deltas"]["nll"]["p_value"]  # raw p, beside its CI


@pytest.mark.parametrize("args, fragment", [
    (["--paired-seeds"], "--paired-seeds needs the same number of runs"),
    (["--cluster", "nope"], "--cluster column 'nope' not found"),
    (["--fdr", "0"], "--fdr must be between 0 and 1"),
    (["--fdr", "nan"], "--fdr must be between 0 and 1"),
    (["--min-effect", "nan"], "--min-effect must be 0 or more"),
])
def test_bad_group_options_are_one_line_errors(seeds, args, fragment):
    result = run_cli("compare", *_group_args(seeds, "main", 3), *_group_args(seeds, "pr", 2),
                     "--resamples", 0, *args)
    assert result.exit_code == 2, result.output
    assert fragment in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.output


def test_bad_group_inputs_are_one_line_errors(seeds, tmp_path):
    labels = np.random.default_rng(5).integers(0, K, N)
    moved = tmp_path / "moved.parquet"  # the same examples, other clusters
    write_run(moved, labels, logits=_logits(labels, 1, 0.0), ids=np.arange(N),
              extra={"cluster": (np.arange(N) % 7).tolist()})
    one = tmp_path / "one.parquet"
    write_run(one, labels, logits=_logits(labels, 2, 0.0), ids=np.arange(N),
              extra={"cluster": [0] * N})
    cases = [
        ([f"a={seeds}/nothing/seed*/", f"b={seeds / 'pr' / 'seed0'}"], "no folder matches"),
        ([f"a={seeds / 'main' / 'seed0'}", f"a={seeds / 'pr' / 'seed0'}"],
         "every run is in the group 'a'"),
        ([seeds / "main" / "seed0", moved, "--cluster", "cluster"], "in another cluster"),
        ([one, one, "--cluster", "cluster"], "every example is in one cluster"),
    ]
    for args, fragment in cases:
        result = run_cli("compare", *args, "--resamples", 0)
        assert result.exit_code == 2, (args, result.output)
        assert fragment in result.stderr, (fragment, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.output


def test_inconclusive_verdict_still_lists_significant_changes():
    from metricdiff.explain import disagreements
    from metricdiff.paired import Interval

    directions = {"nll": False, "accuracy": True, "ece": False}
    deltas = {"nll": Interval(-0.01, -0.03, 0.01, 0.3, "t"),
              "accuracy": Interval(0.02, 0.01, 0.03, 0.001, "t"),
              "ece": Interval(0.01, -0.01, 0.03, 0.4, "t")}
    found = disagreements(deltas, directions, "nll", 0.05, "inconclusive")
    assert [(d["metric"], d["says"], d["primary_says"]) for d in found] == [
        ("accuracy", "better", "inconclusive")]
    # a decisive verdict lists only what contradicts it
    assert disagreements(deltas, directions, "nll", 0.05, "better") == []


@pytest.mark.parametrize("n, cluster, alpha", [(300, False, 0.05), (300, True, 0.1),
                                               (25_000, False, 0.05), (25_000, True, 0.05)])
def test_every_interval_excludes_zero_exactly_when_its_p_is_below_alpha(tmp_path, n, cluster,
                                                                        alpha):
    """Paired t, McNemar, the bootstrap (full and bag of little bootstraps), clustered: each
    interval and its p come from one reference distribution, over many small and large
    changes."""
    labels = np.random.default_rng(n).integers(0, K, n)
    extra = {"cluster": (np.arange(n) // 5).tolist()}
    base = write_run(tmp_path / "base.parquet", labels, logits=_logits(labels, 0, 0.0),
                     ids=np.arange(n), extra=extra, row_group_size=4096)
    candidates = [write_run(tmp_path / f"c{e}.parquet", labels,
                            logits=_logits(labels, 1 + i, e), ids=np.arange(n), extra=extra,
                            row_group_size=4096)
                  for i, e in enumerate((0.0, 0.02, 0.05, 0.3))]
    result = metricdiff.compare(base, *candidates, resamples=200, alpha=alpha,
                                cluster="cluster" if cluster else None)
    checked = 0
    for comparison in result.to_dict()["comparisons"]:
        for name, row in comparison["deltas"].items():
            if row["p_value"] is None:
                continue
            excludes = row["ci_low"] > 0 or row["ci_high"] < 0
            assert excludes == (row["p_value"] < alpha), (name, row)
            checked += 1
    assert checked >= 4 * 14


SEEDS = Path(__file__).resolve().parent.parent / "sample_runs" / "seeds"


def _sample_group(config: str, seeds) -> list[Path]:
    return [SEEDS / config / f"seed{s}" for s in seeds]


def test_committed_seed_runs_one_pair_looks_significant_the_groups_say_seed_noise():
    """What the README walkthrough shows, on the committed runs."""
    pair = metricdiff.compare(*_sample_group("base", (1, 2)), resamples=0).comparisons[0]
    assert pair["verdict"]["decision"] == "better" and pair["noise"] == ["examples"]
    for cluster in (None, "cluster"):
        groups = metricdiff.compare({"base": _sample_group("base", range(5)),
                                     "wide": _sample_group("wide", range(5))},
                                    resamples=0, cluster=cluster).comparisons[0]
        assert groups["verdict"]["decision"] == "better"
        assert groups["verdict"]["p_value"] < 0.001 and "seeds" in groups["noise"]


def test_committed_seed_runs_same_configuration_groups_are_rarely_called_different():
    """Every split of five seeds into 2 and 3, both configurations, clusters counted: at most
    about alpha of them may be called different (20 dependent splits per metric)."""
    import itertools

    called = {"nll": 0, "accuracy": 0}
    for config in ("base", "wide"):
        for first in itertools.combinations(range(5), 2):
            rest = [s for s in range(5) if s not in first]
            result = metricdiff.compare({"a": _sample_group(config, first),
                                         "b": _sample_group(config, rest)},
                                        resamples=0, cluster="cluster")
            for metric in called:
                called[metric] += result.comparisons[0]["deltas"][metric]["significant"]
    assert called["nll"] <= 2 and called["accuracy"] <= 2, called


def test_group_tables_as_dataframes(seeds):
    result = metricdiff.compare({"main": [seeds / "main" / f"seed{s}" for s in range(4)],
                                 "pr": [seeds / "pr" / f"seed{s}" for s in range(4)]},
                                resamples=0)
    frame = result.to_pandas("groups")
    row = frame[(frame["group"] == "main") & (frame["metric"] == "nll")].iloc[0]
    assert row["mean"] == result.groups[0]["mean"]["nll"] and row["runs"] == 4
    with pytest.raises(UsageError, match="groups"):
        result.to_pandas("nope")  # the error lists every table, groups among them


@pytest.mark.parametrize("fill", [None, math.nan])
def test_group_documents_with_missing_numbers_still_render(seeds, fill):
    """A hand-edited or partial group document: renderers show dashes, never crash."""
    from io import StringIO

    from rich.console import Console

    from metricdiff.render.compare_table import render_comparison

    pytest.importorskip("matplotlib")
    doc = _json(run_cli("compare", *_group_args(seeds, "main"), *_group_args(seeds, "pr"),
                        "--resamples", 0, "--cluster", "cluster", "-f", "json"))
    doc = nulled(doc, fill)
    buffer = StringIO()
    render_comparison(doc, Console(file=buffer, width=120, color_system=None))
    assert "Seed noise floor" in buffer.getvalue()
    assert "pr" in render_comparison_markdown(doc)
    assert "Seed noise floor" in render_comparison_html(doc)


def test_a_group_holding_a_copy_of_the_baseline_still_explains(seeds):
    """Found by the command-line fuzzer: a run pair with no flipped examples leaves the
    fixed/broken groups' mean NLL undefined in that pair; the mean over the other pairs is
    shown (and no crash)."""
    base = seeds / "main" / "seed0"
    result = run_cli("compare", base, f"g={base}", f"g={seeds / 'pr' / 'seed0'}",
                     "--resamples", 0, "-f", "json")
    doc = _json(result)
    fixed = next(r for r in doc["comparisons"][0]["explanation"]["nll_by_flip"]
                 if r["group"] == "fixed")
    assert fixed["baseline_nll"] is not None and fixed["count"] > 0
