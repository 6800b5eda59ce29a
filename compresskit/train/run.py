"""Prune while training, end to end: load a task, let a strategy choose (a one-shot
strategy at step 0, earlybird by searching while training), prune, train the slim model,
evaluate, save. `--strategy none` trains the dense model through the same steps, so every
strategy is compared with identical data, seeds and hyper-parameters.

Two kinds of task: sequence classification (fine-tuning: the slim model trains the full
schedule after the search) and `mlm`, masked-LM pre-training on raw text from a checkpoint or
from scratch (one step budget: the slim model trains for what the search left of it).

Unfinished work lives in `<output>.run/` (the job, the plan, per-epoch checkpoints of the
slim training); `resume=True` continues from there, and it is removed once the output is
complete. The output folder itself appears only when everything in it is written.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import transformers
from transformers import Trainer, TrainingArguments
from transformers.trainer import TRAINER_STATE_NAME
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from compresskit._json import dumps, read_json_object
from compresskit.arch import adapter_class
from compresskit.errors import ConfigError
from compresskit.io import read_config, write_model
from compresskit.loading import load_model, load_tokenizer
from compresskit.outputs import atomic_directory, claim_output, resolve_output, run_dir_of
from compresskit.pipeline import timed
from compresskit.plan import PruningPlan
from compresskit.registry import get_strategy_class
from compresskit.stats import ModelStats, dense_stats, model_stats
from compresskit.strategies.base import SearchRecord, Strategy, TrainingTimeStrategy
from compresskit.train.callback import (
    SEARCH_STATE,
    LossCurve,
    StrategyCallback,
    add_strategy_group,
    load_strategy_checkpoint,
)
from compresskit.train.data import TaskData, load_task
from compresskit.train.distributed import (
    IndependentRandomness,
    check_same_everywhere,
    has_unused_parameters,
    is_main_process,
    on_cpu,
    process_state,
    wait_for_everyone,
)
from compresskit.train.encode import EncodedSplit, collator, encode_split
from compresskit.train.figure import write_figure
from compresskit.train.metrics import compute_metrics
from compresskit.train.mlm_data import (
    MlmCollator,
    TextData,
    encode_blocks,
    load_text,
    masked_once,
)
from compresskit.train.mlm_model import (
    MaskedLMTrainer,
    ModelSize,
    classifier_from_pretrained,
    load_masked_lm,
    masked_lm_from_scratch,
)

logger = logging.getLogger(__name__)

REPORT = "report.json"
FIGURE = "pruning.png"
DENSE = "none"  # the strategy name that trains the dense model (the reference)
MLM = "mlm"  # the task that pre-trains a masked-LM model on raw text


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
    config: str | None = None
    encoding: str = "utf-8"  # of the data files
    tokenizer: str | None = None

    @property
    def run_dir(self) -> Path:
        return run_dir_of(resolve_output(self.output))

    @property
    def inputs(self) -> tuple[str | None, ...]:
        """The local paths the job reads, which its output may never replace."""
        return (self.model, self.tokenizer, *self.data.split(","))

    @property
    def is_mlm(self) -> bool:
        return self.task.lower() == MLM

    def check_model_source(self) -> None:
        """Exactly one of `model` and `config` (which only pre-training takes), and a
        `tokenizer` exactly when building from `config`."""
        if self.config is None:
            if not self.model:
                raise ConfigError("--model is needed (or, with --task mlm, --config)")
            if self.tokenizer is not None:
                raise ConfigError("--tokenizer goes with --config: a --model brings its own")
            return
        if not self.is_mlm:
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
    curve: list[dict[str, Any]] = field(default_factory=list)
    processes: int = 1  # DDP processes that trained (torchrun --nproc_per_node × nodes)
    process_index: int = 0  # this process's rank; 0 wrote the output

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
        }

    def summary(self) -> str:
        """A few lines for the terminal: metric, ticket, wall-clock per stage."""
        split = "held-out" if self.job.is_mlm else "dev"
        lines = [f"{split} {k}: {v:.4f}" for k, v in self.metrics.items()]
        if self.search is not None:
            lines.append(
                f"search: {self.search.state} at step {self.search.decided_at} "
                f"(of {self.search.steps} trained)"
            )
        stages = ", ".join(f"{k} {v:.1f}s" for k, v in self.seconds.items())
        lines.append(f"wall-clock: {stages}")
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
            data = _load_data(job)
            job = _fit_sequence_length(job)
            resumed = _prepare_run_dir(job)  # only once the task and data are known to be good
        try:
            report = _run(job, strategy, data, resumed, seconds, start)
        except BaseException:
            if is_main_process() and not _worth_resuming(job.run_dir):
                shutil.rmtree(job.run_dir, ignore_errors=True)
            raise
        if is_main_process():
            shutil.rmtree(job.run_dir, ignore_errors=True)
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


@dataclass(frozen=True)
class _Workload:
    """What both stages train and evaluate: the model (dense until pruned), its tokenizer,
    the encoded splits and the collator that makes their batches."""

    model: Any
    tokenizer: Any
    train_set: EncodedSplit
    eval_set: EncodedSplit
    collator: Any


def _run(
    job: TrainJob,
    strategy: Strategy | None,
    data: TaskData | TextData,
    resumed: bool,
    seconds: dict[str, float],
    start: float,
) -> TrainReport:
    with timed(seconds, "load"):
        work = _prepare_mlm(job, data) if isinstance(data, TextData) else _prepare(job, data)
        dense = dense_stats(work.model, job.seq_len)
    curve = LossCurve()
    plan, search = _choose(job, strategy, work, curve, seconds)
    if plan is not None:
        with timed(seconds, "prune"):
            from compresskit.pruner import prune

            prune(work.model, plan)
    slim_steps = _slim_steps(job, work, search)
    if slim_steps == 0 and search is not None:
        logger.warning(
            "the search took the whole budget of %d steps, so the slim model was not trained: "
            "give a larger --max-steps, or cap the search with --max-search-steps",
            search.steps,
        )
    trainer = _trainer(job, work, job.run_dir / "train", max_steps=slim_steps)
    if job.training.eval_every:
        trainer.add_callback(curve.callback("train", 0 if search is None else search.steps))
    with timed(seconds, "train"):
        checkpoint = _last_complete_checkpoint(job.run_dir / "train") if resumed else None
        if trainer.args.max_steps != 0:
            trainer.train(resume_from_checkpoint=checkpoint)
    with timed(seconds, "evaluate"):
        metrics = _evaluate(trainer, work.eval_set, data)
    steps = {"train": trainer.state.global_step}
    report = TrainReport(
        job,
        {"strategy": DENSE} if strategy is None else strategy.to_dict(),
        data.source,
        data.labels if isinstance(data, TaskData) else (),
        dense,
        model_stats(work.model, job.seq_len),
        metrics,
        seconds,
        steps if search is None else {"search": search.steps} | steps,
        search,
        resumed,
        curve.points,
        process_state().num_processes,
        process_state().process_index,
    )
    _save(job, work.model, work.tokenizer, report, start)
    return report


def _worth_resuming(run_dir: Path) -> bool:
    """A plan or a checkpoint was saved: something a `resume` would not redo."""
    stages = (run_dir / "search", run_dir / "train")
    return (run_dir / "plan.json").is_file() or any(
        _last_complete_checkpoint(stage) is not None for stage in stages
    )


# A file of OUTPUT.run/ that cannot be read: the run cannot continue from it.
_DAMAGED_RUN = "; start the run again with --overwrite"


def _last_complete_checkpoint(folder: Path, marker: str = TRAINER_STATE_NAME) -> str | None:
    """The newest checkpoint in `folder` that holds `marker`, the file written last into it,
    and whose JSON state files read: a process killed while writing a checkpoint leaves one
    without, or with a truncated one, and the one before it is still there (the Trainer keeps
    two)."""
    complete = [
        path
        for path in folder.glob(f"{PREFIX_CHECKPOINT_DIR}-*")
        if path.name.rsplit("-", 1)[-1].isdigit()
        and all(_reads_as_json(path / name) for name in {marker, TRAINER_STATE_NAME})
    ]
    if not complete:
        return None
    return str(max(complete, key=lambda path: int(path.name.rsplit("-", 1)[-1])))


def _reads_as_json(path: Path) -> bool:
    try:
        json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return False
    return True


# --- setting up --------------------------------------------------------------------------------
def _build_strategy(job: TrainJob) -> Strategy | None:
    """The strategy of `job`; pre-training fills in the strategy's own pre-training defaults
    (earlybird: the paper's 30% FFN) where the job sets nothing."""
    if job.strategy == DENSE:
        extra = sorted(set(job.options) - {"seed"})
        if extra:
            raise ConfigError(f"--strategy none trains the dense model: drop {', '.join(extra)}")
        return None
    strategy_class = get_strategy_class(job.strategy)
    if job.is_mlm:
        return strategy_class(**{**strategy_class.pretraining_defaults, **job.options})
    return strategy_class(**job.options)


def _load_data(job: TrainJob) -> TaskData | TextData:
    t = job.training
    if job.is_mlm:
        return load_text(
            job.data, max_train_lines=t.max_train_samples, seed=t.seed, encoding=job.encoding
        )
    return load_task(
        job.task,
        job.data,
        max_train_samples=t.max_train_samples,
        seed=t.seed,
        encoding=job.encoding,
    )


def _prepare(job: TrainJob, data: TaskData) -> _Workload:
    model, tokenizer = _load_classifier(job, data)
    train_set = encode_split(data, "train", tokenizer, job.training.max_seq_len)
    dev_set = encode_split(data, "dev", tokenizer, job.training.max_seq_len)
    return _Workload(model, tokenizer, train_set, dev_set, collator(tokenizer))


def _prepare_mlm(job: TrainJob, text: TextData) -> _Workload:
    """The masked-LM model (from `job.config` or `job.model`), training blocks, and held-out
    blocks masked once with the seed."""
    t, remote = job.training, job.trust_remote_code
    if job.config is not None:
        assert job.tokenizer is not None  # checked by TrainJob.check_model_source
        tokenizer = load_tokenizer(job.tokenizer, remote, required=True)
        size = ModelSize.parse(job.config)
        model = masked_lm_from_scratch(size, tokenizer, t.max_seq_len, t.seed)
    else:
        assert job.model is not None
        tokenizer = load_tokenizer(job.model, remote, required=True)  # fails before the model loads
        model = load_masked_lm(job.model, trust_remote_code=remote, seed=t.seed)
    train_set = encode_blocks(text.train, tokenizer, t.max_seq_len, "training")
    held_out = encode_blocks(text.held_out, tokenizer, t.max_seq_len, "held-out")
    eval_set = masked_once(held_out, tokenizer, t.seed)
    return _Workload(model, tokenizer, train_set, eval_set, MlmCollator(tokenizer))


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


def _step_budget(job: TrainJob, train_set: EncodedSplit) -> int:
    """Optimizer steps the whole run may take: `max_steps`, else what the Trainer makes of
    `epochs` (one step per batch, the last batch of an epoch may be short)."""
    t = job.training
    if t.max_steps is not None:
        return t.max_steps
    return math.ceil(t.epochs * math.ceil(len(train_set) / t.batch_size))


def _slim_steps(job: TrainJob, work: _Workload, search: SearchRecord | None) -> int | None:
    """Steps of the slim (or dense) training. Fine-tuning: the full schedule again (None:
    from `epochs`). Pre-training: what the search left of the budget."""
    if not job.is_mlm:
        return job.training.max_steps
    searched = 0 if search is None else search.steps
    return max(_step_budget(job, work.train_set) - searched, 0)


def _prepare_run_dir(job: TrainJob) -> bool:
    """Make `<output>.run/` ready; True when resuming a run found there."""
    run_dir, identity = job.run_dir, job.identity()
    saved = run_dir / "job.json"
    if run_dir.exists() and job.resume and saved.is_file():
        _check_same_job(
            read_json_object(saved, what="the run's options", error=ConfigError, fix=_DAMAGED_RUN),
            identity,
            run_dir,
        )
        return True
    if run_dir.exists() and not job.overwrite and not job.resume:
        raise ConfigError(
            f"{run_dir} holds an unfinished run: pass --resume to continue it or "
            "--overwrite to start again"
        )
    if job.resume:
        logger.warning("nothing to resume in %s: starting from the beginning", run_dir)
    wait_for_everyone()  # every process has looked before the main one starts afresh
    if is_main_process():
        shutil.rmtree(run_dir, ignore_errors=True)
        run_dir.mkdir(parents=True)
        saved.write_text(dumps(identity) + "\n", encoding="utf-8")
    wait_for_everyone()
    return False


def _check_same_job(saved: dict[str, Any], identity: dict[str, Any], run_dir: Path) -> None:
    # Through JSON, so tuples and lists compare equal.
    now = json.loads(dumps(identity))
    changed = sorted(k for k in now if saved.get(k) != now[k])
    if changed:
        raise ConfigError(
            f"--resume: the run in {run_dir} was started with different {', '.join(changed)}; "
            "use the same options, or --overwrite to start again"
        )


def _load_classifier(job: TrainJob, data: TaskData) -> tuple[Any, Any]:
    """The model with a sequence-classification head for `data`'s labels (seeded, so every
    strategy starts from the same head), and its tokenizer."""
    assert job.model is not None  # checked by TrainJob.check_model_source
    tokenizer = load_tokenizer(job.model, job.trust_remote_code, required=True)  # before the model
    transformers.set_seed(job.training.seed)
    id2label = dict(enumerate(data.labels))
    model = load_model(
        job.model,
        job.trust_remote_code,
        auto_class=transformers.AutoModelForSequenceClassification,
        num_labels=len(id2label),
        id2label=id2label,
        label2id={v: k for k, v in id2label.items()},
    )
    name = type(model).__name__
    if name.endswith("ForMaskedLM") or model.base_model is model:
        # Pre-trained by compresskit (pruned or not): its encoder under a new head.
        return classifier_from_pretrained(model, id2label), tokenizer
    if model.config.num_labels != data.num_labels or "Classification" not in name.replace(
        "TokenClassification", ""
    ):
        raise ConfigError(
            f"{job.model} is a {name} with {model.config.num_labels} labels; training on "
            f"{job.task} needs a sequence classifier with {data.num_labels}: start from "
            "the dense checkpoint or a masked-LM model"
        )
    return model, tokenizer


def _trainer(job: TrainJob, work: _Workload, folder: Path, *, max_steps: int | None) -> Trainer:
    t = job.training
    args = TrainingArguments(
        output_dir=str(folder),
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
        # Masked-LM logits are (examples, tokens, vocabulary): never gather them.
        prediction_loss_only=job.is_mlm,
        logging_steps=50,
        report_to="none",
        disable_tqdm=not t.progress,
        dataloader_pin_memory=torch.cuda.is_available(),
        use_cpu=on_cpu(),
        # The Trainer's default has DDP walk the autograd graph every step looking for unused
        # parameters; only a model with a layer pruned to no heads has any.
        ddp_find_unused_parameters=has_unused_parameters(work.model),
    )
    trainer_class = MaskedLMTrainer if job.is_mlm else Trainer
    trainer = trainer_class(
        model=work.model,
        args=args,
        train_dataset=work.train_set,
        eval_dataset=work.eval_set if t.eval_every else None,
        data_collator=work.collator,
        processing_class=work.tokenizer,
        callbacks=[IndependentRandomness()],
    )
    if not job.is_mlm:
        # The classifiers take **kwargs, so the Trainer assumes they divide their loss by
        # its num_items_in_batch and multiplies the loss by the number of processes; they
        # ignore it and return their own batch's mean, which made the gradients N times too
        # large under DDP (and weakened the coefficients' L1 term against them).
        trainer.model_accepts_loss_kwargs = False
    return trainer


# --- choosing what to prune --------------------------------------------------------------------
def _choose(
    job: TrainJob,
    strategy: Strategy | None,
    work: _Workload,
    curve: LossCurve,
    seconds: dict[str, float],
) -> tuple[PruningPlan | None, SearchRecord | None]:
    """The plan (None: train dense) and, for a search, how it ended. A plan chosen by an
    earlier attempt of this run is reused on resume, with the weights the slim training
    starts from."""
    if strategy is None:
        return None, None
    saved = job.run_dir / "plan.json"
    if saved.is_file():
        record = read_json_object(
            saved, what="the chosen plan", error=ConfigError, fix=_DAMAGED_RUN
        )
        seconds.update(record["seconds"])
        search = None if record["search"] is None else SearchRecord.from_dict(record["search"])
        if search is not None:
            _load_searched_weights(work.model, job.run_dir)
        return PruningPlan.from_dict(record["plan"]), search
    if isinstance(strategy, TrainingTimeStrategy):
        with timed(seconds, "search"):
            plan, search = _search(job, strategy, work, curve)
        stage = {"search": seconds["search"]}
    else:
        with timed(seconds, "score"):
            plan, search = strategy.plan(work.model, _scoring_batches(job, work)), None
        stage = {"score": seconds["score"]}
    record = {"plan": plan.to_dict(), "search": None if search is None else search.to_dict()}
    # Each process chose on its own (DDP keeps their weights and the strategy's parameters
    # equal): prove they agree before the models change shape.
    check_same_everywhere("the plan and the search that chose it", record)
    if is_main_process():
        if search is not None:
            _save_searched_weights(work.model, job.run_dir)
        saved.write_text(dumps(record | {"seconds": stage}) + "\n", encoding="utf-8")
    return plan, search


def _search(
    job: TrainJob, strategy: TrainingTimeStrategy, work: _Workload, curve: LossCurve
) -> tuple[PruningPlan, SearchRecord]:
    """Train with the strategy attached until it decides (or the schedule ends), then detach
    it and let it set the weights the slim model starts from. The schedule is the whole
    run's, so the search is the beginning of it."""
    model = work.model
    # Part of the model before the Trainer wraps it, so that DDP averages the gradients of
    # what the strategy adds like any other's and every process decides alike.
    strategy.attach(model, as_submodule=True)
    folder = job.run_dir / "search"
    trainer = _trainer(job, work, folder, max_steps=job.training.max_steps)
    add_strategy_group(trainer, strategy)
    trainer.add_callback(StrategyCallback(strategy))
    if job.training.eval_every:
        trainer.add_callback(curve.callback("search"))
    # A search interrupted after a checkpoint continues from it: weights and the strategy's
    # parameters, optimizer, schedule and RNG states from the Trainer's files, the strategy's
    # state from ours, written right after the Trainer's own files.
    checkpoint = _last_complete_checkpoint(folder, SEARCH_STATE)
    if checkpoint is not None:
        load_strategy_checkpoint(strategy, checkpoint)
    trainer.train(resume_from_checkpoint=checkpoint)
    plan = strategy.finish(model)
    strategy.detach()
    strategy.prepare_slim(model)
    resumed_from = None if checkpoint is None else int(checkpoint.rsplit("-", 1)[-1])
    record = replace(
        strategy.record(), steps=trainer.state.global_step, resumed_from_step=resumed_from
    )
    # Plain JSON values (lists, not tuples), as a resumed run reads them back from plan.json.
    return plan, SearchRecord.from_dict(json.loads(dumps(record.to_dict())))


def _save_searched_weights(model: Any, run_dir: Path) -> None:
    from safetensors.torch import save_model

    save_model(model, str(run_dir / "searched.safetensors"))


def _load_searched_weights(model: Any, run_dir: Path) -> None:
    from safetensors.torch import load_model

    load_model(model, str(run_dir / "searched.safetensors"))


def _scoring_batches(job: TrainJob, work: _Workload) -> Any:
    """Training batches in file order, for strategies that score with data (taylor)."""
    return torch.utils.data.DataLoader(
        work.train_set, batch_size=job.training.batch_size, collate_fn=work.collator
    )


# --- evaluating and saving ---------------------------------------------------------------------
def _evaluate(
    trainer: Trainer, dev_set: EncodedSplit, data: TaskData | TextData
) -> dict[str, float]:
    if isinstance(data, TextData):
        return _evaluate_mlm(trainer, dev_set)
    output = trainer.predict(dev_set)
    logits = output.predictions[0] if isinstance(output.predictions, tuple) else output.predictions
    predictions = np.asarray(logits).argmax(-1)
    return compute_metrics(data.metrics, predictions, np.asarray(dev_set.labels))


def _evaluate_mlm(trainer: Trainer, held_out: EncodedSplit) -> dict[str, float]:
    """Masked-LM loss on the held-out blocks (mean over blocks of the loss per masked token)
    and its perplexity."""
    loss = float(trainer.evaluate(held_out)["eval_loss"])
    return {"mlm_loss": loss, "perplexity": math.exp(loss) if loss < 700 else math.inf}


def _save(job: TrainJob, model: Any, tokenizer: Any, report: TrainReport, start: float) -> None:
    """Model, tokenizer, compresskit.json, figure and report.json, all or nothing; written by
    the main process while the others wait, so every process returns once the output is
    there."""
    if not is_main_process():
        wait_for_everyone()
        return
    seconds = report.seconds
    with atomic_directory(job.output, overwrite=job.overwrite) as tmp:
        save_start = time.perf_counter()
        write_model(model, tmp, tokenizer, extra=_manifest_extra(report))
        write_figure(tmp / FIGURE, report.search, report.after, report.dense)
        seconds["save"] = round(time.perf_counter() - save_start, 4)
        seconds["total"] = round(time.perf_counter() - start, 4)
        (tmp / REPORT).write_text(dumps(report.to_dict()) + "\n", encoding="utf-8")
    wait_for_everyone()


def _manifest_extra(report: TrainReport) -> dict[str, Any]:
    task: dict[str, Any] = {"name": report.job.task, "labels": list(report.labels)}
    if report.job.is_mlm:
        task = {"name": MLM, "data": report.data_source}
    extra: dict[str, Any] = {"strategy": report.strategy, "task": task}
    if report.search is not None:
        extra["search"] = asdict(report.search)
    return extra
