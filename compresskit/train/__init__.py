"""Fine-tuning with pruning: tasks and metrics, the early-bird Trainer callback, and the
pipeline behind `compresskit prune --task ...`."""

from compresskit.train.callback import EarlyBirdCallback
from compresskit.train.data import TaskData, load_task
from compresskit.train.metrics import compute_metrics
from compresskit.train.run import TrainingOptions, TrainJob, TrainReport, run_training

__all__ = [
    "EarlyBirdCallback",
    "TaskData",
    "TrainJob",
    "TrainReport",
    "TrainingOptions",
    "compute_metrics",
    "load_task",
    "run_training",
]
