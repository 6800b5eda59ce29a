"""Save and load pruned models: config.json (the dense base architecture, and each layer's
head count and FFN width in transformers' `per_layer_config` schema), model.safetensors (no
pickle) and compresskit.json (per layer: original indices of the heads and FFN neurons kept,
and the head size; the source of truth, config.json's per-layer shapes are checked against
it). transformers' BERT-family modeling cannot build such a model by itself: it reads one
global head count (and `ignore_mismatched_sizes=True` would silently re-initialise pruned
weights, docs/library-pitfalls.md); after `import compresskit` its `from_pretrained` loads
these folders through `load` (compresskit/hf.py)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import transformers
from huggingface_hub.errors import StrictDataclassError
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_model, save_model
from transformers import PreTrainedModel
from transformers.initialization import no_init_weights

from compresskit._json import dumps, read_format_file
from compresskit._version import __version__
from compresskit.arch import ArchAdapter, adapter_class, get_adapter
from compresskit.arch.base import set_linear_width
from compresskit.errors import ModelFileError, one_line
from compresskit.hf import check_layers_agree, config_to_save, split_config, write_standalone
from compresskit.outputs import atomic_directory
from compresskit.plan import LayerPlan, PruningPlan, record_kept

MANIFEST = "compresskit.json"
WEIGHTS = "model.safetensors"
FORMAT = "compresskit.model"
FORMAT_VERSION = 1

# What transformers raises for a config.json it cannot use: unreadable, not JSON, unknown
# model_type, a field of the wrong type (transformers 5 validates configs strictly), or JSON
# that is not an object (a list: TypeError; fields it indexes: KeyError, AttributeError).
CONFIG_ERRORS = (OSError, ValueError, StrictDataclassError, TypeError, KeyError, AttributeError)


def save(
    model: PreTrainedModel,
    directory: str | Path,
    tokenizer: Any = None,
    *,
    extra: dict[str, Any] | None = None,
    overwrite: bool = False,
    standalone: bool = False,
) -> Path:
    """Write `model` (dense or pruned) so that `load` rebuilds it exactly.

    The folder is written beside the target and moved into place only when complete, so a
    crash never leaves a half-written model. `extra` is merged into compresskit.json (how the
    model was pruned, for example). `standalone` also writes the modeling code that loads it
    without compresskit (`from_pretrained(..., trust_remote_code=True)`, compresskit/hf.py).
    """
    with atomic_directory(directory, overwrite=overwrite) as tmp:
        write_model(model, tmp, tokenizer, extra=extra, standalone=standalone)
    return Path(directory)


def write_model(
    model: PreTrainedModel,
    folder: Path,
    tokenizer: Any = None,
    *,
    extra: dict[str, Any] | None = None,
    standalone: bool = False,
) -> None:
    """The files of `save`, written into an existing folder (no atomicity: callers that
    add files of their own wrap it in `atomic_directory`)."""
    adapter = get_adapter(model)
    config_to_save(model, standalone=standalone).save_pretrained(folder)
    if standalone:
        write_standalone(folder)
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


def load(directory: str | Path, *, attn_implementation: str | None = None) -> PreTrainedModel:
    """Rebuild a model saved by `save` as an ordinary transformers model, in eval mode.

    Raises ModelFileError naming the file and the mismatch when anything is missing,
    corrupt or inconsistent; weights are never silently re-initialised.
    """
    folder = Path(directory)
    if not folder.is_dir():
        raise ModelFileError(f"model folder {folder} does not exist")
    manifest = read_manifest(folder)
    config, per_layer = _read_config(folder, manifest)
    model_class = _model_class(folder, manifest, config)
    adapter_cls = adapter_class(config.model_type)
    layers = _validated_layers(folder, manifest, config, adapter_cls)
    shapes = [(len(kept.heads_kept), len(kept.ffn_kept)) for kept, _ in layers]
    check_layers_agree(folder, per_layer, shapes, adapter_cls.layer_fields)
    check_weights_fit(
        folder,
        model_class,
        config,
        shape=lambda skeleton: _shape_like_saved(adapter_cls(skeleton), layers),
    )
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


def _read_config(folder: Path, manifest: dict[str, Any]) -> tuple[Any, dict[int, Any]]:
    """The base config and config.json's per-layer shapes."""
    config, per_layer = read_config_and_layers(folder)
    if config.model_type != manifest.get("model_type"):
        raise ModelFileError(
            f"{folder / MANIFEST} says model_type "
            f"{manifest.get('model_type')!r} but config.json says "
            f"{config.model_type!r}"
        )
    return config, per_layer


