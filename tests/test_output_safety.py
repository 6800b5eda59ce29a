"""What an output may replace (docs/failure-behaviour.md, "What --overwrite may replace"):
only compresskit's own previous output, never an input, a folder holding one, the current
folder or a file of the user's; a live run's output is locked; a symbolic link keeps pointing
at the new output. And the exit statuses of the one error boundary. Every data-loss case runs
on copies."""

from __future__ import annotations

import errno
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from helpers import quick_args, training_time_strategies

from compresskit.cli import cli
from compresskit.testing import write_tiny_checkpoint, write_tiny_sentiment

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def originals(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("originals")
    write_tiny_checkpoint(root / "proj" / "model")
    (root / "proj" / "train.py").write_text("print('the user's own script')\n")
    write_tiny_sentiment(root / "proj" / "data", n_train=16, n_dev=8)
    return root


@pytest.fixture
def proj(originals: Path, tmp_path: Path) -> Path:
    """A copy of a user's project: proj/model, proj/data, proj/train.py."""
    return Path(shutil.copytree(originals / "proj", tmp_path / "proj"))


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def invoke(*args: str | Path) -> Any:
    return CliRunner().invoke(cli, [str(a) for a in args])


def one_line(result: Any) -> str:
    assert "Traceback" not in result.output, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


def prune(model: Path, output: Path | str, *extra: str) -> list[str | Path]:
    return ["prune", "--strategy", "magnitude", "--model", model, "--output", output, *extra]


def train(proj: Path, output: Path | str, *extra: str) -> list[str | Path]:
    return [
        *prune(proj / "model", output, "--task", "sst2", "--data", str(proj / "data")),
        *["--epochs", "1", "--no-progress", *extra],
    ]


# --- inputs and the user's files are never replaced --------------------------------------
DataLossCase = Callable[[Path], list[str | Path]]
DATA_LOSS: dict[str, tuple[DataLossCase, str]] = {
    "output holds the input model": (
        lambda p: prune(p / "model", p, "--overwrite"),
        "holds the input",
    ),
    "output is the input model": (lambda p: prune(p / "model", p / "model"), "is the input"),
    "output is the input model, with --overwrite": (
        lambda p: prune(p / "model", p / "model", "--overwrite"),
        "is the input",
    ),
    "output is the training data": (
        lambda p: train(p, p / "data", "--overwrite"),
        "is the input",
    ),
    "export over the model it exports": (
        lambda p: ["export", "onnx", p / "model", "--output", p / "model", "--overwrite"],
        "is the input",
    ),
    "overwrite a folder of the user's": (
        lambda p: prune(p / "model", p / "data", "--overwrite"),
        "which compresskit did not write",
    ),
    "an OUTPUT.run that is not a run": (
        lambda p: train(p, p.parent / "proj-out", "--overwrite"),
        "is in the way",
    ),
}


@pytest.mark.parametrize(("case", "message"), DATA_LOSS.values(), ids=list(DATA_LOSS))
def test_overwrite_never_replaces_an_input_or_a_users_file(proj, case, message):
    (proj.parent / "proj-out.run").mkdir()
    (proj.parent / "proj-out.run" / "notes.txt").write_text("mine")
    before = snapshot(proj.parent)
    result = invoke(*case(proj))
    assert result.exit_code == 1
    assert message in one_line(result)
    assert snapshot(proj.parent) == before


def test_the_current_folder_is_never_an_output(proj, monkeypatch):
    monkeypatch.chdir(proj)
    for output in (".", str(proj), str(proj.parent)):
        result = invoke(*prune(proj / "model", output, "--overwrite"))
        assert result.exit_code == 1
        assert "is the current folder or holds it" in one_line(result)
    assert (proj / "train.py").is_file()


def test_a_previous_output_is_replaced_with_overwrite(proj):
    out = proj.parent / "out"
    assert invoke(*prune(proj / "model", out)).exit_code == 0
    assert invoke(*prune(proj / "model", out, "--heads-ratio", "0.5", "--overwrite")).exit_code == 0
    assert sorted(p.name for p in proj.parent.iterdir()) == ["out", "proj"]


# --- where the output may be written --------------------------------------------------------
def test_a_symlinked_output_keeps_its_link_and_leaves_nothing_stale(proj):
    real, link = proj.parent / "disk" / "real", proj.parent / "out"
    real.parent.mkdir()
    link.symlink_to(real)  # dangling until the first run
    for extra in ((), ("--overwrite",), ("--heads-ratio", "0.5", "--overwrite")):
        assert invoke(*prune(proj / "model", link, *extra)).exit_code == 0
        assert link.is_symlink() and (link / "compresskit.json").is_file()
    assert sorted(p.name for p in proj.parent.iterdir()) == ["disk", "out", "proj"]
    assert [p.name for p in real.parent.iterdir()] == ["real"]


def test_outputs_get_the_users_permissions(proj):
    old = os.umask(0o027)
    try:
        assert invoke(*prune(proj / "model", proj.parent / "out")).exit_code == 0
    finally:
        os.umask(old)
    assert stat.S_IMODE((proj.parent / "out").stat().st_mode) == 0o750


@pytest.mark.parametrize(
    ("output", "message"),
    [
        (lambda p: p / "train.py" / "out", "train.py is a file, not a folder"),
        (lambda p: p / "train.py", "is a file: give a folder's path"),
        (lambda p: p / ("x" * 240), "bytes: this file system allows"),
    ],
    ids=["parent is a file", "output is a file", "name too long"],
)
def test_an_output_that_cannot_be_written_is_refused_before_any_work(proj, output, message):
    before = snapshot(proj)
    result = invoke(*prune(proj / "model", output(proj)))
    assert result.exit_code == 1 and message in one_line(result)
    assert snapshot(proj) == before


def test_a_folder_that_cannot_be_written_is_refused_before_any_work(proj, monkeypatch):
    # As root, permissions do not stop a write; a read-only file system does, and os.access
    # reports both: pretend the parent is one.
    from compresskit import outputs

    monkeypatch.setattr(outputs.os, "access", lambda path, mode: Path(path) != proj.parent)
    result = invoke(*prune(proj / "model", proj.parent / "out"))
    assert result.exit_code == 1
    assert f"{proj.parent} is not writable (read-only or not yours)" in one_line(result)
    assert sorted(p.name for p in proj.parent.iterdir()) == ["proj"]


# --- a live run's output is locked ----------------------------------------------------------
HOLD = """
import sys, time
from compresskit.outputs import claim_output
with claim_output(sys.argv[1], overwrite=False):
    print("holding", flush=True)
    time.sleep(60)
"""


def test_a_second_run_on_a_live_runs_output_is_refused_and_deletes_nothing(proj):
    out = proj.parent / "out"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(out)], stdout=subprocess.PIPE, text=True, cwd=REPO
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "holding"
        result = invoke(*train(proj, out, "--overwrite"))
        assert result.exit_code == 1
        assert f"is being written by process {holder.pid}" in one_line(result)
    finally:
        holder.kill()  # SIGKILL: the kernel releases the lock
        holder.wait()
    assert invoke(*prune(proj / "model", out)).exit_code == 0
    assert sorted(p.name for p in proj.parent.iterdir()) == ["out", "proj"]


