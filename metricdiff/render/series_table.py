"""The terminal view of a series: the answer first (where NLL and accuracy are best, the
diagnosis, for two series the tally of verdicts), then the tables, then the answer again, so
the last screen holds it. Content from ``series_view.py``; layout as the other terminal views
(``table.py``: tables fitted to the console, numbers never cut)."""

from __future__ import annotations

from rich.console import Console
from rich.rule import Rule
from rich.text import Text

from .common import DASH
from .series_view import (TITLE_ANSWER, answer_lines, facts_line, series_of, series_sections,
                          verdict_section)
from .table import _indent, _section, _text, print_warnings


def _answer(console: Console, document: dict) -> None:
    for line in answer_lines(document):
        console.print(_indent(_text(line)))


def render_series(report: dict, console: Console) -> None:
    """Print a series (the dict from ``SeriesReport.to_dict()``) to ``console``."""
    document = report
    console.print(Text.assemble(("metricdiff series", "bold"),
                                ("  " + facts_line(document, DASH), "dim")))
    _answer(console, document)
    verdicts = verdict_section(document, DASH)
    if verdicts is not None:
        _section(console, verdicts)
    for entry in series_of(document):
        for section in series_sections(entry, document, DASH):
            _section(console, section)
    print_warnings(console, document)
    console.print()
    console.print(Rule(Text(TITLE_ANSWER, style="bold"), align="left", style="dim"))
    _answer(console, document)
