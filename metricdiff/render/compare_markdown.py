"""A comparison as GitHub-flavoured markdown, for a PR comment or ``$GITHUB_STEP_SUMMARY``.

Verdicts first, then the runs table, then one ``###`` block per candidate. The same grids as the
terminal view (``common.py``), laid out with the pipe tables of ``markdown.py``; long lists fold
into ``<details>``. The text stays under ``LIMIT`` characters (GitHub refuses comments over
65,536): ranked lists are cut shorter until it fits, with a note saying so.
"""

from __future__ import annotations

import html

from .common import (TITLE_DELTAS, TITLE_GROUPS_RUNS, TITLE_RUNS, TITLE_WARNINGS, TITLE_WHERE, Cell,
                     Grid, Section, best_parts, candidate_heading, cluster_line,
                     compare_headline_metrics, comparison_facts, comparison_title, comparisons_of,
                     delta_grid, detect_line, disagreement_line, fail_line, flip_section, grouped,
                     groups_grid, methods_note, noise_line, ranked_lengths, ranked_sections,
                     reason_lines, runs_grid, seed_noise_section, summary_grid, verdict_caveat,
                     verdict_parts, warnings_of, why_title)
from .markdown import MISSING, _metric_name, md_escape, pipe_table

LIMIT = 60_000  # characters; GitHub's comment limit is 65,536
LONG_DELTAS = 8  # more metrics than this: the full delta table folds into <details>
CUT_NOTE = ("_Ranked lists are cut to their first {limit} rows to keep this under {chars} "
            "characters; `--format json` has them in full._")
TRUNCATED = "_Output truncated to stay under {chars} characters; `--format json` has it all._"


def _summary(text: str) -> str:
    return html.escape(" ".join(str(text).split()))


def _details(summary: str, body: list[str]) -> list[str]:
    """A folded block; the blank line after <summary> lets GitHub render the markdown inside."""
    return [f"<details><summary>{_summary(summary)}</summary>", "", *body, "", "</details>", ""]


def _code_names(grid: Grid) -> list[str]:
    """A pipe table whose first column (metric names) is shown as code. Markdown has no dim
    text: a direction that is not significant is written "n.s." instead of better/worse."""
    rows = [[Cell(_metric_name(row[0].text)),
             *(Cell("n.s.") if cell.style == "dim" and cell.text in ("better", "worse")
               else cell for cell in row[1:])] for row in grid.rows]
    return pipe_table(Grid(grid.columns, grid.align, rows, grid.column_styles),
                      escaped_first=True)


def _section(section: Section, level: str = "####") -> list[str]:
    """A section: a heading, or (``long``) a <details> block with the note as summary."""
    if section.grid is None or not section.grid.rows:
        return []
    table = pipe_table(section.grid)
    outro = [line for c in section.outro for line in ("", md_escape(c.text))]
    if section.long:
        summary = f"{section.title} — {section.note}" if section.note else section.title
        intro = [line for c in section.intro for line in (md_escape(c.text), "")]
        return _details(summary, [*intro, *table, *outro])
    out = [f"{level} {md_escape(section.title)}", ""]
    for note in section.intro:
        out += [f"_{md_escape(note.text)}_" if note.style == "dim" else md_escape(note.text), ""]
    if section.note:
        out += [md_escape(section.note), ""]
    return out + table + outro + [""]


def _verdicts(report: dict) -> list[str]:
    out = []
    for comparison in comparisons_of(report):
        candidate, decision, reason = verdict_parts(comparison)
        line = (f"- {md_escape(candidate.text, line_start=False)}: **{decision.text}** — "
                f"{md_escape(reason.text, line_start=False)}")
        caveat = verdict_caveat(comparison)
        if caveat is not None:
            line += f" _{md_escape(caveat.text[0].upper() + caveat.text[1:], line_start=False)}._"
        out.append(line)
    label, best, why = best_parts(report)
    out += ["", f"**{md_escape(label.text.strip())} {md_escape(best.text, line_start=False)}**"
                f"{md_escape(why.text, line_start=False)}"]
    failed = fail_line(report)
    if failed is not None:
        out += ["", f"**{md_escape(failed.text)}**"]
    return out


