"""Frozen report objects: what a run measured, with the provenance needed to reproduce it."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

from . import __version__
from .classwise import classwise_metrics
from .curves import run_curves_of
from .metrics import (ConfidenceOrder, MetricSettings, RunSums, SummaryPlan, class_group_table,
                      headline, loss_anatomy, metric_directions, noise_floor_of,
                      per_class_table, reliability_rows, slice_tables)
from .errors import UsageError
from .orderstats import LocalParts, Parts
from .pipeline import RunData
from .temperature import T_MAX, T_MIN

SCHEMA_VERSION = "2.2"


REPORT_TABLES = ("metrics", "classes", "class_groups", "confidence_bins", "slices")


@dataclass(frozen=True)
class RunReport:
    """Everything `metricdiff report` shows for one run; renderers only read it."""

    run: dict
    settings: dict
    metrics: dict
    unavailable: dict
    directions: dict
    loss_anatomy: dict
    confidence_bins: list
    class_groups: list
    per_class: dict
    slices: dict
    noise_floor: dict
    warnings: list = field(default_factory=list)
    curves: dict | None = None  # curves.run_curves: the smoothed reliability and risk curves

    def to_dict(self) -> dict:
        return plain({"schema_version": SCHEMA_VERSION, "kind": "report",
                      "tool": {"name": "metricdiff", "version": __version__}, **asdict(self),
                      "better": better_words(self.directions)})

    def to_pandas(self, table: str = "metrics"):
        """One table of the report as a DataFrame.

        table: "metrics" (one row per metric: value, direction, why unavailable), "classes"
        (the worst classes), "class_groups", "confidence_bins" or "slices" (one row per value
        of each --by column).

        >>> import metricdiff
        >>> metricdiff.report("sample_runs/digits_gnb.parquet").to_pandas().loc["nll", "value"]
        ... # doctest: +SKIP
        """
        document = self.to_dict()
        if table not in REPORT_TABLES:
            raise UsageError(f"unknown table '{table}'; expected one of: "
                             f"{', '.join(REPORT_TABLES)}")
        if table == "metrics":
            return _frame([{"metric": name, "value": value,
                            "higher_is_better": document["directions"].get(name),
                            "unavailable": document["unavailable"].get(name)}
                           for name, value in document["metrics"].items()], index="metric")
        if table == "slices":
            return _frame([{"column": column, **row}
                           for column, part in document["slices"].items()
                           for row in part["rows"]])
        rows = {"classes": document["per_class"]["rows"],
                "class_groups": document["class_groups"],
                "confidence_bins": document["confidence_bins"]}
        return _frame(rows[table])


@dataclass(frozen=True)
class ComparisonReport:
    """Everything `metricdiff compare` shows: each run, and each candidate against the baseline."""

    settings: dict
    alignment: dict
    runs: list
    directions: dict
    comparisons: list
    best: str  # the run significantly best on the primary metric (the baseline if none is)
    failed: bool  # whether the --fail-on condition triggered
    warnings: list = field(default_factory=list)
    groups: list = field(default_factory=list)  # each group's runs, metric means and spreads
    seed_noise: dict | None = None  # differences between baseline runs (2 or more of them)

    def to_dict(self) -> dict:
        return plain({"schema_version": SCHEMA_VERSION, "kind": "comparison",
                      "tool": {"name": "metricdiff", "version": __version__}, **asdict(self),
                      "better": better_words(self.directions)})

    def to_pandas(self, table: str = "deltas"):
        """One table of the comparison as a DataFrame.

        table: "runs" (metrics by run), "groups" (one row per group and metric: mean and
        seed-to-seed sd over the group's runs), "deltas" (one row per candidate and metric:
        baseline, candidate, delta, interval, p-value, method, noise sources), "verdicts",
        "classes", "slices", "confidence_bins", "examples" (the ranked lists) or
        "nll_by_flip"; every table but "runs" and "groups" has a `candidate_run` column naming
        the candidate (run or group) of the row.
        """
        document = self.to_dict()
        comparisons = document["comparisons"]
        if table == "runs":
            frame = _frame([{"run": run["name"], **run["metrics"]} for run in document["runs"]],
                           index="run")
            return frame.T
        if table == "groups":
            return _frame([{"group": group["name"], "runs": group["size"], "metric": metric,
                            "mean": value, "sd": group["sd"].get(metric)}
                           for group in document["groups"]
                           for metric, value in group["mean"].items()])
        per_candidate = {
            "deltas": lambda c: [{"metric": m, **row} for m, row in c["deltas"].items()],
            "verdicts": lambda c: [c["verdict"]],
            "classes": lambda c: c["ranked"]["classes"]["rows"],
            "slices": lambda c: [{"column": col, **row}
                                 for col, part in c["ranked"]["slices"].items()
                                 for row in part["rows"]],
            "confidence_bins": lambda c: c["ranked"]["confidence_bins"]["rows"],
            "examples": lambda c: c["ranked"]["examples"],
            "nll_by_flip": lambda c: c["explanation"]["nll_by_flip"],
        }
        if table not in per_candidate:
            _table_rows({"runs": None, "groups": None, **per_candidate}, table)  # the error
        rows = _table_rows(per_candidate, table)
        return _frame([{"candidate_run": c["candidate"], **row} for c in comparisons
                       for row in rows(c)])


SERIES_SCHEMA_VERSION = "1.0"
SERIES_TABLES = ("checkpoints", "changes", "verdicts")


@dataclass(frozen=True)
class SeriesReport:
    """Everything `metricdiff series` shows: each series' checkpoints, where NLL and accuracy
    are best and why they part, and (two series) a verdict per checkpoint."""

    settings: dict
    alignment: dict
    directions: dict
    series: list
    comparison: dict | None  # two series: the candidate against the baseline, per checkpoint
    failed: bool  # whether the --fail-on condition triggered (two series)
    warnings: list = field(default_factory=list)

    def to_dict(self) -> dict:
        return plain({"schema_version": SERIES_SCHEMA_VERSION, "kind": "series",
                      "tool": {"name": "metricdiff", "version": __version__}, **asdict(self),
                      "better": better_words(self.directions)})

    def to_pandas(self, table: str = "checkpoints"):
        """One table of the series as a DataFrame.

        table: "checkpoints" (one row per series and checkpoint: step, metrics and the bounds
        of their intervals), "changes" (one row per series, span between two named
        checkpoints and tested metric) or "verdicts" (two series: one row per checkpoint, the
        verdict on the primary metric).
        """
        document = self.to_dict()
        if table not in SERIES_TABLES:
            raise UsageError(f"unknown table '{table}'; expected one of: "
                             f"{', '.join(SERIES_TABLES)}")
        if table == "checkpoints":
            return _frame([{"series": one["name"], "checkpoint": c["name"], "step": c["step"],
                            "n": c["n"], **c["metrics"],
                            **{f"{name}_{end}": (bounds or {}).get(end)
                               for name, bounds in c["intervals"].items()
                               for end in ("low", "high")}}
                           for one in document["series"] for c in one["checkpoints"]])
        if table == "changes":
            return _frame([{"series": one["name"], "span": span["kind"],
                            "from": span["from_name"], "to": span["to_name"], "metric": name,
                            **change}
                           for one in document["series"] for span in one["spans"]
                           for name, change in span["changes"].items()])
        comparison = document["comparison"] or {"checkpoints": []}
        return _frame([{"checkpoint": c["name"], "step": c["step"], **c["verdict"]}
                       for c in comparison["checkpoints"]])


def better_words(directions: dict) -> dict:
    """{metric: "higher" | "lower" | None}: the `directions` booleans in words."""
    return {name: None if higher is None else ("higher" if higher else "lower")
            for name, higher in directions.items()}


def _table_rows(tables: dict, table: str):
    if table not in tables:
        raise UsageError(f"unknown table '{table}'; expected one of: {', '.join(tables)}")
    return tables[table]


def _frame(rows: list[dict], index: str | None = None):
    import pandas as pd  # only for to_pandas(): the command line never needs it

    frame = pd.DataFrame(rows)
    return frame.set_index(index) if index and not frame.empty else frame


def plain(value):
    """JSON-ready copy: numpy scalars become Python numbers, NaN and infinity become None."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def reading_warnings(run: RunData) -> list[str]:
    """What the reader noticed about a run's predictions, for report and compare alike."""
    warnings = []
    if run.min_prob is not None:
        warnings.append(f"probabilities floored at {run.min_prob:g} and renormalised "
                        "(--min-prob): every metric is of the floored distribution")
    if run.looks_like_probs:
        warnings.append("every sampled row of the logits lies in [0, 1] and sums to 1: these "
                        "look like probabilities saved as logits (save them as probs, or pass "
                        "--pred-kind probs)")
    return warnings


