"""The `metricdiff` command: options -> library call -> render -> exit code.

Exit codes: 0 success; 1 the --fail-on condition triggered (compare); 2 usage or input error;
3 an internal error (a bug: please report it with the --debug traceback); 130 interrupted.
"""

from __future__ import annotations

import io
import os
import re
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from enum import Enum
from typing import Annotated, Optional

import typer
from typer.core import TyperCommand

from . import __version__
from .errors import MetricdiffError, UsageError

# numpy, pyarrow, rich and the renderers are imported inside the functions that use them, so
# that `metricdiff --version` and `-h` answer at the speed of the interpreter and typer.

EXIT_FAIL_ON = 1
EXIT_INPUT_ERROR = 2
EXIT_INTERNAL_ERROR = 3
EXIT_INTERRUPTED = 130
PIPE_WIDTH = 120  # columns of a table written to a pipe or a file when COLUMNS is not set
MIN_WIDTH = 40  # a narrower terminal (or COLUMNS) is laid out at this width

app = typer.Typer(
    name="metricdiff",
    help="Compare classification runs from saved validation predictions: loss, accuracy, "
         "calibration, and why they disagree.",
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain help: no markup to eat "[plots]", no rich import
)


class _Command(TyperCommand):
    """Help as a well-kept command line writes it: the usage names the arguments by their
    metavar (`compare [OPTIONS] BASELINE CANDIDATE...`), and options and arguments are
    listed without type labels (`<list[str]>`): each metavar says what to give."""

    def collect_usage_pieces(self, ctx) -> list[str]:
        return [self.options_metavar or "[OPTIONS]"] + [
            param.metavar or (param.name or "").upper()
            for param in self.get_params(ctx) if param.param_type_name == "argument"]

    def format_options(self, ctx, formatter) -> None:
        sections: dict[str, list[tuple[str, str]]] = {"Arguments": [], "Options": []}
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is None:
                continue
            if param.param_type_name == "argument":
                sections["Arguments"].append((param.metavar or record[0], record[1]))
            else:
                sections["Options"].append(record)
        for title, records in sections.items():
            if records:
                with formatter.section(title):
                    formatter.write_dl(records)


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
FormatOpt = Annotated[OutputFormat, typer.Option("--format", "-f", metavar="FORMAT",
                                                 help="Output: table, json or markdown.")]
OutputOpt = Annotated[Optional[str], typer.Option("--output", "-o", metavar="FILE",
                                                  help="Write to FILE instead of stdout.")]
LabelColOpt = Annotated[str, typer.Option(metavar="COLUMN", help="Column of true classes.")]
PredColOpt = Annotated[Optional[str], typer.Option(
    metavar="COLUMN",
    help="Prediction column (default: detect logits, probs, logit_*/prob_*, top-k).")]
PredKindOpt = Annotated[Optional[PredKind], typer.Option(
    metavar="KIND", help="What --pred-col holds (logits or probs), when its name does not say.")]
IdColOpt = Annotated[Optional[str], typer.Option(
    metavar="COLUMN",
    help="Example id column; by default 'id' where the files have one, else rows line up by "
         "order.")]
ByOpt = Annotated[Optional[list[str]], typer.Option(
    metavar="COLUMN", help="Break metrics down by this metadata column (repeatable).")]
ClassesOpt = Annotated[Optional[str], typer.Option(
    metavar="FILE", help="File of class names: a JSON list or one name per line.")]
TopKOpt = Annotated[int, typer.Option(metavar="K", help="k of the top-k accuracy.")]
BinsOpt = Annotated[int, typer.Option(metavar="N", help="Bins of the calibration errors.")]
ClassGroupsOpt = Annotated[str, typer.Option(
    metavar="HEAD,TORSO", help="Cumulative example shares ending the head and torso classes.")]
ProbToleranceOpt = Annotated[float, typer.Option(metavar="TOL",
                                                 help="Allowed |sum(probs) - 1| per row.")]
MinProbOpt = Annotated[Optional[float], typer.Option(
    metavar="EPS", help="Floor every probability at EPS and renormalise (e.g. 1e-15), so a true "
    "class of probability 0 costs a finite NLL; off by default, and labelled in the output.")]
