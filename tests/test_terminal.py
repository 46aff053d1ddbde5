"""The terminal: output laid out for any width, a one-screen summary, --metrics and --precision
in every format, piped output and colour, help texts, and a start-up that imports little."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from importlib import resources
from pathlib import Path

import jsonschema
import pytest
from typer.testing import CliRunner

import metricdiff
from metricdiff.cli import app, terminal_text
from metricdiff.render.common import fmt_ci, fmt_metric, fmt_signed
from metricdiff.render.format import metric_digits

ROOT = Path(__file__).resolve().parent.parent
RUNS = ROOT / "sample_runs"
FEAT = [str(RUNS / f"{name}.parquet") for name in ("featA_hpB", "featB_hpA", "featC_hpA")]
DIGITS = [str(RUNS / "digits_logreg.parquet"), str(RUNS / "digits_gnb.parquet")]
SEEDS = RUNS / "seeds"
WIDTHS = (60, 80, 120, 200)
SGR = re.compile(r"\x1b\[[0-9;]*m")


def run_cli(*args, env=None):
    return CliRunner(env=env).invoke(app, [str(a) for a in args])


def schema(kind: str) -> dict:
    name = "report" if kind == "report" else "compare"
    return json.loads(resources.files("metricdiff").joinpath(
        f"schema/{name}.schema.json").read_text())


@pytest.fixture(scope="module")
def documents() -> dict[str, dict]:
    """A report, a comparison of three single runs and one of two groups of seeds."""
    groups = {"base": [str(p) for p in sorted((SEEDS / "base").glob("seed*"))],
              "wide": [str(p) for p in sorted((SEEDS / "wide").glob("seed*"))]}
    return {"report": metricdiff.report(FEAT[2], by=["source"]).to_dict(),
            "compare": metricdiff.compare(*FEAT, by=["source"]).to_dict(),
            "groups": metricdiff.compare(groups, cluster="cluster").to_dict()}


# ----------------------------------------------------------------------------- any width

@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("kind", ["report", "compare", "groups"])
def test_every_line_fits_the_width_and_numbers_are_whole(documents, kind, width,
                                                         monkeypatch):
    monkeypatch.setenv("COLUMNS", str(width))
    document = documents[kind]
    text = terminal_text(document, to_stdout=False)
    lines = text.splitlines()
    too_long = [line for line in lines if len(line) > width]
    assert not too_long, f"{len(too_long)} lines wider than {width}: {too_long[:3]}"
    assert not [line for line in lines if line != line.rstrip()], "trailing spaces"
    if kind == "report":
        assert fmt_metric(document["metrics"]["nll"]) in text
    else:
        for comparison in document["comparisons"]:
            verdict = comparison["verdict"]
            assert fmt_signed(verdict["delta"]) in text  # the delta table, uncut
            assert fmt_ci(verdict["ci_low"], verdict["ci_high"]) in text
    if width <= 80:  # what was left out is said, with the real width
        assert f"left out to fit {width} columns" in text
    if width >= 120:  # wide enough for every column
        assert "left out to fit" not in text


@pytest.mark.parametrize("width", WIDTHS)
def test_summary_fits_the_width(documents, width, monkeypatch):
    monkeypatch.setenv("COLUMNS", str(width))
    for kind in ("compare", "groups"):
        lines = terminal_text(documents[kind], summary=True, to_stdout=False).splitlines()
        assert max(len(line) for line in lines) <= width


def test_long_compare_ends_with_the_verdicts(documents, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    lines = terminal_text(documents["compare"], to_stdout=False).splitlines()
    verdict = max(i for i, line in enumerate(lines) if line.startswith("Verdict"))
    tail = "\n".join(lines[verdict:])  # the last section
    assert not [line for line in lines[verdict + 1:] if line and not line.startswith(" ")]
    assert "featB_hpA  better" in tail and "featC_hpA  worse" in tail
    assert "best run: featB_hpA" in tail and "noise covered" in tail


def test_piped_output_has_no_trailing_spaces_and_uses_columns():
    result = run_cli("compare", *DIGITS, "--resamples", "100", env={"COLUMNS": "70"})
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines and not [line for line in lines if line != line.rstrip()]
    assert max(len(line) for line in lines) <= 70
    assert "\x1b[" not in result.stdout


def test_a_tiny_columns_is_raised_to_the_minimum():
    from metricdiff.cli import MIN_WIDTH, output_width

    os.environ["COLUMNS"] = "10"
    try:
        assert output_width(terminal=False) == MIN_WIDTH
    finally:
        del os.environ["COLUMNS"]


def test_fit_cuts_text_and_drops_columns_but_never_numbers():
    from metricdiff.render.common import Cell, Grid
    from metricdiff.render.format import fit, grid_width

    rows = [[Cell("a rather long class name number 1"), Cell("12,345"), Cell("0.123456"),
             Cell("-0.5000"), Cell("a long explanation of the row")]]
    grid = Grid(["class", "support", "value", "delta", "meaning"],
                ["left", "right", "right", "right", "left"], rows, optional=("support",))
    for width in (100, 70, 50, 40):
        fitted = fit(grid, width, gap=2)
        assert grid_width(fitted.grid, 2) <= width
        kept = dict(zip(fitted.grid.columns, fitted.grid.rows[0]))
        for header, text in (("value", "0.123456"), ("delta", "-0.5000")):
            assert kept[header].text == text  # numbers whole
    assert fit(grid, 100, 2).dropped == []
    assert fit(grid, 50, 2).dropped[0] == "support"  # the optional column goes first


# ----------------------------------------------------------------------------- --summary

def test_summary_is_one_line_per_candidate():
    result = run_cli("compare", str(RUNS / "digits_mlp.parquet"), *DIGITS, "--summary",
                     "--resamples", "100", env={"COLUMNS": "120"})
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) <= 6  # header, rule, 2 candidates, the noise line (may wrap once)
    assert sum(line.startswith(("digits_logreg ", "digits_gnb ")) for line in lines) == 2


def test_summary_says_verdict_interval_marks_and_noise():
    runs = ["base=" + str(SEEDS / "base" / "seed*") + "/", "wide=" + str(SEEDS / "wide"
                                                                         / "seed*") + "/"]
    result = run_cli("compare", *runs, "--summary", env={"COLUMNS": "100"})
    assert result.exit_code == 0, result.stderr
    document = metricdiff.compare({"base": sorted(str(p) for p in (SEEDS / "base").glob("s*")),
                                   "wide": sorted(str(p) for p in (SEEDS / "wide").glob("s*"))}
                                  ).to_dict()
    verdict = document["comparisons"][0]["verdict"]
    rows = [line for line in result.stdout.splitlines() if line.startswith("wide ")]
    assert len(rows) == 1
    row = rows[0]
    assert verdict["decision"] in row and verdict["decision"] == "better"
    assert fmt_signed(verdict["delta"]) in row
    assert fmt_ci(verdict["ci_low"], verdict["ci_high"]) in row
    assert "✓acc" in row  # accuracy also significantly better
    assert "seeds" in result.stdout.splitlines()[-1]  # the noise sources covered


def test_summary_in_markdown_and_not_json():
    result = run_cli("compare", *DIGITS, "--summary", "-f", "markdown", "--resamples", "100")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.count("| digits\\_gnb |") == 1
    refused = run_cli("compare", *DIGITS, "--summary", "-f", "json")
    assert refused.exit_code == 2 and "--summary" in refused.stderr


# ----------------------------------------------------------------------------- --metrics

CHOSEN = "nll,accuracy,ece"


def test_metrics_filter_the_terminal_report():
    result = run_cli("report", FEAT[2], "--metrics", CHOSEN, "--by", "source")
    assert result.exit_code == 0, result.stderr
    rows = {line.split()[0] for line in result.stdout.splitlines() if line.startswith("  ")
            and line.split()}
    assert {"nll", "accuracy", "ece"} <= rows
    assert not {"brier", "mce", "macro_f1", "temperature", "nll_calibrated"} & rows
    assert "Calibration:" not in result.stdout  # the temperature was left out
    after = result.stdout.split("Slices by source")[1].splitlines()
    header = next(line for line in after if line.strip().startswith("source"))
    assert "mean conf" not in header and "ECE" in header and "NLL" in header
    markdown = run_cli("report", FEAT[2], "--metrics", CHOSEN, "-f", "markdown").stdout
    assert "`ece`" in markdown and "`brier`" not in markdown and "`mce`" not in markdown


def test_metrics_filter_the_terminal_and_markdown_comparison():
    table = run_cli("compare", *DIGITS, "--metrics", CHOSEN, "--resamples", "100",
                    env={"COLUMNS": "120"})
    assert table.exit_code == 0, table.stderr
    rows = [line.split()[0] for line in table.stdout.splitlines() if line.startswith("  ")
            and line.split()]
    assert "brier" not in rows and "macro_f1" not in rows and "ece" in rows
    markdown = run_cli("compare", *DIGITS, "--metrics", CHOSEN, "-f", "markdown",
                       "--resamples", "100")
    assert markdown.exit_code == 0
    assert "`brier`" not in markdown.stdout and "`ece`" in markdown.stdout


def test_metrics_filter_json_and_stay_schema_valid():
    result = run_cli("compare", *DIGITS, "--metrics", CHOSEN, "-f", "json", "--resamples",
                     "100")
    assert result.exit_code == 0, result.stderr
    document = json.loads(result.stdout)
    jsonschema.validate(document, schema("compare"))
    assert document["settings"]["metrics"] == ["nll", "accuracy", "ece"]
    for comparison in document["comparisons"]:
        assert set(comparison["deltas"]) == {"nll", "accuracy", "ece"}
        assert comparison["verdict"]["metric"] == "nll"
    for run in document["runs"]:
        assert set(run["metrics"]) == {"n", "nll", "accuracy", "ece"}

    report = json.loads(run_cli("report", DIGITS[0], "--metrics", CHOSEN, "-f", "json").stdout)
    jsonschema.validate(report, schema("report"))
    assert report["settings"]["metrics"] == ["nll", "accuracy", "ece"]
    assert "brier" not in report["directions"]


def test_metrics_filter_the_html_page(tmp_path):
    pytest.importorskip("matplotlib")
    page = tmp_path / "page.html"
    result = run_cli("compare", *DIGITS, "--metrics", "nll,accuracy", "--html", page,
                     "-f", "json", "--resamples", "100")
    assert result.exit_code == 0, result.stderr
    text = page.read_text()
    assert ">brier<" not in text and ">accuracy<" in text


def test_the_verdict_keeps_its_primary_metric():
    result = run_cli("compare", *DIGITS, "--metrics", "accuracy", "--resamples", "100")
    assert result.exit_code == 0, result.stderr
    assert "nll rose by" in result.stdout  # the verdict on nll, the default primary
    summary = run_cli("compare", *DIGITS, "--metrics", "accuracy", "--summary",
                      "--resamples", "100")
    assert "nll change" in summary.stdout


def test_unknown_metric_is_a_usage_error():
    result = run_cli("report", DIGITS[0], "--metrics", "nll,acuracy")
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "'acuracy'" in lines[0] and "accuracy" in lines[0]
    assert "top5_accuracy" in lines[0]


# ----------------------------------------------------------------------------- --precision

def test_precision_sets_the_digits_of_metric_values():
    value = metricdiff.report(DIGITS[0]).metrics["nll"]
    for digits in (2, 7):
        result = run_cli("report", DIGITS[0], "--precision", digits)
        assert result.exit_code == 0, result.stderr
        with metric_digits(digits):
            assert fmt_metric(value) in result.stdout
        markdown = run_cli("report", DIGITS[0], "--precision", digits, "-f", "markdown")
        with metric_digits(digits):
            assert f"| {fmt_metric(value)} |" in markdown.stdout
    full = json.loads(run_cli("report", DIGITS[0], "--precision", 2, "-f", "json").stdout)
    assert full["metrics"]["nll"] == value  # JSON keeps every digit


@pytest.mark.parametrize("value", ["0", "13", "-1", "two"])
def test_precision_is_bounded(value):
    result = run_cli("report", DIGITS[0], "--precision", value)
    assert result.exit_code == 2
    assert "--precision" in result.stderr


# ----------------------------------------------------------------------------- colour, pipes

def _child(*args, env=None, **kwargs):
    environment = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "COLUMNS")}
    environment.update(env or {})
    return subprocess.run([sys.executable, "-m", "metricdiff", *map(str, args)],
                          capture_output=True, env=environment, cwd=ROOT, **kwargs)


def test_force_color_colours_a_pipe_but_sends_no_progress_or_cursor_codes():
    result = _child("report", DIGITS[0], env={"FORCE_COLOR": "1", "TERM": "xterm-256color"})
    assert result.returncode == 0, result.stderr
    out, err = result.stdout.decode(), result.stderr.decode()
    assert SGR.search(out), "FORCE_COLOR gives colour"
    for stream in (out, err):
        assert not SGR.sub("", stream).count("\x1b"), "only colour codes, no cursor movements"
        assert "\r" not in stream
    assert "reading" not in err


def test_the_progress_bar_shows_before_the_first_batch(monkeypatch):
    import io

    from metricdiff import cli

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    stream = Terminal()
    monkeypatch.setattr(sys, "stderr", stream)
    monkeypatch.setenv("TERM", "xterm")
    with cli.progress_bar() as update:
        assert update is not None
        shown = stream.getvalue()
        update("run", 10, 100)
    assert "checking runs" in shown  # while the footers are checked, before any batch


def test_no_command_prints_the_help():
    result = _child()
    assert result.returncode == 2
    assert result.stderr.decode().startswith("Usage: metricdiff [OPTIONS] COMMAND")


def test_help_then_a_closed_pipe_exits_0_quietly():
    for args in (["-h"], ["compare", "-h"], ["--version"]):
        process = subprocess.Popen([sys.executable, "-m", "metricdiff", *args], cwd=ROOT,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        process.stdout.close()  # the reader is gone before the help is written
        stderr = process.stderr.read()
        assert process.wait() == 0, (args, stderr)
        assert stderr == b""


# ----------------------------------------------------------------------------- help

@pytest.mark.parametrize("args", [["-h"], ["report", "-h"], ["compare", "-h"]])
def test_help_reads_well_at_80_columns(args):
    result = run_cli(*args, env={"COLUMNS": "80"})
    assert result.exit_code == 0
    text = result.stdout
    assert max(len(line) for line in text.splitlines()) <= 80
    for bad in ("<bool>", "<list", "<str>", "<int>", "{", "…"):
        assert bad not in text, bad
    cut = [line for line in text.splitlines()
           if line.endswith("...") and not line.endswith(("CANDIDATE...", "[ARGS]..."))]
    assert not cut, cut  # a command's help cut short
    if args[0] == "report":
        assert "metricdiff[plots]" in text and "Usage: metricdiff report [OPTIONS] RUN" in text
    if args[0] == "compare":
        assert "Usage: metricdiff compare [OPTIONS] BASELINE CANDIDATE..." in text
        for option in ("--allow-partial", "--paired-seeds", "--prob-tolerance",
                       "--class-groups", "--summary", "--metrics LIST", "--precision N"):
            assert option in text, option
        assert "--no-allow-partial" not in text


# ----------------------------------------------------------------------------- start-up

def test_version_and_help_import_no_numeric_library():
    code = ("import sys\nfrom metricdiff._entry import main\nsys.argv = ['metricdiff', '{}']\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            "heavy = [m for m in ('numpy', 'pyarrow', 'pandas', 'scipy', 'rich') "
            "if m in sys.modules]\nsys.stderr.write(repr(heavy))")
    for flag in ("--version", "-h"):
        result = subprocess.run([sys.executable, "-c", code.format(flag)], capture_output=True,
                                text=True, cwd=ROOT)
        assert result.stderr == "[]", (flag, result.stderr)
