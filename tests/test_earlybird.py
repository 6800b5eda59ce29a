"""EarlyBERT search stage: slimming coefficients, the L1 regulariser, masks and their
distance, the early-bird ticket test, and the strategy that ties them together."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from conftest import ALL_MODEL_CLASSES, batch, tiny_model
from helpers import assert_pruned_equals_masked, max_diff_at_tokens, outputs

import compresskit
from compresskit.arch import get_adapter
from compresskit.errors import CompressKitError, ConfigError
from compresskit.plan import PruningPlan
from compresskit.registry import describe, get_strategy, strategy_from_dict

# isort: split
# (ruff files compresskit.strategies, which installs from strategies/, under third-party)
from compresskit.strategies.earlybird import (
    EarlyBirdConfig,
    EarlyBirdStrategy,
    SlimmingCoefficients,
    SlimmingMask,
    TicketDetector,
    mask_distance,
    mask_from_scores,
)

HEADS, FFN, LAYERS = 4, 40, 3
# A model pruned before the search: layer 0 has no heads, layer 1 no FFN neurons.
PRE_PRUNED = PruningPlan.from_lists([[], [0, 2, 3], [1, 3]], [list(range(0, FFN, 2)), [], [5]])


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # Tiny models on a shared 2-core machine run ~10x faster without intra-op threads.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# --- mask distance -----------------------------------------------------------------------------
def test_mask_distance_is_the_fraction_of_positions_that_differ():
    assert mask_distance(torch.tensor([1, 1, 0, 0]), torch.tensor([1, 0, 1, 0])) == 0.5
    assert mask_distance(torch.tensor([1, 1, 0, 0]), torch.tensor([1, 1, 0, 0])) == 0.0
    assert mask_distance(torch.tensor([1, 1, 1, 1]), torch.tensor([0, 0, 0, 0])) == 1.0
    assert mask_distance(torch.zeros(0), torch.zeros(0)) == 0.0


def test_mask_distance_per_kind_and_over_all_positions():
    a = SlimmingMask.from_bits(["1100"], ["11110000"])
    b = SlimmingMask.from_bits(["1010"], ["11101000"])
    assert mask_distance(a, b, "heads") == 2 / 4
    assert mask_distance(a, b, "ffn") == 2 / 8
    assert mask_distance(a, b) == 4 / 12


def test_kept_measure_is_the_fraction_of_kept_units_that_changed():
    # 12 heads, 3 kept; one head swapped: 2 of 12 positions differ, 1 of 3 kept heads changed
    a, b = torch.tensor([1, 1, 1] + [0] * 9), torch.tensor([1, 1, 0, 1] + [0] * 8)
    assert mask_distance(a, b, measure="positions") == 2 / 12
    assert mask_distance(a, b, measure="kept") == 1 / 3
    assert mask_distance(a, a, measure="kept") == 0.0
    assert mask_distance(torch.zeros(4), torch.zeros(4), measure="kept") == 0.0


@pytest.mark.parametrize("positions", [32, 72, 144, 9216])
@pytest.mark.parametrize("kept_fraction", [1 / 3, 1 / 2, 2 / 3])
def test_kept_measure_counts_swaps_per_kept_unit_at_every_size_and_ratio(
    positions: int, kept_fraction: float
):
    """The same number means the same change of the ticket whatever the model's size and the
    pruning ratio: swapping s of the K kept units is s / K."""
    kept = round(positions * kept_fraction)
    swaps = max(1, kept // 10)
    a = torch.zeros(positions, dtype=torch.bool)
    a[:kept] = True
    b = a.clone()
    b[:swaps] = False
    b[kept : kept + swaps] = True
    assert mask_distance(a, b, measure="kept") == pytest.approx(swaps / kept)
    assert mask_distance(a, b, measure="positions") == pytest.approx(2 * swaps / positions)


def test_masks_of_different_shapes_cannot_be_compared():
    with pytest.raises(CompressKitError):
        mask_distance(SlimmingMask.from_bits(["11"], ["1"]), SlimmingMask.from_bits(["1"], ["11"]))
    with pytest.raises(CompressKitError):
        mask_distance(torch.ones(3), torch.ones(4))


# --- ticket detection against hand-computed sequences ------------------------------------------
# One layer, 4 heads, 8 FFN neurons, half of each kept, so both measures agree (N = 2·K).
# Distances of each mask to the two before it (window 3):
#   step  heads  ffn        heads d     ffn d        concat d
#   10    1100   11110000   -           -            -
#   20    1010   11110000   .5          0            2/12
#   30    1010   11101000   .5, 0       .25, .25     4/12, 2/12   (first full window)
#   40    1010   11100100   0, 0        .25, .25     2/12, 2/12   concat < .25: drawn here
#   50    1010   11100100   0, 0        .25, 0       2/12, 0
#   60    1010   11100100   0, 0        0, 0         0, 0         separate: drawn here
SEQUENCE = [
    (10, "1100", "11110000"),
    (20, "1010", "11110000"),
    (30, "1010", "11101000"),
    (40, "1010", "11100100"),
    (50, "1010", "11100100"),
    (60, "1010", "11100100"),
]


def feed(detector: TicketDetector, upto: int | None = None) -> list[bool]:
    return [
        detector.update(step, SlimmingMask.from_bits([h], [f]))
        for step, h, f in SEQUENCE
        if upto is None or step <= upto
    ]


@pytest.mark.parametrize("measure", ["kept", "positions"])
def test_separate_tracking_draws_when_heads_and_ffn_are_each_below_eps(measure: str):
    detector = TicketDetector(window=3, eps=0.25, track="separate", measure=measure)  # type: ignore[arg-type]
    assert feed(detector) == [False] * 5 + [True]
    assert detector.state == "drawn"
    assert detector.final_step == 60
    assert detector.final_mask == SlimmingMask.from_bits(["1010"], ["11100100"])


@pytest.mark.parametrize("measure", ["kept", "positions"])
def test_concat_tracking_draws_on_the_distance_over_all_positions(measure: str):
    detector = TicketDetector(window=3, eps=0.25, track="concat", measure=measure)  # type: ignore[arg-type]
    assert feed(detector, upto=40) == [False, False, False, True]
    assert detector.final_step == 40


def test_a_distance_equal_to_eps_is_not_below_it():
    detector = TicketDetector(window=3, eps=0.25)
    feed(detector, upto=50)  # steps 40 and 50 have a largest distance of exactly 0.25
    assert [r.max_distance for r in detector.history[-2:]] == [0.25, 0.25]
    assert detector.state == "searching"


def test_every_distance_is_recorded():
    detector = TicketDetector(window=3, eps=0.25)
    feed(detector, upto=30)
    first, second, third = detector.history
    assert (first.step, first.max_distance, first.heads, first.ffn) == (10, None, (), ())
    assert (second.heads, second.ffn, second.concat) == ((0.5,), (0.0,), (2 / 12,))
    assert third.step == 30
    assert third.heads == (0.5, 0.0)
    assert third.ffn == (0.25, 0.25)
    assert third.concat == (4 / 12, 2 / 12)
    assert third.max_distance == 0.5


def test_no_ticket_before_the_window_is_full():
    detector = TicketDetector(window=3, eps=0.1)
    same = SlimmingMask.from_bits(["10"], ["1100"])
    assert detector.update(1, same) is False
    assert detector.update(2, same) is False  # distance 0, but only two masks
    assert detector.update(3, same) is True


def test_the_step_cap_ends_the_search_without_a_ticket():
    detector = TicketDetector(window=3, eps=0.25, max_search_steps=45)
    assert feed(detector, upto=50) == [False, False, False, False, True]
    assert detector.state == "capped"
    assert detector.final_step == 50
    assert detector.final_mask == SlimmingMask.from_bits(["1010"], ["11100100"])
    assert detector.update(60, SlimmingMask.from_bits(["0101"], ["00011111"])) is True
    assert detector.final_step == 50  # masks after the end are ignored


def test_steps_must_increase():
    detector = TicketDetector(window=3, eps=0.25)
    feed(detector, upto=20)
    with pytest.raises(CompressKitError, match="increasing"):
        detector.update(20, SlimmingMask.from_bits(["1010"], ["11110000"]))


def test_the_kept_measure_draws_where_positions_would_not():
    """MiniLM-like heads: 72, 48 kept (8 of 12 per layer); the ticket's masks differ by 3
    swaps, 6 positions: 6/72 = 0.083 of the positions, 3/48 = 0.0625 of the kept heads."""
    base = "1" * 48 + "0" * 24
    moved = "0" * 3 + "1" * 45 + "1" * 3 + "0" * 21
    ffn = "1100"
    for measure, drawn in (("kept", True), ("positions", False)):
        detector = TicketDetector(window=2, eps=0.07, measure=measure)  # type: ignore[arg-type]
        detector.update(1, SlimmingMask.from_bits([base], [ffn]))
        assert detector.update(2, SlimmingMask.from_bits([moved], [ffn])) is drawn


def test_a_version_1_detector_state_resumes_measuring_positions():
    state = TicketDetector(window=3, eps=0.25, measure="positions").to_dict()
    del state["measure"]
    state["version"] = 1
    assert TicketDetector.from_dict(state).measure == "positions"


def test_a_resumed_detector_continues_exactly():
    whole = TicketDetector(window=3, eps=0.25)
    feed(whole)
    first = TicketDetector(window=3, eps=0.25)
    feed(first, upto=30)
    resumed = TicketDetector.from_dict(json.loads(json.dumps(first.to_dict())))
    for step, h, f in SEQUENCE[3:]:
        resumed.update(step, SlimmingMask.from_bits([h], [f]))
    assert resumed.to_dict() == whole.to_dict()
    assert resumed.final_step == 60


def test_detector_settings_are_validated():
    with pytest.raises(ConfigError):
        TicketDetector(window=1)
    with pytest.raises(ConfigError):
        TicketDetector(eps=0)
    with pytest.raises(ConfigError):
        TicketDetector(track="both")  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        TicketDetector(measure="swaps")  # type: ignore[arg-type]


# --- configuration -----------------------------------------------------------------------------
def test_defaults_are_earlyberts_fine_tuning_setup():
    c = EarlyBirdConfig()
    assert (c.heads_ratio, c.ffn_ratio) == (1 / 3, 0.4)  # 4 of 12 heads per layer
    assert (c.heads_scope, c.ffn_scope) == ("layer", "global")
    assert (c.lambda_heads, c.lambda_ffn) == (1e-4, 1e-4)
    assert (c.eps, c.window, c.mask_interval) == (0.1, 5, 10)
    assert (c.max_search_steps, c.rewind, c.coef_lr) == (None, False, None)
    assert (c.track, c.measure) == ("separate", "kept")


@pytest.mark.parametrize(
    "bad",
    [
        {"lambda_heads": -1e-4},
        {"lambda_ffn": float("nan")},
        {"eps": 0.0},
        {"eps": 1.5},
        {"window": 1},
        {"window": 2.0},
        {"mask_interval": 0},
        {"mask_interval": True},
        {"max_search_steps": 0},
        {"rewind": "yes"},
        {"coef_lr": 0.0},
        {"track": "joint"},
        {"measure": "swaps"},
        {"heads_ratio": 1.0},
        {"no_such_option": 1},
    ],
)
def test_bad_options_are_refused(bad):
    with pytest.raises(ConfigError):
        EarlyBirdConfig.from_dict(bad)


def test_config_survives_a_json_round_trip():
    config = EarlyBirdConfig(
        ffn_ratio=0.3, lambda_heads=1e-3, max_search_steps=400, coef_lr=1e-2, track="concat"
    )
    assert EarlyBirdConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    strategy = EarlyBirdStrategy(config)
    rebuilt = strategy_from_dict(json.loads(json.dumps(strategy.to_dict())))
    assert isinstance(rebuilt, EarlyBirdStrategy)
    assert rebuilt.config == config


def test_registered_as_a_training_time_strategy():
    assert isinstance(get_strategy("earlybird", ffn_ratio=0.3), EarlyBirdStrategy)
    info = describe("earlybird")
    assert info.kind == "training-time"
    assert info.description.startswith("EarlyBERT")


# --- coefficients ------------------------------------------------------------------------------
@pytest.mark.parametrize(("model_type", "class_name"), ALL_MODEL_CLASSES)
def test_attach_and_detach_leave_the_model_exactly_as_it_was(model_type, class_name):
    model = tiny_model(model_type, class_name, layers=LAYERS, heads=HEADS, ffn=FFN)
    inputs = batch(model)
    before = outputs(model, inputs)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    coefficients = SlimmingCoefficients.attach(model)
    attached = outputs(model, inputs)
    assert all(torch.equal(attached[k], before[k]) for k in before)  # x * 1.0 is exact
    coefficients.detach()
    assert not coefficients.attached
    after = outputs(model, inputs)
    assert all(torch.equal(after[k], before[k]) for k in before)
    assert model.state_dict().keys() == state.keys()
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


def test_as_a_submodule_the_coefficients_are_model_parameters_until_detached():
    model = tiny_model("bert", layers=LAYERS, heads=HEADS, ffn=FFN)
    keys = set(model.state_dict())
    coefficients = SlimmingCoefficients.attach(model, as_submodule=True)
    added = set(model.state_dict()) - keys
    assert added == {
        f"compresskit_slimming.{kind}.{i}" for kind in ("heads", "ffn") for i in range(3)
    }
    assert {id(p) for p in coefficients.parameters()} <= {id(p) for p in model.parameters()}
    coefficients.detach()
    assert set(model.state_dict()) == keys


def test_coefficients_have_one_entry_per_head_and_neuron_and_start_at_one():
    model = tiny_model("bert", layers=LAYERS, heads=HEADS, ffn=FFN)
    coefficients = SlimmingCoefficients.attach(model)
    assert [c.shape for c in coefficients.heads] == [(HEADS,)] * LAYERS
    assert [c.shape for c in coefficients.ffn] == [(FFN,)] * LAYERS
    assert all(bool((c == 1).all()) and c.dtype == torch.float32 for c in coefficients.parameters())


def test_attaching_twice_is_refused():
    model = tiny_model("bert")
    SlimmingCoefficients.attach(model)
    with pytest.raises(ConfigError, match="already"):
        SlimmingCoefficients.attach(model)


@pytest.mark.parametrize("model_type", ["bert", "roberta", "distilbert"])
def test_a_zero_coefficient_equals_masking_that_head_and_neuron(model_type):
    model = tiny_model(model_type, layers=LAYERS, heads=HEADS, ffn=FFN)
    inputs = batch(model)
    plan = PruningPlan.from_lists(
        [[0, 1, 2, 3], [0, 1, 3], [1, 2, 3]],
        [list(range(FFN)), [n for n in range(FFN) if n != 7], list(range(FFN))],
    )
    masked = outputs(compresskit.mask(copy.deepcopy(model), plan), inputs)
    coefficients = SlimmingCoefficients.attach(model)
    with torch.no_grad():
        coefficients.heads[1][2] = 0.0
        coefficients.heads[2][0] = 0.0
        coefficients.ffn[1][7] = 0.0
    gated = outputs(model, inputs)
    assert max_diff_at_tokens(gated, masked, inputs["attention_mask"]) <= 1e-6


def scale_inputs(linear: torch.nn.Linear, scale: torch.Tensor) -> None:
    """The definition in EARLYBERT.md §1, as a reference: multiply the Linear's input."""
    linear.register_forward_pre_hook(lambda module, args: (args[0] * scale,))


