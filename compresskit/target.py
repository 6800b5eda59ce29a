"""Widths for a budget: keep the most importance a model can keep under a latency (or MACs)
budget, in one of two shapes (`TargetOptions.shape`):

- `ratios` (the default): a ratio of heads and one of FFN neurons removed, ranked as
  `--heads-ratio`/`--ffn-ratio` rank them (by default heads within each layer, FFN neurons
  across layers), the smallest that meet the budget (`ratio_widths`, by bisection);
- `layers`: every layer's (heads, FFN width) chosen by a knapsack over layers
  (`choose_widths`, below), and for fisher a search that counts units removed together
  (compresskit/interactions.py).

The second loses less right after pruning; after distilled fine-tuning on SST-2 the first was
the more accurate at every target measured, hence the default (docs/latency-target.md).

The knapsack: each layer l picks one option (h, f): keep its h best-scored heads and f
best-scored FFN neurons. The option costs `cost.layer(h, f)` (compresskit/latency.py) and is worth

    value_l(h, f) = w_heads · Σ_{top h heads of l} ŝ  +  w_ffn · Σ_{top f neurons of l} ŝ

where ŝ are the strategy's scores made comparable across layers and across kinds. Scores in
loss units (`Scores.in_loss_units`: taylor, fisher) already are: a head's and a neuron's each
estimate the loss its removal costs, so ŝ = max(s, 0) and w_heads = w_ffn = 1. Other scores
(weight norms, coefficients) are in different units per kind: within each kind (heads, FFN
neurons) they are shifted so that the least important unit of the model is worth little (1%
of the mean's distance above it) but not nothing, then divided by the kind's total, so each
kind's units together are worth 1, and the kinds are weighted by their share of the prunable
parameters: w_heads = P_heads / (P_heads + P_ffn) with P_heads = Σ heads · 4 · hidden ·
head_dim and P_ffn = Σ neurons · 2 · hidden (a third for BERT's 4·hidden FFN). (Measured on
SST-2 at 2x: with magnitude scores the knapsack removed every head of four layers and lost
3.4 points to uniform ratios at the same speed; docs/latency-target.md.)

The chosen options maximise Σ_l value_l subject to

    cost.fixed + Σ_l cost.layer(h_l, f_l) ≤ budget,

solved exactly (multiple-choice knapsack, dynamic programming) on costs rounded *up* to
1/4000 of the layers' budget, so the prediction of the result never exceeds the budget.
FFN widths are multiples of `round_to` (or the layer's whole width); head counts any number.
Unless a strategy sets `round_to`, a target keeps widths multiples of 16 (FAST_WIDTH_MULTIPLE).
On ONNX Runtime CPU any width runs at the speed its width predicts (multiples of 8, 16 or 32
were within 1% of the line through every width: benchmarks/width_multiples.py), so this costs
nothing here; it keeps the choice small (97 widths a layer for MiniLM instead of 1,537) and
suits runtimes whose kernels want multiples of 8 or 16 (GPU tensor cores).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from compresskit.arch import get_adapter
from compresskit.errors import ConfigError, PlanError
from compresskit.interactions import lowest_fisher_loss
from compresskit.latency import CostModel, LatencySetting, MacsModel, ModelShape
from compresskit.plan import LayerPlan, PruningPlan, Scope, plan_from_scores, top_positions
from compresskit.strategies.base import ExampleGradients, Scores, Strategy

BINS = 4000
FAST_WIDTH_MULTIPLE = 16
RATIO_STEPS = 40  # bisection steps of a ratio-shaped target: 2^-40, below any unit
KINDS = ("speedup", "latency_ms", "macs")


@dataclass(frozen=True)
class Target:
    """One of: `speedup` (predicted dense latency / this), `latency_ms` (milliseconds per
    forward pass), `macs` (dense encoder MACs / this)."""

    kind: str
    value: float

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f"target kind {self.kind!r} is not one of {', '.join(KINDS)}")
        value = self.value
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise ConfigError(f"target {self.kind} must be a positive number, got {value!r}")
        if self.kind != "latency_ms" and value < 1:
            raise ConfigError(
                f"target {self.kind} {value:g} is below 1: it is how many times faster "
                "(or fewer MACs) than dense, e.g. 2.0"
            )

    @classmethod
    def from_options(
        cls,
        speedup: float | None = None,
        latency_ms: float | None = None,
        macs: float | None = None,
    ) -> Target | None:
        given = {
            k: v for k, v in zip(KINDS, (speedup, latency_ms, macs), strict=True) if v is not None
        }
        if len(given) > 1:
            raise ConfigError(
                "give one target: --target-speedup, --target-latency or --target-macs, "
                f"not {' and '.join(given)}"
            )
        return cls(*next(iter(given.items()))) if given else None

    @property
    def measures_latency(self) -> bool:
        return self.kind != "macs"

    def budget(self, before: float) -> float:
        """The whole model's budget in the cost's unit, given the cost of the model now."""
        return self.value if self.kind == "latency_ms" else before / self.value

    def describe(self) -> str:
        if self.kind == "latency_ms":
            return f"{self.value:g} ms"
        return f"{self.value:g}x {'faster' if self.kind == 'speedup' else 'fewer MACs'}"


@dataclass(frozen=True)
class TargetOptions:
    """A target and the deployment it is for. `latency_model`: a file written by
    `compresskit latency` (e.g. measured on the serving machine) instead of measuring here or
    reading this machine's cache; `verify`: time the result against the model as given."""

    target: Target
    setting: LatencySetting = field(default_factory=LatencySetting)
    latency_model: str | None = None
    verify: bool = True
    # "ratios": one heads ratio and one FFN ratio (the strategy's scopes), the smallest that
    # meets the target (`ratio_widths`); "layers": every layer's widths chosen for the budget
    # (`choose_widths`). Ratios are the default: after distilled fine-tuning on SST-2 they
    # were the more accurate at every target measured (at least as accurate in 11 of 12 seed
    # pairs), though the layer-by-layer choice loses less right after pruning
    # (docs/latency-target.md).
    shape: str = "ratios"

    def __post_init__(self) -> None:
        if self.shape not in SHAPES:
            raise ConfigError(
                f"target shape must be one of {', '.join(SHAPES)}, got {self.shape!r}"
            )

    @property
    def timed(self) -> bool:
        """Whether the result is timed against the model as given (a latency target with
        `verify`): the model must then be copied before it is pruned."""
        return self.verify and self.target.measures_latency

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.target.kind,
            "value": self.target.value,
            "setting": asdict(self.setting),
            "latency_model": self.latency_model,
            "shape": self.shape,
        }


