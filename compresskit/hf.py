"""compresskit folders the Hugging Face way: `from_pretrained`, `pipeline`, `save_pretrained`.

A pruned model has its own head count and FFN width in every layer. config.json states them in
transformers' own schema, `per_layer_config` (per layer index, the attributes that differ:
`num_attention_heads` and `intermediate_size` for BERT; every layer is written), beside
compresskit.json, which stays the source of truth (the kept indices and the head size) and is
checked against it when a folder is loaded.

transformers 5.23's BERT-family modeling reads one global head count, so plain transformers
refuses to build a model from such a config (AmbiguousGlobalPerLayerAttributeError) instead of
re-initialising the pruned tensors at random: the safe failure, tested. `import compresskit`
installs two small wrappers on `transformers.PreTrainedModel` (once transformers is imported,
so that `import compresskit` stays cheap):

- `from_pretrained(folder)` on a compresskit folder returns what `compresskit.load` builds,
  as the class asked for: the saved class, or its base model (AutoModel on a classifier).
  Every other path goes to transformers unchanged. `pipeline(task, model=folder)` loads
  through it.
- `save_pretrained(folder)` of a pruned model writes a compresskit folder (what `push_to_hub`
  uploads too); a dense model, or a call that passes its own `state_dict` (the Trainer's
  checkpoints), goes to transformers unchanged.
"""

from __future__ import annotations

import copy
import functools
import importlib.abc
import importlib.machinery
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from compresskit.errors import ModelFileError

# The attributes of transformers' PreTrainedModel that compresskit wraps, and the marker that
# says a wrapper is installed (so that installing twice wraps once).
_WRAPPED = "__compresskit_wrapped__"

# from_pretrained arguments that ask for something compresskit.load does not do; a call with
# any of them on a compresskit folder is refused with a one-line error rather than ignored.
_UNSUPPORTED = (
    "quantization_config",
    "load_in_8bit",
    "load_in_4bit",
    "gguf_file",
    "tp_plan",
    "device_mesh",
    "key_mapping",
    "state_dict",
    "ignore_mismatched_sizes",
)


# --- per_layer_config ------------------------------------------------------------------------
def layer_overrides(model: Any) -> dict[int, dict[str, int]]:
    """Every layer's head count and FFN width under the config's names for them, keyed by
    layer index; empty for a model with every layer as its config describes."""
    from compresskit.arch import get_adapter

    adapter = get_adapter(model)
    heads_field, ffn_field = adapter.layer_fields
    _, dense_heads, _, dense_ffn = adapter.config_shape(model.config)
    shapes = [(adapter.num_heads(layer), adapter.ffn_width(layer)) for layer in adapter.layers()]
    if all(shape == (dense_heads, dense_ffn) for shape in shapes):
        return {}
    return {i: {heads_field: h, ffn_field: w} for i, (h, w) in enumerate(shapes)}


def config_to_save(model: Any, *, standalone: bool = False) -> Any:
    """A copy of the model's (dense, base) config with `per_layer_config` stating every
    layer's shape when the model is pruned, and for a standalone folder the `auto_map` naming
    its modeling code; the model's own config is left as it is."""
    overrides = layer_overrides(model)
    config = copy.deepcopy(model.config)
    config.architectures = [type(model).__name__]  # as transformers' save_pretrained says
    if overrides:
        config.per_layer_config = overrides
        config.serialize_explicit_per_layer_config = True  # every layer, not only changes
    if standalone:
        config.auto_map = auto_map(model)
    return config


def split_config(config: Any) -> tuple[Any, dict[int, dict[str, Any]]]:
    """(the base config without `per_layer_config`, each layer's overrides as saved); a
    config without per-layer shapes comes back as it is, with no overrides."""
    if not getattr(config, "is_heterogeneous", False):
        return config, {}
    fields = sorted(config.per_layer_attributes or ())
    per_layer = {
        i: {f: getattr(layer, f) for f in fields} for i, layer in enumerate(config.per_layer_config)
    }
    base = copy.deepcopy(config)
    base.per_layer_config = None
    for name in ("serialize_explicit_per_layer_config", "allow_global_per_layer_attribute_access"):
        base.__dict__.pop(name, None)
    return base, per_layer


