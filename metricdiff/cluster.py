"""The Dask engine: a run's main pass split by row groups over the workers of a cluster.

Each task reads whole row groups of one file and reduces them with pipeline.reduce_batches,
the function of the local pass, with the run's Scoring fixed beforehand (temperature, floor,
classwise plan, the settings of its RunSums). A row's per-example values depend only on its
own row, and batches are cut per row group in both engines, so the parts concatenated in row
order are the columns one pass gives; the mergeable sums (classwise, RunSums) are added up
part by part, to floating-point rounding.

What is gathered on the client: for a report, each part's mergeable sums alone; every
statistic of a report is computed from those and from the parts the workers keep
(ClusterParts: orders and ranges of confidence, orderstats.py; sums per part), which send
back counts and sums. For a comparison, also a digest of each partition's keys (a few
numbers, align.KeyDigest), from which runs holding the same examples are lined up; runs
compared on the ids they all hold (--allow-partial) are lined up by the workers
(DaskEngine.common_ids: counts and a few ids come back); a pair's or two groups'
statistics and the bootstrap's subsets are measured on the workers too. Other runs that
differ in their examples (text ids; runs that cannot be lined up, to word the error) have
their ids and labels gathered to be lined up here, their columns still left on the
workers.
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import threading
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Callable, Iterator

import numpy as np

from .align import EXAMPLES_SHOWN, CommonIds, KeyDigest
from .errors import MetricdiffError, UsageError
from .io import ReadOptions, RunLayout, iter_batches
from .orderstats import Keyed, Parts
from .perexample import PerExample
from .pipeline import (Keys, Progress, RunAssembler, RunPart, Scoring, joined_keys,
                       reduce_batches)

if TYPE_CHECKING:
    from distributed import Client

# A task reduces row groups holding about this many prediction values (rows x classes), or
# one row group when it holds more: a few seconds of work, so that scheduling costs little.
PARTITION_VALUES = 1 << 26
# An array at least this large that every part's task is given is sent to the cluster once.
SHARED_BYTES = 1 << 16
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
                     scoring: Scoring, kept: np.ndarray | None = None) -> RunPart:
    """A task: read the partition's row groups and reduce them (runs on a worker). `kept`:
    the offsets of its rows common to every run (align.Kept), for the classwise sums."""
    if kept is not None:
        assert scoring.classwise is not None  # its sums are of the kept rows alone
        keep = np.zeros(partition.rows, dtype=bool)
        keep[kept] = True
        scoring = replace(scoring, classwise=replace(scoring.classwise, keep=keep,
                                                     first_row=partition.first_row))
    batches = iter_batches(layout, options, partition.plan(layout), whole_groups=True)
    return reduce_batches(batches, layout, scoring, partition.rows, partition.first_row)


def partition_keys(layout: RunLayout, options: ReadOptions, partition: Partition) -> Keys:
    """A task: the ids and labels of the partition's rows."""
    batches = iter_batches(layout, options, partition.plan(layout), keys_only=True,
                           whole_groups=True)
    return joined_keys((b.ids, b.labels) for b in batches)


def partition_digest(layout: RunLayout, options: ReadOptions, partition: Partition
                     ) -> KeyDigest:
    """A task: the digest of the partition's ids, labels and clusters."""
    batches = list(iter_batches(layout, options, partition.plan(layout), whole_groups=True,
                                with_clusters=True))
    ids, labels = joined_keys((b.ids, b.labels) for b in batches)
    clusters = [b.clusters for b in batches if b.clusters is not None]
    return KeyDigest.of(ids, labels, partition.first_row,
                        np.concatenate(clusters) if clusters else None)


def partition_id_frame(layout: RunLayout, options: ReadOptions, partition: Partition):
    """A task: the partition's ids, as a table of one column."""
    import pandas as pd

    ids, _ = partition_keys(layout, options, partition)
    return pd.DataFrame({"id": ids})


