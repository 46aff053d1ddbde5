"""metricdiff.writer: runs written by save_predictions / PredictionWriter read back exactly like
the same predictions written directly with pyarrow; bad input is refused at write time."""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import metricdiff
from conftest import to_rounding, probs_of, random_logits, write_run
from metricdiff import writer as writer_module
from metricdiff.errors import UsageError
from metricdiff.writer import PredictionWriter, save_predictions

N, K = 600, 9
NAMES = [f"class-{c}" for c in range(K)]
TOPK_EXACT = ["n", "nll", "accuracy", "top5_accuracy", "ece", "ece_adaptive", "mce",
              "mean_confidence", "overconfidence", "balanced_accuracy", "macro_f1"]


def document(path, **kwargs) -> dict:
    """Everything a report measured, without the part that names the file."""
    result = to_rounding(metricdiff.report(str(path), **kwargs).to_dict())
    result.pop("run")
    return result


def metrics_of(path, **kwargs) -> dict:
    return metricdiff.report(str(path), **kwargs).to_dict()["metrics"]


def files_in(folder) -> list[str]:
    return sorted(os.listdir(folder))


@pytest.fixture(scope="module")
def data():
    logits, labels = random_logits(N, K, seed=5)
    rng = np.random.default_rng(6)
    ids = [f"img-{i:04d}.jpg" for i in rng.permutation(N)]
    source = rng.choice(["web", "mobile", "partner"], N).tolist()
    hour = rng.integers(0, 4, N)
    return logits, labels, ids, source, hour


# ----------------------------------------------------------------------------- round trip

@pytest.mark.parametrize("kind,dtype", [("logits", np.float16), ("logits", np.float32),
                                        ("logits", np.float64), ("probs", np.float32),
                                        ("probs", np.float64)])
def test_round_trip_equals_a_run_written_with_pyarrow(tmp_path, data, kind, dtype):
    logits, labels, ids, source, hour = data
    matrix = (logits if kind == "logits" else probs_of(logits)).astype(dtype)
    reference = write_run(tmp_path / "ref.parquet", labels, **{kind: matrix}, ids=ids,
                          class_names=NAMES, extra={"source": source, "hour": hour})
    path = save_predictions(tmp_path / "run.parquet", labels, **{kind: matrix}, ids=ids,
                            class_names=NAMES, source=source, hour=hour)
    assert path == tmp_path / "run.parquet" and files_in(tmp_path) == ["ref.parquet",
                                                                       "run.parquet"]
    by = ["source", "hour"]
    written, expected = document(path, by=by), document(reference, by=by)
    assert written["metrics"] == expected["metrics"]
    assert written == expected  # slices, per-class rows, bins, noise floor: everything
    assert {row["name"] for row in written["per_class"]["rows"]} <= set(NAMES)
    assert {row["value"] for row in written["slices"]["source"]["rows"]} == set(source)

    schema = pq.ParquetFile(path).schema_arrow
    assert schema.field(kind).type == pa.list_(pa.from_numpy_dtype(dtype), K)  # dtype kept
    assert schema.field("label").type == pa.int64()
    assert schema.field("id").type == pa.string()
    assert json.loads(schema.metadata[b"metricdiff.classes"]) == NAMES
    assert pq.ParquetFile(path).metadata.row_group(0).column(1).compression == "ZSTD"


def test_string_labels_pandas_inputs_and_integer_ids(tmp_path, data):
    logits, labels, _, source, _ = data
    reference = write_run(tmp_path / "ref.parquet", labels, logits=logits,
                          ids=np.arange(N) * 3, class_names=NAMES, extra={"source": source})
    frame = pd.DataFrame(logits, columns=NAMES)
    path = save_predictions(tmp_path / "run.parquet",
                            pd.Series([NAMES[i] for i in labels], index=np.arange(N)[::-1]),
                            logits=frame, ids=pd.Series(np.arange(N, dtype=np.int32) * 3),
                            class_names=pd.Index(NAMES), source=pd.Categorical(source))
    assert document(path, by=["source"]) == document(reference, by=["source"])
    schema = pq.ParquetFile(path).schema_arrow
    assert schema.field("label").type == pa.int64() and schema.field("id").type == pa.int64()


def test_lists_and_int32_labels(tmp_path):
    logits, labels = random_logits(50, 4, seed=2, dtype=np.float64)
    reference = write_run(tmp_path / "ref.parquet", labels, logits=logits)
    path = save_predictions(tmp_path / "run.parquet", labels.astype(np.int32).tolist(),
                            logits=logits.tolist())
    assert document(path) == document(reference)
    assert pq.ParquetFile(path).schema_arrow.field("label").type == pa.int64()


