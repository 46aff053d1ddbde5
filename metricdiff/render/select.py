"""``--metrics``: a document (``to_dict()``) narrowed to the metrics a user asked for.

The same narrowed document goes to every format. Renderers show only the chosen metrics
(``common.is_shown`` reads ``settings.metrics``); the JSON loses every unchosen metric the
schema lets it lose. Keys the schema of version 1.1 requires stay: a report's ``metrics``
(every base metric) and each compared run's ``n``, ``nll`` and ``accuracy``. The verdict is
never narrowed: it is about the primary metric, whatever was chosen.
"""

from __future__ import annotations

import copy

from ..errors import UsageError

RUN_REQUIRED = ("n", "nll", "accuracy")  # compare.schema.json: runs[].metrics


def parse_metrics(text: str | None, valid: list[str]) -> list[str] | None:
    """'nll, accuracy' -> ['nll', 'accuracy'] (None: no filter); an unknown name is a usage
    error listing the valid ones."""
    if text is None:
        return None
    names = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [name for name in names if name not in valid]
    if unknown or not names:
        raise UsageError(f"--metrics: unknown metric {', '.join(map(repr, unknown))}; "
                         f"expected a comma-separated list of {', '.join(valid)}"
                         if unknown else "--metrics: expected at least one metric name")
    return list(dict.fromkeys(names))


def _narrow(mapping, keep) -> None:
    if isinstance(mapping, dict):
        for name in [n for n in mapping if n not in keep]:
            del mapping[name]


def select_metrics(document: dict, names: list[str] | None) -> dict:
    """A copy of ``document`` showing only ``names`` (and ``n``); ``settings.metrics``
    records them. ``None`` returns the document itself."""
    if names is None:
        return document
    doc = copy.deepcopy(document)
    keep = set(names) | {"n"}
    doc.setdefault("settings", {})["metrics"] = list(names)
    primary = (doc.get("settings") or {}).get("primary")
    _narrow(doc.get("directions"), keep | {primary})  # the verdict says which way is better
    _narrow(doc.get("better"), keep | {primary})
    _narrow(doc.get("unavailable"), keep)
    if doc.get("kind") == "report":
        return doc  # its `metrics` are all required by the schema; renderers filter them
    for run in doc.get("runs") or []:
        _narrow(run.get("metrics"), keep | set(RUN_REQUIRED))
        _narrow(run.get("unavailable"), keep)
    for group in doc.get("groups") or []:
        _narrow(group.get("mean"), keep)
        _narrow(group.get("sd"), keep)
    _narrow((doc.get("seed_noise") or {}).get("metrics"), keep)
    for comparison in doc.get("comparisons") or []:
        _narrow(comparison.get("deltas"), keep)
        explanation = comparison.get("explanation") or {}
        if isinstance(explanation.get("disagreements"), list):
            explanation["disagreements"] = [d for d in explanation["disagreements"]
                                            if not isinstance(d, dict)
                                            or d.get("metric") in keep]
    return doc
