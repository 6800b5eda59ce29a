"""`compresskit prune --task ... --data ...`: fine-tuning from the shell, and its mistakes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers import training_time_strategies

from compresskit.cli import cli

SEARCHING = training_time_strategies()[0]  # any training-time strategy
FAST = ["--epochs", "1", "--batch-size", "16", "--lr", "5e-3", "--max-seq-len", "16"]


def prune(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["prune", *args])
    return result.exit_code, result.output


def test_a_recipe_sets_training_options(tiny_task: tuple[Path, Path], tmp_path: Path) -> None:
    model, data = tiny_task
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        f"strategy: none\nmodel: {model}\ntask: sst2\ndata: {data}\nepochs: 1\n"
        "batch-size: 16\nmax-seq-len: 16\nprogress: false\n"
    )
    code, output = prune("--recipe", str(recipe), "--output", str(tmp_path / "out"))
    assert code == 0, output
    assert json.loads((tmp_path / "out" / "report.json").read_text())["steps"] == {"train": 8}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--strategy", "magnitude", "--epochs", "2"], "--epochs fine-tune(s) a model: --task"),
        (["--strategy", SEARCHING], "prunes while training: give --task and --data"),
        (["--strategy", "taylor"], "scores with data: give --task and --data"),
        (["--strategy", "none", "--task", "sst2", "--heads-ratio", "0.3"], "drop heads_ratio"),
        (["--strategy", "magnitude", "--task", "sst2", "--eps", "0.1"], "unknown option(s) eps"),
        (["--strategy", "none", "--task", "stsb"], "regression"),
        (["--strategy", "none", "--task", "nope"], "sst2"),
        (["--strategy", "none", "--task", "sst2", "--epochs", "0"], "epochs must be a number > 0"),
    ],
)
def test_mistakes_get_one_line_and_no_output(
    args: list[str], message: str, tiny_task: tuple[Path, Path], tmp_path: Path
) -> None:
    model, data = tiny_task
    if "--task" in args:
        args = [*args, "--data", str(data)]
    code, output = prune(*args, "--model", str(model), "--output", str(tmp_path / "out"))
    assert code == 1
    assert output.startswith("Error: ") and output.count("\n") == 1, output
    assert message in output
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.run").exists()


def test_missing_data_says_where_it_looked(tiny_task: tuple[Path, Path], tmp_path: Path) -> None:
    code, output = prune(
        *("--strategy", "none", "--model", str(tiny_task[0]), "--task", "sst2"),
        *("--data", str(tmp_path / "nowhere"), "--output", str(tmp_path / "out")),
    )
    assert code == 1 and "nowhere" in output and output.count("\n") == 1