class ArrayOnly:
    """Converts to numpy through __array__ only (like a JAX array)."""

    def __init__(self, array):
        self._array = np.asarray(array)

    def __array__(self, dtype=None, copy=None):
        return self._array if dtype is None else self._array.astype(dtype)


class FakeTensor:
    """Duck-types a PyTorch tensor on an accelerator: .detach().cpu() before __array__."""

    def __init__(self, array, calls, state="grad"):
        self._array, self.calls, self.state = np.asarray(array), calls, state

    def detach(self):
        self.calls.append("detach")
        return FakeTensor(self._array, self.calls, "detached")

    def cpu(self):
        self.calls.append("cpu")
        return FakeTensor(self._array, self.calls, "cpu")

    def __array__(self, dtype=None, copy=None):
        if self.state != "cpu":
            raise TypeError("can't convert cuda tensor to numpy; use .cpu()")
        return self._array if dtype is None else self._array.astype(dtype)


def test_array_likes_and_tensors_are_accepted_without_their_library(tmp_path, data):
    logits, labels, ids, source, _ = data
    reference = write_run(tmp_path / "ref.parquet", labels, logits=logits, ids=ids,
                          extra={"source": source})
    path = save_predictions(tmp_path / "a.parquet", ArrayOnly(labels), logits=ArrayOnly(logits),
                            ids=ArrayOnly(ids), source=ArrayOnly(source))
    assert document(path, by=["source"]) == document(reference, by=["source"])

    calls: list[str] = []
    path = save_predictions(tmp_path / "t.parquet", FakeTensor(labels, calls),
                            logits=FakeTensor(logits, calls), ids=ids,
                            source=FakeTensor(np.array(source), calls))
    assert calls == ["detach", "cpu"] * 3
    assert document(path, by=["source"]) == document(reference, by=["source"])


def test_the_callers_buffer_may_be_reused(tmp_path):
    """A loop that fills one preallocated buffer per batch must not change rows already added."""
    logits, labels = random_logits(80, 5, seed=3)
    reference = write_run(tmp_path / "ref.parquet", labels, logits=logits)
    buffer = np.empty((20, 5), np.float32)
    with PredictionWriter(tmp_path / "run.parquet") as writer:
        for start in range(0, 80, 20):
            buffer[:] = logits[start:start + 20]
            writer.add(labels[start:start + 20], logits=buffer)
    buffer[:] = np.nan
    assert document(tmp_path / "run.parquet") == document(reference)


def test_page_checksums_are_written(tmp_path, data):
    logits, labels, *_ = data
    path = save_predictions(tmp_path / "run.parquet", labels, logits=logits)
    chunk = pq.ParquetFile(path).metadata.row_group(0).column(1)  # the logits
    raw = bytearray(path.read_bytes())
    raw[chunk.data_page_offset + chunk.total_compressed_size - 10] ^= 0xFF  # inside the page
    path.write_bytes(bytes(raw))
    with pytest.raises(metricdiff.InputError, match="(?i)crc"):
        metricdiff.report(str(path))


# ----------------------------------------------------------------------------- PredictionWriter

BATCH_SIZES = [1, 64, 7, 100, 33, 0, 128, 2, 90, 175]  # 10 batches, one of them empty


def batches():
    bounds = np.cumsum([0] + BATCH_SIZES)
    assert bounds[-1] == N
    return [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:])]


