"""What a training run shows while it runs: one bar per stage, named ("search", "training",
"evaluation"), on stderr, with its ETA and the live training loss; nothing on stdout, which
is the final summary's (or --json's) alone.

The Trainer's own display is replaced: its ProgressCallback (one unnamed bar) and, with
`disable_tqdm`, its PrinterCallback (every log as a Python dict on stdout). Without bars
(`--no-progress`), a stage says in one line on stderr when it ends.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments
from transformers.trainer_callback import PrinterCallback, ProgressCallback


def show_stage(trainer: Any, stage: str, *, bars: bool, main_process: bool) -> None:
    """Replace `trainer`'s display by `StageProgress` for `stage`; other processes of a
    distributed run show nothing."""
    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    if main_process:
        trainer.add_callback(StageProgress(stage, bars=bars))


class StageProgress(TrainerCallback):
    """A named bar over a stage's optimizer steps (resumed runs start where they were), with
    the last logged loss; a second bar while the stage evaluates."""

    def __init__(self, stage: str, *, bars: bool = True) -> None:
        self.stage, self.bars = stage, bars
        self.bar: Any = None
        self.eval_bar: Any = None
        self.loss: float | None = None
        self.first_step = 0
        self.start = 0.0

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        self.first_step, self.start = state.global_step, time.perf_counter()
        if self.bars:
            self.bar = _bar(self.stage, state.max_steps, initial=state.global_step, unit="step")

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        if self.bar is not None:
            self.bar.update(state.global_step - self.bar.n)

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, Any] | None = None,
        **kw: Any,
    ) -> None:
        if logs and "loss" in logs:
            self.loss = float(logs["loss"])
            if self.bar is not None:
                self.bar.set_postfix(loss=f"{self.loss:.4f}", refresh=False)

    def on_prediction_step(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        if not self.bars:
            return
        if self.eval_bar is None:
            loader = kw.get("eval_dataloader")
            total = len(loader) if loader is not None and hasattr(loader, "__len__") else None
            self.eval_bar = _bar("evaluation", total, unit="batch", leave=False)
        self.eval_bar.update(1)

    def on_evaluate(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        if self.eval_bar is not None:
            self.eval_bar.close()
            self.eval_bar = None

    def on_predict(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        metrics: Any = None,
        **kw: Any,
    ) -> None:
        self.on_evaluate(args, state, control)

    def on_train_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
            return
        steps = state.global_step - self.first_step
        loss = "" if self.loss is None else f", last loss {self.loss:.4f}"
        print(
            f"{self.stage}: {steps} steps (to step {state.global_step} of {state.max_steps}) "
            f"in {time.perf_counter() - self.start:.1f}s{loss}",
            file=sys.stderr,
        )


def _bar(name: str, total: int | None, *, initial: int = 0, unit: str, leave: bool = True) -> Any:
    from tqdm.auto import tqdm

    return tqdm(
        total=total,
        initial=initial,
        desc=name,
        unit=unit,
        leave=leave,
        file=sys.stderr,
        dynamic_ncols=True,
    )
