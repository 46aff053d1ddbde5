"""What a series document (``SeriesReport.to_dict()``) says, as plain-text lines and grids:
the terminal, markdown and HTML views lay out these same sections, so they carry the same words
and numbers. Renderers only read the document; any number in it may be null.
"""

from __future__ import annotations

from .common import (DASH, MARK_BETTER, MARK_WORSE, SHORT_NAMES, Cell, Grid, Section, _get,
                     decision_cell, fmt_ci, fmt_int, fmt_metric, fmt_p, fmt_signed, is_missing)

SERIES_METRICS = ("nll", "accuracy", "ece", "temperature", "nll_calibrated")
TESTED = ("nll", "accuracy", "nll_calibrated")
DIAGNOSIS_STYLES = {"no gap": "good", "over-confidence growing": "warn",
                    "under-confidence growing": "warn", "real degradation": "bad",
                    "accuracy peaks first": "warn", "undetermined": "dim"}
TITLE_VERDICTS = "Verdicts per checkpoint"
TITLE_CHECKPOINTS = "Checkpoints"
TITLE_ANSWER = "Answer"


def series_of(document: dict) -> list[dict]:
    return [s for s in document.get("series") or [] if isinstance(s, dict)]


def _checkpoints(entry: dict) -> list[dict]:
    return [c for c in entry.get("checkpoints") or [] if isinstance(c, dict)]


def facts_line(document: dict, missing: str = DASH) -> str:
    """'wide · 20 checkpoints · 2,500 examples aligned by id · K=4 · logits'."""
    entries = series_of(document)
    alignment = document.get("alignment") or {}
    names = " vs ".join(str(e.get("name")) for e in entries) or "no series"
    counts = {len(_checkpoints(e)) for e in entries}
    each = " each" if len(entries) > 1 and len(counts) == 1 else ""
    count = f"{counts.pop()} checkpoints{each}" if len(counts) == 1 else "checkpoints"
    keyed = alignment.get("keyed_by")
    parts = [names, count, f"{fmt_int(alignment.get('n'), missing)} examples"
             + (f" aligned by {keyed}" if keyed else ""),
             f"K={fmt_int(alignment.get('num_classes'), missing)}"]
    if alignment.get("prediction"):
        parts.append(str(alignment["prediction"]))
    return " · ".join(parts)


def answer_lines(document: dict) -> list[Cell]:
    """The answer, first and last: per series where NLL and accuracy are best, the diagnosis
    of the gap and what changed from the lowest NLL to the last checkpoint; for two series
    the tally of the verdicts, and --fail-on."""
    lines = []
    comparison = document.get("comparison")
    if isinstance(comparison, dict):
        lines.append(Cell(tally_line(comparison, document), "strong"))
    for entry in series_of(document):
        sentences = [str(s) for s in entry.get("sentences") or []]
        diagnosis = entry.get("diagnosis") or {}
        prefix = f"{entry.get('name')}: " if len(series_of(document)) > 1 else ""
        if sentences:
            lines.append(Cell(prefix + sentences[0]))
        if diagnosis.get("sentence"):
            lines.append(Cell(f"{prefix}diagnosis: {diagnosis['sentence']}",
                              DIAGNOSIS_STYLES.get(str(diagnosis.get("kind")))))
        for span in entry.get("spans") or []:  # what training did after the lowest NLL
            if isinstance(span, dict) and span.get("kind") == "after_lowest_nll":
                lines.append(Cell(f"{prefix}after the lowest NLL: {span.get('sentence')}"))
    if document.get("failed") is True:
        fail_on = _get(document, "settings", "fail_on")
        lines.append(Cell(f"--fail-on {fail_on} triggered: exit code 1", "bad"))
    return lines


