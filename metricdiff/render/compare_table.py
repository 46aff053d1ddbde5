"""The terminal view of a comparison: verdicts first, then the runs side by side, then one
block per candidate (metric changes, why the metrics disagree, where the change comes from).

Content comes from the grids in ``common.py``; the table layout (numeric columns never cut,
every cell a literal ``rich.text.Text``) is the one of the single-run report in ``table.py``.
Colour is the caller's Console's choice.
"""

from __future__ import annotations

from rich.console import Console
from rich.rule import Rule
from rich.table import Table
from rich.text import Text

from .common import (DASH, TITLE_DELTAS, TITLE_GROUPS_RUNS, TITLE_RUNS, TITLE_VERDICT,
                     TITLE_WHERE, Cell, Grid,
                     best_parts, candidate_heading, cluster_line, comparison_facts, comparisons_of,
                     decision_cell, delta_grid, detect_line, disagreement_line, fail_line,
                     flip_section, grouped, groups_grid, methods_note, noise_line, ranked_sections,
                     reason_lines, runs_grid, seed_noise_section, summary_grid, verdict_grid,
                     why_title)
from .format import grid_width, keep_columns
from .table import COLUMN_GAP, INDENT, _indent, _section, _text, print_table, print_warnings

def _verdicts(grid: Grid) -> Table:
    """The verdict lines: candidate, decision, reason; no header, the reason folds."""
    table = Table(box=None, show_header=False, show_edge=False, pad_edge=False,
                  padding=(0, 2, 0, 0))
    for i, _ in enumerate(grid.columns):
        last = i == len(grid.columns) - 1
        widest = max([0] + [len(row[i].text) for row in grid.rows])
        table.add_column(no_wrap=not last, min_width=None if last else widest,
                         overflow="fold")
    for row in grid.rows:
        table.add_row(*(_text(cell) for cell in row))
    return table


def _split(console: Console, grid: Grid, keep: int) -> list[Grid]:
    """The grid as one table, or (too wide for the console) several, each repeating the first
    ``keep`` columns and holding as many of the others as fit."""
    room = console.width - INDENT
    if grid_width(grid, COLUMN_GAP) <= room:
        return [grid]
    rest = list(range(keep, len(grid.columns)))
    parts = []
    while rest:
        take = 1
        while take < len(rest) and grid_width(keep_columns(
                grid, list(range(keep)) + rest[:take + 1]), COLUMN_GAP) <= room:
            take += 1
        parts.append(keep_columns(grid, list(range(keep)) + rest[:take]))
        rest = rest[take:]
    return parts


def _bullets(console: Console, lines: list[str]) -> None:
    for line in lines:
        bullet = Table(box=None, show_header=False, show_edge=False, pad_edge=False,
                       padding=(0, 1, 0, 0))
        bullet.add_column(no_wrap=True)
        bullet.add_column(overflow="fold")
        bullet.add_row(Text("•"), Text(line))
        console.print(_indent(bullet))


def _candidate(console: Console, report: dict, comparison: dict) -> None:
    decision = decision_cell((comparison.get("verdict") or {}).get("decision"))
    console.print()
    console.print(Rule(Text.assemble((candidate_heading(comparison) + ": ", "bold"),
                                     _text(Cell(decision.text, "strong"),
                                           decision.style)),
                       align="left", style="dim"))
    console.print()
    console.print(Text(TITLE_DELTAS, style="bold underline"))
    print_table(console, delta_grid(comparison, report, DASH))
    console.print(_indent(_text(methods_note(comparison, report))))
    for line in (noise_line(comparison), cluster_line(comparison),
                 detect_line(comparison, report)):
        if line is not None:
            console.print(_indent(_text(line)))

    console.print()
    console.print(Text(why_title(comparison, report), style="bold underline"))
    console.print(_indent(_text(disagreement_line(comparison, report))))
    _bullets(console, reason_lines(comparison))
    flips = flip_section(comparison, report, DASH)
    if flips is not None:
        _section(console, flips)

    ranked = ranked_sections(comparison, report, DASH)
    if ranked:
        console.print()
        console.print(Text(TITLE_WHERE, style="bold"))
        for section in ranked:
            _section(console, section)


def _verdict_block(console: Console, report: dict) -> None:
    """The answer: a verdict per candidate, the best run, --fail-on, the noise covered."""
    verdicts = verdict_grid(report)
    if verdicts.rows:
        console.print(_indent(_verdicts(verdicts)))
    console.print(_indent(Text.assemble(*(_text(cell) for cell in best_parts(report)))))
    failed = fail_line(report)
    if failed is not None:
        console.print(_indent(_text(failed)))
    for comparison in comparisons_of(report)[:1]:  # the same sources for every candidate
        console.print(_indent(_text(noise_line(comparison))))


def render_comparison(report: dict, console: Console) -> None:
    """Print a comparison (the dict from ``ComparisonReport.to_dict()``) to ``console``: the
    verdicts first, everything else, and the verdicts again, so the last screen holds the
    answer."""
    console.print(Text.assemble(("metricdiff compare", "bold"),
                                ("  " + comparison_facts(report, DASH), "dim")))
    _verdict_block(console, report)

    runs = groups_grid(report, DASH) if grouped(report) else runs_grid(report, DASH)
    console.print()
    console.print(Text(TITLE_GROUPS_RUNS if grouped(report) else TITLE_RUNS,
                       style="bold underline"))
    if runs.rows:
        for part in _split(console, runs, keep=2):
            print_table(console, part)
    else:
        console.print(_indent(Text("(no metrics)", style="dim")))
    floor = seed_noise_section(report, DASH)
    if floor is not None:
        _section(console, floor)

    for comparison in comparisons_of(report):
        _candidate(console, report, comparison)

    print_warnings(console, report)
    console.print()
    console.print(Rule(Text(TITLE_VERDICT, style="bold"), align="left", style="dim"))
    _verdict_block(console, report)


def render_summary(report: dict, console: Console) -> None:
    """``--summary``: one line per candidate under a header line, fitted to the console, and
    the noise sources the intervals cover."""
    print_table(console, summary_grid(report, DASH), indent=0)
    for comparison in comparisons_of(report)[:1]:  # the same sources for every candidate
        console.print(_text(noise_line(comparison)))
