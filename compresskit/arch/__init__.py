"""Architecture adapters, one per model family, looked up by `config.model_type`.

An adapter holds every fact about its family that compresskit needs: where heads and FFN
neurons live, the config fields and their checks, the position table, the ONNX inputs, the
masked-LM head, the model classes supported and a tiny config for tests. Adapters register
like strategies: the built-in ones with `register_adapter`, third-party ones through the
entry-point group `compresskit.architectures` (`name = "package.module:Adapter"`), so a new
architecture is one file, and the tests, which take their model list from this registry, need
no new code.
"""

from __future__ import annotations

import logging
from importlib.metadata import entry_points
from typing import TypeVar

from torch import nn

from compresskit.arch.base import ArchAdapter, AttentionParts, FFNParts
from compresskit.errors import UnsupportedModelError, one_line

ENTRY_POINT_GROUP = "compresskit.architectures"
logger = logging.getLogger(__name__)

A = TypeVar("A", bound=type[ArchAdapter])
_ADAPTERS: dict[str, type[ArchAdapter]] = {}
_plugins_loaded = False


def register_adapter(cls: A) -> A:
    """Class decorator: make `cls` the adapter of each of its `model_types`."""
    for model_type in cls.model_types:
        existing = _ADAPTERS.get(model_type)
        if existing is not None and existing is not cls:
            raise ValueError(f"model type {model_type!r} already has the adapter {existing!r}")
        _ADAPTERS[model_type] = cls
    return cls


def _load_plugins() -> None:
    """Register the adapters of installed packages, once; one that fails to load is left out
    with a warning naming it."""
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            cls = ep.load()
            if not (isinstance(cls, type) and issubclass(cls, ArchAdapter)):
                raise TypeError(f"{ep.value} is not an ArchAdapter subclass")
            register_adapter(cls)
        except Exception as err:
            logger.warning("the architecture plugin %r failed to load: %s", ep.name, one_line(err))


def adapters() -> dict[str, type[ArchAdapter]]:
    """model_type -> adapter class, built-in and installed."""
    _load_plugins()
    return dict(sorted(_ADAPTERS.items()))


def supported_model_types() -> list[str]:
    return list(adapters())


def adapter_class(model_type: str) -> type[ArchAdapter]:
    known = adapters()
    if model_type not in known:
        raise UnsupportedModelError(
            f"model type {model_type!r} is not supported; supported types: {', '.join(known)}"
        )
    return known[model_type]


def get_adapter(model: nn.Module) -> ArchAdapter:
    """The adapter for a transformers model, chosen by its `config.model_type`."""
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    if model_type is None:
        raise UnsupportedModelError(
            f"{type(model).__name__} has no config.model_type: pass a transformers model "
            f"of a supported type ({', '.join(supported_model_types())})"
        )
    return adapter_class(model_type)(model)


def _register_builtins() -> None:
    from compresskit.arch.bert import BertAdapter, RobertaAdapter
    from compresskit.arch.distilbert import DistilBertAdapter

    for cls in (BertAdapter, RobertaAdapter, DistilBertAdapter):
        register_adapter(cls)


_register_builtins()

__all__ = [
    "ArchAdapter",
    "AttentionParts",
    "FFNParts",
    "adapter_class",
    "adapters",
    "get_adapter",
    "register_adapter",
    "supported_model_types",
]