SHAPES = ("ratios", "layers")
# The options of `compresskit prune` that describe a target and its deployment.
TARGET_FLAGS = (
    "target_speedup",
    "target_latency",
    "target_macs",
    "target_shape",
    "runtime",
    "threads",
    "batch",
    "int8",
    "optimize",
    "latency_model",
    "verify",
)


def target_from_flags(flags: dict[str, Any], seq_len: int) -> TargetOptions | None:
    """TargetOptions from `prune`'s flags (TARGET_FLAGS), or None without a target; the
    deployment flags alone are refused, as they would do nothing."""
    target = Target.from_options(
        flags.get("target_speedup"), flags.get("target_latency"), flags.get("target_macs")
    )
    if target is None:
        if flags:
            names = ", ".join("--" + k.replace("_", "-") for k in flags)
            raise ConfigError(
                f"{names} describe(s) the deployment of a target: add --target-speedup, "
                "--target-latency or --target-macs"
            )
        return None
    setting = LatencySetting(
        runtime=flags.get("runtime", "ort"),
        threads=flags["threads"] if flags.get("threads") is not None else available_cores(),
        batch_size=flags.get("batch", 1),
        seq_len=seq_len,
        int8=bool(flags.get("int8", False)),
        optimize=bool(flags.get("optimize", False)),
    )
    model_file = flags.get("latency_model")
    return TargetOptions(
        target,
        setting,
        None if model_file is None else str(model_file),
        bool(flags.get("verify", True)),
        flags.get("target_shape", "ratios"),
    )


