"""The public entry points; the CLI is a thin layer over exactly these calls."""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers
import os
import re
import threading
from collections.abc import Mapping, Set as AbstractSet
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, ParamSpec, TypeVar

import numpy as np

from .align import Alignment, AllRows, Kept, align_runs, aligned_as_written, aligned_on_common
from .classwise import BLOCKS, ClasswisePlan
from .errors import UsageError
from .io import (ReadOptions, find_checkpoints, find_run_folders, has_column, inspect_run,
                 is_run_folder_pattern, natural_order)
from .metrics import MetricSettings, SummaryPlan, metric_directions
from .cluster import engine_for
from .pipeline import (DEFAULT_TEMPERATURE_VALUES, Progress, RunKeys, fit_run_temperature,
                       load_keys, load_run, load_steps)
from .results import ComparisonReport, RunReport, SeriesReport, build_report
from .verdict import FAIL_ON, check_primary, check_resamples, check_settings


Params = ParamSpec("Params")
Result = TypeVar("Result")


def _one_blas_thread(command: Callable[Params, Result]) -> Callable[Params, Result]:
    """Run `command` with BLAS on one thread. metricdiff keeps both cores busy with its own
    threads (a reader and the arithmetic, two runs measured at once, two threads of
    resamples); OpenBLAS's threads on top of those wait for cores (spinning) and slow them
    down: a group compare of 10 x 60,000 x 3,000 took 24.4 s with one, 27.1 s without."""
    @functools.wraps(command)
    def limited(*args: Params.args, **kwargs: Params.kwargs) -> Result:
        from threadpoolctl import threadpool_limits

        with threadpool_limits(1, user_api="blas"):
            return command(*args, **kwargs)
    return limited


@_one_blas_thread
def report(run: str | os.PathLike, *, name: str | None = None, label_col: str = "label",
           pred_col: str | None = None, pred_kind: str | None = None, id_col: str | None = None,
           by: tuple[str, ...] | list[str] = (), classes_file: str | os.PathLike | None = None,
           prob_tolerance: float = 1e-3, min_prob: float | None = None, top_k: int = 5,
           ece_bins: int = 15,
           worst_classes: int = 10, noise_batch: int = 32, seed: int = 0,
           class_groups: tuple[float, float] = (0.5, 0.8),
           temperature_values: int = DEFAULT_TEMPERATURE_VALUES,
           batch_values: int | None = None, progress: Progress | None = None,
           temperature: float | None = None,
           temperature_from: str | os.PathLike | None = None,
           cross_fit: bool = False, engine: str = "local",
           scheduler: str | None = None) -> RunReport:
    """Measure one run: headline metrics, calibration, loss anatomy and breakdowns.

    Parameters
    ----------
    run : str or os.PathLike
        A Parquet file, a folder of Parquet shards, or a glob; local, or a URL in object
        storage (s3://, gs://, abfs://, hf://, https://; see the README).
    by : list of str
        Metadata columns to break the headline metrics down by.
    top_k, ece_bins, worst_classes, noise_batch, seed, class_groups
        See ``metricdiff report --help``.
    progress : callable, optional
        Called as ``progress(run_name, rows_done, rows_total)`` after each batch read.
    temperature : float, optional
        Apply this T for ``nll_calibrated`` and ``ece_calibrated`` instead of fitting one.
    temperature_from : str or os.PathLike, optional
        Fit T on that run (a validation split, say; its ids may differ) and apply it here.
    cross_fit : bool
        Fit T on each half of the examples (split by id) and score the other half with it,
        so ``nll_calibrated`` and ``ece_calibrated`` are out of sample.
    engine : {"local", "dask"}
        Where the run is read and reduced: here, or by the workers of a Dask cluster
        (``scheduler``), with the same numbers.
    scheduler : str, optional
        Address of the Dask scheduler for ``engine="dask"``; default
        ``DASK_SCHEDULER_ADDRESS``, else a LocalCluster started for this call.

    Returns
    -------
    RunReport
        Plain data; ``to_dict()`` gives the JSON document the CLI prints.

    Examples
    --------
    >>> import metricdiff
    >>> result = metricdiff.report("sample_runs/digits_gnb.parquet", by=["ink"])
    >>> round(result.metrics["accuracy"], 4)
    0.9074
    >>> result.to_pandas("slices")["value"].tolist()
    ['light', 'heavy']
    """
    check_options(top_k=top_k, ece_bins=ece_bins, worst_classes=worst_classes,
                  noise_batch=noise_batch, seed=seed, prob_tolerance=prob_tolerance,
                  min_prob=min_prob, temperature=temperature)
    settings = MetricSettings(top_k=top_k, ece_bins=ece_bins, worst_classes=worst_classes,
                              noise_batch=noise_batch, seed=seed,
                              class_groups=_check_groups(class_groups))
    if temperature is not None and temperature_from is not None:
        raise UsageError("give --temperature or --temperature-from, not both")
    if cross_fit and (temperature is not None or temperature_from is not None):
        raise UsageError("--cross-fit fits the temperature on this run; it does not go with "
                         "--temperature or --temperature-from")
    run = os.fspath(run)
    read = _read_options(label_col, pred_col, pred_kind, id_col, by, classes_file,
                         prob_tolerance, batch_values, min_prob=min_prob)
    source = None
    if temperature is not None:
        source = "given with --temperature"
    elif temperature_from is not None:
        other = os.fspath(temperature_from)
        # the other run is read for its predictions only: its ids and metadata may differ
        temperature, rows = fit_run_temperature(
            other, dataclasses.replace(read, slice_cols=(), id_col=None), temperature_values)
        source = f"fitted on {other} ({rows:,} rows) with --temperature-from"
    with engine_for(engine, scheduler) as runner:
        data = load_run(run, name=name or default_name(run), options=read,
                        temperature_values=temperature_values, progress=progress,
                        given_temperature=temperature, temperature_source=source,
                        classwise=ClasswisePlan(ece_bins), cross_fit=cross_fit,
                        engine=runner, summary=SummaryPlan.of(settings), columns=False)
        # within the engine: a cluster's workers hold the parts the statistics read
        return build_report(data, settings)


