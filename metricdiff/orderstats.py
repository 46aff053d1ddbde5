"""Exact order statistics of a run held in parts: the local engine's one part, or the
partitions that a Dask cluster's workers keep.

The statistics that need the examples in some order (equal-mass bins, the worst examples by
NLL) are computed here from small answers of every part, never from the examples gathered
in one place. Each part sorts its own rows once, stably, so that ties keep row order, and
keeps the running sums of some columns in that order. Then:

- the k-th smallest key of the whole run is found by narrowing an interval of 64-bit keys
  by ROUND_POINTS at a time: each part counts its keys at or below each point, until the
  interval holds FEW_KEYS rows or fewer; then each part sends its keys in it, and the k-th
  is picked from those (a round for a run of FEW_KEYS rows, about 1 + log_256(n / FEW_KEYS)
  for n rows whose keys spread; at most 8 rounds of counts, as a 64-bit key needs);
- the first k rows of the run in (key, row) order are, in each part, its rows below the k-th
  key and, of its rows at that key, as many as the parts before it leave over (parts are in
  row order): their sums are read off each part's running sums, and added.

So the answers are those of one stable sort of the whole run, up to the rounding of a sum
added part by part; with one part they are its bits.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Callable, Protocol

import numpy as np

from .align import AllRows, ById, Kept
from .perexample import PerExample

ROUND_POINTS = 256  # keys counted per target and round: the interval shrinks 256-fold
FEW_KEYS = 4096  # rows in a target's interval small enough to bring its keys here
KEY_TOP = (1 << 64) - 1


class Parts(Protocol):
    """A run's per-example columns in parts, in row order, wherever they are held."""

    def map(self, fn: Callable[..., Any], *args: Any) -> "Parts":
        """fn(part, *args) of each part, kept where the parts are."""
        ...

    def map_each(self, fn: Callable[..., Any], args: list) -> "Parts":
        """fn(part, arg) of each part with its own argument, kept where the parts are."""
        ...

    def map_with(self, fn: Callable[..., Any], others: list, *args: Any) -> "Parts":
        """fn(part, each other's part..., *args) of each part and the same part of each of
        `others` (parts of the same rows: a run's examples and its slice values, say)."""
        ...

    def gather(self) -> list:
        """The parts themselves, here."""
        ...

    def joined(self, fn: Callable[..., Any], *args: Any) -> "Parts":
        """fn(every part, in order, *args) as one part, kept where it is made (a few rows
        of every part, brought together to be measured in one place)."""
        ...

    def by_ranges(self, fn: Callable[[Any], "Keyed"], bounds: np.ndarray) -> "Parts":
        """The rows of every part, keyed by fn(part), moved into consecutive ranges of keys:
        part j holds the rows with keys in [bounds[j - 1], bounds[j]) (the first from the
        smallest key, the last to the largest), as one Keyed. Equal keys are never split."""
        ...


    def merged(self, other: "Parts", on: str) -> "Parts":
        """Parts of pandas DataFrames, this run's and the other's, joined on the column `on`:
        the rows of equal keys brought together (inner join)."""
        ...


Keyed = tuple[np.ndarray, np.ndarray]  # uint64 keys (rows,), float64 values (rows, columns)


