"""One run from disk to per-example columns: sample for the temperature, then one streaming pass."""

from __future__ import annotations

import dataclasses
import queue
import threading
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Protocol, TypeVar

import numpy as np

from .align import KeyDigest
from .classwise import ClasswisePlan, ClasswiseSums, example_blocks
from .errors import InputError
from .metrics import RunSums, SummaryPlan
from .orderstats import Parts
from .io import (MAX_SAMPLED_ROWS, Batch, ReadOptions, RunLayout, inspect_run, iter_batches,
                 read_steps, sample_plan)
from .perexample import PerExample, floor_probabilities, from_batch, is_unknown, unknown
from .temperature import TemperatureSample, fit_temperature

# The temperature is fitted on at most this many prediction values (rows x classes): every row
# of a run within this size, else the head rows of row groups spread over the run (sample_plan).
DEFAULT_TEMPERATURE_VALUES = 1 << 23


@dataclass
class RunData:
    """A run reduced to a few numbers per example, plus what is needed to describe it."""

    name: str
    layout: RunLayout
    examples: PerExample | None  # None: held by a cluster's workers alone (in `parts`)
    ids: np.ndarray | None
    slices: dict[str, np.ndarray]
    temperature: float | None
    temperature_rows: int  # rows the temperature was fitted on
    num_classes: int  # K, inferred from the data for top-k runs without class names
    clusters: np.ndarray | None = None  # each example's cluster key (text), with --cluster
    min_prob: float | None = None  # the --min-prob floor the probabilities were given
    looks_like_probs: bool = False  # "logits" whose sampled rows are all probability vectors
    temperature_source: str = "fitted on this run"  # or given, or fitted on another run
    classwise: ClasswiseSums | None = None  # per-(class, bin) sums; None for top-k runs
    sums: RunSums | None = None  # gathered by the main pass, when load_run was given a plan
    parts: Parts | None = None  # the examples in parts on a cluster's workers (orderstats.py)
    slice_parts: Parts | None = None  # each of those parts' slice values (column -> values)
    key_parts: Parts | None = None  # and each part's (keys, its first row in the run)
    cluster_parts: Parts | None = None  # and each part's cluster keys (text), with --cluster

    @property
    def labels(self) -> np.ndarray:
        return self.columns.label

    @property
    def columns(self) -> PerExample:
        """The per-example columns, held here (not for a report on a cluster)."""
        assert self.examples is not None, f"{self.name}: its examples are held by the workers"
        return self.examples

    @property
    def n(self) -> int:
        """The run's examples."""
        if self.examples is not None:
            return len(self.examples)
        assert self.sums is not None  # a run held by the workers alone has its sums
        return self.sums.means.n

    @property
    def rank_depth(self) -> int | None:
        """How many classes a top-k run lists; None when the whole ranking is known."""
        return self.layout.topk


# Called after each batch of the main pass with (run name, rows done, rows in the run).
Progress = Callable[[str, int, int], None]


class Engine(Protocol):
    """Runs a run's main pass elsewhere (cluster.py): the same reduction, part by part."""

    def reduce_run(self, layout: RunLayout, options: ReadOptions, scoring: "Scoring",
                   name: str, progress: Progress | None,
                   stop: threading.Event | None, columns: bool = True) -> "RunPart": ...

    def read_keys(self, layout: RunLayout, options: ReadOptions) -> "Keys": ...

    def key_digests(self, layout: RunLayout, options: ReadOptions) -> list[KeyDigest]: ...

    def repeats_an_id(self, layout: RunLayout, options: ReadOptions,
                      stop: threading.Event | None = None) -> bool: ...