def _read_options(label_col, pred_col, pred_kind, id_col, by, classes_file, prob_tolerance,
                  batch_values, cluster: str | None = None,
                  min_prob: float | None = None) -> ReadOptions:
    return ReadOptions(label_col=label_col, pred_col=pred_col, pred_kind=pred_kind,
                       id_col=id_col, slice_cols=tuple(by), cluster_col=cluster,
                       classes_file=os.fspath(classes_file) if classes_file else None,
                       prob_tolerance=prob_tolerance, min_prob=min_prob,
                       **({"batch_values": batch_values} if batch_values else {}))


# Every numeric option: (CLI name, whole number?, lowest, highest). The upper bounds are what
# the data can use (a bin or a resample more costs memory and time, and tells nothing more).
OPTION_RANGES = {
    "top_k": ("--top-k", True, 1, 1_000_000),
    "ece_bins": ("--bins", True, 1, 10_000),
    "worst_classes": ("--worst", True, 0, 10_000_000),
    "noise_batch": ("--batch-size", True, 1, 10_000_000),
    "seed": ("--seed", True, 0, 2 ** 63 - 1),
    "resamples": ("--resamples", True, 0, 1_000_000),
    "top": ("--top", True, 0, 1_000_000),
    "prob_tolerance": ("--prob-tolerance", False, 0.0, 0.5),
    "min_prob": ("--min-prob", False, 1e-300, 0.1),  # and below 1/K: checked on reading
    "precision": ("--precision", True, 1, 12),
    "temperature": ("--temperature", False, 1e-3, 1e3),  # digits shown; the CLI checks it here too
}


def check_options(**values) -> None:
    """Each numeric option is a number of the right kind, finite and within its range; named
    as the CLI spells it, since most people meet these messages there."""
    for key, value in values.items():
        if value is None:  # an optional setting left out
            continue
        option, whole, low, high = OPTION_RANGES[key]
        kind = "a whole number" if whole else "a number"
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or (
                whole and not float(value).is_integer()) or not math.isfinite(value):
            raise UsageError(f"{option} must be {kind} from {low:g} to {high:g}, got {value!r}")
        if not low <= float(value) <= high:
            raise UsageError(f"{option} must be {kind} from {low:g} to {high:g}, got {value:g}")