def tally_line(comparison: dict, document: dict) -> str:
    """'narrow vs wide on nll: better at 3 checkpoints, worse at 12, inconclusive at 5 (α =
    0.05, p Holm-adjusted over 20 checkpoints)'."""
    counts = comparison.get("decisions") or {}
    alpha = _get(document, "settings", "alpha")
    parts = [f"{word} at {counts.get(word, 0)}" for word in ("better", "worse", "inconclusive")]
    level = f"α = {alpha:g}, " if not is_missing(alpha) else ""
    return (f"{comparison.get('candidate')} vs {comparison.get('baseline')} on "
            f"{comparison.get('primary')}: {', '.join(parts)} of "
            f"{len(comparison.get('checkpoints') or [])} checkpoints ({level}p Holm-adjusted "
            f"over {comparison.get('holm_over')} checkpoints)")


def _best_marks(entry: dict, index) -> str:
    best = entry.get("best") or {}
    marks = [label for key, label in (("nll", "nll"), ("accuracy", "acc"))
             if _get(best, key, "index") == index]
    return "+".join(marks)


def checkpoint_grid(entry: dict, missing: str = DASH) -> Grid:
    """checkpoint | nll | accuracy | ece | temperature | nll_calibrated | best: one row per
    checkpoint; 'best' marks the lowest NLL and the highest accuracy."""
    rows = []
    for c in _checkpoints(entry):
        metrics = c.get("metrics") or {}
        marks = _best_marks(entry, c.get("index"))
        rows.append([Cell(str(c.get("name")))]
                    + [Cell(fmt_metric(metrics.get(m), missing)) for m in SERIES_METRICS]
                    + [Cell(marks, "strong" if marks else None)])
    return Grid(["checkpoint", *SERIES_METRICS, "best"], ["left"] + ["right"] * 5 + ["left"],
                rows)


def _span_title(entry: dict, span: dict) -> str:
    best = entry.get("best") or {}
    checkpoints = _checkpoints(entry)

    def role(index) -> str:
        roles = [what for key, what in (("nll", "lowest NLL"), ("accuracy", "highest accuracy"))
                 if _get(best, key, "index") == index]
        if checkpoints and index == len(checkpoints) - 1:
            roles.append("last")
        name = checkpoints[index].get("name") if isinstance(index, int) and 0 <= index < len(
            checkpoints) else "?"
        return f"{name} ({', '.join(roles)})" if roles else str(name)

    return f"{role(span.get('from'))} → {role(span.get('to'))}"


def span_grid(span: dict, missing: str = DASH, ci: str = "CI") -> Grid:
    """metric | from | to | change | CI | adjusted p | word: the tested changes of one span,
    and the temperatures (a fitted parameter: no test)."""
    rows = []
    changes = span.get("changes") or {}
    for name in TESTED:
        change = changes.get(name)
        if not isinstance(change, dict):
            continue
        word = change.get("change") or ("numerical precision" if change.get("below_resolution")
                                        else "within noise")
        style = "strong" if change.get("significant") is True else "dim"
        rows.append([Cell(name), Cell(fmt_metric(change.get("from"), missing)),
                     Cell(fmt_metric(change.get("to"), missing)),
                     Cell(fmt_signed(change.get("delta"), missing)),
                     Cell(fmt_ci(change.get("ci_low"), change.get("ci_high"), missing)),
                     Cell(fmt_p(change.get("p_adjusted"), missing)), Cell(word, style)])
    temperature = span.get("temperature")
    if isinstance(temperature, dict):
        rows.append([Cell("temperature"), Cell(fmt_metric(temperature.get("from"), missing)),
                     Cell(fmt_metric(temperature.get("to"), missing)),
                     Cell(fmt_signed(temperature.get("delta"), missing)), Cell(missing),
                     Cell(missing), Cell("fitted", "dim")])
    return Grid(["metric", "from", "to", "change", ci, "adj. p", ""],
                ["left", "right", "right", "right", "right", "right", "left"], rows,
                optional=("from", "to"))


def adjustment_line(entry: dict, document: dict) -> Cell:
    """Why the changes between named checkpoints are tested at a stricter level."""
    adjustment = entry.get("adjustment") or {}
    alpha = _get(document, "settings", "alpha")
    level = f"{(1 - alpha) * 100:g}%" if not is_missing(alpha) else "the"
    pairs = adjustment.get("pairs")
    return Cell(f"the checkpoints were chosen by their values: intervals ({level} for all "
                f"{fmt_int(pairs)} pairs of checkpoints at once) and p are Bonferroni-adjusted "
                f"over those {fmt_int(pairs)} pairs; paired t on nll and nll_calibrated, "
                "McNemar's exact test on accuracy", "dim")