def check_layers_agree(
    where: Path, per_layer: dict[int, dict[str, Any]], shapes: list[tuple[int, int]], fields: Any
) -> None:
    """config.json's per-layer shapes against compresskit.json's (heads, FFN width) per layer,
    which are the truth: any difference means the files do not belong together."""
    if not per_layer:
        return
    heads_field, ffn_field = fields
    for i, (heads, ffn) in enumerate(shapes):
        stated = per_layer.get(i, {})
        for field, kept in ((heads_field, heads), (ffn_field, ffn)):
            if field in stated and stated[field] != kept:
                raise ModelFileError(
                    f"{where / 'config.json'}: per_layer_config gives layer {i} "
                    f"{field}={stated[field]!r} but compresskit.json keeps {kept}: the files do "
                    "not belong together"
                )
    unknown = sorted({f for o in per_layer.values() for f in o} - set(fields))
    if unknown:
        raise ModelFileError(
            f"{where / 'config.json'}: per_layer_config sets {', '.join(unknown)}, which "
            "compresskit does not write: the config was edited or is not from compresskit"
        )


# --- standalone folders ----------------------------------------------------------------------
STANDALONE_FILE = "modeling_compresskit.py"


def auto_map(model: Any) -> dict[str, str]:
    """config.json's `auto_map` for a standalone folder: the Auto class of the model's head
    (AutoModelForSequenceClassification for BertForSequenceClassification, ...) and AutoModel
    for its base model, each naming the class of the same name in modeling_compresskit.py."""
    from compresskit import standalone_modeling

    model_type = model.config.model_type
    if model_type not in standalone_modeling.LAYOUTS:
        raise ModelFileError(
            f"a standalone folder is written for {', '.join(sorted(standalone_modeling.LAYOUTS))} "
            f"models, not {model_type!r} (its adapter is not built in): save it without "
            "standalone and load it with compresskit"
        )
    names = {"AutoModel": type(model.base_model).__name__}
    arch = type(model).__name__
    head = arch[arch.index("For") :] if "For" in arch else ""
    if head:
        names[f"AutoModel{head}"] = arch
    return {auto: f"{STANDALONE_FILE[:-3]}.{name}" for auto, name in names.items()}


def write_standalone(folder: Path) -> None:
    """The modeling code a standalone folder's `auto_map` names (`config_to_save`), copied in
    beside the model so that it loads without compresskit (trust_remote_code=True)."""
    from compresskit import standalone_modeling

    source = Path(standalone_modeling.__file__).read_text(encoding="utf-8")
    (folder / STANDALONE_FILE).write_text(source, encoding="utf-8")


# --- loading as the class asked for ----------------------------------------------------------
def load_as(cls: Any, folder: str | os.PathLike[str], **kwargs: Any) -> Any:
    """`cls.from_pretrained(folder, **kwargs)` for a compresskit folder: the model
    `compresskit.load` builds, or its base model when `cls` is the base class; dtype, device
    and attention implementation as asked."""
    from compresskit.io import load

    asked = sorted(k for k in kwargs if k in _UNSUPPORTED and kwargs[k] not in (None, False))
    if asked:
        raise ModelFileError(
            f"{folder} is a compresskit folder: from_pretrained loads it with the default "
            f"settings and dtype/device_map/attn_implementation only, not {', '.join(asked)}"
        )
    # The Auto classes pass attn_implementation inside the config they built.
    given = kwargs.get("config")
    attention = kwargs.get("attn_implementation") or (
        None if given is None else given.__dict__.get("_attn_implementation_internal")
    )
    model = load(Path(folder), attn_implementation=attention)
    asked_labels = getattr(kwargs.get("config"), "num_labels", model.config.num_labels)
    if asked_labels != model.config.num_labels:
        raise ModelFileError(
            f"{folder} holds a model with {model.config.num_labels} labels: from_pretrained "
            f"cannot give it {asked_labels} (a pruned folder loads as it was saved)"
        )
    model = _as_class(model, cls, Path(folder))
    dtype = kwargs.get("dtype", kwargs.get("torch_dtype"))
    if dtype not in (None, "auto"):
        model = model.to(_torch_dtype(dtype))
    device = kwargs.get("device_map")
    if isinstance(device, (str, int)) and device != "auto":
        model = model.to(device)
    return model


