"""A report or a comparison as ONE self-contained HTML page: tables plus plots.

The page loads nothing: CSS is inline, plots are inline SVG, there is no script, and a
Content-Security-Policy forbids every other source. It can be mailed, attached to a CI run or
opened offline.

Why inline SVG with <title> elements, not PNG images nor a plotting library's scripts: hover
on a curve, a bin or a bar shows its numbers (estimate, interval, examples), which the plots
themselves cannot print without clutter, and that needs no script: browsers show an SVG
<title> as a tooltip. A script (Plotly, Vega, Bokeh) would have to be inlined, hundreds of
kilobytes to several megabytes of it, and allowed by the CSP; mail clients and CI artifact
viewers often refuse scripts altogether, and a page that works only with one runs is not
self-contained in practice. SVG is also vector: the plots stay sharp at any window width (the
layout gives them half of a wide window or all of a narrow one) and on paper. What hover does
not give (touch screens, print, screen readers) is given by the page itself: the figures
have alt text, every plotted number is also in a table or the JSON, and each caption says
what the intervals are.

Content comes from the grids in ``common.py`` (the same words and numbers as the terminal and
markdown views); this module only lays them out as escaped HTML tables and draws the plots.
Every interval drawn comes from the analysis (the report dict), none is computed here.
matplotlib is an optional dependency (the ``plots`` extra): it is imported only when a page is
rendered, and drawn on its own canvas (no ``pyplot``, so no global backend switch in the
caller's process).

Any number in the dict may be null: a plot leaves such points out (or is replaced by a line
saying there is nothing to draw), a table cell shows the missing marker.
"""

from __future__ import annotations

import html
import io
import math
import os
import re
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
                     fmt_metric, fmt_signed, grouped, groups_grid, headline_grid, methods_note,
                     metric_unit, noise_line, number, ranked_sections, reason_lines, runs_grid,
                     sections, seed_noise_section, short_label, title_line, verdict_caveat,
                     verdict_parts, warnings_of, why_title)

MISSING = DASH
NEEDS_MATPLOTLIB = "--html needs matplotlib: pip install 'metricdiff[plots]'"

FIG_SIZE = (7.0, 4.0)  # inches: 672 x 384 CSS pixels at natural size; the page scales them
LOG_RATIO = 100  # a histogram whose fullest bin holds more than this times its emptiest: log y
PLOT_CLASSES = 15  # bars in a per-class chart (the table below it has more)
TABLE_ROWS = 100  # rows of each ranked table; the note says how many were left out
LABEL_WIDTH = 32  # characters of a class name on a plot axis
COVERAGE_MARKS = (80, 90, 95)  # the coverages of the risk_at_<c> metrics, marked on the curve
# One colour per run, in the order of ``runs`` (baseline first), the same in every plot.
RUN_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf",
               "#bcbd22", "#7f7f7f", "#d62728")
GOOD, BAD = "#1a7f37", "#cf222e"
PLOT_RC = {"font.size": 10, "axes.titlesize": 12, "axes.titleweight": "bold",
           "axes.labelsize": 10, "xtick.labelsize": 9, "ytick.labelsize": 9,
           "legend.fontsize": 9, "axes.grid": True, "grid.alpha": 0.3,
           "axes.spines.top": False, "axes.spines.right": False,
           "svg.hashsalt": "metricdiff"}  # ids from content, not random: the same page twice
CSP = "default-src 'none'; style-src 'unsafe-inline'"  # inline CSS and SVG, nothing else