def available_cores() -> int:
    """The cores this process may run on (its affinity), the default thread count."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


@dataclass(frozen=True)
class WidthChoice:
    """The plan chosen for a budget, and what the cost model predicts for it."""

    plan: PruningPlan
    unit: str
    budget: float
    predicted: float
    before: float  # the cost of the model as it was given
    importance_kept: float  # Σ value of the chosen options / Σ value of keeping everything
    # The search with per-example gradients, when it ran (interactions.lowest_fisher_loss).
    interactions: dict[str, Any] | None = None

    @property
    def predicted_ratio(self) -> float:
        return self.before / self.predicted if self.predicted > 0 else math.inf

    def to_dict(self) -> dict[str, Any]:
        return {
            "unit": self.unit,
            "budget": self.budget,
            "predicted": self.predicted,
            "before": self.before,
            "predicted_ratio": self.predicted_ratio,
            "importance_kept": self.importance_kept,
            "heads_per_layer": self.plan.heads_per_layer,
            "ffn_per_layer": self.plan.ffn_per_layer,
            "interactions": self.interactions,
        }


def plan_for_target(
    model: nn.Module,
    scores: Scores,
    options: TargetOptions,
    *,
    round_to: int | None = None,
    scopes: tuple[Scope, Scope] = ("layer", "global"),
) -> WidthChoice:
    """The widths of `model` for the target from `scores` (a strategy's): with
    `options.shape == "ratios"` the smallest ratios that meet it (ranked within `scopes`:
    heads, FFN), with "layers" every layer's widths that keep the most of the scores. A
    latency target measures the latency model on this machine first (minutes; cached per
    machine and setting), unless `options.latency_model` names one. FFN widths are multiples
    of `round_to` (default FAST_WIDTH_MULTIPLE)."""
    current = PruningPlan.of_model(model)
    if options.target.measures_latency:
        from compresskit.exporters.latency import latency_model_for

        cost: CostModel = latency_model_for(model, options.setting, options.latency_model)
        # The baseline is the model as given, in float32: int8 is part of the speed-up asked
        # for ("3x faster with int8"), so it is measured without it.
        baseline: CostModel = (
            latency_model_for(model, options.setting.in_float32()) if options.setting.int8 else cost
        )
    else:
        cost = baseline = macs_model(model, options.setting.seq_len)
    before = _predict(baseline, current)
    round_to = FAST_WIDTH_MULTIPLE if round_to is None else round_to
    if options.shape == "ratios":
        return ratio_widths(
            model, scores, cost, options.target.budget(before), before, round_to, scopes
        )
    return choose_widths(
        model,
        scores.heads,
        scores.ffn,
        cost,
        options.target.budget(before),
        before=before,
        round_to=round_to,
        in_loss_units=scores.in_loss_units,
        example_gradients=scores.example_gradients,
    )


def plan_strategy_for_target(
    strategy: Strategy,
    model: nn.Module,
    batches: Any,
    options: TargetOptions,
    round_to: int | None = None,
) -> WidthChoice:
    """`plan_for_target` with a strategy's scores of `model` (on `batches`, for a strategy
    that scores with data): the scores a plan at ratios uses when the target's shape is
    ratios, ranked within the strategy's scopes."""
    score = strategy.scores_for_ratios if options.shape == "ratios" else strategy.scores
    scopes = (strategy.config.heads_scope, strategy.config.ffn_scope)
    return plan_for_target(model, score(model, batches), options, round_to=round_to, scopes=scopes)


def _predict(cost: CostModel, plan: PruningPlan) -> float:
    return cost.fixed + sum(
        cost.layer(h, f) for h, f in zip(plan.heads_per_layer, plan.ffn_per_layer, strict=True)
    )