def _check_groups(cuts) -> tuple[float, float]:
    try:
        cuts = tuple(float(c) for c in cuts)
    except (TypeError, ValueError):
        raise UsageError(f"--class-groups expects two shares 0 < head < torso < 1, got "
                         f"{cuts!r}") from None
    if len(cuts) != 2 or not 0 < cuts[0] < cuts[1] < 1:
        raise UsageError(f"--class-groups expects two shares 0 < head < torso < 1, got {cuts}")
    return cuts


@_one_blas_thread
def compare(baseline: str | os.PathLike | Mapping[str, Any], *candidates: str | os.PathLike,
            names: list[str | None] | None = None, paired_seeds: bool = False,
            cluster: str | None = None, fdr: float = 0.05,
            primary: str = "nll", alpha: float = 0.05, min_effect: float = 0.0,
            resamples: int = 1000, seed: int = 0, fail_on: str = "never", top: int = 10,
            allow_partial: bool = False, label_col: str = "label", pred_col: str | None = None,
            pred_kind: str | None = None, id_col: str | None = None,
            by: tuple[str, ...] | list[str] = (), classes_file: str | os.PathLike | None = None,
            prob_tolerance: float = 1e-3, min_prob: float | None = None, top_k: int = 5,
            ece_bins: int = 15,
            class_groups: tuple[float, float] = (0.5, 0.8),
            temperature_values: int = DEFAULT_TEMPERATURE_VALUES,
            batch_values: int | None = None, progress: Progress | None = None,
            cross_fit: bool = False, engine: str = "local",
            scheduler: str | None = None) -> ComparisonReport:
    """Compare each candidate run, or group of runs, with the baseline, example by example.

    Parameters
    ----------
    baseline, *candidates : str or os.PathLike
        Runs (Parquet file, folder of shards, or glob). The first is the baseline. A glob
        that ends in ``/`` (``"runs/main/seed*/"``) names one run per folder it matches, all
        in one group.
        Instead, ``baseline`` may be a mapping ``{group name: path or list of paths}``, the
        first group the baseline: each group holds the runs of one configuration (seeds).
    names : list of str or None, optional
        One name per path; paths given the same name form one group (several seeds of one
        configuration). None (or a None entry) makes the run a group of its own, named
        after its file.
    paired_seeds : bool
        The i-th run of every group was trained with the same seed: deltas are taken seed by
        seed. Needs groups of equal size.
    cluster : str, optional
        A column whose equal values mark examples that are not independent (frames of one
        video, crops of one image): every interval and test then treats clusters as the
        units drawn at random.
    fdr : float
        False discovery rate of the per-class tests (Benjamini-Hochberg).
    primary : str
        The metric the verdict is about (default ``nll``).
    alpha : float
        Significance level; intervals are at ``1 - alpha``.
    min_effect : float
        Smallest absolute change of the primary metric that counts.
    resamples, seed : int
        Paired bootstrap for metrics that are not per-example means.
    fail_on : {"never", "worse", "not-better"}
        Which verdicts set ``failed`` (the CLI's exit code 1).
    progress : callable, optional
        Called as ``progress(run_name, rows_done, rows_total)`` after each batch read.
    cross_fit : bool
        Each run's ``nll_calibrated`` and ``ece_calibrated`` score each half of the examples
        (split by id, the same halves in every run) with the temperature of the other half.
    engine, scheduler
        As in :func:`report`: ``engine="dask"`` reads and reduces the runs on a Dask cluster.

    Returns
    -------
    ComparisonReport
        Plain data; ``to_dict()`` gives the JSON document the CLI prints.

    Examples
    --------
    >>> import metricdiff
    >>> result = metricdiff.compare("sample_runs/digits_logreg.parquet",
    ...                             "sample_runs/digits_gnb.parquet", resamples=200)
    >>> result.comparisons[0]["verdict"]["decision"]
    'worse'
    >>> result.best
    'digits_logreg'
    """
    paths, names = _runs_and_names(baseline, candidates, names)
    groups, run_names = _groups(paths, names)
    check_options(top_k=top_k, ece_bins=ece_bins, seed=seed, resamples=resamples, top=top,
                  prob_tolerance=prob_tolerance, min_prob=min_prob)
    metric_settings = MetricSettings(top_k=top_k, ece_bins=ece_bins, seed=seed,
                                     class_groups=_check_groups(class_groups))
    # a mistyped setting is reported before minutes of reading, not after
    check_primary(primary, metric_directions(top_k))
    check_settings(alpha, min_effect, fail_on, fdr)
    check_resamples(primary, resamples, alpha)
    read = _read_options(label_col, pred_col, pred_kind, id_col, by, classes_file,
                         prob_tolerance, batch_values, cluster, min_prob)
    # every run's footers and columns are checked before any run is read: a damaged last
    # candidate is reported in a second, not after minutes of reading the others
    layouts = [inspect_run(path, read) for path in paths]
    with engine_for(engine, scheduler) as runner:
        # runs are measured where a cluster holds them: their columns stay there
        runs, alignment = _read_compared(paths, run_names, layouts, read, allow_partial,
                                         SummaryPlan.of(metric_settings), temperature_values,
                                         progress, cross_fit, runner)
        from .comparison import CompareSettings, build_comparison
        settings = CompareSettings(primary=primary, alpha=alpha, min_effect=min_effect,
                                   resamples=resamples, seed=seed, fail_on=fail_on, top=top,
                                   allow_partial=allow_partial, paired_seeds=paired_seeds,
                                   cluster=cluster, fdr=fdr)
        # within the engine: a cluster's workers hold the parts some statistics read
        return build_comparison(runs, settings, metric_settings, groups, alignment)


