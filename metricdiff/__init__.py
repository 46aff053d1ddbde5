"""metricdiff: compare classification runs from saved validation predictions.

Library API (no printing, plain data out):

    >>> import metricdiff
    >>> result = metricdiff.report("sample_runs/digits_logreg.parquet")
    >>> result.to_dict()["metrics"]["accuracy"]  # doctest: +SKIP
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# Imported on first use (PEP 562), so that `import metricdiff` and the command's start-up do
# not pay for pyarrow and numpy before they are needed.
_EXPORTS = {"compare": "api", "report": "api", "InputError": "errors",
            "MetricdiffError": "errors", "UsageError": "errors", "PredictionWriter": "writer",
            "save_predictions": "writer", "series": "api"}

__all__ = ["InputError", "MetricdiffError", "PredictionWriter", "UsageError", "__version__",
           "compare", "report", "save_predictions", "series"]


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'metricdiff' has no attribute '{name}'")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)


def __dir__() -> list[str]:
    return sorted(__all__)