def series_sections(entry: dict, document: dict, missing: str = DASH) -> list[Section]:
    """The checkpoints table of one series, then one section per span between the named
    checkpoints."""
    name = str(entry.get("name"))
    level = _get(document, "settings", "ci_level")
    ci = f"{level * 100:g}% CI" if not is_missing(level) else "CI"
    note = (f"each checkpoint as `metricdiff report` gives it; pointwise {level * 100:g}% "
            "intervals of every value are in --format json and the --html plots"
            if not is_missing(level) else "")
    sections = [Section(f"{TITLE_CHECKPOINTS}: {name}", grid=checkpoint_grid(entry, missing),
                        outro=[Cell("best: nll = lowest NLL (the first if equal), acc = highest "
                                    "accuracy (the last if equal)", "dim")], note=note,
                        long=len(_checkpoints(entry)) > 30)]
    for span in entry.get("spans") or []:
        if isinstance(span, dict):
            sections.append(Section(f"{name}: {_span_title(entry, span)}",
                                    intro=[adjustment_line(entry, document)],
                                    grid=span_grid(span, missing, ci)))
    return sections


def _marks(deltas: dict, primary: str) -> str:
    """'✓acc ✗nll_cal': the series metrics other than the primary whose change at this
    checkpoint is significant (unadjusted, as compare's summary), ✓ better, ✗ worse."""
    marks = []
    for name in SERIES_METRICS:
        d = deltas.get(name) or {}
        if name != primary and d.get("significant") is True and d.get("change") in ("better",
                                                                                    "worse"):
            mark = MARK_BETTER if d["change"] == "better" else MARK_WORSE
            marks.append(mark + SHORT_NAMES.get(name, name))
    return " ".join(marks)


def verdict_section(document: dict, missing: str = DASH) -> Section | None:
    """Two series: one verdict per checkpoint on the primary metric, the candidate series
    against the baseline."""
    comparison = document.get("comparison")
    if not isinstance(comparison, dict):
        return None
    primary = str(comparison.get("primary") or "nll")
    base, cand = str(comparison.get("baseline")), str(comparison.get("candidate"))
    level = _get(document, "settings", "ci_level")
    ci = f"{level * 100:g}% CI" if not is_missing(level) else "CI"
    rows = []
    for c in comparison.get("checkpoints") or []:
        verdict = c.get("verdict") or {}
        deltas = c.get("deltas") or {}
        row = deltas.get(primary) or {}
        interval = fmt_ci(verdict.get("ci_low"), verdict.get("ci_high"), missing)
        change = fmt_signed(verdict.get("delta"), missing)
        rows.append([Cell(str(c.get("name"))), decision_cell(verdict.get("decision")),
                     Cell(f"{change} {interval}" if interval != missing else change),
                     Cell(fmt_p(verdict.get("p_value_adjusted"), missing)),
                     Cell(fmt_metric(row.get("baseline"), missing)),
                     Cell(fmt_metric(row.get("candidate"), missing)),
                     Cell(_marks(deltas, primary))])
    grid = Grid(["checkpoint", f"{cand} is", f"{primary} change [{ci}]", "p (Holm)", base,
                 cand, "also significant"],
                ["left", "left", "right", "right", "right", "right", "left"], rows,
                optional=("also significant", base, cand))
    first = (comparison.get("checkpoints") or [{}])[0]
    method = _get(first, "deltas", primary, "method")
    intro = [Cell(f"{cand} against {base} at each checkpoint, examples paired by id: "
                  f"{primary} by {method or 'compare'}, p Holm-adjusted over the "
                  f"{comparison.get('holm_over')} checkpoints (as compare adjusts over "
                  "candidates); 'also significant': other metrics, unadjusted (✓ better, "
                  "✗ worse)", "dim")]
    return Section(f"{TITLE_VERDICTS}: {cand} vs {base}", intro=intro, grid=grid,
                   long=len(rows) > 30)


