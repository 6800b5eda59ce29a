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
from compresskit.strategies.units import head_sums, neuron_sums


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
    return head_sums(adapter, layer, _squares).sqrt()


def neuron_norms(adapter: ArchAdapter, layer: nn.Module) -> torch.Tensor:
    """The L2 norm of each FFN neuron's parameters in `layer`, shape (width,)."""
    return neuron_sums(adapter, layer, _squares).sqrt()


def _squares(parameter: torch.Tensor) -> torch.Tensor:
    return parameter.detach().float().square()
