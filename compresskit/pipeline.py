"""The main job: load a model, let a strategy choose, prune, save, report.

`compresskit prune` is a thin shell over `run_prune`; Python users call it directly or
compose the same steps themselves (see docs/python-api.md).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from compresskit._json import dumps
from compresskit.errors import ConfigError, ModelFileError, OutputExistsError
from compresskit.io import MANIFEST, atomic_directory, write_model
from compresskit.plan import PruningPlan
from compresskit.registry import get_strategy_class
from compresskit.stats import ModelStats, dense_stats, model_stats

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


@dataclass(frozen=True)
class PruneReport:
    job: PruneJob
    strategy: dict[str, Any]
    plan: PruningPlan
    dense: ModelStats
    before: ModelStats
    after: ModelStats
    seconds: dict[str, float]

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
        }

    def table(self) -> str:
        return self.after.table(baseline=self.dense)


def run_prune(job: PruneJob) -> PruneReport:
    """Prune `job.model` with a one-shot strategy and save it, tokenizer included, with
    `compresskit.json` (plan and strategy) and `report.json` (params and MACs)."""
    strategy = get_strategy_class(job.strategy)(**job.options)  # validates before any work
    if strategy.kind != "one-shot" or strategy.needs_data:
        raise ConfigError(
            f"strategy {job.strategy!r} "
            f"{'prunes while training' if strategy.kind != 'one-shot' else 'scores with data'}"
            ": give --task and --data (see `compresskit prune --help`)"
        )
    check_output_free(job)
    seconds: dict[str, float] = {}
    with timed(seconds, "load"):
        model, tokenizer = load_model_and_tokenizer(job.model, job.trust_remote_code)
        dense, before = dense_stats(model, job.seq_len), model_stats(model, job.seq_len)
    with timed(seconds, "score"):
        plan = strategy.plan(model)
    with timed(seconds, "prune"):
        from compresskit.pruner import prune

        prune(model, plan)
    after = model_stats(model, job.seq_len)
    report = PruneReport(job, strategy.to_dict(), plan, dense, before, after, seconds)
    with timed(seconds, "save"):
        _save_with_report(model, tokenizer, report)
    return report


def check_output_free(job: PruneJob | Any) -> None:
    """Refuse to start a job whose output exists (and is not an empty folder) unless the job
    says overwrite: the check runs before any work, so no result is lost."""
    out = job.output
    if out.exists() and not job.overwrite and (not out.is_dir() or any(out.iterdir())):
        raise OutputExistsError(
            f"output {out} already exists: choose another folder or pass --overwrite"
        )


def _save_with_report(model: Any, tokenizer: Any, report: PruneReport) -> None:
    job = report.job
    # One atomic folder for the model and the report: either both land or neither does.
    with atomic_directory(job.output, overwrite=job.overwrite) as tmp:
        write_model(model, tmp, tokenizer, extra={"strategy": report.strategy})
        (tmp / REPORT).write_text(dumps(report.to_dict()) + "\n", encoding="utf-8")


def load_model_and_tokenizer(name_or_path: str, trust_remote_code: bool = False) -> tuple[Any, Any]:
    """A compresskit folder (pruned before: plans compose), a local transformers folder, or a
    hub id. The model class is the one the checkpoint names (e.g. BertModel); the tokenizer
    is None when the folder has none."""
    import transformers

    from compresskit.io import load

    path = Path(name_or_path)
    if (path / MANIFEST).is_file():
        model = load(path)
    else:
        if not path.exists() and (
            name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") > 1
        ):
            raise ModelFileError(
                f"model {name_or_path} does not exist: give a folder with "
                "config.json or a hub id such as bert-base-uncased"
            )
        model = _from_pretrained(name_or_path, trust_remote_code)
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(
            name_or_path, trust_remote_code=trust_remote_code
        )
    except (OSError, ValueError):
        tokenizer = None
    return model, tokenizer


def _from_pretrained(name_or_path: str, trust_remote_code: bool) -> Any:
    import transformers

    try:
        config = transformers.AutoConfig.from_pretrained(
            name_or_path, trust_remote_code=trust_remote_code
        )
        names = getattr(config, "architectures", None) or []
        model_class = getattr(transformers, names[0], None) if names else None
        if model_class is None:
            model_class = transformers.AutoModel
        return model_class.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ModelFileError(f"cannot load model {name_or_path!r}: {first_line}") from None


@contextmanager
def timed(seconds: dict[str, float], stage: str) -> Iterator[None]:
    """Add the wall-clock seconds of the block to `seconds[stage]`."""
    start = time.perf_counter()
    yield
    seconds[stage] = round(seconds.get(stage, 0.0) + time.perf_counter() - start, 4)
