"""Shared rendering: a report dict (``RunReport.to_dict()``) as terminal tables or as markdown.

Renderers only read the dict; they never compute metrics. This module is the one place that
decides how a value is written (numbers, nulls, percentages) and what each section says, as
plain strings in small grids; ``table.py`` and ``markdown.py`` only lay those grids out, so the
two outputs always carry the same content.

Any number in the dict may be null (or missing, or NaN): it is written as the renderer's
``missing`` marker, never guessed and never an error.
"""

from __future__ import annotations

import math
import numbers
import re
from dataclasses import dataclass, field
from typing import Any

from .format import digits

DASH = "—"  # the terminal's marker for an undefined value

# ----------------------------------------------------------------------------- formatting


def is_missing(value) -> bool:
    """True for None, NaN, infinities and anything that is not a number."""
    if value is None or isinstance(value, bool) or not isinstance(value, numbers.Real):
        return True
    return not isinstance(value, numbers.Integral) and not math.isfinite(value)


def number(value) -> float | None:
    """The value as a float, or None where is_missing."""
    return None if is_missing(value) else float(value)


def fmt_metric(value, missing: str = DASH) -> str:
    """A metric value with ``digits()`` decimals (4 by default, ``--precision``: 3.7887,
    0.1290); small non-zero values keep 2 significant digits (0.00014, 4.1e-05) instead of
    collapsing to 0.0001 or 0.0000 (a classwise ECE over 3,000 classes is that small);
    integers stay integers."""
    if is_missing(value):
        return missing
    if isinstance(value, numbers.Integral):
        return fmt_int(value)
    places = digits()
    if value != 0 and abs(value) < 10 ** (1 - places):
        return f"{value:.2g}"
    text = f"{value:.{places}f}"
    return text[1:] if text.startswith("-") and not text.strip("-0.") else text


def fmt_pct(share, missing: str = DASH, digits: int = 1) -> str:
    """A share in [0, 1] as a percentage: 0.9645 -> '96.5%'; a non-zero share too small for
    the precision is '<0.1%', never '0.0%'."""
    if is_missing(share):
        return missing
    floor = 0.5 * 10 ** -digits
    if 0 < abs(share) * 100 < floor:
        return f"<{10 ** -digits:.{digits}f}%" if share > 0 else f">-{10 ** -digits:.{digits}f}%"
    return f"{share * 100:.{digits}f}%"


def fmt_int(value, missing: str = DASH) -> str:
    """A count with thousands separators: 2000 -> '2,000'."""
    if is_missing(value):
        return missing
    return f"{round(value):,}"  # a mean count over runs is rounded, not cut


def fmt_temperature(value, missing: str = DASH) -> str:
    """The fitted temperature in prose: 2 decimals (T=1.97)."""
    return missing if is_missing(value) else f"{value:.2f}"


def fmt_range(lower, upper, missing: str = DASH) -> str:
    """A confidence bin: '0.07–0.13' (3 decimals once bins are narrower than 0.01)."""
    if is_missing(lower) or is_missing(upper):
        return missing
    digits = 2 if upper - lower >= 0.01 - 1e-12 else 3
    return f"{lower:.{digits}f}–{upper:.{digits}f}"


def fmt_span(low, high, missing: str = DASH) -> str:
    """Two metric values as a spread: '0.0312 – 0.2188'."""
    return f"{fmt_metric(low, missing)} – {fmt_metric(high, missing)}"


def fmt_change(before, after, missing: str = DASH) -> str:
    """'3.7887 → 3.4133 (−9.9%)': a metric before and after, with the relative change."""
    text = f"{fmt_metric(before, missing)} → {fmt_metric(after, missing)}"
    if not is_missing(before) and not is_missing(after) and before != 0:
        rel = (after - before) / abs(before)
        text += f" ({'−' if rel < 0 else '+'}{fmt_pct(abs(rel), missing)})"
    return text


# ----------------------------------------------------------------------------- content

# Short meanings for the headline table; unknown metrics fall back to the registry's text.
MEANINGS = {
    "n": "number of examples",
    "nll": "mean −log p(true class), nats",
    "accuracy": "top-1 prediction is the true class",
    "brier": "mean squared error of the probability vector",
    "ece": "mean |confidence − accuracy|, equal-width bins",
    "ece_adaptive": "ECE with equal-mass bins",
    "mce": "worst bin's |confidence − accuracy|",
    "mean_confidence": "mean top-1 probability",
    "overconfidence": "confidence − accuracy (> 0: over-confident)",
    "mean_entropy": "mean entropy of the predictions, nats",
    "balanced_accuracy": "mean recall over classes",
    "macro_f1": "unweighted mean F1 over classes",
    "temperature": "T minimising the NLL of softmax(logits / T)",
    "nll_calibrated": "NLL after dividing logits by T",
    "ece_calibrated": "ECE after dividing logits by T",
    "smooth_ece": "calibration error without bins (kernel-smoothed)",
    "rmsce_debiased": "RMS calibration error, sampling bias removed",
    "classwise_ece": "ECE of every class's probability, mean over classes",
    "brier_reliability": "Brier part from miscalibration (binned)",
    "brier_resolution": "Brier part from telling classes apart",
    "brier_uncertainty": "Brier of the label shares: fixed by the data",
    "brier_within": "Brier part from spread within bins",
    "auroc": "confidence ranks right answers above wrong ones",
    "aurc": "mean error rate over every confidence cut-off",
    "risk_at_80": "error rate of the 80% most confident",
    "risk_at_90": "error rate of the 90% most confident",
    "risk_at_95": "error rate of the 95% most confident",
}
_TOPK = re.compile(r"top(\d+)_accuracy")

# Section titles, shared so both outputs (and their tests) use the same words.
TITLE_CALIBRATION = "Calibration"
TITLE_LOSS = "Loss anatomy"
TITLE_RELIABILITY = "Reliability"
TITLE_GROUPS = "Head / torso / tail classes"
TITLE_CLASSES = "Worst classes"
TITLE_SLICES = "Slices by {column}"
TITLE_NOISE = "Mini-batch noise floor"
TITLE_WARNINGS = "Warnings"


@dataclass
class Cell:
    """A piece of finished text, with a semantic style the terminal may colour:
    "bad", "warn", "good", "dim" or "strong" (markdown ignores it)."""

    text: str
    style: str | None = None


@dataclass
class Grid:
    """A table of strings: column headers, per-column alignment and style, rows of cells."""

    columns: list[str]
    align: list[str]  # "left" or "right" per column
    rows: list[list[Cell]] = field(default_factory=list)
    column_styles: list[str | None] | None = None
    optional: tuple[str, ...] = ()  # headers a narrow console may leave out, first first


@dataclass
class Section:
    """One breakdown: a title, lines before and after, and at most one table."""

    title: str
    intro: list[Cell] = field(default_factory=list)
    grid: Grid | None = None
    outro: list[Cell] = field(default_factory=list)
    note: str = ""  # what the table holds ("10 of 50 classes seen"); markdown's <summary>
    long: bool = False  # markdown folds the grid into <details>