def read_config(name_or_path: str | Path, trust_remote_code: bool = False) -> Any:
    """The config of a model folder or hub id, checked before it sizes anything: a type with
    an adapter (else UnsupportedModelError), and values transformers can build a model from
    (else ModelFileError naming the field). For a compresskit folder, the base config (its
    per-layer shapes are `read_config_and_layers`'s)."""
    return read_config_and_layers(name_or_path, trust_remote_code)[0]


def read_config_and_layers(
    name_or_path: str | Path, trust_remote_code: bool = False
) -> tuple[Any, dict[int, dict[str, Any]]]:
    """`read_config`'s config, and the per-layer shapes config.json states (empty when it
    states none). Only a compresskit folder may state them: compresskit.json is what gives
    them meaning (which heads and neurons were kept)."""
    is_dir = Path(name_or_path).is_dir()
    where = Path(name_or_path) / "config.json" if is_dir else name_or_path
    try:
        config, per_layer = split_config(
            transformers.AutoConfig.from_pretrained(
                name_or_path, trust_remote_code=trust_remote_code
            )
        )
    except CONFIG_ERRORS as err:
        raise ModelFileError(f"cannot read the config of {where}: {one_line(err)}") from None
    if per_layer and not (is_dir and (Path(name_or_path) / MANIFEST).is_file()):
        raise ModelFileError(
            f"{where} gives each layer its own shape (per_layer_config) but there is no "
            f"{MANIFEST} beside it: compresskit reads per-layer shapes only from the folders "
            "it writes"
        )
    adapter = adapter_class(config.model_type)
    problem = adapter.config_problem(config)
    if problem is not None:
        raise ModelFileError(f"{where}: {problem}; the config is damaged or not of this model")
    return config, per_layer


def model_class_named(name: Any, config: Any) -> type[PreTrainedModel] | None:
    """transformers' own model class called `name`, if it is a concrete model of `config`'s
    type (never an import path read from a file, nor a class of another architecture)."""
    model_class = getattr(transformers, name, None) if isinstance(name, str) else None
    if (
        isinstance(model_class, type)
        and issubclass(model_class, transformers.PreTrainedModel)
        and model_class.config_class is type(config)
        and not model_class.__name__.endswith("PreTrainedModel")
    ):
        return model_class
    return None


def _model_class(folder: Path, manifest: dict[str, Any], config: Any) -> type[PreTrainedModel]:
    name = manifest.get("architecture")
    model_class = model_class_named(name, config)
    if model_class is None:
        raise ModelFileError(
            f"{folder / MANIFEST}: architecture {name!r} is not a transformers model class "
            f"for model_type {config.model_type!r}"
        )
    return model_class


def _validated_layers(
    folder: Path, manifest: dict[str, Any], config: Any, adapter_cls: type[ArchAdapter]
) -> list[tuple[LayerPlan, int]]:
    """Check the per-layer shapes against the base config before they size any tensor."""
    where = folder / MANIFEST
    entries = manifest.get("layers")
    n_layers, n_heads, head_dim, ffn_width = config_shape(folder, config, adapter_cls)
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


