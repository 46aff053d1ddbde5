"""The HTML pages: one self-contained file (nothing loaded from anywhere), one inline SVG per
plot with alt text and hover titles, the verdicts and run names in it, text from the data
escaped, nulls survived; the numbers the plots draw (the smoothed reliability curve against
relplot, the bootstrap bands' coverage by simulation, the risk-coverage curve against the
metrics, the intervals against scipy and the paired t); and, where a chromium is installed,
the page renders in a real headless browser.

Runs are written into tmp_path; expected strings come from the report dicts and the renderers'
own helpers, never copied from output.
"""

from __future__ import annotations

import copy
import html
import json
import math
import re
import shutil
import struct
import subprocess
import sys

import jsonschema
import numpy as np
import pytest

import metricdiff
from conftest import load_schema, nulled, random_logits, write_run
from metricdiff import curves, paired
from metricdiff.errors import UsageError
from metricdiff.metrics import selective_from_sums, selective_prediction, wilson_interval
from metricdiff.ranking import contribution_intervals
from metricdiff.render.common import comparison_facts, fmt_int, verdict_parts
from metricdiff.smoothece import SmoothECE, reliability_curve

N, K = 400, 12
RUN_NAMES = ["base", "cand_better", "cand<&>worse"]
ODD_CLASS = "a<b&c"
CLASS_NAMES = [f"class {c}" for c in range(K)]
CLASS_NAMES[2], CLASS_NAMES[4], CLASS_NAMES[6], CLASS_NAMES[8] = (
    ODD_CLASS, "x|y", "$5 & up", "_hidden")
SOURCES = ("web", "app", "<partner>")
SVG = '<svg role="img"'
PLOTS = ["smooth-reliability", "reliability", "risk-coverage", "confidence-histogram"]


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


def _svg_sizes(page: str) -> list[tuple[float, float]]:
    """(width, height) of each plot's viewBox, in points (72 per inch)."""
    return [(float(w), float(h)) for w, h in
            re.findall(r'<svg role="img"[^>]*viewBox="0 0 ([0-9.]+) ([0-9.]+)"', page)]


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def assert_self_contained(page: str) -> None:
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert "http://" not in page and "https://" not in page
    assert "<script" not in page.lower() and "<link" not in page.lower()
    assert "<img" not in page.lower() and "<image" not in page.lower()
    assert "@import" not in page
    # the only references are to the page's own SVG definitions
    assert set(re.findall(r"url\((.)", page)) <= {"#"}
    for attr in re.findall(r'\b(?:src|href|srcset|data|poster)\s*=\s*"([^"]*)"', page):
        assert attr.startswith("#"), attr[:60]
    # the page itself forbids loading anything but its inline styles
    csp = re.findall(r'<meta http-equiv="Content-Security-Policy" content="([^"]*)">', page)
    assert csp == ["default-src 'none'; style-src 'unsafe-inline'"]


def assert_figures_accessible(page: str) -> None:
    """Every figure is one SVG with alt text; ids are unique on the page; every hover column
    and tipped artist carries its title."""
    figures = re.findall(r'<figure class="plot"[^>]*>(.*?)</figure>', page, flags=re.S)
    assert figures and page.count("<svg") == len(figures)
    for figure in figures:
        alt = re.match(r'<svg role="img" aria-label="([^"]*)"', figure)
        assert alt and len(alt.group(1)) > 20, figure[:80]
    ids = re.findall(r'\bid="([^"]+)"', page)
    assert len(ids) == len(set(ids))
    hovered = re.findall(r'<g id="f\d+-(?:hit|tip)\d+">(<title>)?', page)
    assert hovered and all(hovered)


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


def test_comparison_has_one_svg_per_plot(comparison, comparison_page):
    pytest.importorskip("matplotlib")
    page = comparison_page
    candidates = len(comparison["comparisons"])
    kinds = re.findall(r'<figure class="plot" data-plot="([^"]+)"', page)
    # the curves and diagrams of all runs, NLL by example group, a class chart per candidate
    assert kinds[:5] == [*PLOTS, "nll-by-flip"]
    assert len(kinds) == 5 + candidates
    assert page.count(SVG) == len(kinds)
    for width, height in _svg_sizes(page):
        assert width == 504 and 288 <= height <= 576  # 7 x 4 to 8 in: readable at 100%
    assert_figures_accessible(page)


def test_plots_sit_side_by_side_where_the_window_is_wide(comparison_page):
    """One grid holds the plots (CSS only: as many columns as fit, one on a phone)."""
    pytest.importorskip("matplotlib")
    page = comparison_page
    assert page.count('<div class="plots">') == 1
    assert "grid-template-columns: repeat(auto-fill, minmax(min(100%, 560px), 1fr))" in page
    assert "max-width: 1140px" not in page and "@media print" in page