def _get(mapping, *keys):
    """mapping[k1][k2]... or None when any level is missing or not a dict."""
    for key in keys:
        if not isinstance(mapping, dict):
            return None
        mapping = mapping.get(key)
    return mapping


def is_shown(report: dict, name: str) -> bool:
    """True when metric ``name`` is to be shown: every metric, unless ``--metrics`` chose
    some (``settings.metrics``); the count ``n`` always."""
    chosen = _get(report, "settings", "metrics")
    return not isinstance(chosen, list) or name in chosen or name == "n"


def _cell(value) -> Cell:
    return value if isinstance(value, Cell) else Cell(str(value))


def _grid(columns: list[str], rows: list[list], styles: list[str | None] | None = None,
          optional: tuple[str, ...] = ()) -> Grid:
    """The first column is a label (left-aligned), the others are numbers (right-aligned);
    ``optional`` columns may be left out on a narrow console, first first."""
    align = ["left"] + ["right"] * (len(columns) - 1)
    return Grid(columns, align, [[_cell(v) for v in row] for row in rows], styles, optional)


def meaning(name: str) -> str:
    """The short meaning of a headline metric, for the headline table."""
    if name in MEANINGS:
        return MEANINGS[name]
    topk = _TOPK.fullmatch(name)
    if topk:
        return f"true class among the top {topk.group(1)}"
    try:  # a metric added later: the registry's (longer) text
        from ..metrics import metric_registry
        info = metric_registry().get(name)
        return info.description if info else ""
    except Exception:  # pragma: no cover - a description never stops a report
        return ""


def title_line(report: dict, missing: str = DASH) -> tuple[str, str]:
    """(run name, facts): ('x', 'n=2,000 · K=50 · logits'); the name is the file's stem unless
    one was given, as in a comparison."""
    run = report.get("run") or {}
    name = str(run.get("name") or run.get("path") or "run")
    kind = _get(run, "prediction", "kind") or "unknown predictions"
    topk = _get(run, "prediction", "topk")
    facts = [f"n={fmt_int(run.get('n'), missing)}", f"K={fmt_int(run.get('num_classes'), missing)}",
             f"top-{topk} lists" if kind == "topk" and topk else str(kind)]
    files = run.get("files") or []
    if len(files) > 1:
        facts.append(f"{len(files)} files")
    return name, " · ".join(facts)


def headline_grid(report: dict, missing: str = DASH) -> Grid:
    """metric | value | better | meaning, for every metric but n (which is in the title)."""
    metrics = report.get("metrics") or {}
    directions = report.get("directions") or {}
    unavailable = report.get("unavailable") or {}
    rows = []
    for name, value in metrics.items():
        if name == "n" or not is_shown(report, name):
            continue
        better = _direction_word(directions.get(name))
        text = meaning(name)
        if is_missing(value):
            reason = unavailable.get(name)
            text = f"n/a: {reason}" if reason else text
        rows.append([name, fmt_metric(value, missing), Cell(better), Cell(text)])
    return Grid(["metric", "value", "better", "meaning"], ["left", "right", "left", "left"],
                [[_cell(v) for v in row] for row in rows], [None, "strong", "dim", "dim"])


def calibration_line(report: dict, missing: str = DASH) -> Cell | None:
    """The temperature-scaling verdict in one plain sentence; None when ``--metrics`` left
    out the temperature."""
    if not is_shown(report, "temperature"):
        return None
    metrics: dict[str, Any] = report.get("metrics") or {}
    t = number(metrics.get("temperature"))
    nll, nll_cal = number(metrics.get("nll")), number(metrics.get("nll_calibrated"))
    ece, ece_cal = metrics.get("ece"), metrics.get("ece_calibrated")
    if t is None:
        reason = (report.get("unavailable") or {}).get("temperature")
        return Cell(f"no temperature fit{': ' + reason if reason else ''}", "dim")
    change = (f"NLL {fmt_change(nll, nll_cal, missing)} and ECE {fmt_metric(ece, missing)} → "
              f"{fmt_metric(ece_cal, missing)}")
    source = (report.get("run") or {}).get("temperature_source") or "fitted on this run"
    if source != "fitted on this run":  # a T from elsewhere: say so, and judge nothing by it
        return Cell(f"T={fmt_temperature(t)}, {source}, moves {change}")
    if 0.95 <= t <= 1.05:
        return Cell(f"well calibrated — T={fmt_temperature(t)}; temperature scaling moves "
                    f"{change}", "good")
    verdict = "over-confident" if t > 1 else "under-confident"
    verb = "would cut" if nll is not None and nll_cal is not None and nll_cal < nll \
        else "would change"
    return Cell(f"{verdict} — T={fmt_temperature(t)} {verb} {change}", "warn")


def loss_section(report: dict, missing: str = DASH) -> Section:
    anatomy: dict[str, Any] = report.get("loss_anatomy") or {}
    rows: list[list[str | Cell]] = []
    for key in ("correct", "wrong"):
        part = anatomy.get(key) or {}
        rows.append([key, fmt_int(part.get("count"), missing),
                     fmt_metric(part.get("mean_nll"), missing),
                     fmt_pct(part.get("nll_share"), missing)])
    cw: dict[str, Any] = anatomy.get("confidently_wrong") or {}
    if cw:
        threshold = cw.get("threshold")
        label = (f"wrong at confidence ≥ {threshold:g}" if not is_missing(threshold)
                 else "confidently wrong")
        count = fmt_int(cw.get("count"), missing)
        if not is_missing(cw.get("share")):
            count += f" ({fmt_pct(cw.get('share'), missing)})"
        share = number(cw.get("nll_share"))
        style = "bad" if share is not None and share >= 0.10 else None
        rows.append([label, count, "", Cell(fmt_pct(share, missing), style)])
    zero: dict[str, Any] = anatomy.get("zero_probability") or {}
    if zero.get("count"):
        rows.append([Cell("true class at probability 0", "bad"),
                     f"{fmt_int(zero['count'], missing)} ({fmt_pct(zero.get('share'), missing)})",
                     Cell("inf", "bad"), ""])
    outro = []
    w1, w10 = anatomy.get("worst_1pct_nll_share"), anatomy.get("worst_10pct_nll_share")
    if not (is_missing(w1) and is_missing(w10)):
        outro.append(Cell(f"the worst 1% of examples carry {fmt_pct(w1, missing)} of the total "
                          f"NLL, the worst 10% carry {fmt_pct(w10, missing)}"))
    return Section(TITLE_LOSS, grid=_grid(["", "examples", "mean NLL", "NLL share"], rows),
                   outro=outro)


def _gap_style(gap) -> str | None:
    if is_missing(gap):
        return None
    return "bad" if abs(gap) >= 0.15 else "warn" if abs(gap) >= 0.05 else None


