"""Comparison renderers: the terminal view leads with the verdicts, both outputs carry the report's
numbers, survive nulls and awkward names, and the markdown is well-formed and fits GitHub.

The comparison is built here from small Parquet runs written into tmp_path; expected strings are
computed from the report dict with the renderers' own helpers, never copied from output.
"""

from __future__ import annotations

import copy
import io
import json
import re

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from rich.console import Console

import metricdiff
from conftest import assert_details_well_formed, pipe_count, pipe_tables
from metricdiff.render.common import (DASH, TITLE_DELTAS, TITLE_FLIPS, TITLE_RUNS,
                                      TITLE_WARNINGS, best_line, candidate_heading,
                                      change_cell, comparison_title,
                                      decision_cell, disagreement_line, fmt_ci, fmt_int,
                                      fmt_metric, fmt_move, fmt_p, fmt_signed, fmt_signed_pct,
                                      reason_lines, verdict_caveat, verdict_parts)
from metricdiff.render.compare_markdown import LIMIT, render_comparison_markdown
from metricdiff.render.compare_table import render_comparison
from metricdiff.render.markdown import MISSING, md_escape

N, K = 400, 10
NAMES = ["base", "cand1", "cand2"]
PIPE_CLASS = "cat|dog"
MARKUP_CLASS = "[red]fox"
SOURCES = ("web", "app", "batch")
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def write_run(path, ids, labels, logits, source, class_names=None) -> str:
    n, k = logits.shape
    table = pa.table({
        "id": pa.array(ids, type=pa.int64()),
        "label": pa.array(labels, type=pa.int64()),
        "logits": pa.FixedSizeListArray.from_arrays(pa.array(logits.astype(np.float32).ravel()),
                                                    k),
        "source": pa.array(source, type=pa.string()),
    })
    if class_names is not None:
        table = table.replace_schema_metadata(
            {b"metricdiff.classes": json.dumps(class_names).encode()})
    pq.write_table(table, path, row_group_size=128)
    return str(path)


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> dict:
    """base; cand1 = base with more signal on the true class plus noise (better); cand2 = base
    with its rows shuffled (its predictions no longer belong to the examples: clearly worse)."""
    tmp = tmp_path_factory.mktemp("runs")
    rng = np.random.default_rng(11)
    labels = rng.integers(0, K, N)
    ids = rng.permutation(N) * 3 + 1
    source = [SOURCES[i] for i in rng.integers(0, len(SOURCES), N)]
    base = rng.normal(scale=1.5, size=(N, K))
    base[np.arange(N), labels] += 2.5 * rng.random(N)
    better = base + rng.normal(scale=0.6, size=base.shape)
    better[np.arange(N), labels] += 1.5
    worse = base[rng.permutation(N)]
    names = [f"class {c}" for c in range(K)]
    names[3], names[5] = PIPE_CLASS, MARKUP_CLASS
    order = rng.permutation(N)  # the candidates' rows in another order: aligned by id
    paths = [write_run(tmp / "base.parquet", ids, labels, base, source, names),
             write_run(tmp / "cand1.parquet", ids[order], labels[order], better[order],
                       [source[i] for i in order], names),
             write_run(tmp / "cand2.parquet", ids, labels, worse, source, names)]
    result = metricdiff.compare(*paths, names=NAMES, by=["source"], resamples=200)
    return json.loads(json.dumps(result.to_dict()))


def table_text(report: dict, width: int = 120) -> str:
    console = Console(record=True, width=width, color_system=None, file=io.StringIO())
    render_comparison(report, console)
    return console.export_text()


def coloured(report: dict, color_system: str | None) -> str:
    out = io.StringIO()
    render_comparison(report, Console(file=out, width=120, color_system=color_system,
                                      force_terminal=True))
    return out.getvalue()