CSS = """
:root { color-scheme: light; }
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial,
       sans-serif; font-size: 15px; line-height: 1.45; color: #1f2328; background: #fff;
       margin: 0 auto; padding: 24px 32px 48px; max-width: 2200px; }
h1 { font-size: 1.55em; margin: 0 0 4px; overflow-wrap: anywhere; }
h2 { font-size: 1.3em; margin: 36px 0 8px; padding-bottom: 4px; border-bottom: 1px solid #d0d7de;
     overflow-wrap: anywhere; }
h3 { font-size: 1.08em; margin: 24px 0 6px; overflow-wrap: anywhere; }
p { margin: 6px 0; overflow-wrap: anywhere; }
p, ul, figcaption { max-width: 110ch; }
ul { margin: 6px 0; padding-left: 22px; }
li { margin: 3px 0; overflow-wrap: anywhere; }
.facts { color: #57606a; margin-bottom: 14px; }
.scroll { overflow-x: auto; max-width: 100%; }
table { border-collapse: collapse; margin: 6px 0 10px; font-size: 0.93em; }
th, td { padding: 4px 10px; border-bottom: 1px solid #e4e8ec; vertical-align: top; }
th { text-align: left; background: #f6f8fa; border-bottom: 1px solid #d0d7de; white-space: nowrap; }
td { overflow-wrap: break-word; max-width: 46em; }  /* words whole: a narrow table scrolls */
th.num, td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tbody tr:hover { background: #f6f8fa; }
table.verdicts td { border: none; padding: 3px 12px 3px 0; }
.good { color: #1a7f37; } .bad { color: #cf222e; } .warn { color: #9a6700; }
.dim { color: #57606a; } .strong { font-weight: 600; }
.decision { font-weight: 700; padding: 1px 8px; border-radius: 10px; white-space: nowrap; }
.decision.good { background: #dafbe1; } .decision.bad { background: #ffebe9; }
.decision.warn { background: #fff8c5; }
/* plots side by side as the window allows: two on a laptop, three on a wide screen, one on a
   phone; each keeps its aspect ratio at the width it gets */
.plots { display: grid; grid-template-columns: repeat(auto-fill, minmax(min(100%, 560px), 1fr));
         gap: 10px 28px; align-items: start; }
.plots > p { grid-column: 1 / -1; }
figure.plot { margin: 10px 0 18px; min-width: 0; }
figure.plot svg { display: block; width: 100%; height: auto; border: 1px solid #e4e8ec; }
figure.plot figcaption { color: #57606a; font-size: 0.9em; margin-top: 4px; }
/* hover: an invisible column or bar of the plot shows its numbers (its SVG title) */
figure.plot svg g[id*="-hit"] > path { pointer-events: all; }
figure.plot svg g[id*="-hit"]:hover > path { fill: #0969da !important; opacity: 0.08 !important; }
figure.plot svg g[id*="-tip"]:hover > path { stroke: #1f2328 !important; }
details { margin: 6px 0 10px; }
summary { cursor: pointer; color: #57606a; }
.warnings li { color: #9a6700; }
@media (max-width: 700px) { body { padding: 12px 12px 32px; font-size: 14px; } }
@media print {
  body { max-width: none; padding: 0; font-size: 10.5pt; }
  .plots { display: block; }
  figure.plot { break-inside: avoid; max-width: 17cm; }
  h2, h3 { break-after: avoid; }
  .scroll { overflow: visible; }
  tbody tr:hover { background: none; }
}
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
    csp = CSP
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
    """Draws figures under matplotlib's default style (whatever the caller's matplotlibrc
    says) and returns each as inline SVG, with a <title> (its hover text) on every artist
    given one."""

    def __init__(self):
        self.Figure, self.Canvas, self.style, self.rc_context = _matplotlib()
        self.drawn = 0  # figures so far: the ids of each one's SVG get their own prefix
        self.tips: list[tuple[str, str]] = []  # (gid, text) of the figure being drawn

    @contextmanager
    def figure(self, height: float = FIG_SIZE[1]):
        with self.style.context("default"), self.rc_context(PLOT_RC), \
                warnings.catch_warnings():
            # a class name in a script the default font lacks draws as boxes, not a warning
            warnings.filterwarnings("ignore", message=".*[Gg]lyph.*missing")
            warnings.filterwarnings("ignore", message=".*[Mm]issing from font")
            fig = self.Figure(figsize=(FIG_SIZE[0], height), layout="constrained",
                              facecolor="white")
            self.Canvas(fig)
            self.tips = []
            yield fig

    def tip(self, artist, text: str) -> None:
        """Hover text for an artist: a marker, a bar, an error bar."""
        gid = f"tip{len(self.tips)}"
        artist.set_gid(gid)
        self.tips.append((gid, text))

    def hover_columns(self, ax, xs: list[float], texts: list[str]) -> None:
        """Invisible columns over the whole height of ax, one around each x, each with its
        text: hovering anywhere above an x reads every run's value there."""
        from matplotlib.patches import Rectangle
        edges = [xs[0] - (xs[1] - xs[0]) / 2 if len(xs) > 1 else xs[0] - 0.005]
        edges += [(a + b) / 2 for a, b in zip(xs, xs[1:])]
        edges.append(xs[-1] + (xs[-1] - xs[-2]) / 2 if len(xs) > 1 else xs[0] + 0.005)
        for left, right, text in zip(edges, edges[1:], texts):
            column = Rectangle((left, 0), right - left, 1, transform=ax.get_xaxis_transform(),
                               facecolor="white", alpha=0, linewidth=0, zorder=10)
            ax.add_patch(column)
            gid = f"hit{len(self.tips)}"
            column.set_gid(gid)
            self.tips.append((gid, text))

    def svg(self, fig) -> str:
        """The figure as an <svg> element for inline use: ids made unique on the page, no
        namespace URLs (the HTML parser knows SVG), the hover texts as <title> elements."""
        buf = io.StringIO()
        fig.savefig(buf, format="svg", facecolor="white",
                    metadata={key: None for key in ("Date", "Creator", "Format", "Type")})
        text = buf.getvalue()
        text = re.sub(r"<!--.*?-->", "", text[text.index("<svg"):], flags=re.S)
        text = re.sub(r'\s+xmlns(?::xlink)?="[^"]*"', "", text, count=2)
        self.drawn += 1
        prefix = f"f{self.drawn}-"
        text = re.sub(r'\bid="', f'id="{prefix}', text)
        text = text.replace("url(#", f"url(#{prefix}").replace('xlink:href="#', f'href="#{prefix}')
        for gid, tip in self.tips:
            opening = f'<g id="{prefix}{gid}">'
            text = text.replace(opening, f"{opening}<title>{html.escape(tip, quote=False)}"
                                "</title>", 1)
        return text


