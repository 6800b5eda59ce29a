"""Knowledge distillation while the slim model trains: a frozen teacher's outputs join the
task's labels in the loss.

For a classifier with logits s (student) and t (teacher), labels y, temperature T, weight α
and hidden-state weight β:

    loss = (1 - α) · CE(s, y)
           + α · T² · KL( softmax(t / T) ‖ softmax(s / T) )          (Hinton et al., 2015)
           + β · mean_l MSE(h_s^l, h_t^l)

where h^l are the hidden states after the embeddings and after each layer, shape (batch,
seq, hidden), at real tokens only. Width pruning keeps every layer and the hidden size, so the
student's states line up with the teacher's without a projection. The T² keeps the soft
term's gradient on the scale of the hard one's as T changes. Evaluation (the model in eval
mode) computes the plain task loss, so dev losses compare with runs that do not distil.

The teacher is the model before pruning when `--model` is already a classifier fine-tuned on
the task's labels (the deployment workflow: make this model faster at the same quality), or
any `--teacher` folder with the task's labels and the student's vocabulary.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from transformers import Trainer

from compresskit.errors import ConfigError
from compresskit.io import read_config

BEFORE_PRUNING = "the model before pruning"


@dataclass(frozen=True)
class DistillOptions:
    """`teacher`: a model folder, None for the model before pruning when it is a fine-tuned
    classifier of the task; `enabled`: None decides so (on exactly then, or with a
    `teacher`), True requires a teacher, False turns distillation off."""

    enabled: bool | None = None
    teacher: str | None = None
    temperature: float = 2.0
    weight: float = 0.5
    hidden_weight: float = 0.0

    def __post_init__(self) -> None:
        if not self.temperature > 0:
            raise ConfigError(f"distill_temperature must be > 0, got {self.temperature!r}")
        if not 0 <= self.weight <= 1:
            raise ConfigError(f"distill_weight must be in [0, 1], got {self.weight!r}")
        if not self.hidden_weight >= 0:
            raise ConfigError(f"distill_hidden must be >= 0, got {self.hidden_weight!r}")
        if self.enabled is False and self.teacher is not None:
            raise ConfigError("--teacher distils: drop --no-distill, or the teacher")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def choose_teacher(
    options: DistillOptions, model_path: str | None, model: Any, labels: int, pretraining: bool
) -> tuple[Any | None, str | None]:
    """(the teacher, what it is) or (None, None). Called before pruning: `model` is the
    model as loaded, the teacher when it is a fine-tuned classifier of these labels."""
    if options.enabled is False:
        return None, None
    wanted = options.enabled is True or options.teacher is not None
    if pretraining:
        if wanted:
            raise ConfigError(
                "distillation is for fine-tuning a classifier: drop it with --task mlm"
            )
        return None, None
    if options.teacher is not None:
        return _load_teacher(options.teacher, model, labels), options.teacher
    if model_path is not None and _is_fine_tuned_classifier(model_path, labels):
        teacher = copy.deepcopy(model).eval().requires_grad_(False)
        return teacher, BEFORE_PRUNING
    if wanted:
        raise ConfigError(
            f"{model_path} is not a classifier fine-tuned on the task, so it cannot teach: "
            "give --teacher FOLDER (a fine-tuned classifier of the task)"
        )
    return None, None


def _is_fine_tuned_classifier(path: str, labels: int) -> bool:
    config = read_config(path)
    return _head_of(config).endswith("ForSequenceClassification") and config.num_labels == labels


def _head_of(config: Any) -> str:
    """The class config.json's `architectures` names (the head the checkpoint was saved
    with), or "" when it names none."""
    return str((getattr(config, "architectures", None) or [""])[0])


def _load_teacher(path: str, student: Any, labels: int) -> Any:
    """A sequence classifier saved with its trained head: loading anything else as one would
    give it a random head, a teacher of noise."""
    import transformers

    from compresskit.loading import load_model

    config = read_config(path)
    head = _head_of(config)
    if not head.endswith("ForSequenceClassification"):
        raise ConfigError(
            f"--teacher {path} is a {head or 'model without a task head'}: a teacher is a "
            "sequence classifier fine-tuned on the task"
        )
    if config.num_labels != labels:
        raise ConfigError(
            f"--teacher {path} has {config.num_labels} labels, the data {labels}: give a "
            "teacher fine-tuned on this task"
        )
    if config.vocab_size != student.config.vocab_size:
        raise ConfigError(
            f"--teacher {path} has a vocabulary of {config.vocab_size} tokens, the model "
            f"{student.config.vocab_size}: they must share the tokenizer"
        )
    teacher = load_model(path, auto_class=transformers.AutoModelForSequenceClassification)
    return teacher.eval().requires_grad_(False)


def distillation_loss(
    student: Any, teacher: Any, task_loss: torch.Tensor, mask: torch.Tensor, options: DistillOptions
) -> torch.Tensor:
    """The module docstring's loss from both models' outputs (logits, and hidden_states when
    `options.hidden_weight`); `mask` (batch, seq) marks real tokens."""
    temperature = options.temperature
    soft = F.kl_div(
        F.log_softmax(student.logits.float() / temperature, dim=-1),
        F.log_softmax(teacher.logits.float() / temperature, dim=-1),
        reduction="batchmean",
        log_target=True,
    )
    loss = (1 - options.weight) * task_loss + options.weight * temperature**2 * soft
    if options.hidden_weight:
        real = mask.bool()
        layers = [
            F.mse_loss(s[real].float(), t[real].float())
            for s, t in zip(student.hidden_states, teacher.hidden_states, strict=True)
        ]
        loss = loss + options.hidden_weight * torch.stack(layers).mean()
    return loss


def distilling(trainer_class: type[Trainer], teacher: Any, options: DistillOptions) -> type:
    """A subclass of `trainer_class` whose training loss is `distillation_loss`."""

    class DistillingTrainer(trainer_class):  # type: ignore[valid-type, misc]
        def compute_loss(
            self,
            model: Any,
            inputs: dict[str, Any],
            return_outputs: bool = False,
            num_items_in_batch: Any = None,
        ) -> Any:
            if not model.training:  # evaluation: the task's own loss
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            hidden = bool(options.hidden_weight)
            if hidden:
                inputs = {**inputs, "output_hidden_states": True}
            task_loss, outputs = super().compute_loss(
                model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch
            )
            features = {k: v for k, v in inputs.items() if k != "labels"}
            if teacher.device != task_loss.device:
                teacher.to(task_loss.device)
            with torch.no_grad():
                taught = teacher(**features)
            loss = distillation_loss(outputs, taught, task_loss, inputs["attention_mask"], options)
            return (loss, outputs) if return_outputs else loss

    return DistillingTrainer
