"""Lining runs up as they are written, from digests of their parts alone (what the Dask engine
does for runs whose keys stay on its workers), against lining them up from their keys."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from metricdiff.align import AllRows, KeyDigest, align_runs, aligned_as_written
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
                         keyed.labels[low:high]) for low, high in zip(bounds[:-1], bounds[1:])]


def lined_up(runs, cuts):
    return aligned_as_written(runs, [digests(r, c) for r, c in zip(runs, cuts)])


rng = np.random.default_rng(3)
IDS = np.sort(rng.choice(10**9, 300, replace=False))
LABELS = rng.integers(0, 5, 300)


@pytest.mark.parametrize("ids", [IDS, None])
def test_runs_written_the_same_way_are_lined_up_as_they_are(ids):
    runs = [run("base", ids, LABELS), run("cand", ids, LABELS)]
    alignment = lined_up(runs, [[100, 250]] * 2)
    assert alignment is not None and alignment.ids is None and alignment.n == 300
    by_keys = align_runs(runs)
    assert alignment.keyed_by == by_keys.keyed_by == ("id" if ids is not None else "row order")
    assert alignment.dropped == by_keys.dropped == (0, 0)
    for rows, expected in zip(alignment.rows, by_keys.rows):
        assert isinstance(rows, AllRows) and np.array_equal(np.asarray(rows), expected)


@pytest.mark.parametrize("case", ["label", "split", "order", "text", "mixed", "repeated",
                                  "other id"])
def test_runs_written_otherwise_are_left_to_their_keys(case):
    """Any difference the digests cannot rule out sends the runs to align_runs, which lines
    them up or says what differs."""
    ids, labels, cuts = IDS, LABELS.copy(), [[100, 250]] * 2
    cand_ids = ids
    if case == "label":
        labels[260] = (labels[260] + 1) % 5
    elif case == "split":
        cuts = [[100, 250], [100, 251]]
    elif case == "order":  # increasing within each part, not from one part to the next
        cand_ids = np.r_[ids[200:], ids[:200]]
        ids = cand_ids
        cuts = [[100], [100]]
    elif case == "text":
        ids = cand_ids = np.array([f"ex{i:04d}" for i in range(300)], dtype=object)
    elif case == "mixed":
        cand_ids = None
    elif case == "repeated":  # a part whose ids do not increase
        ids = cand_ids = np.r_[IDS[:150], IDS[149], IDS[151:]]
    elif case == "other id":
        cand_ids = IDS.copy()
        cand_ids[5] += 1
    base = run("base", ids, LABELS)
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
    base = KeyDigest.of(IDS, LABELS)
    assert base == KeyDigest.of(IDS.copy(), LABELS.copy())
    labels = LABELS.copy()
    labels[-1] = (labels[-1] + 1) % 5
    assert KeyDigest.of(IDS, labels).labels != base.labels
    assert KeyDigest.of(IDS.astype(np.int32), LABELS).ids != base.ids  # another type
    assert (base.first, base.last, base.increasing) == (int(IDS[0]), int(IDS[-1]), True)


def test_all_rows_index_like_the_array_of_every_row():
    rows = AllRows(7)
    assert len(rows) == 7 and np.array_equal(np.asarray(rows), np.arange(7))
    assert np.array_equal(rows[np.array([5, 1])], [5, 1])
    assert np.array_equal(rows[2:4], [2, 3])
