"""Lining runs up as they are written, from digests of their parts alone (what the Dask engine
does for runs whose keys stay on its workers), against lining them up from their keys."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from metricdiff.align import AllRows, ById, KeyDigest, align_runs, aligned_as_written
from metricdiff.errors import InputError


def run(name: str, ids, labels, num_classes: int = 5, class_names=None):
    layout = SimpleNamespace(path=f"{name}.parquet", id_col="id", label_col="label",
                             class_names=class_names)
    return SimpleNamespace(name=name, layout=layout, num_classes=num_classes,
                           ids=None if ids is None else np.asarray(ids),
                           labels=np.asarray(labels))


def digests(keyed, cuts) -> list[KeyDigest]:
    """The run's digest part by part, cut at these rows."""
    bounds = [0, *cuts, len(keyed.labels)]
    return [KeyDigest.of(None if keyed.ids is None else keyed.ids[low:high],
                         keyed.labels[low:high], low)
            for low, high in zip(bounds[:-1], bounds[1:])]


def lined_up(runs, cuts):
    return aligned_as_written(runs, [digests(r, c) for r, c in zip(runs, cuts)])


rng = np.random.default_rng(3)
IDS = np.sort(rng.choice(10**9, 300, replace=False))
LABELS = rng.integers(0, 5, 300)


@pytest.mark.parametrize("ids", [IDS, None])
@pytest.mark.parametrize("cuts", [[[100, 250]] * 2, [[100, 250], [1, 2, 299]], [[], [150]]])
def test_runs_in_the_same_order_are_lined_up_as_they_are(ids, cuts):
    """However each run is split into parts."""
    runs = [run("base", ids, LABELS), run("cand", ids, LABELS)]
    alignment = lined_up(runs, cuts)
    assert alignment is not None and alignment.ids is None and alignment.n == 300
    by_keys = align_runs(runs)
    assert alignment.keyed_by == by_keys.keyed_by == ("id" if ids is not None else "row order")
    assert alignment.dropped == by_keys.dropped == (0, 0)
    for rows, expected in zip(alignment.rows, by_keys.rows):
        assert type(rows) is AllRows and np.array_equal(np.asarray(rows), expected)


@pytest.mark.parametrize("first_in_order", [True, False])
def test_a_run_in_another_order_is_found_by_id(first_in_order):
    """A run holding the same (id, label) pairs as a run whose ids increase, in another
    order: lined up in the order of that run, its own rows found by id."""
    order = rng.permutation(300)
    ordered, shuffled = run("a", IDS, LABELS), run("b", IDS[order], LABELS[order])
    runs = [ordered, shuffled] if first_in_order else [shuffled, ordered]
    alignment = lined_up(runs, [[100, 250], [7]])
    assert alignment is not None and alignment.ids is None and alignment.keyed_by == "id"
    assert alignment.in_order == (0 if first_in_order else 1)
    kinds = [type(rows) for rows in alignment.rows]
    assert kinds == ([AllRows, ById] if first_in_order else [ById, AllRows])
    # what align_runs makes of them: the ordered run's rows as they are
    assert np.array_equal(align_runs(runs).rows[alignment.in_order], np.arange(300))


@pytest.mark.parametrize("repeated", [False, True])
def test_runs_none_of_which_is_in_order_are_all_found_by_id(repeated):
    """No run's ids increase (here each run is increasing within each part but not from
    one part to the next, and the other is shuffled): every run's rows are found by id, and
    whether an id repeats is left to the caller to check (in_order None)."""
    ids = np.r_[IDS[200:], IDS[:200]]
    if repeated:
        ids[10] = ids[11]
    order = rng.permutation(300)
    labels = np.r_[LABELS[200:], LABELS[:200]]
    runs = [run("a", ids, labels), run("b", ids[order], labels[order])]
    alignment = lined_up(runs, [[100], [50, 60]])
    assert alignment is not None and alignment.in_order is None
    assert [type(rows) for rows in alignment.rows] == [ById, ById]
    if repeated:
        with pytest.raises(InputError, match="1 ids appear more than once"):
            align_runs(runs)


@pytest.mark.parametrize("case", ["label", "row label", "swap", "text", "mixed", "other id",
                                  "fewer"])
def test_runs_that_may_differ_are_left_to_their_keys(case):
    """Any difference the digests cannot rule out sends the runs to align_runs, which lines
    them up or says what differs."""
    ids, labels, cuts = IDS, LABELS.copy(), [[100, 250], [40, 120]]
    base_labels = LABELS
    cand_ids = ids
    if case == "label":
        labels[260] = (labels[260] + 1) % 5
    elif case == "row label":  # no ids: lined up by row order, and one row's label differs
        ids = cand_ids = None
        labels[7] = (labels[7] + 1) % 5
    elif case == "swap":  # the same labels in all, two of them on each other's rows
        ids = cand_ids = None
        labels = LABELS.copy()
        first, second = np.flatnonzero(labels != labels[0])[0], 0
        labels[[first, second]] = labels[[second, first]]
    elif case == "fewer":
        cand_ids, labels, cuts = IDS[:-1], LABELS[:-1], [[100, 250], [40]]
    elif case == "text":
        ids = cand_ids = np.array([f"ex{i:04d}" for i in range(300)], dtype=object)
    elif case == "mixed":
        cand_ids = None
    elif case == "other id":
        cand_ids = IDS.copy()
        cand_ids[5] += 1
    base = run("base", ids, base_labels)
    cand = run("cand", cand_ids, labels)
    assert lined_up([base, cand], cuts) is None
    if case == "label":
        with pytest.raises(InputError, match="1 examples have a different label"):
            align_runs([base, cand])


def test_runs_over_other_classes_are_reported_from_the_digests_too():
    runs = [run("base", IDS, LABELS), run("cand", IDS, LABELS, num_classes=6)]
    with pytest.raises(InputError, match="6 classes, but the baseline base has 5"):
        lined_up(runs, [[100]] * 2)


def test_a_digest_follows_every_id_and_label():
    base = KeyDigest.of(IDS, LABELS, 0)
    assert base == KeyDigest.of(IDS.copy(), LABELS.copy(), 0)
    assert base.sums == KeyDigest.of(IDS.astype(np.int32), LABELS.astype(np.int8), 9).sums
    labels = LABELS.copy()
    labels[-1] = (labels[-1] + 1) % 5
    assert all(a != b for a, b in zip(KeyDigest.of(IDS, labels, 0).sums, base.sums))
    ids = IDS.copy()
    ids[3] += 1
    assert all(a != b for a, b in zip(KeyDigest.of(ids, LABELS, 0).sums, base.sums))
    # the sums of a run's parts add up to the whole run's
    halves = [KeyDigest.of(IDS[:120], LABELS[:120], 0), KeyDigest.of(IDS[120:], LABELS[120:],
                                                                      120)]
    assert [sum(part.sums[i] for part in halves) % (1 << 64) for i in range(2)] == list(
        base.sums)
    assert (base.first, base.last, base.increasing) == (int(IDS[0]), int(IDS[-1]), True)
    assert KeyDigest.of(None, LABELS, 0).kind == "none"


def test_all_rows_index_like_the_array_of_every_row():
    rows = AllRows(7)
    assert len(rows) == 7 and np.array_equal(np.asarray(rows), np.arange(7))
    assert np.array_equal(rows[np.array([5, 1])], [5, 1])
    assert np.array_equal(rows[2:4], [2, 3])
