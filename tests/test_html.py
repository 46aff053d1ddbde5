"""The HTML pages: one self-contained file (nothing loaded from anywhere), one embedded PNG per
plot, the verdicts and run names in it, text from the data escaped, nulls survived; and, where a
chromium is installed, the page renders in a real headless browser.

Runs are written into tmp_path; expected strings come from the report dicts and the renderers'
own helpers, never copied from output.
"""

from __future__ import annotations

import base64
import copy
import html
import json
import math
import re
import shutil
import struct
import subprocess
import sys

import numpy as np
import pytest

import metricdiff
from conftest import nulled, random_logits, write_run
from metricdiff.errors import UsageError
from metricdiff.render.common import comparison_facts, fmt_int, verdict_parts

N, K = 400, 12
RUN_NAMES = ["base", "cand_better", "cand<&>worse"]
ODD_CLASS = "a<b&c"
CLASS_NAMES = [f"class {c}" for c in range(K)]
CLASS_NAMES[2], CLASS_NAMES[4], CLASS_NAMES[6], CLASS_NAMES[8] = (
    ODD_CLASS, "x|y", "$5 & up", "_hidden")
SOURCES = ("web", "app", "<partner>")
PNG = '<img src="data:image/png;base64,'


def _runs(tmp) -> tuple[list[str], list[str]]:
    """base; a candidate with more signal on the true class (better); one whose rows are
    shuffled against the labels (worse). Every run has ids, class names and a slice column."""
    logits, labels = random_logits(N, K, seed=3)
    rng = np.random.default_rng(4)
    source = [SOURCES[i] for i in rng.integers(0, len(SOURCES), N)]
    better = logits + rng.normal(scale=0.5, size=logits.shape).astype(np.float32)
    better[np.arange(N), labels] += 1.5
    worse = logits[rng.permutation(N)]
    ids = np.arange(N)
    paths = []
    for name, matrix in zip(("base", "better", "worse"), (logits, better, worse)):
        paths.append(str(write_run(tmp / f"{name}.parquet", labels, logits=matrix, ids=ids,
                                   class_names=CLASS_NAMES, extra={"source": source})))
    return paths, source


@pytest.fixture(scope="module")
def comparison(tmp_path_factory) -> dict:
    paths, _ = _runs(tmp_path_factory.mktemp("html_runs"))
    result = metricdiff.compare(*paths, names=RUN_NAMES, by=["source"], resamples=50, top=K)
    return json.loads(json.dumps(result.to_dict()))


@pytest.fixture(scope="module")
def single(tmp_path_factory) -> dict:
    paths, _ = _runs(tmp_path_factory.mktemp("html_run"))
    result = metricdiff.report(paths[0], name="run<1>", by=["source"], worst_classes=0)
    return json.loads(json.dumps(result.to_dict()))


@pytest.fixture(scope="module")
def comparison_page(comparison) -> str:
    pytest.importorskip("matplotlib")
    return _render_comparison(comparison)


def _render_comparison(report: dict) -> str:
    from metricdiff.render.html import render_comparison_html
    return render_comparison_html(report)


def _render_report(report: dict) -> str:
    from metricdiff.render.html import render_report_html
    return render_report_html(report)


def _pngs(page: str) -> list[bytes]:
    return [base64.b64decode(m) for m in
            re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)]


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def assert_self_contained(page: str) -> None:
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert "http://" not in page and "https://" not in page
    assert "<script" not in page.lower() and "<link" not in page.lower()
    assert "@import" not in page and "url(" not in page
    for attr in re.findall(r'\b(?:src|href|srcset|data|poster)\s*=\s*"([^"]*)"', page):
        assert attr.startswith("data:image/png;base64,"), attr[:60]
    # the page itself forbids loading anything but its own inline images and styles
    assert "default-src 'none'" in page


# ----------------------------------------------------------------------------- matplotlib

