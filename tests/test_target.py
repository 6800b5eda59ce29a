"""Compression to a target: the width chooser keeps the most score within the budget (checked
against brute force), the chosen plans prune exactly for every architecture and one-shot
strategy, the latency model interpolates and round-trips, and every mistake is one line."""

from __future__ import annotations

import dataclasses
import itertools
import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import ARCHITECTURES, batch, tiny_model
from helpers import assert_pruned_equals_masked, quick_args, training_time_strategies
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import compresskit
from compresskit.cli import cli
from compresskit.errors import ConfigError, PlanError
from compresskit.latency import (
    LatencyModel,
    LatencyModelError,
    LatencySetting,
    MacsModel,
    default_grid,
)
from compresskit.loading import load_model
from compresskit.plan import PruningPlan
from compresskit.registry import get_strategy, get_strategy_class, strategy_names
from compresskit.target import (
    Target,
    TargetOptions,
    check_target_options,
    choose_widths,
    model_shape,
    plan_for_target,
    ratio_widths,
    target_from_flags,
)

# isort: split
# (ruff files compresskit.strategies, which installs from strategies/, under third-party)
from compresskit.strategies.base import Scores

ONE_SHOT = [n for n in strategy_names() if get_strategy_class(n).kind == "one-shot"]
CLASSIFIERS = [
    (t, next(c for c in classes if c.endswith("ForSequenceClassification")))
    for t, classes in ARCHITECTURES.items()
]


def fake_latency(model: torch.nn.Module, setting: LatencySetting | None = None) -> LatencyModel:
    """A latency model with made-up but plausible costs: a fixed attention overhead once a
    layer keeps any head, then linear in heads and in FFN width."""
    shape = model_shape(model)
    heads, widths = default_grid(shape.heads), default_grid(shape.ffn)
    table = tuple(
        tuple(0.05 + (0.2 if h else 0.0) + 0.3 * h + 0.01 * f for f in widths) for h in heads
    )
    return LatencyModel(setting or LatencySetting(), shape, 0.4, heads, widths, table, {})


def choose(model, scores, cost, ratio: float, round_to: int = 1, in_loss_units: bool = False):
    before = cost.fixed + sum(
        cost.layer(h, f)
        for h, f in zip(
            PruningPlan.of_model(model).heads_per_layer,
            PruningPlan.of_model(model).ffn_per_layer,
            strict=True,
        )
    )
    return choose_widths(
        model,
        scores.heads,
        scores.ffn,
        cost,
        before / ratio,
        before=before,
        round_to=round_to,
        in_loss_units=in_loss_units,
        example_gradients=scores.example_gradients,
    )


# --- the choice is the best within the budget ---------------------------------------------------
def docstring_values(model, scores, in_loss_units=False) -> list[dict[tuple[int, int], float]]:
    """Per layer, the value of keeping (h best heads, f best neurons), computed here from
    compresskit/target.py's docstring."""
    if in_loss_units:  # scores as they are, both kinds on one scale, the least still worth 1%
        every = torch.cat([*scores.heads, *scores.ffn]).double().clamp(min=0)
        low = -(0.01 * float(every.mean()) or 1.0)
        worth = [[float(v) - low for v in s] for s in [*scores.heads, *scores.ffn]]
        mass = sum(sum(w) for w in worth)
        sums = [[sum(sorted(w, reverse=True)[:k]) / mass for k in range(len(w) + 1)] for w in worth]
        heads, ffn = sums[: len(scores.heads)], sums[len(scores.heads) :]
        return [
            {(h, f): hv[h] + fv[f] for h in range(len(hv)) for f in range(len(fv))}
            for hv, fv in zip(heads, ffn, strict=True)
        ]
    n_heads = sum(int(s.numel()) for s in scores.heads)
    n_ffn = sum(int(s.numel()) for s in scores.ffn)
    hidden = model.config.hidden_size
    head_dim = hidden // model.config.num_attention_heads
    p_heads, p_ffn = n_heads * 4 * hidden * head_dim, n_ffn * 2 * hidden
    best_sums = []
    for kind, weight in (
        (scores.heads, p_heads / (p_heads + p_ffn)),
        (scores.ffn, p_ffn / (p_heads + p_ffn)),
    ):
        every = torch.cat(list(kind)).double()
        low = float(every.min()) - (0.01 * float(every.mean() - every.min()) or 1.0)
        mass = sum(float((s.double() - low).sum()) for s in kind)
        sums = []
        for s in kind:
            ordered = sorted((float(v) - low for v in s), reverse=True)
            sums.append([weight * sum(ordered[:k]) / mass for k in range(len(ordered) + 1)])
        best_sums.append(sums)
    heads, ffn = best_sums
    return [
        {(h, f): hv[h] + fv[f] for h in range(len(hv)) for f in range(len(fv))}
        for hv, fv in zip(heads, ffn, strict=True)
    ]


