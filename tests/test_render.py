"""Renderers: the terminal table and the markdown carry the report's content, survive nulls and
awkward names, and produce well-formed markdown.

The report is built here from a small random run written into tmp_path; expected strings are
computed from the report dict with the renderers' own formatting helpers, never copied from output.
"""

from __future__ import annotations

import copy
import io
import json
import math
import re

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from rich.console import Console

import metricdiff
from conftest import assert_details_well_formed, pipe_count, pipe_tables
from metricdiff.render.common import (DASH, TITLE_CALIBRATION, TITLE_CLASSES, TITLE_GROUPS,
                               TITLE_LOSS, TITLE_NOISE, TITLE_RELIABILITY, TITLE_SLICES,
                               TITLE_WARNINGS,
                               calibration_line,
                               fmt_int, fmt_metric, fmt_pct, fmt_range, fmt_span,
                               headline_grid,
                               is_missing, sections, title_line)
from metricdiff.render.markdown import MISSING, md_escape, render_report_markdown
from metricdiff.render.table import render_report

N, K = 500, 20
PIPE_CLASS = "cat|dog"
MARKUP_CLASS = "[red]fox"
SRC_VALUES = ("web", "app|beta", "batch")


@pytest.fixture
def report(tmp_path) -> dict:
    """A JSON round-tripped report of a random run: K=20, n=500, 5 row groups, a string slice
    column with a '|' value, a slice column with many values, and awkward class names."""
    rng = np.random.default_rng(7)
    labels = rng.integers(0, K, N)
    logits = rng.normal(scale=2.0, size=(N, K))
    logits[np.arange(N), labels] += 3.0 * rng.random(N)  # accuracy neither 0 nor 1
    names = [f"class {c}" for c in range(K)]
    names[3], names[5] = PIPE_CLASS, MARKUP_CLASS
    table = pa.table({
        "label": pa.array(labels, type=pa.int64()),
        "logits": pa.array(list(logits.astype(np.float32))),
        "src": pa.array([SRC_VALUES[i] for i in rng.integers(0, len(SRC_VALUES), N)]),
        "user": pa.array([f"u{i:02d}" for i in rng.integers(0, 30, N)]),
    }).replace_schema_metadata({b"metricdiff.classes": json.dumps(names).encode()})
    path = tmp_path / "run.parquet"
    pq.write_table(table, path, row_group_size=100)
    assert pq.ParquetFile(path).num_row_groups == N // 100
    result = metricdiff.report(str(path), by=["src", "user"], worst_classes=0)
    return json.loads(json.dumps(result.to_dict()))


def table_text(report: dict, width: int = 120) -> str:
    console = Console(record=True, width=width, color_system=None, file=io.StringIO())
    render_report(report, console)
    return console.export_text()


def row_of(text: str, first: str) -> str:
    """The line of a terminal table whose first cell is `first`."""
    rows = [line for line in text.splitlines()
            if line.split() and line.split()[0] == first and re.search(r"\s-?[\d—]", line)]
    assert rows, f"no row starting with {first!r}"
    return rows[0]


# ----------------------------------------------------------------------------- formatting

def test_formatting_helpers():
    assert fmt_metric(0.129) == "0.1290"
    assert fmt_metric(3.78867) == "3.7887"
    assert fmt_metric(2.5e-6) != "0.0000" and float(fmt_metric(2.5e-6)) == pytest.approx(2.5e-6)
    assert fmt_metric(2000) == "2,000"
    assert fmt_pct(0.9645) == "96.5%"
    assert fmt_pct(0.0001) == "<0.1%"
    assert fmt_pct(0.0) == "0.0%"
    for value in (None, math.nan, math.inf, "x"):
        assert is_missing(value)
        assert fmt_metric(value) == DASH and fmt_pct(value) == DASH and fmt_int(value) == DASH
        assert fmt_metric(value, MISSING) == MISSING
    assert not is_missing(0) and not is_missing(0.0)
    assert md_escape("a|b") == "a\\|b"