def test_without_matplotlib_the_error_says_how_to_install_it(monkeypatch, single, comparison):
    from metricdiff.render import html as html_module
    for name in list(sys.modules):
        if name == "matplotlib" or name.startswith("matplotlib."):
            monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    for render, report in ((html_module.render_report_html, single),
                           (html_module.render_comparison_html, comparison)):
        with pytest.raises(UsageError) as info:
            render(report)
        assert str(info.value) == ("--html needs matplotlib: pip install "
                                   "'metricdiff[plots]'")


# ----------------------------------------------------------------------------- comparison

def test_fixture_has_one_better_and_one_worse_candidate(comparison):
    decisions = [c["verdict"]["decision"] for c in comparison["comparisons"]]
    assert decisions == ["better", "worse"]


def test_comparison_page_is_self_contained(comparison_page):
    pytest.importorskip("matplotlib")
    assert_self_contained(comparison_page)


def test_comparison_has_one_png_per_plot(comparison, comparison_page):
    pytest.importorskip("matplotlib")
    page = comparison_page
    candidates = len(comparison["comparisons"])
    kinds = re.findall(r'<figure class="plot" data-plot="([^"]+)"', page)
    # reliability, confidence histogram, NLL by example group, one class chart per candidate
    assert kinds[:3] == ["reliability", "confidence-histogram", "nll-by-flip"]
    assert len(kinds) == 3 + candidates
    assert page.count(PNG) == len(kinds)
    for data in _pngs(page):
        width, height = _png_size(data)
        assert width == 770 and 400 <= height <= 800  # 7 x 4 in at 110 dpi, readable at 100%


def test_verdicts_come_first_with_coloured_decisions(comparison, comparison_page):
    pytest.importorskip("matplotlib")
    page = comparison_page
    runs_at = page.index("<h2>Runs</h2>")
    head = page[:runs_at]
    for c in comparison["comparisons"]:
        candidate, decision, reason = verdict_parts(c)
        assert f'<span class="decision {decision.style}">{decision.text}</span>' in head
        assert html.escape(candidate.text) in head
        assert html.escape(reason.text) in head
    assert 'class="decision good">better<' in head and 'class="decision bad">worse<' in head
    assert html.escape(comparison_facts(comparison)) in head
    assert "best run: </span>" in head  # the label's space is kept
    # the plots come after the runs table, the reasons after the plots
    assert runs_at < page.index("<h2>Plots</h2>") < page.index("<li>")


def test_every_run_name_is_shown_escaped(comparison, comparison_page):
    pytest.importorskip("matplotlib")
    page = comparison_page
    for name in RUN_NAMES:
        assert html.escape(name) in page
    assert "cand<&>worse" not in page


def test_reasons_and_delta_tables_are_shown(comparison, comparison_page):
    pytest.importorskip("matplotlib")
    page = comparison_page
    for c in comparison["comparisons"]:
        for reason in c["explanation"]["reasons"]:
            assert html.escape(" ".join(reason.split())) in page
    assert page.count("<th>metric</th>") >= 1 + len(comparison["comparisons"])
    assert page.count("<h3>Metric changes</h3>") == len(comparison["comparisons"])


def test_class_and_slice_names_are_escaped(comparison, comparison_page):
    pytest.importorskip("matplotlib")
    page = comparison_page
    assert html.escape(ODD_CLASS) in page  # a&lt;b&amp;c, in the ranked classes
    assert ODD_CLASS not in page
    assert "&lt;partner&gt;" in page and "<partner>" not in page
    assert "x|y" in page  # a pipe means nothing in HTML


def test_many_classes_plot_only_the_top_ranked(comparison):
    """3,000 ranked classes: the chart keeps the top 15, the table the first 100."""
    pytest.importorskip("matplotlib")
    from metricdiff.render.html import PLOT_CLASSES, TABLE_ROWS
    big = copy.deepcopy(comparison)
    rows = [{"class": i, "name": f"a very long class name number {i} <x>", "support": 3,
             "contribution": (-1) ** i / (i + 1), "baseline_recall": 0.5,
             "candidate_recall": None, "baseline_nll": 1.0, "candidate_nll": None}
            for i in range(3000)]
    for c in big["comparisons"]:
        c["ranked"]["classes"]["rows"] = rows
    page = _render_comparison(big)
    assert f"top {PLOT_CLASSES} of {fmt_int(3000)} ranked classes" in page
    assert f"{fmt_int(TABLE_ROWS)} of {fmt_int(3000)} shown" in page
    assert page.count("a very long class name number") == len(big["comparisons"]) * TABLE_ROWS
    for data in _pngs(page):
        assert _png_size(data)[1] <= 800