def choose_widths(
    model: nn.Module,
    head_scores: list[torch.Tensor],
    ffn_scores: list[torch.Tensor],
    cost: CostModel,
    budget: float,
    *,
    before: float,
    round_to: int = 1,
    in_loss_units: bool = False,
    example_gradients: ExampleGradients | None = None,
) -> WidthChoice:
    """The plan of `model` (as it is now) that keeps the most score under `budget`, or, with
    `example_gradients`, the lowest loss the whole empirical Fisher predicts
    (compresskit/interactions.py).

    Args:
        head_scores, ffn_scores: per layer, one score per unit the model has now (a
            strategy's `Scores`); higher means keep.
        cost: fixed cost and per-layer cost (LatencyModel or MacsModel).
        budget: the whole model's cost allowed, fixed cost included.
        before: the cost of `model` as it is, for the reported ratio.
        round_to: FFN widths are multiples of this (or a layer's whole width).
        in_loss_units: the scores of heads and neurons are in the same unit (the module
            docstring); `Scores.in_loss_units`.
        example_gradients: the per-example gate gradients the scores were summed from
            (`Scores.example_gradients`), for the search that counts units removed together.
    """
    current = PruningPlan.of_model(model)
    if [int(s.numel()) for s in head_scores] != current.heads_per_layer or [
        int(s.numel()) for s in ffn_scores
    ] != current.ffn_per_layer:
        raise PlanError("scores do not match the model's heads and FFN neurons per layer")
    if type(round_to) is not int or round_to < 1:
        raise ConfigError(f"round_to must be a positive integer, got {round_to!r}")
    head_values, ffn_values = _unit_values(model, head_scores, ffn_scores, in_loss_units)
    widths = [allowed_widths(len(f) - 1, round_to) for f in ffn_values]
    options = [
        _layer_options(h, f, w, cost)
        for h, f, w in zip(head_values, ffn_values, widths, strict=True)
    ]
    counts = [(len(h) - 1, len(f) - 1) for h, f in zip(head_values, ffn_values, strict=True)]
    interactions = None
    if cost.fixed + sum(cost.layer(h, f) for h, f in counts) > budget:  # else keep everything
        counts = _knapsack(options, budget - cost.fixed, budget, cost)
        if example_gradients is not None:
            counts, interactions = lowest_fisher_loss(
                counts, example_gradients, head_scores, ffn_scores, widths, cost, budget
            )
    values = (head_values, ffn_values)
    return _width_choice(
        model, head_scores, ffn_scores, values, counts, cost, budget, before, interactions
    )


def ratio_widths(
    model: nn.Module,
    scores: Scores,
    cost: CostModel,
    budget: float,
    before: float,
    round_to: int,
    scopes: tuple[Scope, Scope],
) -> WidthChoice:
    """A heads ratio and an FFN ratio of units removed, ranked within `scopes` (heads, FFN)
    as `--heads-ratio --ffn-ratio` would rank them, FFN widths multiples of `round_to`: the
    heads ratio is the smallest single ratio r (of both) whose plan the cost model puts within
    `budget`; the FFN ratio then the smallest, with the heads at r, that stays within it. Head
    counts move in steps (a twelfth of a layer's time each), so one ratio alone can land well
    past the target (3.70x for 3.5x at batch 32); the FFN ratio spends what the last head
    step left over. Both by bisection (the predicted cost does not rise as a ratio does)."""

    def counts(heads_ratio: float, ffn_ratio: float) -> list[tuple[int, int]] | None:
        try:
            plan = plan_from_scores(
                model,
                scores.heads,
                scores.ffn,
                heads_ratio=heads_ratio,
                ffn_ratio=ffn_ratio,
                heads_scope=scopes[0],
                ffn_scope=scopes[1],
                round_to=round_to,
            )
        except PlanError:  # the ratio removes every head, or every FFN neuron
            return None
        return list(zip(plan.heads_per_layer, plan.ffn_per_layer, strict=True))

    def cost_of(heads_ratio: float, ffn_ratio: float) -> float:
        kept = counts(heads_ratio, ffn_ratio)
        return math.inf if kept is None else cost.fixed + sum(cost.layer(h, f) for h, f in kept)

    # The largest ratio that keeps a head and an FFN neuron (every smaller one does too).
    low, high = 0.0, 1.0
    for _ in range(RATIO_STEPS):
        middle = (low + high) / 2
        low, high = (middle, high) if counts(middle, middle) is not None else (low, middle)
    largest = low
    if cost_of(largest, largest) > budget:
        raise ConfigError(
            f"a budget of {_amount(budget, cost.unit)} is below what one ratio in every layer "
            f"can reach while keeping an attention head and an FFN neuron "
            f"({_amount(cost_of(largest, largest), cost.unit)}): choose a smaller target, or "
            "--target-shape layers (every layer's widths chosen: it can remove a layer's "
            "attention or FFN whole)"
        )
    heads_ratio = _smallest(lambda r: cost_of(r, r) <= budget, 0.0, largest)
    ffn_ratio = _smallest(lambda r: cost_of(heads_ratio, r) <= budget, 0.0, heads_ratio)
    chosen = counts(heads_ratio, ffn_ratio)
    assert chosen is not None  # both ratios at most `largest`
    values = _unit_values(model, scores.heads, scores.ffn, scores.in_loss_units)
    return _width_choice(model, scores.heads, scores.ffn, values, chosen, cost, budget, before)