def block_of(text: str, comparison: dict) -> str:
    """The part of the terminal text about one candidate: from its heading line to the next
    candidate's heading line (or the end)."""
    start = text.index(candidate_heading(comparison) + ":")
    body = text.index("\n", start)
    following = re.search(r"^\S+ vs \S+: \w+ ─", text[body:], re.MULTILINE)
    return text[start:body + following.start()] if following else text[start:]


def row_of(text: str, first: str) -> str:
    """The line of a terminal table whose first cell is `first`."""
    rows = [line for line in text.splitlines() if line.strip().startswith(first + " ")]
    assert rows, f"no row starting with {first!r}"
    return rows[0]


def assert_well_formed(md: str) -> None:
    tables = pipe_tables(md)
    assert tables
    for table in tables:
        assert re.fullmatch(r"\|(:?-+:?\|)+", table[1]), table[1]
        for line in table:
            assert pipe_count(line) == pipe_count(table[0]), line
    assert_details_well_formed(md)
    assert md.endswith("\n") and "\n\n\n" not in md


# ----------------------------------------------------------------------------- the fixture

def test_fixture_has_one_better_and_one_worse_candidate(report):
    decisions = {c["candidate"]: c["verdict"]["decision"] for c in report["comparisons"]}
    assert decisions == {"cand1": "better", "cand2": "worse"}
    assert report["best"] == "cand1"
    assert {r["name"] for r in report["runs"]} == set(NAMES)


# ----------------------------------------------------------------------------- helpers

def test_shared_formatting_helpers():
    assert fmt_p(0.0004) == "<0.001" and fmt_p(0.0) == "<0.001"
    assert fmt_p(0.04213) == "0.042" and fmt_p(1.0) == "1.000"
    assert fmt_p(None) == DASH and fmt_p(float("nan"), MISSING) == MISSING
    assert fmt_signed(0.04858) == "+0.0486" and fmt_signed(-0.1877) == "-0.1877"
    assert fmt_signed(0.0) == "0.0000" and fmt_signed(None) == DASH
    assert fmt_signed_pct(0.245) == "+24.5%" and fmt_signed_pct(-0.152) == "-15.2%"
    assert fmt_ci(-0.2079, -0.1676) == "[-0.2079, -0.1676]"
    assert fmt_ci(0.0234, None) == DASH and fmt_ci(None, 1.0, MISSING) == MISSING
    assert fmt_move(0.8995, None) == f"0.8995 → {DASH}"
    assert decision_cell("better").style == "good" and decision_cell("worse").style == "bad"
    assert decision_cell("inconclusive").style == "warn" and decision_cell(None).text
    assert change_cell("worse", True).style == "bad" and change_cell("better", True).style == "good"
    assert change_cell("worse", False).style == "dim" and change_cell("up", True).style == "dim"


# ----------------------------------------------------------------------------- terminal

def test_verdicts_and_best_run_come_before_any_table(report):
    text = table_text(report)
    first_table = text.index(TITLE_RUNS)
    assert best_line(report).startswith(f"best run: {report['best']}")
    assert text.index(f"best run: {report['best']}") < first_table
    for comparison in report["comparisons"]:
        candidate, decision, _ = verdict_parts(comparison)
        line = [ln for ln in text[:first_table].splitlines()
                if ln.split()[:2] == [candidate.text, decision.text]]
        assert line, f"no verdict line for {candidate.text}"
    assert "Holm" in best_line(report)  # two candidates were tested
    wide = " ".join(table_text(report, width=400).split())
    head = wide[:wide.index(TITLE_RUNS)]
    for comparison in report["comparisons"]:
        assert verdict_parts(comparison)[2].text in head
    caveats = [verdict_caveat(c) for c in report["comparisons"]]
    assert any(caveats), "the fixture has a verdict that another metric contradicts"
    for caveat in filter(None, caveats):
        assert caveat.text in head
    assert best_line(report) in head