def _figure(kind: str, svg: str, alt: str, caption: str = "") -> str:
    cap = f"<figcaption>{esc(caption)}</figcaption>" if caption else ""
    svg = svg.replace("<svg ", f'<svg role="img" aria-label="{esc(alt)}" ', 1)
    return f'<figure class="plot" data-plot="{esc(kind)}">{svg}{cap}</figure>'


def _plots(figures: list[str]) -> str:
    """Figures laid out side by side as the window allows (CSS grid); a line saying there
    is nothing to draw spans the row."""
    return '<div class="plots">' + "\n".join(f for f in figures if f) + "</div>"


def _no_plot(what: str) -> str:
    return f'<p class="dim">({esc(what)})</p>'


def mpl_text(text) -> str:
    """Text for a matplotlib label: '$' would start mathtext, so it is escaped."""
    return " ".join(str(text).split()).replace("$", r"\$")


def _legend(fig, handles: list, labels: list[str], width: int = 40) -> None:
    """The legend under the axes (never over the data), as many columns as fit, labels cut
    to `width` characters. Labels are passed explicitly: a run named '_x' would be dropped
    from an automatic legend."""
    if not handles:
        return
    labels = [mpl_text(short_label(t, width)) for t in labels]
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


def _colour(index: int) -> str:
    return RUN_COLOURS[index % len(RUN_COLOURS)]


def _nan(value) -> float:
    """A number for matplotlib: a missing one is NaN, which it leaves out of lines."""
    found = number(value)
    return math.nan if found is None else found


def _share(level) -> str:
    """An interval's level in words: 0.95 -> '95%'."""
    level = number(level)
    return f"{level:.0%}" if level is not None and 0 < level < 1 else "95%"


def _level(report: dict) -> str:
    """The comparison's interval level (1 - --alpha) in words."""
    return _share((report.get("settings") or {}).get("ci_level"))


def _examples(count) -> str:
    return f"{fmt_int(count)} example" + ("" if number(count) == 1 else "s")


def _band_text(value, low, high, what: str = "95% band") -> str:
    text = fmt_metric(value)
    if number(low) is not None and number(high) is not None:
        text += f" ({what} {fmt_metric(low)} to {fmt_metric(high)})"
    return text


def _error_sizes(values: list[float], lows: list, highs: list) -> list[list[float]] | None:
    """matplotlib's yerr/xerr for intervals [low, high] around values (0 where an interval
    is missing); None when none has one."""
    if all(number(lo) is None or number(hi) is None for lo, hi in zip(lows, highs)):
        return None
    below, above = [], []
    for v, lo, hi in zip(values, lows, highs):
        ok = number(lo) is not None and number(hi) is not None
        below.append(max(0.0, v - float(lo)) if ok else 0.0)
        above.append(max(0.0, float(hi) - v) if ok else 0.0)
    return [below, above]