def reliability_section(report: dict, missing: str = DASH) -> Section:
    bins = report.get("confidence_bins") or []
    rows = []
    for b in bins:
        if not b.get("count"):  # empty (or unknown) bins say nothing
            continue
        gap = b.get("gap")
        rows.append([fmt_range(b.get("lower"), b.get("upper"), missing),
                     fmt_int(b.get("count"), missing), fmt_metric(b.get("accuracy"), missing),
                     fmt_metric(b.get("mean_confidence"), missing),
                     Cell(fmt_metric(gap, missing), _gap_style(gap)),
                     fmt_pct(b.get("nll_share"), missing)])
    intro = [Cell("top-1 confidence in equal-width bins; gap = confidence − accuracy "
                  "(> 0: over-confident)", "dim")]
    return Section(TITLE_RELIABILITY, intro=intro,
                   grid=_grid(["confidence", "examples", "accuracy", "mean conf", "gap",
                               "NLL share"], rows, optional=("NLL share", "mean conf")),
                   note=f"{len(rows)} non-empty of {len(bins)} bins", long=True)


def groups_section(report: dict, missing: str = DASH) -> Section:
    groups = report.get("class_groups") or []
    cuts = _get(report, "settings", "class_groups")
    intro = []
    if isinstance(cuts, list) and len(cuts) == 2 and not any(is_missing(c) for c in cuts):
        intro.append(Cell(f"head: the most frequent classes up to {fmt_pct(cuts[0], missing, 0)} "
                          f"of examples; torso: up to {fmt_pct(cuts[1], missing, 0)}; tail: the "
                          "rest", "dim"))
    rows = [[str(g.get("group", "?")), fmt_int(g.get("classes"), missing),
             fmt_int(g.get("examples"), missing), fmt_pct(g.get("example_share"), missing),
             fmt_pct(g.get("predicted_share"), missing), fmt_metric(g.get("accuracy"), missing),
             fmt_metric(g.get("nll"), missing), fmt_pct(g.get("error_share"), missing),
             fmt_pct(g.get("nll_share"), missing)] for g in groups]
    return Section(TITLE_GROUPS, intro=intro,
                   grid=_grid(["group", "classes", "examples", "% examples", "% predicted",
                               "accuracy", "mean NLL", "% errors", "% NLL"], rows,
                              optional=("% errors", "% NLL", "classes", "% examples")))


def _class_label(row: dict) -> str:
    name, index = row.get("name"), row.get("class")
    if name is None:
        return str(index)
    if index is None or str(name) == str(index):
        return str(name)
    return f"{name} (#{index})"


def classes_section(report: dict, missing: str = DASH) -> Section:
    per_class = report.get("per_class") or {}
    rows_in = per_class.get("rows") or []
    seen = per_class.get("classes_seen")
    order = per_class.get("order")
    shown = (f"{len(rows_in)} of {fmt_int(seen, missing)} classes seen" if not is_missing(seen)
             else f"{len(rows_in)} classes")
    rows = []
    for r in rows_in:
        recall = r.get("recall")
        rows.append([_class_label(r), fmt_int(r.get("support"), missing),
                     fmt_int(r.get("predicted"), missing), fmt_int(r.get("errors"), missing),
                     Cell(fmt_metric(recall, missing),
                          "bad" if not is_missing(recall) and recall == 0 else None),
                     fmt_metric(r.get("precision"), missing), fmt_metric(r.get("f1"), missing),
                     fmt_metric(r.get("nll"), missing)])
    return Section(TITLE_CLASSES,
                   grid=_grid(["class", "support", "predicted", "errors", "recall", "precision",
                               "F1", "mean NLL"], rows,
                              optional=("precision", "F1", "predicted", "errors")),
                   note=f"{shown}, {order}" if order else shown, long=True)


LONG_SLICE = 10  # markdown folds slice tables with more rows than this
# The metrics of a slice table: key in the report, column header.
SLICE_METRICS = (("accuracy", "accuracy"), ("nll", "NLL"), ("ece", "ECE"),
                 ("mean_confidence", "mean conf"), ("overconfidence", "overconfidence"))


def slice_sections(report: dict, missing: str = DASH) -> list[Section]:
    sections = []
    for column, table in (report.get("slices") or {}).items():
        table = table or {}
        rows_in = table.get("rows") or []
        values, shown = table.get("values"), table.get("shown", len(rows_in))
        if not is_missing(values) and not is_missing(shown) and values > shown:
            note = f"the {fmt_int(shown)} largest of {fmt_int(values)} values"
        else:
            note = f"{fmt_int(len(rows_in))} value{'s' if len(rows_in) != 1 else ''}"
        metrics = [(key, header) for key, header in SLICE_METRICS if is_shown(report, key)]
        rows = [[str(r.get("value")), fmt_int(r.get("n"), missing),
                 *(fmt_metric(r.get(key), missing) for key, _ in metrics)] for r in rows_in]
        sections.append(Section(
            TITLE_SLICES.format(column=column),
            grid=_grid([str(column), "n", *(header for _, header in metrics)], rows,
                       optional=("overconfidence", "mean conf")),
            note=note, long=len(rows) > LONG_SLICE))
    return sections


def noise_section(report: dict, missing: str = DASH) -> Section:
    floor = report.get("noise_floor") or {}
    size = floor.get("batch_size")
    b = fmt_int(size, missing)
    title = TITLE_NOISE
    if not floor.get("accuracy") and not floor.get("nll"):
        return Section(title, intro=[Cell(f"too few rows for two batches of {b}", "dim")])
    rows = []
    for key, label in (("accuracy", "accuracy"), ("nll", "NLL")):
        if not is_shown(report, key):
            continue
        part = floor.get(key) or {}
        rows.append([label, fmt_metric(part.get("std"), missing),
                     fmt_metric(part.get("expected_std"), missing),
                     fmt_span(part.get("p5"), part.get("p95"), missing)])
    intro = [Cell(f"{fmt_int(floor.get('batches'), missing)} random batches of {b} "
                  f"(seed {floor.get('seed', missing)}); expected std: binomial for accuracy, "
                  "std/√B for NLL", "dim")]
    outro = []
    rate = floor.get("disagree_rate")
    if not is_missing(rate):
        outro.append(Cell(f"between two random batches of {b}, loss and accuracy disagree "
                          f"{fmt_pct(rate, missing, 0)} of the time by chance alone"))
    return Section(title, intro=intro,
                   grid=_grid([f"per batch of {b}", "std", "expected std", "p5 – p95"], rows),
                   outro=outro)


def sections(report: dict, missing: str = DASH) -> list[Section]:
    """The breakdowns after the headline, in reading order (warnings are separate)."""
    return [loss_section(report, missing), reliability_section(report, missing),
            groups_section(report, missing), classes_section(report, missing),
            *slice_sections(report, missing), noise_section(report, missing)]


