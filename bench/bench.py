"""Benchmark metricdiff against the cost of reading its input, and against a by-hand script.

    python bench/bench.py                  # default sizes (several minutes, ~5 GB of data)
    python bench/bench.py --quick          # tiny sizes, a smoke test
    python bench/bench.py --only report,scaling --repeat 5

Every command runs in its own child process; os.wait4 gives that child's own peak resident
memory (ru_maxrss), and the wall time is taken around it. Results are stated as ratios to a
"floor" (bench/floor.py: stream the same columns and touch every value once) measured in the
same run on the same machine, so they mean something on any machine. See bench/README.md.
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import importlib.util
import json
import os
import platform
import resource
import signal
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from importlib import metadata

from spec import RunSpec  # bench/ is on sys.path when run as a script

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH_DIR)
MEASUREMENTS = ("floor", "naive", "report", "compare3", "scaling", "wide", "long", "groups",
                "topk", "dask_groups", "memory", "exponents", "startup")

# Targets from the issues; where the engine issue (#15) set a new one, it is that one.
REPORT_MAX_FLOOR_RATIO = 0.9  # decoding on both cores while the arithmetic keeps up
MIN_SPEEDUP_OVER_NAIVE = 8.0
PEAK_LIMIT_MIB = 1024.0
PEAK_FLATNESS = 0.10  # the larger run's peak within 10% of the smaller one's
COMPARE3_MAX_FLOOR_RATIO = 1.3
LONG_COMPARE_MAX_FLOOR_RATIO = 1.3
GROUP_COMPARE_MAX_FLOOR_RATIO = 1.2
DASK_MAX_LOCAL_RATIO = 1.5  # top-k compare on a 2-worker LocalCluster vs the local engine
MAX_BYTES_PER_EXAMPLE = 40.0  # the local engine's peak memory per example per run
# Start-up (the terminal issue): `--version` and `-h` answer at interpreter speed, i.e. they
# import the command line (typer) and nothing numeric. Measured against `python -c pass`.
STARTUP_MAX_BASELINE_RATIO = 5.0  # typer alone costs about 2x; numpy alone about 5x
STARTUP_REPEAT = 15  # each start-up command is short: more runs for a stable median
TINY_RUN = RunSpec(200, 10, seed=7)  # the tiny run of the start-up measurement


# ----------------------------------------------------------------------------- sizes

@dataclass(frozen=True)
class Sizes:
    rows: int
    classes: int
    scaling_rows: int
    wide_rows: int
    wide_classes: int
    long_rows: int
    long_classes: int
    group_rows: int
    group_runs: int  # runs per group: two groups of seeds, `group_runs` each
    topk_rows: int  # rows of each top-k run compared on both engines
    topk_listed: int  # k of the top-k runs
    topk_vocabulary: int  # classes of the top-k runs (a language model's vocabulary)
    exponent_rows: int  # the smallest run of the scaling exponents (then 2x and 4x)
    exponent_classes: int  # the fewest classes of the scaling exponents (then 2x and 4x)


DEFAULT_SIZES = Sizes(rows=50_000, classes=3_000, scaling_rows=200_000, wide_rows=5_000,
                      wide_classes=30_000, long_rows=1_000_000, long_classes=100,
                      group_rows=60_000, group_runs=5, topk_rows=20_000_000, topk_listed=20,
                      topk_vocabulary=50_000, exponent_rows=50_000, exponent_classes=1_000)
QUICK_SIZES = Sizes(rows=5_000, classes=300, scaling_rows=20_000, wide_rows=500,
                    wide_classes=3_000, long_rows=100_000, long_classes=100,
                    group_rows=6_000, group_runs=3, topk_rows=200_000, topk_listed=20,
                    topk_vocabulary=50_000, exponent_rows=5_000, exponent_classes=100)


@dataclass(frozen=True)
class Runs:
    """The synthetic runs. The main run is also the first of the three compared runs; the
    compared runs share ids and labels (same label seed) and differ in the logits' seed."""

    main: RunSpec
    compared: tuple[RunSpec, RunSpec, RunSpec]
    scaling: RunSpec
    wide: RunSpec
    long_pair: tuple[RunSpec, RunSpec]
    groups: tuple[RunSpec, ...]  # the baseline group's runs, then the candidate group's
    topk_pair: tuple[RunSpec, RunSpec]
    topk_groups: tuple[RunSpec, ...]  # two groups of two top-k runs, a quarter of the rows
    by_rows: tuple[RunSpec, ...]  # the scaling exponents: rows x1, x2, x4
    by_classes: tuple[RunSpec, ...]  # classes x1, x2, x4
    by_runs: tuple[RunSpec, ...]  # 8 runs of the smallest size: compared 2, 4 and 8 at once
    tiny: RunSpec = TINY_RUN  # the same at every size: start-up is about imports, not data

    @classmethod
    def from_sizes(cls, s: Sizes) -> "Runs":
        compared = tuple(RunSpec(s.rows, s.classes, seed=seed) for seed in (1, 2, 3))
        return cls(main=compared[0], compared=compared,
                   scaling=RunSpec(s.scaling_rows, s.classes, seed=1),
                   wide=RunSpec(s.wide_rows, s.wide_classes, seed=1),
                   long_pair=(RunSpec(s.long_rows, s.long_classes, seed=1),
                              RunSpec(s.long_rows, s.long_classes, seed=2)),
                   groups=tuple(RunSpec(s.group_rows, s.classes, seed=100 + i)
                                for i in range(2 * s.group_runs)),
                   topk_pair=tuple(RunSpec(s.topk_rows, s.topk_vocabulary, seed=seed,
                                           topk=s.topk_listed) for seed in (1, 2)),
                   topk_groups=tuple(RunSpec(s.topk_rows // 4, s.topk_vocabulary, seed=seed,
                                             topk=s.topk_listed) for seed in (1, 2, 3, 4)),
                   by_rows=tuple(RunSpec(s.exponent_rows * m, s.exponent_classes, seed=1)
                                 for m in (1, 2, 4)),
                   by_classes=tuple(RunSpec(s.exponent_rows, s.exponent_classes * m, seed=1)
                                    for m in (1, 2, 4)),
                   by_runs=tuple(RunSpec(s.exponent_rows, s.exponent_classes, seed=seed)
                                 for seed in range(1, 9)))