def test_runs_table_has_every_run_and_headline_metric(report):
    text = table_text(report)
    runs_part = text[text.index(TITLE_RUNS):text.index(candidate_heading(report["comparisons"][0]))]
    header = row_of(runs_part, "metric")
    positions = [header.index(name) for name in NAMES]
    assert positions == sorted(positions)
    for metric in ("nll", "accuracy", "top5_accuracy", "brier", "ece", "temperature",
                   "nll_calibrated"):
        row = row_of(runs_part, metric)
        cells = [fmt_metric(run["metrics"][metric]) for run in report["runs"]]
        assert row.split()[-3:] == cells, row


def test_delta_tables_hold_the_comparisons_numbers(report):
    text = table_text(report)
    for comparison in report["comparisons"]:
        block = block_of(text, comparison)
        for metric, d in comparison["deltas"].items():
            row = row_of(block, metric)
            for expected in (fmt_metric(d["baseline"]), fmt_metric(d["candidate"]),
                             fmt_signed(d["delta"]), fmt_ci(d["ci_low"], d["ci_high"]),
                             fmt_p(d["p_value"]), d["change"]):
                assert expected in row, (metric, expected, row)
        assert TITLE_FLIPS in block
        for group in comparison["explanation"]["nll_by_flip"]:
            assert fmt_signed(group["contribution"]) in block
            assert fmt_int(group["count"]) in block


def test_explanation_and_ranked_lists_are_shown(report):
    wide = table_text(report, width=400)
    flat = " ".join(wide.split())
    for comparison in report["comparisons"]:
        assert disagreement_line(comparison, report).text in flat
        for reason in reason_lines(comparison):
            assert reason in flat
        ranked = comparison["ranked"]
        for row in ranked["classes"]["rows"]:
            assert fmt_signed(row["contribution"]) in wide
        for row in ranked["slices"]["source"]["rows"]:
            assert row["value"] in wide
        assert ranked["examples"] and ranked["classes"]["rows"], "the fixture ranks something"
        for row in ranked["examples"]:
            assert str(row["id"]) in wide
            assert fmt_move(row["baseline_nll"], row["candidate_nll"]) in wide
    # class names printed literally, never read as rich markup
    assert PIPE_CLASS in wide and MARKUP_CLASS in wide


def test_colour_is_the_consoles_choice(report):
    plain = coloured(report, None)
    assert "\x1b[" not in plain
    assert "better" in plain and "worse" in plain
    colour = coloured(report, "truecolor")
    head = colour[:colour.index(TITLE_RUNS)]
    assert re.search(r"\x1b\[[0-9;]*32m(\x1b\[[0-9;]*m)*better", head), "better in green"
    assert re.search(r"\x1b\[[0-9;]*31m(\x1b\[[0-9;]*m)*worse", head), "worse in red"
    # a change word that is not significant is dim, never green or red
    cand = report["comparisons"][0]
    quiet = [m for m, d in cand["deltas"].items() if not d["significant"] and d["change"]]
    assert quiet, "the fixture has a non-significant change (temperature has no test)"
    block = colour[colour.index(TITLE_DELTAS):]  # the candidate's delta table, not the runs'
    line = [ln for ln in block.splitlines() if ANSI.sub("", ln).strip().startswith(quiet[0] + " ")]
    word = cand["deltas"][quiet[0]]["change"]
    assert re.search(rf"\x1b\[2m{word}", line[0]) and "\x1b[32m" + word not in line[0]


def test_narrow_console_leaves_columns_out_instead_of_cutting_numbers(report):
    text = table_text(report, width=80)
    assert all(len(line.rstrip()) <= 80 for line in text.splitlines())
    for comparison in report["comparisons"]:
        block = block_of(text, comparison)
        for metric, d in comparison["deltas"].items():
            row = [ln for ln in block.splitlines() if ln.strip().startswith(metric[:10])][0]
            assert fmt_p(d["p_value"]) in row and fmt_signed(d["delta"]) in row, row
            assert fmt_ci(d["ci_low"], d["ci_high"]) in row and d["change"] in row, row
        assert "left out to fit 80 columns" in block


