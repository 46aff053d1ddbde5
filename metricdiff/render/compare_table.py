"""The terminal view of a comparison: verdicts first, then the runs side by side, then one
block per candidate (metric changes, why the metrics disagree, where the change comes from).

Content comes from the grids in ``common.py``; the table layout (numeric columns never cut,
every cell a literal ``rich.text.Text``) is the one of the single-run report in ``table.py``.
Colour is the caller's Console's choice.
"""

from __future__ import annotations

from rich.console import Console
from rich.measure import Measurement
from rich.rule import Rule
from rich.table import Table
from rich.text import Text

from .common import (DASH, TITLE_DELTAS, TITLE_GROUPS_RUNS, TITLE_RUNS, TITLE_WHERE, Cell, Grid,
                     best_parts, candidate_heading, cluster_line, comparison_facts, comparisons_of,
                     decision_cell, delta_grid, detect_line, disagreement_line, fail_line,
                     flip_section, grouped, groups_grid, methods_note, noise_line, ranked_sections,
                     reason_lines, runs_grid, seed_noise_section, verdict_grid, why_title)
from .table import INDENT, _indent, _section, _table, _text, print_warnings

# Columns of the delta table left out, in this order, when a console is too narrow for it.
OPTIONAL_DELTA_COLUMNS = ("rel.", "baseline")


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


def _fits(console: Console, table: Table) -> bool:
    return Measurement.get(console, console.options, table).minimum <= console.width - INDENT


def _columns(grid: Grid, keep: list[int]) -> Grid:
    styles = grid.column_styles
    return Grid([grid.columns[i] for i in keep], [grid.align[i] for i in keep],
                [[row[i] for i in keep] for row in grid.rows],
                [styles[i] for i in keep] if styles else None)


def _fitted(console: Console, grid: Grid,
            optional: tuple[str, ...]) -> tuple[Table, list[str]]:
    """The grid's table, leaving out optional columns (in order) until it fits the console:
    rich would otherwise crop the columns on the right, numbers included."""
    dropped: list[str] = []
    table = _table(grid)
    for name in optional:
        if _fits(console, table) or name not in grid.columns:
            break
        dropped.append(name)
        table = _table(_columns(grid, [i for i, c in enumerate(grid.columns)
                                       if c not in dropped]))
    return table, dropped


def _split(console: Console, grid: Grid, keep: int) -> list[Table]:
    """The grid as one table, or (too wide for the console) several, each repeating the first
    ``keep`` columns and holding as many of the others as fit."""
    if _fits(console, _table(grid)):
        return [_table(grid)]
    rest = list(range(keep, len(grid.columns)))
    tables = []
    while rest:
        take = 1
        while take < len(rest) and _fits(console, _table(_columns(
                grid, list(range(keep)) + rest[:take + 1]))):
            take += 1
        tables.append(_table(_columns(grid, list(range(keep)) + rest[:take])))
        rest = rest[take:]
    return tables


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
    table, dropped = _fitted(console, delta_grid(comparison, report, DASH),
                             OPTIONAL_DELTA_COLUMNS)
    console.print()
    console.print(Text(TITLE_DELTAS, style="bold underline"))
    console.print(_indent(table))
    console.print(_indent(_text(methods_note(comparison, report))))
    for line in (noise_line(comparison), cluster_line(comparison),
                 detect_line(comparison, report)):
        if line is not None:
            console.print(_indent(_text(line)))
    if dropped:
        console.print(_indent(Text(f"({', '.join(dropped)} left out to fit {console.width} "
                                   "columns)", style="dim")))

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


def render_comparison(report: dict, console: Console) -> None:
    """Print a comparison (the dict from ``ComparisonReport.to_dict()``) to ``console``."""
    verdicts = verdict_grid(report)
    console.print(Text.assemble(("metricdiff compare", "bold"),
                                ("  " + comparison_facts(report, DASH), "dim")))
    if verdicts.rows:
        console.print(_indent(_verdicts(verdicts)))
    console.print(_indent(Text.assemble(*(_text(cell) for cell in best_parts(report)))))
    failed = fail_line(report)
    if failed is not None:
        console.print(_indent(_text(failed)))
    for comparison in comparisons_of(report)[:1]:  # the same sources for every candidate
        console.print(_indent(_text(noise_line(comparison))))

    runs = groups_grid(report, DASH) if grouped(report) else runs_grid(report, DASH)
    console.print()
    console.print(Text(TITLE_GROUPS_RUNS if grouped(report) else TITLE_RUNS,
                       style="bold underline"))
    if runs.rows:
        for table in _split(console, runs, keep=2):
            console.print(_indent(table))
    else:
        console.print(_indent(Text("(no metrics)", style="dim")))
    floor = seed_noise_section(report, DASH)
    if floor is not None:
        _section(console, floor)

    for comparison in comparisons_of(report):
        _candidate(console, report, comparison)

    print_warnings(console, report)