@given(data=st.data())
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_the_choice_is_the_best_within_the_budget_by_brute_force(data):
    model = tiny_model("bert", layers=2, heads=4, ffn=32)
    scores = get_strategy("random", seed=data.draw(st.integers(0, 10_000))).scores(model)
    cost = fake_latency(model)
    ratio = data.draw(st.floats(1.0, 2.5))
    in_loss_units = data.draw(st.booleans())
    try:
        choice = choose(model, scores, cost, ratio, round_to=4, in_loss_units=in_loss_units)
    except ConfigError as error:  # the best widths keep no head: refused by design
        assert "leaves the model no attention head" in str(error)
        return
    counts = list(zip(choice.plan.heads_per_layer, choice.plan.ffn_per_layer, strict=True))
    assert choice.predicted <= choice.budget + 1e-9
    assert choice.predicted == pytest.approx(cost.fixed + sum(cost.layer(h, f) for h, f in counts))
    # Brute force over every (heads, width) of both layers: the choice is feasible, no
    # feasible choice is worth more, and (costs are rounded up to bins of 1/4000 of the
    # layers' budget) it is worth at least the best that fits a budget two bins tighter.
    values = docstring_values(model, scores, in_loss_units)
    options = list(itertools.product(range(5), range(0, 33, 4)))
    step = (choice.budget - cost.fixed) / 4000
    best_within, best_tighter = -1.0, -1.0
    for pair in itertools.product(options, repeat=2):
        spent = cost.fixed + sum(cost.layer(h, f) for h, f in pair)
        value = sum(v[o] for v, o in zip(values, pair, strict=True))
        if spent <= choice.budget:
            best_within = max(best_within, value)
        if spent <= choice.budget - 2 * step:
            best_tighter = max(best_tighter, value)
    mine = sum(v[o] for v, o in zip(values, counts, strict=True))
    assert best_tighter - 1e-9 <= mine <= best_within + 1e-9
    assert choice.importance_kept == pytest.approx(mine / sum(v[(4, 32)] for v in values))


@pytest.mark.parametrize("ratio", [1.0, 1.3, 2.0, 3.0])
@pytest.mark.parametrize("cost_kind", ["latency", "macs"])
def test_the_prediction_never_exceeds_the_budget(ratio, cost_kind):
    model = tiny_model("bert", layers=3, heads=4, ffn=40)
    scores = get_strategy("magnitude").scores(model)
    cost = fake_latency(model) if cost_kind == "latency" else MacsModel(model_shape(model), 16)
    choice = choose(model, scores, cost, ratio, round_to=4)
    assert choice.predicted <= choice.budget * (1 + 1e-12)
    assert choice.predicted_ratio >= ratio * (1 - 1e-12)
    assert all(f % 4 == 0 or f == 40 for f in choice.plan.ffn_per_layer)
    if ratio == 1.0:
        assert choice.plan == PruningPlan.of_model(model)
        assert choice.importance_kept == pytest.approx(1.0)


def test_layers_worth_more_keep_more():
    """Scores that make layer 0's units worth ten times layer 1's: under a tight budget the
    chooser keeps layer 0 and cuts layer 1 first, where a uniform ratio cuts both alike."""
    model = tiny_model("bert", layers=2, heads=4, ffn=40)
    scores = get_strategy("magnitude").scores(model)
    scores.heads[0].mul_(10)
    scores.ffn[0].mul_(10)
    choice = choose(model, scores, fake_latency(model), 1.8)
    assert choice.plan.heads_per_layer[0] >= choice.plan.heads_per_layer[1]
    assert choice.plan.ffn_per_layer[0] > choice.plan.ffn_per_layer[1]


