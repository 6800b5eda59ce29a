"""The one loader of models and tokenizers: a folder written by compresskit (`io.load`, which
knows the per-layer shapes of a pruned model), a local transformers folder, or a hub id.
Everything is checked before weights are read: the path (a missing local-looking path fails at
once, a hub id only when the hub can be reached), config.json (`io.read_config`), safetensors
only (no pickle), the weights file against the model it describes."""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from compresskit.errors import ModelFileError, one_line
from compresskit.io import (
    MANIFEST,
    WEIGHTS,
    check_weights_fit,
    corrupt_weights_message,
    load,
    model_class_named,
    read_config,
)

# Files of which a model folder that has a tokenizer holds at least one.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json")


def is_compresskit_folder(name_or_path: str | Path) -> bool:
    """Whether a model path is a folder written by compresskit (read with `io.load`, which
    knows its per-layer shapes) rather than a transformers checkpoint or a hub id."""
    return (Path(name_or_path) / MANIFEST).is_file()


def load_model(
    name_or_path: str | Path,
    trust_remote_code: bool = False,
    *,
    auto_class: Any = None,
    **config_updates: Any,
) -> Any:
    """Any model compresskit takes: a compresskit folder (pruned before: plans compose) as
    it was saved, whatever `auto_class` says; else a transformers checkpoint (local folder or
    hub id) as `auto_class` builds it (see `load_checkpoint`). Callers that need another head
    check the class of what they get."""
    if is_compresskit_folder(name_or_path):
        check_model_source(str(name_or_path))
        return load(name_or_path)
    return load_checkpoint(
        str(name_or_path), trust_remote_code, auto_class=auto_class, **config_updates
    )


def load_model_and_tokenizer(
    name_or_path: str, trust_remote_code: bool = False, *, require_tokenizer: bool = False
) -> tuple[Any, Any]:
    """The model (`load_model`, as its checkpoint names it, e.g. BertModel) and its tokenizer:
    None when the folder has none, or ModelFileError, before the model is loaded, when
    `require_tokenizer`."""
    tokenizer = load_tokenizer(name_or_path, trust_remote_code, required=require_tokenizer)
    return load_model(name_or_path, trust_remote_code), tokenizer


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
        with _quiet_transformers():
            return (auto_class or checkpoint_class).from_pretrained(
                name_or_path,
                config=config,
                trust_remote_code=trust_remote_code,
                use_safetensors=True,
            )
    except SafetensorError as err:
        raise ModelFileError(corrupt_weights_message(path / WEIGHTS, err)) from None
    except (OSError, ValueError, RuntimeError) as err:
        raise ModelFileError(f"cannot load model {name_or_path!r}: {one_line(err)}") from None


@contextmanager
def _quiet_transformers() -> Iterator[None]:
    """transformers' LOAD REPORT off: a table of keys on stderr, in raw escape codes when
    stderr is a file, for what every fine-tuning expects (a new task head, the pre-training
    head left behind). What is not expected is checked before loading: the weights file
    against the model (`check_weights_fit`), the head's label count (train/tasks.py)."""
    from transformers.utils import logging as transformers_logging

    before = transformers_logging.get_verbosity()
    transformers_logging.set_verbosity_error()
    try:
        yield
    finally:
        transformers_logging.set_verbosity(before)


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
