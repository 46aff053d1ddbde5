"""The Dask engine: a run's main pass split by row groups over the workers of a cluster.

Each task reads whole row groups of one file and reduces them with pipeline.reduce_batches,
the function of the local pass, with the run's Scoring fixed beforehand (temperature, floor,
classwise plan). A row's per-example values depend only on its own row, and batches are cut
per row group in both engines, so the parts concatenated in row order are the columns one
pass gives; classwise sums are added up part by part (to floating-point rounding).

What is gathered on the client today: each run's per-example columns (about ten numbers per
example) and its ids, labels and metadata. The K-wide work, reading and reducing the
predictions, is what runs on the workers.
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import threading
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Iterator

from .errors import MetricdiffError, UsageError
from .io import ReadOptions, RunLayout, iter_batches
from .pipeline import Progress, RunAssembler, RunPart, Scoring, reduce_batches

if TYPE_CHECKING:
    from distributed import Client

# A task reduces row groups holding about this many prediction values (rows x classes), or
# one row group when it holds more: a few seconds of work, so that scheduling costs little.
PARTITION_VALUES = 1 << 26
# How long the client tries to reach a given scheduler before it reports that it cannot.
CONNECT_SECONDS = 10
# How often a waiting client looks whether the read was stopped (Ctrl-C, another run failed).
POLL_SECONDS = 0.2


class ClusterError(MetricdiffError):
    """The cluster could not be reached or started."""


@dataclass(frozen=True)
class Partition:
    """Consecutive row groups of one file: a task's rows."""

    file_index: int
    groups: tuple[int, ...]
    first_row: int  # its first row's position in the whole run
    rows: int

    def plan(self, layout: RunLayout) -> dict[int, list[tuple[int, int]]]:
        """The iter_batches plan that reads exactly these row groups."""
        group_rows = layout.group_rows[self.file_index]
        return {self.file_index: [(g, group_rows[g]) for g in self.groups]}


def partitions(layout: RunLayout, values: int = PARTITION_VALUES) -> list[Partition]:
    """The run cut into tasks, in row order; empty row groups are left out."""
    width = 2 * layout.topk if layout.topk else layout.num_classes or 1  # values read per row
    parts: list[Partition] = []
    row = 0
    for file_index, group_rows in enumerate(layout.group_rows):
        groups: list[int] = []
        first = rows = 0
        for group, count in enumerate(group_rows):
            if count and not groups:
                first = row
            if count:
                groups.append(group)
                rows += count
            row += count
            if groups and rows * width >= values:
                parts.append(Partition(file_index, tuple(groups), first, rows))
                groups, rows = [], 0
        if groups:
            parts.append(Partition(file_index, tuple(groups), first, rows))
    return parts


def reduce_partition(layout: RunLayout, options: ReadOptions, partition: Partition,
                     scoring: Scoring) -> RunPart:
    """A task: read the partition's row groups and reduce them (runs on a worker)."""
    return reduce_batches(iter_batches(layout, options, partition.plan(layout)), layout,
                          scoring, partition.rows, partition.first_row)


class DaskEngine:
    """The main pass of each run on a Dask cluster (pipeline.Engine)."""

    def __init__(self, client: "Client", partition_values: int):
        self.client = client
        self.partition_values = partition_values

    def reduce_run(self, layout: RunLayout, options: ReadOptions, scoring: Scoring,
                   name: str, progress: Progress | None,
                   stop: threading.Event | None) -> RunPart:
        parts = partitions(layout, self.partition_values)
        futures = []
        for part in parts:
            plan = scoring.classwise  # each task is sent its own rows' share of the plan
            part_scoring = scoring if plan is None else replace(
                scoring, classwise=plan.rows(part.first_row, part.first_row + part.rows))
            futures.append(self.client.submit(reduce_partition, layout, options, part,
                                              part_scoring, pure=False))
        index = {future.key: i for i, future in enumerate(futures)}
        fetched = [False] * len(futures)
        assembled = RunAssembler(layout.n_rows)  # each part goes into place as it arrives
        finished: queue.Queue = queue.Queue()
        try:
            for future in futures:
                future.add_done_callback(finished.put)
            done_rows = 0
            for _ in futures:
                while True:
                    if stop is not None and stop.is_set():
                        raise KeyboardInterrupt
                    try:
                        future = finished.get(timeout=POLL_SECONDS)
                        break
                    except queue.Empty:
                        continue
                # fetched as soon as it is done (a task's error is raised here, as the local
                # pass would raise it), so a worker holds only the parts still in progress
                i = index[future.key]
                assembled.add(parts[i].first_row, future.result())
                fetched[i] = True
                futures[i].release()
                done_rows += parts[i].rows
                if progress is not None:
                    progress(name, done_rows, layout.n_rows)
            return assembled.result()
        except BaseException:  # Ctrl-C, or a failed task: the others stop too
            self.client.cancel([f for f, done in zip(futures, fetched) if not done])
            raise


@contextmanager
def dask_engine(scheduler: str | None = None,
                partition_values: int | None = None) -> Iterator[DaskEngine]:
    """An engine on the cluster whose scheduler is at `scheduler` (else Dask's own setting,
    DASK_SCHEDULER_ADDRESS); without either, on a LocalCluster of one single-threaded worker
    process per core, started here and stopped on leaving."""
    try:
        import dask
        from distributed import Client, LocalCluster
    except ImportError:
        raise ClusterError("--engine dask needs Dask's distributed package: "
                           "pip install 'metricdiff[dask]'") from None
    partition_values = partition_values or PARTITION_VALUES
    address = scheduler or dask.config.get("scheduler-address", None)
    if address:
        try:
            client = Client(address, timeout=CONNECT_SECONDS, set_as_default=False)
        except (OSError, TimeoutError, ValueError) as error:
            raise ClusterError(f"cannot reach the Dask scheduler at {address}: "
                               f"{_first_line(error)}") from None
        with client:
            yield DaskEngine(client, partition_values)
        return
    # The workers must not see Ctrl-C: in a terminal it reaches every process of the
    # foreground group, and a worker's KeyboardInterrupt is a traceback on stderr. They are
    # started while this process ignores SIGINT, which their processes inherit (and
    # _worker_setup ignores it again in a worker a nanny restarts later); this process
    # handles it afterwards: it cancels the tasks and stops the cluster. The price: a Ctrl-C
    # during the cluster's start (about a second) is not seen.
    previous = _ignore_sigint()
    try:
        local = LocalCluster(n_workers=os.cpu_count() or 1, threads_per_worker=1,
                             processes=True, host="127.0.0.1", dashboard_address=":0",
                             silence_logs=logging.ERROR, preload=["metricdiff._worker_setup"])
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
    with local, Client(local, set_as_default=False) as client:
        yield DaskEngine(client, partition_values)


def _ignore_sigint():
    """Ignore SIGINT in this process; the handler to restore (None off the main thread,
    where handlers cannot be set)."""
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGINT, signal.SIG_IGN)


@contextmanager
def engine_for(name: str, scheduler: str | None) -> Iterator[DaskEngine | None]:
    """The engine an API call asked for: None for the local one."""
    if name == "local":
        if scheduler is not None:
            raise UsageError("--scheduler is the address of a Dask cluster; it needs "
                             "--engine dask")
        yield None
        return
    if name != "dask":
        raise UsageError(f"unknown engine '{name}': expected local or dask")
    with dask_engine(scheduler) as engine:
        yield engine


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
