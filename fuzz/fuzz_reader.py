#!/usr/bin/env python
"""Fuzz the reading and validation path: mutated Parquet files must either give a report or
raise metricdiff's own error, never anything else.

    python fuzz/fuzz_reader.py --seconds 300          # run for five minutes
    python fuzz/fuzz_reader.py --iterations 200       # a fixed number of inputs (the test does)

Inputs are mutations (bit flips, overwritten, deleted, duplicated or inserted byte runs,
truncation, splices of two seeds) of small valid runs built in memory by `seed_corpus()`, so
the corpus is a few kilobytes and needs no files. A finding is written to fuzz/findings/ with
its traceback, and the exit code is 1.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

import metricdiff
from metricdiff.errors import MetricdiffError

FINDINGS = Path(__file__).resolve().parent / "findings"


def _bytes_of(table: pa.Table, **options) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink, **options)
    return sink.getvalue()


def seed_corpus() -> list[bytes]:
    """Small valid runs of every layout the reader accepts."""
    rng = np.random.default_rng(0)
    n, k = 24, 5
    labels = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k)).astype(np.float32)
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    fixed = pa.FixedSizeListArray.from_arrays(pa.array(logits.ravel()), k)
    names = json.dumps([f"c{i}" for i in range(k)]).encode()
    order = np.argsort(-logits, axis=1)[:, :3]
    log_probs = np.log(probs)
    return [
        _bytes_of(pa.table({"id": np.arange(n), "label": labels, "logits": fixed}),
                  row_group_size=8),
        _bytes_of(pa.table({"label": labels, "probs": [list(map(float, r)) for r in probs],
                            "source": rng.choice(["a", "b"], n)}), compression="zstd"),
        _bytes_of(pa.table({"label": [f"c{i}" for i in labels], "logits": fixed})
                  .replace_schema_metadata({b"metricdiff.classes": names}),
                  write_page_checksum=True),
        _bytes_of(pa.table({f"logit_{i}": logits[:, i] for i in range(k)} | {"label": labels}),
                  compression="none"),
        _bytes_of(pa.table({"label": labels,
                            "topk_ids": pa.FixedSizeListArray.from_arrays(
                                pa.array(order.ravel().astype(np.int64)), 3),
                            "topk_logprobs": pa.FixedSizeListArray.from_arrays(
                                pa.array(np.take_along_axis(log_probs, order, 1).ravel()), 3),
                            "label_logprob": log_probs[np.arange(n), labels]})),
    ]


def mutate(data: bytes, corpus: list[bytes], rng: np.random.Generator) -> bytes:
    out = bytearray(data)
    for _ in range(int(rng.integers(1, 4))):
        if not out:
            break
        choice = int(rng.integers(0, 7))
        at = int(rng.integers(0, len(out)))
        run = int(rng.integers(1, 17))
        if choice == 0:  # flip one bit
            out[at] ^= 1 << int(rng.integers(0, 8))
        elif choice == 1:  # overwrite a run with random bytes
            out[at:at + run] = rng.integers(0, 256, run, dtype=np.uint8).tobytes()
        elif choice == 2:  # overwrite with an "interesting" value
            value = rng.choice([0x00, 0xFF, 0x7F, 0x80])
            out[at:at + run] = bytes([int(value)]) * run
        elif choice == 3:  # delete a run
            del out[at:at + run]
        elif choice == 4:  # duplicate a run
            out[at:at] = out[at:at + run]
        elif choice == 5:  # truncate
            del out[at:]
        else:  # splice the head of this input with the tail of another seed
            other = corpus[int(rng.integers(0, len(corpus)))]
            cut = int(rng.integers(0, len(other)))
            out = out[:at] + bytearray(other[cut:])
    return bytes(out)


def check(data: bytes, folder: str) -> str | None:
    """Run the reader on one input; return a traceback when it fails in a way it must not."""
    path = os.path.join(folder, "input.parquet")
    with open(path, "wb") as handle:
        handle.write(data)
    try:
        metricdiff.report(path, batch_values=64).to_dict()
    except MetricdiffError:
        return None
    except Exception:  # anything else is a finding
        return traceback.format_exc()
    return None


def fuzz(seconds: float | None, iterations: int | None, seed: int) -> list[tuple[bytes, str]]:
    corpus = seed_corpus()
    rng = np.random.default_rng(seed)
    findings = []
    deadline = time.monotonic() + seconds if seconds else None
    done = 0
    with tempfile.TemporaryDirectory() as folder:
        for data in corpus:  # the seeds themselves must read cleanly
            assert check(data, folder) is None
        while (iterations is None or done < iterations) and (
                deadline is None or time.monotonic() < deadline):
            data = mutate(corpus[int(rng.integers(0, len(corpus)))], corpus, rng)
            problem = check(data, folder)
            if problem:
                findings.append((data, problem))
            done += 1
    print(f"{done} inputs, {len(findings)} findings", file=sys.stderr)
    return findings


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=None)
    parser.add_argument("--iterations", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.seconds is None and args.iterations is None:
        args.seconds = 60.0
    findings = fuzz(args.seconds, args.iterations, args.seed)
    if findings:
        FINDINGS.mkdir(exist_ok=True)
        for i, (data, problem) in enumerate(findings):
            (FINDINGS / f"finding-{args.seed}-{i}.parquet").write_bytes(data)
            (FINDINGS / f"finding-{args.seed}-{i}.txt").write_text(problem)
        print(findings[0][1], file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
