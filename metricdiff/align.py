"""Lining runs up example by example: on ids where runs have them, on row order otherwise."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from .errors import InputError
from .io import RunLayout
from .keyhash import GOLDEN, key_hash, pair_sum, salt


class Described(Protocol):
    """What lining up needs to know of a run besides its keys."""

    @property
    def name(self) -> str: ...
    @property
    def layout(self) -> RunLayout: ...
    @property
    def num_classes(self) -> int | None: ...


class Keyed(Described, Protocol):
    """What lining up reads of a run: a loaded RunData, or the RunKeys read before it."""

    @property
    def ids(self) -> np.ndarray | None: ...
    @property
    def labels(self) -> np.ndarray: ...


Runs = Sequence[Keyed]

EXAMPLES_SHOWN = 5  # ids quoted in an error message


class AllRows:
    """Every row of a run, in order, as an index (position i is row i): the rows of runs
    lined up as they are written, without an index array the length of the run."""

    def __init__(self, n: int):
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index) -> np.ndarray:
        return np.arange(self.n)[index] if isinstance(index, slice) else np.asarray(index)

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        return np.arange(self.n, dtype=dtype)


class ById(AllRows):
    """Every row of a run that holds the examples of the alignment in another order: its
    position i is the example of the i-th smallest id, found by its id where the run's
    parts are held (the rows themselves are never listed here)."""


class Kept(ById):
    """The rows of a run that hold the examples every run holds (--allow-partial), lined up
    where a cluster's workers hold the runs: position i is the example of the i-th smallest
    common id, found by its id. `offsets` holds, on the workers, each of the run's
    partitions' kept rows (their offsets within it, increasing)."""

    def __init__(self, n: int, offsets):
        super().__init__(n)
        self.offsets = offsets


@dataclass(frozen=True)
class Alignment:
    """Row indices into each run so that position i is the same example in every run."""

    # one index per run, in the order of the ids
    rows: tuple[np.ndarray | AllRows, ...]
    # the example ids, or row numbers where runs have no ids; None where the runs are lined
    # up from their digests and their ids stay with their parts (on a cluster's workers)
    ids: np.ndarray | None
    keyed_by: str  # "id" or "row order"
    dropped: tuple[int, ...]  # rows of each run left out (only with allow_partial)
    # with ids None, the run whose row order is the alignment's (None: no run's is, every
    # run's rows are found by id); the parts' keys of that run (else of any) name the examples
    in_order: int | None = 0

    @property
    def n(self) -> int:
        return len(self.rows[0])


@dataclass(frozen=True)
class KeyDigest:
    """A part of a run's keys in a few numbers, to line up runs written in the same order
    without bringing their keys together: its rows, the kind of its ids, its first and last
    id and whether they increase, and two sums of hashes of its (id, label) pairs (of its
    (row, label) pairs without ids), which add up over the parts of the run however it is
    split."""

    rows: int
    kind: str  # "whole numbers", "text", or "none" (no id column)
    first: int | None
    last: int | None
    increasing: bool
    sums: tuple[int, int]

    @staticmethod
    def of(ids: np.ndarray | None, labels: np.ndarray, first_row: int,
           clusters: np.ndarray | None = None) -> "KeyDigest":
        """`clusters`: each row's cluster (text), hashed with its label."""
        keys = ids if ids is not None else np.arange(first_row, first_row + len(labels))
        values = labels if clusters is None else _with_clusters(labels, clusters)
        sums = (pair_sum(keys, values, PAIR_STREAMS[0]), pair_sum(keys, values, PAIR_STREAMS[1]))
        if ids is None:
            return KeyDigest(len(labels), "none", None, None, False, sums)
        whole = ids.dtype.kind in "iu" and len(ids) > 0
        return KeyDigest(len(labels), _id_kind(ids), int(ids[0]) if whole else None,
                         int(ids[-1]) if whole else None,
                         whole and bool((ids[1:] > ids[:-1]).all()), sums)


PAIR_STREAMS = (salt(1), salt(2))  # two independent hashes of each pair: 128 bits in all


def _with_clusters(labels: np.ndarray, clusters: np.ndarray) -> np.ndarray:
    """Each row's label and cluster as one whole number: the cluster's hash, shifted by the
    label (pair_sum mixes it again)."""
    with np.errstate(over="ignore"):
        return key_hash(np.asarray(clusters, dtype=object)) * GOLDEN + labels.astype(np.uint64)


