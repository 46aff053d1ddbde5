"""A short run of the reader fuzzer (fuzz/fuzz_reader.py): damaged files must raise our own
error, never anything else. Longer runs: python fuzz/fuzz_reader.py --seconds 600."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "fuzz"))

import fuzz_reader  # noqa: E402


def test_seed_corpus_reads_cleanly_and_mutations_never_escape():
    findings = fuzz_reader.fuzz(seconds=None, iterations=400, seed=123)
    assert findings == [], findings[0][1]
