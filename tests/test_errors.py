"""Bad input: one line on stderr naming file, column and row, exit code 2, no traceback."""

from __future__ import annotations

import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

import metricdiff
from conftest import list_array, probs_of, random_logits, write_run
from metricdiff.cli import app


def run_cli(*args: str):
    return CliRunner().invoke(app, [str(a) for a in args])


def assert_input_error(result, *fragments: str) -> str:
    assert result.exit_code == 2, (result.exit_code, result.stdout, result.stderr)
    message = result.stderr
    assert message.count("\n") == 1, f"expected one line, got: {message!r}"
    assert "Traceback" not in message
    assert message.startswith("metricdiff: error: ")
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    assert result.stdout == ""
    return message


@pytest.fixture
def good():
    return random_logits(100, 4, seed=0)


def test_not_a_parquet_file(tmp_path):
    path = tmp_path / "notes.parquet"
    path.write_text("id,label\n1,2\n")
    assert_input_error(run_cli("report", path), str(path), "not a readable Parquet file")


def test_truncated_parquet_file(tmp_path, good):
    logits, labels = good
    path = write_run(tmp_path / "run.parquet", labels, logits=logits)
    data = path.read_bytes()
    cut = tmp_path / "cut.parquet"
    cut.write_bytes(data[: len(data) // 2])
    assert_input_error(run_cli("report", cut), str(cut))


def test_corrupted_page_header(tmp_path, good):
    logits, labels = good
    path = write_run(tmp_path / "run.parquet", labels, logits=logits, row_group_size=100)
    data = bytearray(path.read_bytes())
    data[4:40] = b"\xff" * 36  # the first page header, footer intact
    path.write_bytes(bytes(data))
    assert_input_error(run_cli("report", path), str(path))


def test_corrupted_values_are_caught_by_page_checksums(tmp_path, good):
    """Parquet can only notice flipped value bytes when the writer stored page checksums."""
    logits, labels = good
    path = tmp_path / "run.parquet"
    table = pa.table({"label": labels, "logits": list_array(logits)})
    pq.write_table(table, path, write_page_checksum=True, compression="none")
    data = bytearray(path.read_bytes())
    middle = len(data) // 2  # inside the logits values
    data[middle:middle + 16] = bytes(b ^ 0x55 for b in data[middle:middle + 16])
    path.write_bytes(bytes(data))
    assert_input_error(run_cli("report", path), str(path))


def test_empty_file(tmp_path):
    path = tmp_path / "empty.parquet"
    path.write_bytes(b"")
    assert_input_error(run_cli("report", path), str(path))


def test_zero_rows(tmp_path):
    path = write_run(tmp_path / "run.parquet", np.array([], dtype=np.int64),
                     logits=np.zeros((0, 3), dtype=np.float32))
    assert_input_error(run_cli("report", path), str(path), "zero rows")


def test_missing_file_and_empty_folder(tmp_path):
    assert_input_error(run_cli("report", tmp_path / "nope.parquet"), "no such file")
    (tmp_path / "empty").mkdir()
    assert_input_error(run_cli("report", tmp_path / "empty"), "no *.parquet file")
    assert_input_error(run_cli("report", tmp_path / "*.parquet"), "no file matches")


def test_shards_with_different_schemas(tmp_path, good):
    logits, labels = good
    folder = tmp_path / "shards"
    folder.mkdir()
    write_run(folder / "a.parquet", labels, logits=logits)
    write_run(folder / "b.parquet", labels, probs=probs_of(logits))
    assert_input_error(run_cli("report", folder), str(folder / "b.parquet"), "shard columns differ")


def test_shards_with_different_types(tmp_path, good):
    logits, labels = good
    folder = tmp_path / "shards"
    folder.mkdir()
    write_run(folder / "a.parquet", labels, logits=logits)
    write_run(folder / "b.parquet", labels, logits=logits.astype(np.float64))
    assert_input_error(run_cli("report", folder), "b.parquet", "column 'logits'", "differs")


def test_no_label_column(tmp_path, good):
    logits, labels = good
    path = write_run(tmp_path / "run.parquet", labels, logits=logits, label_col="y_true")
    assert_input_error(run_cli("report", path), str(path), "no label column 'label'", "y_true")


def test_no_prediction_column(tmp_path):
    path = tmp_path / "run.parquet"
    pq.write_table(pa.table({"label": [0, 1], "score": [0.1, 0.2]}), path)
    assert_input_error(run_cli("report", path), str(path), "no prediction column")


def test_two_prediction_columns(tmp_path, good):
    logits, labels = good
    path = tmp_path / "run.parquet"
    pq.write_table(pa.table({"label": labels, "logits": list_array(logits),
                             "probs": list_array(probs_of(logits))}), path)
    assert_input_error(run_cli("report", path), "'logits' and 'probs'", "--pred-col")
    assert run_cli("report", path, "--pred-col", "probs").exit_code == 0


def test_ragged_lists(tmp_path):
    path = tmp_path / "run.parquet"
    pq.write_table(pa.table({"label": [0, 1, 0],
                             "logits": [[0.1, 0.2, 0.3], [0.1, 0.2, 0.3], [0.5, 0.1]]}), path)
    assert_input_error(run_cli("report", path), str(path), "column 'logits'", "row 2", "ragged")


@pytest.mark.parametrize("kind", ["fixed", "list", "large"])
def test_null_inside_a_prediction_list(tmp_path, kind):
    """A null value inside row 150's list, past the first row groups and batches: the row
    named is the file's, for every list layout (read without flatten())."""
    logits, labels = random_logits(200, 4, seed=1)
    values = pa.array(logits.ravel(), mask=np.arange(logits.size) == 150 * 4 + 2)
    offsets = np.arange(0, logits.size + 1, 4)
    column = {"fixed": lambda: pa.FixedSizeListArray.from_arrays(values, 4),
              "list": lambda: pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), values),
              "large": lambda: pa.LargeListArray.from_arrays(pa.array(offsets), values)}[kind]()
    path = tmp_path / "run.parquet"
    pq.write_table(pa.table({"label": labels, "logits": column}), path, row_group_size=64)
    assert_input_error(run_cli("report", path), str(path), "column 'logits'", "row 150",
                       "null value inside")
    with pytest.raises(metricdiff.InputError, match="row 150"):  # batches of 10 rows
        metricdiff.report(str(path), batch_values=40)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_logits(tmp_path, good, bad):
    logits, labels = good
    logits = logits.copy()
    logits[37, 2] = bad
    path = write_run(tmp_path / "run.parquet", labels, logits=logits)
    assert_input_error(run_cli("report", path), "column 'logits'", "row 37", "finite")


