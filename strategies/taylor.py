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

from collections.abc import Iterable

from torch import nn

from compresskit.registry import register_strategy
from compresskit.strategies.base import Scores, Strategy
from compresskit.strategies.gates import Batch, GateScoringConfig, summed_gate_gradients


@register_strategy("taylor")
class TaylorStrategy(Strategy):
    """First-order Taylor importance: |Σ ∂loss/∂gate| of a gate on each head and FFN neuron."""

    needs_data = True
    Config = GateScoringConfig
    config: GateScoringConfig

    def scores(self, model: nn.Module, batches: Iterable[Batch] | None = None) -> Scores:
        """Sum each gate's loss gradient over the first `max_batches` batches.

        Args:
            model: a supported transformers model with a loss head, dense or already pruned.
            batches: dicts of tensors that `model(**batch)` accepts, with labels (or whatever
                the model needs to return a loss).

        Raises:
            ConfigError: no batches, or a batch for which the model returns no loss.
        """
        heads, ffn = summed_gate_gradients(
            model, batches, self.config, "taylor", per_sample=False, transform=lambda g: g
        )
        return Scores([g.abs() for g in heads], [g.abs() for g in ffn], in_loss_units=True)