def _read_compared(paths, run_names, layouts, read, allow_partial, summary,
                   temperature_values, progress, cross_fit, engine) -> tuple[list, Alignment]:
    """The runs of a comparison, lined up by their keys first, read two at a time: each
    run's reading is already overlapped with its arithmetic, and the machine this is sized
    for has two cores (with a Dask engine, each thread waits on its run's tasks). With an
    engine, the runs' columns stay on its workers. With the runs, their alignment."""
    stop = threading.Event()  # on Ctrl-C or an error, the other reads end at their next batch
    pool = ThreadPoolExecutor(max_workers=2)
    try:
        # ids and labels first, a small part of each file: runs that cannot be lined up, or
        # that disagree on a label, are reported before their predictions are read
        alignment = None
        if engine is not None:
            # runs holding the same examples are lined up from digests of their
            # partitions' keys, which stay on the workers; any other runs from their keys
            digests = list(pool.map(lambda layout: engine.key_digests(layout, read), layouts))
            described = [RunKeys(name, layout, None, NO_LABELS, layout.num_classes)
                         for layout, name in zip(layouts, run_names)]
            alignment = aligned_as_written(described, digests)
            # (on a thread, as every wait on the cluster: Ctrl-C reaches this one, which
            # stops the others at their next look at `stop`)
            if (alignment is not None and alignment.in_order is None
                    and pool.submit(engine.repeats_an_id, layouts[0], read, stop).result()):
                alignment = None  # lined up from the keys, which reports the repeated ids
            elif alignment is None and allow_partial and all(
                    part.kind == "whole numbers" for run in digests for part in run):
                # compared on the examples every run holds: found on the workers, too
                alignment = aligned_on_common(described, pool.submit(
                    engine.common_ids, layouts, read, stop).result())
        if alignment is None:
            keys = list(pool.map(lambda job: load_keys(job[0], job[1], read, engine),
                                 zip(layouts, run_names)))
            alignment = align_runs(keys, allow_partial)
            del keys  # the runs' reads hold their own ids and labels: not twice per example
        plans = [_classwise_plan(summary.bins, rows, layout.n_rows)
                 for rows, layout in zip(alignment.rows, layouts)]
        columns = engine is None
        # a run's RunSums are of all its rows: of use when each of them is compared
        futures = [pool.submit(load_run, path, name=name, options=read,
                               temperature_values=temperature_values, progress=progress,
                               stop=stop, layout=layout, classwise=plan,
                               cross_fit=cross_fit, engine=engine,
                               # (a run left on the workers is counted by its sums)
                               summary=summary if plan.keep is None or not columns else None,
                               columns=columns)
                   for path, name, layout, plan in zip(paths, run_names, layouts, plans)]
        # imported here, not at the top (report() does not need it), and while the runs are
        # read: its imports (scipy.special, 0.2 s) overlap the reading
        from . import comparison  # noqa: F401
        return [future.result() for future in futures], alignment
    except BaseException:
        stop.set()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


NO_LABELS = np.empty(0, dtype=np.int64)


