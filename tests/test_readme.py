"""The README's commands work as written."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import metricdiff
from metricdiff.cli import app

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


COLUMNS = re.compile(r"^COLUMNS=(\d+) ")


def console_commands() -> list[str]:
    """Every `$ metricdiff ...` line of a console block, with its `COLUMNS=N ` prefix if any."""
    blocks = re.findall(r"```console\n(.*?)```", README, flags=re.S)
    return [line[2:] for block in blocks for line in block.splitlines()
            if COLUMNS.sub("", line[2:]).startswith("metricdiff ")]


def test_readme_names_the_two_setup_commands_and_the_makefile_has_them():
    assert "make demo" in README and "make test" in README
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^demo:", makefile, flags=re.M)
    assert re.search(r"^test:", makefile, flags=re.M)
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_the_demo_target_runs_a_readme_command():
    demo = re.search(r"^demo:.*\n\t(.*)$", (ROOT / "Makefile").read_text(), flags=re.M).group(1)
    command = demo.split("metricdiff ", 1)[1]
    assert f"metricdiff {command}" in [COLUMNS.sub("", c) for c in console_commands()]


def shown_output(command: str) -> list[str]:
    """The ```text blocks between the console block of `command` and the next console block:
    the output the README shows for it."""
    after = README.split(f"$ {command}\n", 1)[1]
    return re.findall(r"```text\n(.*?)```", after.split("```console", 1)[0], flags=re.S)


@pytest.mark.parametrize("command", console_commands())
def test_readme_command_runs(command, monkeypatch):
    """Each command runs; with `COLUMNS=N` its output is shown as it really prints at that
    width (each block shown is a part of it, line for line)."""
    monkeypatch.chdir(ROOT)
    width = COLUMNS.match(command)
    env = {"COLUMNS": width.group(1)} if width else {}
    result = CliRunner(env=env).invoke(app, shlex.split(COLUMNS.sub("", command))[1:])
    assert result.exit_code == 0, (command, result.stderr)
    assert result.stdout.strip()
    if width:
        blocks = shown_output(command)
        assert blocks
        for block in blocks:
            assert block in result.stdout, (command, block[:200])


class FakeTensor:
    """Stands in for a torch tensor: usable only after .detach().cpu()."""

    def __init__(self, values):
        self.values = np.asarray(values)

    def detach(self):
        return self

    def cpu(self):
        return self.values


def readme_namespace(folder: Path) -> dict:
    """What the README's training-code snippets assume: a model, a loader, class names."""
    rng = np.random.default_rng(0)
    classes = [f"class {c}" for c in range(4)]
    labels = rng.integers(0, 4, 100)

    class Model:
        def __call__(self, inputs):  # PyTorch style: tensors of logits
            return FakeTensor(rng.normal(size=(len(inputs.values), 4)))

        def predict(self, x):  # Keras style: probabilities
            logits = rng.normal(size=(len(x), 4))
            return np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)

    loader = [(FakeTensor(np.zeros((25, 3))), FakeTensor(labels[i:i + 25]),
               FakeTensor(np.arange(i, i + 25))) for i in range(0, 100, 25)]
    return {"metricdiff": metricdiff, "model": Model(), "loader": loader, "classes": classes,
            "x_val": np.zeros((100, 3)), "y_val": labels, "np": np}


def test_readme_python_snippets_run(monkeypatch, tmp_path):
    """Every python block, in order, in one namespace; files land in a temporary folder."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sample_runs").symlink_to(ROOT / "sample_runs")
    namespace = readme_namespace(tmp_path)
    for snippet in re.findall(r"```python\n(.*?)```", README, flags=re.S):
        exec(compile(snippet, "README.md", "exec"), namespace)
    assert metricdiff.report(str(tmp_path / "val.parquet")).to_dict()["run"]["n"] == 100


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
