"""Widths for a budget that count what units cost when removed together, from the
per-example gate gradients fisher scored with (`Scores.example_gradients`).

The knapsack (compresskit/target.py) adds up units' scores as if each removal cost the same
beside the others as alone: the diagonal of the empirical Fisher. Removing a set R of units
(gates 1 → 0) costs, to second order around a trained model,

    ΔL(R) ≈ ½ · 1_Rᵀ F 1_R = ½ · mean_n s_n²,    s_n = Σ_{u ∈ R} ∂loss_n/∂g_u,

with the whole empirical Fisher F = mean_n ∇loss_n ∇loss_nᵀ (over the gates), not its
diagonal: units whose gradients point the same way on the same examples cost more together
than apart. F is never formed: s is a vector over the examples scored, and a layer's removed
units add r_l(h, f) to it, the running sum of its units' gradients in the order the scores
remove them (heads and neurons alike). Changing one layer's widths changes s by
D = r_l(new) − r_l(old) and ΔL by mean(s·D) + ½·mean(D²); changing two layers a, b at once
by the sum of both plus mean(D_a·D_b).

Where ΔL is least sure — a layer's heads all removed, or all its FFN neurons — fisher also
measures the loss (`ExampleGradients.heads_removed_loss`, `ffn_removed_loss`: forward passes
on the same examples with the layer's gates off), and a state that removes one of them costs
ΔL plus what the measurement exceeds ΔL's estimate of that removal alone (never less: a
removal that measured cheaper keeps its estimate). Measured on MiniLM fine-tuned on SST-2,
the last layer's attention cost +0.34 in held-out loss, estimated 0.017: it alone carries
[CLS] to the classifier, far from where a second-order expansion holds.

Measured on MiniLM fine-tuned on SST-2 (docs/latency-target.md, benchmarks/width_choice.py,
no retraining): at all seven targets tried, the search's widths had the lowest held-out loss,
and ΔL ranked them first; the diagonal's knapsack was no better than uniform ratios at the
same predicted speed, and at 3x removed the last layer's attention (chance accuracy).

The search starts from the knapsack's widths and from uniform widths (the largest fraction
of every layer's heads and of its FFN width that fits), and from each repeatedly makes the
change of one layer's widths, or of two layers' together (one giving latency to the other),
that lowers ΔL most while the predicted cost stays within the budget, until no change does.
Changes are one head or one FFN step (`round_to`) either way, both at once, and a layer's
heads (FFN) all removed. ΔL falls at every step and states are finite, so it ends; the end
with the lower ΔL is chosen. Which units a layer keeps is the scores' order, as without it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from compresskit.latency import CostModel
from compresskit.plan import PruningPlan, removal_order
from compresskit.strategies.base import ExampleGradients

Counts = list[tuple[int, int]]  # per layer: (heads kept, FFN neurons kept)
TOLERANCE = 1e-12  # relative: a change must lower ΔL by more than this to be taken


@dataclass(frozen=True)
class _Layer:
    """One layer's removed-gradient sums and costs, indexed by heads kept and by the
    position of the FFN width in `widths`."""

    removed_by_heads: np.ndarray  # (examples, heads + 1): column h = units gone keeping h
    removed_by_ffn: np.ndarray  # (examples, width + 1)
    widths: list[int]  # the FFN widths allowed, ascending
    costs: np.ndarray  # (heads + 1, len(widths))
    # What removing all heads (all FFN neurons) measurably costs beyond ΔL's estimate of it.
    heads_excess: float = 0.0
    ffn_excess: float = 0.0

    def removed(self, heads: int, width_index: int) -> np.ndarray:
        return self.removed_by_heads[:, heads] + self.removed_by_ffn[:, self.widths[width_index]]

    def excess(self, heads: int, width_index: int) -> float:
        """The measured removals' excess this layer's widths incur."""
        return (heads == 0) * self.heads_excess + (self.widths[width_index] == 0) * self.ffn_excess

    def neighbours(self, heads: int, width_index: int) -> list[tuple[int, int]]:
        """The changes the search tries from (heads, width position)."""
        top_heads, top_width = self.costs.shape[0] - 1, len(self.widths) - 1
        steps = {
            (heads + dh, width_index + dw)
            for dh in (-1, 0, 1)
            for dw in (-1, 0, 1)
            if 0 <= heads + dh <= top_heads and 0 <= width_index + dw <= top_width
        }
        steps |= {(0, width_index), (heads, 0)}
        steps.discard((heads, width_index))
        return sorted(steps)


def _layer(
    head_grads: torch.Tensor,
    ffn_grads: torch.Tensor,
    head_scores: torch.Tensor,
    ffn_scores: torch.Tensor,
    widths: list[int],
    cost: CostModel,
    removal_losses: tuple[float, float] | None,
) -> _Layer:
    def removed_sums(grads: torch.Tensor, scores: torch.Tensor) -> np.ndarray:
        g = grads.double().cpu().numpy()  # (examples, units)
        order = removal_order(scores)
        # column k: the k first units to go; keeping c units removes the first n - c.
        running = np.concatenate([np.zeros((g.shape[0], 1)), np.cumsum(g[:, order], axis=1)], 1)
        return running[:, ::-1]  # column c: keeping c units

    heads = int(head_scores.numel())
    costs = np.array([[cost.layer(h, f) for f in widths] for h in range(heads + 1)])
    by_heads = removed_sums(head_grads, head_scores)
    by_ffn = removed_sums(ffn_grads, ffn_scores)
    heads_removed, ffn_removed = removal_losses or (None, None)
    return _Layer(
        by_heads,
        by_ffn,
        widths,
        costs,
        _excess(by_heads[:, 0], heads_removed),
        _excess(by_ffn[:, 0], ffn_removed),
    )


def _excess(all_removed: np.ndarray, measured: float | None) -> float:
    """What removing all of a layer's heads (or FFN neurons) was measured to cost beyond
    ΔL's estimate of that removal alone, ½ mean_n s_n² with s_n the sum of all their
    gradients (`all_removed`, shape (examples,)); 0 when it cost less or was not measured."""
    return 0.0 if measured is None else max(0.0, measured - _half_mean_square(all_removed))


def _half_mean_square(s: np.ndarray) -> float:
    return 0.5 * float(np.mean(np.square(s))) if s.size else 0.0


def _removed(layers: list[_Layer], state: list[tuple[int, int]]) -> np.ndarray:
    """s: per example, the gradients of every unit `state` removes (per layer: heads kept,
    FFN width position), summed."""
    return np.sum([layer.removed(h, w) for layer, (h, w) in zip(layers, state, strict=True)], 0)


def fisher_loss(layers: list[_Layer], state: list[tuple[int, int]]) -> float:
    """ΔL = ½ mean_n s_n² of the units removed in `state`, plus the measured excess of the
    whole-layer removals among them."""
    return _half_mean_square(_removed(layers, state)) + sum(
        layer.excess(h, w) for layer, (h, w) in zip(layers, state, strict=True)
    )


def _descend(
    layers: list[_Layer], state: list[tuple[int, int]], room: float
) -> list[tuple[int, int]]:
    """From `state` (within budget: `room` is the budget left to the layers), the best change
    of one or two layers' widths, again and again, until none lowers ΔL."""
    state = list(state)
    while True:
        s = _removed(layers, state)
        spent = sum(float(layer.costs[h, w]) for layer, (h, w) in zip(layers, state, strict=True))
        n = float(s.shape[0])
        owners, moves, deltas, extra, excess = [], [], [], [], []
        for index, (layer, (h, w)) in enumerate(zip(layers, state, strict=True)):
            for move in layer.neighbours(h, w):
                owners.append(index)
                moves.append(move)
                deltas.append(layer.removed(*move) - layer.removed(h, w))
                extra.append(float(layer.costs[move] - layer.costs[h, w]))
                excess.append(layer.excess(*move) - layer.excess(h, w))
        if not moves:
            return state
        d = np.stack(deltas)  # (moves, examples)
        cost_change = np.array(extra)
        # ΔL of each move alone (the excess is per layer, so pairs add it like the rest).
        alone = (d @ s) / n + 0.5 * np.einsum("ij,ij->i", d, d) / n + np.array(excess)
        together = alone[:, None] + alone[None, :] + (d @ d.T) / n
        owner = np.array(owners)
        fits = cost_change[:, None] + cost_change[None, :] <= room - spent
        fits &= owner[:, None] != owner[None, :]  # two changes of one layer are not a state
        np.fill_diagonal(fits, cost_change <= room - spent)  # the diagonal: a move alone
        np.fill_diagonal(together, alone)
        together = np.where(fits, together, np.inf)
        first, second = np.unravel_index(int(np.argmin(together)), together.shape)
        current = fisher_loss(layers, state)
        if not together[first, second] < -TOLERANCE * max(current, 1e-30):
            return state
        for k in {int(first), int(second)}:
            state[owners[k]] = moves[k]