class LocalParts:
    """Parts held in this process (the local engine: one part, the whole run)."""

    def __init__(self, items: list):
        self.items = items

    def map(self, fn: Callable[..., Any], *args: Any) -> "LocalParts":
        return LocalParts([fn(item, *args) for item in self.items])

    def map_each(self, fn: Callable[..., Any], args: list) -> "LocalParts":
        return LocalParts([fn(item, arg) for item, arg in zip(self.items, args)])

    def map_with(self, fn: Callable[..., Any], others: list, *args: Any) -> "LocalParts":
        assert all(isinstance(other, LocalParts) for other in others)
        return LocalParts([fn(item, *with_items, *args)
                           for item, *with_items in zip(self.items,
                                                        *(other.items for other in others))])

    def gather(self) -> list:
        return self.items

    def joined(self, fn: Callable[..., Any], *args: Any) -> "LocalParts":
        return LocalParts([fn(self.items, *args)])

    def merged(self, other: Parts, on: str) -> "LocalParts":
        import pandas as pd

        assert isinstance(other, LocalParts)
        return LocalParts([pd.concat(self.items, ignore_index=True).merge(
            pd.concat(other.items, ignore_index=True), on=on, how="inner")])

    def by_ranges(self, fn: Callable[[Any], Keyed], bounds: np.ndarray) -> "LocalParts":
        pieces = [fn(item) for item in self.items]
        if len(pieces) == 1 and not len(bounds):  # the local engine's one part: as it is
            return LocalParts(pieces)
        keys = np.concatenate([keys for keys, _ in pieces])
        values = np.concatenate([values for _, values in pieces])
        if not len(bounds):
            return LocalParts([(keys, values)])
        order = np.argsort(keys, kind="stable")
        keys, values = keys[order], values[order]
        cuts = np.r_[0, np.searchsorted(keys, bounds, side="left"), len(keys)]
        return LocalParts([(keys[a:b], values[a:b]) for a, b in zip(cuts[:-1], cuts[1:])])


def rows_of(examples) -> int:
    return len(examples.conf)


def total_rows(parts: Parts) -> int:
    return int(sum(parts.map(rows_of).gather()))


class HeldRows:
    """A run's examples left where its parts are held (a cluster's workers), in the order
    of `rows` (each position's row of the run; align.ById: the run's examples in order of
    id, found by the ids its `key_parts` hold; align.Kept: those of its examples every run
    holds, the same way): `take` fetches the few a statistic asks
    for, such as the bootstrap's subsets, and nothing else comes here."""

    def __init__(self, parts: Parts, rows: np.ndarray | AllRows, key_parts: Parts | None):
        self.parts, self.rows, self.key_parts = parts, rows, key_parts
        self._starts = np.cumsum([0, *parts.map(rows_of).gather()])  # each part's first row

    def __len__(self) -> int:
        return len(self.rows)

    def take(self, index: np.ndarray, keys: np.ndarray | None = None) -> PerExample:
        """The examples at these positions, in this order (what PerExample.take gives)."""
        return self.held(index, keys).gather()[0]

    def held(self, index: np.ndarray, keys: np.ndarray | None = None) -> Parts:
        """The examples at these positions, in this order, as one part where the parts are
        held: on a cluster, brought together on one worker, to be measured there. `keys`:
        the ids at those positions (None: every position, in order), for a run whose rows
        are found by id."""
        if isinstance(self.rows, ById):
            assert self.key_parts is not None  # a run found by id is held with its ids
            wanted = None if keys is None else np.sort(keys)
            key_parts, parts = self.key_parts, self.parts
            if keys is None and isinstance(self.rows, Kept):  # every position: the kept rows
                key_parts, parts = self.kept_keys(), self.kept()
            return key_parts.map_with(_rows_with_keys, [parts], wanted).joined(_in_order_of,
                                                                               keys)
        wanted = self.rows[index]
        order = np.argsort(wanted, kind="stable")
        back = np.empty_like(order)
        back[order] = np.arange(len(order))  # taken in row order; given back in `index`'s
        return self.parts.map_each(_rows_at, self._offsets(wanted[order])).joined(_in_order,
                                                                                  back)

    def _offsets(self, ascending: np.ndarray) -> list[np.ndarray]:
        """Rows of the run, in increasing order, as offsets within each part."""
        cuts = np.searchsorted(ascending, self._starts)
        return [ascending[low:high] - start
                for low, high, start in zip(cuts[:-1], cuts[1:], self._starts[:-1])]

    def kept(self, parts: Parts | None = None) -> Parts:
        """The run's rows that are lined up (its rows in `rows`), part by part in row order,
        where the parts are held: the run compared on part of its examples. `parts`: other
        parts of the same rows (their cluster keys, say); by default the examples."""
        parts = self.parts if parts is None else parts
        if isinstance(self.rows, Kept):  # its kept rows held where its parts are
            return parts.map_with(_rows_at, [self.rows.offsets])
        return parts.map_each(_rows_at, self._offsets(np.sort(np.asarray(self.rows))))

    def kept_keys(self) -> Parts:
        """The keys of the rows kept(), part by part."""
        assert self.key_parts is not None
        if isinstance(self.rows, Kept):
            return self.key_parts.map_with(_keys_at, [self.rows.offsets])
        return self.key_parts.map_each(_keys_at, self._offsets(np.sort(np.asarray(self.rows))))

    def in_clusters(self, clusters: Parts, units: np.ndarray | None) -> Parts:
        """The examples of these clusters (increasing indices; None: every cluster), in the
        order of their positions, as one part where the parts are held, with each one's
        cluster's position among `units`. `clusters`: each part's cluster indices."""
        if isinstance(self.rows, Kept):  # of its kept rows alone, put in order of id
            pieces = self.kept().map_with(_rows_in_clusters,
                                          [self.kept(clusters), self.kept_keys()], units)
            return pieces.joined(_in_position_order, True)
        if isinstance(self.rows, AllRows):  # lined up as the parts hold them, or by id
            assert self.key_parts is not None
            pieces = self.parts.map_with(_rows_in_clusters, [clusters, self.key_parts], units)
            return pieces.joined(_in_position_order, isinstance(self.rows, ById))
        # compared on part of its rows: those alone, each with its position as its key
        rows = np.asarray(self.rows)
        order = np.argsort(rows, kind="stable")
        offsets = self._offsets(rows[order])
        cuts = np.cumsum([0, *(len(part) for part in offsets)])
        positions = clusters.map_each(_as_keys, [order[a:b] for a, b in zip(cuts[:-1], cuts[1:])])
        pieces = self.parts.map_each(_rows_at, offsets).map_with(
            _rows_in_clusters, [clusters.map_each(_rows_at, offsets), positions], units)
        return pieces.joined(_in_position_order, True)