@pytest.mark.parametrize("in_loss_units", [True, False])
def test_scores_in_loss_units_weigh_heads_against_neurons_as_they_are(in_loss_units):
    """In loss units, heads whose scores are 1000 times the neurons' are kept and the FFN is
    cut, and the other way round; scores in other units are put on one scale per kind, so the
    same scaling changes nothing."""
    model = tiny_model("bert", layers=2, heads=4, ffn=40)
    scores = get_strategy("random", seed=3).scores(model)  # in [0, 1): each unit in [1, 1.1)
    scores = Scores([1 + 0.1 * s for s in scores.heads], [1 + 0.1 * s for s in scores.ffn])
    cost = fake_latency(model)

    def widths(head_scale: float, ffn_scale: float):
        scaled = Scores(
            [s * head_scale for s in scores.heads],
            [s * ffn_scale for s in scores.ffn],
            in_loss_units=in_loss_units,
        )
        choice = choose(model, scaled, cost, 1.2, in_loss_units=in_loss_units)
        return choice.plan.heads_per_layer, choice.plan.ffn_per_layer

    heads_worth_more, ffn_worth_more = widths(1000, 1), widths(1, 1000)
    if in_loss_units:
        assert heads_worth_more[0] == [4, 4] and sum(heads_worth_more[1]) < 80
        assert ffn_worth_more[1] == [40, 40] and sum(ffn_worth_more[0]) < 8
    else:
        assert heads_worth_more == ffn_worth_more == widths(1, 1)


def test_a_budget_below_the_cheapest_model_says_how_small_it_can_go():
    model = tiny_model("bert", layers=2, heads=4, ffn=40)
    scores = get_strategy("magnitude").scores(model)
    cost = fake_latency(model)
    with pytest.raises(ConfigError, match=r"below the cheapest model .*0\.\d+ ms.*fixed cost"):
        choose_widths(model, scores.heads, scores.ffn, cost, 0.45, before=10.0)
    # The cheapest model (fixed 0.4 ms + 2 x 0.05 ms) fits 0.5 ms but has nothing left.
    with pytest.raises(ConfigError, match=r"0\.50 ms leaves the model no attention head"):
        choose_widths(model, scores.heads, scores.ffn, cost, 0.5, before=10.0)


# --- exactness: a target's plan prunes like any plan ---------------------------------------------
@pytest.mark.parametrize("name", ONE_SHOT)
@pytest.mark.parametrize(("model_type", "class_name"), CLASSIFIERS)
def test_target_plans_prune_exactly_for_every_architecture_and_strategy(
    name, model_type, class_name
):
    model = tiny_model(model_type, class_name, layers=3, heads=4, ffn=40).double()
    strategy = get_strategy(name)
    data = None
    if strategy.needs_data:
        inputs = batch(model)
        data = [{**inputs, "labels": torch.arange(inputs["input_ids"].shape[0]) % 2}]
    scores = strategy.scores(model, data)
    for cost in (fake_latency(model), MacsModel(model_shape(model), 16)):
        for choice in (choose(model, scores, cost, 2.0), choose_ratios(model, scores, cost, 2.0)):
            assert choice.predicted <= choice.budget
            assert_pruned_equals_masked(model, choice.plan, batch(model), atol=1e-9)


def choose_ratios(model, scores, cost, ratio: float, scopes=("layer", "global"), round_to=1):
    """The ratio-shaped choice for `ratio` times less than the model's cost now."""
    plan = PruningPlan.of_model(model)
    before = cost.fixed + sum(
        cost.layer(h, f) for h, f in zip(plan.heads_per_layer, plan.ffn_per_layer, strict=True)
    )
    return ratio_widths(model, scores, cost, before / ratio, before, round_to, scopes)


