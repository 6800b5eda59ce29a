"""Taylor: first-order importance of each head and FFN neuron (Michel et al., 2019).

Every head and FFN neuron gets a gate g = 1 that multiplies what it contributes: a head's
gate scales its slice of the input of the attention output projection, a neuron's gate
scales its input to the FFN `down` linear. Over up to `max_batches` labelled batches,

    score(unit) = | Σ_batches ∂loss / ∂g_unit |     (at g = 1)

the first-order estimate of how much the loss changes when the unit is removed. Scoring runs
in eval mode (no dropout) and leaves the model exactly as it found it: weights, gradients,
`requires_grad` flags, train/eval modes, and no hooks left behind.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from compresskit.arch import ArchAdapter, get_adapter
from compresskit.errors import CompressKitError, ConfigError
from compresskit.registry import register_strategy
from compresskit.strategies.base import Scores, Strategy, StrategyConfig, option_help

Batch = dict[str, torch.Tensor]


@dataclass(frozen=True)
class TaylorConfig(StrategyConfig):
    """Shared settings plus how many batches to accumulate gradients over."""

    max_batches: int = field(default=8, metadata=option_help("Labelled batches to score with."))

    def __post_init__(self) -> None:
        super().__post_init__()
        if (
            isinstance(self.max_batches, bool)
            or not isinstance(self.max_batches, int)
            or self.max_batches < 1
        ):
            raise ConfigError(f"max_batches must be a positive integer, got {self.max_batches!r}")


@register_strategy("taylor")
class TaylorStrategy(Strategy):
    """First-order Taylor importance: |Σ ∂loss/∂gate| of a gate on each head and FFN neuron."""

    needs_data = True
    Config = TaylorConfig
    config: TaylorConfig

    def scores(self, model: nn.Module, batches: Iterable[Batch] | None = None) -> Scores:
        """Accumulate each gate's loss gradient over the first `max_batches` batches.

        Args:
            model: a supported transformers model with a loss head, dense or already pruned.
            batches: dicts of tensors that `model(**batch)` accepts, with labels (or whatever
                the model needs to return a loss).

        Raises:
            ConfigError: no batches, or a batch for which the model returns no loss.
        """
        if batches is None:
            raise ConfigError(
                "taylor needs data: pass labelled batches (dicts of tensors such that "
                "model(**batch).loss exists) to scores() / plan()"
            )
        adapter = get_adapter(model)
        gates = _Gates.ones(adapter)
        with _scoring_state(model), gates.attached(adapter):
            batches_used = 0
            for batch in itertools.islice(batches, self.config.max_batches):
                gates.accumulate(_loss(model, batch))
                batches_used += 1
        if batches_used == 0:
            raise ConfigError("taylor needs data: the batches given were empty")
        return Scores(
            heads=[g.abs() for g in gates.head_grads], ffn=[g.abs() for g in gates.ffn_grads]
        )


@dataclass
class _Gates:
    """Per layer, a gate tensor of ones for the heads, shape (heads,), and one for the FFN
    neurons, shape (width,), with the running sum of their loss gradients."""

    heads: list[torch.Tensor]
    ffn: list[torch.Tensor]
    head_grads: list[torch.Tensor]
    ffn_grads: list[torch.Tensor]

    @classmethod
    def ones(cls, adapter: ArchAdapter) -> _Gates:
        layers = adapter.layers()
        heads = [
            _gate(adapter.attention_parts(layer).output, adapter.num_heads(layer))
            for layer in layers
        ]
        ffn = [_gate(adapter.ffn_parts(layer).down, adapter.ffn_width(layer)) for layer in layers]
        # Sums in float32 whatever the model's dtype.
        return cls(heads, ffn, [_zeros_f32(g) for g in heads], [_zeros_f32(g) for g in ffn])

    @contextlib.contextmanager
    def attached(self, adapter: ArchAdapter) -> Iterator[None]:
        """While inside, gate the inputs of every attention output projection and FFN `down`."""
        handles = []
        try:
            for layer, head_gate, ffn_gate in zip(
                adapter.layers(), self.heads, self.ffn, strict=True
            ):
                head_hook = _gate_input(head_gate, adapter.head_dim(layer))
                ffn_hook = _gate_input(ffn_gate, 1)
                out_proj = adapter.attention_parts(layer).output
                handles.append(out_proj.register_forward_pre_hook(head_hook))
                handles.append(adapter.ffn_parts(layer).down.register_forward_pre_hook(ffn_hook))
            yield
        finally:
            for handle in handles:
                handle.remove()

    def accumulate(self, loss: torch.Tensor) -> None:
        """Add ∂loss/∂gate to every running sum."""
        # Gates of zero units (a fully pruned layer) have nothing to score.
        live = [
            (gate, total)
            for gate, total in zip(
                self.heads + self.ffn, self.head_grads + self.ffn_grads, strict=True
            )
            if gate.numel()
        ]
        if not live:
            return
        # autograd.grad rather than backward(): nothing is accumulated into any .grad.
        grads = torch.autograd.grad(loss, [gate for gate, _ in live], allow_unused=True)
        for (_, total), grad in zip(live, grads, strict=True):
            if grad is None:
                # A hook that never ran would silently give every unit score 0.
                raise CompressKitError(
                    "taylor: a gate never reached the loss; does the model run every layer's "
                    "attention output projection and FFN down linear as plain nn.Linear calls?"
                )
            total.add_(grad.float())


def _gate(linear: nn.Linear, units: int) -> torch.Tensor:
    weight = linear.weight
    return torch.ones(units, dtype=weight.dtype, device=weight.device, requires_grad=True)


def _zeros_f32(gate: torch.Tensor) -> torch.Tensor:
    return torch.zeros(gate.shape, dtype=torch.float32, device=gate.device)


def _gate_input(gate: torch.Tensor, unit_size: int) -> Callable[..., tuple[Any, ...]]:
    """A forward pre-hook that multiplies consecutive blocks of `unit_size` input features
    by the matching gate entry."""

    def hook(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
        features, *rest = args
        # (..., units * unit_size) -> (..., units, unit_size), gated, and back.
        blocks = features.unflatten(-1, (gate.numel(), unit_size))
        gated = (blocks * gate.unsqueeze(-1)).flatten(-2)
        return (gated, *rest)

    return hook


def _loss(model: nn.Module, batch: Batch) -> torch.Tensor:
    device = next(model.parameters()).device
    inputs = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
    loss = getattr(model(**inputs), "loss", None)
    if loss is None:
        raise ConfigError(
            f"taylor needs batches with labels: {type(model).__name__} returned no loss for a "
            f"batch with keys {sorted(batch)}; add 'labels' (or the model's target inputs) and "
            "use a model class with a task head"
        )
    return loss


@contextlib.contextmanager
def _scoring_state(model: nn.Module) -> Iterator[None]:
    """Eval mode, gradients on and parameters frozen (gradients flow to the gates only);
    every module's mode and every parameter's `requires_grad` are restored afterwards."""
    modes = [(module, module.training) for module in model.modules()]
    flags = [(param, param.requires_grad) for param in model.parameters()]
    try:
        model.eval()
        for param, _ in flags:
            param.requires_grad_(False)
        with torch.enable_grad():
            yield
    finally:
        for param, requires_grad in flags:
            param.requires_grad_(requires_grad)
        for module, training in modes:
            module.training = training