def aligned_as_written(runs: Sequence[Described], digests: list[list[KeyDigest]]
                       ) -> Alignment | None:
    """Runs holding the same examples, lined up from the digests of their parts alone (each
    part a cluster's task reads), however each run is split into files and row groups: a
    run whose whole-number ids increase through it gives the order (rows listed as they
    are), and every other run holds the same (id, label) pairs, in that order or another
    (its rows then found by id). Runs without ids are lined up by row order, each with the
    same (row, label) pairs. Equal pairs give equal sums of pair hashes; runs that differ
    give equal sums by chance about once in 2^128. A run whose ids increase has no id
    twice, so neither has a run with the same pairs; where no run's ids increase, every
    run's rows are found by id (in_order None), and the caller must check that no id
    repeats. None where the runs may differ: such runs are lined up from their keys
    (align_runs), which says what differs."""
    _check_same_classes(runs)
    totals = {(sum(part.rows for part in run),
               *(sum(part.sums[i] for part in run) % (1 << 64) for i in range(2)))
              for run in digests}
    kinds = {part.kind for run in digests for part in run}
    if len(totals) > 1 or kinds not in ({"whole numbers"}, {"none"}):
        return None
    n = next(iter(totals))[0]
    if n == 0:
        return None
    if kinds == {"none"}:
        return Alignment(rows=tuple(AllRows(n) for _ in runs), ids=None,
                         keyed_by="row order", dropped=(0,) * len(runs))
    increasing = [_increasing(run) for run in digests]
    return Alignment(rows=tuple(AllRows(n) if ordered else ById(n) for ordered in increasing),
                     ids=None, keyed_by="id", dropped=(0,) * len(runs),
                     in_order=increasing.index(True) if any(increasing) else None)


@dataclass(frozen=True)
class CommonIds:
    """What a cluster's workers found, lining runs up on the ids every run holds: a few
    numbers per run, never an id per example. Per run: its ids in two rows (how many, and
    the first few in the order of their second rows), its examples whose label differs from
    the baseline's (how many, and the smallest few ids), and, held on the workers, each of
    its partitions' kept rows (align.Kept)."""

    common: int  # ids in every run
    repeated: tuple[tuple[int, tuple], ...]
    differ: tuple[tuple[int, tuple], ...]
    offsets: tuple


def aligned_on_common(runs: Sequence[Described], found: CommonIds) -> Alignment:
    """Runs compared on the examples they all hold, lined up where a cluster holds them, with
    the local engine's errors (align_runs): an id in two rows of a run, no id in every run, a
    label that differs from the baseline's."""
    for run, (count, repeated) in zip(runs, found.repeated):
        if count:
            raise _repeated_ids(run, repeated, count)
    if not found.common:
        raise _no_common_id(runs[0])
    for run, (count, ids) in zip(runs[1:], found.differ[1:]):
        if count:
            raise _labels_differ(run, runs[0], "id", ids, count)
    return Alignment(rows=tuple(Kept(found.common, offsets) for offsets in found.offsets),
                     ids=None, keyed_by="id", in_order=None,
                     dropped=tuple(run.layout.n_rows - found.common for run in runs))


def _no_common_id(base: Described) -> InputError:
    return InputError("no id is common to all runs", path=base.layout.path,
                      column=base.layout.id_col)


def _increasing(parts: list[KeyDigest]) -> bool:
    """Ids that increase within each part, and from each part to the next."""
    return all(part.increasing for part in parts) and all(
        (before.last or 0) < (after.first or 0) for before, after in zip(parts[:-1], parts[1:]))


def align_runs(runs: Runs, allow_partial: bool = False) -> Alignment:
    _check_same_classes(runs)
    with_ids = [run.ids is not None for run in runs]
    ids = [run.ids for run in runs if run.ids is not None]
    if len(ids) == len(runs):
        alignment = _align_on_ids(runs, ids, allow_partial)
    elif not ids:
        alignment = _align_on_rows(runs)
    else:
        missing = [run.layout.path for run, has in zip(runs, with_ids) if not has]
        raise InputError(f"no id column '{runs[0].layout.id_col or 'id'}', but other runs have "
                         "one; expected ids in every run (or in none, to line up by row order)",
                         path=missing[0])
    _check_same_labels(runs, alignment)
    return alignment


def _check_same_classes(runs: Sequence[Described]) -> None:
    base = runs[0]
    for run in runs[1:]:
        if None not in (run.num_classes, base.num_classes) and run.num_classes != base.num_classes:
            raise InputError(f"{run.num_classes} classes, but the baseline {base.name} has "
                             f"{base.num_classes}; expected runs over the same classes",
                             path=run.layout.path)
        names, base_names = run.layout.class_names, base.layout.class_names
        if names is not None and base_names is not None and names != base_names:
            differ = next(i for i, (a, b) in enumerate(zip(names, base_names)) if a != b)
            raise InputError(f"class names differ from the baseline {base.name} at class "
                             f"{differ}: '{names[differ]}' vs '{base_names[differ]}'",
                             path=run.layout.path)