def size_text(spec: RunSpec, count: int = 1) -> str:
    text = f"{spec.rows:,} × {spec.classes:,}"
    if spec.topk:
        text = f"{spec.rows:,} × top {spec.topk} of {spec.classes:,}"
    return f"{count} × {text}" if count > 1 else text


# ----------------------------------------------------------------------------- measuring

@dataclass
class Measurement:
    """Repeated runs of one command: wall time in seconds, peak RSS in MiB, exit code."""

    command: list[str]
    walls: list[float] = field(default_factory=list)
    peaks_mib: list[float] = field(default_factory=list)
    exit_codes: list[int] = field(default_factory=list)
    timed_out: bool = False
    stderr_tail: str = ""
    last_stderr: str = ""  # the last line the command wrote to stderr (bench/dask_compare.py)
    load_after: list[float] = field(default_factory=list)  # 1-minute load average, each run
    source_versions: list[str] = field(default_factory=list)  # metricdiff_source_hash, each run

    @property
    def ok(self) -> bool:
        return bool(self.exit_codes) and all(code == 0 for code in self.exit_codes)

    @property
    def wall(self) -> float:
        return statistics.median(self.walls)

    @property
    def peak_mib(self) -> float:
        return max(self.peaks_mib)

    def failure(self) -> str:
        if self.timed_out:
            return "killed after --timeout"
        code = next(code for code in self.exit_codes if code != 0)
        if code == -signal.SIGKILL:
            return "killed by SIGKILL: out of memory?"
        return f"exit {code}"


@dataclass
class ChildResult:
    wall: float  # seconds
    peak_mib: float  # ru_maxrss of the child, in MiB
    exit_code: int  # negative: killed by that signal
    timed_out: bool


def run_child(command: list[str], stderr_path: str, timeout: float) -> ChildResult:
    """Run one command in its own process and measure it.

    A child's ru_maxrss starts from its parent's: Linux carries the high-water RSS of the
    address space the child had before exec (a copy of ours, or ours itself with vfork) into
    the child's figure. So this process must stay small: it imports neither numpy nor pyarrow
    and writes the runs through a child process (bench/generate.py).
    """
    timed_out = threading.Event()

    def kill(pid: int) -> None:
        # os.kill rather than Popen.kill: that one polls the child from this other thread,
        # which could reap it before our wait4 does and lose its rusage.
        timed_out.set()
        os.kill(pid, signal.SIGKILL)

    with open(stderr_path, "wb") as stderr:
        start = time.perf_counter()
        child = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=stderr)
        timer = threading.Timer(timeout, kill, (child.pid,))
        timer.start()
        try:
            # wait4 reports the resources of this child alone, unlike getrusage(RUSAGE_CHILDREN)
            # which accumulates (and maximises) over every child so far.
            _, status, usage = os.wait4(child.pid, 0)
        finally:
            timer.cancel()
        wall = time.perf_counter() - start
    child.returncode = os.waitstatus_to_exitcode(status)  # tell Popen it has been reaped
    # ru_maxrss is in KiB on Linux
    return ChildResult(wall, usage.ru_maxrss / 1024.0, child.returncode, timed_out.is_set())


def last_line(path: str) -> str:
    with open(path, encoding="utf-8", errors="replace") as f:
        lines = [line.strip() for line in f if line.strip()]
    return lines[-1] if lines else ""


@dataclass
class Command:
    label: str  # for the progress lines
    argv: list[str]


