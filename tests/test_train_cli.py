"""`compresskit prune --task ... --data ...`: fine-tuning from the shell, and its mistakes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers import quick_args, training_time_strategies

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


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """The command in its own process, stdout and stderr to pipes (files, not a terminal)."""
    return subprocess.run(
        [sys.executable, "-m", "compresskit", *args],
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_a_run_prints_named_stages_and_a_summary_not_logs(
    tiny_task: tuple[Path, Path], tmp_path: Path
) -> None:
    """What the README's first command shows: no Trainer dicts, no LOAD REPORT for the new
    classifier head, no escape codes in a file; a line per stage on stderr, the summary on
    stdout."""
    model, data = tiny_task
    done = run_cli(
        *("prune", *quick_args(SEARCHING), "--model", str(model)),
        *("--task", "sst2", "--data", str(data), *FAST, "--no-progress"),
        *("--output", str(tmp_path / "out")),
    )
    assert done.returncode == 0, done.stderr[-3000:]
    both = done.stdout + done.stderr
    for noise in ("{'loss'", "{'eval_loss'", "LOAD REPORT", "\x1b["):
        assert noise not in both, noise
    stages = [line.split(":")[0] for line in done.stderr.splitlines()]
    assert [s for s in stages if s in ("search", "training")] == ["search", "training"]
    assert f"-> {tmp_path / 'out'}" in done.stdout
    assert "dev accuracy" in done.stdout


def test_progress_bars_are_named_by_stage(tiny_task: tuple[Path, Path], tmp_path: Path) -> None:
    model, data = tiny_task
    done = run_cli(
        *("prune", *quick_args(SEARCHING), "--model", str(model)),
        *("--task", "sst2", "--data", str(data), *FAST, "--progress"),
        *("--output", str(tmp_path / "out")),
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "search:" in done.stderr and "training:" in done.stderr
    assert "{'loss'" not in done.stdout + done.stderr


def test_json_prints_the_report_and_nothing_else(
    tiny_task: tuple[Path, Path], tmp_path: Path
) -> None:
    model, data = tiny_task
    done = run_cli(
        *("prune", "--strategy", "none", "--model", str(model), "--task", "sst2"),
        *("--data", str(data), *FAST, "--no-progress", "--json", "--output", str(tmp_path / "out")),
    )
    assert done.returncode == 0, done.stderr[-3000:]
    printed = json.loads(done.stdout)
    assert printed == json.loads((tmp_path / "out" / "report.json").read_text())


def test_json_of_a_one_shot_prune(tiny_task: tuple[Path, Path], tmp_path: Path) -> None:
    model, _ = tiny_task
    done = run_cli(
        *("prune", "--strategy", "magnitude", "--heads-ratio", "0.5", "--model", str(model)),
        *("--json", "--output", str(tmp_path / "out")),
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout)["output"] == str(tmp_path / "out")


def test_report_compares_runs_side_by_side(tiny_task: tuple[Path, Path], tmp_path: Path) -> None:
    model, data = tiny_task
    for name, strategy in (("dense", ["--strategy", "none"]), ("slim", quick_args(SEARCHING))):
        code, output = prune(
            *(*strategy, "--model", str(model), "--task", "sst2", "--data", str(data), *FAST),
            *("--no-progress", "--output", str(tmp_path / name)),
        )
        assert code == 0, output
    result = CliRunner().invoke(
        cli,
        [
            "report",
            str(tmp_path / "dense"),
            str(tmp_path / "slim"),
            "--output",
            str(tmp_path / "cmp"),
        ],
    )
    assert result.exit_code == 0, result.output
    rows = [
        line
        for line in result.output.splitlines()
        if line.startswith("| dense") or line.startswith("| slim")
    ]
    assert len(rows) == 2
    assert (tmp_path / "cmp" / "compare.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "cmp" / "compare.md").read_text().count("\n") == 4


def test_report_of_a_folder_without_a_run_says_so(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    result = CliRunner().invoke(cli, ["report", str(tmp_path / "empty")])
    assert result.exit_code == 1
    assert "report.json does not exist" in result.output and result.output.count("\n") == 1
