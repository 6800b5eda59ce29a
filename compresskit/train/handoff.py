"""One step budget for search and slim training: the slim model takes the searched model's
place in the same training run, at the step the search stopped.

The slim training resumes the run the way the Trainer resumes from a checkpoint, from one
written at the hand-off, `train/checkpoint-T/` (T: the search's last optimizer step):

    model.safetensors    the slim model: the searched weights, the removed units cut out
    optimizer.pt         AdamW's state of the slim model: every moment tensor cut by the same
                         plan, by the same pruner, as its weight (the kept units' moments are
                         the searched ones); each group's lr is the schedule's value at T
    scheduler.pt         the learning-rate schedule at T (the strategy's group, added last to
                         the search's optimizer, is dropped)
    rng_state[_R].pth    each process's random state at T
    trainer_state.json   global step T and the log, written last: it marks the checkpoint
                         complete (RunDir.last_checkpoint)

`Trainer.train(resume_from_checkpoint=...)` with the same budget then continues the schedule
at its position and skips the T batches the search consumed (the order is fixed by
`data_seed`), so no batch is seen twice and none is skipped. A run killed after the hand-off
resumes from the same checkpoint.
"""

from __future__ import annotations

import copy
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from transformers import Trainer, TrainerState
from transformers.trainer import OPTIMIZER_NAME, SCHEDULER_NAME, TRAINER_STATE_NAME
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR
from transformers.training_args import ParallelMode

from compresskit.plan import PruningPlan
from compresskit.train.distributed import is_main_process, wait_for_everyone


@dataclass
class Handoff:
    """What the slim training continues from, taken from the search's Trainer at its end."""

    step: int
    # parameter name -> the optimizer's state of that parameter, cut to the slim shapes
    moments: dict[str, dict[str, Any]]
    # the search optimizer's groups without their parameters (lr at `step`, weight decay, ...)
    groups: list[dict[str, Any]]
    scheduler: dict[str, Any]
    state: TrainerState
    rng: dict[str, Any]

    @classmethod
    def capture(cls, trainer: Trainer, model: nn.Module, plan: PruningPlan) -> Handoff:
        """Take the search's optimizer, schedule, state and random state from `trainer`, with
        the moments cut by `plan`. `model` is the searched model, dense, the strategy
        detached (its parameters are not the model's any more)."""
        optimizer = _unwrapped(trainer.optimizer, "optimizer")
        names = {id(p): n for n, p in model.named_parameters()}
        by_name = {names[id(p)]: s for p, s in optimizer.state.items() if id(p) in names}
        return cls(
            step=trainer.state.global_step,
            moments=_cut_moments(model, plan, by_name),
            groups=[{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups],
            scheduler=_unwrapped(trainer.lr_scheduler, "scheduler").state_dict(),
            state=copy.deepcopy(trainer.state),
            rng=_rng_state(trainer.args.parallel_mode == ParallelMode.DISTRIBUTED),
        )

    def write(self, trainer: Trainer) -> str:
        """Write checkpoint-`step` into `trainer`'s output folder for the slim model it
        trains; every process calls this. Returns the checkpoint's path."""
        folder = Path(str(trainer.args.output_dir)) / f"{PREFIX_CHECKPOINT_DIR}-{self.step}"
        optimizer = self._slim_optimizer(trainer)
        wait_for_everyone()
        trainer.save_model(str(folder))  # the main process writes, with the Trainer's format
        if is_main_process():
            folder.mkdir(parents=True, exist_ok=True)
            torch.save(optimizer.state_dict(), folder / OPTIMIZER_NAME)
            torch.save(self._slim_scheduler(len(optimizer.param_groups)), folder / SCHEDULER_NAME)
        wait_for_everyone()  # the folder exists before the others write into it
        rank, world = trainer.args.process_index, trainer.args.world_size
        torch.save(self.rng, folder / ("rng_state.pth" if world <= 1 else f"rng_state_{rank}.pth"))
        wait_for_everyone()
        if is_main_process():
            self.state.save_to_json(str(folder / TRAINER_STATE_NAME))
        wait_for_everyone()
        return str(folder)

    def _slim_optimizer(self, trainer: Trainer) -> torch.optim.Optimizer:
        """`trainer`'s optimizer (created now) holding the cut moments, its groups' settings
        those of the search's weight groups at `step`."""
        optimizer = _unwrapped(trainer.create_optimizer(), "optimizer")
        searched = self.groups[: len(optimizer.param_groups)]
        for group, before in zip(optimizer.param_groups, searched, strict=True):
            if group["weight_decay"] != before["weight_decay"]:
                raise RuntimeError("the slim optimizer's groups are not the search's")
            group.update(before)
        for name, parameter in trainer.model.named_parameters():  # type: ignore[union-attr]
            if name in self.moments:
                optimizer.state[parameter] = self.moments[name]
        return optimizer

    def _slim_scheduler(self, groups: int) -> dict[str, Any]:
        """The schedule's state for the first `groups` groups (per-group lists are cut)."""
        searched = len(self.groups)
        return {
            k: v[:groups] if isinstance(v, list) and len(v) == searched else v
            for k, v in self.scheduler.items()
        }


def _cut_moments(
    model: nn.Module, plan: PruningPlan, states: dict[str, dict[str, Any]]
) -> dict[str, dict[str, Any]]:
    """Each parameter's optimizer state with its tensors of the parameter's shape cut by
    `plan` as the pruner cuts the parameter: a copy of the model carrying one kind of state
    tensor (exp_avg, exp_avg_sq) in place of its weights is pruned, and read back."""
    from compresskit.pruner import prune

    params = dict(model.named_parameters())
    kinds = {
        key
        for name, state in states.items()
        for key, value in state.items()
        if torch.is_tensor(value) and value.shape == params[name].shape
    }
    cut: dict[str, dict[str, Any]] = {name: dict(state) for name, state in states.items()}
    for kind in sorted(kinds):
        carrier = copy.deepcopy(model)
        with torch.no_grad():
            for name, parameter in carrier.named_parameters():
                value = states.get(name, {}).get(kind)
                parameter.copy_(value if value is not None else torch.zeros_like(parameter))
        prune(carrier, plan)
        for name, parameter in carrier.named_parameters():
            if kind in cut.get(name, {}):
                cut[name][kind] = parameter.detach().clone()
    return cut


def _rng_state(distributed: bool) -> dict[str, Any]:
    """The random state in the Trainer's checkpoint format (`rng_state.pth`): under DDP the
    CUDA state of every device, as the Trainer saves and loads it."""
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "cpu": torch.random.get_rng_state(),
    }
    if torch.cuda.is_available():
        cuda = torch.cuda.random
        state["cuda"] = cuda.get_rng_state_all() if distributed else cuda.get_rng_state()
    return state


def _unwrapped(wrapped: Any, attribute: str) -> Any:
    """The torch object inside accelerate's wrapper (AcceleratedOptimizer.optimizer,
    AcceleratedScheduler.scheduler), or the object itself."""
    return getattr(wrapped, attribute, wrapped)