def warnings_of(report: dict) -> list[str]:
    return [str(w) for w in (report.get("warnings") or [])]


# ============================================================================= comparisons
#
# The dict from ``ComparisonReport.to_dict()`` (``metricdiff compare``), as the same kind of
# plain-text grids and sections; ``compare_table.py`` and ``compare_markdown.py`` lay them out.

TITLE_RUNS = "Runs"
TITLE_VERDICT = "Verdict"
TITLE_GROUPS_RUNS = "Groups (mean ± seed-to-seed sd over each group's runs)"
TITLE_SEED_NOISE = "Seed noise floor: how different two runs of {group} are"
TITLE_DELTAS = "Metric changes"
TITLE_WHY = "Why the metrics disagree"
TITLE_WHY_AGREE = "Why {metric} changed"
TITLE_FLIPS = "NLL change by example group"
TITLE_WHERE = "Where the change comes from"
TITLE_RANKED_CLASSES = "Classes that moved {metric} most"
TITLE_RANKED_SLICES = "Slices by {column}"
TITLE_RANKED_BINS = "Confidence bins that moved {metric} most"
TITLE_RANKED_EXAMPLES = "Examples whose NLL rose most"

# The decision of a verdict and the semantic style it is shown in.
DECISION_STYLES = {"better": "good", "worse": "bad", "inconclusive": "warn"}
# The runs overview: the headline metrics, in this order ("topk" is top{k}_accuracy).
COMPARE_HEADLINE = ("nll", "accuracy", "topk", "brier", "ece", "temperature", "nll_calibrated")
FLIP_GROUPS = {"both_correct": "both correct", "fixed": "fixed (wrong → right)",
               "broken": "broken (right → wrong)", "both_wrong": "both wrong"}


def fmt_p(p, missing: str = DASH) -> str:
    """A p-value: '<0.001' below 0.001, else 3 decimals ('0.042')."""
    if is_missing(p):
        return missing
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def fmt_signed(value, missing: str = DASH) -> str:
    """A change of a metric, always signed: '+0.0486', '-0.1877', '0.0000'."""
    text = fmt_metric(value, missing)
    if is_missing(value) or value <= 0 or not text.strip("0."):
        return text
    return "+" + text


def fmt_signed_pct(share, missing: str = DASH) -> str:
    """A relative change or a share of a change, signed: '+24.5%', '-15.2%'."""
    text = fmt_pct(share, missing)
    return "+" + text if not is_missing(share) and share > 0 else text


def fmt_ci(low, high, missing: str = DASH) -> str:
    """A confidence interval of a change: '[-0.2079, -0.1676]'; missing when either end is."""
    if is_missing(low) or is_missing(high):
        return missing
    return f"[{fmt_signed(low, missing)}, {fmt_signed(high, missing)}]"


def fmt_move(before, after, missing: str = DASH, fmt=fmt_metric) -> str:
    """A value in the baseline and in the candidate: '0.8995 → 0.8463'."""
    return f"{fmt(before, missing)} → {fmt(after, missing)}"


def decision_cell(decision) -> Cell:
    """A verdict's decision word, styled good / bad / warn."""
    word = str(decision) if decision else "inconclusive"
    return Cell(word, DECISION_STYLES.get(word, "warn"))


def change_cell(change, significant) -> Cell:
    """The change word of a metric: coloured when a significant better/worse, dim otherwise."""
    word = str(change) if change else ""
    if significant is True and word in ("better", "worse"):
        return Cell(word, DECISION_STYLES[word])
    return Cell(word, "dim")


def contribution_style(value, higher_is_better) -> str | None:
    """'good' when a contribution moves the metric the better way, 'bad' the worse way."""
    if is_missing(value) or value == 0 or higher_is_better is None:
        return None
    return "good" if (value > 0) == bool(higher_is_better) else "bad"


def comparisons_of(report: dict) -> list[dict]:
    """The report's comparisons, one per candidate."""
    return [c for c in (report.get("comparisons") or []) if isinstance(c, dict)]


def _primary(report: dict, comparison: dict | None = None) -> str:
    return str(_get(comparison, "primary") or _get(report, "settings", "primary") or "nll")


def _baseline(report: dict) -> str:
    runs = report.get("runs") or []
    for comparison in comparisons_of(report):
        if comparison.get("baseline"):
            return str(comparison["baseline"])
    return str(_get(runs[0], "name") or "baseline") if runs else "baseline"


def _direction_word(higher_is_better) -> str:
    return {True: "higher", False: "lower"}.get(higher_is_better, "")


def verdict_parts(comparison: dict) -> list[Cell]:
    """[candidate, decision, reason] of one comparison: the verdict in three cells."""
    verdict = comparison.get("verdict") or {}
    candidate = verdict.get("candidate") or comparison.get("candidate") or "candidate"
    reason = verdict.get("reason") or "no verdict in the report"
    return [Cell(str(candidate), "strong"), decision_cell(verdict.get("decision")),
            Cell(" ".join(str(reason).split()))]


def verdict_grid(report: dict) -> Grid:
    """One verdict per candidate: candidate | decision | reason, and under it the metrics that
    contradict it (if any)."""
    rows = []
    for comparison in comparisons_of(report):
        rows.append(verdict_parts(comparison))
        caveat = verdict_caveat(comparison)
        if caveat is not None:
            rows.append([Cell(""), Cell(""), caveat])
    return Grid(["candidate", "decision", "reason"], ["left", "left", "left"], rows)


# Short names of headline metrics where a line has little room (the --summary marks).
SHORT_NAMES = {"accuracy": "acc", "nll_calibrated": "nll_cal", "balanced_accuracy": "bal_acc",
               "mean_confidence": "conf", "ece_calibrated": "ece_cal"}
MARK_BETTER, MARK_WORSE = "✓", "✗"


def significant_marks(comparison: dict, report: dict) -> str:
    """'✓brier ✓ece ✗acc ✗top5': the headline metrics (as --metrics chose them) other than the
    primary whose change is significant, ✓ better and ✗ worse; '' when none."""
    deltas = comparison.get("deltas") or {}
    primary = _primary(report, comparison)
    marks = []
    for name in compare_headline_metrics(report):
        d = deltas.get(name) or {}
        if name != primary and d.get("significant") is True and d.get("change") in DECISION_STYLES:
            mark = MARK_BETTER if d["change"] == "better" else MARK_WORSE
            short = SHORT_NAMES.get(name) or (name.replace("_accuracy", "")
                                              if _TOPK.fullmatch(name) else name)
            marks.append(mark + short)
    return " ".join(marks)


