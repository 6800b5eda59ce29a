"""OUTPUT.run/: where an unfinished training run keeps what `--resume` continues from, and the
one place that reads and writes it.

    job.json               the options that must match to resume (written first: it marks the
                           folder as a run of compresskit's, see outputs.RUN_FILES)
    search/checkpoint-N/   the search's Trainer checkpoints, each with search_state.json last
    train/checkpoint-N/    the slim (or dense) training's Trainer checkpoints; after a search
                           that continues the budget, the first is the hand-off's, written
                           before plan.json (train/handoff.py)
    plan.json              the plan once chosen, how the search ended, and its seconds
    searched.safetensors   the slim model's first weights, when it restarts the budget

Only the main process writes; under DDP the others wait at barriers around it.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

from transformers.trainer import TRAINER_STATE_NAME
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from compresskit._json import dumps, read_json_object
from compresskit.errors import ConfigError
from compresskit.outputs import RUN_MARKER
from compresskit.train.distributed import is_main_process, wait_for_everyone

logger = logging.getLogger(__name__)

# A file of OUTPUT.run/ that cannot be read: the run cannot continue from it.
_DAMAGED = "; start the run again with --overwrite"


class RunDir:
    """OUTPUT.run/ of one training run; see the module docstring."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.plan_file = path / "plan.json"
        self.weights_file = path / "searched.safetensors"

    def stage(self, name: str) -> Path:
        """The Trainer's output folder of a stage: "search" or "train"."""
        return self.path / name

    # --- starting and resuming ---------------------------------------------------------------
    def prepare(self, identity: dict[str, Any], *, resume: bool, overwrite: bool) -> bool:
        """Make the folder ready for a run with these options; True when resuming one found
        there (with the same options, else ConfigError naming those that changed)."""
        saved = self.path / RUN_MARKER
        if self.path.exists() and resume and saved.is_file():
            before = read_json_object(
                saved, what="the run's options", error=ConfigError, fix=_DAMAGED
            )
            self._check_same_job(before, identity)
            return True
        if self.path.exists() and not overwrite and not resume:
            raise ConfigError(
                f"{self.path} holds an unfinished run: pass --resume to continue it or "
                "--overwrite to start again"
            )
        if resume:
            logger.warning("nothing to resume in %s: starting from the beginning", self.path)
        wait_for_everyone()  # every process has looked before the main one starts afresh
        if is_main_process():
            shutil.rmtree(self.path, ignore_errors=True)
            self.path.mkdir(parents=True)
            saved.write_text(dumps(identity) + "\n", encoding="utf-8")
        wait_for_everyone()
        return False

    def _check_same_job(self, saved: dict[str, Any], identity: dict[str, Any]) -> None:
        now = json.loads(dumps(identity))  # through JSON, so tuples and lists compare equal
        changed = sorted(k for k in now if saved.get(k) != now[k])
        if changed:
            raise ConfigError(
                f"--resume: the run in {self.path} was started with different "
                f"{', '.join(changed)}; use the same options, or --overwrite to start again"
            )

    def last_checkpoint(self, stage: str, marker: str = TRAINER_STATE_NAME) -> str | None:
        """The newest checkpoint of `stage` that holds `marker`, the file written last into
        it, and whose JSON state files read: a process killed while writing a checkpoint
        leaves one without, or with a truncated one, and the one before it is still there
        (the Trainer keeps two)."""
        complete = [
            path
            for path in self.stage(stage).glob(f"{PREFIX_CHECKPOINT_DIR}-*")
            if path.name.rsplit("-", 1)[-1].isdigit()
            and all(_reads_as_json(path / name) for name in {marker, TRAINER_STATE_NAME})
        ]
        if not complete:
            return None
        return str(max(complete, key=lambda path: int(path.name.rsplit("-", 1)[-1])))

    def handed_over(self) -> str:
        """The newest checkpoint of the slim training that continues a search's budget: the
        hand-off's (train/handoff.py) or a later one."""
        checkpoint = self.last_checkpoint("train")
        if checkpoint is None:
            raise ConfigError(f"{self.path} lacks the slim training's first checkpoint{_DAMAGED}")
        return checkpoint

    def worth_resuming(self) -> bool:
        """A plan or a checkpoint was saved: something a `resume` would not redo."""
        return self.plan_file.is_file() or any(
            self.last_checkpoint(stage) is not None for stage in ("search", "train")
        )

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)

    # --- the choice of what to prune ---------------------------------------------------------
    def saved_choice(self) -> dict[str, Any] | None:
        """plan.json of an earlier attempt (plan, search record, seconds), or None."""
        if not self.plan_file.is_file():
            return None
        return read_json_object(
            self.plan_file, what="the chosen plan", error=ConfigError, fix=_DAMAGED
        )

    def save_choice(self, record: dict[str, Any], model: Any | None) -> None:
        """plan.json and, when given, the pruned `model`'s weights, which the slim training
        starts from (a search that restarts the budget)."""
        if model is not None:
            from safetensors.torch import save_model

            save_model(model, str(self.weights_file))
        self.plan_file.write_text(dumps(record) + "\n", encoding="utf-8")

    def load_start_weights(self, model: Any) -> None:
        from safetensors.torch import load_model

        load_model(model, str(self.weights_file))


def _reads_as_json(path: Path) -> bool:
    try:
        json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return False
    return True