def _rows_at(examples: Any, offsets: np.ndarray) -> Any:
    """The rows at these offsets of a part (its examples, or an array of the same rows)."""
    return examples.take(offsets)


def _keys_at(keys: tuple[np.ndarray, Any], offsets: np.ndarray) -> tuple[np.ndarray, Any]:
    part_keys, rest = keys
    return part_keys[offsets], rest


def _as_keys(_: Any, positions: np.ndarray) -> tuple[np.ndarray, int]:
    """Positions in the alignment, as the keys a part's rows are put in order by."""
    return positions, 0


def _in_order(pieces: list[PerExample], back: np.ndarray) -> PerExample:
    return PerExample.concat(pieces).take(back)


def _rows_in_clusters(examples: PerExample, clusters: np.ndarray, keys: tuple[np.ndarray, int],
                      units: np.ndarray | None
                      ) -> tuple[PerExample, np.ndarray, np.ndarray]:
    """A part's examples in these clusters, each one's cluster's position among them, and
    their keys."""
    part_keys, _ = keys
    if units is None:
        return examples, clusters, part_keys
    found = np.flatnonzero(np.isin(clusters, units))
    return (examples.take(found), np.searchsorted(units, clusters[found]), part_keys[found])


def _in_position_order(pieces: list[tuple[PerExample, np.ndarray, np.ndarray]], by_id: bool
                       ) -> tuple[PerExample, np.ndarray]:
    """The pieces' examples and clusters, in row order (pieces in order), or by id."""
    examples = PerExample.concat([piece for piece, _, _ in pieces])
    clusters = np.concatenate([piece_clusters for _, piece_clusters, _ in pieces])
    if not by_id:
        return examples, clusters
    order = np.argsort(np.concatenate([piece_keys for _, _, piece_keys in pieces]),
                       kind="stable")
    return examples.take(order), clusters[order]


