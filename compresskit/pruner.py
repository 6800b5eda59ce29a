"""Apply a PruningPlan: physically remove heads and FFN neurons with torch-pruning's
dependency graph. This is the only module that imports torch_pruning.

Why explicit index groups (see docs/library-pitfalls.md): torch-pruning's high-level pruners
overshoot iterative head pruning, skip heads when the width ratio is 0 and share one ranking
between heads and FFN. Building the graph once and pruning explicit channel lists is exact:
removing head h means removing input channels h*d .. h*d+d-1 of the output projection, and the
graph carries that to the same rows of query, key and value.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
import torch_pruning as tp
from torch import nn

from compresskit.arch import ArchAdapter, get_adapter
from compresskit.errors import PlanError
from compresskit.plan import (
    LayerPlan,
    PruningPlan,
    kept_in_layer,
    positions_dropped,
    record_kept,
)


def prune(model: nn.Module, plan: PruningPlan) -> nn.Module:
    """Remove from `model`, in place, every head and FFN neuron that `plan` does not keep.

    The result computes exactly what the unpruned model computes with those heads and neurons
    masked. Returns the same model object, for chaining.
    """
    adapter = get_adapter(model)
    plan.validate(model)
    _refuse_hooked_projections(adapter)
    layers = adapter.layers()
    current = [kept_in_layer(adapter, layer) for layer in layers]
    if all(c == p for c, p in zip(current, plan.layers, strict=True)):
        return model
    graph = _build_graph(model)
    for layer, have, want in zip(layers, current, plan.layers, strict=True):
        _prune_layer(graph, adapter, layer, have, want)
        record_kept(layer, want)
        _check_layer(adapter, layer, want)
    return model


def _prune_layer(
    graph: tp.DependencyGraph,
    adapter: ArchAdapter,
    layer: nn.Module,
    have: LayerPlan,
    want: LayerPlan,
) -> None:
    head_dim = adapter.head_dim(layer)
    drop_heads = positions_dropped(have.heads_kept, want.heads_kept)
    if drop_heads:
        channels = [h * head_dim + j for h in drop_heads for j in range(head_dim)]
        _prune_inputs(graph, adapter.attention_parts(layer).output, channels)
    adapter.set_head_count(layer, len(want.heads_kept))
    if not want.heads_kept:
        adapter.make_headless(layer)
    drop_ffn = positions_dropped(have.ffn_kept, want.ffn_kept)
    if drop_ffn:
        _prune_inputs(graph, adapter.ffn_parts(layer).down, drop_ffn)


def _prune_inputs(graph: tp.DependencyGraph, linear: nn.Linear, channels: list[int]) -> None:
    group = graph.get_pruning_group(linear, tp.prune_linear_in_channels, idxs=channels)
    group.prune()


def _check_layer(adapter: ArchAdapter, layer: nn.Module, want: LayerPlan) -> None:
    # A per-head gate left in the graph makes torch-pruning skip the weights while the head
    # count still drops (docs/library-pitfalls.md); refuse to hand back a model whose shapes
    # disagree.
    parts = adapter.attention_parts(layer)
    width = len(want.heads_kept) * adapter.head_dim(layer)
    ffn = adapter.ffn_parts(layer)
    shapes = (
        parts.query.out_features,
        parts.key.out_features,
        parts.value.out_features,
        parts.output.in_features,
        ffn.up.out_features,
        ffn.down.in_features,
    )
    expected = (width, width, width, width, len(want.ffn_kept), len(want.ffn_kept))
    if shapes != expected:
        raise PlanError(
            f"pruning produced shapes {shapes} instead of {expected}: is something "
            "(a gate, a hook, a wrapper) coupled to this layer's projections? Remove it and retry"
        )


def _refuse_hooked_projections(adapter: ArchAdapter) -> None:
    # Hooks on the projections (slimming coefficients, Taylor gates) are sized for the dense
    # shapes: a pruned model would fail on its next forward. Refuse before changing anything.
    for i, layer in enumerate(adapter.layers()):
        attn, ffn = adapter.attention_parts(layer), adapter.ffn_parts(layer)
        for linear in (attn.query, attn.key, attn.value, attn.output, ffn.up, ffn.down):
            if linear._forward_pre_hooks or linear._forward_hooks:
                raise PlanError(
                    f"layer {i} has hooks on its projections (slimming "
                    "coefficients or gates still attached?): detach them before "
                    "pruning"
                )


def _build_graph(model: nn.Module) -> tp.DependencyGraph:
    with _traceable(model):
        return tp.DependencyGraph().build_dependency(model, example_inputs=_example_inputs(model))


def _example_inputs(model: nn.Module) -> dict[str, torch.Tensor]:
    device = next(model.parameters()).device
    vocab = int(getattr(model.config, "vocab_size", 2))
    # (1, 8): any short sequence traces the same graph; ids are kept clear of special tokens.
    input_ids = torch.arange(8, device=device).unsqueeze(0) % max(vocab, 1)
    return {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)}


@contextlib.contextmanager
def _traceable(model: nn.Module) -> Iterator[None]:
    """Eval mode, eager attention and gradients on, so that the autograd trace that
    torch-pruning reads shows every matmul; everything is restored afterwards."""
    was_training = model.training
    attn = getattr(model.config, "_attn_implementation", None)
    frozen = [p for p in model.parameters() if not p.requires_grad]
    try:
        model.eval()
        if attn not in (None, "eager"):
            _set_attention(model, "eager")
        for p in frozen:
            p.requires_grad_(True)
        with torch.enable_grad():
            yield
    finally:
        for p in frozen:
            p.requires_grad_(False)
        if attn not in (None, "eager"):
            _set_attention(model, attn)
        model.train(was_training)


def _set_attention(model: Any, implementation: str) -> None:
    model.set_attn_implementation(implementation)
