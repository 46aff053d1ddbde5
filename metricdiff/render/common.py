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

DASH = "—"  # the terminal's marker for an undefined value

# ----------------------------------------------------------------------------- formatting


def is_missing(value) -> bool:
    """True for None, NaN, infinities and anything that is not a number."""
    if value is None or isinstance(value, bool) or not isinstance(value, numbers.Real):
        return True
    return not isinstance(value, numbers.Integral) and not math.isfinite(value)


def fmt_metric(value, missing: str = DASH) -> str:
    """A metric value: 4 decimals (3.7887, 0.1290); tiny non-zero values keep 3 significant
    digits (4.12e-05) instead of collapsing to 0.0000; integers stay integers."""
    if is_missing(value):
        return missing
    if isinstance(value, numbers.Integral):
        return fmt_int(value)
    if value != 0 and abs(value) < 5e-5:
        return f"{value:.3g}"
    text = f"{value:.4f}"
    return "0.0000" if text == "-0.0000" else text


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
    return f"{int(value):,}"


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


def _cell(value) -> Cell:
    return value if isinstance(value, Cell) else Cell(str(value))


def _grid(columns: list[str], rows: list[list], styles: list[str | None] | None = None) -> Grid:
    """The first column is a label (left-aligned), the others are numbers (right-aligned)."""
    align = ["left"] + ["right"] * (len(columns) - 1)
    return Grid(columns, align, [[_cell(v) for v in row] for row in rows], styles)


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
    """(run name, facts): ('/tmp/x.parquet', 'n=2,000 · K=50 · logits')."""
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
        if name == "n":
            continue
        better = {True: "higher", False: "lower"}.get(directions.get(name), "")
        text = meaning(name)
        if is_missing(value):
            reason = unavailable.get(name)
            text = f"n/a: {reason}" if reason else text
        rows.append([name, fmt_metric(value, missing), Cell(better), Cell(text)])
    return Grid(["metric", "value", "better", "meaning"], ["left", "right", "left", "left"],
                [[_cell(v) for v in row] for row in rows], [None, "strong", "dim", "dim"])


def calibration_line(report: dict, missing: str = DASH) -> Cell:
    """The temperature-scaling verdict in one plain sentence."""
    metrics = report.get("metrics") or {}
    t = metrics.get("temperature")
    nll, nll_cal = metrics.get("nll"), metrics.get("nll_calibrated")
    ece, ece_cal = metrics.get("ece"), metrics.get("ece_calibrated")
    if is_missing(t):
        reason = (report.get("unavailable") or {}).get("temperature")
        return Cell(f"no temperature fit{': ' + reason if reason else ''}", "dim")
    change = (f"NLL {fmt_change(nll, nll_cal, missing)} and ECE {fmt_metric(ece, missing)} → "
              f"{fmt_metric(ece_cal, missing)}")
    if 0.95 <= t <= 1.05:
        return Cell(f"well calibrated — T={fmt_temperature(t)}; temperature scaling moves "
                    f"{change}", "good")
    verdict = "over-confident" if t > 1 else "under-confident"
    verb = "would cut" if not is_missing(nll) and not is_missing(nll_cal) and nll_cal < nll \
        else "would change"
    return Cell(f"{verdict} — T={fmt_temperature(t)} {verb} {change}", "warn")


def loss_section(report: dict, missing: str = DASH) -> Section:
    anatomy = report.get("loss_anatomy") or {}
    rows = []
    for key in ("correct", "wrong"):
        part = anatomy.get(key) or {}
        rows.append([key, fmt_int(part.get("count"), missing),
                     fmt_metric(part.get("mean_nll"), missing),
                     fmt_pct(part.get("nll_share"), missing)])
    cw = anatomy.get("confidently_wrong") or {}
    if cw:
        threshold = cw.get("threshold")
        label = (f"wrong at confidence ≥ {threshold:g}" if not is_missing(threshold)
                 else "confidently wrong")
        count = fmt_int(cw.get("count"), missing)
        if not is_missing(cw.get("share")):
            count += f" ({fmt_pct(cw.get('share'), missing)})"
        share = cw.get("nll_share")
        style = "bad" if not is_missing(share) and share >= 0.10 else None
        rows.append([label, count, "", Cell(fmt_pct(share, missing), style)])
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
                               "NLL share"], rows),
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
                               "accuracy", "mean NLL", "% errors", "% NLL"], rows))


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
                               "F1", "mean NLL"], rows),
                   note=f"{shown}, {order}" if order else shown, long=True)


LONG_SLICE = 10  # markdown folds slice tables with more rows than this


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
        rows = [[str(r.get("value")), fmt_int(r.get("n"), missing),
                 fmt_metric(r.get("accuracy"), missing), fmt_metric(r.get("nll"), missing),
                 fmt_metric(r.get("ece"), missing), fmt_metric(r.get("mean_confidence"), missing),
                 fmt_metric(r.get("overconfidence"), missing)] for r in rows_in]
        sections.append(Section(
            TITLE_SLICES.format(column=column),
            grid=_grid([str(column), "n", "accuracy", "NLL", "ECE", "mean conf",
                        "overconfidence"], rows),
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