CrossFitOpt = Annotated[bool, typer.Option(
    "--cross-fit", help="Score each half of the examples (split by id) with the temperature "
    "fitted on the other half, so nll_calibrated and ece_calibrated are not in-sample.")]


class Engine(str, Enum):
    local = "local"
    dask = "dask"


EngineOpt = Annotated[Engine, typer.Option(
    metavar="ENGINE", help="Where runs are read and reduced: local (this process) or dask "
    "(the workers of a Dask cluster; same numbers).")]
SchedulerOpt = Annotated[Optional[str], typer.Option(
    metavar="ADDRESS", help="Dask scheduler for --engine dask (default: "
    "DASK_SCHEDULER_ADDRESS; without it, a local cluster of one worker per core).")]
DebugOpt = Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")]
HtmlOpt = Annotated[Optional[str], typer.Option(
    metavar="FILE",
    help="Also write a self-contained HTML page with plots to FILE (needs metricdiff[plots]).")]
MetricsOpt = Annotated[Optional[str], typer.Option(
    metavar="LIST",
    help="Show only these metrics, comma-separated (nll,accuracy,ece), in every table and "
         "format; the verdict keeps its primary metric.")]
PrecisionOpt = Annotated[int, typer.Option(
    metavar="N", help="Digits after the decimal point of metric values (1 to 12; JSON keeps "
                      "full precision).")]


def _check_view(precision: int, metrics: str | None, top_k: int) -> list[str] | None:
    """--precision and --metrics, checked before any run is read; the chosen metrics."""
    from .api import check_options
    from .metrics import metric_directions
    from .render.select import parse_metrics

    check_options(precision=precision, top_k=top_k)
    return parse_metrics(metrics, list(metric_directions(top_k)))


@app.command(cls=_Command, short_help="Measure one run: loss, accuracy, calibration, breakdowns.",
             epilog="\b\nExamples:\n"
                    "  metricdiff report sample_runs/featA_hpB.parquet\n"
                    "  metricdiff report runs/val/ --by source --format json | jq .metrics\n"
                    "  metricdiff report run.parquet --metrics nll,accuracy,ece --precision 3\n"
                    "  metricdiff report run.parquet --label-col target --pred-col scores \\\n"
                    "      --pred-kind logits --format markdown --output report.md")