def _smallest(holds: Callable[[float], bool], low: float, high: float) -> float:
    """The smallest x in [low, high] where `holds` does, to 2^-RATIO_STEPS (`low` itself if
    it holds there), for a condition that holds at `high` and at every x above one that
    holds."""
    if holds(low):
        return low
    while high - low > 2.0**-RATIO_STEPS:
        middle = (low + high) / 2
        low, high = (low, middle) if holds(middle) else (middle, high)
    return high


def _width_choice(
    model: nn.Module,
    head_scores: list[torch.Tensor],
    ffn_scores: list[torch.Tensor],
    values: tuple[list[np.ndarray], list[np.ndarray]],
    counts: list[tuple[int, int]],
    cost: CostModel,
    budget: float,
    before: float,
    interactions: dict[str, Any] | None = None,
) -> WidthChoice:
    """The plan that keeps each layer's best `counts` (heads, FFN neurons) by score, with
    what the cost model predicts for it and the share of the importance (`values`: per
    layer, `_unit_values`) it keeps; widths with no head or no FFN neuron left anywhere are
    refused."""
    head_values, ffn_values = values
    _check_something_kept(counts, head_values, ffn_values, budget, cost.unit)
    layers = []
    current = PruningPlan.of_model(model)
    for lp, hs, fs, (h, f) in zip(current.layers, head_scores, ffn_scores, counts, strict=True):
        heads = tuple(lp.heads_kept[p] for p in top_positions(hs, h))
        ffn = tuple(lp.ffn_kept[p] for p in top_positions(fs, f))
        layers.append(LayerPlan(heads, ffn))
    plan = PruningPlan(tuple(layers))
    predicted = cost.fixed + sum(cost.layer(h, f) for h, f in counts)
    total = sum(float(hv[-1] + fv[-1]) for hv, fv in zip(head_values, ffn_values, strict=True))
    kept = sum(
        float(hv[h] + fv[f]) for hv, fv, (h, f) in zip(head_values, ffn_values, counts, strict=True)
    )
    return WidthChoice(
        plan,
        cost.unit,
        budget,
        predicted,
        before,
        kept / total if total else 1.0,
        interactions,
    )


def allowed_widths(width: int, round_to: int) -> list[int]:
    """The FFN widths a layer of `width` neurons may keep: multiples of `round_to`, and all."""
    return sorted({*range(0, width + 1, round_to), width})


