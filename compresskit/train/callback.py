"""The early-bird search as a HF Trainer callback, usable in any Trainer:

    strategy = compresskit.get_strategy("earlybird", coef_lr=1e-2)
    trainer = Trainer(model=model, args=args, train_dataset=train,
                      callbacks=[EarlyBirdCallback(strategy)])
    trainer.train()                     # stops once the ticket is drawn
    plan = strategy.plan(model)
    strategy.detach(); strategy.rewind(model)
    slim = compresskit.prune(model, plan)   # then train `slim` with a new Trainer

The callback attaches the coefficients when training begins (unless they are attached
already), adds them to the Trainer's optimizer as their own group (no weight decay, the
strategy's `coef_lr` or the Trainer's learning rate, following the Trainer's schedule), adds the
L1 sub-gradient before each optimizer step, and feeds the ticket detector after each step.

Under DDP (torchrun), attach before the Trainer wraps the model, as part of it, so that DDP
averages the coefficients' gradients and every process draws the same masks:
`strategy.attach(model, as_submodule=True)`, then build the Trainer.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import torch
from transformers import (
    Trainer,
    TrainerCallback,
    TrainerControl,
    TrainerState,
    TrainingArguments,
)
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from compresskit._json import dumps
from compresskit.errors import ConfigError
from compresskit.strategies.earlybird import EarlyBirdStrategy

logger = logging.getLogger(__name__)

# Written into each Trainer checkpoint of a search: the detector (mask history, distances,
# ticket) and the ticket's scores. The coefficients themselves are in the checkpoint's model
# weights when attached as a submodule, and the optimizer state holds their moments.
SEARCH_STATE = "earlybird_search.json"


class EarlyBirdCallback(TrainerCallback):
    """Runs an `EarlyBirdStrategy` search inside `Trainer.train()`.

    Args:
        strategy: the search to run; read its `ticket_step`, `detector.history` and `plan()`
            afterwards.
        stop_training: end `train()` once the search is over (the ticket is drawn or the cap
            is hit). With False, training goes on with the coefficients attached.
    """

    def __init__(self, strategy: EarlyBirdStrategy, *, stop_training: bool = True) -> None:
        if not isinstance(strategy, EarlyBirdStrategy):
            raise ConfigError(
                f"EarlyBirdCallback needs an EarlyBirdStrategy, got {type(strategy).__name__}"
            )
        self.strategy = strategy
        self.stop_training = stop_training

    def on_train_begin(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        model: torch.nn.Module | None = None,
        optimizer: Any = None,
        lr_scheduler: Any = None,
        **kwargs: Any,
    ) -> None:
        coefficients = self.strategy.coefficients
        if coefficients is None or not coefficients.attached:
            if model is None:
                raise ConfigError("EarlyBirdCallback got no model from the Trainer")
            coefficients = self.strategy.attach(model)
        if optimizer is not None and not _in_own_group(optimizer, coefficients.parameters()):
            # Coefficients attached as a submodule (for DDP) are model parameters, so the
            # Trainer put them in its weight groups, with weight decay: take them out.
            _remove_from_groups(optimizer, coefficients.parameters())
            group = self.strategy.param_group()
            group.setdefault("lr", args.learning_rate)
            _add_scheduled_group(optimizer, lr_scheduler, group)

    def on_save(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if args.should_save and self.strategy.coefficients is not None:
            folder = Path(str(args.output_dir)) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
            state_json = dumps(self.strategy.search_state()) + "\n"
            (folder / SEARCH_STATE).write_text(state_json, encoding="utf-8")

    def on_pre_optimizer_step(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if not self.strategy.search_done:
            # After clipping (which covers the model's own parameters only), before the step.
            self.strategy._require_coefficients().apply_l1_subgradient()

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        # The Trainer zeroes the model's gradients only: the coefficients are not in the model.
        self.strategy._require_coefficients().zero_grad(set_to_none=True)
        if self.strategy.search_done:
            return
        if self.strategy.on_step(state.global_step) and self.stop_training:
            control.should_training_stop = True

    def on_train_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if not self.strategy.search_done:
            # Training ran out before the masks settled: end with the mask of the last step.
            self.strategy.end_search(state.global_step)


def add_coefficient_group(trainer: Trainer, strategy: EarlyBirdStrategy) -> None:
    """Create `trainer`'s optimizer now, with `strategy`'s (attached) coefficients in a group of
    their own, so that the Trainer's schedule covers them from the start and the optimizer
    state of a checkpoint loads back into the same groups on resume. Without this the callback
    adds the group when training begins, after a checkpoint's optimizer state was loaded."""
    coefficients = strategy._require_coefficients().parameters()
    optimizer = trainer.create_optimizer()
    _remove_from_groups(optimizer, coefficients)
    group = strategy.param_group()
    group.setdefault("lr", trainer.args.learning_rate)
    optimizer.add_param_group(group)