def load_run(path: str, name: str | None = None, options: ReadOptions = ReadOptions(),
             temperature_values: int = DEFAULT_TEMPERATURE_VALUES,
             progress: Progress | None = None,
             stop: threading.Event | None = None,
             layout: RunLayout | None = None, given_temperature: float | None = None,
             temperature_source: str | None = None,
             classwise: ClasswisePlan | None = None, cross_fit: bool = False,
             engine: "Engine | None" = None, summary: SummaryPlan | None = None,
             columns: bool = True) -> RunData:
    """Read one run; `stop`, when set by another thread, ends the read at the next batch.
    `layout`: the run's footers, when they were already checked. `given_temperature`: apply
    this T instead of fitting one here, `temperature_source` saying where it came from.
    `classwise`: gather the sums of classwise calibration as planned (not for top-k runs).
    `cross_fit`: nll_calibrated and ece_calibrated of each half of the examples use the
    temperature fitted on the other half (halves by id, or cluster, as the blocks are).
    `engine`: where the main pass runs (a Dask cluster); None: here, one batch at a time.
    `summary`: gather the run's RunSums with these settings as the pass goes. `columns`:
    bring the per-example columns here; with an engine and `summary`, False leaves them on
    the workers alone (a report needs nothing but its sums and the workers' parts)."""
    layout = layout or inspect_run(path, options)
    min_prob = options.min_prob  # the opt-in floor on every probability; else 0 stays 0
    if min_prob is not None and layout.prediction.kind == "topk":
        raise InputError("--min-prob needs the whole predicted distribution to renormalise, "
                         "but this is a top-k run", path=layout.path)
    if min_prob is not None and layout.num_classes and min_prob * layout.num_classes >= 1:
        raise InputError(f"--min-prob {min_prob:g} is not below 1/K for the "
                         f"{layout.num_classes} classes: the floor would flatten the "
                         "distribution", path=layout.path)
    name = name or path
    temperature, temperature_rows = None, 0
    sample_batches: list[Batch] = []
    whole_run = looks_like_probs = False
    if layout.prediction.kind != "topk":
        plan, whole_run = sample_plan(layout, temperature_values)
        sample_batches = [_floored(b, min_prob) for b in iter_batches(layout, options, plan)]
        looks_like_probs = (layout.prediction.kind == "logits"
                            and all(_probability_rows(b) for b in sample_batches))
    # the main pass starts reading now, while the temperature is fitted on this core
    reader = (None if whole_run or engine is not None
              else Prefetch(iter_batches(layout, options), FIT_LOOKAHEAD))
    try:
        halves = None  # with cross_fit: the temperatures fitted on each half
        if given_temperature is not None and layout.prediction.kind != "topk":
            temperature = given_temperature
        elif sample_batches:
            temperature, temperature_rows = _fit(sample_batches)
            if cross_fit:
                halves = _fit_halves(sample_batches, layout)
                temperature_source = (f"cross-fitted on two halves of the examples "
                                      f"(T={halves[0]:.4g} and {halves[1]:.4g}, each scoring "
                                      "the other half)")
        scoring = Scoring(temperature, halves, min_prob, classwise
                          if layout.prediction.kind != "topk" and layout.num_classes else None,
                          summary)
        if engine is not None:
            part = engine.reduce_run(layout, options, scoring, name, progress, stop,
                                     columns=columns or summary is None)
        else:
            batches: Iterable[Batch] = reader if reader is not None else sample_batches
            if reader is None:  # the sample is the whole run, read once and floored already
                scoring = dataclasses.replace(scoring, min_prob=None)
            sample_batches = []  # freed as the main pass goes, when it holds them
            part = reduce_batches(batches, layout, scoring, layout.n_rows,
                                  rows_done=_counting(name, layout, progress), stop=stop)
    finally:
        if reader is not None:
            reader.close()
    examples = part.examples
    infinite = (np.isposinf(examples.nll).any() if examples is not None
                else part.sums is not None and np.isposinf(part.sums.means.nll))
    if temperature is not None and infinite:
        # a true class at probability 0: the NLL is infinite at every temperature
        temperature, temperature_rows = None, 0
        if examples is not None:
            examples.without_temperature()
    num_classes = layout.num_classes
    if num_classes is None and examples is not None:
        num_classes = int(max(examples.label.max(), examples.pred.max())) + 1
    elif num_classes is None:  # the classes the workers' sums have seen, as labels or picks
        assert part.sums is not None
        num_classes = max(len(part.sums.classes.support), len(part.sums.classes.predicted))
    return RunData(name=name, layout=layout, examples=examples, ids=part.ids,
                   slices=part.slices, temperature=temperature,
                   temperature_rows=temperature_rows, num_classes=num_classes,
                   clusters=part.clusters, min_prob=min_prob,
                   looks_like_probs=looks_like_probs,
                   temperature_source=temperature_source or "fitted on this run",
                   classwise=part.classwise,
                   sums=None if part.sums is None else dataclasses.replace(
                       part.sums, classes=part.sums.classes.padded(num_classes)),
                   parts=part.held, slice_parts=part.held_slices, key_parts=part.held_keys,
                   cluster_parts=part.held_clusters)


