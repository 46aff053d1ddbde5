"""The terminal report: compact rich tables, headline first, breakdowns after.

Colour is decided by the caller's Console (``no_color``, ``color_system=None``, NO_COLOR); this
module only attaches styles. Every cell is a ``rich.text.Text``, so class names and slice
values such as ``[red]`` are printed literally, never read as markup.
"""

from __future__ import annotations

import re
from dataclasses import replace

from rich import box
from rich.console import Console
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

from .common import (DASH, TITLE_CALIBRATION, TITLE_WARNINGS, Cell, Grid, Section,
                     calibration_line, headline_grid, sections, title_line, warnings_of)
from .format import column_widths, fit, left_out_note

STYLES = {"bad": "red", "warn": "yellow", "good": "green", "dim": "dim", "strong": "bold"}
INDENT = 2
COLUMN_GAP = 2  # between two columns: the box's blank vertical line and one space


# Control characters (escape sequences in a class name, say) would drive the terminal: each
# is shown as its \x.. escape instead.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def _text(cell: Cell, column_style: str | None = None) -> Text:
    style = " ".join(STYLES[s] for s in (column_style, cell.style) if s in STYLES)
    return Text(_CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", cell.text), style=style)


def _escaped(grid: Grid) -> Grid:
    """The grid with control characters already shown as escapes, so widths are measured on
    what is printed."""
    rows = [[replace(cell, text=_CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", cell.text))
             for cell in row] for row in grid.rows]
    return replace(grid, rows=rows)


def _table(grid: Grid, width: int) -> tuple[Table, list[str]]:
    """The grid as a table of at most ``width`` characters (``format.fit``: shorter headers
    and text, optional columns left out; numbers never cut) and the columns left out. Every
    column is exactly as wide as its widest cell, so rich never wraps or crops a row."""
    fitted = fit(_escaped(grid), width, COLUMN_GAP)
    grid = fitted.grid
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, padding=(0, 1, 0, 0),
                  header_style="bold")
    styles = grid.column_styles or [None] * len(grid.columns)
    for header, align, size in zip(grid.columns, grid.align, column_widths(grid)):
        table.add_column(_text(Cell(header)), justify="right" if align == "right" else "left",
                         no_wrap=True, width=size, overflow="ellipsis")
    for row in grid.rows:
        table.add_row(*(_text(cell, style) for cell, style in zip(row, styles)))
    return table, fitted.dropped


def print_table(console: Console, grid: Grid, indent: int = INDENT) -> None:
    """The grid as an indented table fitted to the console, with a footnote naming the
    columns left out (and the console's real width) when it had to drop some."""
    table, dropped = _table(grid, console.width - indent)
    console.print(_indent(table, indent=indent))
    if dropped:
        console.print(_indent(Text(left_out_note(dropped, console.width), style="dim"),
                              indent=indent))


def _indent(renderable, top: int = 0, indent: int = INDENT) -> Padding:
    return Padding(renderable, (top, 0, 0, indent), expand=False)


def _section(console: Console, section: Section) -> None:
    console.print()
    console.print(Text(section.title, style="bold underline"))
    for note in section.intro:
        console.print(_indent(_text(note)))
    if section.note:
        console.print(_indent(Text(section.note, style="dim")))
    if section.grid is not None and section.grid.rows:
        print_table(console, section.grid)
    elif section.grid is not None:
        console.print(_indent(Text("(nothing to show)", style="dim")))
    for note in section.outro:
        console.print(_indent(_text(note)))


def render_report(report: dict, console: Console) -> None:
    """Print the report of one run (the dict from ``RunReport.to_dict()``) to ``console``."""
    name, facts = title_line(report, DASH)
    console.print(Text.assemble(("metricdiff report  ", "bold"), (name, "bold cyan"),
                                ("  " + facts, "")))
    console.print()
    print_table(console, headline_grid(report, DASH))
    verdict = calibration_line(report, DASH)
    if verdict is not None:
        console.print()
        console.print(Text.assemble((TITLE_CALIBRATION + ": ", "bold"), _text(verdict)))
    for section in sections(report, DASH):
        _section(console, section)
    print_warnings(console, report)


def print_warnings(console: Console, report: dict) -> None:
    warnings = warnings_of(report)
    if warnings:
        console.print()
        console.print(Text(TITLE_WARNINGS, style="bold yellow underline"))
        for warning in warnings:
            console.print(_indent(Text("! " + warning, style="yellow")))
