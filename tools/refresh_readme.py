"""Re-take the README's example output from the real commands (run from the repository root).

Each ```text block after a `$ COLUMNS=N metricdiff ...` console line is a part of what that
command prints: it is replaced by the same number of lines of the new output, starting at the
line the block started with (or at the first line when that line is gone). tests/test_readme.py
checks the result line for line.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

README = Path("README.md")
COMMAND = re.compile(r"^\$ (COLUMNS=(\d+) (metricdiff .*))$", re.M)


def output_of(command: str, width: str) -> list[str]:
    env = dict(os.environ, COLUMNS=width)
    result = subprocess.run([sys.executable, "-m", "metricdiff", *shlex.split(command)[1:]],
                            capture_output=True, text=True, env=env)
    return result.stdout.splitlines()


def refresh(text: str) -> str:
    pieces = re.split(r"(```console\n)", text)
    out = [pieces[0]]
    for marker, chunk in zip(pieces[1::2], pieces[2::2]):
        match = COMMAND.search(chunk)
        if match:
            lines = output_of(match.group(3), match.group(2))

            def replace(block: re.Match) -> str:
                old = block.group(1).splitlines()
                start = lines.index(old[0]) if old and old[0] in lines else 0
                return "```text\n" + "\n".join(lines[start:start + len(old)]) + "\n```"

            chunk = re.sub(r"```text\n(.*?)\n```", replace, chunk, flags=re.S)
        out += [marker, chunk]
    return "".join(out)


if __name__ == "__main__":
    README.write_text(refresh(README.read_text(encoding="utf-8")), encoding="utf-8")