@pytest.mark.parametrize("model_type", ["bert", "distilbert"])
def test_coefficients_scale_a_heads_context_and_a_neurons_activation(model_type):
    model = tiny_model(model_type, layers=2, heads=HEADS, ffn=FFN)
    inputs = batch(model)
    reference = copy.deepcopy(model)
    coefficients = SlimmingCoefficients.attach(model)
    with torch.no_grad():
        coefficients.heads[0][1] = 0.5
        coefficients.ffn[1][3] = -2.0
    head_scale = torch.ones(HEADS * 8)
    head_scale[8:16] = 0.5  # head 1 owns columns 8..15 (head_dim 8)
    ffn_scale = torch.ones(FFN)
    ffn_scale[3] = -2.0
    adapter = get_adapter(reference)
    scale_inputs(adapter.attention_parts(adapter.layers()[0]).output, head_scale)
    scale_inputs(adapter.ffn_parts(adapter.layers()[1]).down, ffn_scale)
    diff = max_diff_at_tokens(
        outputs(model, inputs), outputs(reference, inputs), inputs["attention_mask"]
    )
    assert diff <= 1e-5


def test_the_scaled_weight_exists_only_during_a_call():
    model = tiny_model("bert", "BertForSequenceClassification", layers=1, heads=HEADS)
    SlimmingCoefficients.attach(model)
    dense = model.bert.encoder.layer[0].attention.output.dense
    outputs(model, batch(model))
    assert "weight" not in dense.__dict__
    assert dense.weight is dense._parameters["weight"]
    with pytest.raises(RuntimeError):
        dense(torch.zeros(2, 5))  # wrong width: fails inside the Linear, after the pre-hook
    assert "weight" not in dense.__dict__