def _as_class(model: Any, cls: Any, folder: Path) -> Any:
    """`model`, or its base model, when it is what `cls` asks for: that class, or a class
    that only derives from it (a standalone folder's own classes, in a process that also
    imported compresskit)."""
    if isinstance(model, cls) or issubclass(cls, type(model)):
        return model
    base = getattr(model, "base_model", None)
    if base is not model and (isinstance(base, cls) or issubclass(cls, type(base))):
        return base
    raise ModelFileError(
        f"{folder} holds a pruned {type(model).__name__}: load it as that class, or as its base "
        f"model {type(base).__name__} (AutoModel), not as {cls.__name__}"
    )


def _torch_dtype(dtype: Any) -> Any:
    import torch

    if isinstance(dtype, str):
        value = getattr(torch, dtype, None)
        if not isinstance(value, torch.dtype):
            raise ModelFileError(f"dtype {dtype!r} is not a torch dtype (e.g. float16)")
        return value
    return dtype


# --- the wrappers on PreTrainedModel ---------------------------------------------------------
def install(modeling_utils: ModuleType | None = None) -> None:
    """Wrap `from_pretrained` and `save_pretrained` of transformers' PreTrainedModel (once)."""
    if modeling_utils is None:
        modeling_utils = importlib.import_module("transformers.modeling_utils")
    base = modeling_utils.PreTrainedModel
    if getattr(base.from_pretrained, _WRAPPED, False):
        return
    base.from_pretrained = classmethod(_wrap_from_pretrained(base.from_pretrained.__func__))
    base.save_pretrained = _wrap_save_pretrained(base.save_pretrained)


def _wrap_from_pretrained(original: Any) -> Any:
    @functools.wraps(original)
    def from_pretrained(cls: Any, pretrained_model_name_or_path: Any, *args: Any, **kwargs: Any):
        if not args and _is_compresskit_folder(pretrained_model_name_or_path):
            return load_as(cls, pretrained_model_name_or_path, **kwargs)
        return original(cls, pretrained_model_name_or_path, *args, **kwargs)

    setattr(from_pretrained, _WRAPPED, True)
    return from_pretrained


def _wrap_save_pretrained(original: Any) -> Any:
    @functools.wraps(original)
    def save_pretrained(self: Any, save_directory: Any, *args: Any, **kwargs: Any) -> Any:
        # The Trainer's checkpoints pass their own state_dict (None included) and are read
        # back by the Trainer itself: they stay transformers' format.
        if args or "state_dict" in kwargs or not _is_pruned(self):
            return original(self, save_directory, *args, **kwargs)
        if kwargs.get("safe_serialization") is False:
            raise ModelFileError("a pruned model is saved as safetensors only")
        if kwargs.get("push_to_hub"):
            raise ModelFileError(
                "save_pretrained(push_to_hub=True) of a pruned model: save it, then "
                "model.push_to_hub(repo_id), which uploads the same folder"
            )
        if kwargs.get("is_main_process", True):
            from compresskit.io import write_model

            folder = Path(save_directory)
            folder.mkdir(parents=True, exist_ok=True)
            write_model(self, folder)
        return None

    setattr(save_pretrained, _WRAPPED, True)
    return save_pretrained


def _is_compresskit_folder(path: Any) -> bool:
    from compresskit.loading import is_compresskit_folder

    return isinstance(path, (str, os.PathLike)) and is_compresskit_folder(Path(path))


def _is_pruned(model: Any) -> bool:
    from compresskit.arch import supported_model_types

    config = getattr(model, "config", None)
    if getattr(config, "model_type", None) not in supported_model_types():
        return False
    return bool(layer_overrides(model))


# --- installing once transformers is imported ------------------------------------------------
class _InstallAfterImport(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds transformers.modeling_utils as Python would, and installs the wrappers right after
    the module has run: `import compresskit` does not import transformers (nor torch)."""

    TARGET = "transformers.modeling_utils"

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname != self.TARGET:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return None
        self._loader = spec.loader
        spec.loader = self
        return spec

    def create_module(self, spec: Any) -> Any:
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self._loader.exec_module(module)
        install(module)


def install_when_transformers_is_imported() -> None:
    """Install now if transformers' modeling is imported already, else right after it is."""
    loaded = sys.modules.get(_InstallAfterImport.TARGET)
    if loaded is not None:
        install(loaded)
    elif not any(isinstance(f, _InstallAfterImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _InstallAfterImport())
