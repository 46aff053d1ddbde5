"""A report or a comparison as ONE self-contained HTML page: tables plus plots.

The page loads nothing: CSS is inline, plots are PNG images embedded as ``data:`` URIs, there
is no script, and a Content-Security-Policy forbids any other source. It can be mailed, attached
to a CI run or opened offline.

Content comes from the grids in ``common.py`` (the same words and numbers as the terminal and
markdown views); this module only lays them out as escaped HTML tables and draws the plots.
matplotlib is an optional dependency (the ``plots`` extra): it is imported only when a page is
rendered, and drawn with the Agg canvas directly (no ``pyplot``, so no global backend switch
in the caller's process).

Any number in the dict may be null: a plot leaves such points out (or is replaced by a line
saying there is nothing to draw), a table cell shows the missing marker.
"""

from __future__ import annotations

import base64
import html
import io
import os
import sys
import warnings
from contextlib import contextmanager
from typing import Any

from ..errors import UsageError
from .common import (DASH, FLIP_GROUPS, TITLE_CALIBRATION, TITLE_DELTAS, TITLE_GROUPS_RUNS,
                     TITLE_RUNS, TITLE_WARNINGS, TITLE_WHERE, Cell, Grid, Section, _class_label,
                     best_parts, calibration_line, candidate_heading, cluster_line,
                     comparison_facts, comparison_title, comparisons_of, contribution_style,
                     delta_grid, detect_line, disagreement_line, fail_line, flip_section, fmt_int,
                     fmt_signed, grouped, groups_grid, headline_grid, methods_note, metric_unit,
                     noise_line, number, ranked_sections, reason_lines, runs_grid, sections,
                     seed_noise_section, short_label, title_line, verdict_caveat, verdict_parts,
                     warnings_of, why_title)

MISSING = DASH
NEEDS_MATPLOTLIB = "--html needs matplotlib: pip install 'metricdiff[plots]'"

FIG_SIZE = (7.0, 4.0)  # inches
DPI = 110  # 770 x 440 pixels: readable at 100% zoom
LOG_RATIO = 100  # a histogram whose fullest bin holds more than this times its emptiest: log y
PLOT_CLASSES = 15  # bars in a per-class chart (the table below it has more)
TABLE_ROWS = 100  # rows of each ranked table; the note says how many were left out
LABEL_WIDTH = 32  # characters of a class name on a plot axis
# One colour per run, in the order of ``runs`` (baseline first), the same in every plot.
RUN_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf",
               "#bcbd22", "#7f7f7f", "#d62728")
GOOD, BAD = "#1a7f37", "#cf222e"
PLOT_RC = {"font.size": 10, "axes.titlesize": 12, "axes.titleweight": "bold",
           "axes.labelsize": 10, "xtick.labelsize": 9, "ytick.labelsize": 9,
           "legend.fontsize": 9, "axes.grid": True, "grid.alpha": 0.3,
           "axes.spines.top": False, "axes.spines.right": False}

CSS = """
:root { color-scheme: light; }
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial,
       sans-serif; font-size: 15px; line-height: 1.45; color: #1f2328; background: #fff;
       margin: 0 auto; padding: 24px 32px 48px; max-width: 1140px; }
h1 { font-size: 1.55em; margin: 0 0 4px; overflow-wrap: anywhere; }
h2 { font-size: 1.3em; margin: 36px 0 8px; padding-bottom: 4px; border-bottom: 1px solid #d0d7de;
     overflow-wrap: anywhere; }
h3 { font-size: 1.08em; margin: 24px 0 6px; overflow-wrap: anywhere; }
p { margin: 6px 0; overflow-wrap: anywhere; }
ul { margin: 6px 0; padding-left: 22px; }
li { margin: 3px 0; overflow-wrap: anywhere; }
.facts { color: #57606a; margin-bottom: 14px; }
.scroll { overflow-x: auto; max-width: 100%; }
table { border-collapse: collapse; margin: 6px 0 10px; font-size: 0.93em; }
th, td { padding: 4px 10px; border-bottom: 1px solid #e4e8ec; vertical-align: top; }
th { text-align: left; background: #f6f8fa; border-bottom: 1px solid #d0d7de; white-space: nowrap; }
td { overflow-wrap: anywhere; max-width: 46em; }
th.num, td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tbody tr:hover { background: #f6f8fa; }
table.verdicts td { border: none; padding: 3px 12px 3px 0; }
.good { color: #1a7f37; } .bad { color: #cf222e; } .warn { color: #9a6700; }
.dim { color: #57606a; } .strong { font-weight: 600; }
.decision { font-weight: 700; padding: 1px 8px; border-radius: 10px; white-space: nowrap; }
.decision.good { background: #dafbe1; } .decision.bad { background: #ffebe9; }
.decision.warn { background: #fff8c5; }
figure.plot { margin: 14px 0 22px; }
figure.plot img { display: block; max-width: 100%; height: auto; border: 1px solid #e4e8ec; }
figure.plot figcaption { color: #57606a; font-size: 0.9em; margin-top: 4px; max-width: 770px; }
details { margin: 6px 0 10px; }
summary { cursor: pointer; color: #57606a; }
.warnings li { color: #9a6700; }
"""


