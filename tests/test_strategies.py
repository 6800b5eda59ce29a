"""Strategies: what every registered strategy promises (serialisable, validated configs), what
every one-shot strategy promises (deterministic plans at the configured ratios, exact pruning
on any architecture, dense or already pruned), and what each built-in one scores."""

from __future__ import annotations

import copy
import functools
import json
import math
from collections.abc import Iterator

import pytest
import torch
from conftest import ALL_MODEL_CLASSES, batch, tiny_model
from helpers import assert_pruned_equals_masked
from torch import nn

import compresskit
from compresskit.arch import get_adapter
from compresskit.errors import ConfigError
from compresskit.plan import PruningPlan
from compresskit.registry import describe, get_strategy, get_strategy_class, strategy_names

# isort: split
# (ruff files compresskit.strategies, which installs from strategies/, under third-party)
from compresskit.strategies.base import Strategy

ALL_STRATEGIES = strategy_names()
ONE_SHOT = [name for name in ALL_STRATEGIES if get_strategy_class(name).kind == "one-shot"]

HEADS, HEAD_DIM, FFN, LAYERS = 4, 8, 40, 3
SHARED_OPTIONS = {"heads_ratio": 0.25, "ffn_ratio": 0.5, "seed": 7}
EXTRA_OPTIONS = {"taylor": {"max_batches": 3}, "fisher": {"max_batches": 2}}
# The strategies that score units by the loss gradient of a gate on each (strategies/gates.py).
GATE_STRATEGIES = ["taylor", "fisher"]
CLASSIFIER = "BertForSequenceClassification"

# An earlier pruning: uneven head counts, a layer with no heads and a layer with no FFN neurons.
EARLIER = PruningPlan.from_lists(
    [[1, 3], [], [0, 1, 2, 3]], [list(range(0, FFN, 3)), [], list(range(FFN))]
)


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    # Tiny models gain nothing from intra-op threads, while on a busy 2-core machine spinning
    # OpenMP threads made every forward pass ~100x slower (1.2 s instead of 0.01 s).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# --- helpers -------------------------------------------------------------------------------