class Bench:
    """Writes the runs and measures commands on them. Each distinct command is measured once
    per benchmark, however many results use it."""

    def __init__(self, runs: Runs, data_dir: str, repeat: int, timeout: float):
        self.runs = runs
        self.data_dir = data_dir
        self.repeat = repeat
        self.timeout = timeout
        self.stderr_path = os.path.join(data_dir, "last_stderr.txt")
        self.measured: dict[tuple[str, ...], Measurement] = {}
        self.paths: dict[RunSpec, str] = {}
        self.generation_seconds = 0.0

    def path(self, spec: RunSpec) -> str:
        """The run's file, written first if it is not there yet."""
        if spec not in self.paths:
            path = os.path.join(self.data_dir, spec.file_name())
            if os.path.exists(path):
                progress(f"  reusing   {shown_path(path)}")
            else:
                self.write_run(spec, path)
            self.paths[spec] = path
        return self.paths[spec]

    def write_run(self, spec: RunSpec, path: str) -> None:
        command = [sys.executable, os.path.join(BENCH_DIR, "generate.py"), str(spec.rows),
                   str(spec.classes), str(spec.seed), str(spec.label_seed), self.data_dir,
                   str(spec.topk)]
        child = run_child(command, self.stderr_path, self.timeout)
        self.generation_seconds += child.wall
        if child.exit_code != 0:
            raise SystemExit(f"bench: writing {path} failed: {last_line(self.stderr_path)}")
        progress(f"  wrote     {shown_path(path)} ({size_text(spec)}) in {child.wall:.1f} s, "
                 f"peak {child.peak_mib:,.0f} MiB")

    def measure(self, *commands: Command, repeat: int | None = None) -> list[Measurement]:
        """Measure the commands in turns (a, b, a, b, ...), so that a command and its floor see
        the same load on the machine; a command measured before is not run again. ``repeat``
        overrides --repeat (short commands need more runs)."""
        results, pending = [], []
        for command in commands:
            key = tuple(command.argv)
            if key not in self.measured:
                self.measured[key] = Measurement(command=command.argv)
                pending.append((command.label, self.measured[key]))
            results.append(self.measured[key])
        for i in range(repeat or self.repeat):
            for label, m in pending:
                if m.ok or not m.exit_codes:  # repeating a failure (say, out of memory) is futile
                    self.run_once(label, m, i)
        return results

    def run_once(self, label: str, m: Measurement, i: int) -> None:
        m.source_versions.append(metricdiff_source_hash())
        child = run_child(m.command, self.stderr_path, self.timeout)
        m.walls.append(child.wall)
        m.peaks_mib.append(child.peak_mib)
        m.exit_codes.append(child.exit_code)
        m.timed_out |= child.timed_out
        m.load_after.append(round(os.getloadavg()[0], 2))
        m.last_stderr = last_line(self.stderr_path)
        progress(f"  {label:<34} #{i + 1}: {child.wall:8.2f} s {child.peak_mib:9,.0f} MiB"
                 f"  exit {child.exit_code}  load {m.load_after[-1]:.2f}")
        if child.exit_code != 0:
            m.stderr_tail = last_line(self.stderr_path)
            progress(f"    stderr: {m.stderr_tail}")

    # The commands. sys.executable: the children use this same interpreter and packages.
    def floor(self, specs: list[RunSpec]) -> Command:
        return Command(f"floor {size_text(specs[0], len(specs))}",
                       [sys.executable, os.path.join(BENCH_DIR, "floor.py"),
                        *(self.path(s) for s in specs)])

    def naive(self, spec: RunSpec) -> Command:
        return Command(f"naive {size_text(spec)}",
                       [sys.executable, os.path.join(BENCH_DIR, "naive.py"), self.path(spec)])

    def report(self, spec: RunSpec) -> Command:
        return Command(f"report {size_text(spec)}",
                       [sys.executable, "-m", "metricdiff", "report", self.path(spec),
                        "--format", "json"])

    def compare(self, specs: list[RunSpec]) -> Command:
        return Command(f"compare {size_text(specs[0], len(specs))}",
                       [sys.executable, "-m", "metricdiff", "compare",
                        *(self.path(s) for s in specs), "--format", "json"])


    def dask_compare(self, specs: list[RunSpec], groups: bool = False) -> Command:
        """`groups`: the first half of the runs as group `a`, the second as group `b`."""
        half = len(specs) // 2
        named = [(f"{'a' if i < half else 'b'}=" if groups else "") + self.path(spec)
                 for i, spec in enumerate(specs)]
        what = f"groups {half} vs {half} × {size_text(specs[0])}" if groups else size_text(
            specs[0], len(specs))
        return Command(f"compare --engine dask {what}",
                       [sys.executable, os.path.join(BENCH_DIR, "dask_compare.py"), *named])

    def startup(self) -> list[Command]:
        """The baseline (the interpreter starting and stopping), then `--version`, `-h` and
        the table report of a tiny run, as a user's shell starts them (stdout to /dev/null)."""
        metricdiff = [sys.executable, "-m", "metricdiff"]
        return [Command("python -c pass", [sys.executable, "-c", "pass"]),
                Command("metricdiff --version", metricdiff + ["--version"]),
                Command("metricdiff -h", metricdiff + ["-h"]),
                Command(f"report {size_text(self.runs.tiny)}",
                        metricdiff + ["report", self.path(self.runs.tiny)])]

    def compare_groups(self, specs: list[RunSpec]) -> Command:
        """The first half of the runs as group `a`, the second as group `b`."""
        half = len(specs) // 2
        named = [f"{'a' if i < half else 'b'}={self.path(spec)}" for i, spec in enumerate(specs)]
        return Command(f"compare groups {half} vs {half} × {size_text(specs[0])}",
                       [sys.executable, "-m", "metricdiff", "compare", *named,
                        "--format", "json"])


