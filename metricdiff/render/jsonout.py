"""JSON output: the report's to_dict(), and nothing else, on stdout or in a file."""

from __future__ import annotations

import json


def render_json(document: dict) -> str:
    # allow_nan=False: NaN is not JSON; reports carry None for undefined values
    return json.dumps(document, indent=2, ensure_ascii=False, allow_nan=False) + "\n"