# ----------------------------------------------------------------------------- single run

def test_report_page(single):
    pytest.importorskip("matplotlib")
    page = _render_report(single)
    assert_self_contained(page)
    kinds = re.findall(r'<figure class="plot" data-plot="([^"]+)"', page)
    assert kinds == ["reliability", "confidence-histogram"]
    assert page.count(PNG) == 2
    assert "run&lt;1&gt;" in page and "run<1>" not in page
    for title in ("Loss anatomy", "Head / torso / tail classes", "Slices by source"):
        assert f"<h3>{title}</h3>" in page
    assert page.index("<th>metric</th>") < page.index("<h2>Plots</h2>") \
        < page.index("<h3>Loss anatomy</h3>")
    assert html.escape(ODD_CLASS) in page and ODD_CLASS not in page
    assert "&lt;partner&gt;" in page


# ----------------------------------------------------------------------------- nulls

@pytest.mark.parametrize("fill", [None, math.nan])
def test_null_heavy_dicts_do_not_crash(comparison, single, fill):
    pytest.importorskip("matplotlib")
    page = _render_comparison(nulled(comparison, fill))
    assert_self_contained(page)
    for name in RUN_NAMES:
        assert html.escape(name) in page
    assert 'class="decision good">better<' in page  # the words stay when the numbers go
    page = _render_report(nulled(single, fill))
    assert_self_contained(page)


@pytest.mark.parametrize("bare", [
    {}, {"kind": "comparison"},
    {"kind": "comparison", "runs": [{"name": "a", "confidence_bins": [{}]}],
     "comparisons": [{}], "warnings": ["w<"]},
    {"kind": "comparison", "comparisons": [{"candidate": "b", "deltas": {"nll": {}},
                                            "explanation": None, "ranked": None,
                                            "verdict": None}]},
    {"kind": "comparison", "runs": [None, {"name": "x", "confidence_bins": [
        {"lower": 0.5, "upper": 1.0, "count": 3, "accuracy": None, "mean_confidence": 0.7}]}],
     "comparisons": [{"candidate": "x", "explanation": {"nll_by_flip": [
         {"group": "fixed", "contribution": None}, {"group": "broken", "contribution": 0.1}]},
         "ranked": {"classes": {"rows": [{"name": "<c>", "contribution": 0.2}, None]}}}]},
])
def test_bare_dicts_do_not_crash(bare):
    pytest.importorskip("matplotlib")
    page = _render_comparison(bare)
    assert_self_contained(page)
    assert page.count(PNG) == page.count('<figure class="plot"')
    page = _render_report(bare)
    assert_self_contained(page)
    assert "w<" not in page


# ----------------------------------------------------------------------------- browser

@pytest.mark.skipif(shutil.which("chromium") is None, reason="no chromium installed")
def test_page_renders_in_headless_chromium(comparison_page, tmp_path):
    pytest.importorskip("matplotlib")
    page = tmp_path / "compare.html"
    page.write_text(comparison_page, encoding="utf-8")
    shot = tmp_path / "shot.png"
    profile = tmp_path / "profile"
    command = [shutil.which("chromium"), "--headless", "--no-sandbox", "--disable-gpu",
               "--disable-quic", "--no-first-run", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--hide-scrollbars",
               f"--user-data-dir={profile}", f"--screenshot={shot}",
               "--window-size=1200,3000", page.as_uri()]
    try:
        subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       timeout=120, check=False)
    except subprocess.TimeoutExpired:
        pytest.fail("chromium did not finish a screenshot within 120 s")
    assert shot.exists()
    assert shot.stat().st_size > 20_000  # a page with plots, not a blank one
    assert _png_size(shot.read_bytes()) == (1200, 3000)