def test_many_runs_split_the_runs_table(report):
    report = copy.deepcopy(report)
    extra = []
    for i in range(5):
        run = copy.deepcopy(report["runs"][1])
        run["name"] = f"a_rather_long_run_name_{i}"
        run["metrics"]["nll"] = 1.0 + i / 8
        extra.append(run)
    report["runs"] += extra
    text = table_text(report, width=100)
    runs_part = text[text.index(TITLE_RUNS):text.index(candidate_heading(report["comparisons"][0]))]
    assert all(len(line.rstrip()) <= 100 for line in runs_part.splitlines())
    assert runs_part.count("metric ") >= 2, "split into several tables"
    for run in report["runs"]:
        assert run["name"] in runs_part
        assert fmt_metric(run["metrics"]["nll"]) in runs_part


def test_warnings_come_last(report):
    report = copy.deepcopy(report)
    report["warnings"] = ["odd [bold]warning[/]", "second warning"]
    text = table_text(report)
    assert text.index(TITLE_WARNINGS) > text.index(candidate_heading(report["comparisons"][-1]))
    assert "odd [bold]warning[/]" in text and "second warning" in text
    colour = coloured(report, "truecolor")
    assert re.search(r"\x1b\[[0-9;]*33m! second warning", colour), "warnings in yellow"


# ----------------------------------------------------------------------------- markdown

def test_markdown_leads_with_the_verdicts(report):
    md = render_comparison_markdown(report)
    assert_well_formed(md)
    lines = md.splitlines()
    assert lines[0] == f"## metricdiff: {md_escape(comparison_title(report), line_start=False)}"
    first_table = md.index("\n|")
    for comparison in report["comparisons"]:
        candidate, decision, reason = verdict_parts(comparison)
        bullet = (f"- {md_escape(candidate.text, line_start=False)}: **{decision.text}** — "
                  f"{md_escape(reason.text, line_start=False)}")
        line = [ln for ln in lines if ln.startswith(bullet)]
        assert line and md.index(bullet) < first_table
        caveat = verdict_caveat(comparison)
        if caveat is not None:
            assert md_escape(caveat.text[1:], line_start=False) in line[0]
        assert f"### {md_escape(candidate_heading(comparison))}: {decision.text}" in lines
    assert md.index(md_escape(report["best"], line_start=False)) < first_table


def test_markdown_holds_the_numbers_and_escapes_names(report):
    md = render_comparison_markdown(report)
    for comparison in report["comparisons"]:
        nll = comparison["deltas"]["nll"]
        row = (f"| `nll` | {fmt_metric(nll['baseline'], MISSING)} | "
               f"{fmt_metric(nll['candidate'], MISSING)} | {fmt_signed(nll['delta'], MISSING)} |")
        assert row in md
        assert md_escape(fmt_ci(nll["ci_low"], nll["ci_high"], MISSING), line_start=False) in md
        for reason in reason_lines(comparison):
            assert f"- {md_escape(reason, line_start=False)}" in md
    assert "cat\\|dog" in md and not re.search(r"(?<!\\)\|dog", md)
    assert "\\[red\\]fox" in md


def test_markdown_cells_with_newlines_and_pipes_do_not_break_tables(report):
    report = copy.deepcopy(report)
    cand = report["comparisons"][0]
    cand["ranked"]["slices"]["source"]["rows"][0]["value"] = "two\nlines | and a pipe"
    cand["ranked"]["examples"][0]["label"] = "a|b\nc"
    report["runs"][1]["name"] = "weird|name"
    md = render_comparison_markdown(report)
    assert_well_formed(md)
    assert "two lines \\| and a pipe" in md and "a\\|b c" in md


# ----------------------------------------------------------------------------- nulls