def _rows_with_keys(keys: tuple[np.ndarray, int], examples: PerExample,
                    wanted: np.ndarray | None) -> tuple[PerExample, np.ndarray]:
    """A part's examples whose keys are among `wanted` (sorted; None: all), with their keys."""
    part_keys, _ = keys
    if wanted is None:
        return examples, part_keys
    at = np.minimum(np.searchsorted(wanted, part_keys), max(len(wanted) - 1, 0))
    found = np.flatnonzero(wanted[at] == part_keys) if len(wanted) else np.arange(0)
    return examples.take(found), part_keys[found]


def _in_order_of(pieces: list[tuple[PerExample, np.ndarray]], keys: np.ndarray | None
                 ) -> PerExample:
    """The pieces' examples in the order of `keys` (None: in increasing order of key)."""
    examples = PerExample.concat([piece for piece, _ in pieces])
    found = np.concatenate([piece_keys for _, piece_keys in pieces])
    by_key = examples.take(np.argsort(found, kind="stable"))
    if keys is None:
        return by_key
    assert len(found) == len(keys)  # the alignment found every key in the run, once
    rank = np.empty(len(keys), dtype=np.int64)
    rank[np.argsort(keys, kind="stable")] = np.arange(len(keys))
    return by_key.take(rank)


def float_keys(values: np.ndarray) -> np.ndarray:
    """uint64 keys in the order of the float64 values (-inf .. inf; no NaN); -0.0 is 0.0."""
    bits = (np.asarray(values, dtype=np.float64) + 0.0).view(np.uint64)
    negative = (bits >> np.uint64(63)).astype(bool)
    return np.where(negative, ~bits, bits | np.uint64(1 << 63))


def float_values(keys: np.ndarray) -> np.ndarray:
    """The float64 values of float_keys."""
    keys = np.asarray(keys, dtype=np.uint64)
    positive = (keys >> np.uint64(63)).astype(bool)
    bits = np.where(positive, keys & np.uint64(KEY_TOP >> 1), ~keys)
    return bits.view(np.float64)


# The orders a part can be sorted in: each example's key, and the columns summed in that
# order. By name, so that a cluster's task carries a word, not a function.
ORDERS: dict[str, Callable[[PerExample], tuple[np.ndarray, list[np.ndarray]]]] = {
    # confidence ascending; the gap correct - confidence (adaptive ECE)
    "conf": lambda pe: (float_keys(pe.conf), [pe.correct - pe.conf]),
    # NLL descending; the NLL (the worst examples' share of the loss)
    "nll_desc": lambda pe: (~float_keys(pe.nll), [pe.nll]),
}


@dataclass
class SortedPart:
    """One part's rows in one order: their keys ascending (ties in row order), and the
    running sums of the order's columns, (columns, rows + 1), starting at 0."""

    keys: np.ndarray
    running: np.ndarray


# Orders whose sums do not depend on which of tied rows come first (the columns summed are
# the same at equal keys): a quicksort will do, and takes 0.10 s for 10^6 rows where the
# stable sort took 0.15 s (the whole worst-share computation, measured).
TIES_ALIKE = {"nll_desc"}


def sorted_part(examples: PerExample, order: str) -> SortedPart:
    keys, columns = ORDERS[order](examples)
    index = np.argsort(keys, kind="quicksort" if order in TIES_ALIKE else "stable")
    running = np.zeros((len(columns), len(keys) + 1))
    for column, out in zip(columns, running):
        np.cumsum(column[index], out=out[1:])
    return SortedPart(keys[index], running)


def _counts_at_most(part: SortedPart, points: np.ndarray) -> np.ndarray:
    return np.searchsorted(part.keys, points, side="right")


def _counts_around(part: SortedPart, keys: np.ndarray) -> np.ndarray:
    """(below, at or below) each key: (2, keys)."""
    return np.stack([np.searchsorted(part.keys, keys, side="left"),
                     np.searchsorted(part.keys, keys, side="right")])


