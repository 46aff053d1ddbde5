"""Why loss and accuracy (or any two headline metrics) moved in opposite directions.

Every figure is a contribution to a change of a mean: the summed per-example differences of a
group of examples divided by all n, so the contributions of disjoint groups add up to the
whole change. The figures come from a pair's mergeable sums (pairsums.py); the sentences here
only restate them, and the figures go to JSON as they are.
"""

from __future__ import annotations

import numpy as np

from .paired import Interval

# A calibrated NLL gap this much smaller than the raw gap means calibration explains the rest.
CALIBRATION_SHARE = 0.5
SIGNIFICANT_SHARE = 0.25  # a group worth naming carries at least this share of a change


def calibration_view(deltas: dict[str, Interval], temperatures: tuple) -> dict | None:
    needed = ("nll", "nll_calibrated", "ece")
    if any(deltas.get(name) is None for name in needed):
        return None
    raw, calibrated = deltas["nll"].delta, deltas["nll_calibrated"].delta
    if raw and np.sign(raw) != np.sign(calibrated) and calibrated:
        finding = "reversed"  # after temperature scaling, the other run has the lower loss
    elif raw and abs(calibrated) < CALIBRATION_SHARE * abs(raw):
        finding = "mostly_calibration"
    else:
        finding = "ranking"
    return {"nll_delta": raw, "nll_calibrated_delta": calibrated,
            "ece_delta": deltas["ece"].delta, "temperature_baseline": temperatures[0],
            "temperature_candidate": temperatures[1], "finding": finding}


def disagreements(deltas: dict[str, Interval], directions: dict[str, bool | None],
                  primary: str, alpha: float, decision: str) -> list[dict]:
    """Headline metrics that moved significantly against the primary metric's verdict: in the
    opposite direction when the verdict is better or worse; when it is inconclusive, every
    metric that moved significantly at all (the primary metric did not)."""
    main = deltas.get(primary)
    if main is None or main.p_value is None:
        return []
    decided = decision in ("better", "worse")
    primary_better = bool(main.delta) and (main.delta > 0) == bool(directions[primary])
    found = []
    for name, interval in deltas.items():
        if name == primary or directions.get(name) is None or interval.p_value is None:
            continue
        if interval.p_value >= alpha or not interval.delta:
            continue
        better = (interval.delta > 0) == directions[name]
        if not decided or better != primary_better:
            found.append({"metric": name, "says": "better" if better else "worse",
                          "primary_says": ("better" if primary_better else "worse") if decided
                          else "inconclusive",
                          "delta": interval.delta, "p_value": interval.p_value})
    return found


def reasons(flips: list[dict], calibration: dict | None, confident: dict,
            groups: list[dict], deltas: dict[str, Interval], alpha: float,
            pairs: int | None = None) -> list[str]:
    """Plain sentences, most telling first, each restating figures computed above. A change
    is stated as a finding only when its test is beyond noise; otherwise it says so. With
    groups of runs, `pairs` run pairs were averaged and the counts are means over them."""
    said = []
    accuracy = deltas["accuracy"]
    accuracy_delta = accuracy.delta
    by_name = {row["group"]: row for row in flips}
    fixed, broken = by_name["fixed"], by_name["broken"]
    mean = f" (means over {pairs} run pairs)" if pairs else ""
    said.append(f"Accuracy {_moved(accuracy_delta, pct=True)}{_noise(accuracy, alpha)}: "
                f"{_count(fixed['count'])} examples fixed, {_count(broken['count'])} broken "
                f"(net {_count(fixed['count'] - broken['count'], signed=True)}){mean}.")
    nll = deltas.get("nll")
    if nll is None:
        said.append("Mean NLL is not compared: a run gives some true classes probability 0, so "
                    "its NLL is infinite (--min-prob floors the probabilities).")
        said += _sharpness_reasons(calibration, confident, groups, deltas, accuracy_delta, alpha)
        return said
    nll_delta = nll.delta
    parts = sorted(flips, key=lambda row: -abs(row["contribution"]))
    main = parts[0]
    pieces = ", ".join(f"{row['group'].replace('_', '-')} {row['contribution']:+.4f}"
                       for row in parts if row["count"])
    said.append(f"Mean NLL {_moved(nll_delta)}{_noise(nll, alpha)}; by example group: "
                f"{pieces}. The largest part comes from {main['group'].replace('_', '-')} "
                "examples"
                + (f" (mean NLL {main['baseline_nll']:.3f} -> {main['candidate_nll']:.3f})."
                   if main["count"] and main["baseline_nll"] is not None
                   and main["candidate_nll"] is not None else "."))
    opposite = [row for row in parts if row["count"] and nll_delta
                and np.sign(row["contribution"]) != np.sign(nll_delta)
                and abs(row["contribution"]) >= SIGNIFICANT_SHARE * abs(nll_delta)]
    for row in opposite:
        said.append(f"Against that, {row['group'].replace('_', '-')} examples move NLL by "
                    f"{row['contribution']:+.4f}.")
    return said + _sharpness_reasons(calibration, confident, groups, deltas, accuracy_delta,
                                     alpha)


