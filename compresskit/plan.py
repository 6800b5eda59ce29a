"""PruningPlan: for every layer, the original indices of the heads and FFN neurons kept.

Indices always refer to the *dense* model's heads and neurons, so a plan means the same thing
before and after any earlier pruning, and plans compose: pruning with a plan whose indices are
a subset of what the model still has removes exactly the difference.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from compresskit._json import dumps
from compresskit.arch import get_adapter
from compresskit.errors import PlanError

PLAN_FORMAT = "compresskit.plan"
PLAN_VERSION = 1

Scope = Literal["layer", "global"]


@dataclass(frozen=True)
class LayerPlan:
    heads_kept: tuple[int, ...]
    ffn_kept: tuple[int, ...]

    def __post_init__(self) -> None:
        for name in ("heads_kept", "ffn_kept"):
            values = getattr(self, name)
            if not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
                raise PlanError(f"{name} must hold integers, got {list(values)!r}")
            if list(values) != sorted(set(values)):
                raise PlanError(f"{name} must be sorted and unique, got {list(values)!r}")
            if values and values[0] < 0:
                raise PlanError(f"{name} has a negative index {values[0]}")


@dataclass(frozen=True)
class PruningPlan:
    layers: tuple[LayerPlan, ...]

    # --- construction -------------------------------------------------------------------
    @classmethod
    def from_lists(
        cls, heads_kept: Sequence[Sequence[int]], ffn_kept: Sequence[Sequence[int]]
    ) -> PruningPlan:
        if len(heads_kept) != len(ffn_kept):
            raise PlanError(
                f"{len(heads_kept)} head lists but {len(ffn_kept)} FFN lists: "
                "give one of each per layer"
            )
        return cls(
            tuple(LayerPlan(tuple(h), tuple(f)) for h, f in zip(heads_kept, ffn_kept, strict=True))
        )

    @classmethod
    def of_model(cls, model: nn.Module) -> PruningPlan:
        """The plan that describes `model` as it is now (the full ranges for a dense model)."""
        adapter = get_adapter(model)
        return cls(tuple(kept_in_layer(adapter, layer) for layer in adapter.layers()))

    # --- (de)serialisation --------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "format": PLAN_FORMAT,
            "version": PLAN_VERSION,
            "layers": [
                {"heads_kept": list(lp.heads_kept), "ffn_kept": list(lp.ffn_kept)}
                for lp in self.layers
            ],
        }

    @classmethod
    def from_dict(cls, data: Any) -> PruningPlan:
        if not isinstance(data, dict) or not isinstance(data.get("layers"), list):
            raise PlanError(
                "a plan is an object with a 'layers' list of "
                "{'heads_kept': [...], 'ffn_kept': [...]}"
            )
        if data.get("version", PLAN_VERSION) != PLAN_VERSION:
            raise PlanError(
                f"plan version {data.get('version')!r} is not supported "
                f"(this compresskit reads version {PLAN_VERSION})"
            )
        layers = []
        for i, entry in enumerate(data["layers"]):
            if not isinstance(entry, dict) or not {"heads_kept", "ffn_kept"} <= entry.keys():
                raise PlanError(f"layer {i} of the plan needs 'heads_kept' and 'ffn_kept' lists")
            heads, ffn = entry["heads_kept"], entry["ffn_kept"]
            if not isinstance(heads, list) or not isinstance(ffn, list):
                raise PlanError(f"layer {i}: 'heads_kept' and 'ffn_kept' must be lists")
            try:
                layers.append(LayerPlan(tuple(heads), tuple(ffn)))
            except PlanError as err:
                raise PlanError(f"layer {i}: {err}") from None
        return cls(tuple(layers))

    def to_json(self, path: str | Path | None = None) -> str:
        text = dumps(self.to_dict())
        if path is not None:
            Path(path).write_text(text + "\n", encoding="utf-8")
        return text

    @classmethod
    def from_json(cls, text_or_path: str | Path) -> PruningPlan:
        """Read a plan from a JSON string or a file path."""
        text = str(text_or_path)
        if not text.lstrip().startswith("{"):
            path = Path(text_or_path)
            try:
                text = path.read_text(encoding="utf-8")
            except (OSError, ValueError) as err:  # ValueError: not UTF-8, or a NUL in the name
                raise PlanError(f"cannot read plan file {path}: {_reason(err)}") from None
        try:
            data = json.loads(text)
        except (ValueError, RecursionError) as err:  # also too deeply nested, or huge numbers
            raise PlanError(f"plan is not valid JSON: {_reason(err)}") from None
        return cls.from_dict(data)

    # --- checks and algebra -------------------------------------------------------------
    def validate(self, model: nn.Module) -> None:
        """Raise PlanError unless this plan can be applied to `model` as it is now."""
        current = PruningPlan.of_model(model)
        if len(self.layers) != len(current.layers):
            raise PlanError(
                f"the plan has {len(self.layers)} layers but the model has {len(current.layers)}"
            )
        for i, (want, have) in enumerate(zip(self.layers, current.layers, strict=True)):
            for kind, wanted, present in (
                ("heads", want.heads_kept, have.heads_kept),
                ("FFN neurons", want.ffn_kept, have.ffn_kept),
            ):
                missing = sorted(set(wanted) - set(present))
                if missing:
                    raise PlanError(
                        f"layer {i}: the plan keeps {kind} {missing[:8]} that the model does "
                        f"not have (it has {_span(present)}); indices are the dense model's"
                    )

    def intersect(self, other: PruningPlan) -> PruningPlan:
        """Keep only what both plans keep: e.g. heads chosen by one strategy, FFN by another."""
        if len(self.layers) != len(other.layers):
            raise PlanError(
                f"cannot combine plans of {len(self.layers)} and {len(other.layers)} layers"
            )
        return PruningPlan(
            tuple(
                LayerPlan(
                    tuple(sorted(set(a.heads_kept) & set(b.heads_kept))),
                    tuple(sorted(set(a.ffn_kept) & set(b.ffn_kept))),
                )
                for a, b in zip(self.layers, other.layers, strict=True)
            )
        )

    @property
    def heads_per_layer(self) -> list[int]:
        return [len(lp.heads_kept) for lp in self.layers]

    @property
    def ffn_per_layer(self) -> list[int]:
        return [len(lp.ffn_kept) for lp in self.layers]


def _reason(err: BaseException) -> str:
    return str(getattr(err, "strerror", None) or err).splitlines()[0][:200] or type(err).__name__


def _span(indices: Sequence[int]) -> str:
    if not indices:
        return "none"
    if list(indices) == list(range(indices[0], indices[-1] + 1)):
        return f"{indices[0]}..{indices[-1]}"
    return f"{len(indices)} of them"


# The original indices a pruned layer still holds are kept on the layer module itself, so they
# follow the module wherever it goes (deepcopy, a sub-model) and need no side table.
_KEPT_ATTR = "compresskit_kept"


def kept_in_layer(adapter: Any, layer: nn.Module) -> LayerPlan:
    recorded = getattr(layer, _KEPT_ATTR, None)
    if recorded is not None:
        return recorded
    return LayerPlan(tuple(range(adapter.num_heads(layer))), tuple(range(adapter.ffn_width(layer))))


def positions_dropped(have: Sequence[int], want: Sequence[int]) -> list[int]:
    """Positions (into a layer as it is now, holding original units `have`) of the units
    that `want` no longer keeps."""
    keep = set(want)
    return [pos for pos, original in enumerate(have) if original not in keep]


def record_kept(layer: nn.Module, kept: LayerPlan) -> None:
    object.__setattr__(layer, _KEPT_ATTR, kept)


# --- from scores to plans ---------------------------------------------------------------------
def keep_by_score(
    scores: Sequence[torch.Tensor],
    ratio: float,
    *,
    scope: Scope = "layer",
    round_to: int = 1,
    min_kept: int = 0,
    name: str = "ratio",
    unit: str = "units",
) -> list[list[int]]:
    """Choose, per layer, the positions to keep: remove the `ratio` lowest-scored units.

    Args:
        scores: one 1-D tensor per layer, a score per unit present in that layer.
        ratio: fraction of the units present to remove, in [0, 1).
        scope: rank within each layer ("layer") or across all layers ("global").
        round_to: make each layer's kept count a multiple of this (nearest multiple, ties up);
            a count above zero never rounds down to zero, and never above what the layer has.
        min_kept: keep at least this many units in every layer (if it has them).
        name, unit: what errors call the ratio and the units ("heads_ratio", "heads").

    Returns:
        Per layer, the sorted positions kept (positions into `scores[i]`). Ties in score are
        broken by position, lower positions kept first, so results are deterministic.
    """
    if not 0.0 <= ratio < 1.0:
        raise PlanError(f"{name} {ratio} is outside [0, 1): it is the fraction to remove")
    if round_to < 1 or min_kept < 0:
        raise PlanError("round_to must be >= 1 and min_kept >= 0")
    sizes = [int(s.numel()) for s in scores]
    if scope == "layer":
        counts = [n - _round_half_up(ratio * n) for n in sizes]
    elif scope == "global":
        counts = _global_keep_counts(scores, ratio)
    else:
        raise PlanError(f"scope must be 'layer' or 'global', got {scope!r}")
    counts = [_adjust_count(c, n, round_to, min_kept) for c, n in zip(counts, sizes, strict=True)]
    _check_something_kept(f"{name} {ratio:g}", unit, scope, sizes, counts)
    return [top_positions(s, c) for s, c in zip(scores, counts, strict=True)]


def _check_something_kept(
    ratio: str, unit: str, scope: Scope, sizes: list[int], counts: list[int]
) -> None:
    """A ratio below 1 that rounds to removing every unit of every layer is a mistake (a
    model without any attention head, or without any FFN neuron), not a request."""
    if sum(counts) > 0 or sum(sizes) == 0:
        return
    # Rounding half up removes all n units of a group once ratio * n >= n - 0.5.
    n = max(sizes) if scope == "layer" else sum(sizes)
    raise PlanError(
        f"{ratio} removes all {sum(sizes)} {unit}, leaving the model none: "
        f"use a ratio below {1 - 0.5 / n:.4g} to keep at least one"
    )


def _round_half_up(x: float) -> int:
    # Plain round() rounds half to even; a 1e-9 slack absorbs ratios like 0.3333 * 12.
    return math.floor(x + 0.5 + 1e-9)


def _global_keep_counts(scores: Sequence[torch.Tensor], ratio: float) -> list[int]:
    flat = (
        torch.cat([s.detach().flatten().double().cpu() for s in scores])
        if scores
        else (torch.zeros(0, dtype=torch.float64))
    )
    n_remove = _round_half_up(ratio * flat.numel())
    layer_of = (
        torch.cat([torch.full((int(s.numel()),), i) for i, s in enumerate(scores)])
        if scores
        else torch.zeros(0, dtype=torch.long)
    )
    order = _stable_ascending(flat)
    removed = layer_of[order[:n_remove]]
    return [int(s.numel()) - int((removed == i).sum()) for i, s in enumerate(scores)]


def _adjust_count(count: int, size: int, round_to: int, min_kept: int) -> int:
    if round_to > 1 and count > 0:
        count = min(size, round_to * max(1, _round_half_up(count / round_to)))
    return min(size, max(count, min_kept))


def _stable_ascending(values: torch.Tensor) -> torch.Tensor:
    """Indices sorting ascending; among equal values the higher position comes first, so the
    lower position is the one kept."""
    reversed_order = torch.sort(values.flip(0), stable=True).indices
    return values.numel() - 1 - reversed_order


def removal_order(scores: torch.Tensor) -> list[int]:
    """Positions in the order they go: keeping `count` units keeps all but the first
    n − count (`top_positions`)."""
    return [int(i) for i in _stable_ascending(scores.detach().flatten().double().cpu())]


def top_positions(scores: torch.Tensor, count: int) -> list[int]:
    order = removal_order(scores)
    return sorted(order[len(order) - count :] if count else [])


def plan_from_scores(
    model: nn.Module,
    head_scores: Sequence[torch.Tensor],
    ffn_scores: Sequence[torch.Tensor],
    *,
    heads_ratio: float,
    ffn_ratio: float,
    heads_scope: Scope = "layer",
    ffn_scope: Scope = "global",
    round_to: int = 1,
    min_heads: int = 0,
    min_ffn: int = 0,
) -> PruningPlan:
    """Turn per-head and per-neuron scores of `model` (as it is now) into a plan.

    Ratios are fractions of the units the model has now; `round_to` applies to FFN widths.
    The plan is in original (dense) indices, ready for `compresskit.prune`.
    """
    current = PruningPlan.of_model(model)
    _check_score_shapes("head", head_scores, current.heads_per_layer)
    _check_score_shapes("FFN", ffn_scores, current.ffn_per_layer)
    heads_pos = keep_by_score(
        head_scores,
        heads_ratio,
        scope=heads_scope,
        min_kept=min_heads,
        name="heads_ratio",
        unit="heads",
    )
    ffn_pos = keep_by_score(
        ffn_scores,
        ffn_ratio,
        scope=ffn_scope,
        round_to=round_to,
        min_kept=min_ffn,
        name="ffn_ratio",
        unit="FFN neurons",
    )
    return PruningPlan(
        tuple(
            LayerPlan(tuple(lp.heads_kept[p] for p in hp), tuple(lp.ffn_kept[p] for p in fp))
            for lp, hp, fp in zip(current.layers, heads_pos, ffn_pos, strict=True)
        )
    )


def _check_score_shapes(kind: str, scores: Sequence[torch.Tensor], expected: list[int]) -> None:
    got = [int(s.numel()) for s in scores]
    if got != expected:
        raise PlanError(f"{kind} scores have sizes {got} but the model has {expected} per layer")
