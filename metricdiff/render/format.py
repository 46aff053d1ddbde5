"""How many digits a metric gets, and how a table of strings fits a width: the two layout
rules every renderer shares, written once.

``digits`` is set for one rendering (``with metric_digits(6): ...``) and read by
``common.fmt_metric``; a context variable, so renderers never pass it around and two
threads rendering at once cannot disturb each other.

``fit`` works on plain strings (a ``common.Grid``), not on rich objects, so the terminal
layout is testable without a console: a table that is too wide first gets shorter headers,
then shorter text cells (never numbers), then loses its optional columns in their order of
priority, and says which.
"""

from __future__ import annotations

import unicodedata
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Iterator

if TYPE_CHECKING:  # common imports this module; only the type is needed here
    from .common import Grid

DEFAULT_DIGITS = 4
_DIGITS: ContextVar[int] = ContextVar("metricdiff_digits", default=DEFAULT_DIGITS)


def digits() -> int:
    """Digits after the decimal point of a metric value in this rendering."""
    return _DIGITS.get()


@contextmanager
def metric_digits(count: int | None) -> Iterator[None]:
    """Render metric values with ``count`` decimals inside the block (None: the default)."""
    token = _DIGITS.set(DEFAULT_DIGITS if count is None else int(count))
    try:
        yield
    finally:
        _DIGITS.reset(token)


# ----------------------------------------------------------------------------- width

ELLIPSIS = "…"
MIN_TEXT = 12  # a text cell is never shortened below this many characters
# Words of headers, shortened when a table is too wide for its console.
ABBREVIATIONS = {"baseline": "base", "candidate": "cand", "confidence": "conf",
                 "contribution": "contrib", "predicted": "pred", "overconfidence": "overconf",
                 "accuracy": "acc", "precision": "prec", "different": "diff",
                 "(baseline)": "(base)", "baseline)": "base)", "support": "supp"}


@dataclass
class Fitted:
    """A grid laid out for a width: the grid itself and the headers of the columns left out."""

    grid: Grid
    dropped: list[str]


def display_width(text: str) -> int:
    """Columns on screen: East Asian wide characters take two, combining marks none."""
    return sum(0 if unicodedata.combining(ch) else
               2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def column_widths(grid: Grid) -> list[int]:
    return [max([display_width(h)] + [display_width(row[i].text) for row in grid.rows
                                       if i < len(row)])
            for i, h in enumerate(grid.columns)]


def grid_width(grid: Grid, gap: int) -> int:
    """Width of the grid's table: its columns and ``gap`` characters between two columns."""
    widths = column_widths(grid)
    return sum(widths) + gap * max(0, len(widths) - 1)


def shorten(text: str, width: int, middle: bool = False) -> str:
    """``text`` in at most ``width`` characters, cut with an ellipsis at the end (or,
    ``middle``, in the middle, which keeps what tells similar names apart)."""
    if display_width(text) <= width:
        return text
    if width <= 1:
        return ELLIPSIS[:width]
    if middle:
        tail = (width - 1) // 2
        return text[:width - 1 - tail] + ELLIPSIS + (text[-tail:] if tail else "")
    return text[:width - 1] + ELLIPSIS


def abbreviate(header: str) -> str:
    """A header with its long words abbreviated ('baseline NLL' -> 'base NLL')."""
    return ABBREVIATIONS.get(header) or " ".join(ABBREVIATIONS.get(w, w)
                                                 for w in header.split(" "))


def keep_columns(grid: Grid, keep: list[int]) -> Grid:
    """The grid with only the columns at the indices ``keep``."""
    styles = grid.column_styles
    return replace(grid, columns=[grid.columns[i] for i in keep],
                   align=[grid.align[i] for i in keep],
                   rows=[[row[i] for i in keep] for row in grid.rows],
                   column_styles=[styles[i] for i in keep] if styles else None,
                   optional=tuple(c for c in grid.optional
                                  if c in [grid.columns[i] for i in keep]))


def fit(grid: Grid, width: int, gap: int) -> Fitted:
    """The grid laid out in at most ``width`` characters, ``gap`` between columns.

    In order, until it fits: headers wider than their column's cells are abbreviated; the
    grid's ``optional`` columns are left out, first first; text columns after the first
    (meanings, labels) are cut with an ellipsis down to MIN_TEXT; the first column (names)
    is cut in the middle down to MIN_TEXT; then columns are left out from the right. Numbers
    (right-aligned columns) are never cut. The result may still be wider than ``width``
    when the first two columns alone are (a console narrower than any table)."""
    if grid_width(grid, gap) <= width:
        return Fitted(grid, [])
    names = list(grid.columns)
    keep = list(range(len(names)))
    dropped: list[str] = []

    def shown() -> Grid:
        return keep_columns(work, keep)

    def excess() -> int:
        return grid_width(shown(), gap) - width

    cells = column_widths(replace(grid, columns=[""] * len(names)))
    work = replace(grid, columns=[abbreviate(h) if display_width(h) > cells[i] else h
                                  for i, h in enumerate(names)])
    for name in grid.optional:
        if excess() <= 0:
            break
        if name in names and names.index(name) in keep and len(keep) > 2:
            keep.remove(names.index(name))
            dropped.append(name.strip())
    for index in keep[1:]:
        if excess() > 0 and work.align[index] == "left":
            work = _shorten(work, index, excess(), middle=False)
    if excess() > 0:
        work = _shorten(work, 0, excess(), middle=True)
    while excess() > 0 and len(keep) > 2:
        dropped.append(names[keep.pop()].strip())
    return Fitted(shown(), dropped)


def _shorten(grid: Grid, index: int, excess: int, middle: bool) -> Grid:
    """Column ``index`` made up to ``excess`` characters narrower, never below MIN_TEXT nor
    below its header."""
    current = column_widths(grid)[index]
    target = max(MIN_TEXT, display_width(grid.columns[index]), current - excess)
    if target >= current:
        return grid
    rows = [[replace(cell, text=shorten(cell.text, target, middle)) if i == index else cell
             for i, cell in enumerate(row)] for row in grid.rows]
    return replace(grid, rows=rows)


def left_out_note(dropped: list[str], width: int) -> str:
    """The footnote of a table that lost columns: '(rel., baseline left out to fit 80
    columns)'."""
    return f"({', '.join(dropped)} left out to fit {width} columns)"
