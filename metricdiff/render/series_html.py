"""A series as ONE self-contained HTML page: the answer, plots of every checkpoint's NLL,
accuracy, calibrated NLL and fitted temperature with their intervals (both series on the same
axes), the per-checkpoint verdicts of two series, and the tables.

The page is built like the report and comparison pages (``html.py``, whose page, figure and
table helpers are used as they are): inline CSS, inline SVG plots whose hover titles give each
checkpoint's numbers, no script, a Content-Security-Policy that forbids any other source.
Content comes from ``series_view.py``, so the words and numbers are those of the terminal and
markdown views.
"""

from __future__ import annotations

from .common import fmt_int, fmt_metric, number
from .html import (GOOD, BAD, RUN_COLOURS, _figure, _legend, _no_plot, _page, _paragraph,
                   _Plotter, _plots, _span, esc, html_section, mpl_text)
from .common import warnings_of
from .series_view import (TITLE_ANSWER, answer_lines, facts_line, series_of,
                          series_sections, verdict_section)

MISSING = "—"
# metric -> (title, y label, what the band is)
PLOTS = {
    "nll": ("NLL per checkpoint", "mean NLL (nats)",
            "t interval of the mean over examples"),
    "accuracy": ("Accuracy per checkpoint", "accuracy (fraction correct)",
                 "Clopper-Pearson exact interval"),
    "nll_calibrated": ("Calibrated NLL per checkpoint", "NLL at the checkpoint's fitted T (nats)",
                       "t interval of the mean over examples, at the fitted temperature"),
    "temperature": ("Fitted temperature per checkpoint", "temperature T", None),
}
# the checkpoint a series names best on that metric, starred on its plot
STARRED = {"nll": ("nll", "lowest NLL"), "accuracy": ("accuracy", "highest accuracy")}


def _x_label(document: dict) -> str:
    source = str((series_of(document) or [{}])[0].get("step_source") or "")
    if source.startswith("column "):
        return f"{source[len('column '):]} (the run's step column)"
    if source == "names":
        return "step (the number in each checkpoint's name)"
    return "checkpoint (position in the series)"


def _points(entry: dict, metric: str) -> list[tuple[float, float, float | None, float | None]]:
    """(step, value, interval low, high) of every checkpoint that has the value."""
    points = []
    for c in entry.get("checkpoints") or []:
        if not isinstance(c, dict):
            continue
        x, y = number(c.get("step")), number((c.get("metrics") or {}).get(metric))
        if x is None or y is None:
            continue
        bounds = (c.get("intervals") or {}).get(metric) or {}
        points.append((x, y, number(bounds.get("low")), number(bounds.get("high"))))
    return points


def metric_plot(plotter: _Plotter, document: dict, metric: str) -> str:
    """One metric over the checkpoints, a line per series with its interval band, and a star
    on the checkpoint the series names best on it."""
    title, ylabel, band = PLOTS[metric]
    drawn = [(i, entry, _points(entry, metric)) for i, entry in enumerate(series_of(document))]
    drawn = [(i, entry, points) for i, entry, points in drawn if points]
    if not drawn:
        return _no_plot(f"no {metric} at any checkpoint: nothing to plot")
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch
    level_text = _level(document)
    with plotter.figure() as fig:
        ax = fig.add_subplot()
        handles: list = []
        labels: list[str] = []
        for i, entry, points in drawn:
            colour = RUN_COLOURS[i % len(RUN_COLOURS)]
            xs = [p[0] for p in points]
            ax.plot(xs, [p[1] for p in points], color=colour, marker="o", markersize=3.5,
                    linewidth=1.5)
            handles.append(Line2D([], [], color=colour, marker="o", markersize=4))
            labels.append(str(entry.get("name")))
            banded = [p for p in points if p[2] is not None and p[3] is not None]
            if band and banded:
                ax.fill_between([p[0] for p in banded], [p[2] for p in banded],
                                [p[3] for p in banded], color=colour, alpha=0.18, linewidth=0)
            if metric in STARRED:
                best = (entry.get("best") or {}).get(STARRED[metric][0]) or {}
                index = best.get("index")
                checkpoints = entry.get("checkpoints") or []
                if isinstance(index, int) and 0 <= index < len(checkpoints):
                    x = number(checkpoints[index].get("step"))
                    y = number(best.get("value"))
                    if x is not None and y is not None:
                        ax.plot([x], [y], marker="*", markersize=15, color=colour,
                                markeredgecolor="black", markeredgewidth=0.6, zorder=4,
                                linestyle="none")
        if band:
            handles.append(Patch(color="#888888", alpha=0.3))
            labels.append(f"{level_text}interval (pointwise)")
        if metric in STARRED:
            handles.append(Line2D([], [], marker="*", markersize=11, color="#888888",
                                  markeredgecolor="black", linestyle="none"))
            labels.append(STARRED[metric][1])
        if metric == "temperature":
            ax.axhline(1.0, color="#888888", linestyle="--", linewidth=1)
        steps = sorted({p[0] for _, _, points in drawn for p in points})
        at = [{p[0]: p for p in points} for _, _, points in drawn]
        plotter.hover_columns(ax, steps, [
            "\n".join([f"step {fmt_int(x)}"] + [
                f"{entry.get('name')}: {_value_text(found.get(x))}"
                for (_, entry, _), found in zip(drawn, at)]) for x in steps])
        _legend(fig, handles, labels)
        _integer_steps(ax, [p[0] for _, _, points in drawn for p in points])
        ax.set_xlabel(mpl_text(_x_label(document)))
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        svg = plotter.svg(fig)
    names = ", ".join(str(entry.get("name")) for _, entry, _ in drawn)
    if band:
        caption = f"Band: the {level_text}{band} of each checkpoint, pointwise."
    else:
        caption = ("No band: the temperature is a fitted parameter, without an interval. Above "
                   "the dashed line T = 1 a checkpoint is over-confident (dividing its logits by "
                   "T > 1 lowers its NLL), below it under-confident.")
    if metric in STARRED:
        caption += f" The star marks the {STARRED[metric][1]} of each series."
    return _figure(f"series-{metric}", svg, f"Line chart: {title.lower()} for {names}",
                   caption + " Hover for the values.")