def test_a_row_of_only_minus_infinity_is_refused(tmp_path, good):
    """-inf is a probability of 0; a row with no class left possible is no distribution."""
    logits, labels = good
    logits = logits.copy()
    logits[41] = -np.inf
    path = write_run(tmp_path / "run.parquet", labels, logits=logits)
    assert_input_error(run_cli("report", path), "column 'logits'", "row 41", "every logit")


@pytest.mark.parametrize("bad_label", [4, -1])
def test_label_out_of_range(tmp_path, good, bad_label):
    logits, labels = good
    labels = labels.copy()
    labels[55] = bad_label
    path = write_run(tmp_path / "run.parquet", labels, logits=logits)
    assert_input_error(run_cli("report", path), "column 'label'", "row 55", "[0, 4)")


def test_null_label(tmp_path, good):
    logits, labels = good
    values = labels.tolist()
    values[3] = None
    path = write_run(tmp_path / "run.parquet", values, logits=logits)
    assert_input_error(run_cli("report", path), "column 'label'", "row 3", "null")


def test_float_labels(tmp_path, good):
    logits, labels = good
    path = write_run(tmp_path / "run.parquet", labels.astype(float), logits=logits)
    assert_input_error(run_cli("report", path), "column 'label'", "expected integer")


def test_string_labels_not_among_class_names(tmp_path, good):
    logits, labels = good
    names = ["a", "b", "c", "d"]
    values = [names[y] for y in labels]
    values[9] = "zebra"
    path = write_run(tmp_path / "run.parquet", values, logits=logits, class_names=names)
    assert_input_error(run_cli("report", path), "row 9", "'zebra'")


def test_string_labels_without_class_names(tmp_path, good):
    logits, labels = good
    path = write_run(tmp_path / "run.parquet", [str(y) for y in labels], logits=logits)
    assert_input_error(run_cli("report", path), "labels are strings", "--classes")


def test_class_names_of_the_wrong_length(tmp_path, good):
    logits, labels = good
    path = write_run(tmp_path / "run.parquet", labels, logits=logits, class_names=["a", "b", "c"])
    assert_input_error(run_cli("report", path), "3 class names", "4 classes")