def metricdiff_source_hash() -> str:
    """A digest of metricdiff's source files. Others may edit the (editable) package while
    the benchmark runs; a change shows up as a second digest in the results."""
    spec = importlib.util.find_spec("metricdiff")  # finds the package without importing it
    package_dir = (list(spec.submodule_search_locations)[0] if spec else
                   os.path.join(ROOT, "metricdiff"))
    digest = hashlib.sha256()
    for path in sorted(glob.glob(os.path.join(package_dir, "**", "*.py"), recursive=True)):
        digest.update(os.path.relpath(path, package_dir).encode())
        try:
            with open(path, "rb") as f:
                digest.update(f.read())
        except OSError:  # deleted between listing and reading
            pass
    return digest.hexdigest()[:12]


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- results

@dataclass
class Row:
    """One line of the results table, and the target it checks (if any)."""

    measurement: str
    size: str
    wall: float | None
    peak_mib: float | None
    ratio: str
    target: str = "—"
    result: str = ""  # PASS, MISS, or why the command failed
    value: float | None = None  # the number the target is about, for results.json


def ratio(numerator: Measurement, denominator: Measurement) -> float | None:
    if numerator.ok and denominator.ok:
        return numerator.wall / denominator.wall
    return None


def verdict(passed: bool | None, *measurements: Measurement) -> str:
    for m in measurements:
        if not m.ok:
            return f"MISS ({m.failure()})"
    return "PASS" if passed else "MISS"


def measured_row(name: str, size: str, m: Measurement, ratio_text: str, **extra) -> Row:
    return Row(name, size, m.wall if m.walls else None, m.peak_mib if m.peaks_mib else None,
               ratio_text, **extra)


def floor_row(b: Bench, specs: list[RunSpec]) -> Row:
    [m] = b.measure(b.floor(specs))
    name = "floor: read 1 run" if len(specs) == 1 else f"floor: read {len(specs)} runs"
    return measured_row(name, size_text(specs[0], len(specs)), m, "1.00 (the floor)",
                        result="" if m.ok else f"FAILED ({m.failure()})")


def floor_ratio_row(name: str, specs: list[RunSpec], m: Measurement, floor: Measurement,
                    limit: float | None) -> Row:
    """A command whose wall time is judged against the floor of reading the same runs;
    limit None: the ratio is only informative and the target is to complete."""
    value = ratio(m, floor)
    # three decimals: 1.302 must not read as 1.30 next to a 1.3 limit it misses
    ratio_text = f"{value:.3f}× floor" if value is not None else "—"
    if limit is None:
        return measured_row(name, size_text(specs[0], len(specs)), m, ratio_text,
                            target="completes (exit 0)", result=verdict(True, m), value=value)
    return measured_row(name, size_text(specs[0], len(specs)), m, ratio_text,
                        target=f"≤ {limit:g}× floor",
                        result=verdict(value is not None and value <= limit, m, floor),
                        value=value)


def report_row(b: Bench) -> Row:
    specs = [b.runs.main]
    floor, report = b.measure(b.floor(specs), b.report(specs[0]))
    return floor_ratio_row("report", specs, report, floor, REPORT_MAX_FLOOR_RATIO)


def naive_row(b: Bench) -> Row:
    _, report, naive = b.measure(b.floor([b.runs.main]), b.report(b.runs.main),
                                 b.naive(b.runs.main))
    speedup = ratio(naive, report)
    return measured_row("naive: pandas + scikit-learn", size_text(b.runs.main), naive,
                        f"report {speedup:.1f}× faster" if speedup is not None else "—",
                        target=f"report ≥ {MIN_SPEEDUP_OVER_NAIVE:g}× faster",
                        result=verdict(speedup is not None
                                       and speedup >= MIN_SPEEDUP_OVER_NAIVE, naive, report),
                        value=speedup)


def scaling_row(b: Bench) -> Row:
    small, large = b.measure(b.report(b.runs.main), b.report(b.runs.scaling))
    growth = large.peak_mib / small.peak_mib if small.ok and large.ok else None
    passed = (growth is not None and abs(growth - 1.0) <= PEAK_FLATNESS
              and max(small.peak_mib, large.peak_mib) <= PEAK_LIMIT_MIB)
    return measured_row("report (scaling)", size_text(b.runs.scaling), large,
                        f"peak {growth:.2f}× the {b.runs.main.rows:,}-row peak"
                        if growth is not None else "—",
                        target=f"peak ≤ {PEAK_LIMIT_MIB:,.0f} MiB at both sizes, "
                               f"within {PEAK_FLATNESS:.0%} of each other",
                        result=verdict(passed, small, large), value=growth)