def test_gradients_reach_every_coefficient():
    model = tiny_model("bert", "BertForSequenceClassification", layers=LAYERS, heads=HEADS, ffn=FFN)
    coefficients = SlimmingCoefficients.attach(model)
    inputs = batch(model)
    model(**inputs, labels=torch.tensor([0, 1, 1])).loss.backward()
    for c in coefficients.parameters():
        assert c.grad is not None and c.grad.shape == c.shape
        assert bool((c.grad != 0).any())


def test_coefficients_work_on_an_already_pruned_model():
    model = compresskit.prune(tiny_model("bert", layers=LAYERS, heads=HEADS, ffn=FFN), PRE_PRUNED)
    inputs = batch(model)
    before = outputs(model, inputs)
    coefficients = SlimmingCoefficients.attach(model)
    assert [c.numel() for c in coefficients.heads] == [0, 3, 2]
    assert [c.numel() for c in coefficients.ffn] == [20, 0, 1]
    out = model(**inputs)
    assert torch.equal(out.logits, before["logits"])
    (out.logits.sum() + coefficients.l1_penalty()).backward()
    coefficients.detach()
    assert torch.equal(outputs(model, inputs)["logits"], before["logits"])


# --- regulariser -------------------------------------------------------------------------------
def signed_coefficients() -> SlimmingCoefficients:
    coefficients = SlimmingCoefficients([3, 2], [4, 0], lambda_heads=1e-3, lambda_ffn=2e-2)
    with torch.no_grad():
        coefficients.heads[0].copy_(torch.tensor([1.0, -0.5, 0.0]))
        coefficients.heads[1].copy_(torch.tensor([0.25, 2.0]))
        coefficients.ffn[0].copy_(torch.tensor([-1.0, 0.5, 0.0, 3.0]))
    return coefficients


