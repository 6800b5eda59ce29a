"""Prune while training, end to end: load a task, let a strategy choose (a one-shot
strategy at step 0, a training-time one by searching while training), prune, train the slim
model, evaluate, save. `--strategy none` trains the dense model through the same steps, so
every strategy is compared with identical data, seeds and hyper-parameters.

One step budget (`epochs` or `max_steps`) for the whole run: after a search the slim model
continues it where the search stopped (schedule, optimizer moments and data stream carry on:
train/handoff.py), unless the strategy restarts training (earlybird's `rewind`: the slim model
then trains the whole budget again from step 0). Two kinds of task, train/tasks.py: sequence
classification (fine-tuning) and `mlm`, masked-LM pre-training on raw text.

Unfinished work lives in `<output>.run/` (the job, the plan, per-epoch checkpoints of the
slim training); `resume=True` continues from there, and it is removed once the output is
complete. The output folder itself appears only when everything in it is written.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from transformers import Trainer, TrainingArguments

from compresskit._json import dumps
from compresskit.arch import adapter_class
from compresskit.errors import ConfigError
from compresskit.io import read_config, write_model
from compresskit.outputs import atomic_directory, claim_output, resolve_output, run_dir_of
from compresskit.pipeline import timed
from compresskit.plan import PruningPlan
from compresskit.registry import get_strategy_class
from compresskit.stats import ModelStats, dense_stats, model_stats
from compresskit.strategies.base import SearchRecord, Strategy, TrainingTimeStrategy
from compresskit.target import (
    TargetOptions,
    WidthChoice,
    check_target_options,
    plan_strategy_for_target,
    target_record,
    target_summary,
)
from compresskit.train.accounting import TimeAccount
from compresskit.train.callback import (
    SEARCH_STATE,
    LossCurve,
    StepClock,
    StrategyCallback,
    add_strategy_group,
    load_strategy_checkpoint,
)
from compresskit.train.distill import DistillOptions, choose_teacher, distilling
from compresskit.train.distributed import (
    IndependentRandomness,
    check_same_everywhere,
    has_unused_parameters,
    is_main_process,
    on_cpu,
    process_state,
    wait_for_everyone,
)
from compresskit.train.figure import write_figure
from compresskit.train.handoff import Handoff
from compresskit.train.mlm_model import ModelSize
from compresskit.train.progress import show_stage
from compresskit.train.rundir import RunDir
from compresskit.train.tasks import Task, Workload, task_of

logger = logging.getLogger(__name__)

REPORT = "report.json"
FIGURE = "pruning.png"
DENSE = "none"  # the strategy name that trains the dense model (the reference)


@dataclass(frozen=True)
class TrainingOptions:
    """Training hyper-parameters, the same for every strategy and for both stages of
    earlybird (search and slim training). `epochs` may be fractional; `max_steps`, when set,
    is the step budget instead. `eval_every` evaluates on the held-out split every that many
    steps, for the loss curve in report.json."""

    epochs: float = 3.0
    batch_size: int = 32
    lr: float = 2e-5
    max_seq_len: int = 128
    max_train_samples: int | None = None
    eval_batch_size: int = 64
    weight_decay: float = 0.01
    seed: int = 0
    progress: bool = True
    max_steps: int | None = None
    eval_every: int | None = None
    save_every: int | None = None  # checkpoint every N steps (search and slim); None: each epoch

    def __post_init__(self) -> None:
        _positive("epochs", self.epochs)
        _positive("lr", self.lr)
        for name in ("batch_size", "max_seq_len", "eval_batch_size"):
            _positive_int(name, getattr(self, name))
        for name in ("max_train_samples", "max_steps", "eval_every", "save_every"):
            if getattr(self, name) is not None:
                _positive_int(name, getattr(self, name))
        if not 0 <= self.weight_decay < 1:
            raise ConfigError(f"weight_decay must be in [0, 1), got {self.weight_decay!r}")


def _positive(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ConfigError(f"{name} must be a number > 0, got {value!r}")
    if not math.isfinite(value):
        raise ConfigError(f"{name} must be finite, got {value!r}")


def _positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be an integer >= 1, got {value!r}")


@dataclass(frozen=True)
class TrainJob:
    """A prune while training. `options` are the strategy's config fields; `seq_len` is the
    sequence length MACs are counted at. `model` is the starting checkpoint; for `task="mlm"`
    from scratch, leave it None and give `config` (a ModelSize spec, `layers=4,hidden=256,
    heads=4,ffn=1024`) and `tokenizer` (a folder or hub id)."""

    model: str | None
    strategy: str
    task: str
    data: str
    output: Path
    options: dict[str, Any] = field(default_factory=dict)
    training: TrainingOptions = field(default_factory=TrainingOptions)
    overwrite: bool = False
    resume: bool = False
    seq_len: int = 128
    trust_remote_code: bool = False
    standalone: bool = False  # also write the modeling code (compresskit/hf.py)
    config: str | None = None
    encoding: str = "utf-8"  # of the data files
    tokenizer: str | None = None
    target: TargetOptions | None = None  # widths chosen for a latency or MACs budget
    distill: DistillOptions = field(default_factory=DistillOptions)

    @property
    def run_dir(self) -> Path:
        return run_dir_of(resolve_output(self.output))

    @property
    def run(self) -> RunDir:
        return RunDir(self.run_dir)

    @property
    def inputs(self) -> tuple[str | None, ...]:
        """The local paths the job reads, which its output may never replace."""
        return (self.model, self.tokenizer, *self.data.split(","))

    @property
    def kind(self) -> Task:
        """Classification or masked-LM pre-training (train/tasks.py)."""
        return task_of(self.task)

    def check_model_source(self) -> None:
        """Exactly one of `model` and `config` (which only pre-training takes), and a
        `tokenizer` exactly when building from `config`."""
        if self.config is None:
            if not self.model:
                raise ConfigError("--model is needed (or, with --task mlm, --config)")
            if self.tokenizer is not None:
                raise ConfigError("--tokenizer goes with --config: a --model brings its own")
            return
        if not self.kind.pretraining:
            raise ConfigError("--config builds a model from scratch to pre-train: use --task mlm")
        if self.model:
            raise ConfigError(
                "give --model (start from a checkpoint) or --config (from scratch), not both"
            )
        if self.tokenizer is None:
            raise ConfigError("--config needs --tokenizer: the folder or hub id of a tokenizer")
        ModelSize.parse(self.config)

    def identity(self) -> dict[str, Any]:
        """What must match for `resume` to continue a run (not the output flags)."""
        return {
            "model": self.model,
            "config": self.config,
            "tokenizer": self.tokenizer,
            "strategy": self.strategy,
            "task": self.task,
            "data": self.data,
            "encoding": self.encoding,
            "options": self.options,
            "target": None if self.target is None else self.target.to_dict(),
            "distill": self.distill.to_dict(),
            # How often to show progress or checkpoint does not change what is computed.
            "training": {
                k: v
                for k, v in asdict(self.training).items()
                if k not in ("progress", "save_every")
            },
        }


@dataclass(frozen=True)
class TrainReport:
    job: TrainJob
    strategy: dict[str, Any]
    data_source: str
    labels: tuple[str, ...]
    dense: ModelStats
    after: ModelStats
    metrics: dict[str, float]
    seconds: dict[str, float]
    steps: dict[str, int]
    search: SearchRecord | None
    resumed: bool
    time: TimeAccount
    curve: list[dict[str, Any]] = field(default_factory=list)
    processes: int = 1  # DDP processes that trained (torchrun --nproc_per_node × nodes)
    process_index: int = 0  # this process's rank; 0 wrote the output
    target: dict[str, Any] | None = None  # compresskit.target.target_record
    distillation: dict[str, Any] | None = None  # the teacher and the loss's settings

    @property
    def primary_metric(self) -> str:
        return next(iter(self.metrics))

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.job.model,
            "config": self.job.config,
            "tokenizer": self.job.tokenizer,
            "output": str(self.job.output),
            "task": self.job.task,
            "data": self.data_source,
            "labels": list(self.labels),
            "strategy": self.strategy,
            "training": asdict(self.job.training),
            "metrics": self.metrics,
            "primary_metric": self.primary_metric,
            "seconds": self.seconds,
            "steps": self.steps,
            "time": self.time.to_dict(),
            "search": None if self.search is None else self.search.to_dict(),
            "curve": self.curve,
            "resumed": self.resumed,
            "processes": self.processes,
            # What one optimizer step sees: every process's batch (DDP averages gradients).
            "global_batch_size": self.job.training.batch_size * self.processes,
            "seq_len": self.job.seq_len,
            "dense": self.dense.to_dict(),
            "after": self.after.to_dict(),
            "params_ratio": self.dense.params / max(self.after.params, 1),
            "macs_ratio": self.dense.macs / max(self.after.macs, 1),
            "target": self.target,
            "distillation": self.distillation,
        }

    def summary(self) -> str:
        """A few lines for the terminal: metric, ticket, wall-clock per stage."""
        split = self.job.kind.eval_split
        lines = [f"{split} {k}: {v:.4f}" for k, v in self.metrics.items()]
        if self.search is not None:
            lines.append(
                f"search: {self.search.state} at step {self.search.decided_at} "
                f"(of {self.search.steps} trained)"
            )
        stages = ", ".join(f"{k} {v:.1f}s" for k, v in self.seconds.items())
        lines.append(f"wall-clock: {stages}")
        lines += self.time.summary()
        if self.target is not None:
            lines.append(target_summary(self.target))
        if self.distillation is not None:
            d = self.distillation
            lines.append(
                f"distilled from {d['teacher']} (temperature {d['temperature']:g}, weight "
                f"{d['weight']:g}, hidden states {d['hidden_weight']:g})"
            )
        return "\n".join(lines)


def run_training(job: TrainJob) -> TrainReport:
    """Run `job` and save the slim model with its tokenizer, compresskit.json, report.json
    and the figure into `job.output`."""
    start = time.perf_counter()
    process_state()  # joins the launcher's process group, if any, before anything is decided
    job = replace(job, output=resolve_output(job.output))
    job.check_model_source()
    strategy = _build_strategy(job)  # validates before any work
    with _claimed_output(job):
        seconds: dict[str, float] = {}
        with timed(seconds, "load"):
            data = job.kind.load_data(job)
            job = _fit_sequence_length(job)
            # Only once the task and data are known to be good.
            resumed = job.run.prepare(job.identity(), resume=job.resume, overwrite=job.overwrite)
        try:
            report = _run(job, strategy, data, resumed, seconds, start)
        except BaseException:
            if is_main_process() and not job.run.worth_resuming():
                job.run.remove()
            raise
        if is_main_process():
            job.run.remove()
    return report


@contextmanager
def _claimed_output(job: TrainJob) -> Iterator[None]:
    """The output and OUTPUT.run/ are checked and locked (outputs.claim_output) for the whole
    run, by the process that writes them."""
    if not is_main_process():
        yield
        return
    with claim_output(job.output, overwrite=job.overwrite, inputs=job.inputs, run_dir=True):
        yield


def _run(
    job: TrainJob,
    strategy: Strategy | None,
    data: Any,
    resumed: bool,
    seconds: dict[str, float],
    start: float,
) -> TrainReport:
    task = job.kind
    with timed(seconds, "load"):
        work = task.prepare(job, data)
        dense = dense_stats(work.model, job.seq_len)
        teacher, taught_by = (None, None)
        if strategy is not None:
            labels = len(task.labels(data))
            teacher, taught_by = choose_teacher(
                job.distill, job.model, work.model, labels, task.pretraining
            )
    curve, clocks = LossCurve(), {"search": StepClock(), "train": StepClock()}
    choice = _choose(job, strategy, work, curve, clocks["search"], seconds)
    search = choice.search
    # The slim (or dense) model trains the whole budget's schedule: from step 0, or from the
    # step the search stopped at, where a continuing search hands the run over.
    trainer = _trainer(job, work, "train", max_steps=job.training.max_steps, teacher=teacher)
    if choice.handoff is not None:
        with timed(seconds, "prune"):  # the optimizer state and the rest of the hand-off
            choice.handoff.write(trainer)
    if choice.record is not None and is_main_process():
        # After the hand-off's checkpoint: a run with a plan.json always has what it needs.
        job.run.save_choice(choice.record, work.model if choice.restarts else None)
    searched = 0 if search is None else search.steps
    first_step = 0 if choice.restarts else searched  # where the slim training's steps start
    trainer.add_callback(clocks["train"])
    if job.training.eval_every:
        trainer.add_callback(curve.callback("train", searched - first_step))
    with timed(seconds, "train"):
        checkpoint: str | None = None
        if first_step:
            checkpoint = job.run.handed_over()
        elif resumed:
            checkpoint = job.run.last_checkpoint("train")
        trainer.train(resume_from_checkpoint=checkpoint)
    trained = trainer.state.global_step - first_step
    account = TimeAccount(
        budget_steps=trainer.state.max_steps,
        search_steps=searched,
        slim_steps=trained,
        search_seconds_per_step=choice.search_pace,
        slim_seconds_per_step=clocks["train"].seconds_per_step(),
        # Evaluations during training (--eval-every) are the curve's, not the training's.
        training_seconds=round(
            sum(seconds.get(k, 0.0) for k in ("search", "prune", "train")) - curve.eval_seconds, 4
        ),
    )
    if search is not None and trained == 0:
        logger.warning(
            "the search took the whole budget (%d steps), so the slim model was not trained: "
            "give a larger budget, or cap the search (e.g. --set max_search_steps=N)",
            search.steps,
        )
    with timed(seconds, "evaluate"):
        metrics = task.evaluate(trainer, work, data)
    steps = {"train": trained}
    report = TrainReport(
        job,
        {"strategy": DENSE} if strategy is None else strategy.to_dict(),
        data.source,
        task.labels(data),
        dense,
        model_stats(work.model, job.seq_len),
        metrics,
        seconds,
        steps if search is None else {"search": search.steps} | steps,
        search,
        resumed,
        account,
        curve.points,
        process_state().num_processes,
        process_state().process_index,
        choice.target,
        None if teacher is None else job.distill.to_dict() | {"teacher": taught_by},
    )
    _save(job, work.model, work.tokenizer, report, task.manifest(job, data), start)
    return report


# --- setting up --------------------------------------------------------------------------------
def _build_strategy(job: TrainJob) -> Strategy | None:
    """The strategy of `job`; pre-training fills in the strategy's own pre-training defaults
    (earlybird: the paper's 30% FFN) where the job sets nothing."""
    if job.strategy == DENSE:
        extra = sorted(set(job.options) - {"seed"})
        if extra:
            raise ConfigError(f"--strategy none trains the dense model: drop {', '.join(extra)}")
        if job.target is not None:
            raise ConfigError(
                "--strategy none trains the dense model: a target needs a strategy's scores"
            )
        if job.distill.enabled or job.distill.teacher is not None:
            raise ConfigError(
                "--strategy none trains the dense reference: distillation is for pruned models"
            )
        return None
    if job.target is not None:
        check_target_options(job.options, job.target)
    strategy_class = get_strategy_class(job.strategy)
    if job.kind.pretraining:
        return strategy_class(**{**strategy_class.pretraining_defaults, **job.options})
    return strategy_class(**job.options)


def _fit_sequence_length(job: TrainJob) -> TrainJob:
    """`job` with `max_seq_len` within the model's position table, checked from its config
    before the run folder exists (found after the search, it left a run that could never
    resume). The default length is cut to a smaller table; a length given above it is an
    error. From scratch, the table is sized to `max_seq_len`."""
    if job.model is None:
        return job
    config = read_config(job.model, job.trust_remote_code)
    positions = adapter_class(config.model_type).max_positions(config)
    length = job.training.max_seq_len
    if length <= positions:
        return job
    if length != TrainingOptions.max_seq_len:
        raise ConfigError(
            f"--max-seq-len {length} is above the {positions} positions of {job.model}: "
            f"use at most {positions}"
        )
    return replace(job, training=replace(job.training, max_seq_len=positions))


def _trainer(
    job: TrainJob, work: Workload, stage: str, *, max_steps: int | None, teacher: Any = None
) -> Trainer:
    """The Trainer of one stage ("search" or "train"), checkpointing into the run's folder of
    that stage and showing its own named progress (train/progress.py); with a `teacher`, its
    loss distils (train/distill.py)."""
    t, task = job.training, job.kind
    args = TrainingArguments(
        output_dir=str(job.run.stage(stage)),
        num_train_epochs=t.epochs,
        max_steps=-1 if max_steps is None else max_steps,
        per_device_train_batch_size=t.batch_size,
        per_device_eval_batch_size=t.eval_batch_size,
        learning_rate=t.lr,
        weight_decay=t.weight_decay,
        seed=t.seed,
        # The data order from the seed alone: every process must draw the same permutation
        # to take its share of it, whatever its random stream (IndependentRandomness).
        data_seed=t.seed,
        # Checkpoints (model, coefficients, optimizer, schedule, RNG states) for `resume`.
        save_strategy="steps" if t.save_every else "epoch",
        save_steps=t.save_every or 500,
        save_total_limit=2,  # the previous one survives a kill while the next is written
        eval_strategy="steps" if t.eval_every else "no",
        eval_steps=t.eval_every,
        prediction_loss_only=task.prediction_loss_only,
        # The training loss the stage's bar shows (train/progress.py): one .item() and, under
        # DDP, one all-reduce of a scalar every 10 steps.
        logging_steps=10,
        report_to="none",
        disable_tqdm=not t.progress,
        dataloader_pin_memory=torch.cuda.is_available(),
        use_cpu=on_cpu(),
        # The Trainer's default has DDP walk the autograd graph every step looking for unused
        # parameters; only a model with a layer pruned to no heads has any.
        ddp_find_unused_parameters=has_unused_parameters(work.model),
    )
    trainer_class = task.trainer_class
    if teacher is not None:
        trainer_class = distilling(trainer_class, teacher, job.distill)
    trainer = trainer_class(
        model=work.model,
        args=args,
        train_dataset=work.train_set,
        eval_dataset=work.eval_set if t.eval_every else None,
        data_collator=work.collator,
        processing_class=work.tokenizer,
        callbacks=[IndependentRandomness()],
    )
    task.configure(trainer)
    shown = {"search": "search", "train": "training"}[stage]
    show_stage(trainer, shown, bars=t.progress, main_process=is_main_process())
    return trainer


# --- choosing what to prune --------------------------------------------------------------------
@dataclass
class Choice:
    """What to prune and how the slim training starts. `record` is set when the choice was
    made now (for plan.json), `handoff` when a search that continues the budget just ended;
    `restarts`: the slim model trains the whole budget from step 0."""

    plan: PruningPlan | None
    search: SearchRecord | None
    restarts: bool = False
    record: dict[str, Any] | None = None
    handoff: Handoff | None = None
    search_pace: float | None = None  # the search's seconds per step
    target: dict[str, Any] | None = None  # how the widths met a target (target_record)


def _choose(
    job: TrainJob,
    strategy: Strategy | None,
    work: Workload,
    curve: LossCurve,
    clock: StepClock,
    seconds: dict[str, float],
) -> Choice:
    """Choose the plan (None: train dense) and prune `work.model` to it. A plan chosen by an
    earlier attempt of this run is reused on resume, with the weights the slim training
    starts from."""
    if strategy is None:
        return Choice(None, None)
    restarts = isinstance(strategy, TrainingTimeStrategy) and strategy.restarts_training
    saved = job.run.saved_choice()
    if saved is not None:
        seconds.update(saved["seconds"])
        plan = PruningPlan.from_dict(saved["plan"])
        search = None if saved["search"] is None else SearchRecord.from_dict(saved["search"])
        _prune(work.model, plan, seconds)
        if search is not None and restarts:
            job.run.load_start_weights(work.model)
        return Choice(
            plan,
            search,
            restarts,
            search_pace=saved.get("seconds_per_step"),
            target=saved.get("target"),
        )
    handoff = None
    if isinstance(strategy, TrainingTimeStrategy):
        with timed(seconds, "search"):
            plan, search, handoff, width = _search(job, strategy, work, curve, clock)
        stage = {"search": seconds["search"]}
    else:
        with timed(seconds, "score"):
            batches, width = _scoring_batches(job, work), None
            if job.target is None:
                plan = strategy.plan(work.model, batches)
            else:
                width = _for_target(job, strategy, work.model, batches)
                plan = width.plan
            search = None
        stage = {"score": seconds["score"]}
    record = {"plan": plan.to_dict(), "search": None if search is None else search.to_dict()}
    # Each process chose on its own (DDP keeps their weights and the strategy's parameters
    # equal): prove they agree before the models change shape.
    check_same_everywhere("the plan and the search that chose it", record)
    given = _copy_to_time(job, work.model, width)
    _prune(work.model, plan, seconds)
    target = None
    if width is not None and job.target is not None:  # the main process times: it reports
        target = target_record(job.target, width, given, work.model, seconds)
    pace = clock.seconds_per_step()
    record |= {"seconds": stage, "seconds_per_step": pace, "target": target}
    return Choice(plan, search, restarts, record, handoff, pace, target)


def _for_target(job: TrainJob, strategy: Strategy, model: Any, batches: Any) -> WidthChoice:
    """The widths chosen for the job's target from the strategy's scores of `model` (on
    `batches`, for a strategy that scores with data), not from its ratios."""
    assert job.target is not None
    return plan_strategy_for_target(
        strategy, model, batches, job.target, job.options.get("round_to")
    )


def _copy_to_time(job: TrainJob, model: Any, width: WidthChoice | None) -> Any:
    """A copy of the model before pruning, when the result's speed-up is to be measured."""
    timed = width is not None and job.target is not None and job.target.timed
    return copy.deepcopy(model) if timed and is_main_process() else None


def _prune(model: Any, plan: PruningPlan, seconds: dict[str, float]) -> None:
    with timed(seconds, "prune"):
        from compresskit.pruner import prune

        prune(model, plan)


def _search(
    job: TrainJob,
    strategy: TrainingTimeStrategy,
    work: Workload,
    curve: LossCurve,
    clock: StepClock,
) -> tuple[PruningPlan, SearchRecord, Handoff | None, WidthChoice | None]:
    """Train with the strategy attached until it decides (or the schedule ends), then detach
    it and let it set the weights the slim model starts from. The schedule is the whole
    run's, so the search is the beginning of it; unless the strategy restarts training, the
    slim training continues from where it stopped (the returned Handoff)."""
    model = work.model
    # Part of the model before the Trainer wraps it, so that DDP averages the gradients of
    # what the strategy adds like any other's and every process decides alike.
    strategy.attach(model, as_submodule=True)
    trainer = _trainer(job, work, "search", max_steps=job.training.max_steps)
    add_strategy_group(trainer, strategy)
    trainer.add_callback(StrategyCallback(strategy))
    trainer.add_callback(clock)
    if job.training.eval_every:
        trainer.add_callback(curve.callback("search"))
    # A search interrupted after a checkpoint continues from it: weights and the strategy's
    # parameters, optimizer, schedule and RNG states from the Trainer's files, the strategy's
    # state from ours, written right after the Trainer's own files.
    checkpoint = job.run.last_checkpoint("search", SEARCH_STATE)
    if checkpoint is not None:
        load_strategy_checkpoint(strategy, checkpoint)
    trainer.train(resume_from_checkpoint=checkpoint)
    # With a target, the strategy's scores at the decision (before detach: they may live in
    # what it attached) go to the width chooser instead of its ratios.
    width = None
    if job.target is None:
        plan = strategy.finish(model)
    else:
        width = _for_target(job, strategy, model, None)
        plan = width.plan
    strategy.detach()
    strategy.prepare_slim(model)
    handoff = None if strategy.restarts_training else Handoff.capture(trainer, model, plan)
    resumed_from = None if checkpoint is None else int(checkpoint.rsplit("-", 1)[-1])
    record = replace(
        strategy.record(), steps=trainer.state.global_step, resumed_from_step=resumed_from
    )
    # Plain JSON values (lists, not tuples), as a resumed run reads them back from plan.json.
    return plan, SearchRecord.from_dict(json.loads(dumps(record.to_dict()))), handoff, width


def _scoring_batches(job: TrainJob, work: Workload) -> Any:
    """Training batches in file order, for strategies that score with data (taylor)."""
    return torch.utils.data.DataLoader(
        work.train_set, batch_size=job.training.batch_size, collate_fn=work.collator
    )


# --- saving ------------------------------------------------------------------------------------
def _save(
    job: TrainJob,
    model: Any,
    tokenizer: Any,
    report: TrainReport,
    task: dict[str, Any],
    start: float,
) -> None:
    """Model, tokenizer, compresskit.json, figure and report.json, all or nothing; written by
    the main process while the others wait, so every process returns once the output is
    there."""
    if not is_main_process():
        wait_for_everyone()
        return
    seconds = report.seconds
    with atomic_directory(job.output, overwrite=job.overwrite) as tmp:
        save_start = time.perf_counter()
        write_model(
            model, tmp, tokenizer, extra=_manifest_extra(report, task), standalone=job.standalone
        )
        write_figure(tmp / FIGURE, report.to_dict())
        seconds["save"] = round(time.perf_counter() - save_start, 4)
        seconds["total"] = round(time.perf_counter() - start, 4)
        (tmp / REPORT).write_text(dumps(report.to_dict()) + "\n", encoding="utf-8")
    wait_for_everyone()


def _manifest_extra(report: TrainReport, task: dict[str, Any]) -> dict[str, Any]:
    extra: dict[str, Any] = {"strategy": report.strategy, "task": task}
    if report.search is not None:
        extra["search"] = asdict(report.search)
    return extra