def partition_key_table(layout: RunLayout, options: ReadOptions, partition: Partition,
                        run: int, part: int):
    """A task: the partition's ids and labels, each row with its run, its partition
    (numbered over every run's) and its row in the run: what is moved to line runs up on the
    ids they all hold."""
    import pandas as pd

    ids, labels = partition_keys(layout, options, partition)
    rows = len(labels)
    return pd.DataFrame({"id": np.asarray(ids).astype(np.int64, copy=False),
                         "label": np.asarray(labels).astype(np.int64, copy=False),
                         "run": np.full(rows, run, dtype=np.int64),
                         "part": np.full(rows, part, dtype=np.int64),
                         "row": np.arange(partition.first_row, partition.first_row + rows)})


def common_of(frame, runs: int) -> tuple:
    """A task, on one partition of the shuffle by id (each of its ids' rows in every run):
    the rows of the ids every run holds (their partition and row), and what the client
    checks: per run, its ids in two rows (how many, and the first few by their second row:
    rows and ids), its examples whose label differs from the baseline's (how many, and the
    smallest few ids), and how many ids are common."""
    frame = frame.sort_values(["id", "run", "row"], kind="stable")
    ids, run, row, label = (frame[name].to_numpy() for name in ("id", "run", "row", "label"))
    again = (ids[1:] == ids[:-1]) & (run[1:] == run[:-1])  # row i + 1: row i's id and run
    second = np.flatnonzero(again & ~np.r_[False, again[:-1]]) + 1  # each repeat's 2nd row
    repeated = []
    for r in range(runs):
        mine = second[run[second] == r]
        first = mine[np.argsort(row[mine], kind="stable")[:EXAMPLES_SHOWN]]
        repeated.append((len(mine), row[first], ids[first]))
    nothing = [(0, ids[:0])] * runs
    if len(second):  # an error to report: what is common does not matter
        return frame.iloc[:0][["part", "row"]], (repeated, 0, nothing)
    starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
    common = starts[np.diff(np.r_[starts, len(ids)]) == runs]  # in every run, once each
    taken = (common[:, None] + np.arange(runs)).ravel()  # run 0's row first, then run 1's...
    labels = label[taken].reshape(len(common), runs)
    differ = [(int(wrong.sum()), ids[common][wrong][:EXAMPLES_SHOWN])
              for wrong in (labels != labels[:, :1]).T]
    return frame.iloc[taken][["part", "row"]], (repeated, len(common), differ)


def _merged_checks(found: list[tuple], runs: int) -> tuple[tuple, int, tuple]:
    """The shuffled partitions' checks (common_of) as the whole runs' (align.CommonIds)."""
    repeated, differ = [], []
    for r in range(runs):
        rows = np.concatenate([checks[0][r][1] for checks in found])
        ids = np.concatenate([checks[0][r][2] for checks in found])
        first = ids[np.argsort(rows, kind="stable")[:EXAMPLES_SHOWN]]
        repeated.append((sum(checks[0][r][0] for checks in found), tuple(first.tolist())))
        smallest = np.sort(np.concatenate([checks[2][r][1] for checks in found]))
        differ.append((sum(checks[2][r][0] for checks in found),
                       tuple(smallest[:EXAMPLES_SHOWN].tolist())))
    return tuple(repeated), sum(checks[1] for checks in found), tuple(differ)


def _item(pair: tuple, i: int) -> Any:
    return pair[i]


def _kept_offsets(frame, first_row: int) -> np.ndarray:
    """A partition's kept rows (its part of the shuffle back by partition), as offsets."""
    return np.sort(frame["row"].to_numpy() - first_row)


def _examples(part: RunPart) -> PerExample:
    assert part.examples is not None  # a task's part holds its columns
    return part.examples


def _without_columns(part: RunPart) -> RunPart:
    """What the client takes of a part when the columns stay on the workers: its sums."""
    return RunPart(examples=None, ids=None, slices={}, clusters=None,
                   classwise=part.classwise, sums=part.sums)


def _slices(part: RunPart) -> dict:
    return part.slices


def _clusters(part: RunPart) -> np.ndarray | None:
    return part.clusters


