"""The `metricdiff` command: options -> library call -> render -> exit code.

Exit codes: 0 success; 1 the --fail-on condition triggered (compare); 2 usage or input error;
3 an internal error (a bug: please report it with the --debug traceback); 130 interrupted.
"""

from __future__ import annotations

import io
import os
import sys
from contextlib import contextmanager
from enum import Enum
from typing import Annotated, Optional

import numpy as np
import typer
from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn,
                           TimeRemainingColumn)

from . import __version__, api
from .errors import MetricdiffError, UsageError
from .io import input_files
from .outputs import check_outputs, write_outputs
from .render.jsonout import render_json

EXIT_FAIL_ON = 1
EXIT_INPUT_ERROR = 2
EXIT_INTERNAL_ERROR = 3
EXIT_INTERRUPTED = 130
PIPE_WIDTH = 120
MIN_WIDTH = 100

app = typer.Typer(
    name="metricdiff",
    help="Compare classification runs from saved validation predictions: loss, accuracy, "
         "calibration, and why they disagree.",
    context_settings={"help_option_names": ["-h", "--help"]},
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
)


class OutputFormat(str, Enum):
    table = "table"
    json = "json"
    markdown = "markdown"


class PredKind(str, Enum):
    logits = "logits"
    probs = "probs"


def _version(value: bool) -> None:
    if value:
        typer.echo(f"metricdiff {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Show the version and exit.")] = False,
) -> None:
    """metricdiff reads runs saved as Parquet (one row per validation example)."""


def _parse_groups(text: str) -> tuple[float, float]:
    try:
        head, torso = (float(part) for part in text.split(","))
    except ValueError:
        raise UsageError(f"--class-groups expects two comma-separated shares like 0.5,0.8, "
                         f"got '{text}'") from None
    return head, torso


# Options shared by every command, declared once so the commands cannot drift apart.
FormatOpt = Annotated[OutputFormat, typer.Option("--format", "-f", help="Output format.")]
OutputOpt = Annotated[Optional[str], typer.Option("--output", "-o",
                                                  help="Write to FILE instead of stdout.")]
LabelColOpt = Annotated[str, typer.Option(help="Column of true classes.")]
PredColOpt = Annotated[Optional[str], typer.Option(
    help="Prediction column (default: detect logits, probs, logit_*/prob_*, top-k).")]
PredKindOpt = Annotated[Optional[PredKind], typer.Option(
    help="What --pred-col holds, when its name does not say.")]
IdColOpt = Annotated[Optional[str], typer.Option(
    help="Example id column; by default 'id' where the files have one, else rows line up by "
         "order.")]
ByOpt = Annotated[Optional[list[str]], typer.Option(
    help="Break metrics down by this metadata column (repeatable).")]
ClassesOpt = Annotated[Optional[str], typer.Option(
    help="File of class names: a JSON list or one name per line.")]
TopKOpt = Annotated[int, typer.Option(help="k of the top-k accuracy.")]
BinsOpt = Annotated[int, typer.Option(help="Bins of the calibration errors.")]
ClassGroupsOpt = Annotated[str, typer.Option(
    help="Cumulative example shares ending the head and torso class groups.")]
ProbToleranceOpt = Annotated[float, typer.Option(help="Allowed |sum(probs) - 1| per row.")]
MinProbOpt = Annotated[Optional[float], typer.Option(
    metavar="EPS", help="Floor every probability at EPS and renormalise (e.g. 1e-15), so a true "
    "class of probability 0 costs a finite NLL; off by default, and labelled in the output.")]
DebugOpt = Annotated[bool, typer.Option(help="Show tracebacks on errors.")]
HtmlOpt = Annotated[Optional[str], typer.Option(
    help="Also write a self-contained HTML page with plots to FILE (needs metricdiff[plots]).")]


@app.command(epilog="Examples:\n\n  metricdiff report sample_runs/featA_hpB.parquet\n\n"
                    "  metricdiff report runs/val/ --by source --format json | jq .metrics\n\n"
                    "  metricdiff report run.parquet --label-col target --pred-col scores "
                    "--pred-kind logits --format markdown --output report.md")