def uniform_state(layers: list[_Layer], room: float) -> list[tuple[int, int]]:
    """One fraction p of every layer's heads (rounded) and FFN width (the widest allowed not
    above p·width), the largest p on a 1/1000 grid whose layers fit in `room`."""
    best = [(0, 0)] * len(layers)
    for p in np.linspace(0.0, 1.0, 1001):
        state = []
        for layer in layers:
            heads = round(p * (layer.costs.shape[0] - 1))
            target = p * layer.widths[-1]
            state.append((heads, max(i for i, f in enumerate(layer.widths) if f <= target + 1e-9)))
        if sum(float(layer.costs[st]) for layer, st in zip(layers, state, strict=True)) <= room:
            best = state
    return best


def lowest_fisher_loss(
    knapsack: Counts,
    gradients: ExampleGradients,
    head_scores: list[torch.Tensor],
    ffn_scores: list[torch.Tensor],
    widths: list[list[int]],
    cost: CostModel,
    budget: float,
) -> tuple[Counts, dict[str, Any]]:
    """The widths the search (module docstring) ends at, and a record of it: ΔL of the
    knapsack's widths and of the chosen ones, and which start led there.

    Args:
        knapsack: the knapsack's widths, within budget; its FFN widths are in `widths`.
        widths: per layer, the FFN widths allowed, ascending, from 0 to the layer's width.
    """
    layers = [
        _layer(hg, fg, hs, fs, w, cost, removal)
        for hg, fg, hs, fs, w, removal in zip(
            gradients.heads,
            gradients.ffn,
            head_scores,
            ffn_scores,
            widths,
            _removal_losses(gradients),
            strict=True,
        )
    ]
    room = budget - cost.fixed
    chosen_by_knapsack = [
        (h, layer.widths.index(f)) for layer, (h, f) in zip(layers, knapsack, strict=True)
    ]
    starts = {
        "knapsack": chosen_by_knapsack,
        "uniform": uniform_state(layers, room),
    }
    ends = {name: _descend(layers, state, room) for name, state in starts.items()}
    chosen = min(ends, key=lambda name: fisher_loss(layers, ends[name]))
    counts = [(h, layer.widths[w]) for layer, (h, w) in zip(layers, ends[chosen], strict=True)]
    record = {
        "start": chosen,
        "fisher_loss_knapsack": fisher_loss(layers, starts["knapsack"]),
        "fisher_loss_uniform": fisher_loss(layers, starts["uniform"]),
        "fisher_loss_chosen": fisher_loss(layers, ends[chosen]),
        "examples": int(gradients.heads[0].shape[0]) if gradients.heads else 0,
        "measured_excess": {
            "heads": [layer.heads_excess for layer in layers],
            "ffn": [layer.ffn_excess for layer in layers],
        },
    }
    return counts, record


