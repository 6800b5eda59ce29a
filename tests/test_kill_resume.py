"""A real `compresskit prune` process killed with SIGKILL in the middle of the early-bird search
resumes (`--resume`) to the same ticket step, mask history, plan and dev metrics as a run that
was never interrupted: the search checkpoints its weights and coefficients, optimizer,
schedule, RNG states and detector."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from compresskit.testing import write_tiny_checkpoint, write_tiny_sentiment

# 16 steps an epoch; with these settings the ticket is drawn at step 24 of the 64.
SEARCH = ["--epochs", "4", "--batch-size", "8", "--max-seq-len", "16", "--mask-interval", "2",
          "--window", "4", "--eps", "0.1", "--coef-lr", "0.05", "--save-every", "2",
          "--seed", "0", "--no-progress"]  # fmt: skip
KILL_AFTER = "checkpoint-6"  # a complete search checkpoint, well before the ticket


def prune_command(model: Path, data: Path, output: Path, *extra: str) -> list[str]:
    return [
        *[sys.executable, "-m", "compresskit", "prune", "--strategy", "earlybird"],
        *["--model", str(model), "--task", "sst2", "--data", str(data), "--output", str(output)],
        *SEARCH,
        *extra,
    ]


def environment() -> dict[str, str]:
    return os.environ | {"OMP_NUM_THREADS": "1"}


def kill_when(process: subprocess.Popen[bytes], path: Path, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not path.is_file():
        assert process.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()


def outcome(output: Path) -> dict[str, object]:
    report = json.loads((output / "report.json").read_text())
    manifest = json.loads((output / "compresskit.json").read_text())
    return {
        "search": report["search"],
        "layers": manifest["layers"],
        "metrics": report["metrics"],
        "steps": report["steps"],
    }


def test_a_run_killed_mid_search_resumes_to_the_same_ticket_plan_and_metrics(tmp_path):
    model = write_tiny_checkpoint(tmp_path / "model")
    data = write_tiny_sentiment(tmp_path / "data")
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    done = subprocess.run(
        prune_command(model, data, reference), env=environment(), capture_output=True, timeout=300
    )
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    expected = outcome(reference)
    assert expected["search"]["state"] == "drawn"
    ticket_step = expected["search"]["ticket_step"]
    assert ticket_step > int(KILL_AFTER.split("-")[1])

    process = subprocess.Popen(
        prune_command(model, data, killed),
        env=environment(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    # The search state is the last file of a search checkpoint.
    kill_when(
        process, killed.with_name("killed.run") / "search" / KILL_AFTER / "earlybird_search.json"
    )
    run_dir = killed.with_name("killed.run")
    assert not killed.exists() and not (run_dir / "plan.json").exists()  # killed mid-search

    resumed = subprocess.run(
        prune_command(model, data, killed, "--resume"),
        env=environment(),
        capture_output=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr.decode()[-2000:]
    got = outcome(killed)
    # Continued from a checkpoint of the search (not started again, not after the ticket).
    assert 6 <= got["search"].pop("resumed_from_step") < ticket_step
    assert expected["search"].pop("resumed_from_step") is None
    assert got == expected
    assert json.loads((killed / "report.json").read_text())["resumed"] is True
    assert not run_dir.exists()