def test_l1_penalty_is_the_weighted_plain_sum_of_magnitudes():
    penalty = signed_coefficients().l1_penalty()
    assert penalty.item() == pytest.approx(1e-3 * 3.75 + 2e-2 * 4.5)


def test_l1_loss_term_and_subgradient_give_the_same_gradient():
    by_loss, by_subgradient = signed_coefficients(), signed_coefficients()
    by_loss.l1_penalty().backward()
    by_subgradient.apply_l1_subgradient()
    for a, b in zip(by_loss.parameters(), by_subgradient.parameters(), strict=True):
        assert a.grad is not None and b.grad is not None
        assert torch.allclose(a.grad, b.grad)


def test_the_subgradient_adds_to_an_existing_gradient():
    coefficients = signed_coefficients()
    for c in coefficients.parameters():
        c.grad = torch.ones_like(c)
    coefficients.apply_l1_subgradient()
    assert torch.allclose(coefficients.heads[0].grad, torch.tensor([1.001, 0.999, 1.0]))


def test_the_param_group_has_no_weight_decay():
    coefficients = signed_coefficients()
    assert coefficients.param_group() == {
        "params": list(coefficients.parameters()),
        "weight_decay": 0.0,
    }
    assert coefficients.param_group(lr=1e-2)["lr"] == 1e-2
    strategy = EarlyBirdStrategy(coef_lr=5e-3)
    strategy.attach(tiny_model("bert"))
    assert strategy.param_group()["lr"] == 5e-3


