"""The Dask engine gives the local engine's numbers, on a real LocalCluster of two worker
processes: every layout, groups, clusters and slices, rows in another order, a worker killed
mid-run, a bad shard, and a stopped read.

Runs here are small, so the partitions are made small too (a few row groups each): every run
is split over many tasks, and both workers take some."""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

import metricdiff
from conftest import Close, probs_of, random_logits, to_rounding, write_run
from metricdiff import cluster
from metricdiff.cli import app
from metricdiff.errors import InputError
from metricdiff.io import ReadOptions, inspect_run
from metricdiff.classwise import ClasswisePlan
from metricdiff.metrics import MetricSettings, RunSums, SummaryPlan
from metricdiff.pipeline import Scoring, load_run
from metricdiff.results import build_report
from test_formats import write_topk

distributed = pytest.importorskip("distributed")

# values per task: with 12 classes and row groups of 64 rows, two row groups a task
SMALL_PARTITIONS = 64 * 12 * 2


def local_cluster(workers: int):
    """A LocalCluster of single-threaded worker processes on the loopback interface."""
    return distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                    host="127.0.0.1", dashboard_address=":0", silence_logs=50)


@pytest.fixture(scope="module")
def dask_cluster():
    with local_cluster(2) as local:
        yield local


@pytest.fixture
def scheduler(dask_cluster, monkeypatch):
    monkeypatch.setattr(cluster, "PARTITION_VALUES", SMALL_PARTITIONS)
    return dask_cluster.scheduler_address


def without_paths(value):
    """A document without the fields that name files."""
    if isinstance(value, dict):
        return {key: without_paths(item) for key, item in value.items()
                if key not in ("path", "files")}
    if isinstance(value, list):
        return [without_paths(item) for item in value]
    return value


def both_reports(path, scheduler, **kwargs) -> tuple[dict, dict]:
    local = metricdiff.report(str(path), **kwargs).to_dict()
    dask = metricdiff.report(str(path), engine="dask", scheduler=scheduler, **kwargs).to_dict()
    return to_rounding(local), to_rounding(dask)


def both_comparisons(paths, scheduler, **kwargs) -> tuple[dict, dict]:
    local = metricdiff.compare(*map(str, paths), resamples=200, **kwargs).to_dict()
    dask = metricdiff.compare(*map(str, paths), resamples=200, engine="dask",
                              scheduler=scheduler, **kwargs).to_dict()
    return to_rounding(local), to_rounding(dask)


@pytest.fixture(scope="module")
def predictions():
    return random_logits(900, 12, seed=21)


LAYOUTS = ["fixed", "list", "large", "probs", "wide", "string_labels", "float16", "topk",
           "shards", "glob"]


def write_layout(tmp_path, layout, logits, labels):
    n = len(labels)
    names = [f"c{c}" for c in range(logits.shape[1])]
    source = np.array(["web", "app", "partner"])[np.arange(n) % 3].tolist()
    common = dict(ids=np.arange(n), extra={"source": source})
    if layout in ("fixed", "list", "large"):
        return write_run(tmp_path / "r.parquet", labels, logits=logits, list_kind=layout,
                         **common)
    if layout == "probs":
        return write_run(tmp_path / "r.parquet", labels, probs=probs_of(logits), **common)
    if layout == "wide":
        return write_run(tmp_path / "r.parquet", labels, logits=logits, wide=True,
                         class_names=names, **common)
    if layout == "string_labels":
        return write_run(tmp_path / "r.parquet", [names[y] for y in labels], logits=logits,
                         class_names=names, **common)
    if layout == "float16":
        return write_run(tmp_path / "r.parquet", labels, logits=logits.astype(np.float16),
                         **common)
    if layout == "topk":
        return write_topk(tmp_path / "r.parquet", logits, labels, 5)
    folder = write_run(tmp_path / "shards", labels, logits=logits, shards=3,
                       row_group_size=50, **common)
    return folder if layout == "shards" else str(folder / "part-*.parquet")


@pytest.mark.parametrize("layout", LAYOUTS)
def test_report_on_every_layout_is_the_local_one(tmp_path, scheduler, predictions, layout):
    logits, labels = predictions
    path = write_layout(tmp_path, layout, logits, labels)
    by = [] if layout == "topk" else ["source"]
    local, dask = both_reports(path, scheduler, by=by)
    assert dask == local
    assert len(cluster.partitions(inspect_run(str(path), ReadOptions()),
                                  SMALL_PARTITIONS)) >= 3


def test_report_options_reach_the_workers(tmp_path, scheduler, predictions):
    """The temperature, the cross-fitted halves and the probability floor are fixed on the
    client; each worker's rows are scored with them."""
    logits, labels = predictions
    path = write_run(tmp_path / "r.parquet", labels, logits=logits, ids=np.arange(len(labels)))
    for options in ({"cross_fit": True}, {"temperature": 1.7}, {"min_prob": 1e-4},
                    {"temperature_values": 12 * 100}):
        local, dask = both_reports(path, scheduler, **options)
        assert dask == local, options