@pytest.mark.parametrize("scopes", [("layer", "global"), ("layer", "layer"), ("global", "global")])
@pytest.mark.parametrize("ratio", [1.3, 1.8])
def test_a_ratio_shaped_target_is_the_smallest_ratios_that_fit(scopes, ratio):
    """The heads ratio is the smallest single ratio (of both kinds) within the budget; the FFN
    ratio the smallest within it with the heads at that ratio."""
    model = tiny_model("bert", layers=3, heads=4, ffn=40)
    scores = get_strategy("magnitude").scores(model)
    cost = fake_latency(model)
    with pytest.raises(ConfigError, match="below what one ratio in every layer can reach"):
        choose_ratios(model, scores, cost, 10.0, scopes, round_to=4)
    choice = choose_ratios(model, scores, cost, ratio, scopes, round_to=4)
    assert choice.predicted <= choice.budget

    def widths(heads_ratio: float, ffn_ratio: float) -> tuple[list[int], list[int]] | None:
        """The widths --heads-ratio --ffn-ratio give, or None where a ratio removes every
        head or every FFN neuron (refused)."""
        strategy = get_strategy(
            "magnitude",
            heads_ratio=heads_ratio,
            ffn_ratio=ffn_ratio,
            heads_scope=scopes[0],
            ffn_scope=scopes[1],
            round_to=4,
        )
        try:
            plan = strategy.plan_from_scores(model, scores)
        except PlanError:
            return None
        return plan.heads_per_layer, plan.ffn_per_layer

    def fits(kept: tuple[list[int], list[int]] | None) -> bool:
        return kept is not None and choice.budget >= cost.fixed + sum(
            cost.layer(h, f) for h, f in zip(*kept, strict=True)
        )

    grid = np.linspace(0, 0.999, 1000)
    # The heads of the smallest single ratio that fits ...
    single = next(r for r in grid if fits(widths(r, r)))
    assert all(not fits(widths(r, r)) for r in grid if r < single)
    single_heads = widths(single, single)[0]  # type: ignore[index]
    assert choice.plan.heads_per_layer == single_heads
    # ... and the FFN widths of the smallest FFN ratio that fits beside them.
    chosen = (choice.plan.heads_per_layer, choice.plan.ffn_per_layer)
    ffn_ratio = next(f for f in grid[grid <= single] if widths(single, f) == chosen)
    assert all(not fits(widths(single, f)) for f in grid if f < ffn_ratio)


def test_an_already_pruned_model_is_sped_up_from_where_it_is():
    model = tiny_model("bert", layers=3, heads=4, ffn=40)
    earlier = PruningPlan.from_lists([[1, 3], [], [0, 1, 2, 3]], [list(range(0, 40, 3)), [], []])
    compresskit.prune(model, earlier)
    scores = get_strategy("magnitude").scores(model)
    choice = choose(model, scores, fake_latency(model), 1.5)
    choice.plan.validate(model)  # a subset of what the model still has, in dense indices
    assert choice.predicted_ratio >= 1.5
    assert_pruned_equals_masked(model, choice.plan, batch(model))


def test_plan_for_target_with_macs_needs_no_runtime():
    model = tiny_model("bert", layers=3, heads=4, ffn=40)
    options = TargetOptions(Target("macs", 2.0), LatencySetting(seq_len=16))
    choice = plan_for_target(model, get_strategy("magnitude").scores(model), options)
    dense = MacsModel(model_shape(model), 16).dense()
    assert choice.unit == "MACs" and choice.before == dense
    assert dense / choice.predicted >= 2.0


# --- the latency model ----------------------------------------------------------------------------
def test_the_latency_model_is_exact_at_grid_points_and_linear_between():
    model = tiny_model("bert", layers=2, heads=4, ffn=40)
    lm = fake_latency(model)
    for i, h in enumerate(lm.heads_grid):
        for j, f in enumerate(lm.ffn_grid):
            assert lm.layer(h, f) == pytest.approx(lm.layer_ms[i][j])
    # Between grid points (ffn 10 and 20): the midpoint is the mean.
    assert lm.layer(2, 15) == pytest.approx((lm.layer(2, 10) + lm.layer(2, 20)) / 2)
    assert lm.dense() == pytest.approx(lm.fixed_ms + 2 * lm.layer(4, 40))
    with pytest.raises(ConfigError, match="outside the measured"):
        lm.layer(5, 10)