# --- masks from coefficients -------------------------------------------------------------------
def test_masks_rank_magnitudes_not_signed_values():
    coefficients = SlimmingCoefficients([3], [4])
    with torch.no_grad():
        coefficients.heads[0].copy_(torch.tensor([-0.9, 0.2, 0.5]))
        coefficients.ffn[0].copy_(torch.tensor([0.1, -2.0, 0.3, -0.05]))
    config = EarlyBirdConfig(heads_ratio=1 / 3, ffn_ratio=0.5)
    mask = mask_from_scores(coefficients.magnitudes(), config)
    assert mask == SlimmingMask.from_bits(["101"], ["0110"])


@pytest.mark.parametrize("ffn_scope", ["global", "layer"])
def test_the_mask_keeps_what_the_plan_keeps(ffn_scope):
    model = tiny_model("bert", layers=LAYERS, heads=HEADS, ffn=FFN)
    strategy = EarlyBirdStrategy(ffn_scope=ffn_scope, round_to=4)
    coefficients = strategy.attach(model)
    torch.manual_seed(0)
    with torch.no_grad():
        for c in coefficients.parameters():
            c.uniform_(-1, 1)
    mask, plan = strategy.current_mask(), strategy.plan(model)
    assert [tuple(b.nonzero().flatten().tolist()) for b in mask.heads] == [
        lp.heads_kept for lp in plan.layers
    ]
    assert [tuple(b.nonzero().flatten().tolist()) for b in mask.ffn] == [
        lp.ffn_kept for lp in plan.layers
    ]