def _curve(curves, kind: str, x: str) -> tuple[dict, list[dict]]:
    """A run's curve of `kind` and its points with a number at `x`, in order of x."""
    curve = curves.get(kind) if isinstance(curves, dict) else None
    curve = curve if isinstance(curve, dict) else {}
    points = [p for p in curve.get("points") or [] if isinstance(p, dict)
              and number(p.get(x)) is not None]
    return curve, sorted(points, key=lambda p: float(p[x]))


def _columns(series: list, x: str, line) -> tuple[list[float], list[str]]:
    """Hover columns at every x of any run: one text listing each run's value there."""
    at: dict[float, dict[str, dict]] = {}
    for _, name, _, points in series:
        for p in points:
            at.setdefault(round(float(p[x]), 9), {})[name] = p
    xs = sorted(at)
    return xs, ["\n".join([line(None, xv, None)] + [line(name, xv, at[xv].get(name))
                                                    for _, name, _, _ in series])
                for xv in xs]


def smooth_reliability_plot(plotter: _Plotter, runs: list[tuple[str, Any]]) -> str:
    """The smoothed reliability curve of every run with its bootstrap band and, under it,
    each run's density of confidences: relplot's diagram, all runs on one axis."""
    series = []
    for i, (name, curves) in enumerate(runs):
        curve, points = _curve(curves, "reliability", "confidence")
        if any(number(p.get("accuracy")) is not None for p in points):
            series.append((i, name, curve, points))
    if not series:
        return _no_plot("no smoothed reliability curve in the report")
    with plotter.figure(FIG_SIZE[1] + 0.8) as fig:
        ax, strip = fig.subplots(2, 1, sharex=True, height_ratios=[4, 1])
        diagonal, = ax.plot([0, 1], [0, 1], linestyle="--", color="#888888", linewidth=1)
        handles, labels = [], []
        for i, name, curve, points in series:
            colour = _colour(i)
            xs = [float(p["confidence"]) for p in points]
            ys = [_nan(p.get("accuracy")) for p in points]
            low = [_nan(p.get("low")) for p in points]
            high = [_nan(p.get("high")) for p in points]
            banded = [not (math.isnan(a) or math.isnan(b)) for a, b in zip(low, high)]
            ax.fill_between(xs, low, high, where=banded, color=colour, alpha=0.2, linewidth=0)
            line, = ax.plot(xs, ys, color=colour, linewidth=1.8)
            density = [number(p.get("density")) or 0.0 for p in points]
            peak = max(density) or 1.0
            scaled = [d / peak for d in density]
            strip.fill_between(xs, 0, scaled, color=colour, alpha=0.18, linewidth=0)
            strip.plot(xs, scaled, color=colour, linewidth=1)
            handles.append(line)
            labels.append(f"{name}: smooth ECE {fmt_metric(curve.get('smooth_ece'))}, "
                          f"bandwidth {fmt_metric(curve.get('bandwidth'))}")

        def line(name, x, p) -> str:
            if name is None:
                return f"confidence {x:.2f}"
            if p is None or number(p.get("accuracy")) is None:
                return f"{name}: too few examples near this confidence"
            return (f"{name}: accuracy {_band_text(p['accuracy'], p.get('low'), p.get('high'))}"
                    f", density {fmt_metric(p.get('density'))}")

        plotter.hover_columns(ax, *_columns(series, "confidence", line))
        _legend(fig, handles + [diagonal], labels + ["perfect calibration"], width=64)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_ylabel("accuracy (kernel-smoothed)")
        ax.set_title("Smoothed reliability curve")
        strip.set_ylim(0, 1.08)
        strip.set_yticks([])
        strip.set_ylabel("density")
        strip.set_xlabel("top-1 confidence (probability)")
        svg = plotter.svg(fig)
    first = series[0][2]
    return _figure(
        "smooth-reliability", svg, "Smoothed reliability curves with 95% bootstrap bands and "
        "densities of confidence, for " + ", ".join(n for _, n, _, _ in series),
        "Accuracy as a smooth function of confidence: a Gaussian kernel (reflected at 0 and 1) "
        "with the bandwidth the smooth ECE chooses as its fixed point (Blasiok and Nakkiran "
        "2023); the smooth ECE is the curve's mean distance, weighted by the density below, "
        "from the confidence smoothed the same way (the diagonal, where the bandwidth is "
        f"small). Shaded: {_share(first.get('level'))} pointwise bootstrap band "
        f"({first.get('resamples')} resamples of the examples, seed {first.get('seed')}) at "
        "that bandwidth; left out "
        f"where fewer than {first.get('min_examples_near')} examples lie within one "
        "bandwidth. Below: each run's density of confidences, scaled to its peak. Hover for "
        "the values.")


