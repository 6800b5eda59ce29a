"""Training with pruning: tasks and metrics, raw text for masked-LM pre-training, the
early-bird Trainer callback, and the pipeline behind `compresskit prune --task ...`."""

from compresskit.train.callback import EarlyBirdCallback
from compresskit.train.data import TaskData, load_task
from compresskit.train.metrics import compute_metrics
from compresskit.train.mlm_data import TextData, load_text
from compresskit.train.run import TrainingOptions, TrainJob, TrainReport, run_training

__all__ = [
    "EarlyBirdCallback",
    "TaskData",
    "TextData",
    "TrainJob",
    "TrainReport",
    "TrainingOptions",
    "compute_metrics",
    "load_task",
    "load_text",
    "run_training",
]
