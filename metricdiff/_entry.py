"""The console entry point, kept tiny: Ctrl-C while the command's modules are still being
imported (the first fraction of a second) ends with one line and exit 130, like Ctrl-C at any
later moment, instead of a Python traceback."""

from __future__ import annotations

import os
import sys


def _quiet_interrupt(unraisable) -> None:
    """Ctrl-C landing in a callback Python cannot raise from (a module lock's weakref callback
    while modules are imported) would print a traceback and be lost: it is raised again in
    the main thread, where the command turns it into one line and exit 130."""
    if issubclass(unraisable.exc_type, KeyboardInterrupt):
        import _thread

        _thread.interrupt_main()
    else:
        sys.__unraisablehook__(unraisable)


def main() -> None:
    sys.unraisablehook = _quiet_interrupt
    try:
        from .cli import exit_now, main as run
    except KeyboardInterrupt:
        sys.stderr.write("metricdiff: interrupted\n")
        sys.stderr.flush()
        os._exit(130)
    try:
        run()
    except KeyboardInterrupt:  # between the command's own handling and the exit
        sys.stderr.write("metricdiff: interrupted\n")
        exit_now(130)