def _candidate(report: dict, comparison: dict, limit: int | None) -> list[str]:
    decision = verdict_parts(comparison)[1].text
    out = ["", f"### {md_escape(candidate_heading(comparison))}: {decision}", ""]
    full = delta_grid(comparison, report, MISSING)
    if len(full.rows) > LONG_DELTAS:
        out += _code_names(delta_grid(comparison, report, MISSING,
                                      compare_headline_metrics(report)))
        out += [""] + _details(f"{TITLE_DELTAS}: all {len(full.rows)} metrics",
                               [*_code_names(full), "",
                                f"_{md_escape(methods_note(comparison, report).text)}_"])
    else:
        out += _code_names(full)
        out += ["", f"_{md_escape(methods_note(comparison, report).text)}_", ""]
    for line in (noise_line(comparison), cluster_line(comparison),
                 detect_line(comparison, report)):
        if line is not None:
            out += [f"_{md_escape(line.text)}_", ""]

    out += [f"#### {md_escape(why_title(comparison, report))}", "",
            f"**{md_escape(disagreement_line(comparison, report).text)}**", ""]
    out += [f"- {md_escape(line, line_start=False)}" for line in reason_lines(comparison)]
    out += [""]
    flips = flip_section(comparison, report, MISSING)
    if flips is not None:
        out += _section(flips)
    ranked = ranked_sections(comparison, report, MISSING, limit)
    if ranked:
        out += [f"#### {TITLE_WHERE}", ""]
        for section in ranked:
            out += _section(section)
    return out


def _render(report: dict, limit: int | None, chars: int) -> str:
    out = [f"## metricdiff: {md_escape(comparison_title(report), line_start=False)}", ""]
    out += _verdicts(report)
    for comparison in comparisons_of(report)[:1]:  # the same sources for every candidate
        out += ["", f"_{md_escape(noise_line(comparison).text)}_"]
    title = TITLE_GROUPS_RUNS if grouped(report) else TITLE_RUNS
    out += ["", f"### {title}", "", md_escape(comparison_facts(report, MISSING)), ""]
    runs = runs_grid(report, MISSING)
    if grouped(report):
        out += _code_names(groups_grid(report, MISSING))
        out += [""] + _details(f"{TITLE_RUNS}: every run", _code_names(runs))
    else:
        out += _code_names(runs) if runs.rows else ["_(no metrics)_"]
    floor = seed_noise_section(report, MISSING)
    if floor is not None:
        out += [""] + _section(floor)
    if limit is not None:
        out += ["", CUT_NOTE.format(limit=f"{limit:,}", chars=f"{chars:,}")]
    for comparison in comparisons_of(report):
        out += _candidate(report, comparison, limit)
    warnings = warnings_of(report)
    if warnings:
        out += ["", f"### {TITLE_WARNINGS}", ""]
        out += [f"- ⚠️ {md_escape(w, line_start=False)}" for w in warnings]
    text = "\n".join(out).strip("\n")
    while "\n\n\n" in text:
        text = text.replace("\n\n\n", "\n\n")
    return text + "\n"


def _cut(text: str, chars: int) -> str:
    """Last resort: keep whole blocks (split at blank lines) while they fit, close an open
    <details>, and say that the rest was left out."""
    note = TRUNCATED.format(chars=f"{chars:,}")
    budget = chars - len(note) - len("\n\n</details>\n\n") - 2
    kept, size, depth = [], 0, 0
    for block in text.split("\n\n"):
        if size + len(block) + 2 > budget:
            break
        kept.append(block)
        size += len(block) + 2
        depth += block.count("<details>") - block.count("</details>")
    while kept and kept[-1].startswith("<details>") and depth > 0:
        kept.pop()  # a fold with nothing kept inside
        depth -= 1
    if depth > 0:
        kept.append("</details>")
    return "\n\n".join(kept + [note]) + "\n"


def render_comparison_markdown(report: dict, *, max_chars: int = LIMIT) -> str:
    """A comparison (the dict from ``ComparisonReport.to_dict()``) as a markdown string of
    at most ``max_chars`` characters (ranked lists are cut shorter when needed)."""
    text = _render(report, None, max_chars)
    if len(text) <= max_chars:
        return text
    # the longest row limit that fits: binary search over 1 .. longest ranked list
    low, high = 1, max([ranked_lengths(c) for c in comparisons_of(report)] + [1])
    fitting = None
    while low <= high:
        limit = (low + high) // 2
        candidate = _render(report, limit, max_chars)
        if len(candidate) <= max_chars:
            fitting, low = candidate, limit + 1
        else:
            high = limit - 1
    return fitting if fitting is not None else _cut(_render(report, 1, max_chars), max_chars)


def render_summary_markdown(report: dict) -> str:
    """``--summary``: the title and one table row per candidate."""
    out = [f"## metricdiff: {md_escape(comparison_title(report), line_start=False)}", ""]
    out += pipe_table(summary_grid(report, MISSING))
    for comparison in comparisons_of(report)[:1]:  # the same sources for every candidate
        out += ["", f"_{md_escape(noise_line(comparison).text)}_"]
    return "\n".join(out) + "\n"
