"""Taylor: first-order importance of each head and FFN neuron (Michel et al., 2019).

Every head and FFN neuron gets a gate g = 1 that multiplies what it contributes
(strategies/gates.py). Over up to `max_batches` labelled batches,

    score(unit) = | Σ_batches ∂loss / ∂g_unit |     (at g = 1)

the first-order estimate of how much the loss changes when the unit is removed. A head's
score and a neuron's are in the same unit (loss), so a latency target weighs them as they are
(`Scores.in_loss_units`). Scoring runs in eval mode (no dropout) and leaves the model exactly
as it found it.
"""

from __future__ import annotations

import torch

from compresskit.registry import register_strategy
from compresskit.strategies.gates import GateScoringStrategy


@register_strategy("taylor")
class TaylorStrategy(GateScoringStrategy):
    """First-order Taylor importance: |Σ ∂loss/∂gate| of a gate on each head and FFN neuron."""

    @staticmethod
    def from_sums(sums: torch.Tensor) -> torch.Tensor:
        return sums.abs()
