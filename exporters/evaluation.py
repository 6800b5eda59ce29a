"""The task metric of exported graphs on labelled data, so that a deployment decision (int8 or
not) rests on measured accuracy and not only on the parity checks' few sentences.

`export_onnx(..., eval_data=...)` scores the float32 graph and, when it quantises, the int8
graph on the same examples: the dev split of `eval_data`, read exactly as the training
pipeline reads `--data` (so the numbers line up with the training run's report.json).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from compresskit.errors import ConfigError
from compresskit.io import read_manifest
from compresskit.loading import is_compresskit_folder

EVAL_BATCH_SIZE = 64


@dataclass(frozen=True)
class Evaluation:
    """Metrics of each graph stage ("fp32", "int8") on the same labelled examples."""

    task: str
    source: str  # where the examples came from (load_task's one-line description)
    examples: int
    scores: dict[str, dict[str, float]]  # stage -> metric -> value, primary metric first

    @property
    def primary_metric(self) -> str:
        return next(iter(next(iter(self.scores.values()))))

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "task": self.task,
            "source": self.source,
            "examples": self.examples,
            "primary_metric": self.primary_metric,
            "scores": self.scores,
        }
        if "int8" in self.scores and "fp32" in self.scores:
            metric = self.primary_metric
            data["int8_change"] = self.scores["int8"][metric] - self.scores["fp32"][metric]
        return data

    def lines(self) -> list[str]:
        head = f"evaluation: {self.task}, {self.examples} examples ({self.source})"
        rows = [
            f"  {stage:<9} " + ", ".join(f"{name} {value:.4f}" for name, value in metrics.items())
            for stage, metrics in self.scores.items()
        ]
        return [head, *rows]


@dataclass(frozen=True)
class EvalSet:
    """Labelled examples, with each label as the model's class id."""

    task: str
    source: str
    texts: tuple[str, ...]
    pairs: tuple[str, ...] | None
    label_ids: np.ndarray
    metrics: tuple[str, ...]


def read_eval_set(
    model_dir: Path, data: str | Path, task: str | None, id2label: dict[int, str]
) -> EvalSet:
    """The dev split of `data` for `task` (default: the task the model was trained on, from
    its compresskit.json), with labels mapped to the model's class ids by name."""
    from compresskit.train.data import load_task

    task_data = load_task(task or _trained_task(model_dir), data)
    to_id = _label_mapping(task_data.labels, id2label)
    dev = task_data.dev
    pairs = tuple(str(e.text_pair) for e in dev) if task_data.is_pair else None
    return EvalSet(
        task=task_data.task,
        source=task_data.source,
        texts=tuple(e.text for e in dev),
        pairs=pairs,
        label_ids=np.array([to_id[e.label] for e in dev], dtype=np.int64),
        metrics=task_data.metrics,
    )


def _trained_task(model_dir: Path) -> str:
    if is_compresskit_folder(model_dir):
        task = read_manifest(model_dir).get("task")
        if isinstance(task, dict) and isinstance(task.get("name"), str):
            return str(task["name"])
    raise ConfigError(
        f"{model_dir} does not record the task it was trained on: name it with --eval-task "
        "(e.g. sst2, cola, classification)"
    )


def _label_mapping(data_labels: Sequence[str], id2label: dict[int, str]) -> dict[str, int]:
    """Data label -> model class id, by name. A model saved without label names (LABEL_0,
    LABEL_1, ...) takes the data's labels in sorted order, as the training pipeline assigns
    them."""
    names = [str(id2label[i]) for i in range(len(id2label))]
    if names == [f"LABEL_{i}" for i in range(len(names))] and len(data_labels) == len(names):
        return {label: i for i, label in enumerate(data_labels)}
    to_id = {name: i for i, name in enumerate(names)}
    missing = [label for label in data_labels if label not in to_id]
    if missing:
        raise ConfigError(
            f"the evaluation data has label {missing[0]!r} but the model's labels are "
            f"{names}: evaluate on data of the task the model was trained for"
        )
    return to_id


# A graph stage's logits for one tokenised batch: (texts, pairs) -> (batch, num_labels).
Logits = Callable[[Sequence[str], Sequence[str] | None], np.ndarray]


def score(eval_set: EvalSet, logits: Logits) -> dict[str, float]:
    """The task's metrics of the argmax of `logits` over the whole set, in batches."""
    from compresskit.train.metrics import compute_metrics

    predictions = []
    for start in range(0, len(eval_set.texts), EVAL_BATCH_SIZE):
        end = start + EVAL_BATCH_SIZE
        pairs = eval_set.pairs[start:end] if eval_set.pairs is not None else None
        predictions.append(logits(eval_set.texts[start:end], pairs).argmax(axis=-1))
    return compute_metrics(eval_set.metrics, np.concatenate(predictions), eval_set.label_ids)