def compare3_row(b: Bench) -> Row:
    specs = list(b.runs.compared)
    floor, compare = b.measure(b.floor(specs), b.compare(specs))
    return floor_ratio_row("compare3", specs, compare, floor, COMPARE3_MAX_FLOOR_RATIO)


def wide_row(b: Bench) -> Row:
    specs = [b.runs.wide]
    floor, report = b.measure(b.floor(specs), b.report(specs[0]))
    return floor_ratio_row("report (wide)", specs, report, floor, None)


def long_row(b: Bench) -> Row:
    specs = list(b.runs.long_pair)
    floor, compare = b.measure(b.floor(specs), b.compare(specs))
    return floor_ratio_row("compare (long)", specs, compare, floor,
                           LONG_COMPARE_MAX_FLOOR_RATIO)


def groups_row(b: Bench) -> Row:
    specs = list(b.runs.groups)
    floor, compare = b.measure(b.floor(specs), b.compare_groups(specs))
    half = len(specs) // 2
    return floor_ratio_row(f"compare groups ({half} vs {half} runs)", specs, compare, floor,
                           GROUP_COMPARE_MAX_FLOOR_RATIO)


def topk_row(b: Bench) -> Row:
    """The same comparison on the Dask engine (a LocalCluster of one worker per core, started
    by the command) and on the local engine, in turns."""
    specs = list(b.runs.topk_pair)
    # minutes each at the default size: measured once, whatever --repeat says
    local, dask = b.measure(b.compare(specs), b.dask_compare(specs), repeat=1)
    return dask_row("compare, Dask engine (2-worker LocalCluster) vs local engine",
                    size_text(specs[0], len(specs)), local, dask)


def dask_groups_row(b: Bench) -> Row:
    """Two groups of two top-k runs on both engines: the groups' sums on the workers."""
    specs = list(b.runs.topk_groups)
    local, dask = b.measure(b.compare_groups(specs), b.dask_compare(specs, groups=True),
                            repeat=1)
    return dask_row("compare groups (2 vs 2 runs), Dask engine vs local engine",
                    f"4 × {size_text(specs[0])}", local, dask)


def dask_row(name: str, size: str, local: Measurement, dask: Measurement) -> Row:
    value = ratio(dask, local)
    try:
        cluster = json.loads(dask.last_stderr)
    except ValueError:
        cluster = {}
    peaks = ", ".join(f"{p:,.0f}" for p in cluster.get("worker_peak_mib", []))
    text = f"{value:.2f}× local" if value is not None else "—"
    if cluster:
        text += (f"; workers' peaks {peaks} MiB; {cluster['tasks']} tasks of "
                 f"{cluster['task_seconds_median']:.2f} s (median); the client's statistics "
                 f"{cluster['statistics_seconds']:.1f} s on "
                 f"{cluster['gathered_bytes'] / cluster['examples']:.0f} B per example "
                 "held on the client")
    return measured_row(name, size, dask, text, target=f"≤ {DASK_MAX_LOCAL_RATIO:g}× local",
                        result=verdict(value is not None and value <= DASK_MAX_LOCAL_RATIO,
                                       dask, local), value=value)


