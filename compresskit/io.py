"""Save and load pruned models: config.json (the dense base architecture), model.safetensors
(no pickle) and compresskit.json (per layer: original indices of the heads and FFN neurons
kept, and the head size). transformers' own `from_pretrained` cannot do this: its configs
cannot express per-layer head counts or FFN widths, and `ignore_mismatched_sizes=True` silently
re-initialises pruned weights (TRAPS.md)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import transformers
from safetensors import SafetensorError
from safetensors.torch import load_model, save_model
from transformers import PreTrainedModel
from transformers.initialization import no_init_weights

from compresskit._json import dumps, read_format_file
from compresskit._version import __version__
from compresskit.arch import ArchAdapter, adapter_class, get_adapter
from compresskit.arch.base import set_linear_width
from compresskit.errors import ModelFileError, OutputExistsError
from compresskit.plan import LayerPlan, PruningPlan, record_kept

MANIFEST = "compresskit.json"
WEIGHTS = "model.safetensors"
FORMAT = "compresskit.model"
FORMAT_VERSION = 1


def save(
    model: PreTrainedModel,
    directory: str | Path,
    tokenizer: Any = None,
    *,
    extra: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write `model` (dense or pruned) so that `load` rebuilds it exactly.

    The folder is written beside the target and moved into place only when complete, so a
    crash never leaves a half-written model. `extra` is merged into compresskit.json (how the
    model was pruned, for example).
    """
    with atomic_directory(directory, overwrite=overwrite) as tmp:
        write_model(model, tmp, tokenizer, extra=extra)
    return Path(directory)


def write_model(
    model: PreTrainedModel,
    folder: Path,
    tokenizer: Any = None,
    *,
    extra: dict[str, Any] | None = None,
) -> None:
    """The files of `save`, written into an existing folder (no atomicity: callers that
    add files of their own wrap it in `atomic_directory`)."""
    adapter = get_adapter(model)
    model.config.save_pretrained(folder)
    save_model(model, str(folder / WEIGHTS), metadata={"format": "pt"})
    if tokenizer is not None:
        tokenizer.save_pretrained(folder)
    manifest = _manifest(model, adapter) | (extra or {})
    (folder / MANIFEST).write_text(dumps(manifest) + "\n", encoding="utf-8")


def _manifest(model: PreTrainedModel, adapter: ArchAdapter) -> dict[str, Any]:
    plan = PruningPlan.of_model(model)
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "compresskit_version": __version__,
        "model_type": model.config.model_type,
        "architecture": type(model).__name__,
        "layers": [
            {
                "heads_kept": list(lp.heads_kept),
                "head_dim": adapter.head_dim(layer),
                "ffn_kept": list(lp.ffn_kept),
            }
            for lp, layer in zip(plan.layers, adapter.layers(), strict=True)
        ],
    }


