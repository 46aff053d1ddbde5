"""Several runs in, one comparison out: align, measure each run, pair each candidate with the
baseline, explain, rank, decide."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from functools import partial

import numpy as np

from .align import Alignment, align_runs
from .explain import (calibration_view, class_group_view, confident_wrong_view, disagreements,
                      nll_by_flip, reasons)
from .metrics import (ClassCounts, MetricSettings, class_groups, headline, metric_directions,
                      reliability_table)
from .paired import (METHOD_MCNEMAR, METHOD_NONE, RESAMPLED, BootstrapPlan, Interval, bootstrap,
                     mcnemar_exact, paired_t, per_example_values, resample_values)
from .perexample import PerExample
from .pipeline import RunData
from .ranking import (Attribution, change_word, rank_classes, rank_confidence_bins,
                      rank_examples, rank_metrics, rank_slices)
from .report import ComparisonReport, describe_run
from .verdict import (Verdict, best_run, check_primary, check_settings, decide, holm,
                      should_fail)


@dataclass(frozen=True)
class CompareSettings:
    primary: str = "nll"
    alpha: float = 0.05
    min_effect: float = 0.0
    resamples: int = 1000
    seed: int = 0
    fail_on: str = "never"
    top: int = 10  # length of each ranked list
    allow_partial: bool = False


def build_comparison(runs: list[RunData], settings: CompareSettings = CompareSettings(),
                     metric_settings: MetricSettings = MetricSettings()) -> ComparisonReport:
    directions = metric_directions(metric_settings.top_k)
    check_primary(settings.primary, directions)
    check_settings(settings.alpha, settings.min_effect, settings.fail_on)
    alignment = align_runs(runs, settings.allow_partial)
    aligned = [_lined_up(run.examples, rows) for run, rows in zip(runs, alignment.rows)]
    num_classes = runs[0].num_classes
    counts = [ClassCounts.of(pe, num_classes) for pe in aligned]
    # each run's numbers are independent of the others', and numpy's sorts and passes release
    # the GIL: two threads measure two runs in about the time of one
    with ThreadPoolExecutor(max_workers=2) as pool:
        summaries = list(pool.map(partial(_summary, metric_settings=metric_settings),
                                  runs, aligned, counts))

    base_run, base = runs[0], aligned[0]
    groups = class_groups(counts[0], metric_settings.class_groups)
    plan = BootstrapPlan(len(base), settings.resamples, settings.seed)
    draws = [None] * len(runs)
    if settings.resamples > 0:  # every run on the same resamples, drawn once for all
        available = [{m for m in RESAMPLED if summary["metrics"][m] is not None}
                     for summary in summaries]
        draws = resample_values(aligned, num_classes, metric_settings.ece_bins, available,
                                plan)
    pairs = [_deltas(summaries[0]["metrics"], summaries[index]["metrics"], base,
                     aligned[index], plan, draws[0], draws[index], settings, metric_settings)
             for index in range(1, len(runs))]

    primary_p = [pair[settings.primary].p_value if settings.primary in pair else None
                 for pair in pairs]
    verdicts = [decide(runs[i + 1].name, settings.primary, pairs[i].get(settings.primary),
                       bool(directions[settings.primary]), p_adj, settings.alpha,
                       settings.min_effect)
                for i, p_adj in enumerate(holm(primary_p))]

    comparisons = []
    for i, (deltas, verdict) in enumerate(zip(pairs, verdicts)):
        cand_run, cand = runs[i + 1], aligned[i + 1]
        comparisons.append(_comparison(base_run, cand_run, base, cand, deltas, verdict,
                                       summaries[0], summaries[i + 1], directions, groups,
                                       alignment, num_classes, settings, metric_settings))
    return ComparisonReport(
        settings={**asdict(settings), "ci_level": 1 - settings.alpha,
                  "metric_settings": asdict(metric_settings)
                  | {"class_groups": list(metric_settings.class_groups)}},
        alignment={"keyed_by": alignment.keyed_by, "n": len(alignment.ids),
                   "dropped": {run.name: d for run, d in zip(runs, alignment.dropped)}},
        runs=summaries,
        directions=directions,
        comparisons=comparisons,
        best=best_run(base_run.name, verdicts, bool(directions[settings.primary])),
        failed=should_fail(verdicts, settings.fail_on),
        warnings=_warnings(runs, alignment),
    )


def _summary(run: RunData, pe: PerExample, counts: ClassCounts,
             metric_settings: MetricSettings) -> dict:
    values, unavailable = headline(pe, counts, run.rank_depth, metric_settings, run.temperature)
    return {**describe_run(run), "n": len(pe), "metrics": values, "unavailable": unavailable,
            "confidence_bins": reliability_table(pe, metric_settings.ece_bins)}


def _lined_up(examples: PerExample, rows: np.ndarray) -> PerExample:
    """A run's examples in the alignment's order; no copy when they already are in it."""
    if len(rows) == len(examples) and np.array_equal(rows, np.arange(len(rows))):
        return examples
    return examples.take(rows)


def _deltas(base_values: dict, cand_values: dict, base, cand, plan: BootstrapPlan,
            base_draws: dict | None, cand_draws: dict | None, settings: CompareSettings,
            metric_settings: MetricSettings) -> dict[str, Interval]:
    """Every metric both runs have: paired t for per-example means, McNemar's exact test for
    accuracy, a paired bootstrap for the rest; the temperature gets its delta only."""
    both = {name for name in base_values
            if base_values[name] is not None and cand_values[name] is not None and name != "n"}
    deltas: dict[str, Interval] = {}
    for name, value in per_example_values(metric_settings).items():
        if name in both:
            deltas[name] = paired_t(value(base), value(cand), settings.alpha)
    if "accuracy" in deltas:
        fixed = int((~base.correct & cand.correct).sum())
        broken = int((base.correct & ~cand.correct).sum())
        t = deltas["accuracy"]
        deltas["accuracy"] = Interval(t.delta, t.ci_low, t.ci_high, mcnemar_exact(fixed, broken),
                                      METHOD_MCNEMAR)
    wanted = {name for name in RESAMPLED if name in both}
    if wanted and cand_draws is not None:
        observed = {name: cand_values[name] - base_values[name] for name in wanted}
        deltas.update(bootstrap(observed, base_draws, cand_draws, plan, settings.alpha))
    if "temperature" in both:
        deltas["temperature"] = Interval(cand_values["temperature"] - base_values["temperature"],
                                         None, None, None, METHOD_NONE)
    order = list(base_values)  # the registry's order
    return {name: deltas[name] for name in order if name in deltas}


def _comparison(base_run: RunData, cand_run: RunData, base, cand, deltas: dict[str, Interval],
                verdict: Verdict, base_summary: dict, cand_summary: dict, directions: dict,
                groups: np.ndarray, alignment: Alignment, num_classes: int,
                settings: CompareSettings, metric_settings: MetricSettings) -> dict:
    base_values, cand_values = base_summary["metrics"], cand_summary["metrics"]
    delta_rows = {}
    for name, interval in deltas.items():
        baseline = base_values[name]
        delta_rows[name] = {
            "baseline": baseline, "candidate": cand_values[name], "delta": interval.delta,
            "relative": interval.delta / abs(baseline) if baseline else None,
            "ci_low": interval.ci_low, "ci_high": interval.ci_high,
            "p_value": interval.p_value, "method": interval.method,
            "change": change_word(interval.delta, directions.get(name)),
            "significant": interval.p_value is not None and interval.p_value < settings.alpha,
        }
    flips = nll_by_flip(base, cand)
    counts = {row["group"]: row["count"] for row in flips}
    temperatures = (base_values.get("temperature"), cand_values.get("temperature"))
    calibration = calibration_view(deltas, temperatures)
    confident = confident_wrong_view(base, cand, metric_settings.confident_wrong)
    group_rows = class_group_view(base, cand, groups)
    attribution = Attribution(settings.primary, base, cand, num_classes, metric_settings)
    class_names = base_run.layout.class_names
    slices = {col: rank_slices(attribution, base, cand, values[alignment.rows[0]], settings.top)
              for col, values in base_run.slices.items()}
    return {
        "baseline": base_run.name,
        "candidate": cand_run.name,
        "primary": settings.primary,
        "deltas": delta_rows,
        "flips": {"fixed": counts["fixed"], "broken": counts["broken"],
                  "p_value": deltas["accuracy"].p_value, "method": "McNemar exact"},
        "verdict": asdict(verdict),
        "explanation": {
            "disagreements": disagreements(deltas, directions, settings.primary, settings.alpha),
            "nll_by_flip": flips,
            "calibration": calibration,
            "confidently_wrong": confident,
            "class_groups": group_rows,
            "reasons": reasons(flips, calibration, confident, group_rows,
                               deltas["accuracy"].delta, deltas["nll"].delta),
        },
        "ranked": {
            "metrics": rank_metrics(deltas, directions),
            "classes": rank_classes(attribution, base, num_classes, class_names, settings.top),
            "slices": slices,
            "confidence_bins": rank_confidence_bins(attribution, base, cand,
                                                    metric_settings.ece_bins),
            "examples": rank_examples(base, cand, alignment.ids, class_names, settings.top),
        },
    }


def _warnings(runs: list[RunData], alignment: Alignment) -> list[str]:
    warnings = []
    for run, dropped in zip(runs, alignment.dropped):
        if dropped:
            warnings.append(f"{run.name}: {dropped} rows left out, their ids are not in every "
                            "run (--allow-partial)")
    for run in runs:
        if run.temperature is not None and run.temperature_rows < len(run.examples):
            warnings.append(f"{run.name}: temperature fitted on a sample of "
                            f"{run.temperature_rows} of {len(run.examples)} rows")
    return warnings
