"""Widths chosen with the whole empirical Fisher (compresskit/interactions.py): fisher hands
the per-example gradients its scores are summed from; the search stays within the budget,
ends no worse than either start, reports the ΔL its docstring defines, and removes together
units whose removals cancel, where the diagonal would not; a whole layer's removal that
measured dearer than ΔL estimates is not made."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from conftest import batch, tiny_model
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_target import choose, fake_latency, prune_cli

import compresskit
from compresskit.plan import LayerPlan, PruningPlan
from compresskit.registry import get_strategy

# isort: split
from compresskit.strategies.base import ExampleGradients, Scores


def labelled(model, rows: int = 4, seed: int = 1):
    inputs = batch(model, batch_size=rows, seed=seed)
    return {**inputs, "labels": torch.arange(rows) % 2}


def test_fisher_hands_the_gradients_its_scores_are_summed_from():
    model = tiny_model("bert", "BertForSequenceClassification", layers=2, heads=4, ffn=24)
    data = [labelled(model, seed=1), labelled(model, seed=2)]
    scores = get_strategy("fisher").scores(model, data)
    grads = scores.example_gradients
    assert grads is not None
    for g, s in zip(grads.heads + grads.ffn, scores.heads + scores.ffn, strict=True):
        assert g.shape == (8, s.numel())  # one row per example of both batches
        torch.testing.assert_close(g.square().sum(0), s, rtol=1e-5, atol=1e-12)
    assert get_strategy("taylor").scores(model, data).example_gradients is None


def test_fisher_measures_each_layers_whole_removals_as_the_pruned_model_computes_them():
    model = tiny_model("bert", "BertForSequenceClassification", layers=2, heads=4, ffn=24)
    data = [labelled(model, rows=3, seed=1), labelled(model, rows=5, seed=2)]
    grads = get_strategy("fisher").scores(model, data).example_gradients
    assert grads is not None and grads.heads_removed_loss and grads.ffn_removed_loss

    def mean_loss(m) -> float:  # over examples: batches weighted by their rows
        with torch.no_grad():
            losses = [float(m(**b).loss) * len(b["labels"]) for b in data]
        return sum(losses) / sum(len(b["labels"]) for b in data)

    model.eval()
    dense = PruningPlan.of_model(model)
    for index, layer in enumerate(dense.layers):
        for kind, without in (
            ("heads", LayerPlan((), layer.ffn_kept)),
            ("ffn", LayerPlan(layer.heads_kept, ())),
        ):
            layers = list(dense.layers)
            layers[index] = without
            pruned = compresskit.prune(copy.deepcopy(model), PruningPlan(tuple(layers)))
            measured = getattr(grads, f"{kind}_removed_loss")[index]
            assert measured == pytest.approx(mean_loss(pruned) - mean_loss(model), abs=1e-5)


def test_fisher_plans_at_ratios_without_keeping_or_measuring_what_only_a_target_weighs(
    monkeypatch,
):
    model = tiny_model("bert", "BertForSequenceClassification", layers=2, heads=4, ffn=24)
    data = [labelled(model, seed=1), labelled(model, seed=2)]
    strategy = get_strategy("fisher", heads_ratio=0.5, ffn_ratio=0.5)
    expected = strategy.plan_from_scores(model, strategy.scores(model, data))

    def not_needed(*args, **kwargs):
        raise AssertionError("measured removals for a plan at ratios")

    monkeypatch.setattr("compresskit.strategies.gates.layer_removal_losses", not_needed)
    assert strategy.plan(model, iter(data)) == expected


def random_scores(model, examples: int, seed: int, measured: bool = False) -> Scores:
    """Fisher-like scores (Σ g²) from random per-example gradients, correlated within a
    layer so that the whole Fisher and its diagonal disagree; with `measured`, random
    measured costs of removing a layer's heads or FFN neurons, some above ΔL's estimate."""
    g = torch.Generator().manual_seed(seed)
    plan = PruningPlan.of_model(model)
    heads, ffn = [], []
    for h, f in zip(plan.heads_per_layer, plan.ffn_per_layer, strict=True):
        shared = torch.randn(examples, 1, generator=g, dtype=torch.float64)
        heads.append(torch.randn(examples, h, generator=g, dtype=torch.float64) + shared)
        ffn.append(0.3 * torch.randn(examples, f, generator=g, dtype=torch.float64) - shared / f)
    # Per layer: the heads' and the FFN's whole removal.
    removed = (10 * torch.rand(2, len(heads), generator=g)).tolist() if measured else [None] * 2
    return Scores(
        [x.square().sum(0) for x in heads],
        [x.square().sum(0) for x in ffn],
        in_loss_units=True,
        example_gradients=ExampleGradients(heads, ffn, *removed),
    )


def fisher_loss_of(plan: PruningPlan, grads: ExampleGradients) -> float:
    """½ mean_n (Σ over the units the plan removes of ∂loss_n/∂gate)², plus, for each layer
    whose heads (FFN neurons) the plan removes all of, how far the measured cost of that
    exceeds ½ mean_n (Σ of their gradients)², from the docstring."""
    s, excess = 0.0, 0.0
    for index, (layer, gh, gf) in enumerate(zip(plan.layers, grads.heads, grads.ffn, strict=True)):
        gone_heads = [u for u in range(gh.shape[1]) if u not in layer.heads_kept]
        gone_ffn = [u for u in range(gf.shape[1]) if u not in layer.ffn_kept]
        s = s + gh[:, gone_heads].sum(1) + gf[:, gone_ffn].sum(1)
        for g, kept, measured in (
            (gh, layer.heads_kept, grads.heads_removed_loss),
            (gf, layer.ffn_kept, grads.ffn_removed_loss),
        ):
            if measured is not None and not kept:
                estimate = 0.5 * float(g.sum(1).square().mean())
                excess += max(0.0, measured[index] - estimate)
    return 0.5 * float(torch.as_tensor(s).square().mean()) + excess


@given(
    seed=st.integers(0, 10_000),
    ratio=st.floats(1.05, 4.0),
    round_to=st.sampled_from([1, 4]),
    measured=st.booleans(),
)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_the_search_stays_within_budget_and_ends_no_worse_than_its_starts(
    seed, ratio, round_to, measured
):
    model = tiny_model("bert", layers=3, heads=4, ffn=16)
    scores = random_scores(model, examples=12, seed=seed, measured=measured)
    cost = fake_latency(model)
    try:
        choice = choose(model, scores, cost, ratio, round_to=round_to, in_loss_units=True)
    except Exception as error:  # a target only a model without heads would meet
        assert "leaves the model no" in str(error) or "below the cheapest" in str(error)
        return
    assert choice.predicted <= choice.budget
    found = choice.interactions
    assert found is not None
    assert found["fisher_loss_chosen"] <= found["fisher_loss_knapsack"] + 1e-12
    assert found["fisher_loss_chosen"] <= found["fisher_loss_uniform"] + 1e-12
    assert scores.example_gradients is not None
    assert found["fisher_loss_chosen"] == pytest.approx(
        fisher_loss_of(choice.plan, scores.example_gradients), rel=1e-9, abs=1e-15
    )
    assert all(f % round_to == 0 or f == 16 for f in choice.plan.ffn_per_layer)


def test_units_whose_removals_cancel_go_together_where_the_diagonal_keeps_them():
    # Layer 0's two heads move the loss of every example by equal and opposite amounts:
    # each alone is the most important head of the model (largest Σ g²), both together cost
    # nothing. Layer 1's heads cost a little each. The budget asks for one layer's heads.
    model = tiny_model("bert", layers=2, heads=2, ffn=8)
    g = torch.Generator().manual_seed(0)
    examples = 16
    opposite = 3 * torch.randn(examples, 1, generator=g, dtype=torch.float64)
    heads = [
        torch.cat([opposite, -opposite], 1),
        0.5 * torch.randn(examples, 2, generator=g, dtype=torch.float64),
    ]
    ffn = [10 * torch.randn(examples, 8, generator=g, dtype=torch.float64) for _ in range(2)]
    grads = ExampleGradients(heads, ffn)
    scores = Scores(
        [x.square().sum(0) for x in heads], [x.square().sum(0) for x in ffn], True, grads
    )
    cost = fake_latency(model)
    full = cost.fixed + 2 * cost.layer(2, 8)
    one_layer_without_heads = cost.fixed + cost.layer(2, 8) + cost.layer(0, 8)
    # The budget: that, with less slack than the cheapest unit (an FFN neuron, 0.01) costs.
    ratio = full / (one_layer_without_heads + 0.005)
    diagonal = choose(
        model, Scores(scores.heads, scores.ffn, True), cost, ratio, in_loss_units=True
    )
    assert diagonal.plan.heads_per_layer == [2, 0]  # the diagonal: layer 1's heads are cheap
    searched = choose(model, scores, cost, ratio, in_loss_units=True)
    assert searched.plan.heads_per_layer == [0, 2]
    assert searched.plan.ffn_per_layer == [8, 8]
    assert searched.interactions is not None
    assert searched.interactions["fisher_loss_chosen"] == pytest.approx(0.0, abs=1e-20)
    assert np.isclose(
        fisher_loss_of(diagonal.plan, grads), searched.interactions["fisher_loss_knapsack"]
    )


def test_a_layers_attention_measured_dearer_than_its_estimate_is_kept():
    # Layer 1's heads have small gradients: ΔL puts removing them all well below layer 0's.
    # Measured, their removal costs far more (as the last layer's attention does in a
    # classifier). The budget asks for one layer's heads.
    model = tiny_model("bert", layers=2, heads=2, ffn=8)
    g = torch.Generator().manual_seed(0)
    examples = 16
    heads = [torch.randn(examples, 2, generator=g, dtype=torch.float64) for _ in range(2)]
    heads[1] = heads[1] * 0.1
    ffn = [10 * torch.randn(examples, 8, generator=g, dtype=torch.float64) for _ in range(2)]
    cost = fake_latency(model)
    full = cost.fixed + 2 * cost.layer(2, 8)
    ratio = full / (cost.fixed + cost.layer(2, 8) + cost.layer(0, 8) + 0.005)

    def chosen(heads_removed_loss):
        grads = ExampleGradients(heads, ffn, heads_removed_loss, [0.0, 0.0])
        scores = Scores(
            [x.square().sum(0) for x in heads], [x.square().sum(0) for x in ffn], True, grads
        )
        return choose(model, scores, cost, ratio, in_loss_units=True)

    estimates = [0.5 * float(h.sum(1).square().mean()) for h in heads]
    assert estimates[1] < estimates[0]
    assert chosen(None).plan.heads_per_layer == [2, 0]
    assert chosen([estimates[0], estimates[1]]).plan.heads_per_layer == [2, 0]  # as estimated
    dearer = chosen([estimates[0], estimates[0] + 1.0])
    assert dearer.plan.heads_per_layer == [0, 2]
    assert dearer.interactions is not None
    assert dearer.interactions["measured_excess"]["heads"] == pytest.approx(
        [0.0, estimates[0] + 1.0 - estimates[1]]
    )


def test_fine_tuning_with_fisher_to_a_target_reports_the_search(tiny_task, tmp_path):
    model, data = tiny_task
    code, output = prune_cli(
        *("--strategy", "fisher", "--model", str(model), "--task", "sst2", "--data", str(data)),
        *("--target-macs", "1.5", "--target-shape", "layers", "--epochs", "1"),
        *("--batch-size", "16", "--max-seq-len", "16", "--no-progress"),
        *("--output", str(tmp_path / "out")),
    )
    assert code == 0, output
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    searched = report["target"]["interactions"]
    assert searched["fisher_loss_chosen"] <= searched["fisher_loss_knapsack"]
    assert report["macs_ratio"] >= 1.5
    assert report["target"]["heads_per_layer"] == [
        layer["heads"] for layer in report["after"]["layers"]
    ]
    assert "widths by the whole Fisher: loss estimate" in output


def test_a_ratio_shaped_target_with_fisher_measures_nothing_it_does_not_use(
    tiny_task, tmp_path, monkeypatch
):
    def not_needed(*args, **kwargs):
        raise AssertionError("measured removals for a ratio-shaped target")

    monkeypatch.setattr("compresskit.strategies.gates.layer_removal_losses", not_needed)
    model, data = tiny_task
    code, output = prune_cli(  # the default shape
        *("--strategy", "fisher", "--model", str(model), "--task", "sst2", "--data", str(data)),
        *("--target-macs", "1.5", "--epochs", "1"),
        *("--batch-size", "16", "--max-seq-len", "16", "--no-progress"),
        *("--output", str(tmp_path / "out")),
    )
    assert code == 0, output
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["target"]["shape"] == "ratios" and report["target"]["interactions"] is None
    assert report["macs_ratio"] >= 1.5