def risk_coverage_plot(plotter: _Plotter, runs: list[tuple[str, Any, Any]]) -> str:
    """The risk-coverage curve of every run with its bootstrap band; risk_at_80/90/95 marked
    and AURC in the legend, from the run's metrics."""
    series = []
    for i, (name, curves, metrics) in enumerate(runs):
        curve, points = _curve(curves, "risk_coverage", "coverage")
        points = [p for p in points if number(p.get("risk")) is not None]
        if points:
            series.append((i, name, (curve, metrics if isinstance(metrics, dict) else {}),
                           points))
    if not series:
        return _no_plot("no risk-coverage curve in the report")
    from matplotlib.lines import Line2D
    from matplotlib.ticker import PercentFormatter
    with plotter.figure() as fig:
        ax = fig.add_subplot()
        handles, labels = [], []
        for i, name, (_, metrics), points in series:
            colour = _colour(i)
            xs = [float(p["coverage"]) for p in points]
            low = [_nan(p.get("low")) for p in points]
            high = [_nan(p.get("high")) for p in points]
            banded = [not (math.isnan(a) or math.isnan(b)) for a, b in zip(low, high)]
            ax.fill_between(xs, low, high, where=banded, color=colour, alpha=0.2, linewidth=0)
            line, = ax.plot(xs, [float(p["risk"]) for p in points], color=colour, linewidth=1.8)
            marks = [(c / 100, number(metrics.get(f"risk_at_{c}"))) for c in COVERAGE_MARKS]
            marks = [(c, r) for c, r in marks if r is not None]
            if marks:
                ax.plot(*zip(*marks), linestyle="none", marker="o", markersize=6, color=colour,
                        markeredgecolor="white", zorder=4)
            handles.append(line)
            aurc = number(metrics.get("aurc"))  # left out of a page narrowed by --metrics
            labels.append(name if aurc is None else f"{name}: AURC {fmt_metric(aurc)}")
        handles.append(Line2D([], [], linestyle="none", marker="o", color="#57606a"))
        labels.append("risk at 80, 90, 95% coverage")

        def line(name, x, p) -> str:
            if name is None:
                return f"coverage {x:.0%}: the {x:.0%} most confident examples"
            if p is None:
                return f"{name}: —"
            mark = f" = risk_at_{round(x * 100)}" if round(x * 100, 6) in COVERAGE_MARKS else ""
            return (f"{name}: risk {_band_text(p['risk'], p.get('low'), p.get('high'))}{mark}, "
                    f"confidence ≥ {fmt_metric(p.get('threshold'))}")

        plotter.hover_columns(ax, *_columns(series, "coverage", line))
        _legend(fig, handles, labels, width=64)
        ax.set_xlim(0, 1.005)
        ax.set_ylim(bottom=0)
        ax.xaxis.set_major_formatter(PercentFormatter(1.0))
        ax.set_xlabel("coverage: share of examples kept, most confident first")
        ax.set_ylabel("risk: error rate of those kept")
        ax.set_title("Risk-coverage curve")
        svg = plotter.svg(fig)
    first = series[0][2][0]
    return _figure(
        "risk-coverage", svg, "Risk-coverage curves with 95% bootstrap bands, for "
        + ", ".join(n for _, n, _, _ in series),
        "The error rate among the most confident examples, as more are kept (Geifman and "
        "El-Yaniv 2017); examples of equal confidence are kept together, the group at a cut in "
        "proportion. Lower is better at every coverage; AURC is the area under the curve, and "
        f"the dots are risk_at_80, 90 and 95. Shaded: {_share(first.get('level'))} pointwise "
        f"bootstrap band ({first.get('resamples')} resamples of the examples, seed "
        f"{first.get('seed')}). Hover for the values and the confidence threshold of each "
        "coverage.")


