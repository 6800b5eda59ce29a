"""EarlyBERT search stage: learn slimming coefficients while training and draw the
early-bird ticket once the pruning mask stops changing.

The method (docs/earlybird.md): one learnable scalar per attention head and per FFN
neuron, initialised to 1.0 and trained with an L1 penalty; every `mask_interval` steps the
coefficients are turned into a keep-mask at the configured ratios; when the newest mask is
within `eps` of each of the previous `window - 1` masks the ticket is drawn (the distance is
the fraction of kept units that changed, see `mask_distance`). The slim network is then cut
and trained on: by default it continues the run's budget from the searched weights; with
`rewind` it is cut from the *initial* weights and trained from the start (the paper's
recipe). This module is the search; the training pipeline builds on it.

Plain PyTorch:

    import torch
    import compresskit
    from compresskit.strategies.earlybird import EarlyBirdStrategy

    strategy = EarlyBirdStrategy(heads_ratio=1 / 3, ffn_ratio=0.4, coef_lr=1e-2, rewind=True)
    strategy.attach(model)              # hooks in the coefficients, keeps weights to rewind to
    optimizer = torch.optim.AdamW(
        [{"params": model.parameters(), "weight_decay": 0.01},
         strategy.param_group()],       # the coefficients: weight_decay 0, lr = coef_lr
        lr=2e-5)
    model.train()
    for step, batch in enumerate(loader, start=1):
        loss = model(**batch).loss + strategy.regularizer()   # + L1 on the coefficients
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if strategy.on_step(step):      # True once the ticket is drawn (or the cap is hit)
            break
    plan = strategy.plan(model)         # the ticket, in the dense model's indices
    strategy.detach()                   # hooks off: coefficients are dropped, not folded
    strategy.rewind(model)              # back to the weights attach() saw
    compresskit.prune(model, plan)      # then train the slim model with a fresh optimizer

Design choices:
- Masks rank |c|, not the signed value (EarlyBERT's code ranks signed values; Network Slimming
  ranks magnitudes). A coefficient of -0.8 still passes 80% of its head's output (the sign
  can be absorbed by W_O), so it should not be pruned before one at 0.1. In practice the
  coefficients stay near +1.0 during a search and both orders agree.
- Heads and FFN masks are tracked separately by default (`track="separate"`): the ticket needs
  both distances below eps. Concatenated, FFN neurons outnumber heads ~100:1 (MiniLM: 9216
  vs 72) so the head mask could still be changing when the joint distance is already small.
- Distances are compared strictly: the ticket needs every distance in the window `< eps`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, ClassVar, Literal

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from compresskit.arch import get_adapter
from compresskit.errors import CompressKitError, ConfigError
from compresskit.plan import PruningPlan, keep_by_score
from compresskit.registry import register_strategy
from compresskit.strategies.base import (
    Scope,
    Scores,
    SearchRecord,
    StrategyConfig,
    TrainingTimeStrategy,
    option_help,
)

logger = logging.getLogger(__name__)

Track = Literal["separate", "concat"]
Measure = Literal["kept", "positions"]
MaskKind = Literal["heads", "ffn", "all"]
SearchState = Literal["searching", "drawn", "capped"]


# --- configuration ---------------------------------------------------------------------------
@dataclass(frozen=True)
class EarlyBirdConfig(StrategyConfig):
    """EarlyBERT's search settings; the defaults are the paper's fine-tuning setup, but for
    continuing the budget after the ticket instead of rewinding (measured: see `rewind`).

    `heads_ratio` defaults to exactly 1/3 (4 of 12 heads per layer), `ffn_ratio` to 0.4 of all
    FFN neurons ranked globally. `lambda_*` weigh the L1 penalty (a plain sum over
    coefficients); a mask is drawn every `mask_interval` optimizer steps; the ticket is drawn
    when the newest of the last `window` masks is below `eps` from each older one.
    `max_search_steps` ends the search there without a ticket (state "capped"), and so does
    `max_search_fraction` of the step budget, whichever comes first (20% by default, so that
    a search that never settles cannot take the run: the saving is then at least what the
    slim model saves on the other 80%); `rewind` keeps
    a CPU copy of the weights at `attach()` so the slim model can start from them and train
    the whole budget again (without it the slim model continues the budget from the searched
    weights, the coefficients folded in: train/handoff.py); `coef_lr`
    is the coefficients' learning rate (None: the optimizer's); `track` is "separate" (heads
    and FFN distances each below eps) or "concat" (one distance over all positions).
    """

    heads_ratio: float = 1 / 3
    ffn_ratio: float = 0.4
    heads_scope: Scope = "layer"
    ffn_scope: Scope = "global"
    lambda_heads: float = field(
        default=1e-4, metadata=option_help("L1 weight on the head coefficients.")
    )
    lambda_ffn: float = field(
        default=1e-4, metadata=option_help("L1 weight on the FFN coefficients.")
    )
    eps: float = field(
        default=0.1,
        metadata=option_help("Ticket when every mask distance in the window is below eps."),
    )
    window: int = field(default=5, metadata=option_help("Masks compared for the ticket."))
    mask_interval: int = field(default=10, metadata=option_help("Optimizer steps between masks."))
    max_search_steps: int | None = field(
        default=None, metadata=option_help("End the search here without a ticket.")
    )
    max_search_fraction: float | None = field(
        default=0.2,
        metadata=option_help(
            "End the search at this fraction of the step budget without a ticket (null: no cap)."
        ),
    )
    # Continuing is the default: on SST-2 (MiniLM, 8k examples, 3 seeds, docs/fine-tuning.md) it
    # matched rewinding's accuracy (85.97 vs 85.63 at 4/12 heads + 40% FFN; 84.94 vs 85.17 at
    # 6/12 + 60%) and saved 22% / 35% of dense's training time where rewinding saved 9% / 25%.
    rewind: bool = field(
        default=False,
        metadata=option_help(
            "Train the slim model from the weights at the start of the search, for the whole "
            "budget (EarlyBERT); else it continues the budget from the searched weights."
        ),
    )
    coef_lr: float | None = field(
        default=None, metadata=option_help("Learning rate of the coefficients (None: --lr).")
    )
    track: Track = field(
        default="separate",
        metadata=option_help(
            "Ticket test on heads and FFN separately, or on one concatenated mask."
        ),
    )
    measure: Measure = field(
        default="kept",
        metadata=option_help(
            "Mask distance as the fraction of kept units that changed (kept), or of all "
            "positions (positions, the paper's)."
        ),
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("lambda_heads", "lambda_ffn"):
            _check_number(name, getattr(self, name), "a number >= 0", lambda v: v >= 0)
        _check_number("eps", self.eps, "a number in (0, 1]", lambda v: 0 < v <= 1)
        _check_int("window", self.window, 2, "(the newest mask and at least one older one)")
        _check_int("mask_interval", self.mask_interval, 1, "(optimizer steps between masks)")
        if self.max_search_steps is not None:
            _check_int("max_search_steps", self.max_search_steps, 1, "or None (no cap)")
        if self.max_search_fraction is not None:
            _check_number(
                "max_search_fraction",
                self.max_search_fraction,
                "a number in (0, 1] or None (no cap)",
                lambda v: 0 < v <= 1,
            )
        if not isinstance(self.rewind, bool):
            raise ConfigError(f"rewind must be true or false, got {self.rewind!r}")
        if self.coef_lr is not None:
            _check_number("coef_lr", self.coef_lr, "a number > 0 or None", lambda v: v > 0)
        if self.track not in ("separate", "concat"):
            raise ConfigError(f"track must be 'separate' or 'concat', got {self.track!r}")
        if self.measure not in ("kept", "positions"):
            raise ConfigError(f"measure must be 'kept' or 'positions', got {self.measure!r}")


def _check_number(name: str, value: Any, what: str, ok: Any) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or not ok(value)
    ):
        raise ConfigError(f"{name} must be {what}, got {value!r}")


def _check_int(name: str, value: Any, low: int, note: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"{name} must be an integer >= {low} {note}, got {value!r}")


# --- slimming coefficients -------------------------------------------------------------------
class _ScaleColumns:
    """Forward pre-hook of a Linear: for this call, use W·diag(s) as its weight, where s holds
    `coefficient` with each entry repeated `repeat` times (a head covers head_dim columns).

    x·(W·diag(s))ᵀ = (x·diag(s))·Wᵀ, so this *is* scaling the Linear's input (a head's context,
    a neuron's activation), but at the cost of one weight-sized product instead of
    activation-sized ones in forward and backward, and with no extra activation kept for
    backward (MiniLM, batch 32 × seq 64: about half the step-time overhead of scaling the
    input). The scaled weight shadows the parameter in the instance dict for this call only
    (`_drop_scaled_weight` removes it, also on error); `state_dict()` and `parameters()` never
    see it.
    """

    def __init__(self, coefficient: nn.Parameter, repeat: int) -> None:
        self.coefficient = coefficient
        self.repeat = repeat

    def __call__(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        weight = module._parameters["weight"]  # (out_features, in_features)
        assert weight is not None
        scale = self.coefficient.to(weight.dtype)  # float32 master copy; cast for bf16 / fp16
        if self.repeat > 1:
            scale = scale.repeat_interleave(self.repeat)  # (in_features,)
        module.__dict__["weight"] = weight * scale


def _drop_scaled_weight(module: nn.Module, args: Any, output: Any = None) -> None:
    module.__dict__.pop("weight", None)


class SlimmingCoefficients(nn.Module):
    """EarlyBERT's learnable scalars: one per attention head and one per FFN neuron per layer.

    A head's coefficient scales that head's slice of the input to the attention output
    projection W_O (the same as scaling the head's context); a neuron's coefficient scales its
    activation after GELU, the input of the second FFN linear W_2. They are attached with
    forward pre-hooks that scale the matching *columns of the weight* for each call, which is
    the same product and cheaper (see `_ScaleColumns`). They start at 1.0 (the model then
    computes exactly what it did, and a coefficient of 0 is exactly `compresskit.mask`) and are
    kept in float32 whatever the model's dtype. Attach after moving the model to its device.
    Sizes follow the model as it is now, so an already-pruned model (even a layer with no heads
    or neurons) works.

    `detach()` removes the hooks: the coefficients are **dropped, not folded** into the
    weights. EarlyBERT rewinds to the weights at the start of the search, where the learned
    scales mean nothing; they only choose what to prune.

    The coefficients must not be weight-decayed. Add them to the optimizer as their own group,
    `optimizer = AdamW([{"params": model.parameters()}, coefficients.param_group()])`, or
    `optimizer.add_param_group(coefficients.param_group(lr=1e-2))`.

    Under DistributedDataParallel attach with `as_submodule=True` *before* wrapping: the
    coefficients then live in `model.<submodule_name>`, DDP averages their gradients, and the
    model's parameters include them, so leave them out of the weight groups:
    `[p for n, p in model.named_parameters() if not n.startswith(submodule_name + ".")]`.
    """

    submodule_name: ClassVar[str] = "compresskit_slimming"

    def __init__(
        self,
        head_counts: Sequence[int],
        ffn_widths: Sequence[int],
        *,
        lambda_heads: float = 1e-4,
        lambda_ffn: float = 1e-4,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        self.heads = nn.ParameterList(
            nn.Parameter(torch.ones(n, device=device)) for n in head_counts
        )
        self.ffn = nn.ParameterList(nn.Parameter(torch.ones(n, device=device)) for n in ffn_widths)
        self.lambda_heads = lambda_heads
        self.lambda_ffn = lambda_ffn
        self._handles: list[RemovableHandle] = []
        # Plain lists: a Module assigned to an attribute would become a child of this one.
        self._linears: list[nn.Module] = []
        self._attached_to: list[nn.Module] = []

    # --- attaching ---------------------------------------------------------------------------
    @classmethod
    def attach(
        cls,
        model: nn.Module,
        *,
        lambda_heads: float = 1e-4,
        lambda_ffn: float = 1e-4,
        as_submodule: bool = False,
    ) -> SlimmingCoefficients:
        """Create coefficients for `model` (all 1.0) and hook them in."""
        adapter = get_adapter(model)
        layers = adapter.layers()
        if any(_is_hooked(adapter.attention_parts(layer).output) for layer in layers):
            raise ConfigError(
                "this model already has slimming coefficients attached; "
                "detach() them before attaching new ones"
            )
        device = next(model.parameters()).device
        coefficients = cls(
            [adapter.num_heads(layer) for layer in layers],
            [adapter.ffn_width(layer) for layer in layers],
            lambda_heads=lambda_heads,
            lambda_ffn=lambda_ffn,
            device=device,
        )
        for layer, heads, ffn in zip(layers, coefficients.heads, coefficients.ffn, strict=True):
            output = adapter.attention_parts(layer).output
            down = adapter.ffn_parts(layer).down
            for linear, coefficient, repeat in (
                (output, heads, adapter.head_dim(layer)),
                (down, ffn, 1),
            ):
                coefficients._handles += [
                    linear.register_forward_pre_hook(_ScaleColumns(coefficient, repeat)),
                    linear.register_forward_hook(_drop_scaled_weight, always_call=True),
                ]
                coefficients._linears.append(linear)
        if as_submodule:
            model.add_module(cls.submodule_name, coefficients)
        coefficients._attached_to.append(model)
        return coefficients

    @property
    def attached(self) -> bool:
        return bool(self._handles)

    def detach(self) -> None:
        """Remove the hooks (and the submodule): the model is exactly what it was before
        `attach`, same state-dict keys, same outputs. The coefficients are dropped, not
        folded; their values stay readable here."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        for linear in self._linears:
            _drop_scaled_weight(linear, ())
        self._linears.clear()
        for model in self._attached_to:
            if getattr(model, self.submodule_name, None) is self:
                delattr(model, self.submodule_name)
        self._attached_to.clear()

    @torch.no_grad()
    def fold_into(self, model: nn.Module) -> None:
        """Scale, in place, the weight columns the hooks scaled (W ← W·diag(s)), so that the
        model without the coefficients computes what it computed with them. For a slim model
        that continues training from the searched weights: it then starts exactly where the
        search left off, the removed units aside. Call after `detach()`, before pruning."""
        if self.attached:
            raise ConfigError("detach() the coefficients before folding them into the weights")
        adapter = get_adapter(model)
        for layer, heads, ffn in zip(adapter.layers(), self.heads, self.ffn, strict=True):
            output = adapter.attention_parts(layer).output
            heads_scale = heads.to(output.weight.dtype).repeat_interleave(adapter.head_dim(layer))
            output.weight.mul_(heads_scale)  # (hidden, heads·head_dim) · (heads·head_dim,)
            down = adapter.ffn_parts(layer).down
            down.weight.mul_(ffn.to(down.weight.dtype))  # (hidden, ffn) · (ffn,)

    # --- regulariser and optimizer -------------------------------------------------------------
    def l1_penalty(self) -> torch.Tensor:
        """λ_heads·Σ|c_head| + λ_ffn·Σ|c_ffn| (plain sums), to add to the loss."""
        heads = torch.cat(list(self.heads)).abs().sum()
        ffn = torch.cat(list(self.ffn)).abs().sum()
        return self.lambda_heads * heads + self.lambda_ffn * ffn

    @torch.no_grad()
    def apply_l1_subgradient(self) -> None:
        """Add λ·sign(c) to every coefficient's gradient: the L1 penalty for loops that cannot
        change the loss. Call it after backward (after unscaling, with AMP), before the step."""
        for lam, group in ((self.lambda_heads, self.heads), (self.lambda_ffn, self.ffn)):
            for c in group:
                subgradient = lam * torch.sign(c)
                if c.grad is None:
                    c.grad = subgradient
                else:
                    c.grad.add_(subgradient)

    def l1_subgradient(self, coefficient: nn.Parameter) -> torch.Tensor:
        """λ·sign(c) for one of these coefficients (λ of its kind)."""
        lam = self.lambda_heads if any(coefficient is c for c in self.heads) else self.lambda_ffn
        return lam * torch.sign(coefficient.detach())

    def param_group(self, lr: float | None = None) -> dict[str, Any]:
        """An optimizer parameter group of the coefficients, without weight decay."""
        group: dict[str, Any] = {"params": list(self.parameters()), "weight_decay": 0.0}
        if lr is not None:
            group["lr"] = lr
        return group

    def magnitudes(self) -> Scores:
        """|c| per layer, detached copies on the CPU, in the model's current order."""
        return Scores(
            [c.detach().abs().cpu() for c in self.heads], [c.detach().abs().cpu() for c in self.ffn]
        )


def _is_hooked(linear: nn.Module) -> bool:
    return any(isinstance(h, _ScaleColumns) for h in linear._forward_pre_hooks.values())


# --- masks and their distance ----------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class SlimmingMask:
    """Keep bits (True = kept) of every head and FFN neuron, per layer, in the model's current
    order. `from_bits(["1101", ...], [...])` builds one by hand."""

    heads: tuple[torch.Tensor, ...]
    ffn: tuple[torch.Tensor, ...]

    def __post_init__(self) -> None:
        for name in ("heads", "ffn"):
            bits = tuple(
                torch.as_tensor(b, dtype=torch.bool).flatten().cpu() for b in getattr(self, name)
            )
            object.__setattr__(self, name, bits)

    @classmethod
    def from_bits(
        cls, heads: Sequence[str | Sequence[int]], ffn: Sequence[str | Sequence[int]]
    ) -> SlimmingMask:
        """Build a mask from '0'/'1' strings or 0/1 lists, one per layer."""
        return cls(tuple(_parse_bits(b) for b in heads), tuple(_parse_bits(b) for b in ffn))

    def flat(self, kind: MaskKind = "all") -> torch.Tensor:
        """The bits of one kind (or of both, heads first) concatenated over layers."""
        parts = {"heads": self.heads, "ffn": self.ffn, "all": self.heads + self.ffn}[kind]
        return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.bool)

    @property
    def sizes(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        return tuple(b.numel() for b in self.heads), tuple(b.numel() for b in self.ffn)

    def to_dict(self) -> dict[str, list[str]]:
        return {
            "heads": [_bit_string(b) for b in self.heads],
            "ffn": [_bit_string(b) for b in self.ffn],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SlimmingMask:
        return cls.from_bits(data["heads"], data["ffn"])

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SlimmingMask):
            return NotImplemented
        return self.sizes == other.sizes and bool(torch.equal(self.flat(), other.flat()))

    __hash__ = None  # type: ignore[assignment]


def _parse_bits(bits: str | Sequence[int] | torch.Tensor) -> torch.Tensor:
    if isinstance(bits, str):
        if set(bits) - {"0", "1"}:
            raise CompressKitError(f"a mask bit string holds only 0 and 1, got {bits!r}")
        return torch.tensor([c == "1" for c in bits], dtype=torch.bool)
    return torch.as_tensor(bits).bool()


def _bit_string(bits: torch.Tensor) -> str:
    return "".join("1" if b else "0" for b in bits.tolist())


def mask_distance(
    a: SlimmingMask | torch.Tensor,
    b: SlimmingMask | torch.Tensor,
    kind: MaskKind = "all",
    measure: Measure = "positions",
) -> float:
    """How far two keep-masks are apart, over `kind` ("heads", "ffn" or "all" positions);
    plain tensors are compared as flat bit vectors.

    "positions": the normalised Hamming distance |a xor b| / N, the fraction of positions
    whose bit differs. Its step is 2/N per swapped unit, so one ε means a different number of
    swaps on every model size (ε 0.1: 3 swaps among 72 heads, 1 among 32).
    "kept": |a xor b| / (|a| + |b|), the fraction of the kept units that changed (for two
    masks keeping K units each: swaps / K), which means the same on every model and ratio.
    Nothing to compare (no positions, or nothing kept in either mask) gives 0.0.
    """
    if isinstance(a, SlimmingMask) and isinstance(b, SlimmingMask) and a.sizes != b.sizes:
        raise CompressKitError(
            f"masks of different shapes {a.sizes} and {b.sizes}: they come from different models"
        )
    x = a.flat(kind) if isinstance(a, SlimmingMask) else a.flatten().bool()
    y = b.flat(kind) if isinstance(b, SlimmingMask) else b.flatten().bool()
    if x.shape != y.shape:
        raise CompressKitError(f"cannot compare masks of {x.numel()} and {y.numel()} positions")
    total = x.numel() if measure == "positions" else int(x.sum()) + int(y.sum())
    return int((x != y).sum()) / total if total else 0.0


def mask_from_scores(scores: Scores, config: StrategyConfig) -> SlimmingMask:
    """The keep-mask `plan_from_scores` would choose from `scores` at `config`'s ratios and
    scopes (the same `keep_by_score` calls), in the model's current order."""
    heads = keep_by_score(scores.heads, config.heads_ratio, scope=config.heads_scope)
    ffn = keep_by_score(
        scores.ffn, config.ffn_ratio, scope=config.ffn_scope, round_to=config.round_to
    )
    return SlimmingMask(
        tuple(_bits(s.numel(), kept) for s, kept in zip(scores.heads, heads, strict=True)),
        tuple(_bits(s.numel(), kept) for s, kept in zip(scores.ffn, ffn, strict=True)),
    )


def _bits(size: int, kept: list[int]) -> torch.Tensor:
    bits = torch.zeros(size, dtype=torch.bool)
    bits[kept] = True
    return bits


# --- early-bird ticket detection -------------------------------------------------------------
@dataclass(frozen=True)
class DistanceRecord:
    """The distances of the mask drawn at `step` to each older mask in the window (oldest
    first), per kind and over all positions, in the detector's `measure`. `max_distance` is
    what the ticket test uses: the largest heads/FFN distance ("separate") or concatenated
    distance ("concat"); None for the first mask, which has nothing to compare with."""

    step: int
    max_distance: float | None
    heads: tuple[float, ...]
    ffn: tuple[float, ...]
    concat: tuple[float, ...]


class TicketDetector:
    """Early-bird ticket test (You et al. 2020), fed one mask every few steps.

    It keeps the last `window` masks; the ticket is drawn when the window is full and the
    newest mask is below `eps` from each of the older ones. With `max_search_steps`, a mask
    fed at or after that step that is not a ticket ends the search as "capped": no ticket,
    the search ends with that mask. Every distance is recorded in `history`; `to_dict` /
    `from_dict` save and restore the whole state so a search can be resumed.
    """

    FORMAT: ClassVar[str] = "compresskit.earlybird.detector"
    VERSION: ClassVar[int] = 2

    def __init__(
        self,
        window: int = 5,
        eps: float = 0.1,
        max_search_steps: int | None = None,
        track: Track = "separate",
        measure: Measure = "kept",
    ) -> None:
        # The same checks as EarlyBirdConfig, so the detector can be used on its own.
        EarlyBirdConfig(
            window=window,
            eps=eps,
            max_search_steps=max_search_steps,
            track=track,
            measure=measure,
        )
        self.window, self.eps = window, eps
        self.max_search_steps, self.track, self.measure = max_search_steps, track, measure
        self.masks: deque[tuple[int, SlimmingMask]] = deque(maxlen=window)
        self.history: list[DistanceRecord] = []
        self.state: SearchState = "searching"
        self.final_step: int | None = None
        self.final_mask: SlimmingMask | None = None

    @property
    def done(self) -> bool:
        return self.state != "searching"

    def update(self, step: int, mask: SlimmingMask) -> bool:
        """Feed the mask drawn at `step`; True once the search is over (drawn or capped).
        Masks fed after that are ignored."""
        if self.done:
            return True
        if self.masks and step <= self.masks[-1][0]:
            raise CompressKitError(
                f"masks must come in increasing steps: got step {step} "
                f"after step {self.masks[-1][0]}"
            )
        older = list(self.masks)[-(self.window - 1) :]
        record = self._record(step, mask, [m for _, m in older])
        self.history.append(record)
        self.masks.append((step, mask))
        full = len(older) == self.window - 1
        if full and record.max_distance is not None and record.max_distance < self.eps:
            self._finish("drawn", step, mask)
        elif self.max_search_steps is not None and step >= self.max_search_steps:
            self._finish("capped", step, mask)
        return self.done

    def close(self, step: int, mask: SlimmingMask) -> None:
        """End a search that ran out of steps (training ended) before the ticket: feed `mask`
        drawn at `step` unless a mask was already fed at that step, and if that does not
        draw the ticket, end as "capped" with the newest mask."""
        if self.done:
            return
        if not self.masks or step > self.masks[-1][0]:
            self.update(step, mask)
        if not self.done:
            self._finish("capped", *self.masks[-1])

    def _record(self, step: int, mask: SlimmingMask, older: list[SlimmingMask]) -> DistanceRecord:
        heads = tuple(mask_distance(mask, m, "heads", self.measure) for m in older)
        ffn = tuple(mask_distance(mask, m, "ffn", self.measure) for m in older)
        concat = tuple(mask_distance(mask, m, "all", self.measure) for m in older)
        tracked = heads + ffn if self.track == "separate" else concat
        return DistanceRecord(step, max(tracked) if older else None, heads, ffn, concat)

    def _finish(self, state: SearchState, step: int, mask: SlimmingMask) -> None:
        self.state, self.final_step, self.final_mask = state, step, mask
        distance = self.history[-1].max_distance
        logger.info(
            "early-bird search %s at step %d (max distance in window: %s)",
            "drew the ticket" if state == "drawn" else "hit max_search_steps",
            step,
            "n/a" if distance is None else f"{distance:.4f}",
        )

    # --- (de)serialisation -------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "format": self.FORMAT,
            "version": self.VERSION,
            "window": self.window,
            "eps": self.eps,
            "max_search_steps": self.max_search_steps,
            "track": self.track,
            "measure": self.measure,
            "state": self.state,
            "final_step": self.final_step,
            "final_mask": None if self.final_mask is None else self.final_mask.to_dict(),
            "masks": [{"step": s, "mask": m.to_dict()} for s, m in self.masks],
            "history": [dataclasses.asdict(r) for r in self.history],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TicketDetector:
        if data.get("format") != cls.FORMAT or data.get("version") not in (1, cls.VERSION):
            raise CompressKitError(
                f"not a version-{cls.VERSION} early-bird detector state "
                f"(format {data.get('format')!r}, "
                f"version {data.get('version')!r})"
            )
        # A version-1 state (a search started before `measure` existed) measured positions.
        measure = data.get("measure", "positions")
        detector = cls(
            data["window"], data["eps"], data["max_search_steps"], data["track"], measure
        )
        for entry in data["masks"]:
            detector.masks.append((entry["step"], SlimmingMask.from_dict(entry["mask"])))
        detector.history = [
            DistanceRecord(
                r["step"], r["max_distance"], tuple(r["heads"]), tuple(r["ffn"]), tuple(r["concat"])
            )
            for r in data["history"]
        ]
        detector.state = data["state"]
        detector.final_step = data["final_step"]
        if data["final_mask"] is not None:
            detector.final_mask = SlimmingMask.from_dict(data["final_mask"])
        return detector


# --- the strategy ----------------------------------------------------------------------------
@register_strategy("earlybird")
class EarlyBirdStrategy(TrainingTimeStrategy):
    """EarlyBERT: learn per-head and per-neuron slimming coefficients while training, and
    prune at the early-bird ticket, when their mask stops changing.

    Two phases: `attach(model)` → train with `regularizer()` and call `on_step(step)` after
    every optimizer step → once it returns True: `plan(model)`, `detach()`, `rewind(model)`,
    `compresskit.prune`. See the module docstring for a full loop; `StrategyCallback` runs it
    in a Trainer through the TrainingTimeStrategy contract.
    """

    Config: ClassVar[type[StrategyConfig]] = EarlyBirdConfig
    config: EarlyBirdConfig
    # The paper pre-trains with 4 of 12 heads per layer (the default) and 30% of FFN neurons
    # pruned.
    pretraining_defaults: ClassVar[Mapping[str, Any]] = MappingProxyType({"ffn_ratio": 0.3})
    quick_options: ClassVar[Mapping[str, Any]] = MappingProxyType(
        {"mask_interval": 2, "window": 4, "eps": 0.1, "coef_lr": 0.05}
    )

    def __init__(self, config: StrategyConfig | None = None, **options: Any) -> None:
        super().__init__(config, **options)
        self.detector = self._new_detector()
        self.coefficients: SlimmingCoefficients | None = None
        self._ticket_scores: Scores | None = None
        self._initial_weights: dict[str, torch.Tensor] | None = None

    def _new_detector(self) -> TicketDetector:
        c = self.config
        return TicketDetector(c.window, c.eps, c.max_search_steps, c.track, c.measure)

    # --- phase 1: attach and search ----------------------------------------------------------
    def attach(self, model: nn.Module, *, as_submodule: bool = False) -> SlimmingCoefficients:
        """Hook coefficients (all 1.0) into `model` and start a new search. With `rewind`,
        keep a CPU copy of the weights now, for `rewind()`. See SlimmingCoefficients for
        `as_submodule` (DDP)."""
        if self.coefficients is not None and self.coefficients.attached:
            raise ConfigError("this strategy is already attached to a model; detach() first")
        if self.config.rewind:
            self._initial_weights = {
                name: t.detach().to("cpu", copy=True) for name, t in model.state_dict().items()
            }
        self.coefficients = SlimmingCoefficients.attach(
            model,
            lambda_heads=self.config.lambda_heads,
            lambda_ffn=self.config.lambda_ffn,
            as_submodule=as_submodule,
        )
        self.detector = self._new_detector()
        self._ticket_scores = None
        return self.coefficients

    @property
    def attached(self) -> bool:
        return self.coefficients is not None and self.coefficients.attached

    def parameters(self) -> list[nn.Parameter]:
        """The coefficients while attached."""
        return list(self.coefficients.parameters()) if self.attached else []  # type: ignore[union-attr]

    def regularizer(self) -> torch.Tensor:
        """The L1 penalty on the coefficients, to add to the task loss."""
        return self._require_coefficients().l1_penalty()

    def extra_gradient(self, parameter: nn.Parameter) -> torch.Tensor:
        """L1's sub-gradient λ·sign(c), added inside backward (see TrainingTimeStrategy)."""
        return self._require_coefficients().l1_subgradient(parameter)

    def param_group(self) -> dict[str, Any]:
        """The coefficients as an optimizer group: no weight decay, lr = `coef_lr` if set."""
        return self._require_coefficients().param_group(self.config.coef_lr)

    def on_step(self, step: int) -> bool:
        """Call after optimizer step number `step` (1, 2, ...). Every `mask_interval` steps
        (and at `max_search_steps`) draw the mask and feed the detector. Returns True once the
        search is over: the ticket is drawn, or the cap was hit (`state == "capped"`)."""
        if self.detector.done:
            return True
        cap = self.detector.max_search_steps
        if step <= 0 or (step % self.config.mask_interval and (cap is None or step < cap)):
            return False
        scores = self._require_coefficients().magnitudes()
        mask = mask_from_scores(scores, self.config)
        if self.detector.update(step, mask):
            self._ticket_scores = scores
        record = self.detector.history[-1]
        logger.debug("step %d: mask distance %s", step, record.max_distance)
        return self.detector.done

    def begin(self, total_steps: int) -> None:
        """The search's cap: `max_search_steps`, or `max_search_fraction` of the budget of
        `total_steps` if that comes first (at least one step)."""
        c = self.config
        caps = [] if c.max_search_steps is None else [c.max_search_steps]
        if c.max_search_fraction is not None and total_steps > 0:
            caps.append(max(1, math.ceil(c.max_search_fraction * total_steps)))
        self.detector.max_search_steps = min(caps) if caps else None

    @property
    def decided(self) -> bool:
        return self.detector.done

    def end(self, step: int) -> None:
        self.end_search(step)

    def end_search(self, step: int) -> None:
        """End the search at `step` (training ran out): the ticket if the mask drawn now
        passes the test, else "capped" with it. Training loops call this when they stop
        before `on_step` returned True."""
        if self.detector.done:
            return
        scores = self._require_coefficients().magnitudes()
        self.detector.close(step, mask_from_scores(scores, self.config))
        self._ticket_scores = scores

    def current_mask(self) -> SlimmingMask:
        """The keep-mask of the coefficients as they are now."""
        return mask_from_scores(self._require_coefficients().magnitudes(), self.config)

    @property
    def state(self) -> SearchState:
        return self.detector.state

    @property
    def search_done(self) -> bool:
        return self.detector.done

    @property
    def ticket_drawn(self) -> bool:
        """True when the early-bird test passed (False while searching, and when capped)."""
        return self.detector.state == "drawn"

    @property
    def ticket_step(self) -> int | None:
        """The step of the mask the search ended with (the ticket, or the capped mask)."""
        return self.detector.final_step

    @property
    def ticket(self) -> SlimmingMask | None:
        return self.detector.final_mask

    # --- scores and plan ---------------------------------------------------------------------
    def scores(
        self, model: nn.Module, batches: Iterable[dict[str, torch.Tensor]] | None = None
    ) -> Scores:
        """|c| now, per layer, in `model`'s current order (needs `attach` first; the values
        stay readable after `detach`)."""
        scores = self._require_coefficients().magnitudes()
        _check_sizes(model, scores)
        return scores

    def plan(
        self, model: nn.Module, batches: Iterable[dict[str, torch.Tensor]] | None = None
    ) -> PruningPlan:
        """The ticket's plan once the search is over, else that of the coefficients now; in
        the dense model's indices (so it also works on an already-pruned model)."""
        scores = self._ticket_scores if self._ticket_scores is not None else self.scores(model)
        return self.plan_from_scores(model, scores)

    def finish(self, model: nn.Module) -> PruningPlan:
        return self.plan(model)

    # --- phase 2: detach and rewind ----------------------------------------------------------
    def detach(self) -> None:
        """Remove the coefficients' hooks; the model is exactly as before `attach`."""
        if self.coefficients is not None:
            self.coefficients.detach()

    def rewind(self, model: nn.Module) -> None:
        """Load the weights `attach` saw back into `model` (EarlyBERT's rewinding). Call it
        after `detach()` and before pruning; give the slim model a new optimizer."""
        if self._initial_weights is None:
            raise ConfigError("no weights to rewind to: attach() first, with rewind=True")
        if self.coefficients is not None and self.coefficients.attached:
            raise ConfigError("detach() the coefficients before rewinding")
        model.load_state_dict(self._initial_weights)

    def prepare_slim(self, model: nn.Module) -> None:
        """Rewind (EarlyBERT) when `rewind`; else keep the searched weights with the
        coefficients folded in, so that the slim model continues from what the search
        trained (the pruned model computes what the searched one computes with the removed
        units masked)."""
        if self.config.rewind:
            self.rewind(model)
        else:
            self._require_coefficients().fold_into(model)

    @property
    def restarts_training(self) -> bool:
        """With `rewind`, the slim model trains the whole budget from step 0 (EarlyBERT);
        without, it continues the budget where the search stopped."""
        return self.config.rewind

    def record(self) -> SearchRecord:
        c = self.config
        return SearchRecord(
            state=self.state,
            decided_at=self.ticket_step,
            # JSON-plain (lists, not tuples), as report.json and a resumed run hold it.
            history=json.loads(json.dumps(self.detector.to_dict()["history"])),
            plot={
                "title": "early-bird search",
                "ylabel": f"max mask distance in window of {c.window}",
                "series": ["heads", "ffn"],
                "threshold": c.eps,
                "label": f"eps {c.eps}",
                "decision": "ticket" if self.state == "drawn" else "capped (no ticket)",
            },
            settings={
                "eps": c.eps,
                "measure": c.measure,
                "window": c.window,
                "mask_interval": c.mask_interval,
                "max_search_steps": self.detector.max_search_steps,
            },
        )

    # --- resuming ----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The detector and the ticket's scores, as JSON-ready data. The coefficients'
        values are in `coefficients.state_dict()`; the weights to rewind to are not kept."""
        ticket = self._ticket_scores
        return {
            "detector": self.detector.to_dict(),
            "ticket_scores": None
            if ticket is None
            else {
                "heads": [s.tolist() for s in ticket.heads],
                "ffn": [s.tolist() for s in ticket.ffn],
            },
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.detector = TicketDetector.from_dict(state["detector"])
        ticket = state["ticket_scores"]
        self._ticket_scores = (
            None
            if ticket is None
            else Scores(
                [torch.tensor(s, dtype=torch.float32) for s in ticket["heads"]],
                [torch.tensor(s, dtype=torch.float32) for s in ticket["ffn"]],
            )
        )

    def _require_coefficients(self) -> SlimmingCoefficients:
        if self.coefficients is None:
            raise ConfigError(
                "the earlybird strategy has no coefficients yet: call "
                "strategy.attach(model) and train before asking for scores"
            )
        return self.coefficients


def _check_sizes(model: nn.Module, scores: Scores) -> None:
    current = PruningPlan.of_model(model)
    got = ([s.numel() for s in scores.heads], [s.numel() for s in scores.ffn])
    if got != (current.heads_per_layer, current.ffn_per_layer):
        raise ConfigError(
            f"the coefficients have {got[0]} heads and {got[1]} FFN neurons per "
            f"layer but the model has {current.heads_per_layer} and "
            f"{current.ffn_per_layer}: was it pruned after attach()?"
        )
