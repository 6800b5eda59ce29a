"""The main job: load a model, let a strategy choose, prune, save, report.

`compresskit prune` is a thin shell over `run_prune`; Python users call it directly or
compose the same steps themselves (see docs/python-api.md).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from compresskit._json import dumps
from compresskit.errors import ConfigError
from compresskit.io import write_model
from compresskit.loading import load_model_and_tokenizer
from compresskit.outputs import atomic_directory, claim_output, resolve_output
from compresskit.plan import PruningPlan
from compresskit.registry import get_strategy_class
from compresskit.stats import ModelStats, dense_stats, model_stats
from compresskit.target import (
    TargetOptions,
    check_target_options,
    plan_strategy_for_target,
    target_record,
    target_summary,
)

REPORT = "report.json"


@dataclass(frozen=True)
class PruneJob:
    """Everything a one-shot prune needs. `options` are the strategy's config fields
    (heads_ratio, ffn_ratio, seed, ...)."""

    model: str
    strategy: str
    output: Path
    options: dict[str, Any] = field(default_factory=dict)
    overwrite: bool = False
    seq_len: int = 128
    trust_remote_code: bool = False
    standalone: bool = False  # also write the modeling code (compresskit/hf.py)
    target: TargetOptions | None = None  # widths chosen for a latency or MACs budget


@dataclass(frozen=True)
class PruneReport:
    job: PruneJob
    strategy: dict[str, Any]
    plan: PruningPlan
    dense: ModelStats
    before: ModelStats
    after: ModelStats
    seconds: dict[str, float]
    target: dict[str, Any] | None = None  # target.target_record

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.job.model,
            "output": str(self.job.output),
            "strategy": self.strategy,
            "seq_len": self.job.seq_len,
            "dense": self.dense.to_dict(),
            "before": self.before.to_dict(),
            "after": self.after.to_dict(),
            "params_ratio": self.dense.params / max(self.after.params, 1),
            "macs_ratio": self.dense.macs / max(self.after.macs, 1),
            "seconds": self.seconds,
            "target": self.target,
        }

    def table(self) -> str:
        table = self.after.table(baseline=self.dense)
        return table if self.target is None else f"{table}\n{target_summary(self.target)}"


def run_prune(job: PruneJob) -> PruneReport:
    """Prune `job.model` with a one-shot strategy and save it, tokenizer included, with
    `compresskit.json` (plan and strategy) and `report.json` (params and MACs)."""
    strategy = get_strategy_class(job.strategy)(**job.options)  # validates before any work
    if job.target is not None:
        check_target_options(job.options, job.target)
    if strategy.kind != "one-shot" or strategy.needs_data:
        raise ConfigError(
            f"strategy {job.strategy!r} "
            f"{'prunes while training' if strategy.kind != 'one-shot' else 'scores with data'}"
            ": give --task and --data (see `compresskit prune --help`)"
        )
    job = replace(job, output=resolve_output(job.output))
    # Checked and locked before any work, so that no result is lost and nothing of the user's
    # is replaced (outputs.claim_output).
    with claim_output(job.output, overwrite=job.overwrite, inputs=[job.model]):
        seconds: dict[str, float] = {}
        with timed(seconds, "load"):
            model, tokenizer = load_model_and_tokenizer(job.model, job.trust_remote_code)
            dense, before = dense_stats(model, job.seq_len), model_stats(model, job.seq_len)
        with timed(seconds, "score"):
            choice = None
            if job.target is None:
                plan = strategy.plan(model)
            else:
                choice = plan_strategy_for_target(
                    strategy, model, None, job.target, job.options.get("round_to")
                )
                plan = choice.plan
        given = copy.deepcopy(model) if job.target is not None and job.target.timed else None
        with timed(seconds, "prune"):
            from compresskit.pruner import prune

            prune(model, plan)
        after = model_stats(model, job.seq_len)
        target = None
        if choice is not None and job.target is not None:
            target = target_record(job.target, choice, given, model, seconds)
        report = PruneReport(job, strategy.to_dict(), plan, dense, before, after, seconds, target)
        with timed(seconds, "save"):
            _save_with_report(model, tokenizer, report)
    return report


def _save_with_report(model: Any, tokenizer: Any, report: PruneReport) -> None:
    job = report.job
    # One atomic folder for the model and the report: either both land or neither does.
    with atomic_directory(job.output, overwrite=job.overwrite) as tmp:
        write_model(
            model, tmp, tokenizer, extra={"strategy": report.strategy}, standalone=job.standalone
        )
        (tmp / REPORT).write_text(dumps(report.to_dict()) + "\n", encoding="utf-8")


@contextmanager
def timed(seconds: dict[str, float], stage: str) -> Iterator[None]:
    """Add the wall-clock seconds of the block to `seconds[stage]`."""
    start = time.perf_counter()
    yield
    seconds[stage] = round(seconds.get(stage, 0.0) + time.perf_counter() - start, 4)
