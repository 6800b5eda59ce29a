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
from compresskit.errors import ConfigError, ModelFileError
from compresskit.io import (
    CONFIG_ERRORS,
    MANIFEST,
    WEIGHTS,
    atomic_directory,
    check_weights_fit,
    corrupt_weights_message,
    one_line,
    refuse_existing_output,
    write_model,
)
from compresskit.plan import PruningPlan
from compresskit.registry import get_strategy_class
from compresskit.stats import ModelStats, dense_stats, model_stats

REPORT = "report.json"
# Files of which a model folder that has a tokenizer holds at least one.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json")


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
    refuse_existing_output(Path(job.output), overwrite=job.overwrite)


def _save_with_report(model: Any, tokenizer: Any, report: PruneReport) -> None:
    job = report.job
    # One atomic folder for the model and the report: either both land or neither does.
    with atomic_directory(job.output, overwrite=job.overwrite) as tmp:
        write_model(model, tmp, tokenizer, extra={"strategy": report.strategy})
        (tmp / REPORT).write_text(dumps(report.to_dict()) + "\n", encoding="utf-8")


def load_model_and_tokenizer(
    name_or_path: str, trust_remote_code: bool = False, *, require_tokenizer: bool = False
) -> tuple[Any, Any]:
    """A compresskit folder (pruned before: plans compose), a local transformers folder, or a
    hub id. The model class is the one the checkpoint names (e.g. BertModel); the tokenizer
    is None when the folder has none, or ModelFileError is raised, before the model is
    loaded, when `require_tokenizer`."""
    from compresskit.io import load

    path = Path(name_or_path)
    _check_model_path(name_or_path)
    tokenizer = load_tokenizer(name_or_path, trust_remote_code, required=require_tokenizer)
    if (path / MANIFEST).is_file():
        return load(path), tokenizer
    return load_checkpoint(name_or_path, trust_remote_code), tokenizer


def load_tokenizer(
    name_or_path: str, trust_remote_code: bool = False, *, required: bool = False
) -> Any:
    """The tokenizer saved with a model: None when there is none, or ModelFileError when
    `required`.

    A local folder without tokenizer files has none, whatever transformers says: transformers
    5 builds a tokenizer of special tokens only from config.json, which reads every word as
    [UNK] (TRAPS.md)."""
    import transformers

    path = Path(name_or_path)
    tokenizer, why = None, f"none of {', '.join(TOKENIZER_FILES)} is there"
    if not path.is_dir() or any((path / name).is_file() for name in TOKENIZER_FILES):
        try:
            tokenizer = transformers.AutoTokenizer.from_pretrained(
                name_or_path, trust_remote_code=trust_remote_code
            )
        except CONFIG_ERRORS as err:  # it reads config.json too
            why = one_line(err)
    if tokenizer is None and required:
        raise ModelFileError(
            f"{name_or_path} has no usable tokenizer ({why}): save the model with its "
            "tokenizer (compresskit.save(model, dir, tokenizer=tok), or tok.save_pretrained(dir))"
        )
    return tokenizer


def _check_model_path(name_or_path: str) -> None:
    path = Path(name_or_path)
    if path.is_file():
        raise ModelFileError(
            f"model {name_or_path} is a file: give the folder that holds config.json and {WEIGHTS}"
        )
    if path.is_dir() and not (path / "config.json").is_file():
        raise ModelFileError(
            f"{path} has no config.json: give a folder written by compresskit.save or "
            "save_pretrained"
        )
    if not path.exists() and (
        name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") > 1
    ):
        raise ModelFileError(
            f"model {name_or_path} does not exist: give a folder with "
            "config.json or a hub id such as bert-base-uncased"
        )


def load_checkpoint(
    name_or_path: str,
    trust_remote_code: bool = False,
    *,
    auto_class: Any = None,
    **config_updates: Any,
) -> Any:
    """A transformers checkpoint (a local folder or a hub id), its config and (for a local
    folder) its weights file checked before any weights are read; weights only from
    safetensors (no pickle). Every failure is one ModelFileError line.

    Args:
        auto_class: the class to build, e.g. AutoModelForSequenceClassification (a head the
            checkpoint lacks is initialised); by default the class config.json names.
        config_updates: config attributes to set first (num_labels, id2label, ...).
    """
    import transformers
    from safetensors import SafetensorError

    from compresskit.arch import adapter_class

    try:
        config = transformers.AutoConfig.from_pretrained(
            name_or_path, trust_remote_code=trust_remote_code
        )
    except CONFIG_ERRORS as err:
        raise ModelFileError(f"cannot load model {name_or_path!r}: {one_line(err)}") from None
    adapter_class(config.model_type)  # an unsupported type fails before loading weights
    checkpoint_class = _checkpoint_class(config)
    path = Path(name_or_path)
    if path.is_dir():
        _require_safetensors(path)
        check_weights_fit(path, checkpoint_class, config)  # the file against its own class
    for name, value in config_updates.items():
        setattr(config, name, value)
    try:
        return (auto_class or checkpoint_class).from_pretrained(
            name_or_path, config=config, trust_remote_code=trust_remote_code, use_safetensors=True
        )
    except SafetensorError as err:
        raise ModelFileError(corrupt_weights_message(path / WEIGHTS, err)) from None
    except (OSError, ValueError, RuntimeError) as err:
        raise ModelFileError(f"cannot load model {name_or_path!r}: {one_line(err)}") from None


def _checkpoint_class(config: Any) -> Any:
    """The model class config.json names, if transformers has it, else AutoModel."""
    import transformers

    names = getattr(config, "architectures", None) or []
    # Only transformers' own model classes: never an arbitrary name from a file.
    named = getattr(transformers, names[0], None) if names and isinstance(names[0], str) else None
    if isinstance(named, type) and issubclass(named, transformers.PreTrainedModel):
        return named
    return transformers.AutoModel


def _require_safetensors(folder: Path) -> None:
    if (folder / WEIGHTS).is_file() or (folder / f"{WEIGHTS}.index.json").is_file():
        return
    pickles = sorted(p.name for p in folder.glob("*.bin")) + sorted(
        p.name for p in folder.glob("*.pt*")
    )
    if pickles:
        raise ModelFileError(
            f"{folder} holds its weights as {pickles[0]}, a pickle that can run code when "
            f"read: compresskit reads only {WEIGHTS}; convert it where you trust the file "
            "(from_pretrained(dir).save_pretrained(dir) writes safetensors)"
        )
    raise ModelFileError(f"{folder / WEIGHTS} is missing: the folder has no weights")


@contextmanager
def timed(seconds: dict[str, float], stage: str) -> Iterator[None]:
    """Add the wall-clock seconds of the block to `seconds[stage]`."""
    start = time.perf_counter()
    yield
    seconds[stage] = round(seconds.get(stage, 0.0) + time.perf_counter() - start, 4)