def memory_row(b: Bench, specs: list[RunSpec]) -> Row:
    """What a local comparison's peak memory grows by per example per run: the slope between
    the runs and runs of a quarter of their rows (the same but for the row count), so that
    what does not grow with rows (interpreter, libraries, batches, K-wide tables) is left
    out."""
    quarter = [replace(spec, rows=spec.rows // 4) for spec in specs]
    small, large = b.measure(b.compare(quarter), b.compare(specs), repeat=1)  # as topk_row
    added_rows = sum(spec.rows for spec in specs) - sum(spec.rows for spec in quarter)
    value = ((large.peak_mib - small.peak_mib) * 2 ** 20 / added_rows
             if small.ok and large.ok else None)
    text = (f"{value:.0f} B (peaks {small.peak_mib:,.0f} MiB at a quarter of the rows, "
            f"{large.peak_mib:,.0f} MiB)" if value is not None else "—")
    return measured_row("local engine: memory per example per run (compare)",
                        size_text(specs[0], len(specs)), large, text,
                        target=f"≤ {MAX_BYTES_PER_EXAMPLE:g} B",
                        result=verdict(value is not None and value <= MAX_BYTES_PER_EXAMPLE,
                                       small, large), value=value)


def growth_exponent(sizes: list[float], values: list[float]) -> float:
    """The slope of log(value) on log(size), least squares: value ~ size^slope."""
    import math

    xs, ys = [math.log(x) for x in sizes], [math.log(y) for y in values]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    return (sum((x - mx) * (y - my) for x, y in zip(xs, ys))
            / sum((x - mx) ** 2 for x in xs))


def exponent_rows(b: Bench) -> list[Row]:
    """How wall time and peak memory grow with rows, classes and runs: three sizes each,
    doubling; the exponent of a power law through the three."""
    r = b.runs
    cases = [("rows", [s.rows for s in r.by_rows], [b.report(s) for s in r.by_rows]),
             ("classes", [s.classes for s in r.by_classes], [b.report(s) for s in r.by_classes]),
             ("runs (compare)", [2, 4, 8], [b.compare(list(r.by_runs[:n])) for n in (2, 4, 8)])]
    rows = []
    for name, sizes, commands in cases:
        measured = b.measure(*commands)
        if not all(m.ok for m in measured):
            rows.append(measured_row(f"growth with {name}", "—", measured[-1], "—",
                                     result=verdict(False, *measured)))
            continue
        time_exp = growth_exponent(sizes, [m.wall for m in measured])
        peak_exp = growth_exponent(sizes, [m.peak_mib for m in measured])
        walls = " / ".join(f"{m.wall:.2f}" for m in measured)
        peaks = " / ".join(f"{m.peak_mib:,.0f}" for m in measured)
        first = r.by_runs[0] if name.startswith("runs") else (
            r.by_rows[0] if name == "rows" else r.by_classes[0])
        rows.append(measured_row(
            f"growth with {name}: {' / '.join(f'{x:,}' for x in sizes)}", size_text(first),
            measured[-1], f"time ∝ {name.split()[0]}^{time_exp:.2f} ({walls} s), "
            f"peak ∝ {name.split()[0]}^{peak_exp:.2f} ({peaks} MiB)",
            result="measured", value=time_exp))
    return rows


def startup_rows(b: Bench) -> list[Row]:
    """`python -c pass`, then each start-up command as a ratio to it."""
    commands = b.startup()
    baseline, *measured = b.measure(*commands, repeat=max(b.repeat, STARTUP_REPEAT))
    rows = [measured_row("start-up: python -c pass", "—", baseline, "1.00 (the baseline)",
                         result="" if baseline.ok else f"FAILED ({baseline.failure()})")]
    for command, m in zip(commands[1:], measured):
        value = ratio(m, baseline)
        text = f"{value:.2f}× python -c pass" if value is not None else "—"
        if command.argv[-1] in ("--version", "-h"):
            rows.append(measured_row(f"start-up: `{command.label}`", "—", m, text,
                                     target=f"≤ {STARTUP_MAX_BASELINE_RATIO:g}× python -c pass",
                                     result=verdict(value is not None and
                                                    value <= STARTUP_MAX_BASELINE_RATIO,
                                                    m, baseline), value=value))
        else:
            rows.append(measured_row(f"start-up: `{command.label.split()[0]}` of a tiny run",
                                     size_text(b.runs.tiny), m, text,
                                     target="completes (exit 0)", result=verdict(True, m),
                                     value=value))
    return rows


# Table rows in display order, and which rows each --only name asks for. A row measures what
# it needs itself (the report row also runs the floor), and a row shared by several names is
# shown once.
ROWS = {
    "floor_main": lambda b: floor_row(b, [b.runs.main]),
    "report": report_row,
    "naive": naive_row,
    "scaling": scaling_row,
    "floor_compare3": lambda b: floor_row(b, list(b.runs.compared)),
    "compare3": compare3_row,
    "floor_wide": lambda b: floor_row(b, [b.runs.wide]),
    "wide": wide_row,
    "floor_long": lambda b: floor_row(b, list(b.runs.long_pair)),
    "long": long_row,
    "floor_groups": lambda b: floor_row(b, list(b.runs.groups)),
    "groups": groups_row,
    "topk": topk_row,
    "dask_groups": dask_groups_row,
    "memory_topk": lambda b: memory_row(b, list(b.runs.topk_pair)),
    "memory_full": lambda b: memory_row(b, list(b.runs.long_pair)),
    "exponents": exponent_rows,
    "startup": startup_rows,
}
# naive measures the floor, report and naive in turns; report and scaling then reuse them.
BUILD_ORDER = ["startup", "naive", "report", "scaling", "compare3", "wide", "long", "groups",
               "topk", "dask_groups", "memory_topk", "memory_full", "exponents", "floor_main",
               "floor_compare3", "floor_wide", "floor_long", "floor_groups"]
ROWS_OF = {
    "floor": ["floor_main"],
    "report": ["floor_main", "report"],
    "naive": ["floor_main", "report", "naive"],
    "scaling": ["floor_main", "report", "scaling"],
    "compare3": ["floor_compare3", "compare3"],
    "wide": ["floor_wide", "wide"],
    "long": ["floor_long", "long"],
    "groups": ["floor_groups", "groups"],
    "topk": ["topk"],
    "dask_groups": ["dask_groups"],
    "memory": ["memory_topk", "memory_full"],
    "exponents": ["exponents"],
    "startup": ["startup"],
}


def markdown_table(rows: list[Row]) -> str:
    lines = ["| measurement | rows × classes | wall s (median) | peak MiB (max) | ratio | target "
             "| result |",
             "|---|---:|---:|---:|---|---|---|"]
    for r in rows:
        wall = f"{r.wall:.2f}" if r.wall is not None else "—"
        peak = f"{r.peak_mib:,.0f}" if r.peak_mib is not None else "—"
        lines.append(f"| {r.measurement} | {r.size} | {wall} | {peak} | {r.ratio} | {r.target} "
                     f"| {r.result} |")
    return "\n".join(lines)


def raw_table(measured: dict[tuple[str, ...], Measurement]) -> str:
    lines = ["| command | wall s (each run) | peak MiB (each run) | exit codes | load after "
             "| metricdiff source |",
             "|---|---|---|---|---|---|"]
    for m in measured.values():
        walls = ", ".join(f"{w:.2f}" for w in m.walls)
        peaks = ", ".join(f"{p:,.0f}" for p in m.peaks_mib)
        codes = ", ".join(str(c) for c in m.exit_codes)
        loads = ", ".join(f"{load:.2f}" for load in m.load_after)
        sources = ", ".join(dict.fromkeys(m.source_versions))
        lines.append(f"| `{display_command(m.command)}` | {walls} | {peaks} | {codes} | {loads} "
                     f"| {sources} |")
    return "\n".join(lines)


def display_command(command: list[str]) -> str:
    """The command as a reader would type it: `python`, paths relative to the repository."""
    shown = ["python" if command[0] == sys.executable else command[0]]
    shown += [shown_path(part) if os.path.isabs(part) else part for part in command[1:]]
    return " ".join(shown)


def shown_path(path: str) -> str:
    """Relative to the repository when inside it, else absolute."""
    path = os.path.abspath(path)
    return os.path.relpath(path, ROOT) if path.startswith(ROOT + os.sep) else path


# ----------------------------------------------------------------------------- machine

def machine() -> dict:
    def version(package: str) -> str:
        try:
            return metadata.version(package)
        except metadata.PackageNotFoundError:
            return "not installed"

    return {
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "ram_gib": round(total_ram_gib(), 1),
        "python": platform.python_version(),
        "numpy": version("numpy"),
        "pyarrow": version("pyarrow"),
        "pandas": version("pandas"),
        "scikit-learn": version("scikit-learn"),
        "metricdiff": version("metricdiff"),
        "metricdiff_commit": git_head(),
    }


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def total_ram_gib() -> float:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) / 1024 ** 2  # the value is in KiB
    except OSError:
        pass
    return float("nan")


def git_head() -> str:
    """The commit checked out (read-only; the working tree may hold uncommitted changes)."""
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                             capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def machine_line(m: dict) -> str:
    return (f"{m['platform']} · {m['cpu']} · {m['cores']} cores · {m['ram_gib']} GiB RAM · "
            f"Python {m['python']} · numpy {m['numpy']} · pyarrow {m['pyarrow']} · "
            f"metricdiff {m['metricdiff']} ({m['metricdiff_commit']})")


# ----------------------------------------------------------------------------- main

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="tiny sizes for a smoke test (each size flag still overrides)")
    parser.add_argument("--only", default=",".join(MEASUREMENTS), metavar="NAME[,NAME]",
                        help=f"comma-separated subset of: {', '.join(MEASUREMENTS)}")
    parser.add_argument("--repeat", type=int, default=3, metavar="N",
                        help="runs of each command; the table shows the median wall time "
                             "and the largest peak (default 3)")
    parser.add_argument("--data-dir", default=os.path.join(ROOT, "bench_data"),
                        help="where runs and results are written (default bench_data/)")
    parser.add_argument("--timeout", type=float, default=1800.0,
                        help="seconds before a command is killed (default 1800)")
    for name, help_text in [("rows", "rows of the main run and the compared runs"),
                            ("classes", "classes of the main, compared and scaling runs"),
                            ("scaling-rows", "rows of the larger run of the scaling check"),
                            ("wide-rows", "rows of the wide run"),
                            ("wide-classes", "classes of the wide run"),
                            ("long-rows", "rows of each run of the long pair"),
                            ("long-classes", "classes of the long pair"),
                            ("group-rows", "rows of each run of the two groups of seeds"),
                            ("group-runs", "runs in each of the two groups"),
                            ("topk-rows", "rows of each top-k run of the engine comparison"),
                            ("topk-listed", "k of those top-k runs"),
                            ("topk-vocabulary", "classes (vocabulary) of those top-k runs"),
                            ("exponent-rows", "rows of the smallest run of the exponents"),
                            ("exponent-classes", "classes of the smallest run of the "
                                                 "exponents")]:
        default = getattr(DEFAULT_SIZES, name.replace("-", "_"))
        parser.add_argument(f"--{name}", type=int, help=f"{help_text} (default {default:,})")
    args = parser.parse_args(argv)

    args.only = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = [name for name in args.only if name not in MEASUREMENTS]
    if unknown or not args.only:
        parser.error(f"--only takes names among {', '.join(MEASUREMENTS)}; got "
                     f"{', '.join(unknown) or 'nothing'}")
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    preset = QUICK_SIZES if args.quick else DEFAULT_SIZES
    args.sizes = Sizes(**{name: getattr(args, name) or getattr(preset, name)
                          for name in Sizes.__dataclass_fields__})
    return args


