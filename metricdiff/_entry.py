"""The console entry point, kept tiny: Ctrl-C while the command's modules are still being
imported (the first fraction of a second) ends with one line and exit 130, like Ctrl-C at any
later moment, instead of a Python traceback."""

from __future__ import annotations

import os
import sys


def main() -> None:
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
