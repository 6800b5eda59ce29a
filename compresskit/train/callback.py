"""A training-time strategy inside any HF Trainer: one callback for every strategy of that
kind (earlybird, movement, plugins), talking to the contract in `strategies/base.py` only.

    strategy = compresskit.get_strategy("earlybird", coef_lr=1e-2)
    trainer = Trainer(model=model, args=args, train_dataset=train,
                      callbacks=[StrategyCallback(strategy)])
    trainer.train()                     # stops once the strategy has decided
    plan = strategy.finish(model)
    strategy.detach(); strategy.prepare_slim(model)
    slim = compresskit.prune(model, plan)   # then train `slim` with a new Trainer

When training begins the callback attaches the strategy (unless it is attached already), puts
the parameters it adds into the Trainer's optimizer as their own group (no weight decay, the
strategy's learning rate or the Trainer's, following the Trainer's schedule), and hooks the
strategy's extra gradients (a regulariser's) into backward, scaled for gradient accumulation,
so that gradient clipping covers them. Before each optimizer step it calls
`before_optimizer_step`, after each one `on_step`, and when a checkpoint is written it saves
the strategy's state beside it.

Under DDP (torchrun), attach before the Trainer wraps the model, as part of it, so that DDP
averages the added parameters' gradients and every process decides alike:
`strategy.attach(model, as_submodule=True)`, then build the Trainer.
"""

from __future__ import annotations

import logging
import statistics
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

from compresskit._json import dumps, read_json_object
from compresskit.errors import ConfigError
from compresskit.strategies.base import TrainingTimeStrategy

logger = logging.getLogger(__name__)

# Written into each Trainer checkpoint of a search, last: the strategy's state_dict(). The
# parameters it added are in the checkpoint's model weights when attached as a submodule, and
# the optimizer state holds their moments.
SEARCH_STATE = "search_state.json"


class StrategyCallback(TrainerCallback):
    """Runs a `TrainingTimeStrategy` inside `Trainer.train()`.

    Args:
        strategy: the strategy; read its `record()` and `finish(model)` afterwards.
        stop_training: end `train()` once the strategy has decided. With False, training goes
            on with the strategy attached.
    """

    def __init__(self, strategy: TrainingTimeStrategy, *, stop_training: bool = True) -> None:
        if not isinstance(strategy, TrainingTimeStrategy):
            raise ConfigError(
                f"StrategyCallback needs a training-time strategy, got {type(strategy).__name__} "
                f"({getattr(strategy, 'kind', '?')}): one-shot strategies plan without training"
            )
        self.strategy = strategy
        self.stop_training = stop_training
        self._hooks: list[Any] = []

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
        if not self.strategy.attached:
            if model is None:
                raise ConfigError("StrategyCallback got no model from the Trainer")
            # As a submodule, so that the Trainer's gradient clipping covers what it adds.
            self.strategy.attach(model, as_submodule=True)
        params = self.strategy.parameters()
        if optimizer is not None and params and not _in_own_group(optimizer, params):
            # Parameters attached as a submodule (for DDP) are model parameters, so the
            # Trainer put them in its weight groups, with weight decay: take them out.
            _remove_from_groups(optimizer, params)
            _add_scheduled_group(optimizer, lr_scheduler, _group_with_lr(self.strategy, args))
        self.strategy.begin(state.max_steps)
        self._remove_hooks()
        self._hooks = self.strategy.gradient_hooks(1 / max(args.gradient_accumulation_steps, 1))

    def on_save(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if args.should_save:
            folder = Path(str(args.output_dir)) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
            state_json = dumps(self.strategy.state_dict()) + "\n"
            (folder / SEARCH_STATE).write_text(state_json, encoding="utf-8")

    def on_pre_optimizer_step(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if not self.strategy.decided:
            self.strategy.before_optimizer_step()

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        # The Trainer zeroes the model's gradients only: parameters attached outside the model
        # would keep theirs.
        for parameter in self.strategy.parameters():
            parameter.grad = None
        if self.strategy.decided:
            return
        if self.strategy.on_step(state.global_step) and self.stop_training:
            control.should_training_stop = True

    def on_train_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        self._remove_hooks()
        if not self.strategy.decided:
            # Training ran out before the strategy decided: it decides with what there is.
            self.strategy.end(state.global_step)

    def _remove_hooks(self) -> None:
        for handle in self._hooks:
            handle.remove()
        self._hooks = []


def _group_with_lr(strategy: TrainingTimeStrategy, args: TrainingArguments) -> dict[str, Any]:
    group = strategy.param_group()
    assert group is not None  # only asked for when the strategy added parameters
    group.setdefault("lr", args.learning_rate)
    return group


def add_strategy_group(trainer: Trainer, strategy: TrainingTimeStrategy) -> None:
    """Create `trainer`'s optimizer now, with the parameters `strategy` added in a group of
    their own, so that the Trainer's schedule covers them from the start and the optimizer
    state of a checkpoint loads back into the same groups on resume. Without this the callback
    adds the group when training begins, after a checkpoint's optimizer state was loaded."""
    params = strategy.parameters()
    if not params:
        return
    optimizer = trainer.create_optimizer()
    _remove_from_groups(optimizer, params)
    optimizer.add_param_group(_group_with_lr(strategy, trainer.args))


def load_strategy_checkpoint(strategy: TrainingTimeStrategy, checkpoint: str | Path) -> None:
    """Put back the state that `on_save` wrote into `checkpoint`."""
    path = Path(checkpoint) / SEARCH_STATE
    if not path.is_file():
        raise ConfigError(f"{path} is missing: {checkpoint} is not a checkpoint of a search")
    strategy.load_state_dict(read_json_object(path, what="the search's state", error=ConfigError))


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
            f"StrategyCallback supports LambdaLR schedules (every transformers schedule but "
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


class StepClock(TrainerCallback):
    """Seconds per optimizer step of one stage: the median gap between consecutive step ends,
    so that the few steps that also evaluate or checkpoint, and the first one with its
    warm-up, do not count."""

    def __init__(self) -> None:
        self.ends: list[float] = []

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        self.ends.append(time.perf_counter())

    def seconds_per_step(self) -> float | None:
        gaps = [b - a for a, b in zip(self.ends, self.ends[1:], strict=False)]
        return round(statistics.median(gaps), 6) if gaps else None