def test_the_latency_model_round_trips_and_refuses_another_setting(tmp_path):
    model = tiny_model("bert", layers=2, heads=4, ffn=40)
    lm = fake_latency(model, LatencySetting(threads=2, batch_size=8))
    lm.save(tmp_path / "lm.json")
    again = LatencyModel.load(tmp_path / "lm.json")
    assert again == lm
    again.check_fits(lm.setting, lm.shape, "lm.json")
    with pytest.raises(LatencyModelError, match=r"another setting \(batch_size=8.*batch_size=1"):
        again.check_fits(LatencySetting(threads=2), lm.shape, "lm.json")
    other = tiny_model("bert", layers=2, heads=4, ffn=32)
    with pytest.raises(LatencyModelError, match="another shape"):
        again.check_fits(lm.setting, model_shape(other), "lm.json")


def test_a_calibrated_latency_model_predicts_the_whole_model_and_keeps_ratios(tmp_path):
    raw = fake_latency(tiny_model("bert", layers=2, heads=4, ffn=40))
    calibrated = dataclasses.replace(raw, whole_ms=1.3 * raw.dense())
    assert calibrated.dense() == pytest.approx(1.3 * raw.dense())
    widths = ([1, 3], [8, 40])
    assert calibrated.predict(*widths) / calibrated.dense() == pytest.approx(
        raw.predict(*widths) / raw.dense()
    )
    calibrated.save(tmp_path / "lm.json")
    assert LatencyModel.load(tmp_path / "lm.json") == calibrated
    assert "calibrated" in calibrated.table() and "1.300" in calibrated.table()
    # a file written before the calibration existed reads as the parts' sum
    data = raw.to_dict()
    data.pop("whole_ms")
    assert LatencyModel.from_dict(data).scale == 1.0


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda d: d.update(format="other"), "not a compresskit latency model"),
        (lambda d: d.update(format_version=99), "format_version 99"),
        (lambda d: d.update(fixed_ms="fast"), "damaged"),
        (lambda d: d.update(heads_grid=[0, 2]), "must rise from 0 to the dense count 4"),
        (lambda d: d["layer_ms"].pop(), "one row per head count"),
        (lambda d: d["setting"].update(threads=0), "threads must be a positive integer"),
        (lambda d: d.update(whole_ms=-1.0), "whole_ms must be positive"),
        (lambda d: d.update(whole_ms="slow"), "damaged"),
    ],
)
def test_a_damaged_latency_model_file_is_one_line(tmp_path, damage, message):
    data = fake_latency(tiny_model("bert", layers=2, heads=4, ffn=40)).to_dict()
    damage(data)
    (tmp_path / "lm.json").write_text(json.dumps(data))
    with pytest.raises(LatencyModelError, match=message) as err:
        LatencyModel.load(tmp_path / "lm.json")
    assert "\n" not in str(err.value)


def test_a_latency_model_file_that_is_not_json_is_one_line(tmp_path):
    (tmp_path / "lm.json").write_bytes(b"\x00\xff{")
    with pytest.raises(LatencyModelError, match="damaged, not readable JSON"):
        LatencyModel.load(tmp_path / "lm.json")


# --- options ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ({"target_speedup": 2.0, "target_macs": 2.0}, "give one target"),
        ({"target_speedup": 0.5}, "below 1"),
        ({"target_latency": -3.0}, "positive number"),
        ({"threads": 2}, "--threads describe"),
        ({"target_speedup": 2.0, "threads": 0}, "threads must be a positive integer"),
        ({"target_speedup": 2.0, "batch": 0}, "batch_size must be a positive integer"),
    ],
)
def test_bad_target_options_are_one_line(flags, message):
    with pytest.raises(ConfigError, match=message):
        target_from_flags(flags, 128)