def report(
    run: Annotated[str, typer.Argument(
        help="A Parquet file, a folder of shards, or a glob; local, or in object storage "
             "(s3://, gs://, abfs://, hf://, https://).")],
    output_format: FormatOpt = OutputFormat.table,
    output: OutputOpt = None,
    name: Annotated[Optional[str], typer.Option(help="Name shown for the run.")] = None,
    label_col: LabelColOpt = "label",
    pred_col: PredColOpt = None,
    pred_kind: PredKindOpt = None,
    id_col: IdColOpt = None,
    by: ByOpt = None,
    classes: ClassesOpt = None,
    top_k: TopKOpt = 5,
    bins: BinsOpt = 15,
    worst: Annotated[int, typer.Option(help="Worst classes listed (0: all).")] = 10,
    batch_size: Annotated[int, typer.Option(help="Mini-batch size of the noise floor.")] = 32,
    seed: Annotated[int, typer.Option(help="Seed of the noise-floor shuffle.")] = 0,
    class_groups: ClassGroupsOpt = "0.5,0.8",
    prob_tolerance: ProbToleranceOpt = 1e-3,
    min_prob: MinProbOpt = None,
    html: HtmlOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Measure one run: loss, accuracy, calibration, and the breakdowns that explain them."""

    def work() -> int:
        check_outputs({"--output": output, "--html": html},
                      input_files(run) + ([classes] if classes else []))
        with progress_bar() as progress:
            result = api.report(run, name=name, label_col=label_col, pred_col=pred_col,
                                pred_kind=pred_kind.value if pred_kind else None, id_col=id_col,
                                by=tuple(by or ()), classes_file=classes, top_k=top_k,
                                ece_bins=bins, worst_classes=worst, noise_batch=batch_size,
                                seed=seed, class_groups=_parse_groups(class_groups),
                                prob_tolerance=prob_tolerance, min_prob=min_prob,
                                progress=progress)
        _emit(result.to_dict(), output_format, output, html)
        return 0

    _run_guarded(work, debug)


class FailOn(str, Enum):
    never = "never"
    worse = "worse"
    not_better = "not-better"


@app.command(epilog="Exit codes: 0 compared and --fail-on did not trigger; 1 it triggered; "
                    "2 usage or input error; 3 internal error.\n\n"
                    "Examples:\n\n"
                    "  metricdiff compare main=runs/main.parquet pr=runs/pr.parquet\n\n"
                    "  metricdiff compare a.parquet b.parquet c.parquet --primary accuracy\n\n"
                    "  metricdiff compare main=runs/main/s0.parquet main=runs/main/s1.parquet "
                    "pr=runs/pr/s0.parquet pr=runs/pr/s1.parquet\n\n"
                    "  metricdiff compare 'main=runs/main/seed*/' 'pr=runs/pr/seed*/' "
                    "--paired-seeds\n\n"
                    "  metricdiff compare main.parquet pr.parquet --fail-on worse "
                    "--format markdown >> $GITHUB_STEP_SUMMARY")
def compare(
    runs: Annotated[list[str], typer.Argument(
        help="BASELINE CANDIDATE [CANDIDATE ...]: runs, optionally named as NAME=PATH. Runs "
             "given the same NAME form a group (seeds of one configuration); NAME=DIR/*/ (a "
             "pattern ending in /) makes each matching folder one run of group NAME.")],
    primary: Annotated[str, typer.Option(help="Metric the verdict is about.")] = "nll",
    alpha: Annotated[float, typer.Option(
        help="Significance level; intervals are at 1 - alpha.")] = 0.05,
    min_effect: Annotated[float, typer.Option(
        help="Smallest change of the primary metric that counts.")] = 0.0,
    resamples: Annotated[int, typer.Option(help="Paired bootstrap resamples.")] = 1000,
    seed: Annotated[int, typer.Option(help="Seed of the bootstrap.")] = 0,
    fail_on: Annotated[FailOn, typer.Option(
        help="Exit 1 when a candidate is worse, or is not better.")] = FailOn.never,
    top: Annotated[int, typer.Option(help="Length of each ranked list.")] = 10,
    allow_partial: Annotated[bool, typer.Option(
        help="Compare the examples common to all runs when ids differ.")] = False,
    paired_seeds: Annotated[bool, typer.Option(
        help="The i-th run of every group used the same seed: take deltas seed by seed.")
    ] = False,
    cluster: Annotated[Optional[str], typer.Option(
        help="Column marking examples that are not independent (one video, one patient): "
             "intervals and tests resample whole clusters.")] = None,
    fdr: Annotated[float, typer.Option(
        help="False discovery rate of the per-class tests (Benjamini-Hochberg).")] = 0.05,
    output_format: FormatOpt = OutputFormat.table,
    output: OutputOpt = None,
    label_col: LabelColOpt = "label",
    pred_col: PredColOpt = None,
    pred_kind: PredKindOpt = None,
    id_col: IdColOpt = None,
    by: ByOpt = None,
    classes: ClassesOpt = None,
    top_k: TopKOpt = 5,
    bins: BinsOpt = 15,
    class_groups: ClassGroupsOpt = "0.5,0.8",
    prob_tolerance: ProbToleranceOpt = 1e-3,
    min_prob: MinProbOpt = None,
    html: HtmlOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Compare candidate runs with a baseline, example by example: deltas with intervals, a
    verdict, and why loss and accuracy disagree."""

    def work() -> int:
        names, paths = zip(*(split_name(arg) for arg in runs))
        check_outputs({"--output": output, "--html": html},
                      [f for path in paths for f in input_files(path)]
                      + ([classes] if classes else []))
        with progress_bar() as progress:
            result = api.compare(*paths, names=list(names), paired_seeds=paired_seeds,
                                 cluster=cluster, fdr=fdr,
                                 primary=primary, alpha=alpha,
                                 min_effect=min_effect, resamples=resamples, seed=seed,
                                 fail_on=fail_on.value, top=top, allow_partial=allow_partial,
                                 label_col=label_col, pred_col=pred_col,
                                 pred_kind=pred_kind.value if pred_kind else None,
                                 id_col=id_col, by=tuple(by or ()), classes_file=classes,
                                 top_k=top_k, ece_bins=bins,
                                 class_groups=_parse_groups(class_groups),
                                 prob_tolerance=prob_tolerance, min_prob=min_prob,
                                progress=progress)
        _emit(result.to_dict(), output_format, output, html)
        return EXIT_FAIL_ON if result.failed else 0

    _run_guarded(work, debug)


def split_name(arg: str) -> tuple[str | None, str]:
    """'name=path' -> (name, path); a plain path (or one that exists with '=' in it) gets no
    name here, and the library names it after its file. A URL's own '=' (s3://b/run=1/)
    names nothing: a name holds no '://'."""
    if "=" in arg and not os.path.exists(arg):
        name, path = arg.split("=", 1)
        if name and path and "://" not in name:
            return name, path
    return None, arg


def _run_guarded(work, debug: bool) -> None:
    """Turn library errors into one line on stderr and an exit code; --debug shows tracebacks."""
    try:
        # every non-finite input is checked and reported by name; numpy's own warnings about
        # them would only add stray lines to stderr
        with np.errstate(all="ignore"):
            code = work()
    except MetricdiffError as exc:
        if debug:
            raise
        _fail(f"error: {exc}", EXIT_INPUT_ERROR)
    except KeyboardInterrupt:
        if debug:
            raise
        _fail("interrupted", EXIT_INTERRUPTED)
    except (typer.Exit, typer.Abort):
        raise
    except Exception as exc:  # a bug of ours: one line, the traceback only on request
        if debug:
            raise
        _fail(f"internal error: {type(exc).__name__}: {exc} (run again with --debug for the "
              "traceback, and please report it)", EXIT_INTERNAL_ERROR)
    if code:
        raise typer.Exit(code)


def _fail(message: str, code: int) -> None:
    _print_error(message.splitlines()[0] if message else "")
    raise typer.Exit(code)


def _emit(document: dict, output_format: OutputFormat, output: str | None,
          html: str | None = None) -> None:
    """Render the document; write the files (all or none), then stdout."""
    comparison = document["kind"] == "comparison"
    files = []
    if html is not None:
        from .render import html as html_page
        render = html_page.render_comparison_html if comparison else html_page.render_report_html
        files.append((html, render(document)))
    if output_format is OutputFormat.json:
        text = render_json(document)
    elif output_format is OutputFormat.markdown:
        if comparison:
            from .render.compare_markdown import render_comparison_markdown
            text = render_comparison_markdown(document)
        else:
            from .render.markdown import render_report_markdown
            text = render_report_markdown(document)
    else:
        if comparison:
            from .render.compare_table import render_comparison as to_table
        else:
            from .render.table import render_report as to_table
        if output is None:
            write_outputs(files)
            with closed_pipe_is_fine():
                to_table(document, stdout_console())
                sys.stdout.flush()  # inside: a closed pipe shows up at the flush
            return
        buffer = io.StringIO()
        to_table(document, Console(file=buffer, width=PIPE_WIDTH, color_system=None))
        text = buffer.getvalue()
    if output is not None:
        files.append((output, text))
    write_outputs(files)
    if output is None:
        with closed_pipe_is_fine():
            sys.stdout.write(text)
            sys.stdout.flush()


@contextmanager
def closed_pipe_is_fine():
    """A reader that stops early (`| head`) closes the pipe: not an error. Output stops, the
    exit code keeps its meaning (0, or 1 from --fail-on), and nothing is printed about it."""
    try:
        yield
    except BrokenPipeError:
        # the interpreter flushes stdout again at exit, which would raise once more
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError, io.UnsupportedOperation):  # no file descriptor: nothing
            pass


