"""Architecture adapters, one per model family, looked up by `config.model_type`."""

from __future__ import annotations

from torch import nn

from compresskit.arch.base import ArchAdapter, AttentionParts, FFNParts
from compresskit.arch.bert import BertAdapter
from compresskit.arch.distilbert import DistilBertAdapter
from compresskit.errors import UnsupportedModelError

_ADAPTERS: dict[str, type[ArchAdapter]] = {
    model_type: cls for cls in (BertAdapter, DistilBertAdapter) for model_type in cls.model_types
}


def supported_model_types() -> list[str]:
    return sorted(_ADAPTERS)


def adapter_class(model_type: str) -> type[ArchAdapter]:
    try:
        return _ADAPTERS[model_type]
    except KeyError:
        raise UnsupportedModelError(
            f"model type {model_type!r} is not supported; supported types: "
            f"{', '.join(supported_model_types())}"
        ) from None


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


__all__ = [
    "ArchAdapter",
    "AttentionParts",
    "FFNParts",
    "adapter_class",
    "get_adapter",
    "supported_model_types",
]
