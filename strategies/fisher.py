"""Fisher: second-order importance of each head and FFN neuron, from the diagonal of the
empirical Fisher information of a gate on it (Kwon et al., 2022; Molchanov et al., 2019).

Every head and FFN neuron gets a gate g = 1 that multiplies what it contributes
(strategies/gates.py). Over the examples i of up to `max_batches` labelled batches,

    score(unit) = Σ_i ( ∂loss_i / ∂g_unit )²      (at g = 1, one backward pass per example)

Why squares of per-example gradients: removing a set S of units is g_S = 0, and around a
trained model (mean gradient ≈ 0) the loss grows by about ½ Σ_{u,v ∈ S} F_uv, where the
Fisher F ≈ Σ_i ∇_g loss_i ∇_g loss_iᵀ approximates the Hessian. Keeping only F's diagonal
makes a set's cost the sum of its units' scores. Unlike taylor's |Σ gradient|, which cancels
across examples near a minimum, each example's sensitivity counts. A head's score and a
neuron's are in the same unit (loss), so a latency target weighs them as they are
(`Scores.in_loss_units`): which to keep, a head or the FFN neurons of the same cost, is decided
by the loss each costs. Scoring runs in eval mode (no dropout) and leaves the model exactly as
it found it.
"""

from __future__ import annotations

import torch

from compresskit.registry import register_strategy
from compresskit.strategies.gates import GateScoringStrategy


@register_strategy("fisher")
class FisherStrategy(GateScoringStrategy):
    """Fisher importance: Σ over examples of (∂loss/∂gate)² for each head and FFN neuron."""

    per_example = True  # one backward pass per example
    keeps_example_gradients = True  # a latency target weighs units removed together

    @staticmethod
    def contribution(grad: torch.Tensor) -> torch.Tensor:
        return grad.square()
