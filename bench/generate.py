"""Synthetic runs for the benchmark: deterministic, written in bounded memory.

A run is what metricdiff reads: one row per validation example with `id` (int64), `label`
(int64) and `logits` (fixed_size_list<float32, K>). Labels follow a Zipf-like law (a few
frequent classes, a long tail). Logits are standard normal noise with a boost on the true
class, so the top-1 accuracy is about 0.75 whatever K is.

Runs made with the same `label_seed` share their ids and labels, so they can be compared with
each other; `seed` only changes the logits.

    python bench/generate.py ROWS CLASSES SEED LABEL_SEED DATA_DIR

bench.py runs this as a child process: writing a run takes up to ~1.5 GB (the wide run), and a child
process spawned later by a larger parent would report the parent's memory as its own peak.
"""

from __future__ import annotations

import argparse
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from spec import RunSpec  # bench/ is on sys.path when run as a script

ROW_GROUP_ROWS = 10_000
ZIPF_EXPONENT = 1.0
# Multiplying the logits by this gives confidences like a trained model's (about 0.5-0.8)
# instead of the ~1% that unit-variance noise over thousands of classes would give.
LOGIT_SCALE = 3.0


def true_class_boost(classes: int) -> float:
    """The largest of K-1 standard normals is about sqrt(2 ln K); a boost a little above it
    makes the true class win about three times in four."""
    return float(np.sqrt(2.0 * np.log(classes)) + 0.25)


def zipf_labels(rows: int, classes: int, seed: int) -> np.ndarray:
    """Class c is drawn with probability proportional to 1 / (c + 1)."""
    weights = 1.0 / np.arange(1, classes + 1) ** ZIPF_EXPONENT
    rng = np.random.default_rng(seed)
    return rng.choice(classes, size=rows, p=weights / weights.sum()).astype(np.int64)


def schema(classes: int) -> pa.Schema:
    return pa.schema([
        ("id", pa.int64()),
        ("label", pa.int64()),
        ("logits", pa.list_(pa.float32(), classes)),  # a list size makes it fixed-size
    ])


def logits_chunk(rng: np.random.Generator, labels: np.ndarray, classes: int) -> np.ndarray:
    logits = rng.standard_normal((len(labels), classes), dtype=np.float32)
    logits[np.arange(len(labels)), labels] += true_class_boost(classes)
    logits *= LOGIT_SCALE
    return logits


def write_run(spec: RunSpec, path: str) -> None:
    """Write one run, ROW_GROUP_ROWS rows at a time: memory stays at about one row group."""
    labels = zipf_labels(spec.rows, spec.classes, spec.label_seed)  # 8 bytes a row: small
    rng = np.random.default_rng(spec.seed)
    tmp_path = path + ".tmp"
    with pq.ParquetWriter(tmp_path, schema(spec.classes), compression="zstd") as writer:
        for start in range(0, spec.rows, ROW_GROUP_ROWS):
            stop = min(start + ROW_GROUP_ROWS, spec.rows)
            logits = logits_chunk(rng, labels[start:stop], spec.classes)
            table = pa.table({
                "id": pa.array(np.arange(start, stop, dtype=np.int64)),
                "label": pa.array(labels[start:stop]),
                "logits": pa.FixedSizeListArray.from_arrays(pa.array(logits.ravel()),
                                                            spec.classes),
            }, schema=schema(spec.classes))
            writer.write_table(table, row_group_size=ROW_GROUP_ROWS)
    # Renamed only once complete, so an interrupted run never leaves a file that looks reusable.
    os.replace(tmp_path, path)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write one synthetic run, unless it exists.")
    for name in ("rows", "classes", "seed", "label_seed"):
        parser.add_argument(name, type=int)
    parser.add_argument("data_dir")
    args = parser.parse_args(argv)
    spec = RunSpec(args.rows, args.classes, args.seed, args.label_seed)
    os.makedirs(args.data_dir, exist_ok=True)
    path = os.path.join(args.data_dir, spec.file_name())
    if not os.path.exists(path):
        write_run(spec, path)
    print(path)


if __name__ == "__main__":
    main()