def test_ratios_beside_a_target_are_refused():
    target = TargetOptions(Target("macs", 2.0), shape="layers")
    with pytest.raises(ConfigError, match="drop --heads-ratio, --ffn-ratio"):
        check_target_options({"heads_ratio": 0.3, "ffn_ratio": 0.4, "seed": 1}, target)
    with pytest.raises(ConfigError, match="every layer: drop --ffn-scope"):
        check_target_options({"ffn_scope": "layer"}, target)
    ratios = TargetOptions(Target("macs", 2.0), shape="ratios")
    check_target_options({"ffn_scope": "layer", "heads_scope": "global"}, ratios)
    with pytest.raises(ConfigError, match="one ratio: drop --heads-ratio"):
        check_target_options({"heads_ratio": 0.3}, ratios)
    with pytest.raises(ConfigError, match="target shape must be one of ratios, layers"):
        TargetOptions(Target("macs", 2.0), shape="uniform")


def test_target_flags_default_to_the_cores_available_batch_one_and_ratios():
    options = target_from_flags({"target_speedup": 2.0}, 64)
    assert options is not None
    assert options.setting.batch_size == 1 and options.setting.seq_len == 64
    assert options.setting.threads >= 1 and options.verify
    # the shape that was the more accurate after fine-tuning (docs/latency-target.md)
    assert options.shape == "ratios" == TargetOptions(Target("macs", 2.0)).shape


def test_all_equal_scores_still_choose_within_budget():
    model = tiny_model("bert", layers=2, heads=4, ffn=40)
    flat = [torch.ones(4), torch.ones(4)], [torch.ones(40), torch.ones(40)]
    cost = fake_latency(model)
    choice = choose_widths(model, *flat, cost, cost.dense() / 2, before=cost.dense())
    assert choice.predicted <= cost.dense() / 2
    assert np.isfinite(choice.importance_kept)


def test_the_default_grid_has_a_point_at_the_first_units():
    # a layer's first head costs more than the next ones: the grid must see it
    assert default_grid(12) == (0, 1, 3, 6, 9, 12)
    assert default_grid(1536) == (0, 96, 384, 768, 1152, 1536)
    assert default_grid(1) == (0, 1) and default_grid(0) == (0,)


def test_the_measured_grid_has_its_shape(tmp_path):
    """A real (tiny) measurement: ORT graphs of one layer at every grid point."""
    pytest.importorskip("onnxruntime")
    from compresskit.exporters.latency import measure_latency_model

    model = tiny_model("bert", layers=2, heads=4, ffn=40)
    lm = measure_latency_model(
        model, LatencySetting(threads=1, seq_len=8), heads_grid=[0, 2, 4], ffn_grid=[0, 40], runs=3
    )
    assert lm.heads_grid == (0, 2, 4) and lm.ffn_grid == (0, 40)
    assert lm.fixed_ms > 0 and lm.dense() > lm.fixed
    assert lm.whole_ms is not None and lm.dense() == pytest.approx(lm.whole_ms)
    lm.save(tmp_path / "lm.json")
    assert LatencyModel.load(tmp_path / "lm.json") == lm


# --- from the shell ----------------------------------------------------------------------------
def prune_cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["prune", *args])
    return result.exit_code, result.output


def test_prune_to_a_target_with_one_ratio_in_every_layer(tiny_task, tmp_path):
    model, _ = tiny_task
    code, output = prune_cli(
        *("--strategy", "magnitude", "--model", str(model), "--target-macs", "2"),
        *("--target-shape", "ratios", "--ffn-scope", "layer", "--round-to", "1"),
        *("--output", str(tmp_path / "out"), "--seq-len", "16"),
    )
    assert code == 0, output
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["macs_ratio"] >= 2.0 and report["target"]["shape"] == "ratios"
    layers = report["after"]["layers"]
    assert len({layer["heads"] for layer in layers}) == 1
    assert len({layer["ffn_width"] for layer in layers}) == 1


def test_prune_to_a_macs_target_reports_the_choice(tiny_task, tmp_path):
    model, _ = tiny_task
    code, output = prune_cli(
        *("--strategy", "magnitude", "--model", str(model), "--target-macs", "2"),
        *("--output", str(tmp_path / "out"), "--seq-len", "16"),
    )
    assert code == 0, output
    assert "target 2x fewer MACs (encoder MACs): predicted" in output
    assert "widths: a heads ratio and an FFN ratio" in output  # the default shape, said
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["macs_ratio"] >= 2.0
    assert report["target"]["kind"] == "macs" and report["target"]["measured"] is None
    assert report["target"]["heads_per_layer"] == [
        layer["heads"] for layer in report["after"]["layers"]
    ]