# ----------------------------------------------------------------------------- terminal table

def test_table_shows_title_headline_and_every_section(report):
    text = table_text(report)
    name, facts = title_line(report)
    assert name in text and facts in text
    assert f"n={fmt_int(N)}" in facts and f"K={K}" in facts
    accuracy = fmt_metric(report["metrics"]["accuracy"])
    assert accuracy in row_of(text, "accuracy")
    for metric, value in report["metrics"].items():
        if metric != "n":
            assert fmt_metric(value) in row_of(text, metric)
    assert "lower" in row_of(text, "nll") and "higher" in row_of(text, "accuracy")
    assert f"{TITLE_CALIBRATION}: {calibration_line(report).text}" in text
    titles = [s.title for s in sections(report)]
    assert TITLE_SLICES.format(column="src") in titles
    assert TITLE_SLICES.format(column="user") in titles
    for title in titles:
        assert title in text
    order = ["metric", TITLE_CALIBRATION, TITLE_LOSS, TITLE_RELIABILITY, TITLE_GROUPS,
             TITLE_CLASSES, TITLE_SLICES.format(column="src"),
             TITLE_SLICES.format(column="user"), TITLE_NOISE]
    positions = [text.index(t) for t in order]
    assert positions == sorted(positions), "headline first, then the breakdowns in order"


def test_table_breakdowns_hold_the_reports_numbers(report):
    text = table_text(report)
    floor = report["noise_floor"]
    assert (f"between two random batches of {floor['batch_size']}, loss and accuracy disagree "
            f"{fmt_pct(floor['disagree_rate'], digits=0)} of the time by chance alone") in text
    nll_row = [line for line in text.splitlines() if line.strip().startswith("NLL ")][0]
    for key in ("std", "expected_std"):
        assert fmt_metric(floor["nll"][key]) in nll_row
    assert fmt_span(floor["nll"]["p5"], floor["nll"]["p95"]) in nll_row
    for group in report["class_groups"]:
        row = row_of(text, group["group"])
        assert fmt_pct(group["nll_share"]) in row and fmt_metric(group["accuracy"]) in row
    anatomy = report["loss_anatomy"]
    assert fmt_pct(anatomy["wrong"]["nll_share"]) in row_of(text, "wrong")
    for row in report["slices"]["src"]["rows"]:
        assert row["value"] in text
    # every class is listed (worst_classes=0), names printed literally, never read as markup
    assert len(report["per_class"]["rows"]) == K
    assert MARKUP_CLASS in text and PIPE_CLASS in text


def test_table_skips_empty_bins(report):
    report = copy.deepcopy(report)
    bins = report["confidence_bins"]
    filled = [b for b in bins if b["count"]]
    emptied = filled[0]
    emptied.update(count=0, accuracy=None, mean_confidence=None, gap=None, nll_share=0.0)
    text = table_text(report)
    assert fmt_range(emptied["lower"], emptied["upper"]) not in text
    for b in filled[1:]:
        assert f"{fmt_range(b['lower'], b['upper'])}  " in text
    assert f"{sum(1 for b in bins if b['count'])} non-empty of {len(bins)} bins" in text


def test_table_colour_is_the_consoles_choice(report):
    outputs = {}
    for color_system in (None, "truecolor"):
        out = io.StringIO()
        render_report(report, Console(file=out, width=100, color_system=color_system,
                                      force_terminal=True))
        outputs[color_system] = out.getvalue()
    assert "\x1b[" not in outputs[None]
    assert "\x1b[" in outputs["truecolor"]


def test_warnings_come_last(report):
    report = copy.deepcopy(report)
    report["warnings"] = ["first [bold]odd[/] warning", "second warning"]
    text = table_text(report)
    assert TITLE_WARNINGS in text
    assert text.index(TITLE_WARNINGS) > text.index(sections(report)[-1].title)
    assert "first [bold]odd[/] warning" in text and "second warning" in text
    assert TITLE_WARNINGS in render_report_markdown(report)


# ----------------------------------------------------------------------------- markdown