def config_shape(folder: Path, config: Any, adapter_cls: type[ArchAdapter]) -> tuple[int, ...]:
    """(layers, heads, head_dim, FFN width) that config.json describes, each checked to be a
    positive integer before it sizes anything."""
    shape: tuple[int, ...]
    try:
        shape = adapter_cls.config_shape(config)
    except (ZeroDivisionError, TypeError):
        shape = ()
    if len(shape) != 4 or not all(type(n) is int and n > 0 for n in shape):
        raise ModelFileError(
            f"{folder / 'config.json'} describes no usable shape (layers, heads, head size, "
            f"FFN width = {shape or 'undefined'}): it is damaged or not a config of this model"
        )
    return shape


def check_weights_fit(
    folder: Path,
    model_class: type[PreTrainedModel],
    config: Any,
    *,
    shape: Callable[[PreTrainedModel], None] | None = None,
) -> None:
    """Check, before any memory is allocated, that the model `config` describes fits this
    machine and `folder`'s weights file: every tensor the file holds has the shape the model
    expects, and no layer tensor is missing (transformers would initialise it at random).

    The model is built on the meta device (shapes, no storage); `shape` gives it the pruned
    shapes first. A config from a stranger asking for absurd sizes gets an error, not an
    out-of-memory crash. Sharded or remote checkpoints get the memory check only.
    """
    try:
        with torch.device("meta"), no_init_weights():
            skeleton = model_class(config)
    except Exception as err:  # whatever else in the config transformers cannot build from
        raise ModelFileError(
            f"{folder / 'config.json'} describes a model transformers cannot build "
            f"({one_line(err)}): the config is damaged or not of this model"
        ) from None
    _check_fits_in_memory(folder, skeleton)
    if shape is not None:
        shape(skeleton)
    saved = weights_header(folder / WEIGHTS)
    if saved is None:
        return
    expected = {name: tuple(t.shape) for name, t in skeleton.state_dict().items()}
    wrong = [(n, saved[n], s) for n, s in expected.items() if n in saved and saved[n] != s]
    if wrong:
        name, got, want = wrong[0]
        raise ModelFileError(
            f"{folder / WEIGHTS} does not match config.json/{MANIFEST}: {name} is {list(got)} "
            f"in the file but {list(want)} in the model ({len(wrong)} tensors differ); "
            "the files do not belong together"
        )
    missing = [n for n in _layer_tensor_names(skeleton) if n not in saved]
    if missing:
        raise ModelFileError(
            f"{folder / WEIGHTS} lacks {len(missing)} layer tensors that config.json "
            f"describes (e.g. {missing[0]}): the file is incomplete or of another model"
        )


def _check_fits_in_memory(folder: Path, skeleton: PreTrainedModel) -> None:
    needed = sum(t.numel() * t.element_size() for t in skeleton.state_dict().values())
    available = physical_memory()
    if available is not None and needed > available:
        raise ModelFileError(
            f"{folder / 'config.json'} describes a model of {needed / 1e9:.3g} GB, more than "
            f"this machine's {available / 1e9:.3g} GB of memory: the config is damaged or not "
            "from this model"
        )


def physical_memory() -> int | None:
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):  # not a POSIX system
        return None


def _layer_tensor_names(model: PreTrainedModel) -> list[str]:
    in_layers = {id(p) for layer in get_adapter(model).layers() for p in layer.parameters()}
    return [name for name, p in model.named_parameters() if id(p) in in_layers]


def weights_header(path: Path) -> dict[str, tuple[int, ...]] | None:
    """Name -> shape of every tensor in a safetensors file, read from its header only; None
    when there is no such file (a sharded or remote checkpoint)."""
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as weights:
            return {k: tuple(weights.get_slice(k).get_shape()) for k in weights.keys()}  # noqa: SIM118 (not a dict)
    except SafetensorError as err:
        raise ModelFileError(corrupt_weights_message(path, err)) from None


def corrupt_weights_message(path: Path, err: Exception) -> str:
    return f"{path} is corrupt or truncated ({one_line(err)}): copy or save the model again"


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
        raise ModelFileError(corrupt_weights_message(path, err)) from None
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
