"""Writing results to files without ever destroying one.

A regular file (new or existing) is written atomically: a temporary file beside it, renamed
over it once complete, with the existing file's permissions; a link is followed and its
target replaced, never the link. Devices, pipes, terminals and /dev/stdout are written to
directly (a rename would replace the device with a file). Every output is checked before any
run is read: it may not be an input, two outputs may not share a path, its folder must exist.
Operating-system errors become one line naming the path (exit 2): they are the user's
environment, not a bug.
"""

from __future__ import annotations

import os
import stat
import tempfile

from .errors import OutputError, UsageError


def check_outputs(outputs: dict[str, str | None], inputs: list[str]) -> None:
    """`outputs` maps an option name (--output, --html) to its path or None."""
    given = {option: path for option, path in outputs.items() if path is not None}
    inputs_real = {os.path.realpath(path) for path in inputs}
    seen: dict[str, str] = {}
    for option, path in given.items():
        real = os.path.realpath(path)
        if real in seen:
            raise UsageError(f"{option} {path}: the same file as {seen[real]}; expected "
                             "different files")
        seen[real] = option
        if real in inputs_real:
            raise UsageError(f"{option} {path}: is an input of this command; writing there "
                             "would destroy it")
        if _direct(path):
            continue
        folder = os.path.dirname(real)
        if not os.path.isdir(folder):
            raise UsageError(f"{option} {path}: folder {folder} does not exist")
        if os.path.isdir(real):
            raise UsageError(f"{option} {path}: is a folder, expected a file path")
        if os.path.isfile(real) and not os.stat(real).st_mode & 0o222:
            raise UsageError(f"{option} {path}: is read-only")


def _direct(path: str) -> bool:
    """Whether to write straight into the path: a device, pipe or socket (or a name under
    /dev or /proc, such as /dev/stdout, whose target may be a redirected file)."""
    absolute = os.path.abspath(path)
    if absolute.startswith(("/dev/", "/proc/")):
        return True
    try:
        return not stat.S_ISREG(os.stat(path).st_mode)
    except OSError:  # not there yet (or a name the system refuses: writing will say so)
        return False


def write_outputs(outputs: list[tuple[str, str]]) -> None:
    """Write every (path, text). Regular files are first written in full to temporary files,
    then all renamed: when one fails, no output is left half-written or behind."""
    staged: list[tuple[str, str]] = []  # (temporary, final) of the regular files
    try:
        for path, text in outputs:
            if _direct(path):
                _write_direct(path, text)
            else:
                staged.append((_stage(path, text), os.path.realpath(path)))
        for temporary, final in staged:
            os.replace(temporary, final)
    except BaseException as error:  # an OS error, or Ctrl-C: no temporary file stays behind
        for temporary, _ in staged:
            if os.path.exists(temporary):
                os.unlink(temporary)
        if not isinstance(error, OSError):
            raise
        name = error.filename if isinstance(error.filename, str) else ""
        raise OutputError(f"{_shown(name) or 'output'}: cannot write: "
                          f"{error.strerror or error}") from None


def _write_direct(path: str, text: str) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        try:
            handle.write(text)
            handle.flush()
        except OSError as error:
            error.filename = error.filename or path
            raise


def _stage(path: str, text: str) -> str:
    """The text in a temporary file beside the (link-resolved) target, with the target's
    permissions, or an ordinary new file's."""
    final = os.path.realpath(path)
    fd, temporary = tempfile.mkstemp(dir=os.path.dirname(final), prefix=".metricdiff-",
                                     suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        if os.path.exists(final):
            mode = stat.S_IMODE(os.stat(final).st_mode)
        else:
            umask = os.umask(0)
            os.umask(umask)
            mode = 0o666 & ~umask
        os.chmod(temporary, mode)
    except OSError as error:
        os.unlink(temporary)
        error.filename = path
        raise
    return temporary


def _shown(path: str) -> str:
    return path.encode("utf-8", "backslashreplace").decode() if path else path