def targets(model: nn.Module, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Whatever `model`'s task head needs to return a loss (nothing for a bare encoder)."""
    rows, length = inputs["input_ids"].shape
    alternating = torch.arange(rows) % 2
    name = type(model).__name__
    if name.endswith("ForSequenceClassification"):
        return {"labels": alternating}
    if name.endswith("ForTokenClassification"):
        return {"labels": torch.arange(rows * length).reshape(rows, length) % 2}
    if name.endswith("ForQuestionAnswering"):
        return {"start_positions": alternating + 1, "end_positions": alternating + 3}
    if name.endswith("ForMaskedLM"):
        return {"labels": inputs["input_ids"].clone()}
    if name.endswith("ForPreTraining"):
        return {"labels": inputs["input_ids"].clone(), "next_sentence_label": alternating}
    return {}


def labelled(model: nn.Module, seed: int = 1) -> dict[str, torch.Tensor]:
    inputs = batch(model, seed=seed)
    return {**inputs, **targets(model, inputs)}


def data_for(strategy: Strategy, model: nn.Module) -> list[dict[str, torch.Tensor]] | None:
    """Two fixed labelled batches for strategies that need data, None for the others."""
    return [labelled(model, seed=1), labelled(model, seed=2)] if strategy.needs_data else None


def has_loss_head(class_name: str) -> bool:
    return not class_name.endswith("Model")


# A data-driven strategy needs a loss, which bare encoders (BertModel, ...) do not have.
ONE_SHOT_ON_EVERY_MODEL_CLASS = [
    pytest.param(name, model_type, class_name, id=f"{name}-{class_name}")
    for name in ONE_SHOT
    for model_type, class_name in ALL_MODEL_CLASSES
    if has_loss_head(class_name) or not get_strategy_class(name).needs_data
]


def small(model_type: str = "bert", class_name: str = CLASSIFIER, **shape: object) -> nn.Module:
    """A fresh tiny model, LAYERS x HEADS heads of HEAD_DIM, FFN wide, unless `shape` says."""
    shape = {"layers": LAYERS, "heads": HEADS, "head_dim": HEAD_DIM, "ffn": FFN, **shape}
    return tiny_model(model_type, class_name, **shape)


def small_f64(
    model_type: str = "bert", class_name: str = CLASSIFIER, *, pruned: bool = False
) -> nn.Module:
    """A float64 copy of `small()`, already pruned with EARLIER if asked: building and pruning
    take most of this file's time, so each is done once and copied."""
    return copy.deepcopy(_built_f64(model_type, class_name, pruned))


@functools.cache
def _built_f64(model_type: str, class_name: str, pruned: bool) -> nn.Module:
    model = small(model_type, class_name).double()
    return compresskit.prune(model, EARLIER) if pruned else model


def sizes(scores: list[torch.Tensor]) -> list[int]:
    return [int(s.numel()) for s in scores]


# --- every registered strategy -------------------------------------------------------------
@pytest.mark.parametrize("name", ALL_STRATEGIES)
def test_config_round_trips_through_json(name):
    strategy = get_strategy(name, **SHARED_OPTIONS, **EXTRA_OPTIONS.get(name, {}))
    rebuilt = compresskit.registry.strategy_from_dict(json.loads(json.dumps(strategy.to_dict())))
    assert type(rebuilt) is type(strategy)
    assert rebuilt.config == strategy.config


@pytest.mark.parametrize("name", ALL_STRATEGIES)
def test_every_strategy_has_a_description(name):
    assert describe(name).description


@pytest.mark.parametrize("option", ["heads_ratio", "ffn_ratio"])
@pytest.mark.parametrize("value", [-0.1, 1.0, 1.5, True, "0.3"])
@pytest.mark.parametrize("name", ALL_STRATEGIES)
def test_ratios_outside_zero_one_are_rejected(name, option, value):
    with pytest.raises(ConfigError, match=option):
        get_strategy(name, **{option: value})


@pytest.mark.parametrize("name", ALL_STRATEGIES)
def test_unknown_option_is_rejected(name):
    with pytest.raises(ConfigError, match="heads_ratoi"):
        get_strategy(name, heads_ratoi=0.25)


# --- every one-shot strategy ---------------------------------------------------------------
@pytest.mark.parametrize("name", ONE_SHOT)
def test_scores_have_one_entry_per_unit_the_model_has_now(name):
    model = small_f64(pruned=True)
    strategy = get_strategy(name)
    scores = strategy.scores(model, data_for(strategy, model))
    assert sizes(scores.heads) == [2, 0, 4]
    assert sizes(scores.ffn) == [len(range(0, FFN, 3)), 0, FFN]


@pytest.mark.parametrize("name", ONE_SHOT)
def test_same_seed_gives_the_same_plan(name):
    model = small()
    first, second = (get_strategy(name, **SHARED_OPTIONS | {"seed": 3}) for _ in range(2))
    assert first.plan(model, data_for(first, model)) == second.plan(model, data_for(second, model))


@pytest.mark.parametrize("name", ONE_SHOT)
def test_plan_keeps_the_configured_fractions(name):
    model = small(heads=12, head_dim=4, ffn=50)
    strategy = get_strategy(name, heads_ratio=1 / 3, heads_scope="layer", ffn_ratio=0.4)
    plan = strategy.plan(model, data_for(strategy, model))
    assert plan.heads_per_layer == [8] * LAYERS
    assert sum(plan.ffn_per_layer) == round(0.6 * 50 * LAYERS)


@pytest.mark.parametrize("name", ONE_SHOT)
def test_planning_does_not_change_the_model(name):
    model = small()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    strategy = get_strategy(name, **SHARED_OPTIONS)
    strategy.plan(model, data_for(strategy, model))
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


# In float64, so that rounding can neither hide a mistake nor fail a correct plan.
@pytest.mark.parametrize(("name", "model_type", "class_name"), ONE_SHOT_ON_EVERY_MODEL_CLASS)
def test_planned_pruning_equals_masking(name, model_type, class_name):
    model = small_f64(model_type, class_name)
    strategy = get_strategy(name, **SHARED_OPTIONS)
    plan = strategy.plan(model, data_for(strategy, model))
    assert plan.heads_per_layer == [HEADS - 1] * LAYERS
    assert sum(plan.ffn_per_layer) == FFN * LAYERS // 2
    assert_pruned_equals_masked(model, plan, batch(model), atol=1e-9)


@pytest.mark.parametrize(("name", "model_type", "class_name"), ONE_SHOT_ON_EVERY_MODEL_CLASS)
def test_planned_pruning_of_an_already_pruned_model_equals_masking(name, model_type, class_name):
    model = small_f64(model_type, class_name, pruned=True)
    strategy = get_strategy(name, heads_ratio=0.5, ffn_ratio=0.3, heads_scope="layer")
    plan = strategy.plan(model, data_for(strategy, model))
    assert plan.heads_per_layer == [1, 0, 2]
    assert_pruned_equals_masked(model, plan, batch(model), atol=1e-9)


# --- magnitude -----------------------------------------------------------------------------
@torch.no_grad()
def test_magnitude_scores_are_the_norm_of_each_units_own_parameters():
    # 1 layer, 2 heads of 2 dims (hidden 4), 3 FFN neurons; every parameter set by hand.
    model = tiny_model("bert", "BertModel", layers=1, heads=2, head_dim=2, ffn=3)
    layer = get_adapter(model).layers()[0]
    attn, ffn = get_adapter(model).attention_parts(layer), get_adapter(model).ffn_parts(layer)
    for linear in (attn.query, attn.key, attn.value):
        linear.weight.fill_(1.0)  # per head: 2 rows x 4 columns of 1 -> 8
        linear.bias.fill_(0.5)  # per head: 2 entries of 0.25 -> 0.5
    attn.output.weight.fill_(2.0)  # per head: 4 rows x 2 columns of 4 -> 32
    attn.output.weight[:, 2:4] = 0.0  # ... except head 1: 0
    attn.output.bias.fill_(100.0)  # shared by the heads: does not count
    ffn.up.weight.fill_(1.0)  # per neuron: a row of 4 ones -> 4
    ffn.up.weight[2] = 0.0  # ... except neuron 2: 0
    ffn.up.bias.fill_(2.0)  # per neuron: 4
    ffn.down.weight.fill_(3.0)  # per neuron: a column of 4 threes -> 36
    ffn.down.bias.fill_(100.0)  # shared by the neurons: does not count

    scores = get_strategy("magnitude").scores(model)

    head_squares = [3 * 8 + 3 * 0.5 + 32, 3 * 8 + 3 * 0.5 + 0]
    neuron_squares = [4 + 4 + 36, 4 + 4 + 36, 0 + 4 + 36]
    assert scores.heads[0].tolist() == pytest.approx([math.sqrt(s) for s in head_squares])
    assert scores.ffn[0].tolist() == pytest.approx([math.sqrt(s) for s in neuron_squares])


@torch.no_grad()
def test_magnitude_removes_a_head_whose_weights_are_zero():
    model = small()
    adapter = get_adapter(model)
    parts = adapter.attention_parts(adapter.layers()[1])
    head = slice(2 * HEAD_DIM, 3 * HEAD_DIM)  # head 2
    for linear in (parts.query, parts.key, parts.value):
        linear.weight[head] = 0.0
        linear.bias[head] = 0.0
    parts.output.weight[:, head] = 0.0
    strategy = get_strategy("magnitude", heads_ratio=0.25)

    scores = strategy.scores(model)
    plan = strategy.plan(model)

    assert scores.heads[1][2] == 0.0
    assert scores.heads[1].argmin() == 2
    assert plan.layers[1].heads_kept == (0, 1, 3)


@torch.no_grad()
def test_magnitude_removes_a_neuron_whose_weights_are_zero():
    model = small()
    adapter = get_adapter(model)
    ffn = adapter.ffn_parts(adapter.layers()[2])
    ffn.up.weight[17], ffn.up.bias[17], ffn.down.weight[:, 17] = 0.0, 0.0, 0.0
    plan = get_strategy("magnitude", ffn_ratio=0.01).plan(model)  # removes 1 of 120
    assert plan.ffn_per_layer == [FFN, FFN, FFN - 1]
    assert 17 not in plan.layers[2].ffn_kept


# --- random --------------------------------------------------------------------------------
def test_random_different_seeds_give_different_plans():
    model = small()
    plans = [get_strategy("random", **SHARED_OPTIONS | {"seed": s}).plan(model) for s in (0, 1)]
    assert plans[0] != plans[1]


def test_random_ignores_and_preserves_the_global_rng_state():
    model = small()
    strategy = get_strategy("random", **SHARED_OPTIONS)
    torch.manual_seed(1)
    first = strategy.plan(model)
    torch.manual_seed(2)
    state = torch.get_rng_state()
    second = strategy.plan(model)
    assert first == second
    assert torch.equal(torch.get_rng_state(), state)


def test_random_does_not_look_at_the_weights():
    strategy = get_strategy("random", **SHARED_OPTIONS)
    assert strategy.plan(small(seed=0)) == strategy.plan(small(seed=1))


# --- taylor --------------------------------------------------------------------------------
def model_snapshot(model: nn.Module) -> dict[str, object]:
    return {
        "values": {k: v.clone() for k, v in model.state_dict().items()},
        "grads": {
            n: None if p.grad is None else p.grad.clone() for n, p in model.named_parameters()
        },
        "requires_grad": {n: p.requires_grad for n, p in model.named_parameters()},
        "modes": {n: m.training for n, m in model.named_modules()},
        "hooks": sum(len(m._forward_pre_hooks) + len(m._forward_hooks) for m in model.modules()),
    }


def assert_same_snapshot(before: dict[str, object], after: dict[str, object]) -> None:
    for key in ("requires_grad", "modes", "hooks"):
        assert after[key] == before[key], key
    for key in ("values", "grads"):
        old, new = before[key], after[key]
        assert isinstance(old, dict) and isinstance(new, dict)
        assert old.keys() == new.keys()
        for name in old:
            if old[name] is None or new[name] is None:
                assert old[name] is None and new[name] is None, (key, name)
            else:
                assert torch.equal(old[name], new[name]), (key, name)


@pytest.mark.parametrize("name", GATE_STRATEGIES)
def test_gate_scoring_leaves_the_model_exactly_as_it_was(name):
    model = small().train()
    model.base_model.embeddings.requires_grad_(False)  # a partly frozen model
    model.classifier.eval()  # and a module whose mode differs from its parent's
    before = model_snapshot(model)
    get_strategy(name).scores(model, [labelled(model)])
    after = model_snapshot(model)
    assert_same_snapshot(before, after)
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("name", GATE_STRATEGIES)
def test_gate_scoring_leaves_existing_gradients_untouched(name):
    model = small()
    model(**labelled(model)).loss.backward()
    before = model_snapshot(model)
    get_strategy(name).scores(model, [labelled(model, seed=2)])
    assert_same_snapshot(before, model_snapshot(model))


@pytest.mark.parametrize("name", GATE_STRATEGIES)
def test_gate_scoring_restores_the_model_when_scoring_fails(name):
    model = small().train()
    before = model_snapshot(model)
    with pytest.raises(ConfigError):
        get_strategy(name).scores(model, [batch(model)])  # no labels
    assert_same_snapshot(before, model_snapshot(model))


@pytest.mark.parametrize("name", GATE_STRATEGIES)
@pytest.mark.parametrize("batches", [None, []], ids=["none", "empty"])
def test_gate_scoring_without_data_is_a_config_error(name, batches):
    model = small()
    with pytest.raises(ConfigError, match=f"{name} needs data"):
        get_strategy(name).plan(model, batches)


@pytest.mark.parametrize("name", GATE_STRATEGIES)
def test_gate_scoring_without_labels_is_a_config_error(name):
    model = small()
    with pytest.raises(ConfigError, match="labels"):
        get_strategy(name).plan(model, [batch(model)])


@pytest.mark.parametrize("name", GATE_STRATEGIES)
@pytest.mark.parametrize("value", [0, -1, True, 1.5])
def test_gate_scoring_max_batches_must_be_a_positive_integer(name, value):
    with pytest.raises(ConfigError, match="max_batches"):
        get_strategy(name, max_batches=value)


def test_taylor_scores_are_the_loss_gradient_of_each_units_scale():
    # Gating a unit's input to the next linear is scaling its columns of that linear; compare
    # with central finite differences of the loss, in float64.
    model = small_f64()
    inputs = labelled(model)
    scores = get_strategy("taylor").scores(model, [inputs])
    adapter = get_adapter(model)
    layer = 1

    def loss_with_columns_scaled(get_linear, columns: slice, scale: float) -> float:
        scaled = copy.deepcopy(model)
        linear = get_linear(get_adapter(scaled).layers()[layer])
        with torch.no_grad():
            linear.weight[:, columns] *= scale
            return float(scaled(**inputs).loss)

    def slope(get_linear, columns: slice, eps: float = 1e-5) -> float:
        up = loss_with_columns_scaled(get_linear, columns, 1 + eps)
        down = loss_with_columns_scaled(get_linear, columns, 1 - eps)
        return abs(up - down) / (2 * eps)

    head, neuron = 2, 11
    head_columns = slice(head * HEAD_DIM, (head + 1) * HEAD_DIM)
    out_proj_slope = slope(lambda layer_: adapter.attention_parts(layer_).output, head_columns)
    down_slope = slope(lambda layer_: adapter.ffn_parts(layer_).down, slice(neuron, neuron + 1))
    assert float(scores.heads[layer][head]) == pytest.approx(out_proj_slope, rel=1e-4)
    assert float(scores.ffn[layer][neuron]) == pytest.approx(down_slope, rel=1e-4)


def test_taylor_scores_in_eval_mode_so_dropout_does_not_matter():
    model = small()
    batches = [labelled(model)]
    in_eval = get_strategy("taylor").scores(model.eval(), batches)
    in_training = get_strategy("taylor").scores(model.train(), batches)
    for a, b in zip(in_eval.heads + in_eval.ffn, in_training.heads + in_training.ffn, strict=True):
        assert torch.equal(a, b)


def test_taylor_sums_the_gradients_of_the_batches():
    model = small()
    inputs = labelled(model)
    once = get_strategy("taylor").scores(model, [inputs])
    twice = get_strategy("taylor").scores(model, [inputs, inputs])
    for a, b in zip(once.heads + once.ffn, twice.heads + twice.ffn, strict=True):
        assert torch.allclose(2 * a, b)


def test_taylor_scores_do_not_depend_on_the_attention_implementation():
    eager, sdpa = small(attn="eager"), small(attn="sdpa")
    batches = [labelled(eager)]
    by_eager = get_strategy("taylor").scores(eager, batches)
    by_sdpa = get_strategy("taylor").scores(sdpa, batches)
    for a, b in zip(by_eager.heads + by_eager.ffn, by_sdpa.heads + by_sdpa.ffn, strict=True):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-6)


