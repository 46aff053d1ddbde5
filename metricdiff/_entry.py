"""The console entry point, kept tiny: Ctrl-C while the command's modules are still being
imported (the first fraction of a second) ends with one line and exit 130, like Ctrl-C at any
later moment, instead of a Python traceback."""

from __future__ import annotations

import os
import sys

# How long after a lost Ctrl-C it is raised again: the callback it landed in is over by then.
INTERRUPT_AGAIN_SECONDS = 0.05


def _quiet_interrupt(unraisable) -> None:
    """Ctrl-C landing in a callback Python cannot raise from (a module lock's weakref callback
    while modules are imported, a finalizer while the cluster starts) would print a traceback
    and be lost: it is raised again in the main thread once the callback is over, where the
    command turns it into one line and exit 130. Not from here: in the main thread, an
    interrupt raised now would land in this hook, and be lost after all."""
    if issubclass(unraisable.exc_type, KeyboardInterrupt):
        import _thread
        import threading

        later = threading.Timer(INTERRUPT_AGAIN_SECONDS, _thread.interrupt_main)
        later.daemon = True
        later.start()
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
