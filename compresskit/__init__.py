"""compresskit: structured pruning for BERT-family models.

The public API is imported lazily, so that `compresskit --help` and `import compresskit` do
not pay for torch and transformers until something that needs them is used.

    plan = compresskit.PruningPlan.from_json("plan.json")
    slim = compresskit.prune(model, plan)
    compresskit.save(slim, "out/", tokenizer=tok)
    model = compresskit.load("out/")
"""

from __future__ import annotations

import importlib
from typing import Any

from compresskit._version import __version__
from compresskit.errors import (
    CompressKitError,
    ConfigError,
    ModelFileError,
    OutputExistsError,
    PlanError,
    UnknownStrategyError,
    UnsupportedModelError,
)
from compresskit.hf import install_when_transformers_is_imported

# public name -> module that defines it
_LAZY = {
    "PruningPlan": "compresskit.plan",
    "LayerPlan": "compresskit.plan",
    "plan_from_scores": "compresskit.plan",
    "keep_by_score": "compresskit.plan",
    "prune": "compresskit.pruner",
    "mask": "compresskit.masking",
    "save": "compresskit.io",
    "load": "compresskit.io",
    "model_stats": "compresskit.stats",
    "ModelStats": "compresskit.stats",
    "get_strategy": "compresskit.registry",
    "get_strategy_class": "compresskit.registry",
    "strategy_names": "compresskit.registry",
    "register_strategy": "compresskit.registry",
    "strategy_from_dict": "compresskit.registry",
    "get_adapter": "compresskit.arch",
    "supported_model_types": "compresskit.arch",
    "Target": "compresskit.target",
    "TargetOptions": "compresskit.target",
    "plan_for_target": "compresskit.target",
    "LatencySetting": "compresskit.latency",
    "LatencyModel": "compresskit.latency",
    "export_onnx": "compresskit.exporters.onnx",
    "OnnxClassifier": "compresskit.runtime",
    "run_bench": "compresskit.bench",
}

__all__ = [
    "CompressKitError",
    "ConfigError",
    "ModelFileError",
    "OutputExistsError",
    "PlanError",
    "UnknownStrategyError",
    "UnsupportedModelError",
    "__version__",
    *_LAZY,
]


# After `import compresskit`, transformers' from_pretrained (and so pipeline) and
# save_pretrained know compresskit folders (compresskit/hf.py); the wrappers go on when
# transformers' modeling is imported, so this import stays cheap.
install_when_transformers_is_imported()


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'compresskit' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