@dataclass(frozen=True)
class Scoring:
    """What every row of a run's main pass is reduced with, decided before it starts: small
    and picklable, so a cluster's workers reduce their rows exactly as the local pass does."""

    temperature: float | None
    halves: tuple[float, float] | None  # with --cross-fit: each half's temperature
    min_prob: float | None
    classwise: ClasswisePlan | None  # None: no classwise sums (top-k runs)
    summary: SummaryPlan | None = None  # None: no RunSums gathered


@dataclass
class RunPart:
    """Consecutive rows of a run reduced: their per-example columns, keys and metadata, and
    their share of the classwise sums and of the RunSums."""

    examples: PerExample | None  # None: left where the engine holds them (RunAssembler)
    ids: np.ndarray | None
    slices: dict[str, np.ndarray]
    clusters: np.ndarray | None
    classwise: ClasswiseSums | None
    sums: RunSums | None = None
    held: Parts | None = None  # the whole run's parts where an engine keeps them (a cluster)
    held_slices: Parts | None = None  # and each part's slice values (column -> values)
    held_keys: Parts | None = None  # and each part's (keys, its first row in the run)
    held_clusters: Parts | None = None  # and each part's cluster keys (text), with --cluster


class RunAssembler:
    """The rows first_row .. first_row + rows - 1 of a run, assembled from parts (batches,
    or a cluster's partitions) added in any order at their own row offsets.

    Numeric columns are filled in place, so the run is held once, never as its parts plus
    their concatenation (which doubled the peak of a read). Text columns (string ids,
    slices, clusters) are concatenated at the end, in row order: their width is known only
    once every part has been seen."""

    def __init__(self, rows: int, first_row: int = 0):
        self.rows, self.first_row = rows, first_row
        self._filled: dict[str, np.ndarray] = {}
        self._pieces: dict[str, list[tuple[int, np.ndarray]]] = {}
        self._sums: list[ClasswiseSums] = []
        self._slice_cols: list[str] = []
        self._ranges: list[tuple[int, int]] = []  # (offset, rows) of each part added
        self._unknown: set[str] = set()  # columns unknown (NaN) in every part so far
        # RunSums are merged in row order, whatever order the parts come in, so that a run's
        # sums are added up the same way each time; parts ahead of the next row wait here
        self._waiting: dict[int, tuple[int, RunSums]] = {}
        self._merged_until = 0
        self._merged: RunSums | None = None
        self._columns = True  # False: the parts came without their columns

    def add(self, row_start: int, part: RunPart) -> None:
        """A part of the run: its columns go into place; a part without them (left on a
        cluster's workers) brings its sums alone."""
        at = row_start - self.first_row
        if part.examples is None:
            assert part.sums is not None  # its rows are counted by its sums
            self._columns, rows = False, part.sums.means.n
            columns: dict[str, np.ndarray | None] = {}
        else:
            rows = len(part.examples)
            columns = {f"examples.{f.name}": getattr(part.examples, f.name)
                       for f in dataclasses.fields(PerExample)}
            columns.update({f"slices.{col}": values for col, values in part.slices.items()})
            columns.update(ids=part.ids, clusters=part.clusters)
        for name, values in columns.items():
            if values is None:
                continue
            if is_unknown(values) and name not in self._filled and name not in self._pieces:
                self._unknown.add(name)  # a top-k run's NaN columns: nothing to hold
                continue
            if name in self._unknown:  # known here, unknown in earlier parts (never seen)
                self._unknown.discard(name)
                self._pieces[name] = [(a, unknown(n)) for a, n in self._ranges]
            filled = self._filled.get(name)
            if filled is not None and filled.dtype != values.dtype:
                # a part of another type (uint64 ids beyond int64's range, say): this column
                # is joined as parts instead, as np.concatenate would join them
                self._pieces[name] = [(a, filled[a:a + n]) for a, n in self._ranges]
                del self._filled[name]
                filled = None
            if name in self._pieces or values.dtype.kind not in "biuf":
                self._pieces.setdefault(name, []).append((at, values))
                continue
            if filled is None:
                filled = self._filled[name] = np.empty(self.rows, dtype=values.dtype)
            filled[at:at + len(values)] = values
        self._ranges.append((at, rows))
        if not self._slice_cols:
            self._slice_cols = list(part.slices)
        if part.classwise is not None:
            self._sums.append(part.classwise)
        if part.sums is not None:
            self._waiting[at] = (rows, part.sums)
            while self._merged_until in self._waiting:
                rows, sums = self._waiting.pop(self._merged_until)
                self._merged = sums if self._merged is None else self._merged.merged(sums)
                self._merged_until += rows

    def result(self) -> RunPart:
        def column(name: str) -> np.ndarray | None:
            if name in self._unknown:
                return unknown(self.rows)
            if name in self._filled:
                return self._filled.pop(name)
            pieces = self._pieces.pop(name, None)
            if pieces is None:
                return None
            return np.concatenate([values for _, values in sorted(pieces, key=_offset)])

        def present(name: str) -> np.ndarray:
            values = column(name)
            assert values is not None  # every part has these columns
            return values

        examples = None if not self._columns else PerExample(
            **{f.name: present(f"examples.{f.name}") for f in dataclasses.fields(PerExample)})
        return RunPart(examples=examples, ids=column("ids"),
                       slices={col: present(f"slices.{col}") for col in self._slice_cols
                               if self._columns},
                       clusters=column("clusters"),
                       classwise=ClasswiseSums.merged(self._sums) if self._sums else None,
                       sums=self._merged)