def shuffled_pair(tmp_path, seed=0, n=900, k=12, clusters=False):
    """Two runs of one validation set (its labels do not depend on `seed`), the candidate's
    rows in another order."""
    _, labels = random_logits(n, k, seed=0)
    rng = np.random.default_rng(seed)
    logits, other = (rng.normal(scale=1.5, size=(n, k)).astype(np.float32) for _ in "ab")
    logits[np.arange(n), labels] += 2.0
    other[np.arange(n), labels] += 2.4  # a candidate a little better
    ids = np.arange(n)
    extra = {"source": np.array(["a", "b", "c"])[ids % 3].tolist()}
    if clusters:
        extra["video"] = (ids // 6).tolist()
    base = write_run(tmp_path / f"base{seed}.parquet", labels, logits=logits, ids=ids,
                     extra=extra)
    order = np.random.default_rng(seed).permutation(n)
    cand = write_run(tmp_path / f"cand{seed}.parquet", labels[order], logits=other[order],
                     ids=ids[order], extra={key: np.asarray(v)[order].tolist()
                                            for key, v in extra.items()})
    return base, cand


def watched_lining_up(monkeypatch) -> list[str]:
    """How the Dask engine lines the runs up, call by call: "keys" where a run's ids and
    labels are gathered here, "common" where the workers find the ids every run holds."""
    seen: list[str] = []
    read_keys, common_ids = cluster.DaskEngine.read_keys, cluster.DaskEngine.common_ids

    def watched_keys(self, *args, **kwargs):
        seen.append("keys")
        return read_keys(self, *args, **kwargs)

    def watched_common(self, *args, **kwargs):
        seen.append("common")
        return common_ids(self, *args, **kwargs)

    monkeypatch.setattr(cluster.DaskEngine, "read_keys", watched_keys)
    monkeypatch.setattr(cluster.DaskEngine, "common_ids", watched_common)
    return seen


def test_compare_lines_runs_up_by_id_whatever_the_row_order(tmp_path, scheduler):
    base, cand = shuffled_pair(tmp_path)
    local, dask = both_comparisons([base, cand], scheduler, by=["source"])
    assert dask == local
    assert dask["comparisons"][0]["verdict"]["decision"] in ("better", "worse", "noise")


@pytest.mark.parametrize("order", ["same", "split", "shuffled", "neither"])
def test_a_pair_on_a_cluster_is_resampled_on_the_workers(tmp_path, scheduler, monkeypatch,
                                                         order):
    """A comparison of two runs held by the workers: no run's columns come to the client;
    each little bootstrap's subset is brought together on a worker and resampled there (the
    client takes no example), and every number is the local engine's, intervals included.
    Runs holding the same examples are lined up from their partitions' digests, in any
    order (a run not in order of id has its subsets found by id): their ids and labels stay
    on the workers too."""
    from metricdiff import api, comparison, orderstats, paired

    monkeypatch.setattr(paired, "FULL_BOOTSTRAP_MAX", 200)  # 900 examples: little bootstraps
    base, cand = shuffled_pair(tmp_path)
    if order in ("same", "split"):  # in the baseline's order; "same": co-partitioned too
        pq.write_table(pq.read_table(cand).sort_by("id"), tmp_path / "same.parquet",
                       row_group_size=64 if order == "same" else 50)
        cand = tmp_path / "same.parquet"
    if order == "neither":  # the baseline in an order of its own
        table = pq.read_table(base)
        pq.write_table(table.take(np.random.default_rng(5).permutation(table.num_rows)),
                       tmp_path / "base_shuffled.parquet", row_group_size=64)
        base = tmp_path / "base_shuffled.parquet"
    held, subsets, taken = [], [], []
    build = comparison.build_comparison
    rows_held, take = orderstats.HeldRows.held, orderstats.HeldRows.take

    def watched_build(runs, *args, **kwargs):
        held.extend(run.examples is None for run in runs)
        return build(runs, *args, **kwargs)

    def watched_held(self, index, keys=None):
        subsets.append(len(index))
        return rows_held(self, index, keys)

    def watched_take(self, index, keys=None):
        taken.append(len(index))
        return take(self, index, keys)

    as_written, keys_read = [], []
    aligned_as_written, read_keys = api.aligned_as_written, cluster.DaskEngine.read_keys

    def watched_aligned(*args):
        alignment = aligned_as_written(*args)
        as_written.append(alignment is not None)
        return alignment

    def watched_read_keys(self, layout, options):
        keys_read.append(layout.path)
        return read_keys(self, layout, options)

    monkeypatch.setattr(comparison, "build_comparison", watched_build)
    monkeypatch.setattr(orderstats.HeldRows, "held", watched_held)
    monkeypatch.setattr(orderstats.HeldRows, "take", watched_take)
    monkeypatch.setattr(api, "aligned_as_written", watched_aligned)
    monkeypatch.setattr(cluster.DaskEngine, "read_keys", watched_read_keys)
    local, dask = both_comparisons([base, cand], scheduler)
    assert dask == local
    assert as_written == [True] and not keys_read
    assert held == [False, False, True, True]  # the local engine's runs, then the cluster's
    plan = paired.BootstrapPlan(900, 200, 0)
    assert plan.little and subsets == [plan.size] * (2 * plan.subsets) and not taken
    assert local["comparisons"][0]["deltas"]["ece"]["method"].startswith("bag of little")


@pytest.mark.parametrize("order", ["same", "shuffled"])
@pytest.mark.parametrize("little", [False, True])
def test_a_clustered_pair_stays_on_the_workers(tmp_path, scheduler, monkeypatch, order,
                                               little):
    """Clustered examples (--cluster) of a pair held by the workers: lined up from digests
    of ids, labels and clusters, each part's clusters numbered there, the clustered sums
    and each subset of clusters (little bootstraps of 150 clusters) measured there; every
    number is the local engine's."""
    from metricdiff import api, comparison, paired

    if little:
        monkeypatch.setattr(paired, "FULL_BOOTSTRAP_MAX", 100)
    base, cand = shuffled_pair(tmp_path, clusters=True)
    if order == "same":
        pq.write_table(pq.read_table(cand).sort_by("id"), tmp_path / "same.parquet",
                       row_group_size=50)
        cand = tmp_path / "same.parquet"
    held, as_written = [], []
    build, aligned_as_written = comparison.build_comparison, api.aligned_as_written

    def watched_build(runs, *args, **kwargs):
        held.extend(run.examples is None and run.clusters is None for run in runs)
        return build(runs, *args, **kwargs)

    def watched_aligned(*args):
        alignment = aligned_as_written(*args)
        as_written.append(alignment is not None)
        return alignment

    monkeypatch.setattr(comparison, "build_comparison", watched_build)
    monkeypatch.setattr(api, "aligned_as_written", watched_aligned)
    local, dask = both_comparisons([base, cand], scheduler, cluster="video")
    assert dask == local
    assert held == [False, False, True, True] and as_written == [True]
    pair = local["comparisons"][0]
    assert pair["clusters"]["count"] == 150
    assert ("little" in pair["deltas"]["ece"]["method"]) == little


def test_runs_that_disagree_on_a_cluster_give_the_local_error(tmp_path, scheduler):
    """A candidate in the baseline's order but for one example's cluster: its digests
    differ, so it is lined up from its keys, and the error is the local engine's."""
    base, _ = shuffled_pair(tmp_path, clusters=True)
    table = pq.read_table(base)
    video = table.column("video").to_pylist()
    video[10] = video[10] + 1
    pq.write_table(table.set_column(table.schema.get_field_index("video"), "video",
                                    pa.array(video)), tmp_path / "moved.parquet",
                   row_group_size=64)
    with pytest.raises(InputError) as local:
        metricdiff.compare(str(base), str(tmp_path / "moved.parquet"), cluster="video")
    with pytest.raises(InputError) as dask:
        metricdiff.compare(str(base), str(tmp_path / "moved.parquet"), cluster="video",
                           engine="dask", scheduler=scheduler)
    assert str(dask.value) == str(local.value)
    assert "another cluster" in str(local.value)


@pytest.mark.parametrize("little", [False, True])
def test_a_pair_compared_on_its_common_examples_stays_on_the_workers(tmp_path, scheduler,
                                                                     monkeypatch, little):
    """--allow-partial: the runs are lined up on the workers (their ids shuffled by Dask,
    no id comes here), and their columns stay there: each run's metrics from its common
    rows, part by part, the pair's sums from Dask's join on id, the subsets found by id;
    every number is the local engine's."""
    from metricdiff import comparison, paired

    if little:
        monkeypatch.setattr(paired, "FULL_BOOTSTRAP_MAX", 200)
    base, cand = shuffled_pair(tmp_path)
    pq.write_table(pq.read_table(cand).slice(0, 700), tmp_path / "part.parquet",
                   row_group_size=64)
    held = []
    build = comparison.build_comparison

    def watched_build(runs, *args, **kwargs):
        held.extend(run.examples is None for run in runs)
        return build(runs, *args, **kwargs)

    monkeypatch.setattr(comparison, "build_comparison", watched_build)
    lining_up = watched_lining_up(monkeypatch)
    local, dask = both_comparisons([base, tmp_path / "part.parquet"], scheduler,
                                   allow_partial=True, by=["source"])
    assert dask == local
    assert held == [False, False, True, True] and lining_up == ["common"]
    assert local["alignment"]["n"] == 700
    assert local["alignment"]["dropped"] == {"base0": 200, "part": 0}
    assert ("little" in local["comparisons"][0]["deltas"]["ece"]["method"]) == little


def test_two_whole_runs_are_compared_on_the_examples_every_run_holds(tmp_path, scheduler,
                                                                     monkeypatch):
    """Three runs, the third holding part of the examples (--allow-partial): the two whole
    runs, co-partitioned, are still compared on the common examples alone (their join with
    the third run's keys), as the local engine compares them."""
    base, cand = shuffled_pair(tmp_path)
    pq.write_table(pq.read_table(cand).sort_by("id"), tmp_path / "same.parquet",
                   row_group_size=64)
    _, other = shuffled_pair(tmp_path, seed=1)  # another model: no tie for the best run
    pq.write_table(pq.read_table(other).slice(0, 700), tmp_path / "part.parquet",
                   row_group_size=64)
    lining_up = watched_lining_up(monkeypatch)
    local, dask = both_comparisons([base, tmp_path / "same.parquet", tmp_path / "part.parquet"],
                                   scheduler, allow_partial=True)
    assert dask == local and lining_up == ["common"]
    first = local["comparisons"][0]
    assert local["alignment"]["n"] == 700
    assert sum(row["count"] for row in first["explanation"]["nll_by_flip"]) == 700


@pytest.mark.parametrize("little", [False, True])
def test_clustered_runs_compared_on_their_common_examples_stay_on_the_workers(
        tmp_path, scheduler, monkeypatch, little):
    """--cluster with --allow-partial: the runs are lined up on the workers; their
    clusters are numbered, checked against the baseline's (joined on id) and resampled
    there, each part's kept rows alone; every number is the local engine's."""
    from metricdiff import comparison, paired

    if little:
        monkeypatch.setattr(paired, "FULL_BOOTSTRAP_MAX", 60)  # 117 clusters: little ones
    base, cand = shuffled_pair(tmp_path, clusters=True)
    table = pq.read_table(cand)
    pq.write_table(table.slice(0, 700), tmp_path / "part.parquet", row_group_size=64)
    held = []
    build = comparison.build_comparison

    def watched_build(runs, *args, **kwargs):
        held.extend(run.examples is None and run.clusters is None for run in runs)
        return build(runs, *args, **kwargs)

    monkeypatch.setattr(comparison, "build_comparison", watched_build)
    lining_up = watched_lining_up(monkeypatch)
    local, dask = both_comparisons([base, tmp_path / "part.parquet"], scheduler,
                                   cluster="video", allow_partial=True, by=["source"])
    assert dask == local and lining_up == ["common"]
    assert held == [False, False, True, True]
    assert local["alignment"]["n"] == 700
    first = local["comparisons"][0]
    # the clusters of the common examples alone
    assert first["clusters"]["count"] == len(np.unique(table.column("id").to_numpy()[:700] // 6))
    assert ("little" in first["deltas"]["ece"]["method"]) == little


def test_partial_runs_that_disagree_on_a_cluster_give_the_local_error(tmp_path, scheduler):
    base, cand = shuffled_pair(tmp_path, clusters=True)
    table = pq.read_table(cand).slice(0, 700)
    video = table.column("video").to_numpy().copy()
    video[:3] += 1000
    table = table.set_column(table.schema.get_field_index("video"), "video", pa.array(video))
    pq.write_table(table, tmp_path / "part.parquet", row_group_size=64)
    paths = [str(base), str(tmp_path / "part.parquet")]
    with pytest.raises(InputError) as local:
        metricdiff.compare(*paths, cluster="video", allow_partial=True, resamples=0)
    with pytest.raises(InputError) as dask:
        metricdiff.compare(*paths, cluster="video", allow_partial=True, resamples=0,
                           engine="dask", scheduler=scheduler)
    assert str(dask.value) == str(local.value)
    assert "3 examples are in another cluster" in str(local.value)


def test_partial_runs_that_cannot_be_lined_up_give_the_local_errors(tmp_path, scheduler,
                                                                   monkeypatch):
    """--allow-partial on the workers has the local engine's errors, word for word: ids in
    two rows (seven of them, quoted in the order of their second rows, which is not the
    order of id), labels that differ (quoted smallest id first), no id in every run."""
    base, cand = shuffled_pair(tmp_path)
    table = pq.read_table(cand).slice(0, 700)
    ids = table.column("id").to_numpy().copy()
    rows = np.array([650, 40, 333, 500, 12, 699, 201])  # each takes the id of the row before
    ids[rows] = ids[rows - 1]
    pq.write_table(table.set_column(0, "id", pa.array(ids)), tmp_path / "dup.parquet",
                   row_group_size=64)
    labels = table.column("label").to_numpy().copy()
    labels[[600, 3, 90, 420, 77, 10, 250]] += 1
    labels %= 12
    pq.write_table(table.set_column(table.schema.get_field_index("label"), "label",
                                    pa.array(labels)), tmp_path / "relabelled.parquet",
                   row_group_size=64)
    elsewhere = pq.read_table(base)
    pq.write_table(elsewhere.set_column(0, "id", pa.array(
        elsewhere.column("id").to_numpy() + 10_000)), tmp_path / "elsewhere.parquet",
        row_group_size=64)
    lining_up = watched_lining_up(monkeypatch)
    expected = {"dup.parquet": "7 ids appear more than once",
                "relabelled.parquet": "7 examples have a different label",
                "elsewhere.parquet": "no id is common"}
    for name, words in expected.items():
        paths = [str(base), str(tmp_path / name)]
        with pytest.raises(InputError) as local:
            metricdiff.compare(*paths, allow_partial=True, resamples=0)
        with pytest.raises(InputError) as dask:
            metricdiff.compare(*paths, allow_partial=True, resamples=0, engine="dask",
                               scheduler=scheduler)
        assert str(dask.value) == str(local.value)
        assert words in str(local.value)
    assert lining_up == ["common"] * 3


@pytest.mark.parametrize("case", ["null_id", "int32_ids", "negative_ids", "uint64_ids",
                                  "string_labels", "empty_shard", "one_common"])
def test_partial_runs_of_odd_keys_are_the_local_engines(tmp_path, scheduler, monkeypatch, case):
    """Odd keys through the workers' lining up (--allow-partial): a null id (the local
    one-line error), ids of another integer type in each run, negative ids, uint64 ids,
    text labels, a shard of no rows, a single id in common. The same document as the local
    engine, or the same error."""
    n, k = 300, 12
    logits, labels = random_logits(n, k, seed=3)
    other, _ = random_logits(n, k, seed=4)
    ids = np.arange(n, dtype=np.int64) * 3 + 1
    names = [f"c{c}" for c in range(k)]
    rows = np.arange(n)[::-1][40:]  # the candidate: the baseline's rows but 40, reversed
    base_ids, cand_ids = ids, ids[rows]
    base_labels, cand_labels = labels, labels[rows]
    if case == "int32_ids":
        cand_ids = cand_ids.astype(np.int32)
    if case == "negative_ids":
        base_ids, cand_ids = base_ids - 500, cand_ids - 500
    if case == "uint64_ids":
        base_ids, cand_ids = base_ids.astype(np.uint64), cand_ids.astype(np.uint64)
    if case == "string_labels":
        base_labels = [names[y] for y in labels]
        cand_labels = [names[y] for y in labels[rows]]
    base = write_run(tmp_path / "base.parquet", base_labels, logits=logits, ids=base_ids,
                     class_names=names if case == "string_labels" else None)
    cand_path = tmp_path / "cand.parquet"
    if case == "null_id":
        cand_ids = [None if i == 7 else int(v) for i, v in enumerate(cand_ids)]
    if case == "one_common":
        cand_ids = np.where(np.arange(len(rows)) == 5, cand_ids, cand_ids + 10_000_000)
    cand = write_run(cand_path if case != "empty_shard" else tmp_path / "shards",
                     cand_labels, logits=other[rows], ids=cand_ids,
                     class_names=names if case == "string_labels" else None,
                     shards=3 if case == "empty_shard" else 1)
    if case == "empty_shard":
        table = pq.read_table(cand / "part-000.parquet")
        pq.write_table(table.slice(0, 0), cand / "part-000a.parquet")
    paths = [str(base), str(cand)]
    lining_up = watched_lining_up(monkeypatch)
    try:
        local = to_rounding(metricdiff.compare(*paths, allow_partial=True,
                                               resamples=100).to_dict())
    except InputError as error:
        with pytest.raises(InputError) as dask:
            metricdiff.compare(*paths, allow_partial=True, resamples=100, engine="dask",
                               scheduler=scheduler)
        assert str(dask.value) == str(error) and case == "null_id"
        return
    dask_doc = to_rounding(metricdiff.compare(*paths, allow_partial=True, resamples=100,
                                              engine="dask", scheduler=scheduler).to_dict())
    assert dask_doc == local
    assert local["alignment"]["n"] == (1 if case == "one_common" else n - 40)
    assert lining_up == ["common"]


@pytest.mark.parametrize("case", ["shuffled", "same", "paired_clustered", "partial"])
def test_groups_of_seeds_stay_on_the_workers(tmp_path, scheduler, monkeypatch, case):
    """Two groups of seed runs held by the workers: the seeds x examples tests, the class
    tests and the groups' per-example means behind the ranked lists are summed there
    (co-partitioned runs part by part, others joined on id by Dask); no run's columns come
    to the client, and every number is the local engine's."""
    from metricdiff import comparison, paired

    runs = [shuffled_pair(tmp_path, seed=10 * seed, clusters=True) for seed in range(4)]
    paths = [runs[0][0], runs[1][0], runs[2][1], runs[3][1]]
    options: dict = {"names": ["main", "main", "pr", "pr"], "by": ["source"]}
    if case == "same":  # every run in order of id, cut into the same row groups
        for i in (2, 3):
            pq.write_table(pq.read_table(paths[i]).sort_by("id"), tmp_path / f"same{i}.parquet",
                           row_group_size=64)
            paths[i] = tmp_path / f"same{i}.parquet"
    if case == "paired_clustered":
        monkeypatch.setattr(paired, "FULL_BOOTSTRAP_MAX", 100)  # 150 clusters: little ones
        options |= {"paired_seeds": True, "cluster": "video"}
    if case == "partial":
        pq.write_table(pq.read_table(paths[3]).slice(0, 700), tmp_path / "part.parquet",
                       row_group_size=64)
        paths[3] = tmp_path / "part.parquet"
        options |= {"allow_partial": True}
    held, summed = [], []
    build = comparison.build_comparison
    held_sums, joined_sums = comparison.held_group_sums, comparison.joined_group_sums

    def watched_build(runs, *args, **kwargs):
        held.extend(run.examples is None and run.clusters is None for run in runs)
        return build(runs, *args, **kwargs)

    def watched_held(*args, **kwargs):
        found = held_sums(*args, **kwargs)
        summed.append("part by part" if found is not None else "other parts")
        return found

    def watched_joined(*args, **kwargs):
        summed.append("joined")
        return joined_sums(*args, **kwargs)

    monkeypatch.setattr(comparison, "build_comparison", watched_build)
    monkeypatch.setattr(comparison, "held_group_sums", watched_held)
    monkeypatch.setattr(comparison, "joined_group_sums", watched_joined)
    lining_up = watched_lining_up(monkeypatch)
    local, dask = both_comparisons(paths, scheduler, **options)
    assert dask == local
    assert lining_up == (["common"] if case == "partial" else [])
    assert held == [False] * 4 + [True] * 4
    assert summed == {"same": ["part by part"], "shuffled": ["other parts", "joined"],
                      "paired_clustered": ["other parts", "joined"],
                      "partial": ["joined"]}[case]
    comparison_ = local["comparisons"][0]
    assert comparison_["runs"]["candidate"] and comparison_["ranked"]["slices"]["source"]
    assert comparison_["deltas"]["nll"]["noise"][-1] == "seeds"
    if case == "partial":
        assert local["alignment"]["n"] == 700


def test_worker_killed_mid_run_gives_the_same_numbers(tmp_path, predictions):
    """A worker process killed while it reduces a partition: Dask runs its tasks again on a
    worker that is alive (the nanny starts a new one), and nothing is counted twice."""
    logits, labels = random_logits(6000, 12, seed=5)
    path = write_run(tmp_path / "big.parquet", labels, logits=logits, ids=np.arange(6000))
    local = to_rounding(metricdiff.report(str(path)).to_dict())
    with local_cluster(2) as two, \
            distributed.Client(two, set_as_default=False) as client:
        pids = set(client.run(os.getpid).values())
        killed = []

        def kill_one(name, rows_done, rows_total):
            if not killed:
                assert rows_done < rows_total  # the run is not over yet
                victim = sorted(pids)[0]
                os.kill(victim, signal.SIGKILL)
                killed.append((victim, rows_done))

        engine = cluster.DaskEngine(client, partition_values=64 * 12)
        data = load_run(str(path), name="big", engine=engine, progress=kill_one,
                        classwise=ClasswisePlan(15), summary=SummaryPlan.of(MetricSettings()))
        assert killed
        after = set(client.run(os.getpid).values())
        assert killed[0][0] not in after
        assert len(data.examples) == 6000
        assert data.sums is not None and data.sums.means.n == 6000  # each part merged once
        assert to_rounding(build_report(data, MetricSettings()).to_dict()) == local
        # a worker lost after the read takes the parts it held: Dask reads them again
        os.kill(sorted(after)[0], signal.SIGKILL)
        assert to_rounding(build_report(data, MetricSettings()).to_dict()) == local


def test_the_order_statistics_run_on_the_parts_the_workers_hold(tmp_path, scheduler,
                                                                 predictions):
    """Equal-mass bins, the smooth ECE's grids, the selective-prediction metrics and the
    curves (the rows moved into ranges of confidence by Dask's shuffle), the loss anatomy, the
    slices' tables and the class groups' table come from the partitions the workers keep:
    the run's gathered columns, changed on the client, change none of them, and they are the
    local engine's."""
    logits, labels = predictions
    path = write_layout(tmp_path, "shards", logits, labels)
    settings = MetricSettings()
    read = ReadOptions(slice_cols=("source",))
    local_run = load_run(str(path), options=read, summary=SummaryPlan.of(settings))
    local = build_report(local_run, settings)
    with distributed.Client(scheduler, set_as_default=False) as client:
        data = load_run(str(path), options=read,
                        engine=cluster.DaskEngine(client, SMALL_PARTITIONS),
                        summary=SummaryPlan.of(settings))
        assert isinstance(data.parts, cluster.ClusterParts) and len(data.parts.futures) >= 3
        data.examples.conf[:] = 0.5  # what the client holds is not what is read
        data.examples.nll[:] = 1.0
        report = build_report(data, settings)
    for name in ("ece_adaptive", "rmsce_debiased", "smooth_ece", "auroc", "aurc",
                 "risk_at_80", "risk_at_90", "risk_at_95"):
        assert Close(report.metrics[name]) == local.metrics[name], name
    assert to_rounding(report.class_groups) == to_rounding(local.class_groups)
    assert to_rounding(report.curves) == to_rounding(local.curves)
    assert local.slices and to_rounding(report.slices) == to_rounding(local.slices)
    assert to_rounding(report.loss_anatomy) == to_rounding(local.loss_anatomy)


@pytest.mark.parametrize("layout", ["shards", "topk"])
def test_the_workers_sums_are_those_of_the_local_pass(tmp_path, scheduler, predictions, layout):
    """The RunSums each task gathers, merged on the client, are the local pass's and those of
    the gathered columns, to the rounding of a sum; a top-k run's class counts, each part
    as long as its largest class, are padded to the run's classes."""
    logits, labels = predictions
    path = write_layout(tmp_path, layout, logits, labels)
    plan = SummaryPlan.of(MetricSettings())
    with distributed.Client(scheduler, set_as_default=False) as client:
        engine = cluster.DaskEngine(client, SMALL_PARTITIONS)
        on_workers = load_run(str(path), engine=engine, summary=plan)
    assert len(cluster.partitions(inspect_run(str(path), ReadOptions()), SMALL_PARTITIONS)) >= 3
    local = load_run(str(path), summary=plan)
    columns = RunSums.of(on_workers.examples, plan, on_workers.num_classes)
    for sums in (local.sums, columns):
        assert on_workers.sums is not None and sums is not None
        for name in ("means", "bins", "bins_calibrated", "classes"):
            ours, theirs = vars(getattr(on_workers.sums, name)), vars(getattr(sums, name))
            assert to_rounding({k: np.asarray(v).tolist() for k, v in ours.items()}) == \
                to_rounding({k: np.asarray(v).tolist() for k, v in theirs.items()}), name


def bad_shard_folder(tmp_path):
    logits, labels = random_logits(600, 12, seed=3)
    logits[450, 4] = np.nan  # in the third shard
    return write_run(tmp_path / "shards", labels, logits=logits, shards=3, row_group_size=50)


def test_a_bad_shard_is_the_local_engines_one_line_error(tmp_path, scheduler):
    folder = bad_shard_folder(tmp_path)
    with pytest.raises(InputError) as local:
        metricdiff.report(str(folder))
    with pytest.raises(InputError) as dask:
        metricdiff.report(str(folder), engine="dask", scheduler=scheduler)
    assert str(dask.value) == str(local.value)
    assert (dask.value.path, dask.value.row) == (local.value.path, local.value.row)
    assert "part-002" in str(dask.value) and "row 450" in str(dask.value)


def test_cli_engine_dask(tmp_path, scheduler):
    base, cand = shuffled_pair(tmp_path)
    runner = CliRunner()
    local = runner.invoke(app, ["compare", str(base), str(cand), "-f", "json",
                                "--resamples", "200"])
    dask = runner.invoke(app, ["compare", str(base), str(cand), "-f", "json",
                               "--resamples", "200", "--engine", "dask",
                               "--scheduler", scheduler])
    assert (dask.exit_code, local.exit_code) == (0, 0)
    assert to_rounding(json.loads(dask.stdout)) == to_rounding(json.loads(local.stdout))
    bad = runner.invoke(app, ["report", str(bad_shard_folder(tmp_path)), "--engine", "dask",
                              "--scheduler", scheduler])
    assert bad.exit_code == 2
    assert len(bad.stderr.strip().splitlines()) == 1 and "part-002" in bad.stderr


def test_cli_engine_errors_are_one_line(tmp_path, monkeypatch):
    path = write_run(tmp_path / "r.parquet", [0, 1], logits=np.eye(2))
    runner = CliRunner()
    alone = runner.invoke(app, ["report", str(path), "--scheduler", "tcp://127.0.0.1:1"])
    assert alone.exit_code == 2 and "needs --engine dask" in alone.stderr
    monkeypatch.setattr(cluster, "CONNECT_SECONDS", 1)
    with socket_free_port() as port:
        unreachable = runner.invoke(app, ["report", str(path), "--engine", "dask",
                                          "--scheduler", f"tcp://127.0.0.1:{port}"])
    assert unreachable.exit_code == 2
    assert len(unreachable.stderr.strip().splitlines()) == 1
    assert "cannot reach the Dask scheduler" in unreachable.stderr


class socket_free_port:
    """A loopback port nothing listens on, for as long as the block runs."""

    def __enter__(self) -> int:
        import socket

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))  # bound, not listening: connections are refused
        return self.sock.getsockname()[1]

    def __exit__(self, *exc) -> None:
        self.sock.close()


def test_a_stopped_read_cancels_the_clusters_tasks(tmp_path, dask_cluster):
    """Ctrl-C (or another run's failure) sets the read's stop event: the client stops waiting
    and cancels what the cluster still has to do."""
    logits, labels = random_logits(6000, 12, seed=6)
    path = write_run(tmp_path / "big.parquet", labels, logits=logits)
    layout = inspect_run(str(path))
    stop = threading.Event()

    def stop_after_first(name, rows_done, rows_total):
        stop.set()

    with distributed.Client(dask_cluster, set_as_default=False) as client:
        engine = cluster.DaskEngine(client, partition_values=64 * 12)
        with pytest.raises(KeyboardInterrupt):
            engine.reduce_run(layout, ReadOptions(), Scoring(None, None, None, None), "run",
                              stop_after_first, stop)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and client.run_on_scheduler(
                lambda dask_scheduler: len(dask_scheduler.tasks)):
            time.sleep(0.1)
        assert client.run_on_scheduler(lambda dask_scheduler: len(dask_scheduler.tasks)) == 0


def test_a_stopped_lining_up_leaves_no_task_on_the_cluster(tmp_path, dask_cluster):
    """Ctrl-C while the workers line runs up on their common ids (their shuffles by id):
    the client stops waiting, and the cluster forgets every task of it."""
    logits, labels = random_logits(6000, 12, seed=6)
    ids = np.arange(6000)
    paths = [write_run(tmp_path / "whole.parquet", labels, logits=logits, ids=ids),
             write_run(tmp_path / "part.parquet", labels[:5000], logits=logits[:5000],
                       ids=ids[:5000])]
    layouts = [inspect_run(str(path)) for path in paths]
    stop = threading.Event()
    stop.set()
    with distributed.Client(dask_cluster, set_as_default=False) as client:
        engine = cluster.DaskEngine(client, partition_values=64 * 12)
        with pytest.raises(KeyboardInterrupt):
            engine.common_ids(layouts, ReadOptions(), stop)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and client.run_on_scheduler(
                lambda dask_scheduler: len(dask_scheduler.tasks)):
            time.sleep(0.1)
        assert client.run_on_scheduler(lambda dask_scheduler: len(dask_scheduler.tasks)) == 0


def test_partitions_cover_every_row_once_in_order(tmp_path):
    logits, labels = random_logits(1000, 12, seed=8)
    folder = write_run(tmp_path / "shards", labels, logits=logits, shards=3, row_group_size=37)
    layout = inspect_run(str(folder))
    for values in (1, 12 * 37, 12 * 100, 1 << 30):
        parts = cluster.partitions(layout, values)
        starts = [p.first_row for p in parts]
        assert starts == sorted(starts) and starts[0] == 0
        assert sum(p.rows for p in parts) == 1000
        for a, b in zip(parts, parts[1:]):
            assert a.first_row + a.rows == b.first_row
    assert len(cluster.partitions(layout, 1)) == sum(len(g) for g in layout.group_rows)
    assert len(cluster.partitions(layout, 1 << 30)) == 3  # one per file


def test_rows_in_another_order_give_the_same_comparison(tmp_path):
    """The resamples are drawn over examples in order of id, so a comparison of the same
    examples read in other row orders (or other shard splits) is the same, intervals and
    verdicts included."""
    n, k = 3000, 12
    _, labels = random_logits(n, k, seed=0)
    rng = np.random.default_rng(4)
    ids = np.arange(n) * 7 + 3
    logits = [rng.normal(scale=1.5, size=(n, k)).astype(np.float32) for _ in range(2)]
    for shift, scores in zip((2.0, 2.3), logits):
        scores[np.arange(n), labels] += shift
    documents = []
    for name, order in (("sorted", np.arange(n)), ("shuffled", rng.permutation(n))):
        other = rng.permutation(n) if name == "shuffled" else order
        paths = [write_run(tmp_path / f"{name}{i}.parquet", labels[o], logits=scores[o],
                           ids=ids[o], row_group_size=100 + 37 * i)
                 for i, (scores, o) in enumerate(zip(logits, (order, other)))]
        result = metricdiff.compare(*map(str, paths), names=["base", "cand"], resamples=300)
        documents.append(to_rounding(without_paths(result.to_dict())))
    assert documents[0] == documents[1]
    assert documents[0]["comparisons"][0]["verdict"]["decision"] == "better"


def test_one_worker_or_two_give_the_same_numbers(tmp_path, scheduler):
    base, cand = shuffled_pair(tmp_path, clusters=True)
    on_two = to_rounding(metricdiff.compare(str(base), str(cand), cluster="video", resamples=200,
                                        engine="dask", scheduler=scheduler).to_dict())
    with local_cluster(1) as one:
        on_one = to_rounding(metricdiff.compare(str(base), str(cand), cluster="video",
                                            resamples=200, engine="dask",
                                            scheduler=one.scheduler_address).to_dict())
    assert on_one == on_two


def test_keys_read_on_the_workers_give_the_local_errors(tmp_path, scheduler):
    """Ids and labels are read by the workers too: a run that cannot be lined up, or a
    shard with a null id, fails with the local engine's one-line error; so does a run
    written like the baseline but for one label (its digests differ)."""
    base, cand = shuffled_pair(tmp_path)
    written = pq.read_table(base)
    labels = written.column("label").to_numpy().copy()
    labels[800] = (labels[800] + 1) % 12
    pq.write_table(written.set_column(written.schema.get_field_index("label"), "label",
                                      pa.array(labels)), tmp_path / "relabelled.parquet",
                   row_group_size=64)
    table = pq.read_table(cand)
    ids = table.column("id").to_numpy().copy()
    ids[5] = ids[6]  # a repeated id
    pq.write_table(table.set_column(0, "id", pa.array(ids)), tmp_path / "dup.parquet",
                   row_group_size=64)
    nulls = pa.array([None if i == 700 else int(v) for i, v in enumerate(ids)],
                     type=pa.int64())
    folder = tmp_path / "nulls"
    folder.mkdir()
    with_null = table.set_column(0, "id", nulls)
    pq.write_table(with_null.slice(0, 450), folder / "part-0.parquet", row_group_size=64)
    pq.write_table(with_null.slice(450), folder / "part-1.parquet", row_group_size=64)
    # the same repeated id in two runs in no order of id: their digests agree, and the
    # workers' check for repeated ids sends them to be lined up here, with the message
    pq.write_table(table.set_column(0, "id", pa.array(ids)).take(
        np.random.default_rng(2).permutation(table.num_rows)), tmp_path / "dup2.parquet",
        row_group_size=64)
    pairs = [(base, tmp_path / "dup.parquet"), (base, folder),
             (base, tmp_path / "relabelled.parquet"),
             (tmp_path / "dup.parquet", tmp_path / "dup2.parquet")]
    for first, other in pairs:
        with pytest.raises(InputError) as local:
            metricdiff.compare(str(first), str(other))
        with pytest.raises(InputError) as dask:
            metricdiff.compare(str(first), str(other), engine="dask", scheduler=scheduler)
        assert str(dask.value) == str(local.value)
    assert "appear more than once" in str(local.value)


def test_series_of_checkpoints(scheduler):
    """`series` reads its checkpoints on the cluster too (the committed sample series)."""
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent / "sample_runs" / "series"
    wide, narrow = str(root / "wide" / "epoch*.parquet"), str(root / "narrow" / "epoch*.parquet")
    local = metricdiff.series(wide, narrow, names=["wide", "narrow"], resamples=200).to_dict()
    dask = metricdiff.series(wide, narrow, names=["wide", "narrow"], resamples=200,
                             engine="dask", scheduler=scheduler).to_dict()
    assert to_rounding(dask) == to_rounding(local)


@pytest.mark.parametrize("layout", ["shards", "topk"])
def test_a_report_on_a_cluster_brings_no_column_to_the_client(tmp_path, scheduler,
                                                              predictions, layout):
    """report's read leaves every per-example column on the workers: the client holds the
    run's sums and its parts' futures, and the report is the local engine's."""
    logits, labels = predictions
    path = write_layout(tmp_path, layout, logits, labels)
    settings = MetricSettings()
    read = ReadOptions(slice_cols=() if layout == "topk" else ("source",))
    local = build_report(load_run(str(path), options=read, summary=SummaryPlan.of(settings)),
                         settings)
    with distributed.Client(scheduler, set_as_default=False) as client:
        data = load_run(str(path), options=read,
                        engine=cluster.DaskEngine(client, SMALL_PARTITIONS),
                        summary=SummaryPlan.of(settings), columns=False)
        assert data.examples is None and data.ids is None and not data.slices
        assert data.n == len(labels)
        report = build_report(data, settings)
    assert to_rounding(without_paths(report.to_dict())) == \
        to_rounding(without_paths(local.to_dict()))


@pytest.mark.parametrize("order", ["co-partitioned", "shuffled"])
def test_a_pair_is_measured_where_its_partitions_are(tmp_path, scheduler, predictions, order):
    """Two runs cut into the same partitions of the same examples are paired partition by
    partition on the workers; a run written in another row order is joined to the other on
    its ids by Dask's shuffle. Either way the paired tests, the explanation, the ranked lists
    and the per-class tests come from the workers' sums (the client's columns, changed,
    change none of them) and are the local engine's."""
    from metricdiff.comparison import CompareSettings, build_comparison

    logits, labels = predictions
    other = logits + np.random.default_rng(3).normal(scale=0.8, size=logits.shape)
    paths = []
    for name, values in (("a", logits), ("b", other)):
        (tmp_path / name).mkdir()
        paths.append(str(write_layout(tmp_path / name, "shards", values, labels)))
    if order == "shuffled":  # the candidate's rows in another order, in other shards
        table = pq.read_table(pq.ParquetDataset(paths[1]).files)
        table = table.take(np.random.default_rng(5).permutation(table.num_rows))
        paths[1] = str(tmp_path / "b_shuffled.parquet")
        pq.write_table(table, paths[1], row_group_size=70)
    read = ReadOptions(slice_cols=("source",))
    settings, metric_settings = CompareSettings(resamples=0), MetricSettings()
    plan = SummaryPlan.of(metric_settings)
    local = build_comparison([load_run(p, options=read, summary=plan) for p in paths],
                             settings, metric_settings).to_dict()
    with distributed.Client(scheduler, set_as_default=False) as client:
        engine = cluster.DaskEngine(client, SMALL_PARTITIONS)
        runs = [load_run(p, options=read, engine=engine, summary=plan) for p in paths]
        for run in runs:  # what the client holds is not what is read
            run.columns.nll[:] = 1.0
            run.columns.conf[:] = 0.5
        held = build_comparison(runs, settings, metric_settings).to_dict()
    mine, theirs = held["comparisons"][0], local["comparisons"][0]
    for name in ("nll", "accuracy", "brier", "nll_calibrated"):
        assert to_rounding(mine["deltas"][name]) == to_rounding(theirs["deltas"][name]), name
    for part in ("nll_by_flip", "confidently_wrong", "class_groups"):
        assert to_rounding(mine["explanation"][part]) == \
            to_rounding(theirs["explanation"][part]), part
    assert to_rounding(mine["ranked"]) == to_rounding(theirs["ranked"])
    assert to_rounding(mine["class_changes"]) == to_rounding(theirs["class_changes"])