@pytest.mark.parametrize("kind", ["logits", "probs"])
def test_batches_give_the_same_run_as_save_predictions(tmp_path, data, kind):
    logits, labels, ids, source, hour = data
    matrix = logits if kind == "logits" else probs_of(logits)
    whole = save_predictions(tmp_path / "whole.parquet", labels, **{kind: matrix}, ids=ids,
                             class_names=NAMES, source=source, hour=hour)
    ids, source = np.array(ids), np.array(source)
    with PredictionWriter(tmp_path / "batched.parquet", class_names=NAMES, num_classes=K,
                          row_group_size=50) as writer:
        for rows in batches():
            writer.add(labels[rows], **{kind: matrix[rows]}, ids=ids[rows], source=source[rows],
                       hour=hour[rows])
    assert writer.num_rows == N
    path = writer.close()  # closing again returns the path
    assert path == tmp_path / "batched.parquet"
    by = ["source", "hour"]
    assert document(path, by=by)["metrics"] == document(whole, by=by)["metrics"]
    assert document(path, by=by) == document(whole, by=by)

    metadata = pq.ParquetFile(path).metadata
    sizes = [metadata.row_group(g).num_rows for g in range(metadata.num_row_groups)]
    assert metadata.num_row_groups > 1
    assert sizes == [50] * (N // 50) + ([N % 50] if N % 50 else [])  # bounded, batch-independent


def test_default_row_group_size_follows_the_class_count(tmp_path):
    logits = np.zeros((100, 1 << 16), np.float16)  # K = 2**16: 2**24 // K = 256 rows a group
    labels = np.arange(100)
    with PredictionWriter(tmp_path / "wide.parquet") as writer:
        for _ in range(3):
            writer.add(labels, logits=logits)
    metadata = pq.ParquetFile(tmp_path / "wide.parquet").metadata
    assert [metadata.row_group(g).num_rows for g in range(metadata.num_row_groups)] == [256, 44]


def test_the_file_appears_only_when_closed(tmp_path, data):
    logits, labels, *_ = data
    writer = PredictionWriter(tmp_path / "run.parquet", row_group_size=10)
    writer.add(labels[:100], logits=logits[:100])  # ten row groups already written
    assert not (tmp_path / "run.parquet").exists()
    leftovers = files_in(tmp_path)
    assert len(leftovers) == 1 and leftovers[0].startswith(".run.parquet.")
    assert not leftovers[0].endswith(".parquet")  # a folder reader would not pick it up
    writer.close()
    assert files_in(tmp_path) == ["run.parquet"]
    assert metrics_of(tmp_path / "run.parquet")["n"] == 100


def test_an_exception_inside_the_with_block_leaves_no_file(tmp_path, data):
    logits, labels, *_ = data
    with pytest.raises(RuntimeError, match="data loader died"):
        with PredictionWriter(tmp_path / "run.parquet", row_group_size=16) as writer:
            for start in range(0, 300, 100):
                writer.add(labels[start:start + 100], logits=logits[start:start + 100])
            raise RuntimeError("data loader died")
    assert files_in(tmp_path) == []
    with pytest.raises(UsageError, match="aborted"):
        writer.add(labels[:5], logits=logits[:5])


def test_a_failed_write_keeps_the_previous_file(tmp_path, data):
    logits, labels, *_ = data
    path = save_predictions(tmp_path / "run.parquet", labels[:10], logits=logits[:10])
    before = path.read_bytes()
    with pytest.raises(KeyboardInterrupt):
        with PredictionWriter(path) as writer:
            writer.add(labels, logits=logits)
            raise KeyboardInterrupt
    with pytest.raises(UsageError, match="logits"):
        save_predictions(path, labels, logits=np.full_like(logits, np.nan))
    assert path.read_bytes() == before and files_in(tmp_path) == ["run.parquet"]


def test_mismatched_batches_are_refused_and_the_writer_stays_usable(tmp_path, data):
    logits, labels, ids, source, _ = data
    ids, source = np.array(ids), np.array(source)
    path = tmp_path / "run.parquet"
    with PredictionWriter(path) as writer:
        writer.add(labels[:100], logits=logits[:100], ids=ids[:100], source=source[:100])
        wider = np.hstack([logits[100:200], logits[100:200, :1]])
        with pytest.raises(UsageError, match=r"logits: batch 2: 10 classes .* first batch had 9"):
            writer.add(labels[100:200], logits=wider, ids=ids[100:200], source=source[100:200])
        with pytest.raises(UsageError, match=r"logits: batch 3: dtype float64"):
            writer.add(labels[100:200], logits=logits[100:200].astype(np.float64),
                       ids=ids[100:200], source=source[100:200])
        with pytest.raises(UsageError, match=r"probs: this run stores logits"):
            writer.add(labels[100:200], probs=probs_of(logits[100:200]), ids=ids[100:200],
                       source=source[100:200])
        with pytest.raises(UsageError, match=r"^ids: batch 5: no ids"):
            writer.add(labels[100:200], logits=logits[100:200], source=source[100:200])
        with pytest.raises(UsageError, match=r"^metadata: batch 6: missing source"):
            writer.add(labels[100:200], logits=logits[100:200], ids=ids[100:200])
        with pytest.raises(UsageError, match=r"^metadata: batch 7: .*unexpected region"):
            writer.add(labels[100:200], logits=logits[100:200], ids=ids[100:200],
                       source=source[100:200], region=source[100:200])
        with pytest.raises(UsageError, match=r"^metadata column 'source': batch 8: type int64"):
            writer.add(labels[100:200], logits=logits[100:200], ids=ids[100:200],
                       source=np.arange(100))
        with pytest.raises(UsageError, match=r"^ids: batch 9: type int64"):
            writer.add(labels[100:200], logits=logits[100:200], ids=np.arange(100),
                       source=source[100:200])
        with pytest.raises(UsageError, match=r"^logits: .*row 105 \(batch 10, row 5\)"):
            bad = logits[100:200].copy()
            bad[5, 2] = np.inf
            writer.add(labels[100:200], logits=bad, ids=ids[100:200], source=source[100:200])
        writer.add(labels[100:], logits=logits[100:], ids=ids[100:], source=source[100:])
    reference = write_run(tmp_path / "ref.parquet", labels, logits=logits, ids=ids.tolist(),
                          extra={"source": source.tolist()})
    assert document(path, by=["source"]) == document(reference, by=["source"])


def test_a_writer_with_no_rows_writes_nothing(tmp_path):
    with pytest.raises(UsageError, match="no rows"):
        with PredictionWriter(tmp_path / "run.parquet") as writer:
            writer.add([], logits=np.empty((0, 3), np.float32))
    assert files_in(tmp_path) == []


# ----------------------------------------------------------------------------- top-k

@pytest.mark.parametrize("dtype,rel", [(np.float64, 1e-9), (np.float32, 1e-6)])
def test_topk_matches_the_full_logits_run(tmp_path, dtype, rel):
    logits, labels = random_logits(700, 40, seed=8, dtype=dtype)
    full = metrics_of(write_run(tmp_path / "full.parquet", labels, logits=logits))
    with PredictionWriter(tmp_path / "topk.parquet", kind="topk", k=5,
                          row_group_size=64) as writer:
        for rows in np.array_split(np.arange(700), 10):
            writer.add(labels[rows], logits=logits[rows])
    document_ = metricdiff.report(str(tmp_path / "topk.parquet")).to_dict()
    for name in TOPK_EXACT:
        assert document_["metrics"][name] == pytest.approx(full[name], rel=rel, abs=1e-12), name
    for name in ("brier", "mean_entropy", "temperature", "nll_calibrated", "ece_calibrated"):
        assert document_["metrics"][name] is None and name in document_["unavailable"]
    assert document_["run"]["num_classes"] == 40  # class names "0".."39" tell the reader K
    schema = pq.ParquetFile(tmp_path / "topk.parquet").schema_arrow
    assert schema.names == ["label", "topk_ids", "topk_logprobs", "label_logprob"]
    assert schema.field("topk_ids").type == pa.list_(pa.int64(), 5)


def test_topk_keeps_class_names_ids_and_slices(tmp_path, data):
    logits, labels, ids, source, _ = data
    full = document(save_predictions(tmp_path / "full.parquet", labels,
                                     logits=logits.astype(np.float64), ids=ids,
                                     class_names=NAMES, source=source), by=["source"])
    with PredictionWriter(tmp_path / "topk.parquet", kind="topk", k=K,
                          class_names=NAMES) as writer:  # k = K: the whole ranking
        writer.add([NAMES[i] for i in labels], logits=logits.astype(np.float64), ids=ids,
                   source=source)
    topk = document(tmp_path / "topk.parquet", by=["source"])
    assert topk["metrics"]["accuracy"] == full["metrics"]["accuracy"]
    assert topk["metrics"]["nll"] == pytest.approx(full["metrics"]["nll"], rel=1e-12)
    assert ([(r["name"], r["support"], r["errors"]) for r in topk["per_class"]["rows"]]
            == [(r["name"], r["support"], r["errors"]) for r in full["per_class"]["rows"]])
    assert ([(r["value"], r["n"], r["accuracy"]) for r in topk["slices"]["source"]["rows"]]
            == [(r["value"], r["n"], r["accuracy"]) for r in full["slices"]["source"]["rows"]])


def test_topk_breaks_ties_like_the_full_run(tmp_path, monkeypatch):
    """Heavy ties (integer logits): the top-1 class and the top-k set are the reader's,
    lower class index first, including ties that straddle the k-th place."""
    monkeypatch.setattr(writer_module, "TOPK_CHUNK_VALUES", 100)  # several chunks per batch
    rng = np.random.default_rng(4)
    logits = rng.integers(0, 3, size=(500, 30)).astype(np.float32)
    labels = rng.integers(0, 30, 500)
    full = metrics_of(write_run(tmp_path / "full.parquet", labels, logits=logits))
    path = tmp_path / "topk.parquet"
    with PredictionWriter(path, kind="topk", k=5) as writer:
        writer.add(labels, logits=logits)
    topk = metrics_of(path)
    assert topk["accuracy"] == full["accuracy"]
    assert topk["top5_accuracy"] == full["top5_accuracy"]
    ids = np.stack(pq.read_table(path)["topk_ids"].to_numpy(zero_copy_only=False))
    expected = np.argsort(-logits, axis=1, kind="stable")[:, :5]
    np.testing.assert_array_equal(ids, expected)


# ----------------------------------------------------------------------------- validation

def small():
    logits, labels = random_logits(6, 3, seed=0)
    return logits, labels


def call(**overrides):
    """save_predictions on a small valid run, with some arguments replaced."""
    def run(tmp_path):
        logits, labels = small()
        kwargs = {"labels": labels, "logits": logits}
        kwargs.update(overrides)
        save_predictions(tmp_path / "run.parquet", kwargs.pop("labels"), **kwargs)
    return run


def writer_call(constructor: dict, *batches_: dict):
    """PredictionWriter with some constructor arguments, then the given batches."""
    def run(tmp_path):
        logits, labels = small()
        with PredictionWriter(tmp_path / "run.parquet", **constructor) as writer:
            for batch in batches_ or ({},):
                kwargs = {"labels": labels, "logits": logits, **batch}
                writer.add(kwargs.pop("labels"), **kwargs)
    return run


LOGITS, LABELS = small()
NAN_LOGITS = LOGITS.copy()
NAN_LOGITS[4, 1] = np.nan
BAD_SUM = probs_of(LOGITS)
BAD_SUM[2] *= 1.01

CASES = {
    "both logits and probs": (call(probs=probs_of(LOGITS)), "logits, probs", "both"),
    "neither logits nor probs": (call(logits=None), "logits, probs", "neither"),
    "1-D logits": (call(logits=LOGITS[:, 0]), "logits", "1-D"),
    "3-D logits": (call(logits=LOGITS[None]), "logits", "2-D"),
    "integer logits": (call(logits=LOGITS.astype(int)), "logits", "dtype int64"),
    "ragged logits": (call(logits=[[1.0, 2.0], [1.0]] * 3), "logits", "numpy"),
    "no class columns": (call(logits=np.empty((6, 0))), "logits", "no class"),
    "labels length": (call(labels=LABELS[:5]), "labels", "5 labels, but logits has 6 rows"),
    "one-hot labels": (call(labels=np.eye(3)[LABELS]), "labels", "one-hot"),
    "float labels": (call(labels=LABELS.astype(float)), "labels", "dtype float64"),
    "boolean labels": (call(labels=LABELS > 0), "labels", "booleans"),
    "label too large": (call(labels=np.array([0, 1, 2, 3, 0, 1])), "labels",
                        "3 at row 3 is out of range; expected class indices in [0, 3)"),
    "negative label": (call(labels=np.array([0, -1, 2, 0, 0, 1])), "labels", "row 1"),
    "string labels without names": (call(labels=list("abcabc")), "labels", "class_names"),
    "unknown string label": (call(labels=list("abcabd"), class_names=list("abc")), "labels",
                             "'d' at row 5"),
    "mixed labels": (call(labels=[0, 1, "c", 0, 1, 2], class_names=list("abc")), "labels",
                     "'c' at row 2"),
    "None label": (call(labels=[0, 1, None, 0, 1, 2]), "labels", "row 2"),
    "NaN logits": (call(logits=NAN_LOGITS), "logits", "nan at row 4, class 1"),
    "infinite logits": (call(logits=np.where(NAN_LOGITS != NAN_LOGITS, np.inf, LOGITS)),
                        "logits", "inf at row 4"),
    "a row of -inf logits": (call(logits=np.where(np.arange(6)[:, None] == 2, -np.inf, LOGITS)),
                             "logits", "every logit is -inf at row 2"),
    "probability above 1": (call(logits=None, probs=np.where(
        np.arange(6)[:, None] == 1, [[1.001, 0.0, 0.0]], probs_of(LOGITS))), "probs", "1.001"),
    "probs not summing to 1": (call(logits=None, probs=BAD_SUM), "probs", "row 2 sums to"),
    "negative probs": (call(logits=None, probs=probs_of(LOGITS) - 0.5), "probs", "[0, 1]"),
    "NaN probs": (call(logits=None, probs=np.where(NAN_LOGITS != NAN_LOGITS, np.nan,
                                                   probs_of(LOGITS))), "probs", "nan"),
    "class_names length": (call(class_names=["a", "b"]), "class_names",
                           "2 names, but logits has 3 columns"),
    "duplicate class_names": (call(class_names=["a", "b", "a"]), "class_names", "twice"),
    "class_names as one string": (call(class_names="abc"), "class_names", "string"),
    "empty class_names": (call(class_names=[]), "class_names", "empty"),
    "ids length": (call(ids=[1, 2, 3]), "ids", "3 ids for 6 rows"),
    "duplicate ids": (call(ids=["a", "b", "c", "d", "b", "e"]), "ids",
                      "'b' appears twice, at row 1 and row 4"),
    "float ids": (call(ids=np.arange(6.0)), "ids", "dtype float64"),
    "mixed ids": (call(ids=[1, "b", 3, 4, 5, 6]), "ids", "all of one kind"),
    "2-D ids": (call(ids=np.arange(12).reshape(6, 2)), "ids", "1-D"),
    "metadata named label": (call(label=[0] * 6), "metadata column 'label'", "reserved"),
    "metadata named id": (call(id=list(range(6))), "metadata column 'id'", "ids="),
    "metadata named like top-k": (call(label_logprob=[0.0] * 6),
                                  "metadata column 'label_logprob'", "reserved"),
    "metadata read as a wide column": (call(prob_threshold=[0.5] * 6),
                                       "metadata column 'prob_threshold'", "logit_"),
    "metadata length": (call(source=["a"] * 5), "metadata column 'source'",
                        "5 values for 6 rows"),
    "2-D metadata": (call(source=np.zeros((6, 2))), "metadata column 'source'", "1-D"),
    "unstorable metadata": (call(source=[1, "a", 2.0, None, {}, 3]), "metadata column 'source'",
                            "cannot store"),
    "path is a folder": (lambda tmp: save_predictions(tmp, LABELS, logits=LOGITS), "path",
                         "folder"),
    "missing folder": (lambda tmp: save_predictions(tmp / "no" / "run.parquet", LABELS,
                                                    logits=LOGITS), "path", "does not exist"),
    "unknown kind": (writer_call({"kind": "softmax"}), "kind", "'softmax'"),
    "topk without k": (writer_call({"kind": "topk"}), "k", "needs k"),
    "k without topk": (writer_call({"k": 3}), "k", "only used with kind='topk'"),
    "k above K": (writer_call({"kind": "topk", "k": 4}), "k", "4 is more than the 3 classes"),
    "k above class_names": (writer_call({"kind": "topk", "k": 4, "class_names": list("abc")}),
                            "k", "more than the 3 classes"),
    "k not positive": (writer_call({"kind": "topk", "k": 0}), "k", "positive integer"),
    "topk with probs": (writer_call({"kind": "topk", "k": 2},
                                    {"logits": None, "probs": probs_of(LOGITS)}), "probs",
                        "kind='topk' takes full logits="),
    "kind logits given probs": (writer_call({"kind": "logits"},
                                            {"logits": None, "probs": probs_of(LOGITS)}),
                                "probs", "this run stores logits (set by kind=)"),
    "num_classes mismatch": (writer_call({"num_classes": 4}), "logits",
                             "3 columns (shape (6, 3)), but num_classes=4"),
    "num_classes and class_names disagree": (writer_call({"num_classes": 4,
                                                          "class_names": list("abc")}),
                                             "class_names", "num_classes=4"),
    "num_classes not an integer": (writer_call({"num_classes": 2.5}), "num_classes",
                                   "positive integer"),
    "row_group_size zero": (writer_call({"row_group_size": 0}), "row_group_size",
                            "positive integer"),
    "no rows": (writer_call({}, {"labels": [], "logits": np.empty((0, 3))}), "labels",
                "no rows"),
    "zero rows in save_predictions": (call(labels=[], logits=np.empty((0, 3))), "logits",
                                      "0 rows"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_refused_naming_the_argument(tmp_path, case):
    run, argument, fragment = CASES[case]
    with pytest.raises(UsageError) as raised:
        run(tmp_path)
    message = str(raised.value)
    assert message.startswith(argument), message
    assert fragment in message, message
    assert files_in(tmp_path) == []  # nothing written, no temporary file left behind