def test_markdown_tables_are_well_formed(report):
    md = render_report_markdown(report)
    tables = pipe_tables(md)
    assert len(tables) >= 4 + len(report["slices"])
    for table in tables:
        header = pipe_count(table[0])
        assert re.fullmatch(r"\|(:?-+:?\|)+", table[1]), table[1]
        for line in table:
            assert pipe_count(line) == header, line
    assert md.splitlines()[0].startswith("## ")
    assert md.index("| metric |") < md.index("### "), "headline table before the sections"
    for section in sections(report, MISSING):
        assert f"### {md_escape(section.title)}" in md


def test_markdown_escapes_names_and_values(report):
    md = render_report_markdown(report)
    assert f"| {md_escape(PIPE_CLASS, line_start=False)} " in md
    assert "cat\\|dog" in md and "app\\|beta" in md
    assert not re.search(r"(?<!\\)\|dog", md) and not re.search(r"(?<!\\)\|beta", md)
    assert "\\[red\\]fox" in md


def test_markdown_details_blocks_are_balanced(report):
    md = render_report_markdown(report)
    assert_details_well_formed(md)
    opened = md.count("<details>")
    assert opened == md.count("</details>")
    # per-class and reliability always fold; a slice folds only when it has many values
    assert opened == 2 + sum(len(s["rows"]) > 10 for s in report["slices"].values())
    user_at = md.index("### " + TITLE_SLICES.format(column="user"))
    assert md.index("<details>", user_at) < md.index("| user |")
    src_table = md.index("| src |")
    assert "<details>" not in md[md.index("### " + TITLE_SLICES.format(column="src")):src_table]


def test_markdown_holds_the_same_numbers(report):
    md = render_report_markdown(report)
    for row in headline_grid(report, MISSING).rows:
        assert re.search(rf"\| `{re.escape(row[0].text)}` \| {re.escape(row[1].text)} \|", md)
    assert calibration_line(report, MISSING).text in md
    for row in report["per_class"]["rows"]:
        assert fmt_metric(row["nll"], MISSING) in md


# ----------------------------------------------------------------------------- nulls

def with_nulls(report: dict) -> dict:
    report = copy.deepcopy(report)
    for name in ("accuracy", "brier", "temperature", "nll_calibrated", "ece_calibrated"):
        report["metrics"][name] = None
        report["unavailable"][name] = f"reason for {name}"
    report["metrics"]["ece"] = math.nan
    report["loss_anatomy"]["correct"]["mean_nll"] = None
    report["loss_anatomy"]["worst_1pct_nll_share"] = None
    report["confidence_bins"][-1].update(count=None, gap=None)
    report["class_groups"][2].update(accuracy=None, nll=None, error_share=None)
    report["per_class"]["rows"][0].update(recall=None, precision=None)
    report["per_class"]["classes_seen"] = None
    report["slices"]["src"]["rows"][0].update(ece=None, overconfidence=None)
    report["noise_floor"].update(accuracy=None, nll=None, disagree_rate=None)
    report["run"]["num_classes"] = None
    return report


def test_nulls_render_as_dashes(report):
    nulled = with_nulls(report)
    text = table_text(nulled)
    assert DASH in row_of(text, "accuracy") and "reason for accuracy" in row_of(text, "accuracy")
    assert DASH in row_of(text, "ece")
    assert "no temperature fit: reason for temperature" in text
    assert DASH in row_of(text, "tail")
    assert sections(nulled)[-1].title in text
    md = render_report_markdown(nulled)
    assert re.search(rf"\| `accuracy` \| {MISSING} \|", md)
    for table in pipe_tables(md):
        assert all(pipe_count(line) == pipe_count(table[0]) for line in table)


def test_missing_sections_do_not_crash():
    bare = {"run": {"name": "bare"}, "metrics": {"accuracy": None}, "warnings": ["w"]}
    text = table_text(bare)
    assert "bare" in text and TITLE_WARNINGS in text
    md = render_report_markdown(bare)
    assert "bare" in md and md.endswith("\n")