# ----------------------------------------------------------------------------- HTML pieces

def esc(text) -> str:
    """Text from the data, safe inside an element or an attribute (line breaks become
    spaces; other spacing is kept, so 'best run: ' + name reads as written)."""
    return html.escape(" ".join(str(text).splitlines()), quote=True)


def _span(cell: Cell, extra: str = "") -> str:
    classes = " ".join(c for c in (extra, cell.style or "") if c)
    return f'<span class="{classes}">{esc(cell.text)}</span>' if classes else esc(cell.text)


def _decision(cell: Cell) -> str:
    return _span(cell, "decision")


def html_table(grid: Grid, css_class: str = "", header: bool = True) -> str:
    """A grid as an escaped <table>: right-aligned columns are numbers, cell styles become
    classes (a cell's own style first, else its column's)."""
    if not grid.columns:
        return ""
    styles = grid.column_styles or [None] * len(grid.columns)
    attr = f' class="{css_class}"' if css_class else ""
    out = [f'<div class="scroll"><table{attr}>']
    if header:
        out.append("<thead><tr>" + "".join(
            f'<th{" class=num" if align == "right" else ""}>{esc(col)}</th>'
            for col, align in zip(grid.columns, grid.align)) + "</tr></thead>")
    out.append("<tbody>")
    width = len(grid.columns)
    for row in grid.rows:
        cells = []
        for i in range(width):
            cell = row[i] if i < len(row) else Cell("")
            classes = [c for c in ("num" if grid.align[i] == "right" else "",
                                   cell.style or (styles[i] if i < len(styles) else None) or "")
                       if c]
            attr = f' class="{" ".join(classes)}"' if classes else ""
            cells.append(f"<td{attr}>{esc(cell.text)}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</tbody></table></div>")
    return "".join(out)


def _paragraph(cell: Cell) -> str:
    return f'<p class="{cell.style}">{esc(cell.text)}</p>' if cell.style else \
        f"<p>{esc(cell.text)}</p>"


def html_section(section: Section, level: int = 3) -> str:
    """A section: heading, intro lines, its table (folded into <details> when long), outro."""
    out = [f"<h{level}>{esc(section.title)}</h{level}>"]
    out += [_paragraph(c) for c in section.intro]
    grid = section.grid
    if grid is not None:
        if not grid.rows:
            out.append('<p class="dim">(nothing to show)</p>')
        elif section.long:
            out.append(f"<details><summary>{esc(section.note or section.title)}</summary>"
                       f"{html_table(grid)}</details>")
        else:
            if section.note:
                out.append(f'<p class="dim">{esc(section.note)}</p>')
            out.append(html_table(grid))
    out += [_paragraph(c) for c in section.outro]
    return "\n".join(out)


def _page(title: str, body: list[str]) -> str:
    csp = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
    return "\n".join([
        "<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{csp}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        '<meta name="generator" content="metricdiff">',
        f"<title>{esc(title)}</title>", f"<style>{CSS}</style>", "</head>", "<body>",
        *[part for part in body if part], "</body>", "</html>", ""])


def _warnings(report: dict) -> str:
    found = warnings_of(report)
    if not found:
        return ""
    return (f"<h2>{esc(TITLE_WARNINGS)}</h2><ul class=\"warnings\">"
            + "".join(f"<li>⚠ {esc(w)}</li>" for w in found) + "</ul>")