def _unit_values(
    model: nn.Module,
    head_scores: list[torch.Tensor],
    ffn_scores: list[torch.Tensor],
    in_loss_units: bool,
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per layer, the cumulative value of keeping the best 0, 1, 2, ... heads (neurons):
    arrays of length count + 1 starting at 0 (the module docstring's value_l)."""
    heads, ffn = _as_values(head_scores), _as_values(ffn_scores)
    if in_loss_units:  # one scale for both kinds
        floor = _floor(np.concatenate([np.concatenate(x) for x in (heads, ffn) if x]), low=0.0)
        head_worth, ffn_worth = _worth(heads, floor), _worth(ffn, floor)
        total = _total(head_worth + ffn_worth)
        return _cumulative(head_worth, total), _cumulative(ffn_worth, total)
    adapter = get_adapter(model)
    hidden = adapter.hidden_size()
    head_dim = adapter.head_dim(adapter.layers()[0]) if adapter.layers() else 0
    n_heads = sum(int(s.numel()) for s in head_scores)
    n_ffn = sum(int(s.numel()) for s in ffn_scores)
    p_heads, p_ffn = n_heads * 4 * hidden * head_dim, n_ffn * 2 * hidden
    w_heads = p_heads / (p_heads + p_ffn) if p_heads + p_ffn else 0.0
    head_worth = _worth(heads, _floor(np.concatenate(heads)) if heads else 0.0)
    ffn_worth = _worth(ffn, _floor(np.concatenate(ffn)) if ffn else 0.0)
    # Each kind's units together are worth its weight.
    return (
        _cumulative(head_worth, _total(head_worth) / w_heads if w_heads else math.inf),
        _cumulative(ffn_worth, _total(ffn_worth) / (1 - w_heads) if w_heads < 1 else math.inf),
    )


def _total(worth: list[np.ndarray]) -> float:
    return sum(float(w.sum()) for w in worth)


def _as_values(scores: list[torch.Tensor]) -> list[np.ndarray]:
    """Per layer, the scores as float64 arrays."""
    return [s.detach().double().flatten().cpu().numpy() for s in scores]


def _floor(every: np.ndarray, low: float | None = None) -> float:
    """What is subtracted from every score so that the least important unit keeps a small
    worth (1% of the mean's distance above it, or 1 when all are equal): a budget with room to
    spare keeps it. `low` fixes the zero point (loss units: a score of 0 is worth the small
    worth)."""
    every = every[np.isfinite(every)]  # -inf: a unit the strategy has removed already
    if every.size == 0:
        return 0.0
    zero = float(every.min()) if low is None else low
    spread = float(np.clip(every, zero, None).mean()) - zero
    return zero - (0.01 * spread or 1.0)


def _worth(values: list[np.ndarray], floor: float) -> list[np.ndarray]:
    """Per layer, each unit's worth: its score above `floor`, never below 0; a unit the
    strategy has removed already (−inf) is worth nothing."""
    return [np.where(np.isfinite(v), np.clip(v - floor, 0.0, None), 0.0) for v in values]


def _cumulative(worth: list[np.ndarray], total: float) -> list[np.ndarray]:
    """Per layer, [0, best, best + second, ...] of worth / total."""
    scale = 1.0 / total if total > 0 and math.isfinite(total) else 0.0
    return [np.concatenate([[0.0], np.cumsum(np.sort(w)[::-1])]) * scale for w in worth]


@dataclass(frozen=True)
class _Options:
    """One layer's choices after dropping dominated ones, in ascending cost."""

    counts: list[tuple[int, int]]
    costs: np.ndarray
    values: np.ndarray


def _layer_options(
    head_values: np.ndarray, ffn_values: np.ndarray, widths: list[int], cost: CostModel
) -> _Options:
    n_heads = len(head_values) - 1
    counts, costs, values = [], [], []
    for h in range(n_heads + 1):
        for f in widths:
            counts.append((h, f))
            costs.append(cost.layer(h, f))
            values.append(head_values[h] + ffn_values[f])
    order = sorted(range(len(counts)), key=lambda i: (costs[i], -values[i], counts[i]))
    kept, best = [], -math.inf
    for i in order:  # keep an option only if it is worth more than every cheaper one
        if values[i] > best:
            kept.append(i)
            best = values[i]
    return _Options(
        [counts[i] for i in kept],
        np.array([costs[i] for i in kept]),
        np.array([values[i] for i in kept]),
    )


def _knapsack(
    options: list[_Options], layers_budget: float, budget: float, cost: CostModel
) -> list[tuple[int, int]]:
    """One (heads, width) per layer maximising the total value, costs (rounded up to bins of
    layers_budget / BINS) within the budget."""
    cheapest = cost.fixed + sum(float(o.costs[0]) for o in options)
    if layers_budget <= 0 or cheapest > budget:
        raise ConfigError(
            f"the budget of {_amount(budget, cost.unit)} is below the cheapest model these "
            f"widths allow ({_amount(cheapest, cost.unit)}, of which "
            f"{_amount(cost.fixed, cost.unit)} is the fixed cost): choose a smaller target"
        )
    step = layers_budget / BINS
    best = np.zeros(BINS + 1)  # best[b]: the best value of the layers so far within b bins
    choices = []
    for layer in options:
        bins = np.ceil(layer.costs / step).astype(int)
        new = np.full(BINS + 1, -np.inf)
        choice = np.full(BINS + 1, -1)
        for k, (c, v) in enumerate(zip(bins, layer.values, strict=True)):
            if c > BINS:
                break  # ascending costs: every later option is dearer still
            candidate = best[: BINS + 1 - c] + v
            better = candidate > new[c:]
            new[c:][better] = candidate[better]
            choice[c:][better] = k
        best = new
        choices.append((choice, bins))
    if not np.isfinite(best[BINS]):  # only the cheapest fits, and only without rounding
        return [o.counts[0] for o in options]
    counts, b = [], BINS
    for layer, (choice, bins) in zip(reversed(options), reversed(choices), strict=True):
        k = int(choice[b])
        counts.append(layer.counts[k])
        b -= int(bins[k])
    return counts[::-1]


def _check_something_kept(
    counts: list[tuple[int, int]],
    head_values: list[np.ndarray],
    ffn_values: list[np.ndarray],
    budget: float,
    unit: str,
) -> None:
    """A budget met only by removing every head, or every FFN neuron, of a model that had
    some is a target too far (MACs have no fixed cost to stop it), not a request."""
    for position, kind, values in (
        (0, "attention head", head_values),
        (1, "FFN neuron", ffn_values),
    ):
        had = sum(len(v) - 1 for v in values)
        if had and not sum(c[position] for c in counts):
            raise ConfigError(
                f"a budget of {_amount(budget, unit)} leaves the model no {kind}: "
                "choose a smaller target"
            )


def _amount(value: float, unit: str) -> str:
    return f"{value:.2f} ms" if unit == "ms" else f"{value / 1e6:,.1f}M {unit}"


def model_shape(model: Any) -> ModelShape:
    """The dense shape of `model` (pruned or not), as its config states it."""
    adapter = get_adapter(model)
    config = model.config
    layers, heads, head_dim, ffn = type(adapter).config_shape(config)
    return ModelShape(
        model_type=str(config.model_type),
        architecture=type(model).__name__,
        layers=layers,
        hidden=adapter.hidden_size(),
        heads=heads,
        head_dim=head_dim,
        ffn=ffn,
        vocab_size=int(config.vocab_size),
    )


def macs_model(model: nn.Module, seq_len: int) -> MacsModel:
    """The MACs cost model of `model`'s dense shape."""
    return MacsModel(model_shape(model), seq_len)


def check_target_options(options: dict[str, Any], target: TargetOptions) -> None:
    """A target chooses the widths: ratios given beside it would be ignored, so refuse them,
    and the scopes too unless the target's shape is ratios (which ranks within them)."""
    ignored: tuple[str, ...] = ("heads_ratio", "ffn_ratio")
    if target.shape != "ratios":
        ignored += ("heads_scope", "ffn_scope")
    given = [name for name in ignored if name in options]
    if given:
        flags = ", ".join("--" + name.replace("_", "-") for name in given)
        chooses = "one ratio" if target.shape == "ratios" else "the widths of every layer"
        raise ConfigError(f"a target chooses {chooses}: drop {flags}")


def target_record(
    options: TargetOptions,
    choice: WidthChoice,
    given: nn.Module | None,
    pruned: nn.Module,
    seconds: dict[str, float],
) -> dict[str, Any]:
    """What report.json says about a target: the request, the choice and its prediction,
    and, for latency targets with `verify` (`given`: the model before pruning), the speed-up
    measured on the deployed graphs, its wall-clock added to `seconds["verify"]`."""
    record = options.to_dict() | choice.to_dict() | {"measured": None}
    if options.timed and given is not None:
        from compresskit.exporters.latency import measure_speedup

        start = time.perf_counter()
        setting = options.setting
        record["measured"] = measure_speedup(
            given, pruned, setting, before_setting=setting.in_float32()
        )
        seconds["verify"] = round(time.perf_counter() - start, 4)
    return record


def target_summary(record: dict[str, Any]) -> str:
    """One line: the target, the prediction, the measurement, the shape when ratios and,
    when fisher's gradients chose the widths, the loss estimate of the choice against the
    knapsack's."""
    setting = LatencySetting(**record["setting"])
    kind, value = record["kind"], record["value"]
    asked = Target(kind, value).describe()
    where = "encoder MACs" if kind == "macs" else setting.describe()
    unit = record["unit"]
    amounts = f"{_amount(record['before'], unit)} -> {_amount(record['predicted'], unit)}"
    line = f"target {asked} ({where}): predicted {record['predicted_ratio']:.2f}x ({amounts})"
    measured = record.get("measured")
    if measured:
        line += (
            f", measured {measured['speedup']:.2f}x ({measured['before_ms']:.2f} -> "
            f"{measured['after_ms']:.2f} ms, interleaved medians of {measured['runs']} runs)"
        )
    if record.get("shape", "layers") == "ratios":  # reports before the shape existed: layers
        line += "; widths: a heads ratio and an FFN ratio (--target-shape layers: every layer's)"
    searched = record.get("interactions")
    if searched:
        line += (
            f"; widths by the whole Fisher: loss estimate {searched['fisher_loss_chosen']:.4g} "
            f"(the knapsack's {searched['fisher_loss_knapsack']:.4g})"
        )
    return line
