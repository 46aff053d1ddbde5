"""metricdiff: compare classification runs from saved validation predictions.

Library API (no printing, plain data out):

    >>> import metricdiff
    >>> result = metricdiff.report("sample_runs/digits_logreg.parquet")
    >>> result.to_dict()["metrics"]["accuracy"]  # doctest: +SKIP
"""

from __future__ import annotations

__version__ = "0.1.0"

from .api import compare, report  # noqa: E402
from .errors import InputError, MetricdiffError, UsageError  # noqa: E402
from .writer import PredictionWriter, save_predictions  # noqa: E402

__all__ = ["InputError", "MetricdiffError", "PredictionWriter", "UsageError", "__version__",
           "compare", "report", "save_predictions"]