def _keys(part: RunPart, first_row: int) -> tuple[np.ndarray, int]:
    """A part's keys (its ids; without an id column, its rows' numbers in the run) and the
    number of its first row."""
    if part.ids is not None:
        return part.ids, first_row
    return np.arange(first_row, first_row + len(_examples(part))), first_row


class ClusterParts:
    """A run's parts as the workers hold them (orderstats.Parts): each map is a task per
    part, run where the part is; only what a task returns is gathered."""

    def __init__(self, client: "Client", futures: list):
        self.client, self.futures = client, futures

    def map(self, fn: Callable[..., Any], *args: Any) -> "ClusterParts":
        args = self._shared(args)
        return ClusterParts(self.client, [self.client.submit(fn, future, *args, pure=False)
                                          for future in self.futures])

    def map_each(self, fn: Callable[..., Any], args: list) -> "ClusterParts":
        return ClusterParts(self.client, [self.client.submit(fn, future, arg, pure=False)
                                          for future, arg in zip(self.futures, args)])

    def map_with(self, fn: Callable[..., Any], others: list, *args: Any) -> "ClusterParts":
        assert all(isinstance(other, ClusterParts) for other in others)
        args = self._shared(args)
        return ClusterParts(self.client, [
            self.client.submit(fn, future, *with_futures, *args, pure=False)
            for future, *with_futures in zip(self.futures,
                                             *(other.futures for other in others))])

    def gather(self) -> list:
        return self.client.gather(self.futures)

    def _shared(self, args: tuple) -> tuple:
        """The arguments every part's task is given, a large array sent to the cluster once
        (the tasks then take it from the workers) instead of with each task."""
        return tuple(self.client.scatter(arg, hash=False) if isinstance(arg, np.ndarray)
                     and arg.nbytes >= SHARED_BYTES and len(self.futures) > 1 else arg
                     for arg in args)

    def joined(self, fn: Callable[..., Any], *args: Any) -> "ClusterParts":
        return ClusterParts(self.client, [self.client.submit(_joined, fn, args, *self.futures,
                                                             pure=False)])

    def by_ranges(self, fn: Callable[[Any], Keyed], bounds: np.ndarray) -> "ClusterParts":
        """Dask's shuffle moves the rows: dask.dataframe's set_index on the key, with the
        ranges' bounds as its divisions; each range stays on the worker that holds it."""
        import dask.dataframe as dd

        frames = self.map(_keyed_frame, fn)
        ranges = [r for r in frames.map(_frame_key_range).gather() if r is not None]
        low = min((r[0] for r in ranges), default=0)
        high = max((r[1] for r in ranges), default=0)
        divisions = sorted({low, high, *(int(b) for b in _signed(bounds) if low < b < high)})
        if len(divisions) < 2:  # one range: its rows joined on one worker
            joined = self.client.submit(_joined_frames, *frames.futures, pure=False)
            return ClusterParts(self.client, [joined]).map(_from_frame)
        meta = _meta(self.client, frames.futures[0])
        table = dd.from_delayed(frames.futures, meta=meta, verify_meta=False)
        ranged = table.set_index("key", divisions=divisions, sorted=False)
        return ClusterParts(self.client, self.client.compute(ranged.to_delayed())).map(
            _from_frame)


    def merged(self, other: Parts, on: str) -> "ClusterParts":
        """Dask's shuffle joins them (dask.dataframe's merge, hashing the key); each joined
        partition stays on the worker that holds it."""
        import dask.dataframe as dd

        assert isinstance(other, ClusterParts)
        tables = [dd.from_delayed(parts.futures, verify_meta=False,
                                  meta=_meta(self.client, parts.futures[0]))
                  for parts in (self, other)]
        joined = dd.merge(tables[0], tables[1], on=on, how="inner")
        return ClusterParts(self.client, self.client.compute(joined.to_delayed()))


KEY_SIGN = np.uint64(1 << 63)


