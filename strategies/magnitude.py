"""Magnitude: keep the heads and FFN neurons with the largest weights.

A pure function of the weights (no data). For head h of a layer with head size d, writing
W[r] for row r of a weight, b[r] for entry r of a bias and rows(h) = h*d .. h*d+d-1:

    score(h) = sqrt( Σ_{r ∈ rows(h)} ( ||Wq[r]||² + bq[r]² + ||Wk[r]||² + bk[r]²
                                      + ||Wv[r]||² + bv[r]² + ||Wo[:, r]||² ) )

that is, the L2 norm of every parameter that belongs to head h alone: its rows of the query,
key and value weights, their bias entries, and its input columns of the output projection.
The output projection's bias is shared by all heads and does not count.

For FFN neuron i, with `up` (hidden -> width) and `down` (width -> hidden):

    score(i) = sqrt( ||W_up[i]||² + b_up[i]² + ||W_down[:, i]||² )

The `down` bias is shared by all neurons and does not count. Scores are computed on the model
as it is now, so an already-pruned layer gets one score per unit it still has (possibly none).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from compresskit.arch import ArchAdapter, get_adapter
from compresskit.registry import register_strategy
from compresskit.strategies.base import Scores, Strategy


@register_strategy("magnitude")
class MagnitudeStrategy(Strategy):
    """Weight magnitude: L2 norm of each head's q/k/v/o slices and each neuron's FFN weights."""

    @torch.no_grad()
    def scores(
        self, model: nn.Module, batches: Iterable[dict[str, torch.Tensor]] | None = None
    ) -> Scores:
        """Score every head and FFN neuron by the L2 norm of its own parameters.

        Args:
            model: a supported transformers model, dense or already pruned.
            batches: ignored; magnitude needs no data.
        """
        adapter = get_adapter(model)
        layers = adapter.layers()
        return Scores(
            heads=[head_norms(adapter, layer) for layer in layers],
            ffn=[neuron_norms(adapter, layer) for layer in layers],
        )


def head_norms(adapter: ArchAdapter, layer: nn.Module) -> torch.Tensor:
    """The L2 norm of each head's parameters in `layer`, shape (heads,)."""
    parts = adapter.attention_parts(layer)
    heads, head_dim = adapter.num_heads(layer), adapter.head_dim(layer)
    qkv_squares = (
        _row_squares(parts.query, heads)
        + _row_squares(parts.key, heads)
        + _row_squares(parts.value, heads)
    )
    # Wo: (hidden, heads * head_dim); head h owns input columns h*d .. h*d+d-1.
    out_weight = parts.output.weight.detach().float()
    out_squares = (
        out_weight.reshape(parts.output.out_features, heads, head_dim).square().sum(dim=(0, 2))
    )
    return (qkv_squares + out_squares).sqrt()


def neuron_norms(adapter: ArchAdapter, layer: nn.Module) -> torch.Tensor:
    """The L2 norm of each FFN neuron's parameters in `layer`, shape (width,)."""
    ffn = adapter.ffn_parts(layer)
    width = adapter.ffn_width(layer)
    # W_down: (hidden, width); neuron i owns column i.
    down_squares = ffn.down.weight.detach().float().square().sum(dim=0)
    return (_row_squares(ffn.up, width) + down_squares).sqrt()


def _row_squares(linear: nn.Linear, groups: int) -> torch.Tensor:
    """Sum of squares of the weight rows and bias entries of `linear`, split into `groups`
    consecutive equal blocks of rows; shape (groups,)."""
    # Explicit sizes (not -1): a pruned layer may have zero rows, and reshape cannot infer
    # a dimension of an empty tensor.
    rows_per_group = linear.out_features // groups if groups else 0
    weight = linear.weight.detach().float()
    squares = weight.reshape(groups, rows_per_group * linear.in_features).square().sum(dim=1)
    if linear.bias is not None:
        squares = squares + linear.bias.detach().float().reshape(
            groups, rows_per_group
        ).square().sum(dim=1)
    return squares