def summary_grid(report: dict, missing: str = DASH) -> Grid:
    """One line per candidate: verdict, the primary metric's change with its interval (p
    Holm-adjusted when there are several candidates), the other headline metrics that changed
    significantly. Read from the verdict, so the primary metric is there whatever --metrics
    chose. (The noise sources, the same for every candidate, are one line under it.)"""
    rows = []
    for comparison in comparisons_of(report):
        verdict = comparison.get("verdict") or {}
        candidate = verdict.get("candidate") or comparison.get("candidate") or "candidate"
        change = fmt_signed(verdict.get("delta"), missing)
        interval = fmt_ci(verdict.get("ci_low"), verdict.get("ci_high"), missing)
        p = verdict.get("p_value_adjusted", verdict.get("p_value"))
        rows.append([Cell(str(candidate), "strong"), decision_cell(verdict.get("decision")),
                     Cell(f"{change} {interval}" if interval != missing else change),
                     Cell(fmt_p(p, missing)),
                     Cell(significant_marks(comparison, report))])
    level = _get(report, "settings", "ci_level")
    ci = f"{level * 100:g}% CI" if not is_missing(level) else "CI"
    return Grid(["candidate", "verdict", f"{_primary(report)} change [{ci}]", "p",
                 "significant"], ["left", "left", "right", "right", "left"], rows,
                optional=("p",))


def comparison_title(report: dict) -> str:
    """'featB_hpA better · featC_hpA worse (vs featA_hpB, on nll)': every decision, in words."""
    parts = [f"{cells[0].text} {cells[1].text}"
             for cells in (verdict_parts(c) for c in comparisons_of(report))]
    decisions = " · ".join(parts) if parts else "no candidates"
    return f"{decisions} (vs {_baseline(report)}, on {_primary(report)})"


def best_parts(report: dict) -> list[Cell]:
    """['best run: ', run name, why]: which run is best under the primary metric, by which
    test (with the Holm note when several candidates were tested)."""
    comparisons = comparisons_of(report)
    primary = _primary(report)
    baseline = _baseline(report)
    best = str(report.get("best") or baseline)
    direction = _direction_word((report.get("directions") or {}).get(primary))
    alpha = _get(report, "settings", "alpha")
    tested = [c for c in comparisons if not is_missing(_get(c, "verdict", "p_value_adjusted"))]
    note = f"α = {alpha:g}" if not is_missing(alpha) else ""
    if len(tested) > 1:
        note += f"{', ' if note else ''}p Holm-adjusted over {len(tested)} candidates"
    note = f" ({note})" if note else ""
    on = f"{primary}, {direction} is better" if direction else primary
    if best == baseline:
        return [Cell("best run: ", "strong"), Cell(best, "strong"),
                Cell(f" (the baseline) — no candidate is significantly better on {on}{note}")]
    if sum(_get(c, "verdict", "decision") == "better" for c in comparisons) > 1:
        why = f"the largest significant improvement over {baseline} on {on}"
    else:
        why = f"significantly better than {baseline} on {on}"
    return [Cell("best run: ", "strong"), Cell(best, "good"), Cell(f" — {why}{note}")]


def best_line(report: dict) -> str:
    """The best-run line as plain text."""
    return "".join(cell.text for cell in best_parts(report))


def fail_line(report: dict) -> Cell | None:
    """A line when the --fail-on condition triggered (the CLI then exits with 1)."""
    if report.get("failed") is not True:
        return None
    fail_on = _get(report, "settings", "fail_on")
    return Cell(f"failed: a verdict matches --fail-on {fail_on}" if fail_on else "failed", "bad")


def comparison_facts(report: dict, missing: str = DASH) -> str:
    """'3 runs · 60,000 examples aligned by id · K=3,000 · logits'."""
    runs = [r for r in (report.get("runs") or []) if isinstance(r, dict)]
    alignment = report.get("alignment") or {}
    keyed = alignment.get("keyed_by")
    facts = [f"{len(runs)} run{'s' if len(runs) != 1 else ''}",
             f"{fmt_int(alignment.get('n'), missing)} examples"
             + (f" aligned by {keyed}" if keyed else "")]
    if runs:
        facts.append(f"K={fmt_int(runs[0].get('num_classes'), missing)}")
        kinds = []
        for run in runs:
            kind = _get(run, "prediction", "kind")
            if kind and kind not in kinds:
                kinds.append(str(kind))
        if kinds:
            facts.append(" / ".join(kinds))
    return " · ".join(facts)


def compare_headline_metrics(report: dict) -> list[str]:
    """The headline metrics present in the report, COMPARE_HEADLINE order, primary first."""
    known: list[str] = []
    for run in report.get("runs") or []:
        for name in (_get(run, "metrics") or {}):
            if name not in known:
                known.append(name)
    for comparison in comparisons_of(report):
        for name in (comparison.get("deltas") or {}):
            if name not in known:
                known.append(name)
    names = []
    for wanted in COMPARE_HEADLINE:
        if wanted == "topk":
            names += [n for n in known if _TOPK.fullmatch(n)]
        elif wanted in known:
            names.append(wanted)
    primary = _primary(report)
    if primary in known:
        names = [primary] + [n for n in names if n != primary]
    return [n for n in names if is_shown(report, n)]


def runs_grid(report: dict, missing: str = DASH) -> Grid:
    """metric | better | one column per run; the best value of each row in 'strong'."""
    runs = [r for r in (report.get("runs") or []) if isinstance(r, dict)]
    directions = report.get("directions") or {}
    baseline = _baseline(report)
    headers = [str(r.get("name") or r.get("path") or f"run {i}") for i, r in enumerate(runs)]
    headers = [f"{h} (baseline)" if h == baseline and i == 0 else h
               for i, h in enumerate(headers)]
    rows = []
    for name in compare_headline_metrics(report):
        values = [_get(r, "metrics", name) for r in runs]
        higher = directions.get(name)
        best = None
        if higher is not None and len(values) > 1 and not any(is_missing(v) for v in values):
            best = max(values) if higher else min(values)
        rows.append([Cell(name), Cell(_direction_word(higher), "dim")]
                    + [Cell(fmt_metric(v, missing), "strong" if v == best else None)
                       for v in values])
    return Grid(["metric", "better", *headers], ["left", "left"] + ["right"] * len(runs),
                rows, optional=("better",))


def grouped(report: dict) -> bool:
    """True when a side of the comparison holds several runs."""
    for group in report.get("groups") or []:
        size = _get(group, "size")
        if is_missing(size):  # a partial document: count the runs it lists
            size = len(_get(group, "runs") or [])
        if size > 1:
            return True
    return False


def groups_grid(report: dict, missing: str = DASH) -> Grid:
    """metric | better | one column per group: its mean ± the seed-to-seed sd."""
    groups = [g for g in (report.get("groups") or []) if isinstance(g, dict)]
    directions = report.get("directions") or {}
    headers = [f"{g.get('name')} ({fmt_int(g.get('size'))} run{'s' if g.get('size') != 1 else ''})"
               + (", baseline" if i == 0 else "") for i, g in enumerate(groups)]
    rows = []
    for name in compare_headline_metrics(report):
        cells = []
        for g in groups:
            mean, sd = _get(g, "mean", name), _get(g, "sd", name)
            text = fmt_metric(mean, missing)
            cells.append(Cell(text + (f" ± {fmt_metric(sd)}" if not is_missing(sd) else "")))
        rows.append([Cell(name), Cell(_direction_word(directions.get(name)), "dim"), *cells])
    return Grid(["metric", "better", *headers], ["left", "left"] + ["right"] * len(groups),
                rows, optional=("better",))