def _signed(keys: np.ndarray) -> np.ndarray:
    """uint64 keys as int64 in the same order (a Dask index is signed)."""
    return (np.asarray(keys, dtype=np.uint64) ^ KEY_SIGN).view(np.int64)


def _keyed_frame(part: Any, fn: Callable[[Any], Keyed]):
    import pandas as pd

    keys, values = fn(part)
    frame = pd.DataFrame(values, columns=[f"v{i}" for i in range(values.shape[1])])
    frame.insert(0, "key", _signed(keys))
    return frame


def _frame_key_range(frame) -> tuple[int, int] | None:
    return None if frame.empty else (int(frame["key"].min()), int(frame["key"].max()))


def _joined(fn: Callable[..., Any], args: tuple, *parts: Any) -> Any:
    return fn(list(parts), *args)


def _joined_frames(*frames):
    import pandas as pd

    return pd.concat(frames, ignore_index=True).set_index("key").sort_index(kind="stable")


def _no_rows(frame):
    return frame.iloc[:0]


def _meta(client: "Client", frame_future) -> Any:
    """The table a task's result is, without its rows (dask.dataframe's meta)."""
    return client.submit(_no_rows, frame_future, pure=False).result()


def _from_frame(frame) -> Keyed:
    """A range's rows, sorted by key, as a Keyed (the key is the frame's index)."""
    keys = (frame.index.to_numpy(dtype=np.int64).view(np.uint64) ^ KEY_SIGN)
    return keys, frame.to_numpy(dtype=np.float64).reshape(len(frame), -1)