def reliability_plot(plotter: _Plotter, runs: list[tuple[str, Any]]) -> str:
    """Reliability diagram of every run overlaid: one point per non-empty bin at (mean
    confidence, accuracy) with the accuracy's interval, marker area proportional to the
    bin's examples."""
    series = []
    for i, (name, bins) in enumerate(runs):
        found = [(p, b) for b in _bins(bins)
                 if (p := _numbers(b, "mean_confidence", "accuracy", "count")) is not None
                 and p[2] > 0]
        if found:
            series.append((i, name, sorted(found, key=lambda f: f[0])))
    if not series:
        return _no_plot("no confidence bins with examples: no reliability diagram")
    biggest = max(p[2] for _, _, found in series for p, _ in found)
    from matplotlib.lines import Line2D
    with plotter.figure() as fig:
        ax = fig.add_subplot()
        diagonal, = ax.plot([0, 1], [0, 1], linestyle="--", color="#888888", linewidth=1)
        handles, labels = [], []
        for i, name, found in series:
            colour = _colour(i)
            xs = [p[0] for p, _ in found]
            ys = [p[1] for p, _ in found]
            errors = _error_sizes(ys, [b.get("accuracy_low") for _, b in found],
                                  [b.get("accuracy_high") for _, b in found])
            if errors is not None:
                ax.errorbar(xs, ys, yerr=errors, fmt="none", ecolor=colour, elinewidth=1.1,
                            capsize=2.5, alpha=0.9, zorder=2)
            ax.plot(xs, ys, color=colour, linewidth=1.4, alpha=0.8)
            for (x, y, count), b in found:
                marker = ax.scatter([x], [y], s=12 + 300 * (count / biggest), color=colour,
                                    alpha=0.65, edgecolors="white", linewidths=0.6, zorder=3)
                plotter.tip(marker, f"{name}, confidence {fmt_metric(b['lower'])} to "
                            f"{fmt_metric(b['upper'])}: accuracy "
                            + _band_text(y, b.get("accuracy_low"), b.get("accuracy_high"),
                                         "Wilson 95%")
                            + f", mean confidence {fmt_metric(x)}, {_examples(count)}")
            # the legend's handle: the line with a mid-sized marker (not the first bin's)
            handles.append(Line2D([], [], color=colour, linewidth=1.4, marker="o",
                                  markersize=7, alpha=0.8))
            labels.append(name)
        _legend(fig, handles + [diagonal], labels + ["perfect calibration"])
        ax.set_xlim(-0.02, 1.02)  # points at 0 or 1 are drawn whole
        ax.set_ylim(-0.03, 1.03)
        ax.set_xlabel("mean top-1 confidence in bin (probability)")
        ax.set_ylabel("accuracy in bin (fraction correct)")
        ax.set_title("Reliability diagram (marker area ∝ examples in bin)")
        svg = plotter.svg(fig)
    return _figure("reliability", svg, "Reliability diagram: accuracy against mean confidence "
                   "per confidence bin, with 95% intervals, for "
                   + ", ".join(n for _, n, _ in series),
                   "Accuracy of each equal-width confidence bin at the bin's mean confidence; "
                   "bars: Wilson 95% interval of the bin's accuracy (from its examples and "
                   "hits). Points below the dashed diagonal are over-confident bins (confidence "
                   "above accuracy); points above it are under-confident. Hover for the values.")


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
            lefts = [lo + (hi - lo) * slot / len(series) for lo, hi, _ in bars]
            widths = [(hi - lo) / len(series) for lo, hi, _ in bars]
            handle = ax.bar(lefts, [c for _, _, c in bars], width=widths, align="edge",
                            color=_colour(i), alpha=0.85, linewidth=0)
            for patch, (lo, hi, count) in zip(handle.patches, bars):
                plotter.tip(patch, f"{name}, confidence {fmt_metric(lo)} to {fmt_metric(hi)}: "
                            f"{_examples(count)}")
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
        svg = plotter.svg(fig)
    return _figure("confidence-histogram", svg, "Histogram of top-1 confidence, examples per "
                   "bin, for " + ", ".join(n for _, n, _ in series),
                   "Counts of this validation set, exact: no interval (the reliability "
                   "diagram's intervals carry the sampling noise of each bin).")


def _thousands():
    from matplotlib.ticker import FuncFormatter  # matplotlib is there: a plot is being drawn
    return FuncFormatter(lambda v, _: f"{v:,.0f}" if v == int(v) else f"{v:,.1f}")


FLIP_ORDER = ("both_correct", "fixed", "broken", "both_wrong")


def _bar_labels(ax, xs: list[float], values: list[float], errors, horizontal: bool = False
                ) -> None:
    """Each bar's value beyond its end, and beyond its interval where it has one."""
    for j, (x, v) in enumerate(zip(xs, values)):
        end = v + (errors[1][j] if v >= 0 else -errors[0][j]) if errors else v
        offset = (0, 3) if v >= 0 else (0, -3)
        if horizontal:
            offset = offset[::-1]
        ax.annotate(fmt_signed(v), (end, x) if horizontal else (x, end), xytext=offset,
                    textcoords="offset points", fontsize=8,
                    ha=("left" if v >= 0 else "right") if horizontal else "center",
                    va="center" if horizontal else ("bottom" if v >= 0 else "top"))