# --- the exit statuses of the error boundary ------------------------------------------------
def _raise(error: BaseException) -> Callable[..., None]:
    def fail(*args: Any, **kwargs: Any) -> None:
        raise error

    return fail


@pytest.mark.parametrize(
    ("error", "status", "message"),
    [
        (
            OSError(errno.ENOSPC, "No space left on device", "out/model.safetensors"),
            3,
            "no space left on device: out/model.safetensors: free some space",
        ),
        (OSError(errno.EROFS, "Read-only file system", "out"), 3, "choose an --output on a"),
        (
            RuntimeError("PytorchStreamWriter failed writing file data/0: file write failed"),
            3,
            "no space left on device while writing the output or a checkpoint: free some space",
        ),
        (KeyboardInterrupt(), 130, "interrupted: nothing was written"),
        (TypeError("boom"), 4, "internal error (TypeError: boom): this is a bug in compresskit"),
    ],
    ids=["disk full", "read-only", "disk full in torch.save", "ctrl-c", "a bug"],
)
def test_every_failure_is_one_line_with_its_exit_status(proj, monkeypatch, error, status, message):
    from compresskit import pipeline

    monkeypatch.setattr(pipeline, "write_model", _raise(error))
    result = invoke(*prune(proj / "model", proj.parent / "out"))
    assert result.exit_code == status
    assert message in one_line(result)
    assert sorted(p.name for p in proj.parent.iterdir()) == ["proj"]


