"""The masked dense model: the reference a pruned model must reproduce exactly.

Masking a head zeroes its columns of the attention output projection; masking an FFN neuron
zeroes its column of the second FFN linear. Whatever the removed units compute then never
reaches the residual stream, which is precisely what physical removal does.
"""

from __future__ import annotations

import torch
from torch import nn

from compresskit.arch import get_adapter
from compresskit.plan import PruningPlan, kept_in_layer, positions_dropped


@torch.no_grad()
def mask(model: nn.Module, plan: PruningPlan) -> nn.Module:
    """Zero, in place, the output-projection columns of every head and FFN neuron that `plan`
    removes. The shapes do not change. Returns the same model."""
    adapter = get_adapter(model)
    plan.validate(model)
    for layer, want in zip(adapter.layers(), plan.layers, strict=True):
        have = kept_in_layer(adapter, layer)
        head_dim = adapter.head_dim(layer)
        out_proj = adapter.attention_parts(layer).output
        for pos in positions_dropped(have.heads_kept, want.heads_kept):
            out_proj.weight[:, pos * head_dim : (pos + 1) * head_dim] = 0
        down = adapter.ffn_parts(layer).down
        down.weight[:, positions_dropped(have.ffn_kept, want.ffn_kept)] = 0
    return model