class DaskEngine:
    """The main pass of each run on a Dask cluster (pipeline.Engine)."""

    def __init__(self, client: "Client", partition_values: int):
        self.client = client
        self.partition_values = partition_values

    def reduce_run(self, layout: RunLayout, options: ReadOptions, scoring: Scoring,
                   name: str, progress: Progress | None,
                   stop: threading.Event | None, columns: bool = True) -> RunPart:
        """`columns`: bring the parts' per-example columns here too; else their sums only
        (the columns stay in the parts the workers keep)."""
        parts = partitions(layout, self.partition_values)
        plan = scoring.classwise
        # rows common to every run, held by the workers: each task is sent its partition's
        kept = None if plan is None else plan.kept_parts
        if kept is not None:
            assert plan is not None and len(kept.futures) == len(parts)
            scoring = replace(scoring, classwise=replace(plan, kept_parts=None))
        futures = []
        for i, part in enumerate(parts):
            plan = scoring.classwise  # each task is sent its own rows' share of the plan
            part_scoring = scoring if plan is None else replace(
                scoring, classwise=plan.rows(part.first_row, part.first_row + part.rows))
            futures.append(self.client.submit(reduce_partition, layout, options, part,
                                              part_scoring,
                                              *([] if kept is None else [kept.futures[i]]),
                                              pure=False))
        assembled = RunAssembler(layout.n_rows)  # each part goes into place as it arrives
        done_rows = 0

        def arrived(i: int, part: RunPart) -> None:
            nonlocal done_rows
            assembled.add(parts[i].first_row, part)
            done_rows += parts[i].rows
            if progress is not None:
                progress(name, done_rows, layout.n_rows)

        # the parts stay on the workers too, for the statistics of an order (orderstats.py)
        if columns:
            self._collect(futures, arrived, stop, keep=True)
        else:
            try:
                self._collect([self.client.submit(_without_columns, future, pure=False)
                               for future in futures], arrived, stop)
            except BaseException:
                # released, not cancelled: the scheduler forgets what no one wants, and
                # cancelling them would also cancel their dependents just released, which
                # the scheduler rejects (distributed's stimulus_cancel asserts who_wants)
                _release(futures)
                raise
        run = assembled.result()
        held = ClusterParts(self.client, futures)
        run.held, run.held_slices = held.map(_examples), held.map(_slices)
        run.held_keys = held.map_each(_keys, [part.first_row for part in parts])
        if layout.cluster_col is not None:
            run.held_clusters = held.map(_clusters)
        return run

    def read_keys(self, layout: RunLayout, options: ReadOptions) -> Keys:
        """The run's ids and labels, read by the workers partition by partition."""
        return joined_keys(self._each_partition(partition_keys, layout, options))

    def key_digests(self, layout: RunLayout, options: ReadOptions) -> list[KeyDigest]:
        """A few numbers about each partition's ids and labels, read by the workers: enough
        to line up runs written in the same order (align.aligned_as_written)."""
        return self._each_partition(partition_digest, layout, options)

    def repeats_an_id(self, layout: RunLayout, options: ReadOptions,
                      stop: threading.Event | None = None) -> bool:
        """Whether an id is in two rows of the run: the workers read the ids, and Dask's
        shuffle (value_counts split over as many partitions) brings equal ids together. The
        shuffle is of tasks (not peer to peer), so that a Ctrl-C meanwhile leaves no
        worker in the middle of one when the cluster stops."""
        import dask
        import dask.dataframe as dd

        parts = partitions(layout, self.partition_values)
        frames = [self.client.submit(partition_id_frame, layout, options, part, pure=False)
                  for part in parts]
        try:
            meta = _meta(self.client, frames[0])
            with dask.config.set({"dataframe.shuffle.method": "tasks"}):
                counts = dd.from_delayed(frames, meta=meta, verify_meta=False)["id"]
                most = self.client.compute(counts.value_counts(split_out=len(frames)).max())
            found: list = [None]
            self._collect([most], found.__setitem__, stop)
            return bool(found[0] > 1)
        finally:
            _release(frames)

    def common_ids(self, layouts: list[RunLayout], options: ReadOptions,
                   stop: threading.Event | None = None) -> CommonIds:
        """Runs lined up on the ids they all hold (--allow-partial), by the workers: Dask's
        shuffle by id brings each id's rows of every run together, where the common ones are
        found and checked (common_of), and a second shuffle (set_index on the partition's
        number, one division each) sends each partition its kept rows, which stay there.
        Counts and a few ids come here, nothing per example. Shuffles of tasks, as in
        repeats_an_id."""
        import dask
        import dask.dataframe as dd

        cut = [(r, layout, part) for r, layout in enumerate(layouts)
               for part in partitions(layout, self.partition_values)]
        tables = [self.client.submit(partition_key_table, layout, options, part, r, g,
                                     pure=False) for g, (r, layout, part) in enumerate(cut)]
        found: list = []
        with dask.config.set({"dataframe.shuffle.method": "tasks"}):
            try:
                by_id = dd.from_delayed(tables, meta=_meta(self.client, tables[0]),
                                        verify_meta=False)
                found = [self.client.submit(common_of, part, len(layouts), pure=False)
                         for part in self.client.compute(
                             by_id.shuffle("id", npartitions=len(tables)).to_delayed())]
                checks: list = [None] * len(found)
                self._collect([self.client.submit(_item, f, 1, pure=False) for f in found],
                              checks.__setitem__, stop)
            except BaseException:
                _release(tables + found)  # the cluster forgets them, whoever holds them here
                raise
            repeated, common, differ = _merged_checks(checks, len(layouts))
            if any(count for count, _ in (*repeated, *differ)) or not common:
                return CommonIds(common, repeated, differ, (None,) * len(layouts))
            kept = [self.client.submit(_item, f, 0, pure=False) for f in found]
            back = dd.from_delayed(kept, meta=_meta(self.client, kept[0]), verify_meta=False)
            by_part = self.client.compute(back.set_index(
                "part", divisions=list(range(len(cut) + 1)), sorted=False).to_delayed())
        assert len(by_part) == len(cut)  # one part of the shuffle back per partition
        offsets = [self.client.submit(_kept_offsets, frame, part.first_row, pure=False)
                   for frame, (_, _, part) in zip(by_part, cut)]
        runs = [r for r, _, _ in cut]
        return CommonIds(common, repeated, differ, tuple(
            ClusterParts(self.client, [f for f, of in zip(offsets, runs) if of == r])
            for r in range(len(layouts))))

    def _each_partition(self, task: Callable[..., Any], layout: RunLayout,
                        options: ReadOptions) -> list:
        parts = partitions(layout, self.partition_values)
        futures = [self.client.submit(task, layout, options, part, pure=False)
                   for part in parts]
        found: list = [None] * len(parts)
        self._collect(futures, found.__setitem__, None)
        return found

    def _collect(self, futures: list, arrived: Callable[[int, Any], None],
                 stop: threading.Event | None, keep: bool = False) -> None:
        """Hand each task's result to `arrived(index, result)` as soon as it is done (a
        task's error is raised here, as the local pass would raise it), releasing it from
        the cluster unless `keep`: a worker then holds only the results still in progress.
        On Ctrl-C, a stop or an error, the tasks not yet done are cancelled."""
        index = {future.key: i for i, future in enumerate(futures)}
        fetched = [False] * len(futures)
        finished: queue.Queue = queue.Queue()
        try:
            for future in futures:
                future.add_done_callback(finished.put)
            for _ in futures:
                while True:
                    if stop is not None and stop.is_set():
                        raise KeyboardInterrupt
                    try:
                        future = finished.get(timeout=POLL_SECONDS)
                        break
                    except queue.Empty:
                        continue
                i = index[future.key]
                arrived(i, future.result())
                fetched[i] = True
                if not keep:
                    futures[i].release()
        except BaseException:
            self.client.cancel([f for f, done in zip(futures, fetched) if not done])
            raise


