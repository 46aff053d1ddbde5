"""Checkpoints of a training run, or of two runs side by side: the metrics of every checkpoint,
where NLL and accuracy are best, why the two part, and (two series) a verdict per checkpoint.

Nothing here measures anything itself. A checkpoint's numbers are what `report` gives on it
(results.build_report); a change between two checkpoints is what `compare` gives on the pair
(comparison.build_comparison: paired t on NLL and calibrated NLL, McNemar's exact test on
accuracy), examples lined up by id.

Checkpoints named for their values are a choice made on the same data that then tests them:
among ten checkpoints of one unchanging model, the lowest NLL sits below the others by chance.
Changes between named checkpoints are therefore tested at alpha / m, m = K(K-1)/2 the pairs of
K checkpoints the choice could have picked (Bonferroni), with intervals at the same level. The
verdicts of two series compare pairs fixed in advance (the i-th checkpoints) and are
Holm-adjusted over the checkpoints, as compare adjusts over candidates.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from .align import align_runs
from .comparison import CompareSettings, build_comparison
from .errors import UsageError
from .metrics import RESAMPLED, MetricSettings, metric_directions
from .paired import METHOD_NONE, Interval, t_test
from .pipeline import RunData
from .results import SeriesReport, build_report
from .verdict import check_primary, check_resamples, check_settings, decide, holm, should_fail

# What is shown for every checkpoint, and which of them are tested between checkpoints.
SERIES_METRICS = ("nll", "accuracy", "ece", "temperature", "nll_calibrated")
TESTED = ("nll", "accuracy", "nll_calibrated")
LABELS = {"nll": "NLL", "accuracy": "accuracy", "nll_calibrated": "calibrated NLL"}

NO_GAP = "no gap"
OVERCONFIDENCE = "over-confidence growing"
DEGRADATION = "real degradation"
UNDERCONFIDENCE = "under-confidence growing"
ACCURACY_FIRST = "accuracy peaks first"
UNDETERMINED = "undetermined"
DIAGNOSES = (NO_GAP, OVERCONFIDENCE, DEGRADATION, UNDERCONFIDENCE, ACCURACY_FIRST, UNDETERMINED)

# A change smaller than this share of the values is rounding, not data: per-example values
# agree with a float64 reference to about 1e-7 (perexample.py), and two temperature fits that
# absorb the same scaling differ in their last digits. A paired t on such differences, all
# alike, would call them significant; here they are never a change.
RESOLUTION = 1e-6

METHOD_MEAN_T = "t interval of the mean over examples"
METHOD_EXACT = "Clopper-Pearson exact interval"
GUO = "Guo et al. 2017"


@dataclass(frozen=True)
class SeriesSettings:
    primary: str = "nll"  # the metric of the per-checkpoint verdicts of two series
    alpha: float = 0.05
    min_effect: float = 0.0
    resamples: int = 1000  # two series: the bootstrap, when the primary metric needs one
    seed: int = 0
    fail_on: str = "never"
    allow_partial: bool = False
    step_col: str | None = None  # the column a series given as one run was split by


@dataclass
class Checkpoints:
    """One series: its name, its checkpoints in training order, the step of each and where
    the steps come from ("column step", "names", "positions")."""

    name: str
    runs: list[RunData]
    steps: list[int | float]
    step_source: str


def build_series(series: list[Checkpoints], settings: SeriesSettings = SeriesSettings(),
                 metric_settings: MetricSettings = MetricSettings(),
                 warnings: list[str] | None = None) -> SeriesReport:
    """One series (a training run's checkpoints) or two (compared checkpoint by checkpoint)."""
    directions = metric_directions(metric_settings.top_k)
    check_primary(settings.primary, directions)
    check_settings(settings.alpha, settings.min_effect, settings.fail_on)
    if len(series) == 2:
        check_resamples(settings.primary, settings.resamples, settings.alpha)
    if not 1 <= len(series) <= 2:
        raise UsageError(f"series takes one series or two to compare, got {len(series)}")
    for one in series:
        if len(one.runs) < 2:
            raise UsageError(f"series {one.name} has {len(one.runs)} checkpoint; a series needs "
                             "two or more")
    if len(series) == 2 and len(series[0].runs) != len(series[1].runs):
        raise UsageError(f"series {series[0].name} has {len(series[0].runs)} checkpoints and "
                         f"{series[1].name} has {len(series[1].runs)}; expected the same number "
                         "to compare them checkpoint by checkpoint")
    alignment = align_runs([run for one in series for run in one.runs], settings.allow_partial)
    found = list(warnings or [])
    entries = [_one_series(one, settings, metric_settings) for one in series]
    for entry in entries:
        found += [f"{entry['name']}/{c['name']}: {w}" for c in entry["checkpoints"]
                  for w in c["warnings"]]
    comparison = None
    if len(series) == 2:
        comparison = _two_series(series[0], series[1], settings, metric_settings, directions)
        found += _step_mismatch(series[0], series[1])
    if alignment.keyed_by == "row order":
        found.append("no checkpoint has an 'id' column: examples were lined up by row order "
                     "(--id-col names another column)")
    shown = {name: directions[name] for name in (*SERIES_METRICS, settings.primary)}
    return SeriesReport(
        settings={**asdict(settings), "ci_level": 1 - settings.alpha,
                  "metric_settings": asdict(metric_settings)
                  | {"class_groups": list(metric_settings.class_groups)}},
        alignment={"keyed_by": alignment.keyed_by, "n": alignment.n,
                   "num_classes": series[0].runs[0].num_classes,
                   "prediction": series[0].runs[0].layout.prediction.kind},
        directions=shown,
        series=entries,
        comparison=comparison,
        failed=bool(comparison and comparison["failed"]),
        warnings=found,
    )


# ----------------------------------------------------------------------------- one series

def _one_series(one: Checkpoints, settings: SeriesSettings,
                metric_settings: MetricSettings) -> dict:
    checkpoints: list[dict] = []
    for index, (run, step) in enumerate(zip(one.runs, one.steps)):
        report = build_report(run, metric_settings)  # exactly what `report` says of it
        checkpoints.append({
            "index": index, "name": run.name, "step": step, "path": run.layout.path,
            "n": run.n,
            "metrics": {name: report.metrics.get(name) for name in SERIES_METRICS},
            "unavailable": {name: why for name, why in report.unavailable.items()
                            if name in SERIES_METRICS},
            "intervals": checkpoint_intervals(run, settings.alpha),
            "warnings": list(report.warnings),
        })
    nll = [c["metrics"]["nll"] for c in checkpoints]
    accuracy = [c["metrics"]["accuracy"] for c in checkpoints]
    best_nll = best_index(nll, higher=False)
    best_accuracy = best_index(accuracy, higher=True)
    last = len(checkpoints) - 1
    pairs = len(checkpoints) * (len(checkpoints) - 1) // 2

    def span(kind: str, first: int, second: int) -> dict:
        return _span(kind, one.runs, checkpoints, first, second, pairs, settings,
                     metric_settings)

    spans = []
    if best_nll is not None and best_accuracy is not None and best_nll != best_accuracy:
        spans.append(span("gap", min(best_nll, best_accuracy), max(best_nll, best_accuracy)))
    if best_nll is not None and best_nll != last and best_accuracy != last:
        spans.append(span("after_lowest_nll", best_nll, last))
    gap = next((s for s in spans if s["kind"] == "gap"), None)
    kind, sentence = diagnose(checkpoints, best_nll, best_accuracy, gap, settings.alpha)
    return {
        "name": one.name,
        "step_source": one.step_source,
        "checkpoints": checkpoints,
        "best": {"nll": _named(checkpoints, best_nll, "nll"),
                 "accuracy": _named(checkpoints, best_accuracy, "accuracy"),
                 "last": _named(checkpoints, last, None)},
        "adjustment": {"method": "Bonferroni over the pairs of checkpoints", "pairs": pairs,
                       "alpha_per_pair": settings.alpha / pairs},
        "spans": spans,
        "diagnosis": {"kind": kind, "sentence": sentence},
        "sentences": [best_sentence(checkpoints, best_nll, best_accuracy)]
        + [s["sentence"] for s in spans] + [f"diagnosis: {sentence}"],
    }


def best_index(values: list[float | None], higher: bool) -> int | None:
    """The checkpoint of the best value: for the lowest NLL the first of equal ones, for the
    highest accuracy the last, so that the gap between them covers all the time accuracy held
    its best (a run whose accuracy stays at its top while NLL climbs shows the whole climb)."""
    known = [(value, index) for index, value in enumerate(values) if value is not None]
    if not known:
        return None
    if higher:
        return max(known)[1]  # ties: the largest index
    return min(known)[1]  # ties: the smallest index


def _named(checkpoints: list[dict], index: int | None, metric: str | None) -> dict | None:
    if index is None:
        return None
    found = checkpoints[index]
    named = {"index": index, "name": found["name"], "step": found["step"]}
    return named | ({"value": found["metrics"][metric]} if metric else {})


def checkpoint_intervals(run: RunData, alpha: float) -> dict:
    """Pointwise intervals of one checkpoint's NLL, calibrated NLL (means over examples: t)
    and accuracy (a binomial proportion: Clopper-Pearson); None where the value is."""
    pe = run.columns
    correct = int(pe.correct.sum())
    return {"nll": _mean_interval(pe.nll, alpha),
            "accuracy": exact_interval(correct, len(pe), alpha),
            "nll_calibrated": (_mean_interval(pe.nll_cal, alpha) if run.temperature is not None
                               else None)}


def _mean_interval(values: np.ndarray, alpha: float) -> dict | None:
    if len(values) < 2 or not np.isfinite(values).all():
        return None
    mean = float(values.mean())
    low, high, _ = t_test(mean, float(values.std(ddof=1) / math.sqrt(len(values))),
                          len(values) - 1, alpha)
    return {"low": float(low), "high": float(high), "method": METHOD_MEAN_T}


def exact_interval(successes: int, n: int, alpha: float) -> dict | None:
    """Clopper-Pearson interval of a proportion: the beta quantiles that invert the exact
    binomial test (never outside [0, 1], right at 0 and at n successes)."""
    if n == 0:
        return None
    from scipy import special  # as in paired.py: scipy.stats would cost a second to import

    low = float(special.betaincinv(successes, n - successes + 1, alpha / 2)) if successes else 0.0
    high = (float(special.betaincinv(successes + 1, n - successes, 1 - alpha / 2))
            if successes < n else 1.0)
    return {"low": low, "high": high, "method": METHOD_EXACT}


def _span(kind: str, runs: list[RunData], checkpoints: list[dict], first: int, second: int,
          pairs: int, settings: SeriesSettings, metric_settings: MetricSettings) -> dict:
    """The change from checkpoint `first` to `second` by compare's paired tests, at
    alpha / pairs (see the module's docstring)."""
    per_pair = settings.alpha / pairs
    report = build_comparison(
        [runs[first], runs[second]],
        CompareSettings(primary="nll", alpha=per_pair, resamples=0, seed=settings.seed, top=0,
                        allow_partial=settings.allow_partial),
        metric_settings, groups=["from", "to"])
    deltas = report.comparisons[0]["deltas"]
    changes = {}
    for name in TESTED:
        row = deltas.get(name)
        if row is None:
            continue
        p = row["p_value"]
        scale = max(abs(row["baseline"] or 0.0), abs(row["candidate"] or 0.0))
        rounding = abs(row["delta"]) <= RESOLUTION * scale
        significant = p is not None and p < per_pair and not rounding
        changes[name] = {
            "from": row["baseline"], "to": row["candidate"], "delta": row["delta"],
            "ci_low": row["ci_low"], "ci_high": row["ci_high"], "p_value": p,
            "p_adjusted": None if p is None else min(1.0, p * pairs), "method": row["method"],
            "significant": significant, "below_resolution": rounding,
            "change": (("rises" if row["delta"] > 0 else "falls") if significant else None)}
    temperatures = [checkpoints[i]["metrics"]["temperature"] for i in (first, second)]
    temperature = None
    if None not in temperatures:
        temperature = {"from": temperatures[0], "to": temperatures[1],
                       "delta": temperatures[1] - temperatures[0], "method": METHOD_NONE}
    found = {"kind": kind, "from": first, "to": second,
             "from_name": checkpoints[first]["name"], "to_name": checkpoints[second]["name"],
             "changes": changes, "temperature": temperature}
    found["sentence"] = span_sentence(found, checkpoints, settings.alpha)
    return found


# ----------------------------------------------------------------------------- sentences

def _level(alpha: float) -> str:
    return f"{100 * (1 - alpha):g}%"


def _p_text(p: float | None) -> str:
    if p is None:
        return "no test"
    return "adjusted p < 0.001" if p < 0.001 else f"adjusted p = {p:.3f}"


def change_phrase(name: str, change: dict | None, alpha: float) -> str:
    """'NLL rises by 0.079 (95% CI +0.04 to +0.12, adjusted p < 0.001)' when the interval
    excludes 0; otherwise the change with 'within noise'. Never a direction word without a
    significant test behind it."""
    label = LABELS.get(name, name)
    if change is None:
        return f"{label}: no test (unavailable)"
    interval = ""
    if change["ci_low"] is not None and change["ci_high"] is not None:
        interval = f"{_level(alpha)} CI {change['ci_low']:+.4g} to {change['ci_high']:+.4g}, "
    facts = f"({interval}{_p_text(change['p_adjusted'])})"
    if change["significant"]:
        return f"{label} {change['change']} by {abs(change['delta']):.4g} {facts}"
    if change["delta"] == 0:
        return f"{label} unchanged {facts}"
    if change["below_resolution"]:
        return (f"{label} {change['delta']:+.4g}, below numerical precision (a change under "
                f"{RESOLUTION:g} of the value is rounding, not data)")
    return f"{label} {change['delta']:+.4g}, within noise {facts}"


def _temperature_phrase(span: dict) -> str:
    found = span["temperature"]
    if found is None:
        return "no temperature (unavailable)"
    return (f"fitted temperature {found['from']:.3g} → {found['to']:.3g} (a fitted parameter: "
            "no interval)")


def _role(index: int, checkpoints: list[dict], best_nll, best_accuracy) -> str:
    roles = []
    if index == best_nll:
        roles.append("lowest NLL")
    if index == best_accuracy:
        roles.append("highest accuracy")
    if index == len(checkpoints) - 1:
        roles.append("last")
    return f"{checkpoints[index]['name']} ({', '.join(roles)})" if roles else \
        checkpoints[index]["name"]


def span_sentence(span: dict, checkpoints: list[dict], alpha: float) -> str:
    nll = [c["metrics"]["nll"] for c in checkpoints]
    accuracy = [c["metrics"]["accuracy"] for c in checkpoints]
    best_nll, best_accuracy = best_index(nll, False), best_index(accuracy, True)
    ends = (f"{_role(span['from'], checkpoints, best_nll, best_accuracy)} → "
            f"{_role(span['to'], checkpoints, best_nll, best_accuracy)}")
    parts = [change_phrase(name, span["changes"][name], alpha) if name in span["changes"]
             else _unavailable(name, [checkpoints[span["from"]], checkpoints[span["to"]]])
             for name in TESTED]
    return f"{ends}: " + "; ".join(parts + [_temperature_phrase(span)]) + "."


def _unavailable(name: str, ends: list[dict]) -> str:
    """'NLL: no test, unavailable at epoch2 (infinite: ...)': the first end's own reason."""
    for end in ends:
        why = end["unavailable"].get(name)
        if why:
            return f"{LABELS.get(name, name)}: no test, unavailable at {end['name']} ({why})"
    return change_phrase(name, None, 0.05)


def best_sentence(checkpoints: list[dict], best_nll: int | None,
                  best_accuracy: int | None) -> str:
    def named(index: int | None, metric: str, what: str) -> str:
        if index is None:
            return f"no {what} (unavailable at every checkpoint)"
        found = checkpoints[index]
        return f"{what} at {found['name']} ({found['metrics'][metric]:.4f})"

    return (f"{named(best_nll, 'nll', 'lowest NLL')}; "
            f"{named(best_accuracy, 'accuracy', 'highest accuracy')}; "
            f"last checkpoint {checkpoints[-1]['name']}.")


def diagnose(checkpoints: list[dict], best_nll: int | None, best_accuracy: int | None,
             gap: dict | None, alpha: float) -> tuple[str, str]:
    """What the gap between the lowest NLL and the highest accuracy is, and why.

    - no gap: both are best at one checkpoint, or their NLL differs within noise;
    - accuracy peaks first: accuracy is best before NLL is (no NLL overfitting to diagnose);
    - real degradation: NLL rises from the lowest-NLL to the highest-accuracy checkpoint and
      the calibrated NLL (each checkpoint at its own fitted temperature) rises too: its
      probabilities are worse, not only over-confident;
    - over-confidence growing: NLL rises, the calibrated NLL does not (it falls, or stays
      within noise), and the fitted temperature rises: temperature scaling removes the rise,
      the "NLL overfitting" of Guo et al. 2017; under-confidence growing when it falls;
    - undetermined: NLL rises but no temperature could be fitted (top-k runs).
    """
    if best_nll is None or best_accuracy is None:
        return UNDETERMINED, "NLL or accuracy is unavailable at every checkpoint."
    if gap is None:
        name = checkpoints[best_nll]["name"]
        return NO_GAP, f"no gap: NLL and accuracy are best at the same checkpoint, {name}."
    changes = gap["changes"]
    nll = changes.get("nll")
    first, second = checkpoints[gap["from"]]["name"], checkpoints[gap["to"]]["name"]
    if nll is None:
        return UNDETERMINED, (f"NLL cannot be compared between {first} and {second}: it is "
                              "unavailable at one of them (see the checkpoints' warnings).")
    if not nll["significant"]:
        return NO_GAP, (f"no gap beyond noise: lowest NLL at {checkpoints[best_nll]['name']}, "
                        f"highest accuracy at {checkpoints[best_accuracy]['name']}, but between "
                        f"them {change_phrase('nll', nll, alpha)}.")
    if best_accuracy < best_nll:
        return ACCURACY_FIRST, (
            f"accuracy peaks first: accuracy is highest at {first}, before the lowest NLL at "
            f"{second}; from {first} to {second} {change_phrase('nll', nll, alpha)} and "
            f"{change_phrase('accuracy', changes.get('accuracy'), alpha)}.")
    rise = (f"from {first} (lowest NLL) to {second} (highest accuracy) "
            f"{change_phrase('nll', nll, alpha)} and "
            f"{change_phrase('accuracy', changes.get('accuracy'), alpha)}")
    calibrated = changes.get("nll_calibrated")
    temperature = gap["temperature"]
    if calibrated is None or temperature is None:
        return UNDETERMINED, (f"{rise}; without a fitted temperature (a top-k run) "
                              "over-confidence cannot be told from degradation.")
    if calibrated["significant"] and calibrated["delta"] > 0:
        return DEGRADATION, (
            f"real degradation: {rise}, and {change_phrase('nll_calibrated', calibrated, alpha)}"
            ": even at its own fitted temperature the later checkpoint's probabilities are "
            "worse, so the NLL rise is not only over-confidence.")
    t_from, t_to = temperature["from"], temperature["to"]
    if t_to > t_from:
        return OVERCONFIDENCE, (
            f"over-confidence growing: {rise}, but "
            f"{change_phrase('nll_calibrated', calibrated, alpha)} while the fitted "
            f"temperature rises from {t_from:.3g} to {t_to:.3g}: the rise is over-confidence "
            "that temperature scaling removes, the \"NLL overfitting\" of Guo et al. 2017.")
    return UNDERCONFIDENCE, (
        f"under-confidence growing: {rise}, but "
        f"{change_phrase('nll_calibrated', calibrated, alpha)} while the fitted temperature "
        f"falls from {t_from:.3g} to {t_to:.3g}: the rise is under-confidence that temperature "
        "scaling removes.")


# ----------------------------------------------------------------------------- two series

def _two_series(base: Checkpoints, cand: Checkpoints, settings: SeriesSettings,
                metric_settings: MetricSettings, directions: dict) -> dict:
    """compare's paired comparison at every checkpoint, the candidate series against the
    baseline (the first), its verdicts Holm-adjusted over the checkpoints."""
    # the bootstrap only where the verdict needs it (a primary metric that is no mean over
    # examples): the metrics shown are tested in closed form, and 1,000 resamples of every
    # other metric at every checkpoint would cost seconds each
    resamples = settings.resamples if settings.primary in RESAMPLED else 0
    compare_settings = CompareSettings(primary=settings.primary, alpha=settings.alpha,
                                       min_effect=settings.min_effect, resamples=resamples,
                                       seed=settings.seed, top=0,
                                       allow_partial=settings.allow_partial)
    found = []
    for base_run, cand_run in zip(base.runs, cand.runs):
        report = build_comparison([base_run, cand_run], compare_settings, metric_settings,
                                  groups=[base.name, cand.name])
        found.append(report.comparisons[0]["deltas"])
    primary = settings.primary
    p_values = [deltas[primary]["p_value"] if primary in deltas else None for deltas in found]
    adjusted = holm(p_values)
    tested = sum(p is not None for p in p_values)
    checkpoints, verdicts = [], []
    for index, (deltas, p_adjusted) in enumerate(zip(found, adjusted)):
        row = deltas.get(primary)
        interval = None if row is None else Interval(
            row["delta"], row["ci_low"], row["ci_high"], row["p_value"], row["method"],
            row["df"], noise=tuple(row["noise"]))
        verdict = decide(cand.name, primary, interval, bool(directions[primary]), p_adjusted,
                         settings.alpha, settings.min_effect, tested=tested,
                         family="checkpoints")
        verdicts.append(verdict)
        checkpoints.append({
            "index": index, "name": base.runs[index].name, "step": base.steps[index],
            "baseline_checkpoint": base.runs[index].name,
            "candidate_checkpoint": cand.runs[index].name,
            "verdict": asdict(verdict),
            "deltas": {name: deltas[name] for name in dict.fromkeys((primary, *SERIES_METRICS))
                       if name in deltas}})
    counts = {word: sum(v.decision == word for v in verdicts)
              for word in ("better", "worse", "inconclusive")}
    return {"baseline": base.name, "candidate": cand.name, "primary": primary,
            "holm_over": tested, "resamples": resamples, "decisions": counts,
            "checkpoints": checkpoints,
            "failed": should_fail(verdicts, settings.fail_on)}


def _step_mismatch(base: Checkpoints, cand: Checkpoints) -> list[str]:
    differ = [i for i, (a, b) in enumerate(zip(base.steps, cand.steps)) if a != b]
    if not differ or base.step_source == "positions" or cand.step_source == "positions":
        return []
    i = differ[0]
    return [f"checkpoints are paired by position, but their steps differ at {len(differ)} of "
            f"them (first: {base.name} {base.runs[i].name} step {base.steps[i]:g} with "
            f"{cand.name} {cand.runs[i].name} step {cand.steps[i]:g})"]