# ----------------------------------------------------------------------------- plotting

def _matplotlib():
    """(Figure, FigureCanvasAgg, style, rc_context), imported on first use."""
    try:
        try:
            import matplotlib
        except ValueError:
            # matplotlib refuses to import under an invalid MPLBACKEND; the page draws with the
            # Agg canvas whatever the backend, so choose that one and import again
            os.environ["MPLBACKEND"] = "agg"
            for name in [m for m in sys.modules if m.split(".")[0] == "matplotlib"]:
                del sys.modules[name]  # the half-imported package, so it imports whole
            import matplotlib
        from matplotlib import style
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise UsageError(NEEDS_MATPLOTLIB) from exc
    return Figure, FigureCanvasAgg, style, matplotlib.rc_context


class _Plotter:
    """Draws figures with the Agg canvas under matplotlib's default style (whatever the
    caller's matplotlibrc says) and returns them as <figure> blocks with a PNG data URI."""

    def __init__(self):
        self.Figure, self.Canvas, self.style, self.rc_context = _matplotlib()

    @contextmanager
    def figure(self, height: float = FIG_SIZE[1]):
        with self.style.context("default"), self.rc_context(PLOT_RC), \
                warnings.catch_warnings():
            # a class name in a script the default font lacks draws as boxes, not a warning
            warnings.filterwarnings("ignore", message=".*[Gg]lyph.*missing")
            warnings.filterwarnings("ignore", message=".*[Mm]issing from font")
            fig = self.Figure(figsize=(FIG_SIZE[0], height), dpi=DPI, layout="constrained",
                              facecolor="white")
            self.Canvas(fig)
            yield fig

    @staticmethod
    def png(fig) -> str:
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=DPI, facecolor="white",
                    metadata={"Software": None})
        return base64.b64encode(buf.getvalue()).decode("ascii")


def _figure(kind: str, png: str, alt: str, caption: str = "") -> str:
    cap = f"<figcaption>{esc(caption)}</figcaption>" if caption else ""
    width = int(DPI * FIG_SIZE[0])  # CSS keeps the aspect ratio when the page is narrower
    return (f'<figure class="plot" data-plot="{esc(kind)}"><img src="data:image/png;base64,'
            f'{png}" alt="{esc(alt)}" width="{width}">{cap}</figure>')


def _no_plot(what: str) -> str:
    return f'<p class="dim">({esc(what)})</p>'


def mpl_text(text) -> str:
    """Text for a matplotlib label: '$' would start mathtext, so it is escaped."""
    return " ".join(str(text).split()).replace("$", r"\$")


