"""Synthetic runs for the benchmark: deterministic, written in bounded memory.

A run is what metricdiff reads: one row per validation example with `id` (int64), `label`
(int64) and `logits` (fixed_size_list<float32, K>). Labels follow a Zipf-like law (a few
frequent classes, a long tail). Logits are standard normal noise with a boost on the true
class, so the top-1 accuracy is about 0.75 whatever K is.

Runs made with the same `label_seed` share their ids and labels, so they can be compared with
each other; `seed` only changes the logits.

A top-k run (TOPK > 0) is what token-level evaluation of a language model saves: `id`,
`label` (int64), `topk_ids` (fixed_size_list<int32, k>), `topk_logprobs`
(fixed_size_list<float32, k>, descending) and `label_logprob` (float32), CLASSES being the
vocabulary. The true class is first about half the time, lower in the list or not listed
otherwise.

    python bench/generate.py ROWS CLASSES SEED LABEL_SEED DATA_DIR [TOPK]

bench.py runs this as a child process: writing a run takes up to ~1.5 GB (the wide run), and a child
process spawned later by a larger parent would report the parent's memory as its own peak.
"""

from __future__ import annotations

import argparse
import json
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


TOPK_ROW_GROUP_ROWS = 500_000


def write_topk_run(spec: RunSpec, path: str) -> None:
    """Write a top-k run, TOPK_ROW_GROUP_ROWS rows at a time."""
    labels = zipf_labels(spec.rows, spec.classes, spec.label_seed)
    rng = np.random.default_rng(spec.seed)
    k = spec.topk
    step = spec.classes // (k + 1)  # listed ids label + j * step (mod V) are all different
    topk_schema = pa.schema([("id", pa.int64()), ("label", pa.int64()),
                             ("topk_ids", pa.list_(pa.int32(), k)),
                             ("topk_logprobs", pa.list_(pa.float32(), k)),
                             ("label_logprob", pa.float32())],
                            # the vocabulary's names: K is known, not inferred from the ids seen
                            metadata={b"metricdiff.classes": json.dumps(
                                [f"t{c}" for c in range(spec.classes)]).encode()})
    tmp_path = path + ".tmp"
    with pq.ParquetWriter(tmp_path, topk_schema, compression="zstd") as writer:
        for start in range(0, spec.rows, TOPK_ROW_GROUP_ROWS):
            stop = min(start + TOPK_ROW_GROUP_ROWS, spec.rows)
            n, label = stop - start, labels[start:stop]
            # descending scores of the k listed classes and of the rest of the vocabulary
            scores = -np.cumsum(rng.exponential(0.8, (n, k + 1)), axis=1)
            # the unlisted classes together: a share of the mass (a few percent at least, so
            # that float32 rounding never makes the listed ones add up to more than 1)
            scores[:, k] = np.maximum(scores[:, k] + np.log(50.0), scores[:, 0] - 3.0)
            log_total = np.log(np.exp(scores).sum(axis=1))
            logprobs = (scores[:, :k] - log_total[:, None]).astype(np.float32)
            # the true class's position: first about half the time, sometimes not listed (k)
            rank = np.minimum(rng.geometric(0.5, n) - 1, k)
            offsets = np.arange(k)[None, :] - np.where(rank < k, rank, -1)[:, None]
            ids = ((label[:, None] + offsets * step) % spec.classes).astype(np.int32)
            listed = rank < k
            label_logprob = np.where(
                listed, logprobs[np.arange(n), np.minimum(rank, k - 1)],
                logprobs[:, -1] - rng.exponential(1.0, n).astype(np.float32))
            table = pa.table({
                "id": pa.array(np.arange(start, stop, dtype=np.int64)),
                "label": pa.array(label),
                "topk_ids": pa.FixedSizeListArray.from_arrays(pa.array(ids.ravel()), k),
                "topk_logprobs": pa.FixedSizeListArray.from_arrays(pa.array(logprobs.ravel()),
                                                                   k),
                "label_logprob": pa.array(label_logprob.astype(np.float32)),
            }, schema=topk_schema)
            writer.write_table(table, row_group_size=TOPK_ROW_GROUP_ROWS)
    os.replace(tmp_path, path)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write one synthetic run, unless it exists.")
    for name in ("rows", "classes", "seed", "label_seed"):
        parser.add_argument(name, type=int)
    parser.add_argument("data_dir")
    parser.add_argument("topk", type=int, nargs="?", default=0)
    args = parser.parse_args(argv)
    spec = RunSpec(args.rows, args.classes, args.seed, args.label_seed, args.topk)
    os.makedirs(args.data_dir, exist_ok=True)
    path = os.path.join(args.data_dir, spec.file_name())
    if not os.path.exists(path):
        (write_topk_run if spec.topk else write_run)(spec, path)
    print(path)


if __name__ == "__main__":
    main()