def _classwise_plan(bins: int, rows: np.ndarray | AllRows, count: int) -> ClasswisePlan:
    """The classwise sums of a run's rows common to every run (of `count` rows): marked
    here, or, lined up where a cluster holds the runs, there (align.Kept)."""
    if len(rows) == count:
        return ClasswisePlan(bins, BLOCKS)
    if isinstance(rows, Kept):
        return ClasswisePlan(bins, BLOCKS, kept_parts=rows.offsets)
    keep = np.zeros(count, dtype=bool)
    keep[rows] = True
    return ClasswisePlan(bins, BLOCKS, keep)


def _runs_and_names(baseline, candidates, names) -> tuple[list[str], list[str | None]]:
    """Paths and their given names (None: none given), run-folder patterns expanded."""
    if isinstance(baseline, Mapping):
        if candidates or names is not None:
            raise UsageError("give the groups as one mapping, or runs and names, not both")
        entries: list[tuple[str, str | None]] = [
            (os.fspath(path), str(group)) for group, paths in baseline.items()
                   for path in ([paths] if isinstance(paths, (str, os.PathLike)) else paths)]
    else:
        paths = [os.fspath(path) for path in (baseline, *candidates)]
        given = list(names) if names is not None else [None] * len(paths)
        if len(given) != len(paths):
            raise UsageError(f"{len(given)} names for {len(paths)} runs")
        entries = list(zip(paths, given))
    expanded: list[tuple[str, str | None]] = []
    for path, name in entries:
        if is_run_folder_pattern(path):  # one group: named as given, else after the parent
            group = name or default_name(os.path.dirname(path.rstrip("/" + os.sep)))
            expanded += [(folder, group) for folder in find_run_folders(path)]
        else:
            expanded.append((path, name))
    if len(expanded) < 2:
        raise UsageError("compare needs a baseline and at least one candidate run")
    return [p for p, _ in expanded], [n for _, n in expanded]


def _groups(paths: list[str], names: list[str | None]) -> tuple[list[str], list[str]]:
    """(group of each run, run names): a run with no name given is a group of its own; the
    runs of a group of several are named group/file."""
    groups = _distinct([name or default_name(path) for name, path in zip(names, paths)],
                       keep=set(filter(None, names)))
    sizes = {group: groups.count(group) for group in groups}
    run_names = _distinct([group if sizes[group] == 1 else f"{group}/{default_name(path)}"
                           for group, path in zip(groups, paths)])
    return groups, run_names


def _distinct(names: list[str], keep: AbstractSet[str] = frozenset()) -> list[str]:
    """Runs are keyed by name: a repeated name (the same file twice) gets #2, #3...; names in
    `keep` (groups named on purpose) stay as they are."""
    seen: dict[str, int] = {}
    distinct = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        distinct.append(name if seen[name] == 1 or name in keep else f"{name}#{seen[name]}")
    return distinct


def default_name(path: str) -> str:
    """A run's file or folder name without the .parquet ending: short enough for a table."""
    base = os.path.basename(os.path.normpath(path)) or path
    return base[: -len(".parquet")] if base.endswith(".parquet") and base != ".parquet" else base