def _keys_between(part: SortedPart, lows: np.ndarray, highs: np.ndarray) -> list[np.ndarray]:
    """The part's keys in [low, high], for each interval."""
    starts = np.searchsorted(part.keys, lows, side="left")
    stops = np.searchsorted(part.keys, highs, side="right")
    return [part.keys[a:b] for a, b in zip(starts, stops)]


def _running_at(part: SortedPart, rows: np.ndarray) -> np.ndarray:
    return part.running[:, rows]


class RunOrder:
    """A run's rows in one order (an ORDERS name), over its parts."""

    def __init__(self, parts: Parts, order: str):
        self.parts, self.order = parts, order
        self.n = total_rows(parts)

    @functools.cached_property
    def sorted(self) -> Parts:
        """Each part sorted, once, when a statistic first asks for the order."""
        return self.parts.map(sorted_part, self.order)

    def keys_at(self, ranks: np.ndarray) -> np.ndarray:
        """The key at each 0-based rank of the run (each below n)."""
        targets = np.asarray(ranks, dtype=np.int64) + 1  # rows at or below the key
        low = np.zeros(len(targets), dtype=np.uint64)
        high = np.full(len(targets), KEY_TOP, dtype=np.uint64)
        below = np.zeros(len(targets), dtype=np.int64)  # rows whose key is below `low`
        inside = np.full(len(targets), self.n, dtype=np.int64)  # rows in [low, high]
        j = np.arange(1, ROUND_POINTS + 1, dtype=np.uint64)[None, :]
        size = np.uint64(ROUND_POINTS)
        while ((low < high) & (inside > FEW_KEYS)).any():
            width = (high - low)[:, None]
            # low + width * j / ROUND_POINTS, in parts that cannot overflow 64 bits; the last
            # point is high
            points = low[:, None] + (width // size) * j + ((width % size) * j) // size
            counts = np.asarray(sum(self.sorted.map(_counts_at_most, points.ravel()).gather())
                                ).reshape(points.shape)
            first = np.argmax(counts >= targets[:, None], axis=1)
            rows = np.arange(len(targets))
            # the answer lies after the point before the first that holds its rank
            previous = points[rows, np.maximum(first - 1, 0)] + np.uint64(1)
            below = np.where(first > 0, counts[rows, np.maximum(first - 1, 0)], below)
            inside = counts[rows, first] - below
            low = np.where(first > 0, previous, low)
            high = points[rows, first]
        open_ = np.flatnonzero(low < high)
        if len(open_):  # each interval holds few rows: their keys, from every part
            found = self.sorted.map(_keys_between, low[open_], high[open_]).gather()
            for t, target in enumerate(open_):
                keys = np.sort(np.concatenate([part[t] for part in found]))
                low[target] = keys[targets[target] - below[target] - 1]
        return low

    def first_sums(self, counts: np.ndarray) -> np.ndarray:
        """The order's column sums over the first `count` rows of the run, for each count
        (0 .. n): (columns, counts)."""
        counts = np.asarray(counts, dtype=np.int64)
        some = counts > 0
        keys = self.keys_at(np.maximum(counts - 1, 0))
        around = self.sorted.map(_counts_around, keys).gather()
        left = counts - sum(a[0] for a in around)  # ties still to take, part by part
        rows = []
        for below, at_most in around:
            taken = np.clip(left, 0, at_most - below)
            rows.append(np.where(some, below + taken, 0))
            left = left - taken
        return sum(self.sorted.map_each(_running_at, rows).gather())


def range_bounds(order: RunOrder, ranges: int) -> np.ndarray:
    """The keys that cut the run into `ranges` ranges of about equal rows: the lower keys
    of ranges 1 .. ranges - 1 (fewer where keys repeat), from the order's own search."""
    if ranges < 2 or order.n < 2:
        return np.array([], dtype=np.uint64)
    ranks = (np.arange(1, ranges) * order.n) // ranges
    return np.unique(order.keys_at(ranks))