def report(
    run: Annotated[str, typer.Argument(
        metavar="RUN", help="A Parquet file, a folder of shards, or a glob; local, or in "
        "object storage (s3://, gs://, abfs://, hf://, https://).")],
    output_format: FormatOpt = OutputFormat.table,
    output: OutputOpt = None,
    metrics: MetricsOpt = None,
    precision: PrecisionOpt = 4,
    name: Annotated[Optional[str], typer.Option(metavar="NAME",
                                                help="Name shown for the run.")] = None,
    label_col: LabelColOpt = "label",
    pred_col: PredColOpt = None,
    pred_kind: PredKindOpt = None,
    id_col: IdColOpt = None,
    by: ByOpt = None,
    classes: ClassesOpt = None,
    top_k: TopKOpt = 5,
    bins: BinsOpt = 15,
    worst: Annotated[int, typer.Option(metavar="N", help="Worst classes listed (0: all).")] = 10,
    batch_size: Annotated[int, typer.Option(metavar="B",
                                            help="Mini-batch size of the noise floor.")] = 32,
    seed: Annotated[int, typer.Option(metavar="SEED",
                                      help="Seed of the noise-floor shuffle.")] = 0,
    class_groups: ClassGroupsOpt = "0.5,0.8",
    prob_tolerance: ProbToleranceOpt = 1e-3,
    min_prob: MinProbOpt = None,
    temperature: Annotated[Optional[float], typer.Option(
        metavar="T", help="Apply this temperature for nll_calibrated and ece_calibrated "
        "instead of fitting one on this run.")] = None,
    temperature_from: Annotated[Optional[str], typer.Option(
        metavar="RUN", help="Fit the temperature on RUN (a validation split: its ids may "
        "differ) and apply it to this run.")] = None,
    cross_fit: CrossFitOpt = False,
    engine: EngineOpt = Engine.local,
    scheduler: SchedulerOpt = None,
    html: HtmlOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Measure one run: loss, accuracy, calibration, and the breakdowns that explain them."""

    def work() -> int:
        from . import api
        from .io import input_files
        from .outputs import check_outputs

        chosen = _check_view(precision, metrics, top_k)
        check_outputs({"--output": output, "--html": html},
                      input_files(run) + ([classes] if classes else []))
        with progress_bar() as progress:
            result = api.report(run, name=name, label_col=label_col, pred_col=pred_col,
                                pred_kind=pred_kind.value if pred_kind else None, id_col=id_col,
                                by=tuple(by or ()), classes_file=classes, top_k=top_k,
                                ece_bins=bins, worst_classes=worst, noise_batch=batch_size,
                                seed=seed, class_groups=_parse_groups(class_groups),
                                prob_tolerance=prob_tolerance, min_prob=min_prob,
                                progress=progress, temperature=temperature,
                                temperature_from=temperature_from, cross_fit=cross_fit,
                                engine=engine.value, scheduler=scheduler)
        _emit(result.to_dict(), View(output_format, chosen, precision), output, html)
        return 0

    _run_guarded(work, debug)


class FailOn(str, Enum):
    never = "never"
    worse = "worse"
    not_better = "not-better"


@app.command(cls=_Command, short_help="Compare runs with a baseline: deltas, intervals, a verdict.",
             epilog="\b\nExit codes: 0 compared and --fail-on did not trigger; 1 it triggered;\n"
                    "2 usage or input error; 3 internal error.\n\n"
                    "\b\nExamples:\n"
                    "  metricdiff compare main=runs/main.parquet pr=runs/pr.parquet\n"
                    "  metricdiff compare a.parquet b.parquet c.parquet --primary accuracy\n"
                    "  metricdiff compare main.parquet pr.parquet --summary\n"
                    "  metricdiff compare main=m/s0.parquet main=m/s1.parquet \\\n"
                    "      pr=p/s0.parquet pr=p/s1.parquet\n"
                    "  metricdiff compare 'main=runs/main/seed*/' 'pr=runs/pr/seed*/' \\\n"
                    "      --paired-seeds\n"
                    "  metricdiff compare main.parquet pr.parquet --fail-on worse \\\n"
                    "      --format markdown >> $GITHUB_STEP_SUMMARY")
def compare(
    runs: Annotated[list[str], typer.Argument(
        metavar="BASELINE CANDIDATE...",
        help="Runs, optionally named as NAME=PATH. Runs given the same NAME form a group "
             "(seeds of one configuration); NAME=DIR/*/ (a pattern ending in /) makes each "
             "matching folder one run of group NAME.")],
    summary: Annotated[bool, typer.Option(
        "--summary", help="One line per candidate: verdict, the primary metric's change and "
                          "interval, the headline metrics that changed significantly, the "
                          "noise covered.")] = False,
    primary: Annotated[str, typer.Option(metavar="METRIC",
                                         help="Metric the verdict is about.")] = "nll",
    alpha: Annotated[float, typer.Option(
        metavar="ALPHA", help="Significance level; intervals are at 1 - alpha.")] = 0.05,
    min_effect: Annotated[float, typer.Option(
        metavar="DELTA", help="Smallest change of the primary metric that counts.")] = 0.0,
    resamples: Annotated[int, typer.Option(metavar="N",
                                           help="Paired bootstrap resamples.")] = 1000,
    seed: Annotated[int, typer.Option(metavar="SEED", help="Seed of the bootstrap.")] = 0,
    fail_on: Annotated[FailOn, typer.Option(
        metavar="WHEN",
        help="Exit 1 when a candidate is worse, or is not better: never, worse or "
             "not-better.")] = FailOn.never,
    top: Annotated[int, typer.Option(metavar="N", help="Length of each ranked list.")] = 10,
    allow_partial: Annotated[bool, typer.Option(
        "--allow-partial",
        help="Compare the examples common to all runs when ids differ.")] = False,
    paired_seeds: Annotated[bool, typer.Option(
        "--paired-seeds",
        help="The i-th run of every group used the same seed: take deltas seed by seed.")
    ] = False,
    cluster: Annotated[Optional[str], typer.Option(
        metavar="COLUMN",
        help="Column marking examples that are not independent (one video, one patient): "
             "intervals and tests resample whole clusters.")] = None,
    fdr: Annotated[float, typer.Option(
        metavar="Q",
        help="False discovery rate of the per-class tests (Benjamini-Hochberg).")] = 0.05,
    output_format: FormatOpt = OutputFormat.table,
    output: OutputOpt = None,
    metrics: MetricsOpt = None,
    precision: PrecisionOpt = 4,
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
    cross_fit: CrossFitOpt = False,
    engine: EngineOpt = Engine.local,
    scheduler: SchedulerOpt = None,
    html: HtmlOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Compare candidate runs with a baseline, example by example: deltas with intervals, a
    verdict, and why loss and accuracy disagree."""

    def work() -> int:
        from . import api
        from .io import input_files
        from .outputs import check_outputs

        chosen = _check_view(precision, metrics, top_k)
        if summary and output_format is OutputFormat.json:
            raise UsageError("--summary is a view for table and markdown output; --format json "
                             "has every figure")
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
                                 cross_fit=cross_fit, progress=progress,
                                 engine=engine.value, scheduler=scheduler)
        _emit(result.to_dict(), View(output_format, chosen, precision, summary), output, html)
        return EXIT_FAIL_ON if result.failed else 0

    _run_guarded(work, debug)