def test_hover_titles_carry_the_plotted_numbers(comparison, comparison_page):
    """The smoothed curve's hover columns list every run's value and band at a confidence,
    as the report dict has them."""
    pytest.importorskip("matplotlib")
    from metricdiff.render.common import fmt_metric
    run = comparison["runs"][0]
    point = next(p for p in run["curves"]["reliability"]["points"]
                 if p["confidence"] == 0.5 and p["accuracy"] is not None)
    expected = (f"{run['name']}: accuracy {fmt_metric(point['accuracy'])} (95% band "
                f"{fmt_metric(point['low'])} to {fmt_metric(point['high'])})")
    titles = re.findall(r'<g id="f1-hit\d+"><title>(.*?)</title>', comparison_page, flags=re.S)
    assert len(titles) == len(run["curves"]["reliability"]["points"])
    assert any(t.startswith("confidence 0.50\n") and html.escape(expected) in t
               for t in titles)


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
    tables = re.sub(r"<svg.*?</svg>", "", page, flags=re.S)
    assert tables.count("a very long class name number") == len(big["comparisons"]) * TABLE_ROWS
    # each chart's bars carry their class's name in their hover title
    titles = re.findall(r"<title>a very long class name number", page)
    assert len(titles) == len(big["comparisons"]) * PLOT_CLASSES
    for _, height in _svg_sizes(page):
        assert height <= 576


# ----------------------------------------------------------------------------- single run

def test_report_page(single):
    pytest.importorskip("matplotlib")
    page = _render_report(single)
    assert_self_contained(page)
    kinds = re.findall(r'<figure class="plot" data-plot="([^"]+)"', page)
    assert kinds == PLOTS
    assert page.count(SVG) == len(PLOTS)
    assert_figures_accessible(page)
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
    assert page.count(SVG) == page.count('<figure class="plot"')
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


# ----------------------------------------------------------------------------- plotted numbers

SHAPES = {  # confidences and the chance each is right: over-, under-, well calibrated, peaked
    "over": (lambda rng, n: rng.uniform(0.3, 1, n), lambda c: c ** 2),
    "under": (lambda rng, n: rng.uniform(0.1, 0.7, n), np.sqrt),
    "calibrated": (lambda rng, n: rng.random(n), lambda c: c),
    "peaked": (lambda rng, n: rng.uniform(0.97, 1, n), lambda c: c),
}


def _sample(shape: str, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    draw, truth = SHAPES[shape]
    conf = draw(rng, n)
    return conf, rng.random(n) < truth(conf)


@pytest.mark.parametrize("n", [30, 2000, 20_000])
@pytest.mark.parametrize("shape", list(SHAPES))
def test_smoothed_curve_matches_relplot(n, shape):
    """relplot's own diagram data (its curve without bagging, its density, its bandwidth):
    the same to float rounding wherever there are examples. Where the density is 0 both are
    0 up to the FFT's rounding (the curve is the floor-divided nothing)."""
    relplot = pytest.importorskip("relplot")
    conf, correct = _sample(shape, n, seed=n)
    reference = relplot.prepare_rel_diagram(conf, correct.astype(np.float64),
                                            plot_confidence_band=False, report_CE=False)
    _, sigma = SmoothECE(conf, correct).fit(np.ones((1, n)))
    assert sigma[0] == reference["sigma"]
    curve, density = reliability_curve(conf, correct, sigma[0], reference["mesh"])
    populated = reference["density"] * n > 1e-3
    assert populated.sum() >= 5
    np.testing.assert_allclose(curve[0][populated], reference["mu"][populated], rtol=1e-9,
                               atol=1e-10)
    np.testing.assert_allclose(curve[0][~populated], reference["mu"][~populated], atol=1e-5)
    np.testing.assert_allclose(density[0], reference["density"], rtol=1e-9, atol=1e-12)


def test_examples_pooled_by_grid_cell_give_the_same_curve():
    """The band resamples cells of the smoothing grid; the cells with their counts as weights
    give the examples' curve exactly (the grid split is linear)."""
    conf, correct = _sample("over", 5000, seed=1)
    sigma = float(SmoothECE(conf, correct).fit(np.ones((1, 5000)))[1][0])
    t = np.linspace(0, 1, 101)
    cell_conf, cell_correct, count = curves.grid_cells(conf, correct, sigma)
    assert len(count) < len(conf) and count.sum() == len(conf)
    pooled = reliability_curve(cell_conf, cell_correct, sigma, t, count[None, :])
    direct = reliability_curve(conf, correct, sigma, t)
    for a, b in zip(pooled, direct):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-13)


