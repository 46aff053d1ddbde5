"""The floor: the least any tool must do to compute a metric over a run.

Stream `label` and `logits` from each file in turn, turn each batch of logits into a
(rows, K) numpy array and touch every value once (the row maximum). No metric is computed;
this is what reading alone costs, and the benchmark states metricdiff's time as a multiple of
it.

    python bench/floor.py RUN.parquet [RUN.parquet ...]
"""

from __future__ import annotations

import sys

import numpy as np
import pyarrow.parquet as pq

# Same budget as metricdiff's reader (metricdiff.io.DEFAULT_BATCH_VALUES): about 4 million
# prediction values per batch, i.e. ~1,400 rows at K = 3,000, so both hold the same amount
# of data at a time.
BATCH_VALUES = 1 << 22


def read_run(path: str) -> tuple[int, float]:
    """Rows read and the sum of the row maxima (printed, so the work cannot be skipped)."""
    # pre_buffer=False: with pyarrow's default (True), iter_batches over the whole file first
    # buffers every row group's column chunks, so memory grows with the file (2.4 GB for a
    # 2.2 GB run) and reading is slower; a floor should be the cheap way to read.
    parquet_file = pq.ParquetFile(path, pre_buffer=False)
    classes = parquet_file.schema_arrow.field("logits").type.list_size
    batch_rows = max(1, BATCH_VALUES // classes)
    rows, total = 0, 0.0
    for batch in parquet_file.iter_batches(batch_size=batch_rows, columns=["label", "logits"]):
        labels = values_of(batch.column("label"))
        column = batch.column("logits")  # flatten() would import pyarrow.compute (0.08 s)
        values = column.values.slice(column.offset * classes, len(column) * classes)
        logits = values_of(values).reshape(-1, classes)
        rows += len(labels)
        total += float(logits.max(axis=1).sum())
    return rows, total


def values_of(array) -> np.ndarray:
    """The values buffer of a null-free numeric array, as numpy. Array.to_numpy() would do,
    but imports pandas on first use (0.2 s); the floor should not pay for that."""
    dtype = np.dtype(array.type.to_pandas_dtype())
    return np.frombuffer(array.buffers()[1], dtype=dtype, count=len(array),
                         offset=array.offset * dtype.itemsize)


def main(paths: list[str]) -> None:
    for path in paths:
        rows, total = read_run(path)
        print(f"{path}: {rows} rows, sum of row maxima {total:.6g}")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("usage: python bench/floor.py RUN.parquet [RUN.parquet ...]")
    main(sys.argv[1:])
