"""Gates on every attention head and FFN neuron, for strategies that score units by the loss
gradient of a gate (taylor, fisher). A gate g = 1 multiplies what its unit contributes: a
head's gate scales its slice of the input of the attention output projection, a neuron's gate
scales its input to the FFN `down` linear. Scoring runs in eval mode (no dropout) with the
parameters frozen, and leaves the model exactly as it found it: weights, gradients,
`requires_grad` flags, train/eval modes, and no hooks left behind.

A strategy of this kind subclasses `GateScoringStrategy` and says how one gradient counts
(`contribution`), whether per example, and what the sums become (`from_sums`).
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from compresskit.arch import ArchAdapter, get_adapter
from compresskit.errors import CompressKitError, ConfigError
from compresskit.strategies.base import (
    ExampleGradients,
    Scores,
    Strategy,
    StrategyConfig,
    option_help,
)

Batch = dict[str, torch.Tensor]


@dataclass
class Gates:
    """Per layer, a gate tensor of ones for the heads, shape (heads,), and one for the FFN
    neurons, shape (width,)."""

    heads: list[torch.Tensor]
    ffn: list[torch.Tensor]

    @classmethod
    def ones(cls, adapter: ArchAdapter) -> Gates:
        layers = adapter.layers()
        heads = [
            _gate(adapter.attention_parts(layer).output, adapter.num_heads(layer))
            for layer in layers
        ]
        ffn = [_gate(adapter.ffn_parts(layer).down, adapter.ffn_width(layer)) for layer in layers]
        return cls(heads, ffn)

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

    def gradients(self, loss: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """∂loss/∂gate for every head gate and FFN gate, in float32 (a layer left with no
        units gets an empty tensor)."""
        gates = self.heads + self.ffn
        # Gates of zero units (a fully pruned layer) have nothing to score.
        live = [i for i, gate in enumerate(gates) if gate.numel()]
        grads = [_zeros_f32(gate) for gate in gates]
        if live:
            # autograd.grad rather than backward(): nothing is accumulated into any .grad.
            found = torch.autograd.grad(loss, [gates[i] for i in live], allow_unused=True)
            for i, grad in zip(live, found, strict=True):
                if grad is None:
                    # A hook that never ran would silently give every unit score 0.
                    raise CompressKitError(
                        "a gate never reached the loss; does the model run every layer's "
                        "attention output projection and FFN down linear as plain nn.Linear "
                        "calls?"
                    )
                grads[i] = grad.float()
        return grads[: len(self.heads)], grads[len(self.heads) :]


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


def labelled_loss(model: nn.Module, batch: Batch, strategy: str) -> torch.Tensor:
    """The loss `model` returns for `batch`; a batch without labels is a ConfigError naming
    `strategy`."""
    device = next(model.parameters()).device
    inputs = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
    loss = getattr(model(**inputs), "loss", None)
    if loss is None:
        raise ConfigError(
            f"{strategy} needs batches with labels: {type(model).__name__} returned no loss for a "
            f"batch with keys {sorted(batch)}; add 'labels' (or the model's target inputs) and "
            "use a model class with a task head"
        )
    return loss


@contextlib.contextmanager
def scoring_state(model: nn.Module) -> Iterator[None]:
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


@dataclass(frozen=True)
class GateScoringConfig(StrategyConfig):
    """Shared settings plus how many labelled batches to score with."""

    max_batches: int = field(default=8, metadata=option_help("Labelled batches to score with."))

    def __post_init__(self) -> None:
        super().__post_init__()
        if (
            isinstance(self.max_batches, bool)
            or not isinstance(self.max_batches, int)
            or self.max_batches < 1
        ):
            raise ConfigError(f"max_batches must be a positive integer, got {self.max_batches!r}")


def gate_gradients(
    model: nn.Module,
    batches: Iterable[Batch] | None,
    config: GateScoringConfig,
    strategy: str,
    *,
    per_example: bool,
) -> Iterator[tuple[list[torch.Tensor], list[torch.Tensor]]]:
    """∂loss/∂gate of every head and FFN gate (per layer, shapes (heads,) and (width,),
    float32) for each of the first `config.max_batches` batches or, with `per_example`, for
    each example of them (one backward pass each).

    Raises:
        ConfigError: no batches, or a batch for which the model returns no loss.
    """
    if batches is None:
        raise ConfigError(
            f"{strategy} needs data: pass labelled batches (dicts of tensors such that "
            "model(**batch).loss exists) to scores() / plan()"
        )
    adapter = get_adapter(model)
    gates = Gates.ones(adapter)
    batches_used = 0
    with scoring_state(model), gates.attached(adapter):
        for batch in itertools.islice(batches, config.max_batches):
            for piece in examples(batch) if per_example else [batch]:
                yield gates.gradients(labelled_loss(model, piece, strategy))
            batches_used += 1
    if batches_used == 0:
        raise ConfigError(f"{strategy} needs data: the batches given were empty")


def examples(batch: Batch) -> Iterator[Batch]:
    """The batch one example at a time: every tensor with the batch's first dimension is
    sliced to one row (kept 2-D); anything else is passed as it is."""
    rows = int(batch["input_ids"].shape[0])
    for i in range(rows):
        yield {
            k: v[i : i + 1] if isinstance(v, torch.Tensor) and v.dim() and v.shape[0] == rows else v
            for k, v in batch.items()
        }


class GateScoringStrategy(Strategy):
    """A one-shot strategy whose scores are sums over data of a function of the gates' loss
    gradients: `from_sums(Σ contribution(∂loss/∂gate))`, over batches or, with
    `per_example`, over each batch's examples."""

    needs_data = True
    Config = GateScoringConfig
    config: GateScoringConfig
    per_example: ClassVar[bool] = False
    # Hand the per-example gradients to a latency target (Scores.example_gradients).
    keeps_example_gradients: ClassVar[bool] = False

    @staticmethod
    def contribution(grad: torch.Tensor) -> torch.Tensor:
        return grad

    @staticmethod
    def from_sums(sums: torch.Tensor) -> torch.Tensor:
        return sums

    def scores(self, model: nn.Module, batches: Iterable[Batch] | None = None) -> Scores:
        """Score every head and FFN neuron over the first `max_batches` batches.

        Args:
            model: a supported transformers model with a loss head, dense or already pruned.
            batches: dicts of tensors that `model(**batch)` accepts, with labels (or whatever
                the model needs to return a loss).

        Raises:
            ConfigError: no batches, or a batch for which the model returns no loss.
        """
        return self._scores(model, batches, for_a_target=self.keeps_example_gradients)

    def scores_for_ratios(self, model: nn.Module, batches: Iterable[Batch] | None = None) -> Scores:
        """The summed scores only: no per-example gradients kept, no removals measured."""
        return self._scores(model, batches, for_a_target=False)

    def _scores(
        self, model: nn.Module, batches: Iterable[Batch] | None, *, for_a_target: bool
    ) -> Scores:
        """The scores, and with `for_a_target` the per-example gradients and measured
        whole-layer removals a latency target's search weighs (`Scores.example_gradients`)."""
        layers = len(get_adapter(model).layers())
        if for_a_target and batches is not None:
            # Read again below, to measure whole-layer removals on the same examples.
            batches = list(itertools.islice(batches, self.config.max_batches))
        sums: list[torch.Tensor] = []  # every layer's head gates, then every layer's FFN gates
        kept: list[list[torch.Tensor]] = []  # the same, per example
        for heads, ffn in gate_gradients(
            model, batches, self.config, self.name, per_example=self.per_example
        ):
            grads = heads + ffn
            sums = sums or [torch.zeros_like(g) for g in grads]
            for total, grad in zip(sums, grads, strict=True):
                total.add_(self.contribution(grad))
            if for_a_target:
                kept.append(grads)
        example_gradients = None
        if kept:
            assert batches is not None  # gate_gradients raised otherwise
            removals = layer_removal_losses(model, batches, self.name)
            example_gradients = _stacked(kept, layers, removals)
        # Both estimate the loss a unit's removal costs: one unit for heads and neurons.
        return Scores(
            [self.from_sums(s) for s in sums[:layers]],
            [self.from_sums(s) for s in sums[layers:]],
            in_loss_units=True,
            example_gradients=example_gradients,
        )