def noise_line(comparison: dict) -> Cell:
    """Which sources of noise the verdict's interval covers, in one short line; a comparison
    of single runs says that seed-to-seed variation was not measured, and how to measure it."""
    noise = comparison.get("noise") or ["examples"]
    unit = "clusters of examples" if "clusters" in noise else "validation examples"
    if "seeds" in noise:
        runs = comparison.get("runs") or {}
        sizes = f" ({len(runs.get('candidate') or [])} vs {len(runs.get('baseline') or [])} runs)"
        return Cell(f"noise covered: {unit} and training seeds{sizes if runs else ''}", "dim")
    return Cell(f"noise covered: {unit} only — seeds not measured (give each side several "
                "runs: NAME=RUN repeated)", "warn")


def detect_line(comparison: dict, report: dict) -> Cell | None:
    """'could detect: nll changes of 0.021 or more (80% power at α = 0.05); ...'."""
    found = comparison.get("detectable")
    if not isinstance(found, dict) or is_missing(found.get("mde")):
        return None
    primary = _primary(report, comparison)
    power, alpha = found.get("power"), found.get("alpha")
    text = f"could detect: {primary} changes of ±{fmt_metric(found['mde'])} or more"
    if not is_missing(power) and not is_missing(alpha):
        text += f" ({power:.0%} power at α = {alpha:g})"
    if _get(comparison, "verdict", "decision") == "inconclusive":
        delta = _get(comparison, "verdict", "delta")
        needs = []
        if not is_missing(found.get("clusters_needed")):
            needs.append(f"about {fmt_int(found['clusters_needed'])} clusters "
                         f"(~{fmt_int(found.get('examples_needed'))} examples)")
        elif not is_missing(found.get("examples_needed")):
            needs.append(f"about {fmt_int(found['examples_needed'])} examples")
        if not is_missing(found.get("runs_needed_per_side")):
            needs.append(f"about {fmt_int(found['runs_needed_per_side'])} runs per side")
        if not is_missing(delta) and delta:
            text += (f"; the observed {fmt_signed(delta)} would need "
                     + (" or ".join(needs) if needs else "more runs per side and more examples"))
    return Cell(text, "dim")


def cluster_line(comparison: dict) -> Cell | None:
    """'245 clusters by cluster: effective sample size 567 of 3,034 (design effect 5.4)'."""
    clusters = comparison.get("clusters")
    if not isinstance(clusters, dict):
        return None
    effect = clusters.get("design_effect")
    text = (f"{fmt_int(clusters.get('count'))} clusters by '{clusters.get('column')}': "
            f"effective sample size {fmt_int(clusters.get('effective_n'))}")
    if not is_missing(effect):
        text += f" (design effect {effect:.2f} on {clusters.get('metric')})"
    return Cell(text, "dim")


def seed_noise_section(report: dict, missing: str = DASH) -> Section | None:
    """Differences between the baseline's runs by the one-pair test, and each candidate's
    change of the primary metric against them."""
    floor = report.get("seed_noise")
    if not isinstance(floor, dict) or not floor.get("metrics"):
        return None
    primary = _primary(report)
    names = [n for n in compare_headline_metrics(report) if n in floor["metrics"]]
    rows = []
    for name in names:
        row = floor["metrics"][name]
        rows.append([Cell(name, "strong" if name == primary else None),
                     fmt_metric(row.get("mean_abs_diff"), missing),
                     fmt_metric(row.get("max_abs_diff"), missing),
                     f"{fmt_int(row.get('significant_pairs'), missing)} of "
                     f"{fmt_int(row.get('pairs'), missing)}"])
    alpha = floor.get("alpha")
    intro = [Cell(f"{fmt_int(floor.get('pairs'), missing)} pairs of {floor.get('group')} runs; "
                  "'called different' counts the pairs the one-pair test (examples only) "
                  f"finds significant at α = {alpha:g}" if not is_missing(alpha) else "", "dim")]
    outro = []
    for row in floor.get("candidates") or []:
        ratio = row.get("ratio_to_mean_seed_difference")
        size = (f"{ratio:.1f}x the mean difference between two {floor.get('group')} runs"
                if not is_missing(ratio) else "")
        beyond = ("larger than every pair" if row.get("beyond_every_seed_pair")
                  else "within the range of the pairs")
        test = ("beyond noise by the group test" if row.get("significant")
                else "not beyond noise by the group test")
        outro.append(Cell(f"{row.get('candidate')}: {primary} change "
                          f"{fmt_signed(row.get('delta'), missing)} is {size}, {beyond}; "
                          f"{test}.", "good" if row.get("significant") else "dim"))
    return Section(TITLE_SEED_NOISE.format(group=floor.get("group")), intro=intro,
                   grid=_grid(["metric", "mean |diff|", "max |diff|", "called different"],
                              rows, optional=("max |diff|",)), outro=outro)


def ci_header(report: dict) -> str:
    level = _get(report, "settings", "ci_level")
    return f"{level * 100:g}% CI" if not is_missing(level) else "CI"


def delta_grid(comparison: dict, report: dict, missing: str = DASH,
               metrics: list[str] | None = None) -> Grid:
    """metric | baseline | candidate | delta | rel. | CI | p | change, primary first; with
    ``metrics`` only those (in that order)."""
    deltas = comparison.get("deltas") or {}
    primary = _primary(report, comparison)
    if metrics is None:
        names = ([primary] if primary in deltas else []) + [n for n in deltas if n != primary]
    else:
        names = [n for n in metrics if n in deltas]
    names = [n for n in names if is_shown(report, n)]
    rows = []
    for name in names:
        d = deltas.get(name) or {}
        rows.append([Cell(name, "strong" if name == primary else None),
                     fmt_metric(d.get("baseline"), missing),
                     fmt_metric(d.get("candidate"), missing),
                     fmt_signed(d.get("delta"), missing),
                     fmt_signed_pct(d.get("relative"), missing),
                     fmt_ci(d.get("ci_low"), d.get("ci_high"), missing),
                     fmt_p(d.get("p_value"), missing),
                     change_cell(d.get("change"), d.get("significant"))])
    columns = ["metric", "baseline", "candidate", "delta", "rel.", ci_header(report), "p",
               "change"]
    return Grid(columns, ["left"] + ["right"] * 6 + ["left"],
                [[_cell(v) for v in row] for row in rows],
                optional=("rel.", "baseline", "candidate", "p"))