@app.command(cls=_Command,
             short_help="Checkpoints over training: where NLL and accuracy part, and why.",
             epilog="\b\nCheckpoints are taken in the order given; a quoted glob expands in\n"
                    "natural order (epoch9 before epoch10), one checkpoint per file (or per\n"
                    "folder, for a pattern ending in /). One run with a step column is split\n"
                    "by its values. NAME=RUN gives two series, compared checkpoint by\n"
                    "checkpoint: the first is the baseline.\n\n"
                    "\b\nExit codes: 0 done and --fail-on did not trigger; 1 it triggered (two\n"
                    "series: a verdict at any checkpoint); 2 usage or input error; 3 internal\n"
                    "error.\n\n"
                    "\b\nExamples:\n"
                    "  metricdiff series 'sample_runs/series/wide/epoch*.parquet'\n"
                    "  metricdiff series run/epoch1.parquet run/epoch2.parquet run/epoch3.parquet\n"
                    "  metricdiff series val_all_steps.parquet --step-col global_step\n"
                    "  metricdiff series 'wide=sample_runs/series/wide/epoch*.parquet' \\\n"
                    "      'narrow=sample_runs/series/narrow/epoch*.parquet' --html series.html")
def series(
    runs: Annotated[list[str], typer.Argument(
        metavar="RUN...",
        help="Checkpoints in training order: runs (file or folder of shards, local or in "
             "object storage), quoted globs, or one run with a step column; NAME=RUN names "
             "the series a checkpoint belongs to (two names: two series).")],
    step_col: Annotated[Optional[str], typer.Option(
        metavar="COLUMN",
        help="Column splitting a series given as one run into checkpoints, by its numbers "
             "(default: 'step' when the run has it).")] = None,
    primary: Annotated[str, typer.Option(
        metavar="METRIC", help="Two series: the metric of the per-checkpoint verdicts.")] = "nll",
    alpha: Annotated[float, typer.Option(
        metavar="ALPHA", help="Significance level; intervals are at 1 - alpha.")] = 0.05,
    min_effect: Annotated[float, typer.Option(
        metavar="DELTA",
        help="Two series: smallest change of the primary metric that counts.")] = 0.0,
    resamples: Annotated[int, typer.Option(
        metavar="N", help="Two series with a --primary metric the bootstrap tests (ece, ...): "
                          "paired bootstrap resamples per checkpoint.")] = 1000,
    seed: Annotated[int, typer.Option(metavar="SEED", help="Seed of the bootstrap.")] = 0,
    fail_on: Annotated[FailOn, typer.Option(
        metavar="WHEN",
        help="Two series: exit 1 when the second is worse, or is not better, at any "
             "checkpoint (Holm-adjusted): never, worse or not-better.")] = FailOn.never,
    allow_partial: Annotated[bool, typer.Option(
        "--allow-partial",
        help="Compare the examples common to all checkpoints when ids differ.")] = False,
    output_format: FormatOpt = OutputFormat.table,
    output: OutputOpt = None,
    precision: PrecisionOpt = 4,
    label_col: LabelColOpt = "label",
    pred_col: PredColOpt = None,
    pred_kind: PredKindOpt = None,
    id_col: IdColOpt = None,
    classes: ClassesOpt = None,
    top_k: TopKOpt = 5,
    bins: BinsOpt = 15,
    prob_tolerance: ProbToleranceOpt = 1e-3,
    min_prob: MinProbOpt = None,
    engine: EngineOpt = Engine.local,
    scheduler: SchedulerOpt = None,
    html: HtmlOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Checkpoints of a training run: NLL, accuracy, ECE, fitted temperature and calibrated
    NLL at each; where NLL is lowest and accuracy highest, and whether the gap between them
    is over-confidence growing or real degradation. Two series: compare's paired verdict at
    every checkpoint."""

    def work() -> int:
        from . import api
        from .io import input_files
        from .outputs import check_outputs

        _check_view(precision, None, top_k)
        names, paths = zip(*(split_name(arg) for arg in runs))
        check_outputs({"--output": output, "--html": html},
                      [f for path in paths for f in input_files(path)]
                      + ([classes] if classes else []))
        with progress_bar() as progress:
            result = api.series(*paths, names=list(names), step_col=step_col,
                                primary=primary, alpha=alpha, min_effect=min_effect,
                                resamples=resamples, seed=seed, fail_on=fail_on.value,
                                allow_partial=allow_partial, label_col=label_col,
                                pred_col=pred_col,
                                pred_kind=pred_kind.value if pred_kind else None,
                                id_col=id_col, classes_file=classes, top_k=top_k,
                                ece_bins=bins, prob_tolerance=prob_tolerance,
                                min_prob=min_prob, progress=progress, engine=engine.value,
                                scheduler=scheduler)
        _emit(result.to_dict(), View(output_format, None, precision), output, html)
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
        import numpy as np

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


@dataclass
class View:
    """How a document is shown: the format, the metrics chosen (None: all), the digits of a
    metric value, and (compare) the one-line-per-candidate summary instead of everything."""

    format: OutputFormat
    metrics: list[str] | None = None
    precision: int = 4
    summary: bool = False


def _emit(document: dict, view: View, output: str | None, html: str | None = None) -> None:
    """Render the document; write the files (all or none), then stdout."""
    from .outputs import write_outputs
    from .render.format import metric_digits
    from .render.select import select_metrics

    document = select_metrics(document, view.metrics)
    comparison = document["kind"] == "comparison"
    files = []
    with metric_digits(view.precision):
        if html is not None and document["kind"] == "series":
            from .render.series_html import render_series_html
            files.append((html, render_series_html(document)))
        elif html is not None:
            from .render import html as html_page
            render = (html_page.render_comparison_html if comparison
                      else html_page.render_report_html)
            files.append((html, render(document)))
        if view.format is OutputFormat.json:
            from .render.jsonout import render_json
            text = render_json(document)
        elif view.format is OutputFormat.markdown:
            if document["kind"] == "series":
                from .render.series_markdown import render_series_markdown
                text = render_series_markdown(document)
            elif comparison:
                from .render import compare_markdown
                text = (compare_markdown.render_summary_markdown(document) if view.summary
                        else compare_markdown.render_comparison_markdown(document))
            else:
                from .render.markdown import render_report_markdown
                text = render_report_markdown(document)
        else:
            text = terminal_text(document, view.summary, to_stdout=output is None)
    if output is not None:
        files.append((output, text))
    write_outputs(files)
    if output is None:
        with closed_pipe_is_fine():
            sys.stdout.write(text)
            sys.stdout.flush()  # inside: a closed pipe shows up at the flush


def output_width(terminal: bool) -> int:
    """Columns to lay tables out in: COLUMNS when set, else the terminal's width, else (a
    pipe or a file) PIPE_WIDTH; never below MIN_WIDTH."""
    import shutil

    columns = os.environ.get("COLUMNS", "").strip()
    if columns.isdigit() and int(columns) > 0:
        width = int(columns)
    elif terminal:
        width = shutil.get_terminal_size((PIPE_WIDTH, 24)).columns
    else:
        width = PIPE_WIDTH
    return max(MIN_WIDTH, width)


_TRAILING = re.compile(r"(?: |\x1b\[[0-9;]*m)+$", re.M)
_STYLE = re.compile(r"\x1b\[[0-9;]*m")


def strip_trailing_spaces(text: str) -> str:
    """Every line without the spaces rich pads it with (colour codes at its end are kept)."""
    return _TRAILING.sub(lambda m: "".join(_STYLE.findall(m.group())), text)


def terminal_text(document: dict, summary: bool = False, to_stdout: bool = True) -> str:
    """The table view as text laid out for the terminal (or pipe, or file). Colour follows
    rich's reading of stdout and the environment (a terminal, NO_COLOR, FORCE_COLOR), only
    for stdout; no line ends in spaces."""
    from rich.console import Console

    probe = Console()  # what rich makes of stdout and the environment
    colour = to_stdout and probe.is_terminal and probe.color_system is not None
    buffer = io.StringIO()
    console = Console(file=buffer, width=output_width(to_stdout and sys.stdout.isatty()),
                      force_terminal=colour, no_color=probe.no_color, highlight=False,
                      emoji=False,
                      # "auto" detects from the same environment the probe read
                      color_system="auto" if colour else None)
    if document["kind"] == "comparison":
        from .render import compare_table
        render = compare_table.render_summary if summary else compare_table.render_comparison
    elif document["kind"] == "series":
        from .render.series_table import render_series as render
    else:
        from .render.table import render_report as render
    render(document, console)
    return strip_trailing_spaces(buffer.getvalue())


@contextmanager
def closed_pipe_is_fine():
    """A reader that stops early (`| head`) closes the pipe: not an error. Output stops, the
    exit code keeps its meaning (0, or 1 from --fail-on), and nothing is printed about it."""
    try:
        yield
    except BrokenPipeError:
        _silence_stdout()


def _silence_stdout() -> None:
    # the interpreter flushes stdout again at exit, which would raise once more
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError, io.UnsupportedOperation):  # no file descriptor: nothing
        pass


@contextmanager
def progress_bar():
    """A progress bar per run on stderr, only when stderr really is a terminal (FORCE_COLOR
    colours a CI log, but cursor movements have no place in it); else no callback. It shows
    at once, while the runs' footers are checked, and becomes one bar per run as they are
    read."""
    if not sys.stderr.isatty() or os.environ.get("TERM") == "dumb":
        yield None
        return
    from rich.console import Console
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn,
                               TimeRemainingColumn)

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeRemainingColumn(), console=Console(stderr=True), transient=True) as bar:
        starting: TaskID | None = bar.add_task("checking runs", total=None)
        tasks: dict[str, TaskID] = {}

        def update(name: str, done: int, total: int) -> None:
            nonlocal starting
            if starting is not None:
                bar.remove_task(starting)
                starting = None
            if name not in tasks:
                tasks[name] = bar.add_task(f"reading {name}", total=total)
            bar.update(tasks[name], completed=done)

        yield update


# What the output's few non-ASCII symbols become on a stream that cannot encode them
# (PYTHONIOENCODING=ascii, a C locale); anything else becomes '?'.
ASCII_FALLBACK = {"·": "|", "→": "->", "±": "+-", "—": "-", "–": "-", "…": "...", "≤": "<=",
                  "≥": ">=", "α": "alpha", "÷": "/", "×": "x", "•": "*", "─": "-", "│": "|",
                  "✓": "+", "✗": "x", "−": "-"}


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
        code = app(standalone_mode=False, prog_name="metricdiff")
    except SystemExit as stop:
        # typer ends with 1 when stdout closes under the help or version text (`-h | head
        # -1`); a reader that stopped early is not an error there either
        if stop.code == 1 and type(sys.stdout).__name__ == "PacifyFlushWrapper":
            _silence_stdout()
            sys.exit(0)
        raise
    except typer.Abort:
        _print_error("interrupted")
        sys.exit(EXIT_INTERRUPTED)
    except Exception as error:
        if not (hasattr(error, "format_message") and hasattr(error, "exit_code")):
            raise  # not the option parser's: _run_guarded already reported ours
        if type(error).__name__ == "NoArgsIsHelpError":  # `metricdiff` alone: the help
            sys.stderr.write(error.format_message() + "\n")
            sys.exit(EXIT_INPUT_ERROR)
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
