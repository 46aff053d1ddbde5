"""`metricdiff compare RUN... --engine dask` on a LocalCluster, as the CLI starts one (a
single-threaded worker process per core), and what the cluster did: each worker's peak RSS and
the tasks' own times, written as one JSON line to stderr (bench.py reads it from there).

    python bench/dask_compare.py RUN...      (or NAME=RUN..., runs of one NAME a group)
    python bench/dask_compare.py --allow-partial RUN...   (compared on their common ids)

The wall time of this process is what `metricdiff compare RUN... --engine dask -f json`
takes, plus a second to ask the workers for their figures after the comparison.
"""

from __future__ import annotations

import json
import sys


def worker_peak_mib() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _nbytes(index) -> int:
    """An index array's bytes; none for the ids a cluster keeps, or for every row in order
    (align.AllRows)."""
    return getattr(index, "nbytes", 0)


def main(paths: list[str]) -> None:
    import time

    from distributed import get_task_stream

    import metricdiff
    from metricdiff import comparison
    from metricdiff.cluster import dask_engine

    # the client's own work after the runs are read: the statistics of the comparison
    measured = {"statistics_seconds": 0.0, "gathered_bytes": 0, "examples": 0}
    build = comparison.build_comparison

    def timed_build(runs, *args, **kwargs):
        # per example on the client: the columns of runs read with them (none for a pair
        # held by the workers), their ids, and the alignment made from the runs' keys
        alignment = args[3] if len(args) > 3 else kwargs.get("alignment")
        measured["gathered_bytes"] = sum(
            sum(a.nbytes for a in vars(run.examples).values())
            + (0 if run.ids is None else run.ids.nbytes)
            for run in runs if run.examples is not None) + (0 if alignment is None else (
                _nbytes(alignment.ids) + sum(_nbytes(rows) for rows in alignment.rows)))
        measured["examples"] = sum(run.n for run in runs)
        start = time.perf_counter()
        try:
            return build(runs, *args, **kwargs)
        finally:
            measured["statistics_seconds"] = time.perf_counter() - start

    comparison.build_comparison = timed_build
    start = time.perf_counter()
    with dask_engine() as engine:
        client = engine.client
        with get_task_stream(client=client) as stream:
            partial = "--allow-partial" in paths
            named = [arg.split("=", 1) if "=" in arg else (None, arg) for arg in paths
                     if arg != "--allow-partial"]
            result = metricdiff.compare(*(path for _, path in named), engine="dask",
                                        names=[name for name, _ in named],
                                        scheduler=client.scheduler.address,
                                        allow_partial=partial)
        json.dumps(result.to_dict())  # what -f json prints, to /dev/null
        measured["seconds"] = time.perf_counter() - start
        peaks = client.run(worker_peak_mib)
    tasks = [t for t in stream.data if str(t["key"]).startswith("reduce_partition")]
    seconds = sorted(sum(part["stop"] - part["start"] for part in t["startstops"]
                         if part["action"] == "compute") for t in tasks)
    print(json.dumps({"worker_peak_mib": sorted(peaks.values()), "tasks": len(tasks),
                      "task_seconds_median": seconds[len(seconds) // 2] if seconds else None,
                      "task_seconds_total": sum(seconds), **measured}), file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv[1:])
