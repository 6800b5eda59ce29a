"""Random: seeded uniform scores, EarlyBERT's main baseline.

Every head and FFN neuron the model has now gets a score drawn uniformly from [0, 1) by a
private `torch.Generator` seeded with `config.seed`: the heads of every layer first, in layer
order, then the FFN neurons of every layer. The same seed on a model of the same shape gives
the same plan, whatever the global RNG state, and scoring leaves the global RNG untouched.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from compresskit.arch import get_adapter
from compresskit.registry import register_strategy
from compresskit.strategies.base import Scores, Strategy


@register_strategy("random")
class RandomStrategy(Strategy):
    """Random baseline: seeded uniform scores, independent of the weights and of the global RNG."""

    def scores(
        self, model: nn.Module, batches: Iterable[dict[str, torch.Tensor]] | None = None
    ) -> Scores:
        """Draw one uniform score per head and per FFN neuron from a generator seeded with
        `config.seed`.

        Args:
            model: a supported transformers model, dense or already pruned.
            batches: ignored; random scoring needs no data.
        """
        adapter = get_adapter(model)
        layers = adapter.layers()
        generator = torch.Generator().manual_seed(self.config.seed)
        heads = [torch.rand(adapter.num_heads(layer), generator=generator) for layer in layers]
        ffn = [torch.rand(adapter.ffn_width(layer), generator=generator) for layer in layers]
        return Scores(heads=heads, ffn=ffn)