# --- the strategy ------------------------------------------------------------------------------
def test_scores_need_attached_coefficients():
    strategy = EarlyBirdStrategy()
    model = tiny_model("bert")
    with pytest.raises(ConfigError, match="attach"):
        strategy.scores(model)
    with pytest.raises(ConfigError, match="attach"):
        strategy.on_step(10)
    strategy.attach(model)
    assert [s.tolist() for s in strategy.scores(model).heads] == [[1.0] * HEADS] * LAYERS


def test_the_plan_has_the_configured_shapes():
    model = tiny_model("bert", layers=LAYERS, heads=12, head_dim=4, ffn=FFN)
    strategy = EarlyBirdStrategy()  # 1/3 of heads per layer, 40% of FFN neurons overall
    coefficients = strategy.attach(model)
    torch.manual_seed(0)
    with torch.no_grad():
        for c in coefficients.parameters():
            c.add_(0.01 * torch.randn_like(c))
    plan = strategy.plan(model)
    assert plan.heads_per_layer == [8] * LAYERS
    assert sum(plan.ffn_per_layer) == round(0.6 * LAYERS * FFN)


def test_on_step_draws_a_mask_every_interval():
    strategy = EarlyBirdStrategy(mask_interval=4, window=3)
    strategy.attach(tiny_model("bert"))
    for step in range(1, 11):
        strategy.on_step(step)
    assert [r.step for r in strategy.detector.history] == [4, 8]


def test_the_cap_ends_the_search_at_max_search_steps():
    strategy = EarlyBirdStrategy(mask_interval=10, window=3, max_search_steps=5)
    strategy.attach(tiny_model("bert"))
    assert [strategy.on_step(step) for step in range(1, 7)] == [False] * 4 + [True, True]
    assert strategy.state == "capped"
    assert strategy.search_done and not strategy.ticket_drawn
    assert strategy.ticket_step == 5


def run_search(seed: int = 0, steps: int = 60) -> tuple[EarlyBirdStrategy, torch.nn.Module]:
    """A seeded EarlyBERT search on a tiny classifier with random but learnable data."""
    torch.manual_seed(seed)
    model = tiny_model("bert", "BertForSequenceClassification", seed=seed).train()
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, 64, (64, 12), generator=g)
    labels = (ids[:, 1] > 33).long()
    strategy = EarlyBirdStrategy(mask_interval=3, window=4, eps=0.1, coef_lr=0.02, rewind=True)
    strategy.attach(model)
    optimizer = torch.optim.AdamW(
        [{"params": model.parameters(), "weight_decay": 0.01}, strategy.param_group()], lr=1e-3
    )
    for step in range(1, steps + 1):
        rows = torch.randint(0, 64, (16,), generator=g)
        loss = model(input_ids=ids[rows], labels=labels[rows]).loss + strategy.regularizer()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if strategy.on_step(step):
            break
    return strategy, model.eval()