def selected_rows(only: list[str]) -> list[str]:
    wanted = {row for name in only for row in ROWS_OF[name]}
    return [row for row in ROWS if row in wanted]


def build_rows(bench: Bench, names: list[str]) -> list[Row]:
    """The rows, in display order. They are built (measured) in another order: a row that
    measures several commands in turns comes before a row that reuses one of them, so that the
    ratios compare runs made at the same time."""
    order = [name for name in BUILD_ORDER if name in names]
    built = {name: ROWS[name](bench) for name in order}
    rows: list[Row] = []
    for name in names:  # the start-up measurement is several rows
        row = built[name]
        rows += row if isinstance(row, list) else [row]
    return rows


@dataclass
class Totals:
    seconds: float
    generation_seconds: float  # writing input runs (0 when they were all reused)
    load_before: float  # 1-minute load average: other work on the machine skews the ratios
    load_max: float  # the highest seen after any command
    own_peak_mib: float  # this process's peak: no child's peak can read lower (see run_child)
    source_versions: list[str]  # digests of metricdiff's source seen, in order


def footnote(args: argparse.Namespace, totals: Totals) -> str:
    text = (f"Each command ran {args.repeat} time(s) (start-up commands "
            f"{max(args.repeat, STARTUP_REPEAT)}), each in its own process. Total "
            f"{totals.seconds:.0f} s, of which {totals.generation_seconds:.0f} s writing input "
            f"runs. Load average (1 min) {totals.load_before:.2f} at the start, at most "
            f"{totals.load_max:.2f} after a command. Peak memory of the benchmark process "
            f"itself (the least a child can show): {totals.own_peak_mib:,.0f} MiB.")
    cores = os.cpu_count() or 1
    # metricdiff keeps every core busy (and pyarrow adds decode threads), so a load up to one
    # above the core count after a command is the command's own; above that, or any load
    # before the first command, is other work competing for the CPU
    if totals.load_before > 1 or totals.load_max > cores + 1:
        text += (f"\n\nWARNING: the load average was {totals.load_before:.2f} at the start and "
                 f"reached {totals.load_max:.2f} ({cores} cores): other work was competing for "
                 "the CPU and the times are less reliable.")
    if len(totals.source_versions) > 1:
        text += (f"\n\nWARNING: metricdiff's source changed while the benchmark ran "
                 f"({len(totals.source_versions)} versions: {', '.join(totals.source_versions)}"
                 "); the results mix versions (see results.json), run it again.")
    return text


