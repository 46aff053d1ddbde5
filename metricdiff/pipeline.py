"""One run from disk to per-example columns: sample for the temperature, then one streaming pass."""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass
from typing import Callable, Iterator, TypeVar

import numpy as np

from .io import Batch, ReadOptions, RunLayout, inspect_run, iter_batches, sample_plan
from .perexample import PerExample, from_batch
from .temperature import TemperatureSample, fit_temperature

# The temperature is fitted on at most this many prediction values (rows x classes): every row
# of a run within this size, else the head rows of row groups spread over the run (sample_plan).
DEFAULT_TEMPERATURE_VALUES = 1 << 23


@dataclass
class RunData:
    """A run reduced to a few numbers per example, plus what is needed to describe it."""

    name: str
    layout: RunLayout
    examples: PerExample
    ids: np.ndarray | None
    slices: dict[str, np.ndarray]
    temperature: float | None
    temperature_rows: int  # rows the temperature was fitted on
    num_classes: int  # K, inferred from the data for top-k runs without class names

    @property
    def rank_depth(self) -> int | None:
        """How many classes a top-k run lists; None when the whole ranking is known."""
        return self.layout.topk


# Called after each batch of the main pass with (run name, rows done, rows in the run).
Progress = Callable[[str, int, int], None]


def load_run(path: str, name: str | None = None, options: ReadOptions = ReadOptions(),
             temperature_values: int = DEFAULT_TEMPERATURE_VALUES,
             progress: Progress | None = None,
             stop: threading.Event | None = None) -> RunData:
    """Read one run; `stop`, when set by another thread, ends the read at the next batch."""
    layout = inspect_run(path, options)
    name = name or path
    temperature, temperature_rows = None, 0
    batches = None
    if layout.prediction.kind != "topk":
        plan, whole_run = sample_plan(layout, temperature_values)
        sample_batches = list(iter_batches(layout, options, plan))
        temperature, temperature_rows = _fit(sample_batches)
        if whole_run:
            batches = sample_batches  # the sample is the run: do not read it twice
    if batches is None:
        batches = prefetch(iter_batches(layout, options))

    parts, ids, slices = [], [], {col: [] for col in layout.slice_cols}
    rows_done = 0
    for batch in batches:
        if stop is not None and stop.is_set():
            raise KeyboardInterrupt
        parts.append(from_batch(batch, temperature))
        rows_done += len(batch)
        if progress is not None:
            progress(name, rows_done, layout.n_rows)
        if batch.ids is not None:
            ids.append(batch.ids)
        for col, values in batch.slices.items():
            slices[col].append(values)
    examples = PerExample.concat(parts)
    num_classes = layout.num_classes
    if num_classes is None:
        num_classes = int(max(examples.label.max(), examples.pred.max())) + 1
    return RunData(name=name, layout=layout, examples=examples,
                   ids=np.concatenate(ids) if ids else None,
                   slices={col: np.concatenate(v) for col, v in slices.items()},
                   temperature=temperature, temperature_rows=temperature_rows,
                   num_classes=num_classes)


def _fit(batches: list[Batch]) -> tuple[float, int]:
    parts = [TemperatureSample.part(batch.scores, batch.labels) for batch in batches]
    sample = TemperatureSample([p[0] for p in parts], [p[1] for p in parts])
    return fit_temperature(sample), len(sample)


T = TypeVar("T")
_DONE = object()


class _Failure:
    def __init__(self, error: BaseException):
        self.error = error


def prefetch(items: Iterator[T], depth: int = 2) -> Iterator[T]:
    """Yield items produced by a background thread up to `depth` ahead.

    pyarrow decodes and numpy computes without holding the GIL, so the next batch is decoded
    on the second core while this one is reduced. Errors of the producer are raised here.
    """
    handoff: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                if stop.is_set():
                    return
                handoff.put(item)
            handoff.put(_DONE)
        except BaseException as error:  # handed to the consumer, which raises it
            handoff.put(_Failure(error))

    worker = threading.Thread(target=produce, name="metricdiff-reader", daemon=True)
    worker.start()
    try:
        while True:
            item = handoff.get()
            if item is _DONE:
                return
            if isinstance(item, _Failure):
                raise item.error
            yield item
    finally:
        stop.set()
        while worker.is_alive():  # unblock a producer waiting on a full queue
            try:
                handoff.get(timeout=0.05)
            except queue.Empty:
                pass