@_one_blas_thread
def series(*runs: str | os.PathLike | Mapping[str, Any], names: list[str | None] | None = None,
           step_col: str | None = None, primary: str = "nll", alpha: float = 0.05,
           min_effect: float = 0.0, resamples: int = 1000, seed: int = 0,
           fail_on: str = "never", allow_partial: bool = False, label_col: str = "label",
           pred_col: str | None = None, pred_kind: str | None = None, id_col: str | None = None,
           classes_file: str | os.PathLike | None = None, prob_tolerance: float = 1e-3,
           min_prob: float | None = None, top_k: int = 5, ece_bins: int = 15,
           temperature_values: int = DEFAULT_TEMPERATURE_VALUES,
           batch_values: int | None = None, progress: Progress | None = None,
           engine: str = "local", scheduler: str | None = None) -> SeriesReport:
    """Checkpoints of a training run: NLL, accuracy, ECE, temperature and calibrated NLL at
    each, where NLL is lowest and accuracy highest, and why they part; with two series, the
    paired comparison of ``compare`` at every checkpoint.

    Parameters
    ----------
    *runs : str or os.PathLike
        The checkpoints, in training order: runs (file or folder of shards, local or in
        object storage), or globs, each expanded into one checkpoint per match in natural
        order (``"a/epoch*.parquet"``: epoch9 before epoch10; a pattern ending in ``/``: one
        per folder). A series given as ONE run is split by its step column.
        Instead, a mapping ``{series name: path, glob or list of paths}``.
    names : list of str or None, optional
        One name per path: paths of one name form one series (``NAME=PATH`` on the command
        line). Two names: two series, compared checkpoint by checkpoint, the first the
        baseline. None: one series.
    step_col : str, optional
        The column whose values split a series given as one run into checkpoints (numbers;
        default ``step`` when the run has it).
    primary, alpha, min_effect, resamples, seed, fail_on, allow_partial
        As for :func:`compare`; ``primary``, ``min_effect``, ``resamples`` and ``fail_on``
        concern the verdicts of two series. ``alpha`` is also the level of every interval
        and test of one series.
    progress : callable, optional
        Called as ``progress(checkpoint name, rows_done, rows_total)`` after each batch read.
    engine, scheduler
        As in :func:`report`: ``engine="dask"`` reads and reduces the checkpoints on a Dask
        cluster (a series given as one run with a step column is read here).

    Returns
    -------
    SeriesReport
        Plain data; ``to_dict()`` gives the JSON document the CLI prints.

    Examples
    --------
    >>> import metricdiff
    >>> result = metricdiff.series("sample_runs/series/wide/epoch*.parquet")
    >>> result.series[0]["diagnosis"]["kind"]
    'over-confidence growing'
    """
    check_options(top_k=top_k, ece_bins=ece_bins, seed=seed, resamples=resamples,
                  prob_tolerance=prob_tolerance, min_prob=min_prob)
    check_primary(primary, metric_directions(top_k))
    check_settings(alpha, min_effect, fail_on)
    metric_settings = MetricSettings(top_k=top_k, ece_bins=ece_bins, seed=seed)
    given = _series_arguments(runs, names)
    if len(given) > 2:
        raise UsageError(f"series compares two series at most, got {len(given)}: "
                         f"{', '.join(given)}")
    if len(given) == 2:
        check_resamples(primary, resamples, alpha)
    elif fail_on != FAIL_ON[0]:
        raise UsageError("--fail-on judges the verdicts of two series; give two (NAME=RUN "
                         "for the checkpoints of each)")
    read = _read_options(label_col, pred_col, pred_kind, id_col, (), classes_file,
                         prob_tolerance, batch_values, min_prob=min_prob)
    warnings = []
    expanded: dict[str, list[str]] = {}
    for name, paths in given.items():
        expanded[name] = [found for path in paths for found in find_checkpoints(path)]
        if step_col is not None and len(expanded[name]) > 1:
            raise UsageError(f"--step-col splits a series given as one run, but {name} has "
                             f"{len(expanded[name])} runs (each file is a checkpoint)")
        stems = [default_name(path) for path in paths]
        if len(paths) > 1 and stems != natural_order(stems):
            warnings.append(f"{name}: checkpoints are taken in the order given, which is not "
                            f"the natural order of their names ({', '.join(stems[:3])}...); a "
                            "shell sorts an unquoted glob alphabetically (epoch10 before "
                            "epoch9): quote the pattern to have it sorted naturally")
    layouts = {name: [inspect_run(path, read) for path in paths]
               for name, paths in expanded.items()}
    # a series given as one run (split by its step column) is read here, whatever the engine
    with engine_for(engine, scheduler) as runner:
        split = {name: len(found) == 1 for name, found in layouts.items()}
        if not any(split.values()):  # ids and labels first: a mismatch is found before reading
            counts = {name: len(found) for name, found in layouts.items()}
            if len(set(counts.values())) > 1:
                raise UsageError("series " + " and ".join(f"{n} has {c} checkpoints"
                                                          for n, c in counts.items())
                                 + "; expected the same number to compare them checkpoint by "
                                 "checkpoint")
            keys = [load_keys(layout, default_name(layout.path), read, runner)
                    for found in layouts.values() for layout in found]
            align_runs(keys, allow_partial)
        # scipy: imported only when needed
        from .checkpoints import Checkpoints, SeriesSettings, build_series

        chosen = []
        for name, found in layouts.items():
            if split[name]:
                column = step_col or ("step" if has_column(found[0], "step") else None)
                if column is None:
                    raise UsageError(f"{found[0].path}: one checkpoint; a series needs two or more "
                                     "(several runs, a quoted glob such as 'run/epoch*.parquet', "
                                     "or one run with a step column: --step-col NAME)")
                runs_of, steps = load_steps(found[0].path, column, read, temperature_values,
                                            progress, layout=found[0])
                chosen.append(Checkpoints(name, runs_of, steps, f"column {column}"))
            else:
                labels = _distinct([default_name(layout.path) for layout in found])
                runs_of = _load_all(found, labels, read, temperature_values, progress,
                                    runner, SummaryPlan.of(metric_settings))
                steps, source = checkpoint_steps(labels)
                chosen.append(Checkpoints(name, runs_of, steps, source))
        settings = SeriesSettings(primary=primary, alpha=alpha, min_effect=min_effect,
                                  resamples=resamples, seed=seed, fail_on=fail_on,
                                  allow_partial=allow_partial,
                                  step_col=next((c.step_source[len("column "):] for c in chosen
                                                 if c.step_source.startswith("column ")),
                                                None))
        # within the engine: a cluster's workers hold the parts some statistics read
        return build_series(chosen, settings, metric_settings, warnings)


