"""The report as GitHub-flavoured markdown: headline table first, then ``###`` sections.

Same content as the terminal report (both come from the grids in ``metricdiff.render``); long
tables are folded into ``<details>`` blocks. Text from the data (run names, class names, slice
values) is escaped, so a ``|`` in a class name cannot break a table.
"""

from __future__ import annotations

import html
import re

from .common import (TITLE_CALIBRATION, TITLE_WARNINGS, Cell, Grid, Section, calibration_line,
               headline_grid, sections, title_line, warnings_of)

MISSING = "–"  # an undefined value in markdown
_SPECIAL = set("\\`*_[]<|~&")  # escaped anywhere
_LEADING = set("#>+-=!")  # escaped at the start of a line only
_IDENTIFIER = re.compile(r"[A-Za-z][A-Za-z0-9_]*")


def md_escape(text: str, line_start: bool = True) -> str:
    """Plain text safe inside a markdown paragraph or (``line_start=False``) a pipe-table cell:
    markdown punctuation is backslash-escaped (so '|' becomes '\\|'), newlines become spaces."""
    text = " ".join(str(text).splitlines())
    out = "".join("\\" + ch if ch in _SPECIAL else ch for ch in text)
    return "\\" + out if line_start and out[:1] in _LEADING else out


def _metric_name(text: str) -> str:
    """Metric names are identifiers: shown as code (`top5_accuracy`), not escaped prose."""
    return f"`{text}`" if _IDENTIFIER.fullmatch(text) else md_escape(text, line_start=False)


def _cell(text: str) -> str:
    return md_escape(text, line_start=False) if text else " "


def pipe_table(grid: Grid, escaped_first: bool = False) -> list[str]:
    """A pipe table: header, alignment row, one line per row (all with the same columns).
    With ``escaped_first`` the first column already holds markdown (not plain text)."""
    width = len(grid.columns)
    marks = {"left": ":--", "right": "--:"}
    lines = ["| " + " | ".join(_cell(h) for h in grid.columns) + " |",
             "|" + "|".join(marks.get(a, "---") for a in grid.align) + "|"]
    for row in grid.rows:
        cells = [row[i].text if i == 0 and escaped_first else _cell(row[i].text)
                 for i in range(min(width, len(row)))] + [" "] * (width - len(row))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _section(section: Section) -> list[str]:
    out = ["", f"### {md_escape(section.title)}", ""]
    for note in section.intro:
        out += [md_escape(note.text), ""]
    folded = section.long and section.grid is not None and section.grid.rows
    if section.note and not folded:
        out += [md_escape(section.note), ""]
    if section.grid is not None:
        table = pipe_table(section.grid) if section.grid.rows else ["_(nothing to show)_"]
        if folded:
            out += [f"<details><summary>{html.escape(section.note or section.title)}"
                    "</summary>", "", *table, "", "</details>", ""]
        else:
            out += [*table, ""]
    for note in section.outro:
        out += [md_escape(note.text), ""]
    return out


def render_report_markdown(report: dict) -> str:
    """The report of one run (the dict from ``RunReport.to_dict()``) as a markdown string."""
    name, facts = title_line(report, MISSING)
    out = [f"## metricdiff report: {md_escape(name)}", "", md_escape(facts), ""]
    headline = headline_grid(report, MISSING)
    for row in headline.rows:
        row[0] = Cell(_metric_name(row[0].text))
    out += pipe_table(headline, escaped_first=True)
    calibration = calibration_line(report, MISSING)
    if calibration is not None:
        out += ["", f"**{TITLE_CALIBRATION}:** {md_escape(calibration.text)}"]
    for section in sections(report, MISSING):
        out += _section(section)
    warnings = warnings_of(report)
    if warnings:
        out += ["", f"### {TITLE_WARNINGS}", ""]
        out += [f"- ⚠️ {md_escape(w)}" for w in warnings]
    while out and out[-1] == "":
        out.pop()
    # sections start with a blank line; never two in a row
    text = "\n".join(out)
    while "\n\n\n" in text:
        text = text.replace("\n\n\n", "\n\n")
    return text + "\n"