def test_taylor_reads_at_most_max_batches():
    model = small()
    first, second, third = (labelled(model, seed=s) for s in (1, 2, 3))
    consumed: list[int] = []

    def stream() -> Iterator[dict[str, torch.Tensor]]:
        for i, b in enumerate((first, second, third)):
            consumed.append(i)
            yield b

    two = get_strategy("taylor", max_batches=2).scores(model, stream())
    reference = get_strategy("taylor").scores(model, [first, second])
    assert consumed == [0, 1]
    assert all(torch.equal(a, b) for a, b in zip(two.heads, reference.heads, strict=True))
    assert all(torch.equal(a, b) for a, b in zip(two.ffn, reference.ffn, strict=True))


def test_fisher_scores_are_the_sums_of_each_examples_squared_gate_gradient():
    # Taylor on a batch of one example is |∂loss/∂gate| of that example (checked against
    # finite differences above), so fisher over a batch is Σ over its rows of taylor².
    model = small_f64()
    inputs = labelled(model)
    rows = int(inputs["input_ids"].shape[0])
    fisher = get_strategy("fisher").scores(model, [inputs])
    per_example = [
        get_strategy("taylor").scores(model, [{k: v[i : i + 1] for k, v in inputs.items()}])
        for i in range(rows)
    ]
    assert rows > 1 and fisher.in_loss_units
    for kind in ("heads", "ffn"):
        for layer, total in enumerate(getattr(fisher, kind)):
            expected = sum(getattr(t, kind)[layer].square() for t in per_example)
            assert torch.allclose(total, expected, rtol=1e-9, atol=1e-15)


def test_fisher_reads_at_most_max_batches():
    model = small()
    batches = [labelled(model, seed=s) for s in (1, 2, 3)]
    two = get_strategy("fisher", max_batches=2).scores(model, iter(batches))
    reference = get_strategy("fisher").scores(model, batches[:2])
    assert all(torch.equal(a, b) for a, b in zip(two.heads, reference.heads, strict=True))
    assert all(torch.equal(a, b) for a, b in zip(two.ffn, reference.ffn, strict=True))
