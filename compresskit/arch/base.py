"""What an architecture adapter knows: where each layer's heads and FFN neurons live.

The pruner, the strategies and the loader only talk to models through an adapter, so adding
an architecture means adding one small class here and nothing else.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

from torch import nn


@dataclass(frozen=True)
class AttentionParts:
    """The projections of one self-attention block.

    `output` maps the concatenated heads, (..., heads * head_dim), back to the hidden size;
    head h owns its input columns h*head_dim .. (h+1)*head_dim - 1, and the same rows of
    query, key and value.
    """

    query: nn.Linear
    key: nn.Linear
    value: nn.Linear
    output: nn.Linear


@dataclass(frozen=True)
class FFNParts:
    """The two linears of one feed-forward block: `up` (hidden -> width), `down` (back)."""

    up: nn.Linear
    down: nn.Linear


class ArchAdapter:
    """Locates heads and FFN neurons in one transformers model family.

    Subclasses set `model_types` and implement the module lookups; shape bookkeeping that
    every family shares (head counts, head-less attention) lives here.
    """

    model_types: ClassVar[tuple[str, ...]] = ()
    # The transformers model classes compresskit supports for these types (every test runs on
    # each), the inputs an exported graph takes, and the attribute of the masked-LM class's
    # head when it is one module (the loss then runs it on the masked positions only).
    model_classes: ClassVar[tuple[str, ...]] = ()
    onnx_inputs: ClassVar[tuple[str, ...]] = ("input_ids", "attention_mask")
    mlm_head: ClassVar[str | None] = None
    # config.json fields that size a tensor (each a positive integer), the two whose quotient
    # is the head size, and the one naming the activation.
    size_fields: ClassVar[tuple[str, ...]] = ()
    hidden_and_heads: ClassVar[tuple[str, str]] = ("hidden_size", "num_attention_heads")
    # The config attributes of one layer's head count and FFN width, as config.json's
    # per_layer_config names them for a pruned model.
    layer_fields: ClassVar[tuple[str, str]] = ("num_attention_heads", "intermediate_size")
    activation_field: ClassVar[str] = "hidden_act"

    def __init__(self, model: Any) -> None:
        self.model = model  # a transformers PreTrainedModel (its modules are untyped)

    # --- what a config.json must hold -----------------------------------------------------
    @classmethod
    def config_problem(cls, config: Any) -> str | None:
        """What in `config` transformers would reject (or crash on) when building the model,
        in words; None when it can be built. Checked before any tensor is made, so that a
        damaged or hostile config.json is one line, not a traceback from deep inside."""
        for name in cls.size_fields:
            value = getattr(config, name, None)
            if type(value) is not int or value < 1:
                return f"{name} must be a positive integer, got {value!r}"
        hidden, heads = (getattr(config, name) for name in cls.hidden_and_heads)
        if hidden % heads:
            return f"{cls.hidden_and_heads[0]} {hidden} is not a multiple of {heads} heads"
        for name, value in sorted(vars(config).items()):
            is_probability = "dropout" in name or name.endswith("_prob")
            if is_probability and value is not None and not (_is_number(value) and 0 <= value <= 1):
                return f"{name} must be a probability in [0, 1], got {value!r}"
        eps = getattr(config, "layer_norm_eps", None)
        if eps is not None and (not _is_number(eps) or not 0 < eps < 1):
            return f"layer_norm_eps must be a small positive number, got {eps!r}"
        return cls._activation_problem(getattr(config, cls.activation_field, None))

    @classmethod
    def _activation_problem(cls, activation: Any) -> str | None:
        from transformers.activations import ACT2FN

        if not isinstance(activation, str) or activation not in ACT2FN:
            return (
                f"{cls.activation_field} {activation!r} is not an activation transformers "
                f"knows (e.g. {', '.join(sorted(ACT2FN)[:5])}, ...)"
            )
        return None

    @classmethod
    def max_positions(cls, config: Any) -> int:
        """The longest sequence the model's position table takes."""
        return int(config.max_position_embeddings)

    @classmethod
    def tiny_config(cls, *, vocab: int, layers: int, heads: int, head_dim: int, ffn: int) -> Any:
        """A small random-init config of this family, for tests and smoke runs."""
        raise NotImplementedError

    # --- lookups each family implements -------------------------------------------------
    @classmethod
    def config_shape(cls, config: Any) -> tuple[int, int, int, int]:
        """(layers, heads, head_dim, ffn_width) of the dense model a config describes."""
        raise NotImplementedError

    def layers(self) -> list[Any]:
        """The transformer layers, in order."""
        raise NotImplementedError

    def attention_module(self, layer: Any) -> Any:
        """The module that splits into heads (holds the head-count attributes)."""
        raise NotImplementedError

    def attention_parts(self, layer: Any) -> AttentionParts:
        raise NotImplementedError

    def ffn_parts(self, layer: Any) -> FFNParts:
        raise NotImplementedError

    def set_head_count(self, layer: Any, num_heads: int) -> None:
        """Make the attention module's attributes agree with `num_heads` heads."""
        raise NotImplementedError

    def make_headless(self, layer: Any) -> None:
        """Replace the attention module by one that runs with zero heads (bias only)."""
        raise NotImplementedError

    # --- shared ---------------------------------------------------------------------------
    def head_dim(self, layer: Any) -> int:
        return int(self.attention_module(layer).attention_head_size)

    def num_heads(self, layer: Any) -> int:
        return self.attention_parts(layer).output.in_features // self.head_dim(layer)

    def ffn_width(self, layer: Any) -> int:
        return self.ffn_parts(layer).down.in_features

    def hidden_size(self) -> int:
        return self.attention_parts(self.layers()[0]).output.out_features


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def set_linear_width(
    linear: nn.Linear, *, in_features: int | None = None, out_features: int | None = None
) -> None:
    """Resize a Linear's parameters in place (values undefined), keeping dtype and device.

    Used to give a freshly built skeleton the shapes of a saved pruned model before its
    weights are loaded; the pruner itself never uses this (torch-pruning slices the weights).
    """
    n_in = linear.in_features if in_features is None else in_features
    n_out = linear.out_features if out_features is None else out_features
    weight = linear.weight
    linear.weight = nn.Parameter(weight.new_empty(n_out, n_in), requires_grad=weight.requires_grad)
    if linear.bias is not None:
        linear.bias = nn.Parameter(
            linear.bias.new_empty(n_out), requires_grad=linear.bias.requires_grad
        )
    linear.in_features, linear.out_features = n_in, n_out