def methods_note(comparison: dict, report: dict) -> Cell:
    """How the p-values were computed: the most common method, then the exceptions."""
    by_method: dict[str, list[str]] = {}
    for name, d in (comparison.get("deltas") or {}).items():
        method = str(_get(d, "method") or "no test")
        by_method.setdefault(method, []).append(name)
    if not by_method:
        return Cell("", "dim")
    resamples = _get(report, "settings", "resamples")

    def label(method: str) -> str:
        if "bootstrap" in method and "resamples" not in method and not is_missing(resamples):
            return f"{method}, {fmt_int(resamples)} resamples"
        return method

    ordered = sorted(by_method.items(), key=lambda item: -len(item[1]))
    (main, _), rest = ordered[0], ordered[1:]
    text = f"p: {label(main)}"
    if rest:
        text += ", except " + " · ".join(f"{', '.join(names)} ({label(method)})"
                                          for method, names in rest)
    return Cell(text + ". Not adjusted across metrics.", "dim")


def why_title(comparison: dict, report: dict) -> str:
    if _get(comparison, "explanation", "disagreements"):
        return TITLE_WHY
    return TITLE_WHY_AGREE.format(metric=_primary(report, comparison))


def _disagreeing(comparison: dict) -> tuple[str | None, dict[str, list[str]]]:
    """(what the primary metric says, {what others say: [metrics]}) for the metrics that
    significantly contradict the primary one."""
    found = [d for d in (_get(comparison, "explanation", "disagreements") or [])
             if isinstance(d, dict)]
    primary_says = next((d.get("primary_says") for d in found if d.get("primary_says")), None)
    groups: dict[str, list[str]] = {}
    for d in found:
        groups.setdefault(str(d.get("says") or "?"), []).append(str(d.get("metric") or "?"))
    return primary_says, groups


def _say(groups: dict[str, list[str]]) -> str:
    return "; ".join(f"{', '.join(names)} say{'s' if len(names) == 1 else ''} {says}"
                     for says, names in groups.items())


def disagreement_line(comparison: dict, report: dict) -> Cell:
    """'nll says better; accuracy, top5_accuracy say worse' in one line."""
    primary = _primary(report, comparison)
    primary_says, groups = _disagreeing(comparison)
    if not groups:
        return Cell(f"no metric significantly contradicts {primary}", "dim")
    lead = f"{primary} says {primary_says}; " if primary_says else ""
    return Cell(lead + _say(groups), "warn")


def verdict_caveat(comparison: dict) -> Cell | None:
    """'but accuracy, macro_f1 say worse': the metrics that contradict a verdict, if any."""
    _, groups = _disagreeing(comparison)
    return Cell(f"but {_say(groups)}", "warn") if groups else None


def reason_lines(comparison: dict) -> list[str]:
    """The explanation's sentences, one bullet each."""
    return [" ".join(str(r).split()) for r in (_get(comparison, "explanation", "reasons") or [])
            if r is not None and str(r).strip()]


def flip_section(comparison: dict, report: dict, missing: str = DASH) -> Section | None:
    """How the change of mean NLL splits over both-correct / fixed / broken / both-wrong."""
    groups = [g for g in (_get(comparison, "explanation", "nll_by_flip") or [])
              if isinstance(g, dict)]
    if not groups:
        return None
    lower_better = (report.get("directions") or {}).get("nll", False)
    order = sorted(groups, key=lambda g: (is_missing(g.get("contribution")),
                                          -abs(g["contribution"])
                                          if not is_missing(g.get("contribution")) else 0.0))
    spreads = {str(_get(g, "group")): g for g in
               (_get(comparison, "explanation", "spread_over_pairs", "nll_by_flip") or [])
               if isinstance(g, dict)}
    pairs = comparison.get("pairs_averaged")
    rows = []
    for g in order:
        key = str(g.get("group") or "?")
        contribution = g.get("contribution")
        row = [FLIP_GROUPS.get(key, key.replace("_", " ")),
               fmt_int(g.get("count"), missing),
               fmt_metric(g.get("baseline_nll"), missing),
               fmt_metric(g.get("candidate_nll"), missing),
               Cell(fmt_signed(contribution, missing),
                    contribution_style(contribution, lower_better)),
               fmt_signed_pct(g.get("share"), missing)]
        if spreads:  # groups of runs: the spread of the contribution over run pairs
            row.append(Cell(fmt_metric(_get(spreads.get(key), "contribution"), missing),
                            "dim"))
        rows.append(row)
    nll = _get(comparison, "deltas", "nll") or {}
    if nll:
        rows.append([Cell("all examples", "strong"),
                     fmt_int(_get(report, "alignment", "n"), missing),
                     fmt_metric(nll.get("baseline"), missing),
                     fmt_metric(nll.get("candidate"), missing),
                     Cell(fmt_signed(nll.get("delta"), missing),
                          contribution_style(nll.get("delta"), lower_better)),
                     ""] + ([""] if spreads else []))
    intro = [Cell("contribution = the group's part of the change of mean NLL (the groups add "
                  "up to the total); share = contribution ÷ total change", "dim")]
    columns = ["examples", "count", "baseline NLL", "candidate NLL", "contribution", "share"]
    if spreads:
        intro.append(Cell(f"groups of runs: means over {fmt_int(pairs)} run pairs; sd = the "
                          "contribution's standard deviation over them", "dim"))
        columns.append("sd")
    return Section(TITLE_FLIPS, intro=intro, grid=_grid(
        columns, rows, optional=("share", "sd", "baseline NLL", "candidate NLL")))


def _q_cell(q, fdr, missing: str = DASH) -> Cell:
    """A q-value, strong when the class changed beyond noise at the FDR."""
    if is_missing(q):
        return Cell(missing, "dim")
    text = "<0.001" if q < 0.001 else f"{q:.3f}"
    return Cell(text, "strong" if not is_missing(fdr) and q < fdr else "dim")


def class_changes_line(comparison: dict) -> Cell | None:
    """'classes beyond noise (FDR 5%): recall 2 better, 5 worse; mean NLL 0 better, 3 worse
    (of 3,000 tested)'."""
    found = comparison.get("class_changes")
    if not isinstance(found, dict):
        return None
    fdr = found.get("fdr")
    rate = f" (FDR {fdr:.0%})" if not is_missing(fdr) else ""

    def part(name: str, label: str) -> str:
        row = found.get(name) or {}
        return (f"{label} {fmt_int(row.get('better'))} better, {fmt_int(row.get('worse'))} "
                "worse")

    worse = sum((found.get(k) or {}).get("worse") or 0 for k in ("recall", "nll"))
    return Cell(f"classes beyond noise{rate}: {part('recall', 'recall')}; "
                f"{part('nll', 'mean NLL')} (of {fmt_int(found.get('classes_tested'))} classes; "
                "q = Benjamini-Hochberg q-value)", "warn" if worse else "dim")