def _sharpness_reasons(calibration: dict | None, confident: dict, groups: list[dict],
                       deltas: dict[str, Interval], accuracy_delta: float,
                       alpha: float) -> list[str]:
    """The sentences on calibration, confidently wrong examples and class frequency."""
    said = []
    nll = deltas.get("nll")
    if calibration is not None and nll is not None:
        said.append(_calibration_sentence(calibration, nll, deltas.get("nll_calibrated"), alpha))
    brier = _brier_sentence(deltas, alpha)
    if brier:
        said.append(brier)
    if confident["share"] is not None and abs(confident["share"]) >= SIGNIFICANT_SHARE:
        said.append(f"Confidently wrong examples (confidence >= {confident['threshold']:g}): "
                    f"{_count(confident['baseline_count'])} -> "
                    f"{_count(confident['candidate_count'])}; the "
                    f"candidate's add {confident['contribution']:+.4f} to the mean NLL "
                    f"({_part_of_change(confident['share'])}) and carry "
                    f"{_pct(confident['candidate_nll_share'])} of the candidate's total NLL.")
    notable = [row for row in groups if row["accuracy_share"] is not None
               and abs(row["accuracy_share"]) >= SIGNIFICANT_SHARE and row["examples"]]
    if notable and accuracy_delta:
        pieces = ", ".join(f"{row['group']} {100 * row['accuracy_contribution']:+.2f} pts "
                           f"({_pct(row['baseline_accuracy'])} -> "
                           f"{_pct(row['candidate_accuracy'])})" for row in groups
                           if row["examples"])
        said.append(f"By class frequency, accuracy changes: {pieces}.")
        drift = [row for row in groups
                 if abs(row["candidate_predicted_share"] - row["baseline_predicted_share"]) >= 0.02]
        for row in drift:
            said.append(f"The candidate predicts {row['group']} classes for "
                        f"{_pct(row['candidate_predicted_share'])} of examples (baseline "
                        f"{_pct(row['baseline_predicted_share'])}).")
    return said


def _brier_sentence(deltas: dict[str, Interval], alpha: float) -> str | None:
    """The Brier change split as Murphy's decomposition splits it; the uncertainty term is
    the same for runs on one validation set, so the rest is the within-bin term. A part is
    named the main one only when it and the Brier change are beyond noise."""
    brier, reliability, resolution = (deltas.get(name) for name in
                                      ("brier", "brier_reliability", "brier_resolution"))
    if brier is None or reliability is None or resolution is None:
        return None
    within = brier.delta - reliability.delta + resolution.delta
    said = (f"Brier {_moved(brier.delta)}{_noise(brier, alpha)}: reliability (calibration) "
            f"{reliability.delta:+.4f}{_noise(reliability, alpha)}, resolution (sharpness, "
            f"which lowers the score) {resolution.delta:+.4f}{_noise(resolution, alpha)}, "
            f"within-bin rest {within:+.4f}.")
    if not _significant(brier, alpha) or not brier.delta:
        return said
    if (_significant(reliability, alpha) and np.sign(reliability.delta) == np.sign(brier.delta)
            and abs(reliability.delta) >= 0.5 * abs(brier.delta)):
        return said + " Most of the Brier change is calibration."
    if (_significant(resolution, alpha) and np.sign(-resolution.delta) == np.sign(brier.delta)
            and abs(resolution.delta) >= 0.5 * abs(brier.delta)):
        return said + (" Most of the Brier change is sharpness: how well the runs tell classes "
                       "apart.")
    return said


def _significant(interval: Interval | None, alpha: float) -> bool:
    return interval is not None and interval.p_value is not None and interval.p_value < alpha


def _noise(interval: Interval, alpha: float) -> str:
    """'' for a change beyond noise, else a label that says it is not."""
    if _significant(interval, alpha):
        return ""
    if interval.p_value is None:
        return " (untested)"
    return f" (not beyond noise, p = {interval.p_value:.2g})"


def _calibration_sentence(calibration: dict, nll: Interval, calibrated: Interval | None,
                          alpha: float) -> str:
    """What temperature scaling does to the NLL change; a reversal or a shrinking is called
    one only when the changes it rests on are beyond noise."""
    t0, t1 = calibration["temperature_baseline"], calibration["temperature_candidate"]
    temps = f"fitted temperatures {t0:.3g} -> {t1:.3g}" if t0 and t1 else "temperatures"
    raw, cal = calibration["nll_delta"], calibration["nll_calibrated_delta"]
    figures = f"{raw:+.4f} raw{_noise(nll, alpha)}, {cal:+.4f} calibrated"
    if calibrated is not None:
        figures += _noise(calibrated, alpha)
    finding = calibration["finding"]
    if finding == "reversed" and _significant(nll, alpha) and _significant(calibrated, alpha):
        return (f"After temperature scaling each run, the NLL change reverses ({figures}; "
                f"{temps}): the raw loss gap is miscalibration, not worse ranking of classes.")
    if finding == "mostly_calibration" and _significant(nll, alpha):
        return (f"After temperature scaling the NLL change shrinks from {raw:+.4f} to "
                f"{cal:+.4f} ({figures}; {temps}): most of the loss gap is calibration.")
    if finding == "ranking" and _significant(calibrated, alpha):
        return (f"Temperature scaling leaves the NLL change at {cal:+.4f} ({figures}; {temps}): "
                "the runs differ in how they rank classes, not only in confidence.")
    return (f"Temperature scaling moves the NLL change from {raw:+.4f} to {cal:+.4f} "
            f"({figures}; {temps}); too little of it is beyond noise to say whether the gap is "
            "calibration or ranking.")


def _count(value: float, signed: bool = False) -> str:
    """A count, or a mean count over run pairs (one decimal)."""
    text = f"{value:+.1f}" if signed else f"{value:.1f}"
    if float(value).is_integer():
        text = f"{int(value):+d}" if signed else f"{int(value)}"
    return text


def _part_of_change(share: float) -> str:
    if share < 0:
        return "against the net change"
    if share > 1:
        return f"{share:.1f}x the net change, which other examples offset"
    return f"{100 * share:.0f}% of the change"


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def _moved(delta: float, pct: bool = False) -> str:
    if not delta:
        return "did not move"
    amount = f"{100 * abs(delta):.2f} pts" if pct else f"{abs(delta):.4f}"
    return f"{'rose' if delta > 0 else 'fell'} by {amount}"