def test_negative_probabilities(tmp_path, good):
    logits, labels = good
    probs = probs_of(logits)
    probs[12, 1] = -0.1
    path = write_run(tmp_path / "run.parquet", labels, probs=probs)
    assert_input_error(run_cli("report", path), "column 'probs'", "row 12", "[0, 1]")


def test_probabilities_not_summing_to_one(tmp_path, good):
    logits, labels = good
    probs = probs_of(logits)
    probs[20] *= 1.1
    path = write_run(tmp_path / "run.parquet", labels, probs=probs)
    assert_input_error(run_cli("report", path), "column 'probs'", "row 20", "sum to 1.1")


def test_topk_not_sorted(tmp_path):
    path = tmp_path / "run.parquet"
    pq.write_table(pa.table({"label": [0, 1], "topk_ids": [[0, 1], [1, 0]],
                             "topk_logprobs": [[-0.5, -1.0], [-1.0, -0.5]],
                             "label_logprob": [-0.5, -1.0]}), path)
    assert_input_error(run_cli("report", path), "column 'topk_logprobs'", "row 1", "descending")


def test_topk_label_logprob_above_top1(tmp_path):
    path = tmp_path / "run.parquet"
    pq.write_table(pa.table({"label": [0, 2], "topk_ids": [[0, 1], [1, 0]],
                             "topk_logprobs": [[-0.5, -1.0], [-0.5, -1.0]],
                             "label_logprob": [-0.5, -0.1]}), path)
    assert_input_error(run_cli("report", path), "column 'label_logprob'", "row 1", "top-1")


def test_unknown_by_column(small_run):
    path = small_run[0]
    assert_input_error(run_cli("report", path, "--by", "country"), "'country'", "source")


def test_output_folder_does_not_exist(small_run, tmp_path):
    target = tmp_path / "missing" / "out.json"
    assert_input_error(run_cli("report", small_run[0], "-o", target), "does not exist")
    assert not target.exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their permissions")
def test_unreadable_file(small_run):
    path = small_run[0]
    path.chmod(0)
    try:
        assert_input_error(run_cli("report", path), str(path), "permission denied")
    finally:
        path.chmod(0o644)


def test_debug_shows_the_traceback(tmp_path):
    path = tmp_path / "notes.parquet"
    path.write_text("not parquet")
    result = run_cli("report", path, "--debug")
    assert result.exit_code != 0
    assert result.exception is not None


def test_bad_classes_metadata(tmp_path, good):
    logits, labels = good
    path = tmp_path / "run.parquet"
    table = pa.table({"label": labels, "logits": list_array(logits)}).replace_schema_metadata(
        {b"metricdiff.classes": b"{not json"})
    pq.write_table(table, path)
    assert_input_error(run_cli("report", path), "metricdiff.classes", "JSON list")
    classes = tmp_path / "classes.json"
    classes.write_text(json.dumps(["a", "a", "b", "c"]))
    fine = write_run(tmp_path / "fine.parquet", labels, logits=logits)
    assert_input_error(run_cli("report", fine, "--classes", classes), "'a' appears twice")


def test_permission_denied_is_one_line(small_run, monkeypatch):
    """Simulated: the tests may run as root, who can read anything."""
    import metricdiff.io

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(metricdiff.io.pq, "ParquetFile", refuse)
    assert_input_error(run_cli("report", small_run[0]), str(small_run[0]), "permission denied")


def test_ctrl_c_exits_130_with_one_line(tmp_path):
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    samples = Path(__file__).resolve().parent.parent / "sample_runs"
    runs = [str(samples / f"{name}.parquet") for name in ("featA_hpB", "featB_hpA", "featC_hpA")]
    target = tmp_path / "out.json"
    # a comparison of three 60,000-row runs takes well over the two seconds waited here
    process = subprocess.Popen([sys.executable, "-m", "metricdiff", "compare", *runs, "-f",
                                "json", "-o", str(target)], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    time.sleep(2.0)  # past start-up, inside the reads
    process.send_signal(signal.SIGINT)
    started = time.monotonic()
    stdout, stderr = process.communicate(timeout=60)
    assert time.monotonic() - started < 5  # the reads stop at their next batch
    assert process.returncode == 130, (process.returncode, stderr)
    assert stderr == "metricdiff: interrupted\n"
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []  # no half-written temporary file either