def test_prune_to_a_speedup_with_a_latency_model_file_measures_the_result(tiny_task, tmp_path):
    model, _ = tiny_task
    loaded = load_model(model)
    lm = fake_latency(loaded, LatencySetting(threads=1, batch_size=2, seq_len=16))
    lm.save(tmp_path / "lm.json")
    code, output = prune_cli(
        *("--strategy", "magnitude", "--model", str(model), "--target-speedup", "1.6"),
        *("--latency-model", str(tmp_path / "lm.json"), "--threads", "1", "--batch", "2"),
        *("--output", str(tmp_path / "out"), "--seq-len", "16"),
    )
    assert code == 0, output
    report = json.loads((tmp_path / "out" / "report.json").read_text())["target"]
    assert report["predicted_ratio"] >= 1.6 and report["predicted"] <= report["budget"]
    assert report["measured"]["runs"] >= 30 and report["measured"]["after_ms"] > 0
    assert "measured" in output and "interleaved medians" in output


def test_a_latency_model_of_another_setting_is_refused_in_one_line(tiny_task, tmp_path):
    model, _ = tiny_task
    fake_latency(load_model(model), LatencySetting(threads=1, batch_size=8)).save(
        tmp_path / "lm.json"
    )
    code, output = prune_cli(
        *("--strategy", "magnitude", "--model", str(model), "--target-speedup", "1.6"),
        *("--latency-model", str(tmp_path / "lm.json"), "--threads", "1"),
        *("--output", str(tmp_path / "out")),
    )
    assert code == 1 and output.count("\n") == 1, output
    assert "was measured for another setting (batch_size=8" in output
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--target-speedup", "2", "--heads-ratio", "0.3"], "drop --heads-ratio"),
        (["--threads", "2"], "--threads describe(s) the deployment of a target"),
        (["--target-speedup", "2", "--target-latency", "3"], "give one target"),
        (["--target-macs", "0.5"], "below 1"),
        (["--target-macs", "1000"], "--target-shape layers (every layer's widths chosen"),
        (["--target-macs", "1000", "--target-shape", "layers"], "leaves the model no attention"),
    ],
)
def test_target_mistakes_get_one_line_and_no_output(tiny_task, tmp_path, args, message):
    model, _ = tiny_task
    code, output = prune_cli(
        *("--strategy", "magnitude", "--model", str(model), *args),
        *("--output", str(tmp_path / "out")),
    )
    assert code == 1 and output.count("\n") == 1, output
    assert message in output
    assert not (tmp_path / "out").exists()