@contextmanager
def atomic_directory(directory: str | Path, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary folder beside `directory`; on success it replaces `directory`.

    On any error the temporary folder is removed and `directory` is left as it was.
    """
    target = Path(directory)
    if target.exists() and not overwrite and (not target.is_dir() or any(target.iterdir())):
        raise OutputExistsError(
            f"output {target} already exists: choose another folder or "
            "pass overwrite=True (--overwrite)"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        yield tmp
        _replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _replace(new: Path, target: Path) -> None:
    if not target.exists():
        os.replace(new, target)
        return
    old = target.with_name(f".{target.name}.old-{os.getpid()}")
    os.replace(target, old)
    os.replace(new, target)
    if old.is_dir():
        shutil.rmtree(old, ignore_errors=True)
    else:
        old.unlink()


def load(directory: str | Path, *, attn_implementation: str | None = None) -> PreTrainedModel:
    """Rebuild a model saved by `save` as an ordinary transformers model, in eval mode.

    Raises ModelFileError naming the file and the mismatch when anything is missing,
    corrupt or inconsistent; weights are never silently re-initialised.
    """
    folder = Path(directory)
    if not folder.is_dir():
        raise ModelFileError(f"model folder {folder} does not exist")
    manifest = read_manifest(folder)
    config = _read_config(folder, manifest)
    model_class = _model_class(folder, manifest)
    adapter_cls = adapter_class(config.model_type)
    layers = _validated_layers(folder, manifest, config, adapter_cls)
    with no_init_weights():
        model = model_class(config)
    _shape_like_saved(adapter_cls(model), layers)
    _load_weights(model, folder / WEIGHTS)
    if attn_implementation is not None:
        model.set_attn_implementation(attn_implementation)
    return model.eval()


def read_manifest(folder: Path) -> dict[str, Any]:
    path = folder / MANIFEST
    if not path.is_file():
        raise ModelFileError(
            f"{path} is missing: {folder} was not written by compresskit.save "
            "(a plain transformers folder loads with from_pretrained)"
        )
    manifest = read_format_file(
        path, fmt=FORMAT, version=FORMAT_VERSION, what="model manifest", error=ModelFileError
    )
    return manifest


def _read_config(folder: Path, manifest: dict[str, Any]) -> Any:
    try:
        config = transformers.AutoConfig.from_pretrained(folder)
    except (OSError, ValueError) as err:
        raise ModelFileError(f"{folder / 'config.json'} cannot be read: {err}") from None
    if config.model_type != manifest.get("model_type"):
        raise ModelFileError(
            f"{folder / MANIFEST} says model_type "
            f"{manifest.get('model_type')!r} but config.json says "
            f"{config.model_type!r}"
        )
    return config


def _model_class(folder: Path, manifest: dict[str, Any]) -> type[PreTrainedModel]:
    name = manifest.get("architecture")
    # Only transformers' own model classes: never an arbitrary import path from a file.
    model_class = getattr(transformers, name, None) if isinstance(name, str) else None
    if not (
        isinstance(model_class, type) and issubclass(model_class, transformers.PreTrainedModel)
    ):
        raise ModelFileError(
            f"{folder / MANIFEST}: architecture {name!r} is not a transformers model class"
        )
    return model_class


def _validated_layers(
    folder: Path, manifest: dict[str, Any], config: Any, adapter_cls: type[ArchAdapter]
) -> list[tuple[LayerPlan, int]]:
    """Check the per-layer shapes against the base config before they size any tensor."""
    where = folder / MANIFEST
    entries = manifest.get("layers")
    n_layers, n_heads, head_dim, ffn_width = adapter_cls.config_shape(config)
    if not isinstance(entries, list) or len(entries) != n_layers:
        got = len(entries) if isinstance(entries, list) else "no"
        raise ModelFileError(f"{where} describes {got} layers but config.json has {n_layers}")
    try:
        plan = PruningPlan.from_dict({"layers": entries})
    except Exception as err:
        raise ModelFileError(f"{where}: {err}") from None
    layers = []
    for i, (entry, lp) in enumerate(zip(entries, plan.layers, strict=True)):
        if entry.get("head_dim") != head_dim:
            raise ModelFileError(
                f"{where}: layer {i} has head_dim {entry.get('head_dim')!r} "
                f"but config.json implies {head_dim}"
            )
        if (lp.heads_kept and lp.heads_kept[-1] >= n_heads) or (
            lp.ffn_kept and lp.ffn_kept[-1] >= ffn_width
        ):
            raise ModelFileError(
                f"{where}: layer {i} keeps indices beyond the config's "
                f"{n_heads} heads / {ffn_width} FFN neurons"
            )
        layers.append((lp, head_dim))
    return layers


def _shape_like_saved(adapter: ArchAdapter, layers: list[tuple[LayerPlan, int]]) -> None:
    for layer, (kept, head_dim) in zip(adapter.layers(), layers, strict=True):
        attn, ffn = adapter.attention_parts(layer), adapter.ffn_parts(layer)
        width = len(kept.heads_kept) * head_dim
        for proj in (attn.query, attn.key, attn.value):
            set_linear_width(proj, out_features=width)
        set_linear_width(attn.output, in_features=width)
        set_linear_width(ffn.up, out_features=len(kept.ffn_kept))
        set_linear_width(ffn.down, in_features=len(kept.ffn_kept))
        adapter.set_head_count(layer, len(kept.heads_kept))
        if not kept.heads_kept:
            adapter.make_headless(layer)
        record_kept(layer, kept)


def _load_weights(model: PreTrainedModel, path: Path) -> None:
    if not path.is_file():
        raise ModelFileError(f"{path} is missing")
    model.tie_weights()  # so that tied names share one tensor before we compare keys
    try:
        missing, unexpected = load_model(model, str(path), strict=False)
    except SafetensorError as err:
        raise ModelFileError(f"{path} is corrupt or truncated ({err}); re-save the model") from None
    except RuntimeError as err:
        detail = str(err).replace("\n", " ").replace("\t", "")
        raise ModelFileError(f"{path} does not match {MANIFEST}: {detail[:400]}") from None
    missing = _untied(model, missing)
    if missing or unexpected:
        raise ModelFileError(
            f"{path} does not match the model: missing {sorted(missing)[:5]}, "
            f"unexpected {sorted(unexpected)[:5]}"
        )


def _untied(model: PreTrainedModel, missing: list[str]) -> list[str]:
    """The missing keys that are not merely another name of a tensor the file did hold
    (tied weights are stored once)."""
    state, absent = model.state_dict(), set(missing)
    loaded = {_storage(t) for k, t in state.items() if k not in absent and t.numel()}
    return [k for k in missing if not (state[k].numel() and _storage(state[k]) in loaded)]


def _storage(tensor: Any) -> tuple[int, int]:
    return tensor.untyped_storage().data_ptr(), tensor.storage_offset()