@contextmanager
def progress_bar():
    """A progress bar per run on stderr, only when stderr is a terminal; else no callback."""
    console = Console(stderr=True)
    if not console.is_terminal:
        yield None
        return
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeRemainingColumn(), console=console, transient=True) as bar:
        tasks: dict[str, TaskID] = {}

        def update(name: str, done: int, total: int) -> None:
            if name not in tasks:
                tasks[name] = bar.add_task(f"reading {name}", total=total)
            bar.update(tasks[name], completed=done)

        yield update


class _StdoutConsole(Console):
    """rich exits with 1 on a closed pipe; here it is handed to closed_pipe_is_fine."""

    def on_broken_pipe(self) -> None:
        self.quiet = True
        raise BrokenPipeError


def stdout_console() -> Console:
    """Colour follows the terminal and NO_COLOR. Tables need about 100 columns: narrower
    terminals get long lines rather than cut numbers; pipes and files get PIPE_WIDTH."""
    console = _StdoutConsole()
    if not console.is_terminal:
        return _StdoutConsole(width=PIPE_WIDTH)
    return console if console.width >= MIN_WIDTH else _StdoutConsole(width=MIN_WIDTH)


# What the output's few non-ASCII symbols become on a stream that cannot encode them
# (PYTHONIOENCODING=ascii, a C locale); anything else becomes '?'.
ASCII_FALLBACK = {"·": "|", "→": "->", "±": "+-", "—": "-", "–": "-", "…": "...", "≤": "<=",
                  "≥": ">=", "α": "alpha", "÷": "/", "×": "x", "•": "*", "─": "-", "│": "|",
                  "✓": "ok", "−": "-"}