def _with_ties(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Confidences on a coarse grid: many ties, whose order must not matter."""
    rng = np.random.default_rng(seed)
    conf = np.round(rng.beta(5, 2, n), 2)
    return conf, rng.random(n) < conf ** 1.3


@pytest.mark.parametrize("n", [7, 480, 6000])
def test_risk_coverage_agrees_with_the_metrics(n):
    """The curve passes through risk_at_80/90/95 and ends at the error rate (the same tie
    rule); at full resolution (one step per distinct confidence) its mean over examples is
    AURC; the plotted 100 points are that curve sampled, so their mean is AURC within a
    step; each coverage's threshold keeps at least that share of the examples."""
    conf, correct = _with_ties(n, seed=n)
    metrics = selective_prediction(conf, correct)
    result = curves.risk_coverage(conf, correct)
    points = {round(p["coverage"] * 100): p for p in result["points"]}
    assert sorted(points) == list(range(1, 101))
    for c in (80, 90, 95):
        assert points[c]["risk"] == pytest.approx(metrics[f"risk_at_{c}"], rel=1e-12, abs=1e-15)
    assert points[100]["risk"] == pytest.approx(1 - correct.mean(), rel=1e-12)
    coverage, risk = curves.risk_coverage_steps(conf, correct)
    assert coverage[-1] == 1 and risk[-1] == pytest.approx(1 - correct.mean())
    assert np.sum(np.diff(coverage, prepend=0) * risk) == pytest.approx(metrics["aurc"],
                                                                        rel=1e-12)
    plotted = np.mean([p["risk"] for p in result["points"]])
    step = max(1 / 100, 1 / n)  # of coverage, between plotted points or between examples
    assert abs(plotted - metrics["aurc"]) <= step * (risk.max() - risk.min()) + 1e-12
    for p in result["points"]:
        assert np.mean(conf >= p["threshold"]) >= p["coverage"] - 1e-12
        assert np.mean(conf > p["threshold"]) < p["coverage"]


def test_risk_at_agrees_with_the_metric_on_resample_weights():
    """Rows of weighted per-group sums, as the bootstrap gives them (zeros included)."""
    conf, correct = _with_ties(800, seed=3)
    group, groups = paired.confidence_groups(conf)
    weights = np.random.default_rng(4).poisson(1.0, (6, len(conf))).astype(np.float64)
    count = np.stack([np.bincount(group, weights=w, minlength=groups) for w in weights])
    errors = np.stack([np.bincount(group, weights=w * ~correct, minlength=groups)
                       for w in weights])
    risk, _ = curves.risk_at(count, errors, np.array([0.8, 0.9, 0.95, 1.0]))
    expected = selective_from_sums(count, errors)
    for j, c in enumerate((80, 90, 95)):
        np.testing.assert_allclose(risk[:, j], expected[f"risk_at_{c}"], rtol=1e-12)
    np.testing.assert_allclose(risk[:, 3], errors.sum(axis=1) / count.sum(axis=1), rtol=1e-12)


def test_bands_hold_their_curves():
    for shape, n in (("over", 3000), ("peaked", 20_000), ("calibrated", 60)):
        conf, correct = _sample(shape, n, seed=5)
        result = curves.run_curves(conf, correct, seed=2)
        shown = [p for p in result["reliability"]["points"] if p["accuracy"] is not None]
        assert shown
        assert all(p["low"] <= p["accuracy"] <= p["high"] for p in shown)
        assert all(0 <= p["low"] <= p["risk"] <= p["high"] <= 1
                   for p in result["risk_coverage"]["points"])
        # a point is left out exactly where few examples are near it
        near = [n * p["density"] * 2 * result["reliability"]["bandwidth"]
                for p in result["reliability"]["points"]]
        assert [m >= curves.MIN_NEAR for m in near] == [p["accuracy"] is not None for p in
                                                        result["reliability"]["points"]]
        assert curves.run_curves(conf, correct, seed=2) == result  # a fixed seed


def test_bands_cover_the_truth_at_the_stated_rate():
    """Calibrated predictions, conf ~ U(0, 1) and right with chance conf: the true
    reliability curve is the diagonal, and the true risk at coverage c (keeping conf >= 1 - c)
    is c / 2. Over 200 simulated validation sets of 500 examples, the 95% pointwise bands
    hold the truth at confidences 0.25, 0.5, 0.75 and coverages 20%, 50%, 80% about as often
    as stated. Seen here: 92.3% (reliability) and 96.2% (risk), pooled over the three
    points; at 2,000 examples over 1,000 sets, 93.3% and 94.0% (with 1,000 resamples instead
    of 200, over 400 sets: 94.3% and 93.8%). A percentile bootstrap of a local mean falls a
    little short at these sizes (about 70 examples weigh in at each confidence at 500);
    choosing the bandwidth again on every resample does not fix it (93.3%, narrower bands)."""
    rng = np.random.default_rng(11)
    at, coverages = (25, 50, 75), (19, 49, 79)  # indices of 0.25.. and of 20%..
    held = {"reliability": [], "risk": []}
    for trial in range(200):
        conf = rng.random(500)
        correct = rng.random(500) < conf
        result = curves.run_curves(conf, correct, seed=trial)
        for i in at:
            p = result["reliability"]["points"][i]
            held["reliability"].append(p["low"] <= p["confidence"] <= p["high"])
        for i in coverages:
            p = result["risk_coverage"]["points"][i]
            held["risk"].append(p["low"] <= p["coverage"] / 2 <= p["high"])
    for name, hits in held.items():
        assert 0.88 <= np.mean(hits) <= 0.99, (name, np.mean(hits))


@pytest.mark.parametrize("hits,count", [(0, 1), (1, 1), (0, 40), (3, 40), (39, 40), (520, 600),
                                        (8824, 9966)])
def test_wilson_interval_matches_scipy(hits, count):
    stats = pytest.importorskip("scipy.stats")
    reference = stats.binomtest(hits, count).proportion_ci(0.95, method="wilson")
    assert wilson_interval(hits, count) == pytest.approx((reference.low, reference.high),
                                                         rel=1e-12, abs=1e-15)
    assert wilson_interval(0, 0) == (None, None)


@pytest.mark.parametrize("clustered", [False, True])
def test_contribution_intervals_are_the_paired_t_of_each_groups_share(clustered):
    """A group's contribution is the mean over all examples of its masked differences: its
    interval is the paired t interval of that mean (cluster-robust with clusters)."""
    rng = np.random.default_rng(6)
    n = 900
    diff = rng.normal(size=n) + 0.3
    keys = rng.integers(0, 5, n)
    clusters = rng.integers(0, 60, n) if clustered else None
    low, high = contribution_intervals(diff, keys, 6, 0.05, clusters)
    for k in range(5):
        expected = paired.paired_t(np.zeros(n), np.where(keys == k, diff, 0.0), 0.05, clusters)
        assert (low[k], high[k]) == pytest.approx((expected.ci_low, expected.ci_high),
                                                  rel=1e-9)
    assert (low[5], high[5]) == (0.0, 0.0)  # a group with no example contributes exactly 0


def test_new_json_fields_validate_and_are_what_the_page_draws(comparison, single):
    """The 2.1 fields in both documents: they validate, the curves hold 101 and 100 points,
    the bins their Wilson intervals, a one-run candidate its contribution intervals."""
    jsonschema.validate(single, load_schema("report"))
    jsonschema.validate(comparison, load_schema("compare"))
    assert single["schema_version"] == comparison["schema_version"] == "2.2"
    for run_curves in [single["curves"]] + [run["curves"] for run in comparison["runs"]]:
        assert len(run_curves["reliability"]["points"]) == curves.CURVE_POINTS
        assert len(run_curves["risk_coverage"]["points"]) == curves.COVERAGE_POINTS
        assert run_curves["reliability"]["resamples"] == curves.RESAMPLES
    for b in single["confidence_bins"]:
        assert (b["accuracy_low"] is None) == (b["count"] == 0)
        if b["count"]:
            assert b["accuracy_low"] <= b["accuracy"] <= b["accuracy_high"]
    for c in comparison["comparisons"]:
        rows = c["explanation"]["nll_by_flip"] + c["ranked"]["classes"]["rows"]
        assert all(r["ci_low"] <= r["contribution"] <= r["ci_high"] for r in rows)
        nll = c["deltas"]["nll"]
        assert sum(r["contribution"] for r in c["explanation"]["nll_by_flip"]) == \
            pytest.approx(nll["delta"])
    broken = copy.deepcopy(single)
    broken["curves"]["reliability"]["points"][0]["confidence"] = 2.0
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, load_schema("report"))


def test_curves_do_not_depend_on_row_order():
    """Resamples are drawn over cells of confidence, never over row positions: shuffled rows
    (another shard split, another writer) give the same curves and bands, to the rounding of
    sums taken in another order."""
    conf, correct = _with_ties(3000, seed=8)
    order = np.random.default_rng(9).permutation(len(conf))
    shuffled = curves.run_curves(conf[order], correct[order], seed=4)
    for kind, curve in curves.run_curves(conf, correct, seed=4).items():
        assert curve["points"] and len(curve["points"]) == len(shuffled[kind]["points"])
        for point, other in zip(curve["points"], shuffled[kind]["points"]):
            for key, value in point.items():
                assert value == (None if other[key] is None
                                 else pytest.approx(other[key], rel=1e-12, abs=1e-15))
        assert curve.get("bandwidth") == shuffled[kind].get("bandwidth")