def nll_flip_plot(plotter: _Plotter, report: dict, colours: dict[str, str]) -> str:
    """The change of mean NLL split over both-correct / fixed / broken / both-wrong examples,
    with the total, one bar per candidate in each group, each with its interval."""
    series = []
    for comparison in comparisons_of(report):
        rows = {str(g.get("group")): g for g in _get_list(comparison, "explanation",
                                                          "nll_by_flip")
                if isinstance(g, dict)}
        groups = {k: number(g.get("contribution")) for k, g in rows.items()}
        if not any(v is not None for v in groups.values()):
            continue
        nll = (comparison.get("deltas") or {}).get("nll")
        nll = nll if isinstance(nll, dict) else {}
        total = number(nll.get("delta"))
        known = [v for v in groups.values() if v is not None]
        if total is None and groups and len(known) == len(groups):
            total = sum(known)
        intervals = {k: (g.get("ci_low"), g.get("ci_high")) for k, g in rows.items()}
        intervals["total"] = (nll.get("ci_low"), nll.get("ci_high"))
        series.append((str(comparison.get("candidate") or "candidate"), groups, total,
                       intervals, {k: g.get("count") for k, g in rows.items()}))
    if not series:
        return _no_plot("no NLL decomposition by example group in the report")
    keys = [k for k in FLIP_ORDER if any(k in g for _, g, _, _, _ in series)]
    keys += sorted({k for _, g, _, _, _ in series for k in g} - set(keys))
    names = [FLIP_GROUPS.get(k, k.replace("_", " ")).replace(" (", "\n(") for k in keys]
    names.append("total\n(all examples)")
    baseline = _baseline_name(report)
    with plotter.figure() as fig:
        ax = fig.add_subplot()
        width = 0.8 / len(series)
        handles, labels = [], []
        for slot, (candidate, groups, total, intervals, counts) in enumerate(series):
            values = [groups.get(k) for k in keys] + [total]
            xs = [j - 0.4 + width * (slot + 0.5) for j in range(len(values))]
            colour = colours.get(candidate, _colour(slot + 1))
            drawn = [(x, v, k) for x, v, k in zip(xs, values, [*keys, "total"])
                     if v is not None]
            handle = ax.bar([x for x, _, _ in drawn], [v for _, v, _ in drawn],
                            width=width * 0.92, color=colour, alpha=0.9)
            # the total is hatched: it is the sum of the other bars
            if values[-1] is not None:
                handle.patches[-1].set_hatch("//")
                handle.patches[-1].set_edgecolor("white")
            errors = _error_sizes([v for _, v, _ in drawn],
                                  [intervals.get(k, (None, None))[0] for _, _, k in drawn],
                                  [intervals.get(k, (None, None))[1] for _, _, k in drawn])
            if errors is not None:
                ax.errorbar([x for x, _, _ in drawn], [v for _, v, _ in drawn], yerr=errors,
                            fmt="none", ecolor="#1f2328", elinewidth=1, capsize=3, zorder=3)
            if len(series) <= 3:
                _bar_labels(ax, [x for x, _, _ in drawn], [v for _, v, _ in drawn], errors)
            for patch, (_, v, k) in zip(handle.patches, drawn):
                group = "all examples" if k == "total" else FLIP_GROUPS.get(k, k)
                count = "" if k == "total" else f", {_examples(counts.get(k))}"
                plotter.tip(patch, f"{candidate} − {baseline}, {group}: "
                            + _band_text(v, *intervals.get(k, (None, None)),
                                         f"{_level(report)} CI")
                            + count)
            handles.append(handle)
            labels.append(f"{candidate} − {baseline}")
        ax.axhline(0, color="#444444", linewidth=0.8)
        ax.set_xticks(range(len(names)), names)
        ax.margins(y=0.15)
        ax.set_ylabel("contribution to Δ mean NLL (nats)")
        ax.set_xlabel("examples, by correctness in baseline → candidate")
        ax.set_title("Change of mean NLL by example group")
        _legend(fig, handles, labels)
        svg = plotter.svg(fig)
    has_ci = any(number(lo) is not None for *_, intervals, _ in series
                 for k, (lo, _) in intervals.items() if k != "total")
    return _figure("nll-by-flip", svg, "Bar chart: contribution of each example group to the "
                   f"change of mean NLL, per candidate, with {_level(report)} intervals",
                   "Each bar is the group's part of the change of mean NLL (candidate minus "
                   f"baseline {baseline}); the groups add up to the hatched total. Below zero: "
                   f"the candidate's loss is lower there. Lines: {_level(report)} intervals, "
                   "the total's from the metric table"
                   + ("; a group's the t interval of its contribution (a mean over all "
                      "examples)" if has_ci else "; none on the groups (groups of runs: an "
                      "interval over examples alone would leave out the seeds)")
                   + ". Hover for the values.")