def _removal_losses(gradients: ExampleGradients) -> list[tuple[float, float] | None]:
    """Per layer, the measured loss of removing all its heads and of all its FFN neurons,
    where the gradients carry them."""
    heads, ffn = gradients.heads_removed_loss, gradients.ffn_removed_loss
    if heads is None or ffn is None:
        return [None] * len(gradients.heads)
    return list(zip(heads, ffn, strict=True))


def plan_fisher_loss(plan: PruningPlan, gradients: ExampleGradients) -> float:
    """ΔL of any plan of the model the gradients were taken on (its units in original
    indices), e.g. to compare widths chosen otherwise."""
    s = np.zeros(gradients.heads[0].shape[0] if gradients.heads else 0)
    excess = 0.0
    for layer, heads, ffn, measured in zip(
        plan.layers, gradients.heads, gradients.ffn, _removal_losses(gradients), strict=True
    ):
        for kind, (grads, kept) in enumerate(((heads, layer.heads_kept), (ffn, layer.ffn_kept))):
            g = grads.double().cpu().numpy()
            gone = np.ones(g.shape[1], dtype=bool)
            gone[list(kept)] = False
            s += g[:, gone].sum(1)
            if not kept and measured is not None:
                excess += _excess(g.sum(1), measured[kind])
    return _half_mean_square(s) + excess