def with_nulls(report: dict) -> dict:
    report = copy.deepcopy(report)
    report["best"] = None
    report["runs"][1]["metrics"]["nll"] = None
    report["alignment"]["n"] = None
    for comparison in report["comparisons"]:
        for d in comparison["deltas"].values():
            d.update(ci_low=None, ci_high=None, p_value=None, significant=None)
        comparison["deltas"]["accuracy"].update(delta=None, relative=None, change=None)
        comparison["verdict"].update(p_value=None, p_value_adjusted=None, ci_low=None,
                                     ci_high=None, delta=None, decision="inconclusive")
        explanation = comparison["explanation"]
        explanation["calibration"] = None
        explanation["disagreements"] = []
        explanation["nll_by_flip"][0].update(contribution=None, share=None, baseline_nll=None)
        ranked = comparison["ranked"]
        ranked["metrics"] = []
        ranked["classes"]["rows"] = []
        ranked["slices"] = {}
        ranked["confidence_bins"]["rows"] = []
        ranked["examples"] = []
    return report


def test_nulls_render_as_dashes(report):
    nulled = with_nulls(report)
    text = table_text(nulled)
    cand = nulled["comparisons"][0]
    block = block_of(text, cand)
    assert row_of(block, "nll").count(DASH) >= 2  # CI and p
    assert DASH in row_of(block, "accuracy")
    assert "inconclusive" in text[:text.index(TITLE_RUNS)]
    md = render_comparison_markdown(nulled)
    assert_well_formed(md)
    assert f"| {MISSING} | {MISSING} |" in md


@pytest.mark.parametrize("bare", [
    {"kind": "comparison"},
    {"kind": "comparison", "runs": [{"name": "a"}], "comparisons": [{}], "warnings": ["w"]},
    {"kind": "comparison", "comparisons": [{"candidate": "b", "deltas": {"nll": {}},
                                            "explanation": None, "ranked": None,
                                            "verdict": None}]},
])
def test_missing_sections_do_not_crash(bare):
    text = table_text(bare)
    assert "best run" in text
    md = render_comparison_markdown(bare)
    assert md.startswith("## metricdiff: ") and md.endswith("\n")


# ----------------------------------------------------------------------------- size

@pytest.fixture(scope="module")
def many_classes(tmp_path_factory) -> dict:
    """K=3,000, n=600 and ranked lists as long as they get (top=600)."""
    tmp = tmp_path_factory.mktemp("big")
    rng = np.random.default_rng(5)
    n, k = 600, 3000
    labels = rng.integers(0, k, n)
    ids = np.arange(n)
    logits = rng.normal(size=(n, k)).astype(np.float32)
    logits[np.arange(n), labels] += 4 * rng.random(n).astype(np.float32)
    source = [f"s{i}|x" for i in rng.integers(0, 200, n)]
    a = write_run(tmp / "a.parquet", ids, labels, logits, source)
    b = write_run(tmp / "b.parquet", ids, labels, logits * 1.5, source)
    result = metricdiff.compare(a, b, names=["a", "b"], by=["source"], resamples=50, top=600)
    return json.loads(json.dumps(result.to_dict()))


def test_markdown_fits_github_with_many_classes(many_classes):
    rows = len(many_classes["comparisons"][0]["ranked"]["classes"]["rows"])
    assert rows > 300, "the fixture has long ranked lists"
    md = render_comparison_markdown(many_classes)
    assert len(md) <= LIMIT < 65_536
    assert_well_formed(md)
    assert "Ranked lists are cut to their first" in md
    assert re.search(r"; [\d,]+ of " + re.escape(fmt_int(rows)) + " shown</summary>", md)
    # the head of the report is intact
    title = md_escape(comparison_title(many_classes), line_start=False)
    assert md.startswith(f"## metricdiff: {title}\n")
    table = table_text(many_classes)
    assert "best run" in table


def test_markdown_hard_limit_keeps_blocks_whole(many_classes):
    for limit in (1_500, 4_000, 9_000):
        md = render_comparison_markdown(many_classes, max_chars=limit)
        assert len(md) <= limit
        assert "truncated" in md or "cut to their first" in md
        assert md.count("<details>") == md.count("</details>")
        for table in pipe_tables(md):
            assert all(pipe_count(line) == pipe_count(table[0]) for line in table)