def _series_arguments(runs, names) -> dict[str, list[str]]:
    """{series name: its paths as given}, series in the order they first appear."""
    if len(runs) == 1 and isinstance(runs[0], Mapping):
        if names is not None:
            raise UsageError("give the series as one mapping, or runs and names, not both")
        entries: list[tuple[str, str | None]] = [
            (os.fspath(path), str(name)) for name, paths in runs[0].items()
            for path in ([paths] if isinstance(paths, (str, os.PathLike)) else paths)]
    else:
        paths = [os.fspath(path) for path in runs]
        given = list(names) if names is not None else [None] * len(paths)
        if len(given) != len(paths):
            raise UsageError(f"{len(given)} names for {len(paths)} runs")
        entries = list(zip(paths, given))
    if not entries:
        raise UsageError("series needs checkpoints: runs, a glob, or one run with a step column")
    named = [name is not None for _, name in entries]
    if any(named) and not all(named):
        raise UsageError("name every checkpoint's series (NAME=RUN) or none: "
                         + ", ".join(path for path, name in entries if name is None)
                         + " has no NAME=")
    if not any(named):
        paths = [path for path, _ in entries]
        return {_series_name(paths): paths}
    series: dict[str, list[str]] = {}
    for path, name in entries:
        series.setdefault(str(name), []).append(path)
    return series


def _series_name(paths: list[str]) -> str:
    """An unnamed series is named after the folder its checkpoints share (series/wide/epoch01
    ... -> wide), or after its one run; else 'series'."""
    if len(paths) == 1 and not any(ch in paths[0] for ch in "*?["):
        return default_name(paths[0])
    parents = {os.path.dirname(os.path.normpath(path)) for path in paths}
    if len(parents) == 1:
        parent = parents.pop()
        if parent and not any(ch in parent for ch in "*?["):
            return default_name(parent)
    return "series"


def checkpoint_steps(names: list[str]) -> tuple[list[int | float], str]:
    """The step of each checkpoint: the last number in its name when every name has one and
    they increase (epoch01, epoch02 ... -> 1, 2 ...), else its position from 1."""
    numbers_found = [re.findall(r"\d+", name) for name in names]
    if all(numbers_found):
        steps: list[int | float] = [int(found[-1]) for found in numbers_found]
        if all(a < b for a, b in zip(steps, steps[1:])):
            return steps, "names"
    return list(range(1, len(names) + 1)), "positions"


def _load_all(layouts, labels: list[str], read: ReadOptions, temperature_values: int,
              progress: Progress | None, engine=None,
              summary: SummaryPlan | None = None) -> list:
    """Every checkpoint read, two at a time as compare reads its runs."""
    stop = threading.Event()
    pool = ThreadPoolExecutor(max_workers=2)
    try:
        futures = [pool.submit(load_run, layout.path, name=label, options=read,
                               temperature_values=temperature_values, progress=progress,
                               stop=stop, layout=layout, engine=engine, summary=summary)
                   for layout, label in zip(layouts, labels)]
        return [future.result() for future in futures]
    except BaseException:
        stop.set()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
