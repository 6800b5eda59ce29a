"""What an architecture adapter knows: where each layer's heads and FFN neurons live.

The pruner, the strategies and the loader only talk to models through an adapter, so adding
an architecture means adding one small class here and nothing else.
"""

from __future__ import annotations

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

    def __init__(self, model: Any) -> None:
        self.model = model  # a transformers PreTrainedModel (its modules are untyped)

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