def test_the_latency_model_is_measured_once_and_cached(tiny_task, tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime")
    monkeypatch.setenv("COMPRESSKIT_CACHE", str(tmp_path / "cache"))
    model, _ = tiny_task
    outputs = []
    for run in ("first", "second"):
        result = CliRunner().invoke(
            cli,
            [
                *("prune", "--strategy", "magnitude", "--model", str(model)),
                # a budget any model meets: a tiny model's fixed cost, measured on a busy
                # machine, can be most of its latency, and this is about the cache
                *("--target-latency", "1000", "--threads", "1", "--no-verify", "--seq-len", "16"),
                *("--output", str(tmp_path / run)),
            ],
        )
        assert result.exit_code == 0, result.output
        outputs.append(result.output)
    cached = list((tmp_path / "cache" / "latency").glob("bert-*.json"))
    assert len(cached) == 1
    assert "measuring the latency" in outputs[0] and "measuring the latency" not in outputs[1]
    first = json.loads((tmp_path / "first" / "report.json").read_text())["target"]
    second = json.loads((tmp_path / "second" / "report.json").read_text())["target"]
    assert first["heads_per_layer"] == second["heads_per_layer"]
    assert first["ffn_per_layer"] == second["ffn_per_layer"]


@pytest.mark.parametrize("strategy", ["magnitude", *training_time_strategies()])
def test_fine_tuning_to_a_target_prunes_to_the_chosen_widths(tiny_task, tmp_path, strategy):
    """One-shot strategies choose at step 0, training-time ones at their decision; the
    target replaces their ratios either way."""
    model, data = tiny_task
    args = quick_args(strategy) if strategy != "magnitude" else ["--strategy", "magnitude"]
    quick_ratios = [a for a in args if "ratio" in a]
    assert not quick_ratios  # the quick options leave the ratios to the job
    code, output = prune_cli(
        *args,
        *("--model", str(model), "--task", "sst2", "--data", str(data), "--target-macs", "1.5"),
        *("--epochs", "1", "--batch-size", "16", "--max-seq-len", "16", "--no-progress"),
        *("--output", str(tmp_path / "out")),
    )
    assert code == 0, output
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["macs_ratio"] >= 1.5
    assert report["target"]["heads_per_layer"] == [
        layer["heads"] for layer in report["after"]["layers"]
    ]
    assert "target 1.5x fewer MACs" in output


def test_a_target_with_the_dense_reference_is_refused(tiny_task, tmp_path):
    model, data = tiny_task
    code, output = prune_cli(
        *("--strategy", "none", "--model", str(model), "--task", "sst2", "--data", str(data)),
        *("--target-macs", "2", "--output", str(tmp_path / "out")),
    )
    assert code == 1 and "a target needs a strategy's scores" in output


def test_latency_shows_the_cached_model_and_writes_it_for_another_machine(
    tiny_task, tmp_path, monkeypatch
):
    pytest.importorskip("onnxruntime")
    from compresskit.exporters.latency import _machine
    from compresskit.latency import cache_path

    monkeypatch.setenv("COMPRESSKIT_CACHE", str(tmp_path / "cache"))
    model, _ = tiny_task
    setting = LatencySetting(threads=1, batch_size=4, seq_len=16)
    planted = fake_latency(load_model(model), setting)
    planted.save(cache_path(setting, planted.shape, _machine()))
    args = ["latency", "--model", str(model), "--threads", "1", "--batch", "4", "--seq-len", "16"]
    result = CliRunner().invoke(cli, [*args, "--output", str(tmp_path / "lm.json")])
    assert result.exit_code == 0, result.output
    assert "fixed (embeddings, head): 0.400 ms" in result.output  # the planted one: not measured
    assert LatencyModel.load(tmp_path / "lm.json") == planted
    again = CliRunner().invoke(cli, [*args, "--output", str(tmp_path / "lm.json")])
    assert again.exit_code == 1 and "exists: give --overwrite" in again.output


def test_an_int8_target_is_a_speed_up_over_the_float32_model(tiny_task, tmp_path, monkeypatch):
    """ "3x faster with int8": the int8 model's widths are chosen against the float32 model's
    latency (both latency models planted in the cache, so nothing is timed)."""
    pytest.importorskip("onnxruntime")
    from compresskit.exporters.latency import _machine
    from compresskit.latency import cache_path

    monkeypatch.setenv("COMPRESSKIT_CACHE", str(tmp_path / "cache"))
    model, _ = tiny_task
    loaded = load_model(model)
    int8 = LatencySetting(threads=1, seq_len=16, int8=True)
    fp32 = fake_latency(loaded, int8.in_float32())
    fast = fake_latency(loaded, int8)
    fast = LatencyModel(
        int8, fast.shape, fast.fixed_ms / 2, fast.heads_grid, fast.ffn_grid,
        tuple(tuple(v / 2 for v in row) for row in fast.layer_ms), {},
    )  # fmt: skip
    for lm in (fp32, fast):
        lm.save(cache_path(lm.setting, lm.shape, _machine()))
    code, output = prune_cli(
        *("--strategy", "magnitude", "--model", str(model), "--target-speedup", "3"),
        *("--int8", "--threads", "1", "--seq-len", "16", "--no-verify"),
        *("--output", str(tmp_path / "out")),
    )
    assert code == 0, output
    target = json.loads((tmp_path / "out" / "report.json").read_text())["target"]
    assert target["before"] == pytest.approx(fp32.dense())  # the float32 model as given
    assert target["predicted"] <= fp32.dense() / 3
    assert target["predicted"] == pytest.approx(
        fast.predict(target["heads_per_layer"], target["ffn_per_layer"])
    )