# `compresskit prune` that, after its second checkpoint of the slim training, says so in a file
# and waits: the signal then lands while it trains, however fast the machine.
PAUSING = """
import sys, time
from pathlib import Path
from transformers import TrainerCallback
from compresskit import cli
from compresskit.train import run

READY = Path(sys.argv[1])

class Pause(TrainerCallback):
    def on_save(self, args, state, control, **kwargs):
        if state.global_step == 2:
            READY.write_text("ready")
            time.sleep(60)

make = run._trainer
def pausing(*args, **kwargs):
    trainer = make(*args, **kwargs)
    trainer.add_callback(Pause())
    return trainer

run._trainer = pausing
sys.argv = ["compresskit", *sys.argv[2:]]
cli.main()
"""


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_a_stopped_training_run_keeps_what_resumes_and_no_lock(proj, stop):
    out = proj.parent / "out"
    long = ("--save-every", "1", "--epochs", "3")
    ready = proj / "ready"
    run = subprocess.Popen(
        [sys.executable, "-c", PAUSING, ready, *map(str, train(proj, out, *long))],
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        # Ctrl-C as a terminal delivers it: in the full suite a native library loaded by an
        # earlier test leaves SIGINT ignored at the OS level, which children inherit (as
        # background jobs of a shell do), and Python then never raises KeyboardInterrupt.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 120
    while not ready.exists() and run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    run.send_signal(stop)
    _, stderr = run.communicate(timeout=60)
    if stop == signal.SIGTERM:
        # The signal lands at any point, cleanup code included, as a kill does: the status
        # says so, and the next run on the output continues and cleans up after it.
        assert run.returncode == 128 + signal.SIGTERM, (run.returncode, stderr[-1500:])
        again = invoke(*train(proj, out, *long, "--resume", "--overwrite"))
        assert again.exit_code == 0, again.output
        assert sorted(p.name for p in proj.parent.iterdir()) == ["out", "proj"]
        return
    assert sorted(p.name for p in proj.parent.iterdir()) == ["out.run", "proj"]  # no lock left
    assert run.returncode == 130, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert lines[-1] == (
        f"Error: interrupted: the unfinished run is kept in {out}.run; run the same command "
        "with --resume to continue from its last checkpoint"
    )


# --- a damaged run folder -------------------------------------------------------------------
@pytest.fixture
def interrupted_run(proj: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, list[Any]]:
    """A training run stopped (Ctrl-C) before its evaluation: OUTPUT.run/ holds job.json,
    plan.json and the last two checkpoints; returns the output and the command to resume."""
    from compresskit.train.tasks import ClassificationTask

    out = proj.parent / "out"
    args = train(proj, out, "--epochs", "3", "--save-every", "1")
    with monkeypatch.context() as patch:
        patch.setattr(ClassificationTask, "evaluate", _raise(KeyboardInterrupt()))
        assert invoke(*args).exit_code == 130
    return out, [*args, "--resume"]


def test_a_truncated_job_or_plan_file_names_itself(interrupted_run):
    out, resume = interrupted_run
    for name, what in [("plan.json", "the chosen plan"), ("job.json", "the run's options")]:
        damaged = out.with_name("out.run") / name
        damaged.write_bytes(damaged.read_bytes()[:20])
        result = invoke(*resume)
        assert result.exit_code == 1
        assert f"{damaged} ({what}) is damaged" in one_line(result)
        assert "--overwrite" in one_line(result)


def test_a_checkpoint_cut_short_is_passed_over_for_the_one_before(interrupted_run):
    out, resume = interrupted_run
    newest = out.with_name("out.run") / "train" / "checkpoint-3" / "trainer_state.json"
    newest.write_bytes(newest.read_bytes()[:20])
    assert invoke(*resume).exit_code == 0
    assert (out / "report.json").is_file()


# --- quieter failure modes --------------------------------------------------------------------
def test_a_hub_id_fails_at_once_when_the_hub_cannot_be_reached(proj, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.chdir(tmp_path)
    start = time.monotonic()
    result = invoke(*prune("someone/some-model", tmp_path / "out"))  # type: ignore[arg-type]
    assert result.exit_code == 1 and time.monotonic() - start < 10
    assert "is not a local folder, and the hub (127.0.0.1) cannot be reached" in one_line(result)


def test_a_pretraining_search_that_takes_the_whole_budget_says_so(proj):
    (proj / "text.txt").write_text("the movie was good and the plot was fine\n" * 40)
    result = invoke(
        *["prune", *quick_args(training_time_strategies()[0]), "--model", proj / "model"],
        *["--task", "mlm", "--data", proj / "text.txt", "--max-steps", "1"],
        *["--max-seq-len", "16", "--no-progress", "--output", proj.parent / "out"],
    )
    assert result.exit_code == 0, result.output
    assert "the search took the whole budget (1 steps)" in result.stderr