def _quote(values, count: int | None = None) -> str:
    """The first few values; `count`: how many there are, where `values` are the first few."""
    shown = [str(v) for v in list(values)[:EXAMPLES_SHOWN]]
    more = (len(values) if count is None else count) > EXAMPLES_SHOWN
    return ", ".join(shown) + (", ..." if more else "")


def _repeated_ids(run: Described, repeated, count: int | None = None) -> InputError:
    """`repeated`: the ids in two rows, in the order of their second rows (the first few)."""
    return InputError(f"{len(repeated) if count is None else count} ids appear more than once "
                      f"(e.g. {_quote(repeated, count)}); expected one row per example",
                      path=run.layout.path, column=run.layout.id_col)


def _labels_differ(run: Described, base: Described, keyed_by: str, ids, count: int
                   ) -> InputError:
    """`ids`: those of the examples whose label differs, in the alignment's order."""
    return InputError(f"{count} examples have a different label than in the baseline "
                      f"{base.name} (e.g. {keyed_by} {_quote(ids, count)}); expected the same "
                      "validation set", path=run.layout.path, column=run.layout.label_col)


def _align_on_ids(runs: Runs, ids: list[np.ndarray], allow_partial: bool) -> Alignment:
    base_ids = ids[0]
    for run, run_ids in zip(runs[1:], ids[1:]):
        if _id_kind(run_ids) != _id_kind(base_ids):
            raise InputError(f"ids are {_id_kind(run_ids)} here but {_id_kind(base_ids)} in the "
                             f"baseline {runs[0].name}; expected the same id type in every run",
                             path=run.layout.path, column=run.layout.id_col)
    if (base_ids.dtype.kind in "iu" and bool((base_ids[1:] > base_ids[:-1]).all())
            and all(np.array_equal(run_ids, base_ids) for run_ids in ids[1:])):
        # the usual case, every run written in the same order of increasing ids: lined up as
        # they are (and ids that increase cannot repeat), with no join to make
        rows = tuple(np.arange(len(base_ids)) for _ in runs)
        return Alignment(rows=rows, ids=base_ids, keyed_by="id", dropped=(0,) * len(runs))
    import pandas as pd  # its hash index joins ids of any type; imported only when needed

    indexes = []
    for run, run_ids in zip(runs, ids):
        index = pd.Index(run_ids)
        if index.has_duplicates:
            raise _repeated_ids(run, index[index.duplicated()].unique())
        indexes.append(index)

    base = indexes[0]
    keep = np.ones(len(base), dtype=bool)
    for run, index in zip(runs[1:], indexes[1:]):
        found = index.get_indexer(base) >= 0
        extra = ~index.isin(base)
        if not allow_partial and (not found.all() or extra.any()):
            raise InputError(f"ids differ from the baseline {runs[0].name}: "
                             f"{int((~found).sum())} baseline ids missing here (e.g. "
                             f"{_quote(base[~found])}), {int(extra.sum())} ids only here (e.g. "
                             f"{_quote(index[extra])}); pass --allow-partial to compare the "
                             "common examples", path=run.layout.path, column=run.layout.id_col)
        keep &= found
    if not keep.any():
        raise _no_common_id(runs[0])
    # in order of id, not of the baseline's rows: the resamples are drawn over positions,
    # so the same examples in another row order (or shard split) get the same intervals
    common = base[keep].sort_values()
    rows = tuple(index.get_indexer(common) for index in indexes)
    dropped = tuple(len(index) - len(common) for index in indexes)
    return Alignment(rows=rows, ids=np.asarray(common), keyed_by="id", dropped=dropped)


def _id_kind(ids: np.ndarray) -> str:
    return "whole numbers" if ids.dtype.kind in "iu" else "text"


def _align_on_rows(runs: Runs) -> Alignment:
    n = len(runs[0].labels)
    for run in runs[1:]:
        if len(run.labels) != n:
            raise InputError(f"{len(run.labels)} rows, but the baseline {runs[0].name} has "
                             f"{n}; without an id column runs are lined up by row order and "
                             "must have the same rows", path=run.layout.path)
    rows = tuple(np.arange(n) for _ in runs)
    return Alignment(rows=rows, ids=np.arange(n), keyed_by="row order",
                     dropped=tuple(0 for _ in runs))


def _check_same_labels(runs: Runs, alignment: Alignment) -> None:
    assert alignment.ids is not None  # lined up from the runs' keys
    base_labels = runs[0].labels[alignment.rows[0]]
    for run, rows in zip(runs[1:], alignment.rows[1:]):
        differ = run.labels[rows] != base_labels
        if differ.any():
            raise _labels_differ(run, runs[0], alignment.keyed_by, alignment.ids[differ],
                                 int(differ.sum()))
