"""Training with pruning: tasks and metrics, raw text for masked-LM pre-training, the Trainer
callback of training-time strategies, and the pipeline behind `compresskit prune --task ...`.

Names are imported on first use, so that `import compresskit.train.data` (no torch) does not
pull in torch and the Trainer through this package."""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "StrategyCallback": "compresskit.train.callback",
    "TaskData": "compresskit.train.data",
    "load_task": "compresskit.train.data",
    "compute_metrics": "compresskit.train.metrics",
    "TextData": "compresskit.train.mlm_data",
    "load_text": "compresskit.train.mlm_data",
    "TrainingOptions": "compresskit.train.run",
    "TrainJob": "compresskit.train.run",
    "TrainReport": "compresskit.train.run",
    "run_training": "compresskit.train.run",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_WHERE[name]), name)