def load_search_checkpoint(strategy: EarlyBirdStrategy, checkpoint: str | Path) -> None:
    """Put back the detector and ticket state that `on_save` wrote into `checkpoint`."""
    path = Path(checkpoint) / SEARCH_STATE
    if not path.is_file():
        raise ConfigError(f"{path} is missing: {checkpoint} is not a checkpoint of a search")
    strategy.load_search_state(json.loads(path.read_text(encoding="utf-8")))


def _in_own_group(optimizer: Any, params: Any) -> bool:
    """Whether a group of the optimizer holds only these parameters (the user added
    strategy.param_group() themselves)."""
    ids = {id(p) for p in params}
    return any(
        group["params"] and all(id(p) in ids for p in group["params"])
        for group in optimizer.param_groups
    )


def _remove_from_groups(optimizer: Any, params: Any) -> None:
    ids = {id(p) for p in params}
    for group in optimizer.param_groups:
        group["params"] = [p for p in group["params"] if id(p) not in ids]


def _add_scheduled_group(optimizer: Any, lr_scheduler: Any, group: dict[str, Any]) -> None:
    """Add `group` to a Trainer's optimizer and make its schedule scale the group's lr the way
    it scales the others'. torch's LambdaLR keeps one base lr and one multiplier per group
    (and checks the counts match), so both get an entry for the new group."""
    scheduler = getattr(lr_scheduler, "scheduler", lr_scheduler)  # accelerate wraps it
    if scheduler is not None and not isinstance(scheduler, torch.optim.lr_scheduler.LambdaLR):
        raise ConfigError(
            f"EarlyBirdCallback supports LambdaLR schedules (every transformers schedule but "
            f"reduce_lr_on_plateau), got {type(scheduler).__name__}: add "
            "strategy.param_group() to your optimizer yourself"
        )
    base_lr = group["lr"]
    if scheduler is not None:
        multiplier = scheduler.lr_lambdas[0]
        group["initial_lr"] = base_lr
        group["lr"] = base_lr * multiplier(scheduler.last_epoch)
    optimizer.add_param_group(group)
    if scheduler is not None:
        scheduler.base_lrs.append(base_lr)
        scheduler.lr_lambdas.append(multiplier)
        scheduler._last_lr = [g["lr"] for g in scheduler.optimizer.param_groups]


class LossCurve:
    """Held-out loss during training against wall-clock, over one or more `Trainer.train()`
    calls (earlybird's search, then the slim training). `seconds` counts from the start of
    the first stage and leaves out the time spent evaluating, so it is what the run would
    take without the curve; `step` counts optimizer steps over all stages."""

    def __init__(self) -> None:
        self.origin: float | None = None
        self.eval_seconds = 0.0
        self.points: list[dict[str, Any]] = []

    def callback(self, stage: str, step_offset: int = 0) -> LossCurveCallback:
        """A callback that adds the evaluations of one stage to this curve."""
        return LossCurveCallback(self, stage, step_offset)


class LossCurveCallback(TrainerCallback):
    """Records each evaluation the Trainer runs (`eval_strategy="steps"`) into a LossCurve."""

    def __init__(self, curve: LossCurve, stage: str, step_offset: int) -> None:
        self.curve, self.stage, self.step_offset = curve, stage, step_offset
        self.last_step_end = 0.0

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        self.last_step_end = time.perf_counter()
        if self.curve.origin is None:
            self.curve.origin = self.last_step_end

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        self.last_step_end = time.perf_counter()

    def on_evaluate(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        metrics: dict[str, float] | None = None,
        **kw: Any,
    ) -> None:
        curve, step = self.curve, self.step_offset + state.global_step
        if curve.origin is None or not self.last_step_end or not metrics:
            return  # an evaluation outside training
        if "eval_loss" not in metrics or (curve.points and curve.points[-1]["step"] == step):
            return  # no loss, or this step is already on the curve (the final evaluation)
        trained = self.last_step_end - curve.origin - curve.eval_seconds
        curve.points.append(
            {
                "stage": self.stage,
                "step": step,
                "seconds": round(trained, 4),
                "loss": metrics["eval_loss"],
            }
        )
        # The Trainer evaluates right after a step ends: everything since then was evaluation.
        curve.eval_seconds += time.perf_counter() - self.last_step_end
