"""Assertions shared by test modules."""

from __future__ import annotations

import copy

import torch
from torch import nn

import compresskit
from compresskit.plan import PruningPlan


def outputs(model: nn.Module, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        out = model(**inputs)
    return {k: v for k, v in out.items() if isinstance(v, torch.Tensor)}


def max_diff_at_tokens(
    a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], attention_mask: torch.Tensor
) -> float:
    """Largest difference over real (non-padding) positions. Outputs at padded positions
    are meaningless and, in float32, differ by rounding noise even between two runs of
    mathematically identical models (see test_pruner's float64 test)."""
    assert a.keys() == b.keys()
    worst = 0.0
    keep = attention_mask.bool()
    for key in a:
        x, y = a[key], b[key]
        assert x.shape == y.shape, key
        if x.dim() >= 2 and x.shape[:2] == keep.shape:
            x, y = x[keep], y[keep]
        worst = max(worst, (x - y).abs().max().item() if x.numel() else 0.0)
    return worst


def assert_pruned_equals_masked(
    model: nn.Module, plan: PruningPlan, inputs: dict[str, torch.Tensor], atol: float = 1e-5
) -> nn.Module:
    """Prune a copy of `model` with `plan` and check it computes what the masked model does."""
    masked = compresskit.mask(copy.deepcopy(model), plan)
    pruned = compresskit.prune(copy.deepcopy(model), plan)
    diff = max_diff_at_tokens(
        outputs(masked, inputs), outputs(pruned, inputs), inputs["attention_mask"]
    )
    assert diff <= atol, f"pruned differs from masked by {diff:.3g} (> {atol})"
    return pruned
