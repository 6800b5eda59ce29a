"""The main job: load a model, let a strategy choose, prune, save, report.

`compresskit prune` is a thin shell over `run_prune`; Python users call it directly or
compose the same steps themselves (see docs/python-api.md).
"""

from __future__ import annotations

import os
import re
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from compresskit._json import dumps
from compresskit.errors import ConfigError, ModelFileError, one_line
from compresskit.io import (
    MANIFEST,
    WEIGHTS,
    check_weights_fit,
    corrupt_weights_message,
    model_class_named,
    read_config,
    write_model,
)
from compresskit.outputs import atomic_directory, claim_output, resolve_output
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
    job = replace(job, output=resolve_output(job.output))
    # Checked and locked before any work, so that no result is lost and nothing of the user's
    # is replaced (outputs.claim_output).
    with claim_output(job.output, overwrite=job.overwrite, inputs=[job.model]):
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
    tokenizer = load_tokenizer(name_or_path, trust_remote_code, required=require_tokenizer)
    if (path / MANIFEST).is_file():
        return load(path), tokenizer
    return load_checkpoint(name_or_path, trust_remote_code), tokenizer


def load_tokenizer(
    name_or_path: str, trust_remote_code: bool = False, *, required: bool = False
) -> Any:
    """The tokenizer saved with a model: None when there is none, or ModelFileError when
    `required`. Tokenizer files that are there but cannot be read are always an error (a
    model saved without its tokenizer would look fine and be useless).

    A local folder without tokenizer files has none, whatever transformers says: transformers
    5 builds a tokenizer of special tokens only from config.json, which reads every word as
    [UNK] (docs/failure-behaviour.md)."""
    import transformers

    check_model_source(name_or_path)
    path = Path(name_or_path)
    present = [name for name in TOKENIZER_FILES if (path / name).is_file()]
    if path.is_dir() and not present:
        if required:
            raise ModelFileError(
                f"{name_or_path} has no usable tokenizer (none of {', '.join(TOKENIZER_FILES)} "
                "is there): save the model with its tokenizer (compresskit.save(model, dir, "
                "tokenizer=tok), or tok.save_pretrained(dir))"
            )
        return None
    try:
        return transformers.AutoTokenizer.from_pretrained(
            name_or_path, trust_remote_code=trust_remote_code
        )
    except Exception as err:  # the tokenizers library raises plain Exception for bad files
        if not path.is_dir() and not required:
            return None  # a hub model without a tokenizer
        if (path / "config.json").is_file():
            read_config(path)  # transformers reads it too: blame it if it is the damaged one
        raise ModelFileError(
            f"the tokenizer in {name_or_path} ({', '.join(present) or 'hub'}) cannot be read "
            f"({one_line(err)}): copy or save it again"
        ) from None


def check_model_source(name_or_path: str) -> None:
    """A model (or tokenizer) named on the command line is a local folder with config.json or
    a hub id. A path that looks local and is missing fails at once, as does a hub id when the
    hub cannot be reached (rather than after a minute of retries)."""
    path = Path(name_or_path).expanduser()
    if path.is_file():
        raise ModelFileError(
            f"model {name_or_path} is a file: give the folder that holds config.json and {WEIGHTS}"
        )
    if path.is_dir():
        if not (path / "config.json").is_file() and not (path / "tokenizer_config.json").is_file():
            raise ModelFileError(
                f"{path} has no config.json: give a folder written by compresskit.save or "
                "save_pretrained"
            )
        return
    if _looks_local(name_or_path):
        raise ModelFileError(
            f"model {name_or_path} does not exist: give a folder with "
            "config.json or a hub id such as bert-base-uncased"
        )
    _check_hub_reachable(name_or_path)


# A hub id: NAME or OWNER/NAME of letters, digits, '-', '_' and '.', at most 96 characters each.
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]{0,95}(/[A-Za-z0-9][\w.-]{0,95})?")


def _looks_local(name: str) -> bool:
    """Whether a missing `name` can only be meant as a local path: it starts like one, cannot
    be a hub id, or its first part is a folder here (out/bse1 when out/ exists)."""
    first = Path(name).parts[0] if Path(name).parts else name
    return (
        name.startswith((".", "/", "~"))
        or not _HUB_ID.fullmatch(name)
        or ".." in name
        or ("/" in name and Path(first).is_dir())
    )


def _check_hub_reachable(name: str) -> None:
    """Offline, huggingface_hub retries for a minute before it gives up: ask once, quickly.
    With HF_HUB_OFFLINE=1 transformers reads its local cache only, and is not asked."""
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on"):
        return
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname
    try:
        socket.create_connection((host or "huggingface.co", 443), timeout=5).close()
    except OSError:
        raise ModelFileError(
            f"model {name} is not a local folder, and the hub ({host}) cannot be reached: "
            "give a local folder, or set HF_HUB_OFFLINE=1 to load it from the Hugging Face "
            "cache"
        ) from None


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
    from safetensors import SafetensorError

    check_model_source(name_or_path)
    config = read_config(name_or_path, trust_remote_code)  # checked before any weight is read
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
    """The model class config.json names, if transformers has it for this model type, else
    the type's base model (BertModel, ...), as AutoModel would build."""
    from transformers.models.auto.modeling_auto import MODEL_MAPPING

    names = getattr(config, "architectures", None) or []
    named = model_class_named(names[0], config) if isinstance(names, list) and names else None
    return named or MODEL_MAPPING[type(config)]


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
