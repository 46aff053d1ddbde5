"""Every input layout of the same predictions gives the same numbers; streaming never changes
one."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import metricdiff
from conftest import to_rounding, probs_of, random_logits, write_run

EXACT_FROM_TOPK = ["n", "nll", "accuracy", "top5_accuracy", "ece", "ece_adaptive", "mce",
                   "mean_confidence", "overconfidence", "balanced_accuracy", "macro_f1"]


def metrics_of(path, **kwargs) -> dict:
    return metricdiff.report(str(path), **kwargs).to_dict()["metrics"]


def sections(path, **kwargs) -> dict:
    """Everything a report measured, without the parts that name files."""
    document = to_rounding(metricdiff.report(str(path), **kwargs).to_dict())
    return {key: value for key, value in document.items() if key not in ("run",)}


@pytest.fixture(scope="module")
def predictions():
    return random_logits(700, 12, seed=11)


@pytest.mark.parametrize("list_kind", ["fixed", "list", "large"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_list_layouts_agree(tmp_path, predictions, list_kind, dtype):
    logits, labels = predictions
    reference = metrics_of(write_run(tmp_path / "ref.parquet", labels, logits=logits))
    path = write_run(tmp_path / "run.parquet", labels, logits=logits.astype(dtype),
                     list_kind=list_kind)
    for name, value in metrics_of(path).items():
        assert value == pytest.approx(reference[name], rel=1e-6, abs=1e-9), name


@pytest.mark.parametrize("list_type", [pa.list_, pa.large_list, "fixed"])
def test_list_values_of_a_slice_are_what_flatten_gives(list_type):
    """metricdiff reads a list column's values without flatten() (which imports
    pyarrow.compute); batches can be slices of a larger array, offsets included."""
    from metricdiff.io import _list_values

    values = pa.array(np.arange(24, dtype=np.float32))
    if list_type == "fixed":
        column = pa.FixedSizeListArray.from_arrays(values, 4)
    else:
        offsets = np.arange(0, 25, 4, dtype=np.int64 if list_type is pa.large_list else np.int32)
        column = pa.array(values.to_numpy().reshape(6, 4).tolist(), list_type(pa.float32()))
        assert np.array_equal(column.offsets.to_numpy(), offsets)
    for part in (column, column.slice(2, 3), column.slice(5, 1), column.slice(3, 0)):
        assert _list_values(part).equals(part.flatten()), (part.offset, len(part))


def test_probs_give_the_numbers_of_their_logits(tmp_path, predictions):
    logits, labels = predictions
    from_logits = metrics_of(write_run(tmp_path / "l.parquet", labels, logits=logits))
    from_probs = metrics_of(write_run(tmp_path / "p.parquet", labels, probs=probs_of(logits)))
    for name, value in from_logits.items():
        assert from_probs[name] == pytest.approx(value, rel=1e-6, abs=1e-9), name


def test_wide_columns_and_string_labels(tmp_path, predictions):
    logits, labels = predictions
    names = [f"class-{c}" for c in range(12)]
    reference = metrics_of(write_run(tmp_path / "ref.parquet", labels, logits=logits))
    wide = write_run(tmp_path / "wide.parquet", labels, logits=logits, wide=True,
                     class_names=names)
    string_labels = write_run(tmp_path / "str.parquet", [names[y] for y in labels],
                              logits=logits, class_names=names)
    wide_probs = write_run(tmp_path / "wideprobs.parquet", labels, probs=probs_of(logits),
                           wide=True)
    for path in (wide, string_labels, wide_probs):
        for name, value in metrics_of(path).items():
            assert value == pytest.approx(reference[name], rel=1e-6, abs=1e-9), (path, name)


def test_class_names_come_from_metadata_or_file(tmp_path, predictions):
    logits, labels = predictions
    names = [f"n{c}" for c in range(12)]
    with_meta = write_run(tmp_path / "meta.parquet", labels, logits=logits, class_names=names)
    rows = metricdiff.report(str(with_meta)).to_dict()["per_class"]["rows"]
    assert all(row["name"] == names[row["class"]] for row in rows)
    classes_file = tmp_path / "classes.txt"
    classes_file.write_text("\n".join(f"file{c}" for c in range(12)))
    rows = metricdiff.report(str(with_meta), classes_file=str(classes_file)).to_dict()
    assert all(r["name"] == f"file{r['class']}" for r in rows["per_class"]["rows"])


def test_float16_logits_are_read(tmp_path, predictions):
    logits, labels = predictions
    half = logits.astype(np.float16)
    result = metrics_of(write_run(tmp_path / "h.parquet", labels, logits=half))
    reference = metrics_of(write_run(tmp_path / "r.parquet", labels,
                                     logits=half.astype(np.float64)))
    for name, value in reference.items():
        assert result[name] == pytest.approx(value, rel=1e-6, abs=1e-9), name


def test_custom_column_names(tmp_path, predictions):
    logits, labels = predictions
    reference = metrics_of(write_run(tmp_path / "ref.parquet", labels, logits=logits))
    path = write_run(tmp_path / "custom.parquet", labels, logits=logits, label_col="target",
                     pred_col="scores")
    result = metrics_of(path, label_col="target", pred_col="scores", pred_kind="logits")
    assert result == reference


def write_topk(path, logits, labels, k):
    logprobs = np.log(probs_of(logits))
    order = np.argsort(-logprobs, axis=1, kind="stable")[:, :k]
    top = np.take_along_axis(logprobs, order, axis=1)
    table = pa.table({
        "label": labels,
        "topk_ids": pa.FixedSizeListArray.from_arrays(pa.array(order.ravel().astype(np.int64)), k),
        "topk_logprobs": pa.FixedSizeListArray.from_arrays(pa.array(top.ravel()), k),
        "label_logprob": logprobs[np.arange(len(labels)), labels],
    }).replace_schema_metadata({b"metricdiff.classes":
                                json.dumps([str(c) for c in range(logits.shape[1])]).encode()})
    pq.write_table(table, path, row_group_size=64)
    return path


def test_topk_run_is_exact_where_it_can_be_and_unavailable_elsewhere(tmp_path, predictions):
    logits, labels = predictions
    full = metrics_of(write_run(tmp_path / "full.parquet", labels,
                                logits=logits.astype(np.float64)))
    document = metricdiff.report(str(write_topk(tmp_path / "topk.parquet", logits, labels,
                                                5))).to_dict()
    for name in EXACT_FROM_TOPK:
        assert document["metrics"][name] == pytest.approx(full[name], rel=1e-9, abs=1e-12), name
    for name in ("brier", "mean_entropy", "temperature", "nll_calibrated", "ece_calibrated",
                 "classwise_ece", "brier_reliability", "brier_resolution"):
        assert document["metrics"][name] is None
        assert name in document["unavailable"]
    wider = metricdiff.report(str(tmp_path / "topk.parquet"), top_k=10).to_dict()
    assert wider["metrics"]["top10_accuracy"] is None
    assert "top 5" in wider["unavailable"]["top10_accuracy"]


def test_topk_batches_hold_batch_values_over_k_rows(tmp_path, predictions):
    """A top-k run's batches are sized by the 2k values it lists per row (ids and
    log-probabilities), not by its K (the vocabulary of a language model: 50,000 classes
    would make batches of 83 rows)."""
    from metricdiff.io import ReadOptions, inspect_run, iter_batches

    logits, labels = predictions
    path = write_topk(tmp_path / "topk.parquet", logits, labels, 5)
    layout = inspect_run(str(path))
    assert layout.num_classes == 12 and layout.topk == 5
    sizes = [len(b) for b in iter_batches(layout, ReadOptions(batch_values=2 * 5 * 32))]
    assert max(sizes) == 32  # 2 x 5 x 32 values a batch; K = 12 would have given 26 rows


@pytest.mark.parametrize("row_group_size,batch_values", [(1, 12), (7, 100), (64, 10_000),
                                                         (700, 1 << 22)])
def test_batch_size_and_row_groups_never_change_a_number(tmp_path, predictions, row_group_size,
                                                         batch_values):
    logits, labels = predictions
    source = np.array(["a", "b", "c"])[labels % 3].tolist()
    reference = sections(write_run(tmp_path / "ref.parquet", labels, logits=logits,
                                   extra={"source": source}, row_group_size=700), by=["source"])
    path = write_run(tmp_path / "run.parquet", labels, logits=logits, extra={"source": source},
                     row_group_size=row_group_size)
    assert sections(path, by=["source"], batch_values=batch_values) == reference


@pytest.mark.parametrize("shards", [2, 5])
def test_shard_split_never_changes_a_number(tmp_path, predictions, shards):
    logits, labels = predictions
    reference = sections(write_run(tmp_path / "ref.parquet", labels, logits=logits))
    folder = write_run(tmp_path / "shards", labels, logits=logits, shards=shards,
                       row_group_size=33)
    assert sections(folder) == reference
    assert sections(str(folder / "part-*.parquet")) == reference


def test_temperature_on_a_sample_of_row_groups(tmp_path, predictions):
    """Large runs fit T on the head rows of row groups spread over the run, then score every
    row at that T."""
    logits, labels = predictions
    path = write_run(tmp_path / "run.parquet", labels, logits=logits, row_group_size=50)
    budget = 200 * 12  # values of 200 rows, spread over the 14 row groups: 14 rows each
    document = metricdiff.report(str(path), temperature_values=budget).to_dict()
    assert document["run"]["temperature_fit_rows"] == 14 * 14
    assert any("sample" in w for w in document["warnings"])
    sampled = np.concatenate([np.arange(g * 50, g * 50 + 14) for g in range(14)])
    from test_reference import reference_temperature
    temperature, _ = reference_temperature(logits[sampled], labels[sampled])
    assert document["metrics"]["temperature"] == pytest.approx(temperature, rel=1e-4)
    # every row is then scored at that temperature
    scaled = np.log(probs_of(logits.astype(np.float64) / document["metrics"]["temperature"]))
    assert document["metrics"]["nll_calibrated"] == pytest.approx(
        -scaled[np.arange(len(labels)), labels].mean(), rel=1e-7)


def test_temperature_sample_of_a_single_large_row_group(tmp_path, predictions):
    logits, labels = predictions
    path = write_run(tmp_path / "run.parquet", labels, logits=logits, row_group_size=700)
    document = metricdiff.report(str(path), temperature_values=100 * 12,
                                 batch_values=30 * 12).to_dict()
    assert document["run"]["temperature_fit_rows"] == 100
    from test_reference import reference_temperature
    temperature, _ = reference_temperature(logits[:100], labels[:100])
    assert document["metrics"]["temperature"] == pytest.approx(temperature, rel=1e-4)


def test_slices_report_each_value(small_run):
    path, logits, labels, source = small_run
    slices = metricdiff.report(str(path), by=["source"]).to_dict()["slices"]["source"]
    source = np.array(source)
    assert slices["values"] == 3
    correct = logits.argmax(axis=1) == labels
    for row in slices["rows"]:
        member = source == row["value"]
        assert row["n"] == member.sum()
        assert row["accuracy"] == pytest.approx(correct[member].mean())


def test_prefetch_hands_over_items_and_errors_in_order():
    from metricdiff.pipeline import Prefetch

    assert list(Prefetch(iter(range(50)), depth=2)) == list(range(50))

    def failing():
        yield 1
        raise ValueError("decode failed")

    produced = iter(Prefetch(failing()))
    assert next(produced) == 1
    with pytest.raises(ValueError, match="decode failed"):
        next(produced)


def test_prefetch_reads_ahead_at_once_and_close_stops_its_thread():
    import threading
    import time

    from metricdiff.pipeline import Prefetch

    started = threading.Event()

    def items():
        started.set()  # production begins before anyone iterates
        yield from range(1000)

    reader = Prefetch(items(), depth=1)
    assert started.wait(timeout=10)
    assert next(iter(reader)) == 0
    reader.close()  # the consumer gives up: the producer must not stay blocked
    deadline = time.monotonic() + 10
    while any(t.name == "metricdiff-reader" and t.is_alive() for t in threading.enumerate()):
        assert time.monotonic() < deadline
        time.sleep(0.01)

    never_read = Prefetch(iter(range(1000)), depth=1)
    never_read.close()  # closed before any iteration: the thread ends too
    assert not any(t.name == "metricdiff-reader" and t.is_alive() for t in threading.enumerate())


def test_run_assembler_puts_parts_in_row_order_whatever_their_arrival():
    """Parts (batches, or a cluster's partitions) arrive in any order; the run is what
    concatenating them in row order gives, numeric columns filled in place, text columns
    and parts of another type joined as np.concatenate joins them."""
    from metricdiff.perexample import from_scores
    from metricdiff.pipeline import RunAssembler, RunPart

    logits, labels = random_logits(50, 4, seed=3)
    ids = np.arange(50)
    big = np.array([2 ** 63 + 5, 2 ** 63 + 9], dtype=np.uint64)
    cuts = [0, 7, 20, 21, 48, 50]
    parts = []
    for a, b in zip(cuts, cuts[1:]):
        part_ids = ids[a:b] if a < 48 else big  # the last part's ids need uint64
        parts.append((a, RunPart(from_scores(logits[a:b], labels[a:b], 1.3), part_ids,
                                 {"s": np.array([f"v{i}" for i in range(a, b)], dtype=object)},
                                 None, None)))
    assembler = RunAssembler(50)
    for a, part in reversed(parts):
        assembler.add(a, part)
    run = assembler.result()
    whole = from_scores(logits, labels, 1.3)
    for name in ("label", "pred", "rank", "conf", "nll", "brier", "nll_cal"):
        np.testing.assert_array_equal(getattr(run.examples, name), getattr(whole, name))
    np.testing.assert_array_equal(run.ids, np.concatenate([p.ids for _, p in parts]))
    assert run.slices["s"].tolist() == [f"v{i}" for i in range(50)]
    assert run.clusters is None


def test_a_topk_runs_unknown_columns_hold_no_memory(tmp_path, predictions):
    """Brier, entropy and the calibrated columns of a top-k run are NaN: held as one value
    seen through a zero stride, not 8 bytes per example, through every batch of the read,
    the alignment of a comparison and the joining of parts; the full columns stay full."""
    from metricdiff.io import ReadOptions
    from metricdiff.perexample import PerExample, is_unknown
    from metricdiff.pipeline import load_run

    logits, labels = predictions
    path = write_topk(tmp_path / "topk.parquet", logits, labels, 5)  # row groups of 64
    run = load_run(str(path), options=ReadOptions(batch_values=2 * 5 * 32))
    unknown = ("brier", "entropy", "nll_cal", "conf_cal")
    pe = run.examples
    for name in unknown:
        column = getattr(pe, name)
        assert is_unknown(column) and len(column) == len(labels) and column.nbytes > 0
        assert column.base is not None and column.base.nbytes <= 8  # one value underneath
    for name in ("conf", "nll", "label", "rank"):
        assert not is_unknown(getattr(pe, name))
    lined_up = pe.take(np.arange(len(pe))[::-1])
    joined = PerExample.concat([pe, lined_up])
    for part in (lined_up, joined):
        assert all(is_unknown(getattr(part, name)) for name in unknown)
        assert len(part.brier) == len(part.label)
    assert np.array_equal(joined.nll, np.r_[pe.nll, pe.nll[::-1]])
    full = load_run(str(write_run(tmp_path / "full.parquet", labels, logits=logits)))
    mixed = PerExample.concat([pe, full.examples])  # a full part makes the column full
    assert not is_unknown(mixed.brier)
    assert np.isnan(mixed.brier[: len(pe)]).all() and np.array_equal(
        mixed.brier[len(pe):], full.examples.brier)
    # and a part sent from a Dask worker to the client keeps them unknown (pickled as a length)
    import pickle
    sent = pickle.loads(pickle.dumps(pe))
    assert all(is_unknown(getattr(sent, name)) for name in unknown)
    assert len(pickle.dumps(pe)) < len(pickle.dumps(full.examples))  # 4 of 9 columns fewer
    assert np.array_equal(sent.nll, pe.nll) and np.array_equal(sent.label, pe.label)