def test_a_seeded_search_draws_the_ticket_at_the_same_step_twice():
    first, _ = run_search()
    second, _ = run_search()
    assert first.ticket_drawn and second.ticket_drawn
    assert first.ticket_step == second.ticket_step
    assert first.ticket_step % 3 == 0 and first.ticket_step > 4 * 3  # after a full window moves
    assert first.detector.to_dict() == second.detector.to_dict()


def test_after_the_ticket_prune_equals_the_masked_rewound_model():
    strategy, model = run_search()
    initial = tiny_model("bert", "BertForSequenceClassification", seed=0)
    plan = strategy.plan(model)
    assert plan.heads_per_layer == [3] * LAYERS
    assert sum(plan.ffn_per_layer) == LAYERS * FFN - round(0.4 * LAYERS * FFN)
    strategy.detach()
    strategy.rewind(model)
    assert all(torch.equal(v, initial.state_dict()[k]) for k, v in model.state_dict().items())
    assert_pruned_equals_masked(model, plan, batch(model))


def test_the_plan_is_the_tickets_even_if_training_goes_on():
    strategy, model = run_search()
    plan = strategy.plan(model)
    with torch.no_grad():
        for c in strategy.coefficients.parameters():
            c.uniform_(-1, 1)
    assert strategy.plan(model) == plan
    assert strategy.current_mask() != strategy.ticket


def test_rewind_needs_detach_and_rewind_enabled():
    model = tiny_model("bert")
    strategy = EarlyBirdStrategy(rewind=True)
    strategy.attach(model)
    with pytest.raises(ConfigError, match="detach"):
        strategy.rewind(model)
    no_rewind = EarlyBirdStrategy(rewind=False)
    no_rewind.attach(tiny_model("bert"))
    no_rewind.detach()
    with pytest.raises(ConfigError, match="rewind"):
        no_rewind.rewind(model)


def test_on_an_already_pruned_model_the_plan_uses_original_indices():
    model = compresskit.prune(tiny_model("bert", layers=LAYERS, heads=HEADS, ffn=FFN), PRE_PRUNED)
    strategy = EarlyBirdStrategy(heads_ratio=1 / 3, ffn_ratio=0.5)
    coefficients = strategy.attach(model)
    with torch.no_grad():
        coefficients.heads[1].copy_(torch.tensor([0.9, 0.1, 0.8]))  # heads 0, 2, 3 of layer 1
    plan = strategy.plan(model)
    assert plan.layers[0].heads_kept == ()
    assert plan.layers[1].heads_kept == (0, 3)
    strategy.detach()
    assert_pruned_equals_masked(model, plan, batch(model))


def test_the_search_state_resumes_through_json():
    strategy, model = run_search()
    state = json.loads(json.dumps(strategy.state_dict()))
    resumed = EarlyBirdStrategy(strategy.config)
    resumed.load_state_dict(state)
    assert resumed.ticket_drawn and resumed.ticket_step == strategy.ticket_step
    assert resumed.plan(model) == strategy.plan(model)


def test_the_module_docstring_example_runs():
    import textwrap

    import compresskit.strategies.earlybird as module

    doc = module.__doc__ or ""
    example = textwrap.dedent(doc.split("Plain PyTorch:\n")[1].split("Design choices:")[0])
    model = tiny_model("bert", "BertForSequenceClassification")
    initial = copy.deepcopy(model)
    g = torch.Generator().manual_seed(0)
    loader = [
        {"input_ids": torch.randint(3, 64, (4, 9), generator=g), "labels": torch.tensor([0, 1] * 2)}
        for _ in range(12)
    ]
    namespace = {"model": model, "loader": loader}
    exec(compile(example, "earlybird docstring", "exec"), namespace)
    plan = namespace["plan"]
    assert isinstance(plan, PruningPlan)
    assert model.bert.encoder.layer[0].attention.self.query.out_features == 3 * 8
    assert_pruned_equals_masked(initial, plan, batch(initial))  # rewound to `initial`
    inputs = batch(model.eval())  # the example left it in training mode
    expected = outputs(compresskit.prune(initial, plan), inputs)
    assert max_diff_at_tokens(outputs(model, inputs), expected, inputs["attention_mask"]) == 0.0


