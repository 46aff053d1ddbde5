"""Library exceptions.

The library raises these; the CLI turns each into one line on stderr and exit code 2.
A message always says where (file, column, row when useful) and what was expected.
"""

from __future__ import annotations


class MetricdiffError(Exception):
    """Base class for every error metricdiff reports to a user."""


class InputError(MetricdiffError):
    """A run file, or an option describing it, is not what metricdiff can read."""

    def __init__(self, message: str, *, path: str | None = None, column: str | None = None,
                 row: int | None = None):
        self.path = path
        self.column = column
        self.row = row
        self.detail = message
        super().__init__(_locate(message, path, column, row))

    def __reduce__(self):
        # raised on a Dask worker, it reaches the client by pickle: keep where it happened
        return (_input_error, (self.detail, self.path, self.column, self.row))


def _input_error(message: str, path: str | None, column: str | None,
                 row: int | None) -> InputError:
    return InputError(message, path=path, column=column, row=row)


class UsageError(MetricdiffError):
    """An option value that cannot work (unknown metric, unknown column, bad number)."""


class OutputError(MetricdiffError):
    """A result could not be written: the operating system refused (disk full, read-only)."""


def _locate(message: str, path: str | None, column: str | None, row: int | None) -> str:
    where = []
    if path is not None:
        where.append(str(path))
    if column is not None:
        where.append(f"column '{column}'")
    if row is not None:
        where.append(f"row {row}")
    return f"{': '.join(where)}: {message}" if where else message