def _ascii_fallback(error: UnicodeError) -> tuple[str, int]:
    assert isinstance(error, UnicodeEncodeError)  # registered for encoding only
    text = error.object[error.start:error.end]
    return "".join(ASCII_FALLBACK.get(ch, "?") for ch in text), error.end


def _survive_any_encoding() -> None:
    """Write through any encoding stdout and stderr have, rather than fail on a symbol."""
    import codecs

    codecs.register_error("metricdiff-ascii", _ascii_fallback)
    for stream in (sys.stdout, sys.stderr):
        try:
            "·→±—".encode(stream.encoding or "ascii")
        except (UnicodeEncodeError, LookupError):
            reconfigure = getattr(stream, "reconfigure", None)  # not on every text stream
            if reconfigure is not None:
                try:
                    reconfigure(errors="metricdiff-ascii")
                except ValueError:  # a stream that cannot change now
                    pass


def main() -> None:
    """The console entry point: the parser's own usage errors become one line too."""
    _survive_any_encoding()
    try:
        code = app(standalone_mode=False)
    except typer.Abort:
        _print_error("interrupted")
        sys.exit(EXIT_INTERRUPTED)
    except Exception as error:
        if not (hasattr(error, "format_message") and hasattr(error, "exit_code")):
            raise  # not the option parser's: _run_guarded already reported ours
        message = " ".join(error.format_message().split())
        if getattr(error, "exit_code", 2) == 0:  # --help with no arguments, say
            sys.exit(0)
        if "No such option" in message or "Missing argument" in message:
            message += " (a path that starts with '-': put '--' before it, or write ./-name)"
        command = getattr(getattr(error, "ctx", None), "command_path", "metricdiff")
        _print_error(f"error: {message} (see '{command} -h')")
        sys.exit(EXIT_INPUT_ERROR)
    if code == EXIT_INTERRUPTED:
        if not _said:  # Ctrl-C while the options were parsed
            _print_error("interrupted")
        exit_now(EXIT_INTERRUPTED)
    sys.exit(code if isinstance(code, int) else 0)


def exit_now(code: int) -> None:
    """End an interrupted run with `code` at once. Outputs are already whole or removed; left
    to the interpreter, an interrupt during its shutdown (joining reader threads) turns the
    status into death by SIGINT instead of 130."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


_said: list[str] = []  # the one line already printed, if any


def _print_error(message: str) -> None:
    _said.append(message)
    typer.echo(f"metricdiff: {message}", err=True)
