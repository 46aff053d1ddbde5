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


def test_regressions_found_by_fuzzing_are_input_errors(tmp_path):
    """Inputs the long fuzz runs once let through, kept as files or rebuilt here."""
    import pytest

    import metricdiff

    repeated = Path(__file__).resolve().parent.parent / "fuzz" / "regressions"
    for path in sorted(repeated.glob("*.parquet")):
        with pytest.raises(metricdiff.InputError):
            metricdiff.report(str(path))


def test_a_footer_whose_row_groups_do_not_add_up_is_refused():
    """Found by the long fuzz run (a mutated footer listing 24 rows in row groups of 0 or -25
    rows); rebuilt here as a stand-in file object, since pyarrow will not write one."""
    from types import SimpleNamespace

    import pyarrow as pa
    import pytest

    from metricdiff.errors import InputError
    from metricdiff.io import _checked_group_rows

    def footer(total, groups):
        metadata = SimpleNamespace(num_rows=total, num_row_groups=len(groups),
                                   row_group=lambda g: SimpleNamespace(num_rows=groups[g]))
        return SimpleNamespace(schema_arrow=pa.schema([("label", pa.int64())]),
                               metadata=metadata)

    assert _checked_group_rows("ok.parquet", footer(24, [20, 4])) == (20, 4)
    for groups in ([0], [-25], [20, 5]):
        with pytest.raises(InputError, match="footer lists 24 rows"):
            _checked_group_rows("bad.parquet", footer(24, groups))


def test_a_short_run_of_the_command_line_fuzzer_finds_nothing():
    """Random options and paths (fuzz/fuzz_cli.py): exit 0, 1 or 2, never an internal error,
    a hang or a changed input. Longer runs: python fuzz/fuzz_cli.py --seconds 600."""
    import fuzz_cli

    findings = fuzz_cli.fuzz(seconds=None, iterations=150, seed=321)
    assert findings == [], findings[:3]
