"""The command line: every sample run in every format, JSON = library, schema, files, colour."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
from typer.testing import CliRunner

import metricdiff
from conftest import load_schema
from metricdiff.cli import app

ROOT = Path(__file__).resolve().parent.parent
SAMPLE_RUNS = sorted((ROOT / "sample_runs").glob("*.parquet"))


def run_cli(*args, env=None):
    return CliRunner(env=env).invoke(app, [str(a) for a in args])


def report_schema() -> dict:
    return load_schema("report")


def test_sample_runs_exist():
    names = {p.stem for p in SAMPLE_RUNS}
    assert {"featA_hpB", "featB_hpA", "featC_hpA"} <= names
    assert sum(1 for n in names if n.startswith("digits_")) >= 2


@pytest.mark.parametrize("path", SAMPLE_RUNS, ids=lambda p: p.stem)
def test_every_sample_run_in_every_format(path):
    table = run_cli("report", path)
    assert table.exit_code == 0, table.stderr
    assert path.stem in table.stdout  # a run is named by its stem

    as_json = run_cli("report", path, "--format", "json")
    assert as_json.exit_code == 0, as_json.stderr
    document = json.loads(as_json.stdout)  # stdout is nothing but JSON
    jsonschema.validate(document, report_schema())
    assert document == metricdiff.report(str(path)).to_dict()

    markdown = run_cli("report", path, "--format", "markdown")
    assert markdown.exit_code == 0, markdown.stderr
    assert markdown.stdout.lstrip().startswith("#")


def test_json_with_slices_validates(small_run):
    result = run_cli("report", small_run[0], "--by", "source", "-f", "json")
    document = json.loads(result.stdout)
    jsonschema.validate(document, report_schema())
    assert document["slices"]["source"]["values"] == 3


def test_output_file_is_written_whole(small_run, tmp_path):
    target = tmp_path / "report.json"
    result = run_cli("report", small_run[0], "-f", "json", "-o", target)
    assert result.exit_code == 0
    assert result.stdout == ""
    assert json.loads(target.read_text())["kind"] == "report"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".metricdiff-")] == []


def test_table_to_a_pipe_has_no_colour_codes(small_run):
    result = run_cli("report", small_run[0], env={"NO_COLOR": "1"})
    assert result.exit_code == 0
    assert "\x1b[" not in result.stdout


def test_options_reach_the_library(small_run):
    document = json.loads(run_cli("report", small_run[0], "-f", "json", "--top-k", "3",
                                  "--bins", "10", "--batch-size", "16", "--worst", "4",
                                  "--class-groups", "0.4,0.9").stdout)
    assert "top3_accuracy" in document["metrics"]
    assert len(document["confidence_bins"]) == 10
    assert document["noise_floor"]["batch_size"] == 16
    assert len(document["per_class"]["rows"]) == 4
    assert document["settings"]["class_groups"] == [0.4, 0.9]


@pytest.mark.parametrize("args,fragment", [
    (["--class-groups", "0.9,0.4"], "--class-groups"),
    (["--class-groups", "half"], "--class-groups"),
    (["--bins", "0"], "--bins"),
    (["--batch-size", "0"], "--batch-size"),
])
def test_bad_option_values(small_run, args, fragment):
    result = run_cli("report", small_run[0], *args)
    assert result.exit_code == 2
    assert fragment in result.stderr


def test_version_and_help():
    assert run_cli("--version").stdout.strip() == f"metricdiff {metricdiff.__version__}"
    help_text = run_cli("report", "-h").stdout
    assert "--format" in help_text and "Examples" in help_text


def test_html_page_is_written_beside_the_normal_output(small_run, tmp_path):
    import os
    import stat

    pytest.importorskip("matplotlib")
    page = tmp_path / "report.html"
    result = run_cli("report", small_run[0], "--html", page, "-f", "json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["kind"] == "report"  # stdout unchanged
    text = page.read_text()
    assert text.lstrip().lower().startswith("<!doctype html") and '<svg role="img"' in text
    mode = stat.S_IMODE(os.stat(page).st_mode)
    assert mode & 0o044  # readable by others, like any new file (umask permitting)
    compared = tmp_path / "compare.html"
    result = run_cli("compare", small_run[0], small_run[0], "--html", compared, "--resamples",
                     "20")
    assert result.exit_code == 0, result.stderr
    assert "inconclusive" in compared.read_text()


def test_html_folder_must_exist(small_run, tmp_path):
    result = run_cli("report", small_run[0], "--html", tmp_path / "no" / "page.html")
    assert result.exit_code == 2 and "--html" in result.stderr
