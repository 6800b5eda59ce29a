"""The two kinds of training task behind one interface, so that the orchestrator (`run.py`)
has no task branches: sequence classification (fine-tuning on labelled data) and masked-LM
pre-training on raw text. A task owns its data, its model and head, the collator that makes
its batches, its Trainer, its step budget after a search, and its metric."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import transformers
from transformers import Trainer

from compresskit.errors import ConfigError
from compresskit.io import read_config
from compresskit.loading import load_model, load_tokenizer
from compresskit.train.data import TaskData, load_task
from compresskit.train.encode import EncodedSplit, collator, encode_split
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

if TYPE_CHECKING:
    from compresskit.train.run import TrainJob

MLM = "mlm"  # the task name that pre-trains a masked-LM model on raw text


@dataclass(frozen=True)
class Workload:
    """What both stages train and evaluate: the model (dense until pruned), its tokenizer,
    the encoded splits and the collator that makes their batches."""

    model: Any
    tokenizer: Any
    train_set: EncodedSplit
    eval_set: EncodedSplit
    collator: Any


class Task:
    """What varies between kinds of training; see the module docstring."""

    eval_split: ClassVar[str] = "dev"
    pretraining: ClassVar[bool] = False  # strategies then use their pretraining_defaults
    trainer_class: ClassVar[type[Trainer]] = Trainer
    # Masked-LM logits are (examples, tokens, vocabulary): never gather them.
    prediction_loss_only: ClassVar[bool] = False

    def load_data(self, job: TrainJob) -> Any:
        raise NotImplementedError

    def prepare(self, job: TrainJob, data: Any) -> Workload:
        raise NotImplementedError

    def configure(self, trainer: Trainer) -> None:
        """Adjust a Trainer made for this task."""

    def evaluate(self, trainer: Trainer, work: Workload, data: Any) -> dict[str, float]:
        raise NotImplementedError

    def labels(self, data: Any) -> tuple[str, ...]:
        return ()

    def manifest(self, job: TrainJob, data: Any) -> dict[str, Any]:
        """What compresskit.json records of the task."""
        raise NotImplementedError


class ClassificationTask(Task):
    """Fine-tuning a sequence classifier on GLUE-style data."""

    def load_data(self, job: TrainJob) -> TaskData:
        t = job.training
        return load_task(
            job.task,
            job.data,
            max_train_samples=t.max_train_samples,
            seed=t.seed,
            encoding=job.encoding,
        )

    def prepare(self, job: TrainJob, data: TaskData) -> Workload:
        model, tokenizer = _load_classifier(job, data)
        train_set = encode_split(data, "train", tokenizer, job.training.max_seq_len)
        dev_set = encode_split(data, "dev", tokenizer, job.training.max_seq_len)
        return Workload(model, tokenizer, train_set, dev_set, collator(tokenizer))

    def configure(self, trainer: Trainer) -> None:
        # The classifiers take **kwargs, so the Trainer assumes they divide their loss by its
        # num_items_in_batch and multiplies the loss by the number of processes; they ignore
        # it and return their own batch's mean, which made the gradients N times too large
        # under DDP (and weakened the coefficients' L1 term against them).
        trainer.model_accepts_loss_kwargs = False

    def evaluate(self, trainer: Trainer, work: Workload, data: TaskData) -> dict[str, float]:
        output = trainer.predict(work.eval_set)
        logits = output.predictions
        logits = logits[0] if isinstance(logits, tuple) else logits
        predictions = np.asarray(logits).argmax(-1)
        return compute_metrics(data.metrics, predictions, np.asarray(work.eval_set.labels))

    def labels(self, data: TaskData) -> tuple[str, ...]:
        return data.labels

    def manifest(self, job: TrainJob, data: TaskData) -> dict[str, Any]:
        return {"name": job.task, "labels": list(data.labels)}


class MaskedLMTask(Task):
    """Masked-LM pre-training on raw text, from a checkpoint or from scratch."""

    eval_split = "held-out"
    pretraining = True
    trainer_class = MaskedLMTrainer
    prediction_loss_only = True

    def load_data(self, job: TrainJob) -> TextData:
        t = job.training
        return load_text(
            job.data, max_train_lines=t.max_train_samples, seed=t.seed, encoding=job.encoding
        )

    def prepare(self, job: TrainJob, data: TextData) -> Workload:
        """The masked-LM model (from `job.config` or `job.model`), training blocks, and
        held-out blocks masked once with the seed."""
        t, remote = job.training, job.trust_remote_code
        if job.config is not None:
            assert job.tokenizer is not None  # checked by TrainJob.check_model_source
            tokenizer = load_tokenizer(job.tokenizer, remote, required=True)
            size = ModelSize.parse(job.config)
            model = masked_lm_from_scratch(size, tokenizer, t.max_seq_len, t.seed)
        else:
            assert job.model is not None
            tokenizer = load_tokenizer(job.model, remote, required=True)  # before the model
            model = load_masked_lm(job.model, trust_remote_code=remote, seed=t.seed)
        train_set = encode_blocks(data.train, tokenizer, t.max_seq_len, "training")
        held_out = encode_blocks(data.held_out, tokenizer, t.max_seq_len, "held-out")
        eval_set = masked_once(held_out, tokenizer, t.seed)
        return Workload(model, tokenizer, train_set, eval_set, MlmCollator(tokenizer))

    def evaluate(self, trainer: Trainer, work: Workload, data: TextData) -> dict[str, float]:
        """Masked-LM loss on the held-out blocks (mean over blocks of the loss per masked
        token) and its perplexity."""
        loss = float(trainer.evaluate(work.eval_set)["eval_loss"])
        return {"mlm_loss": loss, "perplexity": math.exp(loss) if loss < 700 else math.inf}

    def manifest(self, job: TrainJob, data: TextData) -> dict[str, Any]:
        return {"name": MLM, "data": data.source}


def task_of(name: str) -> Task:
    """The kind of task `name` is: `mlm` pre-trains, anything else is classification (the
    data loader checks the name)."""
    return MaskedLMTask() if name.lower() == MLM else ClassificationTask()


def _load_classifier(job: TrainJob, data: TaskData) -> tuple[Any, Any]:
    """The model with a sequence-classification head for `data`'s labels (seeded, so every
    strategy starts from the same head), and its tokenizer."""
    assert job.model is not None  # checked by TrainJob.check_model_source
    tokenizer = load_tokenizer(job.model, job.trust_remote_code, required=True)  # before the model
    _check_head_fits(job.model, read_config(job.model, job.trust_remote_code), data.num_labels)
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
    if not name.endswith("ForSequenceClassification"):
        raise ConfigError(
            f"{job.model} is a {name}; training on {job.task} needs a sequence classifier: "
            "start from the dense checkpoint or a masked-LM model"
        )
    return model, tokenizer


def _check_head_fits(model: str, config: Any, labels: int) -> None:
    """A checkpoint that is a sequence classifier already must have the data's label count:
    its head is trained, and replacing it silently would lose that. A checkpoint without
    such a head gets a new one, as every fine-tuning does, and that needs no word."""
    named = (getattr(config, "architectures", None) or [""])[0]
    is_classifier = isinstance(named, str) and named.endswith("ForSequenceClassification")
    if is_classifier and config.num_labels != labels:
        raise ConfigError(
            f"{model} is a {named} with {config.num_labels} labels in the checkpoint, "
            f"{labels} in the data: give data with its labels, or start from a checkpoint "
            "without this head (the dense encoder, or a masked-LM model)"
        )
