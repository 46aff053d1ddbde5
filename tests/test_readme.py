"""The README's commands work as written."""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path

import pytest
from typer.testing import CliRunner

from metricdiff.cli import app

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def console_commands() -> list[str]:
    blocks = re.findall(r"```console\n(.*?)```", README, flags=re.S)
    return [line[2:] for block in blocks for line in block.splitlines()
            if line.startswith("$ metricdiff ")]


def test_readme_names_the_two_setup_commands_and_the_makefile_has_them():
    assert "make demo" in README and "make test" in README
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^demo:", makefile, flags=re.M)
    assert re.search(r"^test:", makefile, flags=re.M)
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_the_demo_target_runs_a_readme_command():
    demo = re.search(r"^demo:.*\n\t(.*)$", (ROOT / "Makefile").read_text(), flags=re.M).group(1)
    command = demo.split("metricdiff ", 1)[1]
    assert f"metricdiff {command}" in console_commands()


@pytest.mark.parametrize("command", console_commands())
def test_readme_command_runs(command, monkeypatch):
    monkeypatch.chdir(ROOT)
    result = CliRunner().invoke(app, shlex.split(command)[1:])
    assert result.exit_code == 0, (command, result.stderr)
    assert result.stdout.strip()


def test_readme_library_snippet_runs(monkeypatch):
    monkeypatch.chdir(ROOT)
    snippet = re.search(r"```python\n(.*?)```", README, flags=re.S).group(1)
    exec(compile(snippet, "README.md", "exec"), {})


def test_ci_recipe_runs_with_the_options_it_names(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    workflow = (ROOT / "examples" / "metricdiff-pr.yml").read_text()
    assert "examples/metricdiff-pr.yml" in README
    command = re.search(r"(metricdiff compare .*?)\n\s*status=", workflow, flags=re.S).group(1)
    command = command.replace("\\\n", " ")
    command = (command.replace("$RUNNER_TEMP/main.parquet", "sample_runs/digits_logreg.parquet")
               .replace("$RUNNER_TEMP/pr.parquet", "sample_runs/digits_gnb.parquet")
               .replace("$RUNNER_TEMP/metricdiff.md", str(tmp_path / "out.md")))
    result = CliRunner().invoke(app, shlex.split(command)[1:])
    assert result.exit_code == 1, result.stderr  # naive Bayes is worse on NLL: the job fails
    markdown = (tmp_path / "out.md").read_text()
    assert "**worse**" in markdown and "pr" in markdown
