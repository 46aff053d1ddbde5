"""Shared fixtures: random predictions and a writer for every run layout metricdiff reads.

Runs are written with small row groups so that every test crosses batch boundaries.
"""

from __future__ import annotations

import json
import math
import re
import signal
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from scipy.special import log_softmax

CLASSES_KEY = b"metricdiff.classes"


def random_logits(n: int, k: int, seed: int = 0, signal: float = 2.0, scale: float = 1.5,
                  dtype=np.float32) -> tuple[np.ndarray, np.ndarray]:
    """Logits where the true class gets a boost, so accuracy is neither 0 nor 1."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, k, n)
    logits = rng.normal(scale=scale, size=(n, k))
    logits[np.arange(n), labels] += signal * rng.random(n) * 2
    return logits.astype(dtype), labels.astype(np.int64)


def probs_of(logits: np.ndarray) -> np.ndarray:
    return np.exp(log_softmax(logits.astype(np.float64), axis=1))


def list_array(matrix: np.ndarray, kind: str = "fixed") -> pa.Array:
    """A (rows, K) matrix as a fixed_size_list, list or large_list column."""
    n, k = matrix.shape
    values = pa.array(matrix.ravel())
    if kind == "fixed":
        return pa.FixedSizeListArray.from_arrays(values, k)
    offsets = pa.array(np.arange(0, n * k + 1, k), type=pa.int64() if kind == "large" else
                       pa.int32())
    if kind == "large":
        return pa.LargeListArray.from_arrays(offsets, values)
    return pa.ListArray.from_arrays(offsets, values)


def write_run(path: Path, labels, *, logits: np.ndarray | None = None,
              probs: np.ndarray | None = None, list_kind: str = "fixed", wide: bool = False,
              ids=None, class_names=None, extra: dict | None = None, row_group_size: int = 64,
              shards: int = 1, label_col: str = "label", pred_col: str | None = None) -> Path:
    """Write a run; with shards > 1, `path` becomes a folder of part files."""
    matrix, kind = (logits, "logits") if logits is not None else (probs, "probs")
    columns: dict[str, pa.Array] = {}
    if ids is not None:
        columns["id"] = pa.array(ids)
    columns[label_col] = pa.array(labels)
    if wide:
        names = class_names or [str(c) for c in range(matrix.shape[1])]
        for c, cname in enumerate(names):
            columns[f"{kind[:-1]}_{cname}"] = pa.array(matrix[:, c])
    else:
        columns[pred_col or kind] = list_array(matrix, list_kind)
    for name, values in (extra or {}).items():
        columns[name] = pa.array(values)
    table = pa.table(columns)
    if class_names is not None:
        table = table.replace_schema_metadata({CLASSES_KEY: json.dumps(class_names).encode()})
    if shards == 1:
        pq.write_table(table, path, row_group_size=row_group_size)
        return path
    path.mkdir()
    bounds = np.linspace(0, table.num_rows, shards + 1).astype(int)
    for i in range(shards):
        part = table.slice(bounds[i], bounds[i + 1] - bounds[i])
        pq.write_table(part, path / f"part-{i:03d}.parquet", row_group_size=row_group_size)
    return path


@pytest.fixture(scope="session", autouse=True)
def sigint_not_ignored():
    """The tests send Ctrl-C to the processes they start. A suite started with SIGINT
    ignored (a shell's background job is) would pass that on to them, and they would rightly
    keep ignoring it: here it is handled, so that each child starts with the default."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    yield


@pytest.fixture
def small_run(tmp_path):
    """A 20-class run of 500 rows with ids and a slice column."""
    logits, labels = random_logits(500, 20, seed=1)
    rng = np.random.default_rng(2)
    source = rng.choice(["web", "mobile", "partner"], len(labels)).tolist()
    path = write_run(tmp_path / "run.parquet", labels, logits=logits, ids=np.arange(500),
                     extra={"source": source})
    return path, logits, labels, source


class Close(float):
    """A float equal to another within the rounding of a sum: 1e-12 of the larger of 1 and
    their size. The main pass adds its sums batch by batch (and a cluster partition by
    partition), so another batching, row-group split or engine moves their last bits."""

    def __eq__(self, other):
        if not isinstance(other, float):
            return NotImplemented
        a, b = float(self), float(other)
        if math.isnan(a) or math.isnan(b):  # unknown in both (a top-k run's calibrated sums)
            return math.isnan(a) and math.isnan(b)
        return a == b or abs(a - b) <= 1e-12 * max(1.0, abs(a), abs(b))

    def __ne__(self, other):
        equal = self.__eq__(other)
        return equal if equal is NotImplemented else not equal

    __hash__ = float.__hash__


def to_rounding(value):
    """A document whose floats compare equal within the rounding of a sum (Close)."""
    if isinstance(value, dict):
        return {key: to_rounding(item) for key, item in value.items()}
    if isinstance(value, list):
        return [to_rounding(item) for item in value]
    if isinstance(value, float):
        return Close(value)
    return value


def pipe_count(line: str) -> int:
    """Column separators of a pipe-table line: '|' not escaped by a backslash."""
    return len(re.findall(r"(?<!\\)\|", line))


def pipe_tables(markdown: str) -> list[list[str]]:
    """The pipe tables of a markdown text, each as its list of lines."""
    tables, current = [], []
    for line in markdown.splitlines():
        if line.startswith("|"):
            current.append(line)
        elif current:
            tables.append(current)
            current = []
    if current:
        tables.append(current)
    return tables


def assert_details_well_formed(markdown: str) -> None:
    """<details> folds are not nested, close, and leave a blank line after <summary> (and before
    </details>) so that GitHub renders the table inside."""
    lines = markdown.splitlines()
    depth = 0
    for i, line in enumerate(lines):
        if line.startswith("<details>"):
            assert depth == 0, "no nested folds"
            depth += 1
            assert "<summary>" in line and line.endswith("</summary>")
            assert lines[i + 1] == "", "a blank line after <summary> so the table renders"
        if line.startswith("</details>"):
            assert depth == 1 and lines[i - 1] == ""
            depth -= 1
    assert depth == 0
    assert markdown.count("<details>") == markdown.count("</details>")


def nulled(value, fill):
    """A document with every number (not bool) replaced by `fill`, recursively: what a
    renderer meets in a partial or hand-edited document."""
    if isinstance(value, dict):
        return {k: nulled(v, fill) for k, v in value.items()}
    if isinstance(value, list):
        return [nulled(v, fill) for v in value]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return fill
    return value


def load_schema(kind: str) -> dict:
    """The packaged JSON Schema of `report` or `compare` output."""
    from importlib import resources
    import json

    text = resources.files("metricdiff").joinpath(f"schema/{kind}.schema.json").read_text()
    return json.loads(text)