def test_without_rewind_the_slim_model_continues_the_budget_from_the_ticket(tiny_task, tmp_path):
    from compresskit.train.run import TrainingOptions, TrainJob, run_training

    model, data = tiny_task
    training = TrainingOptions(epochs=2, batch_size=16, lr=5e-3, max_seq_len=16, progress=False)
    options = {"heads_ratio": 0.25, "ffn_ratio": 0.5, "mask_interval": 1, "window": 3}
    job = TrainJob(
        str(model), "earlybird", "sst2", str(data), tmp_path / "out",
        options=options | {"coef_lr": 0.05, "rewind": False, "max_search_fraction": None},
        training=training,
    )  # fmt: skip
    report = run_training(job)
    assert report.search is not None and report.search.state == "drawn"
    assert report.search.decided_at is not None and report.search.decided_at < 16
    assert report.steps == {"search": report.search.decided_at, "train": 16 - report.search.steps}


@pytest.mark.parametrize(
    ("options", "cap"),
    [
        ({}, 20),
        ({"max_search_fraction": 0.05}, 5),
        ({"max_search_steps": 7}, 7),
        ({"max_search_fraction": None}, None),
    ],
)
def test_the_search_is_capped_at_a_fifth_of_the_budget_unless_set(options, cap):
    strategy = EarlyBirdStrategy(**options)
    strategy.attach(tiny_model("bert"))
    strategy.begin(100)
    assert strategy.detector.max_search_steps == cap
    assert strategy.record().settings["max_search_steps"] == cap


def test_earlybird_pre_training_defaults_are_the_papers_unless_set() -> None:
    from dataclasses import replace
    from pathlib import Path

    from compresskit.train.run import TrainJob, _build_strategy

    job = TrainJob("m", "earlybird", "mlm", "d", Path("o"))
    config = _build_strategy(job).config  # type: ignore[union-attr]
    assert (config.heads_ratio, config.ffn_ratio, config.rewind) == (1 / 3, 0.3, False)  # type: ignore[attr-defined]
    mine = _build_strategy(replace(job, options={"ffn_ratio": 0.5, "rewind": True}))
    assert (mine.config.ffn_ratio, mine.config.rewind) == (0.5, True)  # type: ignore[union-attr, attr-defined]
    fine_tuning = _build_strategy(replace(job, task="sst2")).config  # type: ignore[union-attr]
    assert fine_tuning.ffn_ratio == 0.4


def test_earlybird_from_the_shell(tiny_task, tmp_path):
    from click.testing import CliRunner

    from compresskit.cli import cli

    model, data = tiny_task
    fast = ["--epochs", "1", "--batch-size", "16", "--lr", "5e-3", "--max-seq-len", "16"]
    result = CliRunner().invoke(
        cli,
        [
            "prune",
            *("--strategy", "earlybird", "--model", str(model), "--task", "sst2"),
            *("--data", str(data), "--output", str(tmp_path / "out"), *fast),
            *("--heads-ratio", "0.25", "--ffn-ratio", "0.5", "--mask-interval", "1"),
            *("--window", "3", "--eps", "0.2", "--coef-lr", "0.05", "--no-rewind", "--seed", "3"),
            *("--max-search-fraction", "1", "--no-progress"),
        ],
    )
    code, output = result.exit_code, result.output
    assert code == 0, output
    assert "dev accuracy:" in output and "search: drawn at step" in output
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    config = report["strategy"]["config"]
    assert (config["window"], config["eps"], config["rewind"], config["seed"]) == (3, 0.2, False, 3)
    assert config["max_search_fraction"] == 1
    assert report["training"]["seed"] == 3 and report["training"]["epochs"] == 1
