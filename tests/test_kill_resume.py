"""A real `compresskit prune` process of every registered training-time strategy, killed with
SIGKILL in the middle of its search or of the slim training, resumes (`--resume`) to the same
decision, search history, plan and dev metrics as a run that was never interrupted: checkpoints
hold the weights and what the strategy added, optimizer, schedule, RNG states and the
strategy's state."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import kill_when, quick_args, training_time_strategies

from compresskit.testing import write_tiny_checkpoint, write_tiny_sentiment

# 16 steps an epoch, 64 in all; with its quick options every strategy decides after step 6
SEARCH = ["--epochs", "4", "--batch-size", "8", "--max-seq-len", "16", "--save-every", "2",
          "--seed", "0", "--no-progress"]  # fmt: skip
SEARCH_KILL_AFTER = "checkpoint-6"
TRAINING_TIME = training_time_strategies()


def prune_command(strategy: str, model: Path, data: Path, output: Path, *extra: str) -> list[str]:
    return [
        *[sys.executable, "-m", "compresskit", "prune", *quick_args(strategy)],
        *["--model", str(model), "--task", "sst2", "--data", str(data), "--output", str(output)],
        *SEARCH,
        *extra,
    ]


def environment() -> dict[str, str]:
    return os.environ | {"OMP_NUM_THREADS": "1"}


def outcome(output: Path) -> dict[str, object]:
    report = json.loads((output / "report.json").read_text())
    manifest = json.loads((output / "compresskit.json").read_text())
    return {
        "search": report["search"],
        "layers": manifest["layers"],
        "metrics": report["metrics"],
        "steps": report["steps"],
    }


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("kill")
    return write_tiny_checkpoint(root / "model"), write_tiny_sentiment(root / "data")


@pytest.fixture(scope="module", params=TRAINING_TIME)
def strategy(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def uninterrupted(
    strategy: str, inputs: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory
) -> dict:
    output = tmp_path_factory.mktemp("reference") / "out"
    done = subprocess.run(
        prune_command(strategy, *inputs, output),
        env=environment(),
        capture_output=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    expected = outcome(output)
    assert 6 < expected["search"]["decided_at"] < 40
    return expected


# Where to kill: a complete checkpoint of the search (well before the ticket), or of the slim
# training (after the plan was chosen; at step 40 whether the slim training restarted the
# budget at 0 or continued it from the decision); the file named is the last one written.
KILL_POINTS = {
    "mid-search": ("search", SEARCH_KILL_AFTER, "search_state.json"),
    "mid-slim-training": ("train", "checkpoint-40", "trainer_state.json"),
}


@pytest.mark.parametrize("where", KILL_POINTS)
def test_a_killed_run_resumes_to_the_same_decision_plan_and_metrics(
    tmp_path, strategy, inputs, uninterrupted, where
):
    stage, checkpoint, last_file = KILL_POINTS[where]
    killed, run_dir = tmp_path / "killed", tmp_path / "killed.run"
    process = subprocess.Popen(
        prune_command(strategy, *inputs, killed),
        env=environment(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    kill_when(process, run_dir / stage / checkpoint / last_file)
    assert not killed.exists()
    assert (run_dir / "plan.json").exists() == (stage == "train")

    resumed = subprocess.run(
        prune_command(strategy, *inputs, killed, "--resume"),
        env=environment(),
        capture_output=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr.decode()[-2000:]
    got, expected = outcome(killed), json.loads(json.dumps(uninterrupted))
    resumed_from = got["search"].pop("resumed_from_step")
    assert expected["search"].pop("resumed_from_step") is None
    if stage == "search":  # continued from a checkpoint of the search, not started again
        assert 6 <= resumed_from < expected["search"]["decided_at"]
    else:  # the plan was kept: no second search
        assert resumed_from is None
    assert got == expected
    assert json.loads((killed / "report.json").read_text())["resumed"] is True
    assert not run_dir.exists()