def _limited(rows: list, limit: int | None) -> tuple[list, str]:
    """The first ``limit`` rows and a note when rows were left out."""
    if limit is None or len(rows) <= limit:
        return rows, ""
    return rows[:limit], f"; {fmt_int(limit)} of {fmt_int(len(rows))} shown"


def ranked_sections(comparison: dict, report: dict, missing: str = DASH,
                    limit: int | None = None) -> list[Section]:
    """The ranked lists (classes, slices, confidence bins, examples), empty ones left out;
    ``limit`` caps the rows of each (the note says how many were left out)."""
    ranked = comparison.get("ranked") or {}
    directions = report.get("directions") or {}
    out = []
    rows: list[list]

    classes = ranked.get("classes") or {}
    fdr = _get(comparison, "class_changes", "fdr")
    metric = str(classes.get("metric") or _primary(report, comparison))
    higher = directions.get(metric)
    rows_in, cut = _limited([r for r in classes.get("rows") or [] if isinstance(r, dict)], limit)
    if rows_in:
        rows = [[_class_label(r), fmt_int(r.get("support"), missing),
                 Cell(fmt_signed(r.get("contribution"), missing),
                      contribution_style(r.get("contribution"), higher)),
                 fmt_move(r.get("baseline_recall"), r.get("candidate_recall"), missing),
                 _q_cell(r.get("recall_q"), fdr, missing),
                 fmt_move(r.get("baseline_nll"), r.get("candidate_nll"), missing),
                 _q_cell(r.get("nll_q"), fdr, missing)]
                for r in rows_in]
        found = class_changes_line(comparison)
        out.append(Section(TITLE_RANKED_CLASSES.format(metric=metric),
                           intro=[found] if found is not None else [],
                           grid=_grid(["class", "support", "contribution", "recall", "q",
                                       "mean NLL", "q "], rows,
                                      optional=("support", "q ", "mean NLL")),
                           note=f"by |contribution| to the change of {metric}{cut}", long=True))

    for column, table in (ranked.get("slices") or {}).items():
        table = table or {}
        metric = str(table.get("metric") or _primary(report, comparison))
        higher = directions.get(metric)
        rows_in, cut = _limited([r for r in table.get("rows") or [] if isinstance(r, dict)],
                                limit)
        if not rows_in:
            continue
        rows = [[str(r.get("value")), fmt_int(r.get("n"), missing),
                 Cell(fmt_signed(r.get("contribution"), missing),
                      contribution_style(r.get("contribution"), higher)),
                 fmt_move(r.get("baseline_accuracy"), r.get("candidate_accuracy"), missing),
                 fmt_move(r.get("baseline_nll"), r.get("candidate_nll"), missing)]
                for r in rows_in]
        out.append(Section(TITLE_RANKED_SLICES.format(column=column),
                           grid=_grid([str(column), "n", "contribution", "accuracy",
                                       "mean NLL"], rows),
                           note=f"by |contribution| to the change of {metric}{cut}",
                           long=len(rows) > LONG_SLICE or bool(cut)))

    bins = ranked.get("confidence_bins") or {}
    metric = str(bins.get("metric") or _primary(report, comparison))
    higher = directions.get(metric)
    rows_in, cut = _limited([r for r in bins.get("rows") or [] if isinstance(r, dict)], limit)
    if rows_in:
        rows = [[fmt_range(r.get("lower"), r.get("upper"), missing),
                 fmt_int(r.get("count"), missing),
                 Cell(fmt_signed(r.get("contribution"), missing),
                      contribution_style(r.get("contribution"), higher)),
                 fmt_move(r.get("baseline_accuracy"), r.get("candidate_accuracy"), missing)]
                for r in rows_in]
        grouped = bins.get("grouped_by") or "confidence"
        out.append(Section(TITLE_RANKED_BINS.format(metric=metric),
                           grid=_grid([str(grouped), "examples", "contribution", "accuracy"],
                                      rows),
                           note=f"by |contribution| to the change of {metric}{cut}",
                           long=True))

    rows_in, cut = _limited([r for r in ranked.get("examples") or [] if isinstance(r, dict)],
                            limit)
    if rows_in:
        rows = [[Cell(str(r.get("id"))), Cell(str(r.get("label"))),
                 Cell(f"{r.get('baseline_pred')} → {r.get('candidate_pred')}"),
                 Cell(fmt_move(r.get("baseline_nll"), r.get("candidate_nll"), missing)),
                 Cell(fmt_signed(r.get("nll_rise"), missing), "bad"),
                 Cell(fmt_move(r.get("baseline_conf"), r.get("candidate_conf"), missing))]
                for r in rows_in]
        out.append(Section(TITLE_RANKED_EXAMPLES,
                           grid=Grid(["id", "label", "prediction", "NLL", "rise",
                                      "confidence"],
                                     ["left", "left", "left", "right", "right", "right"], rows,
                                     optional=("confidence", "label", "NLL")),
                           note=f"largest rise of per-example NLL first{cut}", long=True))
    return out


def ranked_lengths(comparison: dict) -> int:
    """The longest ranked list of a comparison (to know how far a limit has to go)."""
    ranked = comparison.get("ranked") or {}
    sizes = [len(_get(ranked, "classes", "rows") or []),
             len(_get(ranked, "confidence_bins", "rows") or []),
             len(ranked.get("examples") or [])]
    sizes += [len((t or {}).get("rows") or []) for t in (ranked.get("slices") or {}).values()]
    return max(sizes)


def candidate_heading(comparison: dict) -> str:
    """'featB_hpA vs featA_hpB'."""
    return (f"{comparison.get('candidate') or _get(comparison, 'verdict', 'candidate') or '?'}"
            f" vs {comparison.get('baseline') or '?'}")


# ============================================================================= plots
#
# What an axis of a plot says about a metric; the HTML renderer (``html.py``) labels its axes
# with these so a chart and the tables name the same quantities the same way.

METRIC_UNITS = {"nll": "nats", "nll_calibrated": "nats", "mean_entropy": "nats",
                "brier": "squared error", "temperature": ""}


def metric_unit(name: str) -> str:
    """The unit of a metric for an axis label: 'nats' for losses and entropy, 'fraction' for
    shares (accuracy, top-k, ECE, F1, confidence), '' when unknown or unitless."""
    name = str(name)
    if name in METRIC_UNITS:
        return METRIC_UNITS[name]
    if _TOPK.fullmatch(name) or name in MEANINGS:
        return "fraction"
    return ""


def short_label(text, width: int = 32) -> str:
    """A label of at most ``width`` characters for a plot axis or legend (tables keep it
    whole): the middle is cut to '…', so the end that tells similar names apart stays
    ('a very long class…number 14 (#14)')."""
    text = " ".join(str(text).split())
    if len(text) <= width:
        return text
    tail = max(1, (width - 1) * 2 // 5)
    head = max(1, width - 1 - tail)
    return text[:head].rstrip() + "…" + text[len(text) - tail:].lstrip()