def _offset(piece: tuple[int, np.ndarray]) -> int:
    return piece[0]


# Called after each batch of a pass with the rows of that batch.
RowsDone = Callable[[int], None]


def reduce_batches(batches: Iterable[Batch], layout: RunLayout, scoring: Scoring,
                   rows: int, first_row: int = 0, rows_done: RowsDone | None = None,
                   stop: threading.Event | None = None) -> RunPart:
    """The main pass over some of a run's batches: all of them, or one partition's (its
    `rows` rows from `first_row` on)."""
    assembled = RunAssembler(rows, first_row)
    plan = scoring.classwise
    sums = None
    if plan is not None:
        assert layout.num_classes is not None  # no plan for runs of unknown width
        sums = ClasswiseSums(layout.num_classes, plan.bins, plan.blocks)
    for batch in batches:
        if stop is not None and stop.is_set():
            raise KeyboardInterrupt
        batch = _floored(batch, scoring.min_prob)
        blocks = None if plan is None else _blocks(batch, plan)
        applied: float | np.ndarray | None = scoring.temperature
        if scoring.halves is not None:  # each row scored by the other half's temperature
            halves = scoring.halves
            applied = np.where(example_blocks(row_keys(batch), 2) == 0, halves[1], halves[0])
        examples = from_batch(batch, applied, sums, blocks)
        run_sums = (None if scoring.summary is None
                    else RunSums.of(examples, scoring.summary, layout.num_classes or 0))
        assembled.add(batch.row_start, RunPart(examples, batch.ids, batch.slices,
                                               batch.clusters, None, run_sums))
        if rows_done is not None:
            rows_done(len(batch))
    part = assembled.result()
    part.classwise = None if sums is None else sums.finish()
    return part


