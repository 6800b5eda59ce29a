"""Training under torch.distributed: `torchrun --nproc_per_node 2` on CPUs (gloo) runs the
same `compresskit prune` command; every process draws the same ticket and plan (checked by
the pipeline, which fails loudly otherwise), and one output folder is written, by process 0."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import compresskit
from compresskit.testing import write_tiny_checkpoint, write_tiny_sentiment

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]


def torchrun(args: list[str], logs: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Two local processes; each one's stdout and stderr go to files under `logs`."""
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    command = [*TORCHRUN, "--redirects", "3", "--log-dir", str(logs), *args]
    return subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False
    )


def rank_output(logs: Path, rank: int, stream: str = "stdout") -> str:
    (path,) = logs.glob(f"*/attempt_0/{rank}/{stream}.log")
    return path.read_text()


def test_two_processes_draw_one_ticket_and_write_one_output(tmp_path):
    model = write_tiny_checkpoint(tmp_path / "model")
    data = write_tiny_sentiment(tmp_path / "data")
    output = tmp_path / "out"
    result = torchrun(
        ["-m", "compresskit", "prune", "--strategy", "earlybird", "--model", str(model),
         "--task", "sst2", "--data", str(data), "--output", str(output), "--epochs", "2",
         "--batch-size", "8", "--max-seq-len", "16", "--mask-interval", "1", "--window", "2",
         "--eps", "0.5", "--no-progress", "--seed", "0"],
        tmp_path / "logs",
        tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((output / "report.json").read_text())
    ticket = report["search"]["ticket_step"]
    assert report["processes"] == 2 and report["global_batch_size"] == 16
    # 128 examples / (2 processes x 8) = 8 steps an epoch: the ranks shared the data.
    assert report["steps"]["train"] == 16
    main, other = rank_output(tmp_path / "logs", 0), rank_output(tmp_path / "logs", 1)
    assert f"search: drawn at step {ticket}" in main
    assert (
        f"process 1 of 2: done, with the same plan as process 0, ticket at step {ticket}" in other
    )
    # One output, nothing left beside it (no second writer, no run folder).
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "logs", "model", "out"]
    slim = compresskit.load(output)
    assert slim.config.num_labels == 2


def test_processes_that_disagree_fail_loudly(tmp_path):
    script = tmp_path / "disagree.py"
    script.write_text(
        textwrap.dedent(
            """
            from compresskit.train.distributed import check_same_everywhere, process_state

            state = process_state()
            check_same_everywhere("the plan", {"heads": [[0, 1], [state.process_index]]})
            """
        )
    )
    result = torchrun([str(script)], tmp_path / "logs", tmp_path)
    assert result.returncode != 0
    errors = rank_output(tmp_path / "logs", 0, "stderr") + rank_output(
        tmp_path / "logs", 1, "stderr"
    )
    assert "DistributedMismatchError: the plan differs between processes" in errors
    assert "rank 0 has" in errors and "rank 1 has" in errors


@pytest.mark.parametrize("value", [{"step": 3}, [1, 2]])
def test_one_process_agrees_with_itself(value):
    from compresskit.train.distributed import check_same_everywhere

    check_same_everywhere("anything", value)  # a world of one: nothing to compare