def layer_removal_losses(model: nn.Module, batches: Iterable[Batch], strategy: str) -> list[float]:
    """Per layer, the mean loss over the examples of `batches` added by gating off all of its
    heads, then the same for all of its FFN neurons (a layer with no such units: 0), one
    forward pass per batch each, and one with every gate open."""
    adapter = get_adapter(model)
    gates = Gates.ones(adapter)
    batches = list(batches)
    with scoring_state(model), gates.attached(adapter), torch.no_grad():

        def mean_loss() -> float:
            # Weighted by rows: a classifier's loss is the mean over its batch's examples.
            rows = [int(batch["input_ids"].shape[0]) for batch in batches]
            losses = [float(labelled_loss(model, batch, strategy)) for batch in batches]
            return sum(n * loss for n, loss in zip(rows, losses, strict=True)) / sum(rows)

        everything = mean_loss()
        added = []
        for gate in gates.heads + gates.ffn:
            if not gate.numel():
                added.append(0.0)
                continue
            gate.zero_()
            added.append(mean_loss() - everything)
            gate.fill_(1.0)
    return added


def _stacked(
    kept: list[list[torch.Tensor]], layers: int, removal_losses: list[float]
) -> ExampleGradients:
    """Per-example gradients (a list per example: heads of every layer, then FFN) as one
    (examples, units) tensor per layer and kind, with the measured whole-layer removals
    (`layer_removal_losses`, in the same order)."""
    columns = [torch.stack(unit_grads) for unit_grads in zip(*kept, strict=True)]
    return ExampleGradients(
        columns[:layers], columns[layers:], removal_losses[:layers], removal_losses[layers:]
    )