def describe_run(run: RunData) -> dict:
    layout = run.layout
    return {
        "name": run.name,
        "path": layout.path,
        "files": list(layout.files),
        "n": run.n,
        "num_classes": run.num_classes,
        "prediction": {"kind": layout.prediction.kind,
                       "columns": (list(layout.prediction.columns) if not layout.prediction.wide
                                   else [f"{layout.prediction.columns[0]} .. "
                                         f"{layout.prediction.columns[-1]}"]),
                       "topk": layout.topk},
        "temperature_fit_rows": run.temperature_rows,
        "min_prob": run.min_prob,
        "temperature_source": run.temperature_source,
    }


def run_sums(run: RunData, settings: MetricSettings) -> RunSums:
    """The run's RunSums at these settings: those its main pass gathered, else (another
    top_k or bins, a series' step) computed from its examples."""
    plan = SummaryPlan.of(settings)
    if run.sums is not None and run.sums.plan == plan:
        return run.sums
    return RunSums.of(run.columns, plan, run.num_classes)


def run_parts(run: RunData) -> Parts:
    """The run's examples in parts: a cluster's, else the examples as one part."""
    return run.parts or LocalParts([run.columns])


def build_report(run: RunData, settings: MetricSettings = MetricSettings()) -> RunReport:
    pe = run.examples
    sums = run_sums(run, settings)
    counts = sums.classes
    parts = run_parts(run)
    by_conf = ConfidenceOrder(parts)  # for the metrics and the curves
    values, unavailable = headline(pe, sums, run.rank_depth, settings, run.temperature,
                                   classwise_metrics(run.classwise), parts, by_conf)
    warnings = reading_warnings(run)
    if run.temperature is not None and run.temperature in (T_MIN, T_MAX):
        warnings.append(f"the NLL-minimising temperature lies at the search limit "
                        f"{run.temperature:g}: the true optimum is further out")
    if run.temperature is not None and 0 < run.temperature_rows < run.n:
        warnings.append(f"temperature fitted on a sample of {run.temperature_rows} of {run.n} "
                        "rows (row groups spread over the run); nll_calibrated and "
                        "ece_calibrated use every row")
    slices = slice_tables(parts, run.slice_parts or LocalParts([run.slices]),
                          settings.ece_bins, settings.max_slice_values)
    for col in slices:
        if slices[col]["values"] > slices[col]["shown"]:
            warnings.append(f"--by {col}: {slices[col]['values']} distinct values, showing the "
                            f"{slices[col]['shown']} largest")
    floor = noise_floor_of(parts, settings.noise_batch, settings.seed)
    if floor["accuracy"] is None:
        warnings.append(f"too few rows for a noise floor at batch size {settings.noise_batch}")
    directions = metric_directions(settings.top_k)
    return RunReport(
        run=describe_run(run),
        settings=asdict(settings) | {"class_groups": list(settings.class_groups)},
        metrics=values,
        unavailable=unavailable,
        directions=directions,
        loss_anatomy=loss_anatomy(pe, settings.confident_wrong, parts),
        confidence_bins=reliability_rows(sums.bins),
        class_groups=class_group_table(pe, counts, settings.class_groups, parts),
        per_class={"order": "most misclassified examples first, then highest total NLL",
                   "classes_seen": int(((counts.support > 0) | (counts.predicted > 0)).sum()),
                   "rows": per_class_table(counts, run.layout.class_names,
                                           settings.worst_classes)},
        slices=slices,
        noise_floor=floor,
        warnings=warnings,
        curves=run_curves_of(by_conf, settings.seed),
    )