def _legend(fig, handles: list, labels: list[str]) -> None:
    """The legend under the axes (never over the data), as many columns as fit. Labels are
    passed explicitly: a run named '_x' would be dropped from an automatic legend."""
    if not handles:
        return
    labels = [mpl_text(short_label(t, 40)) for t in labels]
    longest = max(len(t) for t in labels)
    columns = max(1, min(len(labels), 4, 84 // (longest + 6)))
    fig.legend(handles, labels, loc="outside lower center", ncols=columns, frameon=False)


def _numbers(row: dict, *keys: str) -> tuple[float, ...] | None:
    """The row's values at keys as floats, or None when any of them is missing."""
    found = [v for v in (number(row.get(key)) for key in keys) if v is not None]
    return tuple(found) if len(found) == len(keys) else None


def _bins(bins) -> list[dict]:
    """The usable confidence bins of a run: dicts with finite lower < upper."""
    out = []
    for b in bins or []:
        if not isinstance(b, dict):
            continue
        lower, upper = number(b.get("lower")), number(b.get("upper"))
        if lower is None or upper is None or upper <= lower:
            continue
        out.append(b)
    return out


def _run_name(run: dict, index: int) -> str:
    return str(run.get("name") or run.get("path") or f"run {index}")


def reliability_plot(plotter: _Plotter, runs: list[tuple[str, Any]]) -> str:
    """Reliability diagram of every run overlaid: one point per non-empty bin at (mean
    confidence, accuracy), marker area proportional to the bin's examples."""
    series = []
    for i, (name, bins) in enumerate(runs):
        found = (_numbers(b, "mean_confidence", "accuracy", "count") for b in _bins(bins))
        points = [p for p in found if p is not None and p[2] > 0]
        if points:
            series.append((i, name, points))
    if not series:
        return _no_plot("no confidence bins with examples: no reliability diagram")
    biggest = max(p[2] for _, _, points in series for p in points)
    from matplotlib.lines import Line2D
    with plotter.figure() as fig:
        ax = fig.add_subplot()
        ax.plot([0, 1], [0, 1], linestyle="--", color="#888888", linewidth=1)
        handles, labels = [], []
        for i, name, points in series:
            colour = RUN_COLOURS[i % len(RUN_COLOURS)]
            xs, ys, counts = zip(*sorted(points))
            sizes = [12 + 300 * (c / biggest) for c in counts]
            ax.scatter(xs, ys, s=sizes, color=colour, alpha=0.65, edgecolors="white",
                       linewidths=0.6, zorder=3)
            # the legend's handle: the line with a mid-sized marker (not the first bin's)
            ax.plot(xs, ys, color=colour, linewidth=1.4, alpha=0.8)
            handles.append(Line2D([], [], color=colour, linewidth=1.4, marker="o",
                                  markersize=7, alpha=0.8))
            labels.append(name)
        diagonal = ax.lines[0]
        _legend(fig, handles + [diagonal], labels + ["perfect calibration"])
        ax.set_xlim(-0.02, 1.02)  # points at 0 or 1 are drawn whole
        ax.set_ylim(-0.03, 1.03)
        ax.set_xlabel("mean top-1 confidence in bin (probability)")
        ax.set_ylabel("accuracy in bin (fraction correct)")
        ax.set_title("Reliability diagram (marker area ∝ examples in bin)")
        png = plotter.png(fig)
    return _figure("reliability", png, "Reliability diagram: accuracy against mean confidence "
                   "per confidence bin, for " + ", ".join(n for _, n, _ in series),
                   "Points below the dashed diagonal are over-confident bins (confidence above "
                   "accuracy); points above it are under-confident.")


def histogram_plot(plotter: _Plotter, runs: list[tuple[str, Any]]) -> str:
    """Examples per confidence bin, one bar per run side by side within each bin."""
    series = []
    for i, (name, bins) in enumerate(runs):
        found = (_numbers(b, "lower", "upper", "count") for b in _bins(bins))
        bars = [b for b in found if b is not None]
        if bars and any(b[2] > 0 for b in bars):
            series.append((i, name, bars))
    if not series:
        return _no_plot("no confidence bin counts: no confidence histogram")
    from matplotlib.ticker import NullFormatter
    with plotter.figure() as fig:
        ax = fig.add_subplot()
        handles, labels = [], []
        for slot, (i, name, bars) in enumerate(series):
            colour = RUN_COLOURS[i % len(RUN_COLOURS)]
            lefts = [lo + (hi - lo) * slot / len(series) for lo, hi, _ in bars]
            widths = [(hi - lo) / len(series) for lo, hi, _ in bars]
            handle = ax.bar(lefts, [c for _, _, c in bars], width=widths, align="edge",
                            color=colour, alpha=0.85, linewidth=0)
            handles.append(handle)
            labels.append(name)
        _legend(fig, handles, labels)
        ax.set_xlim(0, 1)
        ax.set_xlabel("top-1 confidence (probability)")
        counts = [c for _, _, bars in series for _, _, c in bars if c > 0]
        if max(counts) > LOG_RATIO * min(counts):  # a few full bins would hide the rest
            ax.set_yscale("log")
            ax.set_ylabel("examples per bin (count, log scale)")
            ax.yaxis.set_minor_formatter(NullFormatter())
        else:
            ax.set_ylabel("examples per bin (count)")
        ax.yaxis.set_major_formatter(_thousands())  # 1,000 rather than 10³
        ax.set_title("Confidence histogram")
        png = plotter.png(fig)
    return _figure("confidence-histogram", png, "Histogram of top-1 confidence, examples per "
                   "bin, for " + ", ".join(n for _, n, _ in series))


def _thousands():
    from matplotlib.ticker import FuncFormatter  # matplotlib is there: a plot is being drawn
    return FuncFormatter(lambda v, _: f"{v:,.0f}" if v == int(v) else f"{v:,.1f}")


FLIP_ORDER = ("both_correct", "fixed", "broken", "both_wrong")


def nll_flip_plot(plotter: _Plotter, report: dict, colours: dict[str, str]) -> str:
    """The change of mean NLL split over both-correct / fixed / broken / both-wrong examples,
    with the total, one bar per candidate in each group."""
    series = []
    for comparison in comparisons_of(report):
        groups = {str(g.get("group")): number(g.get("contribution"))
                  for g in (_get_list(comparison, "explanation", "nll_by_flip"))
                  if isinstance(g, dict)}
        if not any(v is not None for v in groups.values()):
            continue
        total = number(((comparison.get("deltas") or {}).get("nll") or {}).get("delta"))
        known = [v for v in groups.values() if v is not None]
        if total is None and groups and len(known) == len(groups):
            total = sum(known)
        series.append((str(comparison.get("candidate") or "candidate"), groups, total))
    if not series:
        return _no_plot("no NLL decomposition by example group in the report")
    keys = [k for k in FLIP_ORDER if any(k in g for _, g, _ in series)]
    keys += sorted({k for _, g, _ in series for k in g} - set(keys))
    names = [FLIP_GROUPS.get(k, k.replace("_", " ")).replace(" (", "\n(") for k in keys]
    names.append("total\n(all examples)")
    baseline = _baseline_name(report)
    with plotter.figure() as fig:
        ax = fig.add_subplot()
        width = 0.8 / len(series)
        handles, labels = [], []
        for slot, (candidate, groups, total) in enumerate(series):
            values = [groups.get(k) for k in keys] + [total]
            xs = [j - 0.4 + width * (slot + 0.5) for j in range(len(values))]
            colour = colours.get(candidate, RUN_COLOURS[(slot + 1) % len(RUN_COLOURS)])
            drawn = [(x, v) for x, v in zip(xs, values) if v is not None]
            handle = ax.bar([x for x, _ in drawn], [v for _, v in drawn], width=width * 0.92,
                            color=colour, alpha=0.9)
            # the total is hatched: it is the sum of the other bars
            if values[-1] is not None:
                handle.patches[-1].set_hatch("//")
                handle.patches[-1].set_edgecolor("white")
            if len(series) <= 3:
                ax.bar_label(handle, labels=[fmt_signed(v) for _, v in drawn], fontsize=8,
                             padding=2)
            handles.append(handle)
            labels.append(f"{candidate} − {baseline}")
        ax.axhline(0, color="#444444", linewidth=0.8)
        ax.set_xticks(range(len(names)), names)
        ax.margins(y=0.15)
        ax.set_ylabel("contribution to Δ mean NLL (nats)")
        ax.set_xlabel("examples, by correctness in baseline → candidate")
        ax.set_title("Change of mean NLL by example group")
        _legend(fig, handles, labels)
        png = plotter.png(fig)
    return _figure("nll-by-flip", png, "Bar chart: contribution of each example group to the "
                   "change of mean NLL, per candidate",
                   "Each bar is the group's part of the change of mean NLL (candidate minus "
                   f"baseline {baseline}); the groups add up to the hatched total. Below zero: "
                   "the candidate's loss is lower there.")


def class_plot(plotter: _Plotter, report: dict, comparison: dict) -> str:
    """The classes that moved the ranked metric most, as horizontal contribution bars (the
    top ``PLOT_CLASSES`` by |contribution|), labelled with class names."""
    ranked = (comparison.get("ranked") or {}).get("classes") or {}
    metric = str(ranked.get("metric") or comparison.get("primary")
                 or (report.get("settings") or {}).get("primary") or "nll")
    rows = [r for r in ranked.get("rows") or [] if isinstance(r, dict)
            and number(r.get("contribution")) is not None]
    candidate = str(comparison.get("candidate") or "candidate")
    baseline = str(comparison.get("baseline") or _baseline_name(report))
    if not rows:
        return _no_plot(f"no per-class contributions for {candidate}")
    total = len(rows)
    rows = sorted(rows, key=lambda r: -abs(r["contribution"]))[:PLOT_CLASSES]
    higher = (report.get("directions") or {}).get(metric)
    from matplotlib.patches import Patch
    height = max(FIG_SIZE[1], 1.6 + 0.24 * len(rows))
    with plotter.figure(height) as fig:
        ax = fig.add_subplot()
        values = [float(r["contribution"]) for r in rows]
        styles = [contribution_style(v, higher) for v in values]
        colours = [GOOD if s == "good" else BAD if s == "bad" else "#8c959f" for s in styles]
        ys = list(range(len(rows)))
        ax.barh(ys, values, color=colours, alpha=0.9, height=0.7)
        ax.set_yticks(ys, [mpl_text(short_label(_class_label(r), LABEL_WIDTH)) for r in rows])
        ax.invert_yaxis()  # the largest on top
        ax.axvline(0, color="#444444", linewidth=0.8)
        ax.grid(axis="y", visible=False)
        unit = metric_unit(metric)
        ax.set_xlabel(f"contribution to Δ {metric}" + (f" ({unit})" if unit else ""))
        shown = (f"top {len(rows)} of {fmt_int(total)} ranked classes" if total > len(rows)
                 else f"{len(rows)} classes")
        ax.set_title(mpl_text(short_label(f"Classes that moved {metric} most: {candidate}",
                                          70)))
        handles, labels = [], []
        if higher is not None:
            if "good" in styles:
                handles.append(Patch(color=GOOD))
                labels.append(f"{candidate} better than {baseline}")
            if "bad" in styles:
                handles.append(Patch(color=BAD))
                labels.append(f"{candidate} worse than {baseline}")
        else:
            handles.append(Patch(color="#8c959f"))
            labels.append(f"{candidate} − {baseline}")
        _legend(fig, handles, labels)
        png = plotter.png(fig)
    return _figure(f"classes-{candidate}", png,
                   f"Horizontal bars: per-class contribution to the change of {metric}, "
                   f"{candidate} against {baseline}",
                   f"{shown} by |contribution|; the table below lists them with recall and "
                   "mean NLL.")


def _get_list(mapping, *keys) -> list:
    for key in keys:
        if not isinstance(mapping, dict):
            return []
        mapping = mapping.get(key)
    return mapping if isinstance(mapping, list) else []


def _baseline_name(report: dict) -> str:
    for comparison in comparisons_of(report):
        if comparison.get("baseline"):
            return str(comparison["baseline"])
    runs = [r for r in report.get("runs") or [] if isinstance(r, dict)]
    return _run_name(runs[0], 0) if runs else "baseline"


# ----------------------------------------------------------------------------- pages

def render_report_html(report: dict) -> str:
    """The report of one run (``RunReport.to_dict()``) as a self-contained HTML page:
    headline table, calibration line, reliability diagram and confidence histogram, then the
    breakdowns (loss anatomy, reliability table, class groups, worst classes, slices, noise
    floor) and warnings. Raises UsageError when matplotlib is not installed."""
    plotter = _Plotter()
    report = report if isinstance(report, dict) else {}
    name, facts = title_line(report, MISSING)
    body = [f"<h1>metricdiff report: {esc(name)}</h1>", f'<p class="facts">{esc(facts)}</p>']
    body.append(html_table(headline_grid(report, MISSING)))
    cal = calibration_line(report, MISSING)
    if cal is not None:
        body.append(f'<p><span class="strong">{esc(TITLE_CALIBRATION)}:</span> '
                    f'{_span(cal)}</p>')
    runs = [(name, report.get("confidence_bins"))]
    body.append("<h2>Plots</h2>")
    body.append(reliability_plot(plotter, runs))
    body.append(histogram_plot(plotter, runs))
    body.append("<h2>Breakdowns</h2>")
    body += [html_section(s) for s in sections(report, MISSING)]
    body.append(_warnings(report))
    return _page(f"metricdiff report: {name}", body)


def _verdicts(report: dict) -> list[str]:
    rows = []
    for comparison in comparisons_of(report):
        candidate, decision, reason = verdict_parts(comparison)
        caveat = verdict_caveat(comparison)
        extra = f'<br><span class="{caveat.style}">{esc(caveat.text)}</span>' if caveat else ""
        rows.append(f"<tr><td>{_span(candidate)}</td><td>{_decision(decision)}</td>"
                    f"<td>{esc(reason.text)}{extra}</td></tr>")
    out = []
    if rows:
        out.append('<div class="scroll"><table class="verdicts"><tbody>' + "".join(rows)
                   + "</tbody></table></div>")
    else:
        out.append('<p class="dim">(no candidates in the report)</p>')
    out.append("<p>" + "".join(_span(c) for c in best_parts(report)) + "</p>")
    failed = fail_line(report)
    if failed is not None:
        out.append(f"<p>{_span(failed, 'strong')}</p>")
    for comparison in comparisons_of(report)[:1]:  # the same sources for every candidate
        out.append(_paragraph(noise_line(comparison)))
    return out


def _candidate(report: dict, comparison: dict) -> list[str]:
    decision = verdict_parts(comparison)[1]
    out = [f"<h2>{esc(candidate_heading(comparison))}: {_decision(decision)}</h2>",
           f"<h3>{esc(why_title(comparison, report))}</h3>",
           f"<p>{_span(disagreement_line(comparison, report), 'strong')}</p>"]
    reasons = reason_lines(comparison)
    if reasons:
        out.append("<ul>" + "".join(f"<li>{esc(r)}</li>" for r in reasons) + "</ul>")
    out.append(f"<h3>{esc(TITLE_DELTAS)}</h3>")
    deltas = delta_grid(comparison, report, MISSING)
    out.append(html_table(deltas) if deltas.rows else '<p class="dim">(no metrics)</p>')
    note = methods_note(comparison, report)
    if note.text:
        out.append(_paragraph(note))
    for line in (noise_line(comparison), cluster_line(comparison),
                 detect_line(comparison, report)):
        if line is not None:
            out.append(_paragraph(line))
    flips = flip_section(comparison, report, MISSING)
    if flips is not None:
        out.append(html_section(flips))
    ranked = ranked_sections(comparison, report, MISSING, TABLE_ROWS)
    if ranked:
        out.append(f"<h3>{esc(TITLE_WHERE)}</h3>")
        out += [html_section(s, level=4) for s in ranked]
    return out


def render_comparison_html(report: dict) -> str:
    """A comparison (``ComparisonReport.to_dict()``) as a self-contained HTML page: verdicts
    (decision coloured) and the best run, the runs table, plots (reliability diagrams of all
    runs overlaid, confidence histograms, the NLL change by example group per candidate, the
    classes that moved the primary metric most per candidate), then per candidate the reasons,
    the metric changes and the ranked tables. Raises UsageError when matplotlib is missing."""
    plotter = _Plotter()
    report = report if isinstance(report, dict) else {}
    title = comparison_title(report)
    body = [f"<h1>metricdiff: {esc(title)}</h1>",
            f'<p class="facts">{esc(comparison_facts(report, MISSING))}</p>']
    body += _verdicts(report)

    if grouped(report):
        body.append(f"<h2>{esc(TITLE_GROUPS_RUNS)}</h2>")
        body.append(html_table(groups_grid(report, MISSING)))
    floor = seed_noise_section(report, MISSING)
    if floor is not None:
        body.append(html_section(floor))
    body.append(f"<h2>{esc(TITLE_RUNS)}</h2>")
    runs_table = runs_grid(report, MISSING)
    body.append(html_table(runs_table) if runs_table.rows
                else '<p class="dim">(no metrics)</p>')

    runs = [r for r in report.get("runs") or [] if isinstance(r, dict)]
    named = [(_run_name(r, i), r.get("confidence_bins")) for i, r in enumerate(runs)]
    colours = {name: RUN_COLOURS[i % len(RUN_COLOURS)] for i, (name, _) in enumerate(named)}
    body.append("<h2>Plots</h2>")
    body.append(reliability_plot(plotter, named))
    body.append(histogram_plot(plotter, named))
    body.append(nll_flip_plot(plotter, report, colours))
    for comparison in comparisons_of(report):
        body.append(class_plot(plotter, report, comparison))

    for comparison in comparisons_of(report):
        body += _candidate(report, comparison)
    body.append(_warnings(report))
    return _page(f"metricdiff: {title}", body)