def class_plot(plotter: _Plotter, report: dict, comparison: dict) -> str:
    """The classes that moved the ranked metric most, as horizontal contribution bars (the
    top ``PLOT_CLASSES`` by |contribution|) with their intervals, labelled with class
    names."""
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
        bars = ax.barh(ys, values, color=colours, alpha=0.9, height=0.7)
        errors = _error_sizes(values, [r.get("ci_low") for r in rows],
                              [r.get("ci_high") for r in rows])
        if errors is not None:
            ax.errorbar(values, ys, xerr=errors, fmt="none", ecolor="#1f2328", elinewidth=1,
                        capsize=2.5, zorder=3)
        for patch, row in zip(bars.patches, rows):
            plotter.tip(patch, f"{_class_label(row)}: contribution "
                        + _band_text(row["contribution"], row.get("ci_low"), row.get("ci_high"),
                                     f"{_level(report)} CI")
                        + f"; recall {fmt_metric(row.get('baseline_recall'))} → "
                        f"{fmt_metric(row.get('candidate_recall'))}, mean NLL "
                        f"{fmt_metric(row.get('baseline_nll'))} → "
                        f"{fmt_metric(row.get('candidate_nll'))}, {_examples(row.get('support'))}")
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
        svg = plotter.svg(fig)
    intervals = (f"lines: the {_level(report)} t interval of each class's contribution (a "
                 "mean over all examples)" if errors is not None else
                 "no intervals (none for macro F1, whose classes' F1 are not sums over "
                 "examples, nor for groups of runs)")
    return _figure(f"classes-{candidate}", svg,
                   f"Horizontal bars: per-class contribution to the change of {metric}, "
                   f"{candidate} against {baseline}, with {_level(report)} intervals",
                   f"{shown} by |contribution|; {intervals}. The table below lists them with "
                   "recall and mean NLL; hover for the values.")


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
    headline table, calibration line, the plots (smoothed reliability curve, reliability
    diagram, risk-coverage curve, confidence histogram), then the breakdowns (loss anatomy,
    reliability table, class groups, worst classes, slices, noise floor) and warnings.
    Raises UsageError when matplotlib is not installed."""
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
    curves = report.get("curves")
    body.append("<h2>Plots</h2>")
    body.append(_plots([smooth_reliability_plot(plotter, [(name, curves)]),
                        reliability_plot(plotter, runs),
                        risk_coverage_plot(plotter, [(name, curves, report.get("metrics"))]),
                        histogram_plot(plotter, runs)]))
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
    (decision coloured) and the best run, the runs table, plots (all runs on one axis:
    smoothed reliability curves, reliability diagrams, risk-coverage curves, confidence
    histograms; the NLL change by example group per candidate, the classes that moved the
    primary metric most per candidate), then per candidate the reasons,
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
    names = [_run_name(r, i) for i, r in enumerate(runs)]
    named = [(name, r.get("confidence_bins")) for name, r in zip(names, runs)]
    colours = {name: _colour(i) for i, name in enumerate(names)}
    body.append("<h2>Plots</h2>")
    body.append(_plots([
        smooth_reliability_plot(plotter, [(n, r.get("curves")) for n, r in zip(names, runs)]),
        reliability_plot(plotter, named),
        risk_coverage_plot(plotter, [(n, r.get("curves"), r.get("metrics"))
                                     for n, r in zip(names, runs)]),
        histogram_plot(plotter, named),
        nll_flip_plot(plotter, report, colours),
        *(class_plot(plotter, report, comparison) for comparison in comparisons_of(report))]))

    for comparison in comparisons_of(report):
        body += _candidate(report, comparison)
    body.append(_warnings(report))
    return _page(f"metricdiff: {title}", body)