def _counting(name: str, layout: RunLayout, progress: Progress | None) -> RowsDone | None:
    """A RowsDone that reports the run's progress so far."""
    if progress is None:
        return None
    done = 0

    def count(rows: int) -> None:
        nonlocal done
        done += rows
        progress(name, done, layout.n_rows)

    return count


def row_keys(batch: Batch) -> np.ndarray:
    """What identifies each row's example across runs and reads: its cluster where clusters
    are read (examples of one cluster stay together), else its id, else its row number."""
    if batch.clusters is not None:
        return batch.clusters
    if batch.ids is not None:
        return batch.ids
    return np.arange(batch.row_start, batch.row_start + len(batch))


def _blocks(batch: Batch, plan: ClasswisePlan) -> np.ndarray:
    """Each row's block; -1 for rows the plan leaves out."""
    blocks = example_blocks(row_keys(batch), plan.blocks)
    if plan.keep is not None:
        start = batch.row_start - plan.first_row
        blocks[~plan.keep[start:start + len(batch)]] = -1
    return blocks


def _fit_halves(batches: list[Batch], layout: RunLayout) -> tuple[float, float]:
    """The temperatures fitted on each half of the sampled rows."""
    samples = (TemperatureSample(), TemperatureSample())
    for batch in batches:
        assert batch.scores is not None  # top-k runs have no temperature sample
        half = example_blocks(row_keys(batch), 2)
        for h, sample in enumerate(samples):
            if (half == h).any():
                sample.add(batch.scores[half == h], batch.labels[half == h])
    if not all(len(sample) for sample in samples):
        raise InputError("--cross-fit needs examples in both halves to fit a temperature on "
                         "each; this run has too few", path=layout.path)
    return fit_temperature(samples[0]), fit_temperature(samples[1])


def fit_run_temperature(path: str, options: ReadOptions = ReadOptions(),
                        temperature_values: int = DEFAULT_TEMPERATURE_VALUES
                        ) -> tuple[float, int]:
    """The temperature a run's own report would fit (same sample, same search), and the rows
    it was fitted on: for applying it to another run (--temperature-from)."""
    layout = inspect_run(path, options)
    if layout.prediction.kind == "topk":
        raise InputError("--temperature-from needs the whole predicted distribution to fit a "
                         "temperature, but this is a top-k run", path=layout.path)
    plan, _ = sample_plan(layout, temperature_values)
    return _fit([_floored(b, options.min_prob) for b in iter_batches(layout, options, plan)])