def write_results(data_dir: str, info: dict, args: argparse.Namespace, rows: list[Row],
                  bench: Bench, totals: Totals) -> None:
    with open(os.path.join(data_dir, "results.md"), "w", encoding="utf-8") as f:
        f.write(f"# metricdiff benchmark\n\nMachine: {machine_line(info)}\n\n"
                f"{markdown_table(rows)}\n\n{footnote(args, totals)}\n\n"
                f"## Raw numbers\n\n{raw_table(bench.measured)}\n")
    document = {
        "machine": info,
        "sizes": asdict(args.sizes),
        "repeat": args.repeat,
        "only": args.only,
        "totals": asdict(totals),
        "rows": [asdict(r) for r in rows],
        "measurements": [dict(asdict(m), command=display_command(m.command))
                         for m in bench.measured.values()],
    }
    with open(os.path.join(data_dir, "results.json"), "w", encoding="utf-8") as f:
        json.dump(document, f, indent=2, ensure_ascii=False)
        f.write("\n")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    start = time.perf_counter()
    load_before = os.getloadavg()[0]
    os.makedirs(args.data_dir, exist_ok=True)
    info = machine()
    progress(f"machine: {machine_line(info)}")
    progress(f"sizes: {args.sizes}; repeat {args.repeat}; measuring {', '.join(args.only)}")

    bench = Bench(Runs.from_sizes(args.sizes), args.data_dir, args.repeat, args.timeout)
    rows = build_rows(bench, selected_rows(args.only))
    measured = bench.measured.values()
    totals = Totals(seconds=time.perf_counter() - start,
                    generation_seconds=bench.generation_seconds,
                    load_before=load_before,
                    load_max=max((load for m in measured for load in m.load_after), default=0.0),
                    own_peak_mib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
                    source_versions=list(dict.fromkeys(
                        v for m in measured for v in m.source_versions)))

    write_results(args.data_dir, info, args, rows, bench, totals)
    print(f"Machine: {machine_line(info)}\n")
    print(markdown_table(rows))
    print(f"\n{footnote(args, totals)}\nResults in {shown_path(args.data_dir)}/results.md and "
          "results.json")
    # A target missed is a result; a command that failed is a problem to look at.
    return 0 if all(m.ok for m in bench.measured.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
