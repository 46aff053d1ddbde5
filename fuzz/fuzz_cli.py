#!/usr/bin/env python
"""Fuzz the command line: random options (numbers at and past their edges, words, empty
values) on random paths (links and loops, FIFOs, dangling links, glob characters in real
names, badly encoded class files) must end with exit 0, 1 or 2 — never an internal error,
a traceback, a hang, or a changed input file.

    python fuzz/fuzz_cli.py --seconds 300
    python fuzz/fuzz_cli.py --iterations 100       # what the test runs

Findings go to fuzz/findings/cli-*.txt (the command line and what went wrong); exit code 1.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import random
import signal
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from typer.testing import CliRunner

from metricdiff.cli import app

FINDINGS = Path(__file__).resolve().parent / "findings"
TIMEOUT = 30  # seconds one command may take before it counts as a hang

NUMBERS = ["0", "1", "-1", "2", "15", "0.05", "0.5", "1e-9", "1e9", "nan", "inf", "-inf", "abc",
           "", "3,4", "0.2,0.7", "0.7,0.2", "-0"]
WORDS = ["nll", "accuracy", "ece", "macro_f1", "temperature", "nope", "", "label", "id", "source",
         "cluster", "logits", "probs", "table", "json", "markdown", "never", "worse", "not-better"]
REPORT_OPTIONS = {"--bins": NUMBERS, "--top-k": NUMBERS, "--worst": NUMBERS,
                  "--batch-size": NUMBERS, "--seed": NUMBERS, "--class-groups": NUMBERS,
                  "--prob-tolerance": NUMBERS, "--by": WORDS, "--id-col": WORDS,
                  "--label-col": WORDS, "--pred-col": WORDS, "--pred-kind": WORDS,
                  "--format": WORDS}
COMPARE_OPTIONS = {**{k: v for k, v in REPORT_OPTIONS.items()
                      if k not in ("--worst", "--batch-size")},
                   "--primary": WORDS, "--alpha": NUMBERS, "--min-effect": NUMBERS,
                   "--resamples": NUMBERS, "--fail-on": WORDS, "--top": NUMBERS,
                   "--cluster": WORDS, "--fdr": NUMBERS}
FLAGS = {"report": ["--cross-fit"], "compare": ["--paired-seeds", "--allow-partial", "--cross-fit"]}
ENGINES = ["local", "dask", "spark", ""]
# besides these, the address of a live LocalCluster the fuzzer starts (when distributed is
# installed): one that refuses connections, and addresses that are not addresses at all
SCHEDULERS = ["tcp://127.0.0.1:1", "nonsense", "", "tcp://[::1", "inproc://x"]


def build_world(root: Path) -> dict[str, list[str]]:
    """Runs and paths of every kind, in `root`; returns the paths by role."""
    rng = np.random.default_rng(0)
    n, k = 40, 4
    labels = rng.integers(0, k, n)
    cluster = (np.arange(n) // 4).astype(np.int64)

    def run(path: Path, seed: int, ids=True) -> str:
        logits = np.random.default_rng(seed).normal(size=(n, k)).astype(np.float32)
        columns = {"label": labels, "logits": pa.FixedSizeListArray.from_arrays(
            pa.array(logits.ravel()), k), "source": rng.choice(["a", "b"], n),
            "cluster": cluster}
        if ids:
            columns["id"] = np.arange(n)
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table(columns), path, row_group_size=16)
        return str(path)

    runs = [run(root / "a.parquet", 1), run(root / "b.parquet", 2),
            run(root / "r[1].parquet", 3), run(root / "noids.parquet", 4, ids=False)]
    folder = root / "shards"
    run(folder / "part-0.parquet", 5)
    os.symlink(folder, folder / "loop")
    for s in range(3):
        run(root / "seeds" / f"seed{s}" / "val.parquet", 10 + s)
    os.mkfifo(root / "fifo.parquet")
    os.symlink(root / "gone.parquet", root / "dangling.parquet")
    (root / "latin1.txt").write_bytes("caf\xe9\nb\nc\nd\n".encode("latin-1"))
    (root / "bom.txt").write_bytes("\ufeffw\nx\ny\nz\n".encode())
    (root / "names.json").write_text('["w", "x", null, "z"]')
    paths = runs + [str(folder), str(root / "fifo.parquet"), str(root / "dangling.parquet"),
                    str(root / "missing.parquet"), str(root / "*.parquet"),
                    f"{root}/seeds/seed*/", "/dev/null", str(root)]
    return {"paths": paths, "classes": [str(root / "latin1.txt"), str(root / "bom.txt"),
                                        str(root / "names.json"), str(root / "missing.txt")],
            "outputs": [str(root / "out.txt"), "/dev/null",
                        "/dev/full", str(root / "nofolder" / "x.txt"), str(root / "shards")]}


def random_command(rng: random.Random, world: dict[str, list[str]]) -> list[str]:
    command = rng.choice(["report", "compare"])
    options = REPORT_OPTIONS if command == "report" else COMPARE_OPTIONS
    args = [command]
    for _ in range(1 if command == "report" else rng.randint(2, 4)):
        path = rng.choice(world["paths"])
        if command == "compare" and rng.random() < 0.5:
            path = f"{rng.choice(['g', 'h'])}={path}"
        args.append(path)
    for name in rng.sample(sorted(options), rng.randint(0, 4)):
        args += [name, rng.choice(options[name])]
    if rng.random() < 0.2:
        args += ["--classes", rng.choice(world["classes"])]
    if rng.random() < 0.2:  # a file elsewhere, or (never to be destroyed) one of the inputs
        inputs = [a.split("=", 1)[-1] for a in args[1:]]
        args += ["--output", rng.choice(world["outputs"] + inputs[:1])]
    args += rng.sample(FLAGS[command], rng.randint(0, len(FLAGS[command])))
    if rng.random() < 0.15:
        args += ["--engine", rng.choice(ENGINES)]
    if rng.random() < 0.15:
        args += ["--scheduler", rng.choice(world["schedulers"])]
    return args


def _digests(root: Path) -> dict[str, str]:
    found = {}
    for path in root.rglob("*.parquet"):
        if path.is_file() and not path.is_symlink():
            found[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def _alarm(signum, frame):
    raise TimeoutError(f"no answer within {TIMEOUT} s")


def fuzz(seconds: float | None, iterations: int | None, seed: int) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    findings: list[tuple[str, str]] = []
    runner = CliRunner()
    previous = signal.signal(signal.SIGALRM, _alarm)
    try:
        with _live_scheduler() as address:
            return _fuzz(rng, runner, seconds, iterations, findings, address)
    finally:
        signal.signal(signal.SIGALRM, previous)


@contextlib.contextmanager
def _live_scheduler():
    """A LocalCluster of one worker for --engine dask commands to use, or None."""
    try:
        import distributed
    except ImportError:
        yield None
        return
    from metricdiff import cluster

    cluster.CONNECT_SECONDS = 2  # a refused address is reported after 2 s, not 10
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                                  host="127.0.0.1", dashboard_address=":0",
                                  silence_logs=50) as local:
        yield local.scheduler_address


def _fuzz(rng: random.Random, runner: CliRunner, seconds: float | None,
          iterations: int | None, findings: list[tuple[str, str]],
          scheduler: str | None) -> list[tuple[str, str]]:
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        world = build_world(root)
        world["schedulers"] = SCHEDULERS + ([scheduler] * 3 if scheduler else [])
        before = _digests(root)
        start, done = time.monotonic(), 0
        while (iterations is None or done < iterations) and (
                seconds is None or time.monotonic() - start < seconds):
            args = random_command(rng, world)
            signal.alarm(TIMEOUT)
            try:
                result = runner.invoke(app, args)
                problem = None
                if result.exit_code not in (0, 1, 2):
                    problem = f"exit {result.exit_code}: {result.output[-500:]}"
                elif result.exception is not None and not isinstance(result.exception,
                                                                       SystemExit):
                    problem = f"{type(result.exception).__name__}: {result.exception}"
                elif "Traceback" in result.output:
                    problem = "a traceback in the output"
            except TimeoutError as error:
                problem = str(error)
            finally:
                signal.alarm(0)
            after = _digests(root)
            if any(after.get(path) != digest for path, digest in before.items()):
                problem = "an input file changed"
                before = after
            if problem is not None:
                findings.append((" ".join(args), problem))
            done += 1
    print(f"{done} commands in {time.monotonic() - start:.0f} s", file=sys.stderr)
    return findings


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float)
    parser.add_argument("--iterations", type=int)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.seconds is None and args.iterations is None:
        args.seconds = 60.0
    findings = fuzz(args.seconds, args.iterations, args.seed)
    for i, (command, problem) in enumerate(findings):
        FINDINGS.mkdir(exist_ok=True)
        (FINDINGS / f"cli-{args.seed}-{i}.txt").write_text(f"metricdiff {command}\n{problem}\n")
        print(f"finding: metricdiff {command}\n  {problem}", file=sys.stderr)
    print(f"{len(findings)} findings")
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
