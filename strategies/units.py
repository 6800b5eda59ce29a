"""Which parameters belong to one attention head or one FFN neuron alone, and per-unit sums of
any elementwise function of them. For head h of a layer with head size d (rows(h) = h*d ..
h*d+d-1) the parameters are its rows of the query, key and value weights and their bias
entries, and its input columns of the output projection; for FFN neuron i, row i of `up` and
its bias entry, and column i of `down`. Shared biases (the output projection's, `down`'s) do
not count.

    head_sums(adapter, layer, lambda p: p.detach().float().square())   # magnitude², (heads,)
    neuron_sums(adapter, layer, lambda p: -(p * p.grad))                # movement, (width,)
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from compresskit.arch import ArchAdapter

# An elementwise function of a parameter: a tensor of its shape.
Elementwise = Callable[[torch.Tensor], torch.Tensor]


def head_sums(adapter: ArchAdapter, layer: nn.Module, value: Elementwise) -> torch.Tensor:
    """Σ value over each head's own parameters in `layer`, shape (heads,)."""
    parts = adapter.attention_parts(layer)
    heads, head_dim = adapter.num_heads(layer), adapter.head_dim(layer)
    qkv = sum(_row_sums(linear, heads, value) for linear in (parts.query, parts.key, parts.value))
    # Wo: (hidden, heads * head_dim); head h owns input columns h*d .. h*d+d-1.
    out = value(parts.output.weight).float()
    return qkv + out.reshape(parts.output.out_features, heads, head_dim).sum(dim=(0, 2))


def neuron_sums(adapter: ArchAdapter, layer: nn.Module, value: Elementwise) -> torch.Tensor:
    """Σ value over each FFN neuron's own parameters in `layer`, shape (width,)."""
    ffn = adapter.ffn_parts(layer)
    # W_down: (hidden, width); neuron i owns column i.
    down = value(ffn.down.weight).float().sum(dim=0)
    return _row_sums(ffn.up, adapter.ffn_width(layer), value) + down


def _row_sums(linear: nn.Linear, groups: int, value: Elementwise) -> torch.Tensor:
    """Σ value over the weight rows and bias entries of `linear`, split into `groups`
    consecutive equal blocks of rows; shape (groups,)."""
    # Explicit sizes (not -1): a pruned layer may have zero rows, and reshape cannot infer
    # a dimension of an empty tensor.
    rows_per_group = linear.out_features // groups if groups else 0
    sums = value(linear.weight).float().reshape(groups, rows_per_group * linear.in_features)
    total = sums.sum(dim=1)
    if linear.bias is not None:
        total = total + value(linear.bias).float().reshape(groups, rows_per_group).sum(dim=1)
    return total
