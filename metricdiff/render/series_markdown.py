"""A series as GitHub-flavoured markdown: the answer, then the same sections as the terminal
(``series_view.py``), long tables folded into ``<details>``; text from the data escaped."""

from __future__ import annotations

from .common import TITLE_WARNINGS
from .markdown import _section, md_escape
from .common import warnings_of
from .series_view import (answer_lines, facts_line, series_of, series_sections,
                          verdict_section)

MISSING = "–"


def render_series_markdown(document: dict) -> str:
    out = ["## metricdiff series", "", md_escape(facts_line(document, MISSING)), ""]
    for line in answer_lines(document):
        text = md_escape(line.text)
        out += [f"**{text}**" if line.style == "strong" else f"- {text}"]
    verdicts = verdict_section(document, MISSING)
    if verdicts is not None:
        out += _section(verdicts)
    for entry in series_of(document):
        for section in series_sections(entry, document, MISSING):
            out += _section(section)
    warnings = warnings_of(document)
    if warnings:
        out += ["", f"### {TITLE_WARNINGS}", ""] + [f"- ⚠️ {md_escape(w)}" for w in warnings]
    text = "\n".join(out).strip("\n")
    while "\n\n\n" in text:
        text = text.replace("\n\n\n", "\n\n")
    return text + "\n"
