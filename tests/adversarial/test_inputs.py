"""Adversarial input files beyond the Parquet bytes: class-name files and metadata."""

from __future__ import annotations

import json
import os

import numpy as np
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from conftest import CLASSES_KEY, random_logits, write_run
from metricdiff import errors as metricdiff_errors
from metricdiff.cli import app


def run_cli(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture
def run(tmp_path):
    logits, labels = random_logits(60, 3, seed=0)
    return write_run(tmp_path / "run.parquet", labels, logits=logits)


def _one_line_error(result, fragment):
    assert result.exit_code == 2, result.output
    assert fragment in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.output


def test_a_classes_file_with_a_byte_order_mark_is_read(run, tmp_path):
    names = tmp_path / "names.txt"
    names.write_bytes("\ufeffcat\ndog\nbird\n".encode("utf-8"))
    doc = json.loads(run_cli("report", run, "--classes", names, "-f", "json").stdout)
    assert doc["per_class"]["rows"][0]["name"] in ("cat", "dog", "bird")


@pytest.mark.parametrize("content", ["caf\xe9\nb\nc\n".encode("latin-1"),
                                     b"\x00\xff\xfe binary"])
def test_a_classes_file_that_is_not_utf8_says_so(run, tmp_path, content):
    names = tmp_path / "names.txt"
    names.write_bytes(content)
    _one_line_error(run_cli("report", run, "--classes", names), "not UTF-8 text")


@pytest.mark.parametrize("names", [[{"a": 1}, "b", "c"], [["a"], "b", "c"], [None, "b", "c"],
                                   [True, False, "c"], [1.5, "b", "c"]])
def test_class_names_that_are_not_names_are_refused(run, tmp_path, names):
    path = tmp_path / "names.json"
    path.write_text(json.dumps(names))
    _one_line_error(run_cli("report", run, "--classes", path), "strings or whole numbers")
    table = pq.read_table(run)
    bad = tmp_path / "meta.parquet"
    pq.write_table(table.replace_schema_metadata({CLASSES_KEY: json.dumps(names).encode()}),
                   bad)
    _one_line_error(run_cli("report", bad), "strings or whole numbers")


def test_whole_number_class_names_are_fine(run, tmp_path):
    path = tmp_path / "names.json"
    path.write_text(json.dumps([10, 20, 30]))
    assert run_cli("report", run, "--classes", path).exit_code == 0


def test_a_probability_above_one_is_refused(tmp_path):
    probs = np.array([[1.0009, 0.0, 0.0], [0.2, 0.3, 0.5]])
    path = write_run(tmp_path / "p.parquet", np.array([0, 2]), probs=probs)
    _one_line_error(run_cli("report", path), "expected a number in [0, 1]")
    rounding = np.array([[1.0 + 1e-12, 0.0, 0.0], [0.2, 0.3, 0.5]])  # a softmax's rounding
    path = write_run(tmp_path / "q.parquet", np.array([0, 2]), probs=rounding)
    assert run_cli("report", path).exit_code == 0


def _topk_run(tmp_path, ids, logprobs, label_logprob, labels):
    import pyarrow as pa

    table = pa.table({"label": pa.array(labels),
                      "topk_ids": pa.array([list(r) for r in ids], pa.list_(pa.int64())),
                      "topk_logprobs": pa.array([list(r) for r in logprobs],
                                                pa.list_(pa.float64())),
                      "label_logprob": pa.array(label_logprob)})
    path = tmp_path / "topk.parquet"
    pq.write_table(table, path)
    return path


def test_top_k_rows_that_cannot_be_are_refused(tmp_path):
    ok_ids, ok_lp = [[0, 1], [2, 0]], [[np.log(0.6), np.log(0.3)], [np.log(0.5), np.log(0.4)]]
    good = _topk_run(tmp_path, ok_ids, ok_lp, [np.log(0.6), np.log(0.4)], [0, 0])
    assert run_cli("report", good).exit_code == 0
    twice = _topk_run(tmp_path, [[0, 0], [2, 0]], ok_lp, [np.log(0.6), np.log(0.4)], [0, 0])
    _one_line_error(run_cli("report", twice), "listed twice")
    over = _topk_run(tmp_path, ok_ids, [[np.log(0.7), np.log(0.6)], ok_lp[1]],
                     [np.log(0.7), np.log(0.4)], [0, 0])
    _one_line_error(run_cli("report", over), "add up to more than 1")


def test_escape_sequences_in_class_names_never_reach_the_terminal(tmp_path):
    logits, labels = random_logits(80, 3, seed=0)
    names = ["\x1b[2Jwipe", "bell\x07", "ok"]
    run = write_run(tmp_path / "run.parquet", labels, logits=logits, class_names=names)
    out = run_cli("report", run, "--worst", 0).stdout
    assert "\x1b" not in out and "\x07" not in out
    assert "\\x1b[2Jwipe" in out


def test_uint64_labels_and_ids_are_shown_as_stored(tmp_path):
    import pyarrow as pa

    from conftest import list_array

    logits, _ = random_logits(3, 2, seed=0)
    big = 2 ** 64 - 1
    table = pa.table({"id": pa.array([big, big - 1, big - 2], pa.uint64()),
                      "label": pa.array([0, big, 1], pa.uint64()),
                      "logits": list_array(logits)})
    path = tmp_path / "u.parquet"
    pq.write_table(table, path)
    _one_line_error(run_cli("report", path), f"label {big} out of range")
    ok = tmp_path / "ok.parquet"
    pq.write_table(table.set_column(1, "label", pa.array([0, 1, 1], pa.uint64())), ok)
    doc = json.loads(run_cli("compare", ok, ok, "--resamples", 0, "-f", "json").stdout)
    assert doc["alignment"]["n"] == 3


def test_misleading_messages_now_say_what_is_wrong(tmp_path):
    import pyarrow as pa

    logits, labels = random_logits(100, 4, seed=0)
    ints = write_run(tmp_path / "ints.parquet", labels, logits=logits, ids=np.arange(100))
    texts = write_run(tmp_path / "texts.parquet", labels, logits=logits,
                      ids=[str(i) for i in range(100)])
    _one_line_error(run_cli("compare", ints, texts), "ids are text here but whole numbers")
    empty = tmp_path / "empty.parquet"
    pq.write_table(pa.table({"label": pa.array([0, 0]),
                             "logits": pa.array([[], []], pa.list_(pa.float32()))}), empty)
    _one_line_error(run_cli("report", empty), "prediction lists are empty (0 classes)")
    ragged = np.vstack([logits[:50], np.zeros((50, 4))])
    table = pq.read_table(write_run(tmp_path / "r.parquet", labels, logits=ragged))
    wider = pa.array([list(r) + ([0.0] if i >= 50 else []) for i, r in enumerate(ragged)],
                     pa.list_(pa.float64()))
    changed = tmp_path / "changed.parquet"
    pq.write_table(table.set_column(1, "logits", wider), changed)
    _one_line_error(run_cli("report", changed), "list has 5 values, expected 4")


def test_a_damaged_candidate_is_found_before_any_run_is_read(tmp_path, monkeypatch):
    import metricdiff
    from metricdiff import pipeline

    logits, labels = random_logits(100, 3, seed=0)
    good = write_run(tmp_path / "good.parquet", labels, logits=logits)
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(good.read_bytes()[:-20])  # a cut-off footer
    read = []
    original = pipeline.iter_batches
    monkeypatch.setattr(pipeline, "iter_batches",
                        lambda *a, **k: read.append(a) or original(*a, **k))
    with pytest.raises(metricdiff.InputError, match="bad.parquet"):
        metricdiff.compare(good, good, bad)
    assert read == []  # no batch of any run was read


def test_a_shard_replaced_after_its_footer_was_checked_is_refused(tmp_path):
    from metricdiff.io import ReadOptions, inspect_run, iter_batches

    logits, labels = random_logits(100, 3, seed=0)
    path = write_run(tmp_path / "run.parquet", labels, logits=logits)
    layout = inspect_run(str(path), ReadOptions())
    other, _ = random_logits(100, 3, seed=9)
    replacement = write_run(tmp_path / "new.parquet", labels, logits=other)
    os.replace(replacement, path)  # a writer replaces the shard between check and read
    with pytest.raises(metricdiff_errors.InputError, match="changed after its footer"):
        list(iter_batches(layout, ReadOptions()))