def _release(futures: list) -> None:
    for future in futures:
        future.release()


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
    # forked from a fork server started with SIGINT blocked: the server, and every worker
    # forked from it (restarted ones too), never see it and then ignore it. This process
    # handles it: it cancels the tasks and stops the cluster.
    with dask.config.set({"distributed.worker.multiprocessing-method": _start_method()}):
        # a Ctrl-C while the cluster starts waits until it is up, to stop it as a whole
        resume = _defer_sigint()
        try:
            local = LocalCluster(n_workers=os.cpu_count() or 1, threads_per_worker=1,
                                 processes=True, host="127.0.0.1", dashboard_address=":0",
                                 silence_logs=logging.ERROR,
                                 preload=["metricdiff._worker_setup"])
        except BaseException:
            resume()
            raise
        with local, Client(local, set_as_default=False) as client:
            resume()  # raises KeyboardInterrupt here if one came meanwhile
            yield DaskEngine(client, partition_values)


def _defer_sigint() -> Callable[[], None]:
    """Hold back SIGINT: the function returned puts the handler back and then raises the
    KeyboardInterrupt of a Ctrl-C that came in between (on the main thread alone, where
    handlers are set; elsewhere nothing is held back)."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    came: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda number, frame: came.append(number))

    def resume() -> None:
        signal.signal(signal.SIGINT, previous)
        if came:
            came.clear()
            raise KeyboardInterrupt
    return resume


def _start_method() -> str:
    """Where processes can fork from a server, start one with SIGINT blocked (its forks
    inherit that) and say "forkserver"; else "spawn", whose workers _worker_setup makes
    ignore SIGINT once they have started."""
    import multiprocessing
    from multiprocessing import forkserver, resource_tracker

    if ("forkserver" not in multiprocessing.get_all_start_methods()
            or threading.current_thread() is not threading.main_thread()):
        return "spawn"  # handlers can be set on the main thread alone
    import dask
    from distributed.utils import get_mp_context

    with dask.config.set({"distributed.worker.multiprocessing-method": "forkserver"}):
        get_mp_context()  # the server's preload (distributed and its dependencies), set first
    # SIGINT is blocked on this thread while the server is spawned, as CPython does for its
    # resource tracker: held pending, not lost (ignoring it here lost a Ctrl-C in CI), and
    # inherited blocked by the server and its forks, which then ignore it.
    resource_tracker.ensure_running()  # it unblocks SIGINT when it starts, so start it first
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        forkserver.ensure_running()  # a no-op when this process started it before
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    return "forkserver"


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