def load_steps(path: str, step_col: str, options: ReadOptions = ReadOptions(),
               temperature_values: int = DEFAULT_TEMPERATURE_VALUES,
               progress: Progress | None = None, layout: RunLayout | None = None
               ) -> tuple[list[RunData], list[int | float]]:
    """One run holding several checkpoints, told apart by the number in `step_col`: a RunData
    per step value, in increasing order of step, and the step values.

    Each is what load_run gives for a file of that step's rows alone: its own temperature,
    fitted on its rows (on its first rows, in file order, when it has more than load_run's
    sample would take). Two passes over the run: the first fits the temperatures, each as soon
    as its step's sample is complete, so a run written step after step holds one sample at a
    time; the second reduces every batch to per-example columns."""
    layout = layout or inspect_run(path, options)
    steps = read_steps(layout, step_col)
    values, step_of_row, counts = np.unique(steps, return_inverse=True, return_counts=True)
    if len(values) < 2:
        raise InputError(f"every row has step {step_text(values[0])}; a series needs two "
                         "checkpoints or more (two step values, or several runs)",
                         path=layout.path, column=step_col)
    min_prob = options.min_prob
    temperatures: list[float | None] = [None] * len(values)
    fitted_rows = [0] * len(values)
    probs_like = [layout.prediction.kind == "logits"] * len(values)
    if layout.prediction.kind != "topk":
        width = layout.num_classes or 1
        budget = max(1, min(temperature_values // width, MAX_SAMPLED_ROWS))
        wanted = np.minimum(counts, budget)  # rows each step's temperature is fitted on
        samples: dict[int, list[Batch]] = {}
        for batch in iter_batches(layout, options):
            batch = _floored(batch, min_prob)
            rows_step = step_of_row[batch.row_start:batch.row_start + len(batch)]
            for step in np.unique(rows_step):
                taken = sum(len(b) for b in samples.get(step, []))
                if temperatures[step] is not None or taken >= wanted[step]:
                    continue
                rows = np.flatnonzero(rows_step == step)[:wanted[step] - taken]
                part = _rows_of(batch, rows)
                probs_like[step] = probs_like[step] and _probability_rows(part)
                samples.setdefault(step, []).append(part)
                if taken + len(rows) == wanted[step]:  # complete: fit, and free the sample
                    temperatures[step], fitted_rows[step] = _fit(samples.pop(step))
            if all(t is not None for t in temperatures):
                break  # every step fitted: the rest of the run is for the second pass
    parts: list[list] = [[] for _ in values]
    ids: list[list] = [[] for _ in values]
    slices: list[dict[str, list]] = [{col: [] for col in layout.slice_cols} for _ in values]
    rows_done = 0
    for batch in iter_batches(layout, options):
        batch = _floored(batch, min_prob)
        rows_step = step_of_row[batch.row_start:batch.row_start + len(batch)]
        for step in np.unique(rows_step):
            part = _rows_of(batch, np.flatnonzero(rows_step == step))
            parts[step].append(from_batch(part, temperatures[step]))
            if part.ids is not None:
                ids[step].append(part.ids)
            for col, column_values in part.slices.items():
                slices[step][col].append(column_values)
        rows_done += len(batch)
        if progress is not None:
            progress(path, rows_done, layout.n_rows)
    runs = []
    for step, value in enumerate(values.tolist()):
        examples = PerExample.concat(parts[step])
        temperature = temperatures[step]
        if temperature is not None and np.isposinf(examples.nll).any():
            temperature, fitted_rows[step] = None, 0  # as in load_run
            examples.without_temperature()
        num_classes = layout.num_classes or int(max(examples.label.max(),
                                                    examples.pred.max())) + 1
        runs.append(RunData(
            name=f"{step_col}={step_text(value)}", layout=layout, examples=examples,
            ids=np.concatenate(ids[step]) if ids[step] else None,
            slices={col: np.concatenate(v) for col, v in slices[step].items()},
            temperature=temperature, temperature_rows=fitted_rows[step],
            num_classes=num_classes, min_prob=min_prob,
            looks_like_probs=probs_like[step],
            temperature_source=f"fitted on the rows of {step_col} = {step_text(value)}"))
    return runs, values.tolist()


def step_text(value) -> str:
    """A step value as written in a checkpoint's name: 100, 2.5."""
    return str(int(value)) if float(value).is_integer() and abs(value) < 1e15 else f"{value:g}"


def _rows_of(batch: Batch, rows: np.ndarray) -> Batch:
    """The batch's rows at the indices `rows`, as a batch of its own."""
    def take(values):
        return None if values is None else values[rows]

    return Batch(row_start=batch.row_start + int(rows[0]), labels=batch.labels[rows],
                 scores=take(batch.scores), topk_ids=take(batch.topk_ids),
                 topk_logprobs=take(batch.topk_logprobs), label_logprob=take(batch.label_logprob),
                 ids=take(batch.ids), slices={c: v[rows] for c, v in batch.slices.items()},
                 clusters=take(batch.clusters))


@dataclass
class RunKeys:
    """A run's ids and labels alone: enough to line runs up before their predictions are read."""

    name: str
    layout: RunLayout
    ids: np.ndarray | None
    labels: np.ndarray
    num_classes: int | None  # from the footer; None for top-k runs without class names


def load_keys(layout: RunLayout, name: str, options: ReadOptions = ReadOptions(),
              engine: Engine | None = None) -> RunKeys:
    """`engine`: read them on a cluster's workers, partition by partition."""
    run_ids, labels = (engine.read_keys(layout, options) if engine is not None
                       else joined_keys((b.ids, b.labels)
                                        for b in iter_batches(layout, options, keys_only=True)))
    return RunKeys(name=name, layout=layout, ids=run_ids, labels=labels,
                   num_classes=layout.num_classes)


Keys = tuple["np.ndarray | None", np.ndarray]  # ids (None without an id column), labels


def joined_keys(parts: Iterable[Keys]) -> Keys:
    """The ids and labels of consecutive parts of a run (batches, or partitions), joined."""
    parts = list(parts)
    ids = [part_ids for part_ids, _ in parts if part_ids is not None]
    return (np.concatenate(ids) if ids else None,
            np.concatenate([labels for _, labels in parts]))


def _floored(batch: Batch, min_prob: float | None) -> Batch:
    if min_prob is not None and batch.scores is not None:
        batch.scores = floor_probabilities(batch.scores, min_prob)
    return batch


def _probability_rows(batch: Batch) -> bool:
    """Every row in [0, 1] and summing to 1: probabilities passed as logits, most likely."""
    scores = batch.scores
    if scores is None or not len(scores) or scores.min() < 0 or scores.max() > 1:
        return False
    return bool((np.abs(scores.sum(axis=1, dtype=np.float64) - 1.0) <= 1e-3).all())


def _fit(batches: list[Batch]) -> tuple[float, int]:
    sample = TemperatureSample()
    for batch in batches:
        assert batch.scores is not None  # top-k runs have no temperature sample
        sample.add(batch.scores, batch.labels)
    return fit_temperature(sample), len(sample)


T = TypeVar("T")
_DONE = object()
# Batches the reader may decode ahead of the arithmetic: enough to keep decoding through the
# temperature fit (a fraction of a second), few enough to keep memory at a few batches.
FIT_LOOKAHEAD = 6


class _Failure:
    def __init__(self, error: BaseException):
        self.error = error


class Prefetch:
    """Items produced by a background thread, up to `depth` ahead; production starts at
    construction. Iterate once; close() stops the thread (also after a partial iteration).

    pyarrow decodes and numpy computes without holding the GIL, so the next batch is decoded
    on the second core while this one is reduced. Errors of the producer are raised to the
    consumer.
    """

    def __init__(self, items: Iterator[T], depth: int = 2):
        self._handoff: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._worker = threading.Thread(target=self._produce, args=(items,),
                                        name="metricdiff-reader", daemon=True)
        self._worker.start()

    def _produce(self, items: Iterator[T]) -> None:
        try:
            for item in items:
                if self._stop.is_set():
                    return
                self._handoff.put(item)
            self._handoff.put(_DONE)
        except BaseException as error:  # handed to the consumer, which raises it
            self._handoff.put(_Failure(error))

    def __iter__(self) -> Iterator[T]:
        while True:
            item = self._handoff.get()
            if item is _DONE:
                return
            if isinstance(item, _Failure):
                raise item.error
            yield item

    def close(self) -> None:
        self._stop.set()
        while self._worker.is_alive():  # unblock a producer waiting on a full queue
            try:
                self._handoff.get(timeout=0.05)
            except queue.Empty:
                pass
