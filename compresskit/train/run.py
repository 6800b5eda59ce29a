"""Prune while fine-tuning, end to end: load a task, let a strategy choose (a one-shot
strategy at step 0, earlybird by searching while training), prune, train the slim model,
evaluate, save. `--strategy none` trains the dense model through the same steps, so every
strategy is compared with identical data, seeds and hyper-parameters.

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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import transformers
from transformers import Trainer, TrainingArguments
from transformers.trainer_utils import get_last_checkpoint

from compresskit._json import dumps
from compresskit.errors import ConfigError
from compresskit.io import MANIFEST, atomic_directory, load, write_model
from compresskit.pipeline import check_output_free, timed
from compresskit.plan import PruningPlan
from compresskit.registry import get_strategy_class
from compresskit.stats import ModelStats, dense_stats, model_stats
from compresskit.strategies.base import Strategy
from compresskit.strategies.earlybird import EarlyBirdStrategy
from compresskit.train.callback import EarlyBirdCallback
from compresskit.train.data import TaskData, load_task
from compresskit.train.encode import EncodedSplit, collator, encode_split
from compresskit.train.figure import write_figure
from compresskit.train.metrics import compute_metrics

logger = logging.getLogger(__name__)

REPORT = "report.json"
FIGURE = "pruning.png"
DENSE = "none"  # the strategy name that trains the dense model (the reference)


@dataclass(frozen=True)
class TrainingOptions:
    """Fine-tuning hyper-parameters, the same for every strategy and for both stages of
    earlybird (search and slim training). `epochs` may be fractional."""

    epochs: float = 3.0
    batch_size: int = 32
    lr: float = 2e-5
    max_seq_len: int = 128
    max_train_samples: int | None = None
    eval_batch_size: int = 64
    weight_decay: float = 0.01
    seed: int = 0
    progress: bool = True

    def __post_init__(self) -> None:
        _positive("epochs", self.epochs)
        _positive("lr", self.lr)
        for name in ("batch_size", "max_seq_len", "eval_batch_size"):
            _positive_int(name, getattr(self, name))
        if self.max_train_samples is not None:
            _positive_int("max_train_samples", self.max_train_samples)
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
    """A fine-tuning prune. `options` are the strategy's config fields; `seq_len` is the
    sequence length MACs are counted at."""

    model: str
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

    @property
    def run_dir(self) -> Path:
        return self.output.with_name(self.output.name + ".run")

    def identity(self) -> dict[str, Any]:
        """What must match for `resume` to continue a run (not the output flags)."""
        return {
            "model": self.model,
            "strategy": self.strategy,
            "task": self.task,
            "data": self.data,
            "options": self.options,
            "training": {k: v for k, v in asdict(self.training).items() if k != "progress"},
        }


@dataclass(frozen=True)
class SearchRecord:
    """How a training-time search ended: state ("drawn" / "capped"), the step of the mask it
    ended with, the steps it trained and every distance the detector recorded."""

    state: str
    ticket_step: int | None
    steps: int
    eps: float
    window: int
    mask_interval: int
    history: list[dict[str, Any]]

    @classmethod
    def of(cls, strategy: EarlyBirdStrategy, steps: int) -> SearchRecord:
        c = strategy.config
        detector = strategy.search_state()["detector"]
        return cls(
            strategy.state,
            strategy.ticket_step,
            steps,
            c.eps,
            c.window,
            c.mask_interval,
            json.loads(json.dumps(detector["history"])),  # plain lists, as read back on resume
        )


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

    @property
    def primary_metric(self) -> str:
        return next(iter(self.metrics))

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.job.model,
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
            "search": None if self.search is None else asdict(self.search),
            "resumed": self.resumed,
            "seq_len": self.job.seq_len,
            "dense": self.dense.to_dict(),
            "after": self.after.to_dict(),
            "params_ratio": self.dense.params / max(self.after.params, 1),
            "macs_ratio": self.dense.macs / max(self.after.macs, 1),
        }

    def summary(self) -> str:
        """A few lines for the terminal: metric, ticket, wall-clock per stage."""
        lines = [f"dev {k}: {v:.4f}" for k, v in self.metrics.items()]
        if self.search is not None:
            lines.append(
                f"search: {self.search.state} at step {self.search.ticket_step} "
                f"(of {self.search.steps} trained)"
            )
        stages = ", ".join(f"{k} {v:.1f}s" for k, v in self.seconds.items())
        lines.append(f"wall-clock: {stages}")
        return "\n".join(lines)


def run_training(job: TrainJob) -> TrainReport:
    """Run `job` and save the slim model with its tokenizer, compresskit.json, report.json
    and the figure into `job.output`."""
    start = time.perf_counter()
    strategy = _build_strategy(job)  # validates before any work
    check_output_free(job)
    seconds: dict[str, float] = {}
    with timed(seconds, "load"):
        data = load_task(
            job.task,
            job.data,
            max_train_samples=job.training.max_train_samples,
            seed=job.training.seed,
        )
        resumed = _prepare_run_dir(job)  # only once the task and data are known to be good
    try:
        report = _run(job, strategy, data, resumed, seconds, start)
    except BaseException:
        if not _worth_resuming(job.run_dir):
            shutil.rmtree(job.run_dir, ignore_errors=True)
        raise
    shutil.rmtree(job.run_dir, ignore_errors=True)
    return report


def _run(
    job: TrainJob,
    strategy: Strategy | None,
    data: TaskData,
    resumed: bool,
    seconds: dict[str, float],
    start: float,
) -> TrainReport:
    with timed(seconds, "load"):
        model, tokenizer = _load_classifier(job, data)
        train_set = encode_split(data, "train", tokenizer, job.training.max_seq_len)
        dev_set = encode_split(data, "dev", tokenizer, job.training.max_seq_len)
        dense = dense_stats(model, job.seq_len)
    plan, search = _choose(job, strategy, model, tokenizer, train_set, seconds)
    if plan is not None:
        with timed(seconds, "prune"):
            from compresskit.pruner import prune

            prune(model, plan)
    trainer = _trainer(job, model, tokenizer, train_set, job.run_dir / "train", save=True)
    with timed(seconds, "train"):
        checkpoint = get_last_checkpoint(str(job.run_dir / "train")) if resumed else None
        trainer.train(resume_from_checkpoint=checkpoint)
    with timed(seconds, "evaluate"):
        metrics = _evaluate(trainer, dev_set, data)
    steps = {"train": trainer.state.global_step}
    report = TrainReport(
        job,
        {"strategy": DENSE} if strategy is None else strategy.to_dict(),
        data.source,
        data.labels,
        dense,
        model_stats(model, job.seq_len),
        metrics,
        seconds,
        steps if search is None else {"search": search.steps} | steps,
        search,
        resumed,
    )
    _save(job, model, tokenizer, report, start)
    return report


def _worth_resuming(run_dir: Path) -> bool:
    """A plan or a checkpoint was saved: something a `resume` would not redo."""
    train = run_dir / "train"
    return (run_dir / "plan.json").is_file() or (
        train.is_dir() and get_last_checkpoint(str(train)) is not None
    )


# --- setting up --------------------------------------------------------------------------------
def _build_strategy(job: TrainJob) -> Strategy | None:
    if job.strategy == DENSE:
        extra = sorted(set(job.options) - {"seed"})
        if extra:
            raise ConfigError(f"--strategy none trains the dense model: drop {', '.join(extra)}")
        return None
    return get_strategy_class(job.strategy)(**job.options)


def _prepare_run_dir(job: TrainJob) -> bool:
    """Make `<output>.run/` ready; True when resuming a run found there."""
    run_dir, identity = job.run_dir, job.identity()
    saved = run_dir / "job.json"
    if run_dir.exists() and job.resume and saved.is_file():
        _check_same_job(json.loads(saved.read_text(encoding="utf-8")), identity, run_dir)
        return True
    if run_dir.exists() and not job.overwrite and not job.resume:
        raise ConfigError(
            f"{run_dir} holds an unfinished run: pass --resume to continue it or "
            "--overwrite to start again"
        )
    if job.resume:
        logger.warning("nothing to resume in %s: starting from the beginning", run_dir)
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    saved.write_text(dumps(identity) + "\n", encoding="utf-8")
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
    transformers.set_seed(job.training.seed)
    id2label = dict(enumerate(data.labels))
    if (Path(job.model) / MANIFEST).is_file():
        model = load(job.model)
        if model.config.num_labels != data.num_labels or "Classification" not in type(
            model
        ).__name__.replace("TokenClassification", ""):
            raise ConfigError(
                f"{job.model} is a {type(model).__name__} with {model.config.num_labels} "
                f"labels; training on {job.task} needs a sequence classifier with "
                f"{data.num_labels}: start from the dense checkpoint"
            )
    else:
        model = _from_pretrained_classifier(job, id2label)
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(
            job.model, trust_remote_code=job.trust_remote_code
        )
    except (OSError, ValueError):
        raise ConfigError(
            f"{job.model} has no tokenizer: training needs one (tokenizer.json or vocab files "
            "beside config.json)"
        ) from None
    return model, tokenizer


def _from_pretrained_classifier(job: TrainJob, id2label: dict[int, str]) -> Any:
    from compresskit.errors import ModelFileError

    try:
        return transformers.AutoModelForSequenceClassification.from_pretrained(
            job.model,
            num_labels=len(id2label),
            id2label=id2label,
            label2id={v: k for k, v in id2label.items()},
            trust_remote_code=job.trust_remote_code,
        )
    except (OSError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ModelFileError(f"cannot load model {job.model!r}: {first}") from None


def _trainer(
    job: TrainJob, model: Any, tokenizer: Any, train_set: EncodedSplit, folder: Path, *, save: bool
) -> Trainer:
    t = job.training
    args = TrainingArguments(
        output_dir=str(folder),
        num_train_epochs=t.epochs,
        per_device_train_batch_size=t.batch_size,
        per_device_eval_batch_size=t.eval_batch_size,
        learning_rate=t.lr,
        weight_decay=t.weight_decay,
        seed=t.seed,
        save_strategy="epoch" if save else "no",
        save_total_limit=1,
        eval_strategy="no",
        logging_steps=50,
        report_to="none",
        disable_tqdm=not t.progress,
        dataloader_pin_memory=torch.cuda.is_available(),
    )
    return Trainer(
        model=model,
        args=args,
        train_dataset=train_set,
        data_collator=collator(tokenizer),
        processing_class=tokenizer,
    )


# --- choosing what to prune --------------------------------------------------------------------
def _choose(
    job: TrainJob,
    strategy: Strategy | None,
    model: Any,
    tokenizer: Any,
    train_set: EncodedSplit,
    seconds: dict[str, float],
) -> tuple[PruningPlan | None, SearchRecord | None]:
    """The plan (None: train dense) and, for a search, how it ended. A plan chosen by an
    earlier attempt of this run is reused on resume."""
    if strategy is None:
        return None, None
    saved = job.run_dir / "plan.json"
    if saved.is_file():
        record = json.loads(saved.read_text(encoding="utf-8"))
        seconds.update(record["seconds"])
        search = None if record["search"] is None else SearchRecord(**record["search"])
        if search is not None and not strategy.config.rewind:
            _load_searched_weights(model, job.run_dir)
        return PruningPlan.from_dict(record["plan"]), search
    if isinstance(strategy, EarlyBirdStrategy):
        with timed(seconds, "search"):
            plan, search = _search(job, strategy, model, tokenizer, train_set)
        stage = {"search": seconds["search"]}
    else:
        with timed(seconds, "score"):
            plan, search = strategy.plan(model, _scoring_batches(job, tokenizer, train_set)), None
        stage = {"score": seconds["score"]}
    record = {"plan": plan.to_dict(), "search": None if search is None else asdict(search)}
    saved.write_text(dumps(record | {"seconds": stage}) + "\n", encoding="utf-8")
    return plan, search


def _search(
    job: TrainJob, strategy: EarlyBirdStrategy, model: Any, tokenizer: Any, train_set: EncodedSplit
) -> tuple[PruningPlan, SearchRecord]:
    """Train with the coefficients until the ticket is drawn (or the cap, or the end of the
    schedule), then detach them and rewind (unless `rewind=False`)."""
    trainer = _trainer(job, model, tokenizer, train_set, job.run_dir / "search", save=False)
    trainer.add_callback(EarlyBirdCallback(strategy))
    trainer.train()
    plan = strategy.plan(model)
    strategy.detach()
    if strategy.config.rewind:
        strategy.rewind(model)
    else:
        _save_searched_weights(model, job.run_dir)
    return plan, SearchRecord.of(strategy, trainer.state.global_step)


def _save_searched_weights(model: Any, run_dir: Path) -> None:
    from safetensors.torch import save_model

    save_model(model, str(run_dir / "searched.safetensors"))


def _load_searched_weights(model: Any, run_dir: Path) -> None:
    from safetensors.torch import load_model

    load_model(model, str(run_dir / "searched.safetensors"))


def _scoring_batches(job: TrainJob, tokenizer: Any, train_set: EncodedSplit) -> Any:
    """Training batches in file order, for strategies that score with data (taylor)."""
    return torch.utils.data.DataLoader(
        train_set, batch_size=job.training.batch_size, collate_fn=collator(tokenizer)
    )


# --- evaluating and saving ---------------------------------------------------------------------
def _evaluate(trainer: Trainer, dev_set: EncodedSplit, data: TaskData) -> dict[str, float]:
    output = trainer.predict(dev_set)
    logits = output.predictions[0] if isinstance(output.predictions, tuple) else output.predictions
    predictions = np.asarray(logits).argmax(-1)
    return compute_metrics(data.metrics, predictions, np.asarray(dev_set.labels))


def _save(job: TrainJob, model: Any, tokenizer: Any, report: TrainReport, start: float) -> None:
    """Model, tokenizer, compresskit.json, figure and report.json, all or nothing."""
    seconds = report.seconds
    with atomic_directory(job.output, overwrite=job.overwrite) as tmp:
        save_start = time.perf_counter()
        write_model(model, tmp, tokenizer, extra=_manifest_extra(report))
        write_figure(tmp / FIGURE, report.search, report.after, report.dense)
        seconds["save"] = round(time.perf_counter() - save_start, 4)
        seconds["total"] = round(time.perf_counter() - start, 4)
        (tmp / REPORT).write_text(dumps(report.to_dict()) + "\n", encoding="utf-8")


def _manifest_extra(report: TrainReport) -> dict[str, Any]:
    extra: dict[str, Any] = {
        "strategy": report.strategy,
        "task": {"name": report.job.task, "labels": list(report.labels)},
    }
    if report.search is not None:
        extra["search"] = asdict(report.search)
    return extra