def _value_text(point) -> str:
    """A checkpoint's value and interval for a hover title."""
    if point is None:
        return MISSING
    _, value, low, high = point
    text = fmt_metric(value)
    return text if low is None or high is None else \
        f"{text} ({fmt_metric(low)} to {fmt_metric(high)})"


def change_plot(plotter: _Plotter, document: dict) -> str:
    """Two series: the change of the primary metric at each checkpoint with its interval,
    green where the candidate is significantly better, red where worse (Holm-adjusted)."""
    comparison = document.get("comparison")
    if not isinstance(comparison, dict):
        return ""
    primary = str(comparison.get("primary") or "nll")
    rows = []
    for c in comparison.get("checkpoints") or []:
        verdict = c.get("verdict") or {}
        x, delta = number(c.get("step")), number(verdict.get("delta"))
        if x is None or delta is None:
            continue
        rows.append((x, delta, number(verdict.get("ci_low")), number(verdict.get("ci_high")),
                     verdict.get("decision")))
    if not rows:
        return _no_plot(f"no change of {primary} at any checkpoint: nothing to plot")
    base, cand = comparison.get("baseline"), comparison.get("candidate")
    from matplotlib.lines import Line2D
    with plotter.figure() as fig:
        ax = fig.add_subplot()
        colours = {"better": GOOD, "worse": BAD}
        for x, delta, low, high, decision in rows:
            colour = colours.get(str(decision), "#8c959f")
            error = None if low is None or high is None else [[delta - low], [high - delta]]
            bar = ax.errorbar([x], [delta], yerr=error, fmt="o", color=colour, capsize=3,
                              markersize=4.5)
            plotter.tip(bar.lines[0], f"step {fmt_int(x)}: Δ {primary} {fmt_metric(delta)}"
                        + ("" if low is None or high is None
                           else f" ({fmt_metric(low)} to {fmt_metric(high)})")
                        + f", {decision or 'no verdict'}")
        ax.axhline(0, color="#444444", linewidth=0.8)
        words = [("better", GOOD), ("worse", BAD), ("inconclusive", "#8c959f")]
        handles = [Line2D([], [], color=c, marker="o", linestyle="none") for _, c in words]
        _legend(fig, handles, [f"{cand} {w}" for w, _ in words])
        _integer_steps(ax, [row[0] for row in rows])
        ax.set_xlabel(mpl_text(_x_label(document)))
        ax.set_ylabel(mpl_text(f"Δ {primary} ({cand} − {base})"))
        ax.set_title(mpl_text(f"Change of {primary} per checkpoint: {cand} vs {base}"))
        svg = plotter.svg(fig)
    return _figure("series-change", svg, f"Points with error bars: change of {primary}, {cand} "
                   f"minus {base}, at each checkpoint",
                   f"Bars: the {_level(document)}interval of compare's paired test at each "
                   "checkpoint, not adjusted; colours: the verdict, decided on p Holm-adjusted "
                   f"over {fmt_int(comparison.get('holm_over'))} checkpoints, so a bar clear of "
                   "0 can still be inconclusive.")


def _level(document: dict) -> str:
    level = number((document.get("settings") or {}).get("ci_level"))
    return f"{level * 100:g}% " if level is not None else ""


def _integer_steps(ax, steps: list[float]) -> None:
    """Ticks at whole steps when every step is whole (epochs), not at 2.5, 7.5..."""
    if steps and all(float(x).is_integer() for x in steps):
        from matplotlib.ticker import MaxNLocator
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def render_series_html(document: dict) -> str:
    """A series (``SeriesReport.to_dict()``) as a self-contained HTML page. Raises UsageError
    when matplotlib is not installed."""
    plotter = _Plotter()
    document = document if isinstance(document, dict) else {}
    facts = facts_line(document, MISSING)
    body = ["<h1>metricdiff series</h1>", f'<p class="facts">{esc(facts)}</p>']
    answer = [f"<p>{_span(line, 'strong')}</p>" if line.style == "strong" else _paragraph(line)
              for line in answer_lines(document)]
    body += answer
    body.append("<h2>Plots</h2>")
    body.append(_plots([*(metric_plot(plotter, document, metric) for metric in PLOTS),
                        change_plot(plotter, document)]))
    verdicts = verdict_section(document, MISSING)
    if verdicts is not None:
        body.append(html_section(verdicts, level=2))
    for entry in series_of(document):
        body += [html_section(section, level=2)
                 for section in series_sections(entry, document, MISSING)]
    found = warnings_of(document)
    if found:
        body.append("<h2>Warnings</h2><ul class=\"warnings\">"
                    + "".join(f"<li>⚠ {esc(w)}</li>" for w in found) + "</ul>")
    body.append(f"<h2>{esc(TITLE_ANSWER)}</h2>")
    body += answer
    return _page(f"metricdiff series: {facts}", body)
