"""PruningPlan: plain data, JSON round trip, validation, and the score -> plan helpers."""

from __future__ import annotations

import contextlib
import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from compresskit.errors import PlanError
from compresskit.plan import LayerPlan, PruningPlan, keep_by_score, plan_from_scores
from compresskit.pruner import prune

sorted_unique = st.lists(st.integers(0, 50), max_size=12, unique=True).map(sorted)
plans = st.lists(st.tuples(sorted_unique, sorted_unique), min_size=1, max_size=4).map(
    lambda layers: PruningPlan.from_lists([h for h, _ in layers], [f for _, f in layers])
)


@given(plans)
def test_plan_round_trips_through_json(plan):
    assert PruningPlan.from_json(plan.to_json()) == plan


def test_plan_reads_and_writes_files(tmp_path):
    plan = PruningPlan.from_lists([[0, 2]], [[1, 3, 5]])
    plan.to_json(tmp_path / "plan.json")
    assert PruningPlan.from_json(tmp_path / "plan.json") == plan


@pytest.mark.parametrize(
    "layer",
    [
        {"heads_kept": [2, 1], "ffn_kept": []},
        {"heads_kept": [1, 1], "ffn_kept": []},
        {"heads_kept": [-1], "ffn_kept": []},
        {"heads_kept": [0.5], "ffn_kept": []},
        {"heads_kept": [True], "ffn_kept": []},
        {"heads_kept": "0,1", "ffn_kept": []},
        {"heads_kept": [0]},
    ],
)
def test_malformed_layers_are_rejected_with_the_layer_named(layer):
    with pytest.raises(PlanError, match="layer 0"):
        PruningPlan.from_dict({"layers": [layer]})


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=5),
        lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=9), c, max_size=4),
    )
)
@settings(max_examples=200)
def test_any_json_value_either_parses_or_raises_plan_error(value):
    with contextlib.suppress(PlanError):
        PruningPlan.from_dict(value)


def test_invalid_json_text_is_a_plan_error():
    with pytest.raises(PlanError, match="not valid JSON"):
        PruningPlan.from_json("{nope")


def test_plan_of_a_dense_model_keeps_everything(make_tiny):
    plan = PruningPlan.of_model(make_tiny("bert", layers=2, heads=4, ffn=40))
    assert plan.layers == (LayerPlan((0, 1, 2, 3), tuple(range(40))),) * 2


def test_validate_rejects_wrong_layer_count(make_tiny):
    with pytest.raises(PlanError, match="plan has 1 layers but the model has 3"):
        PruningPlan.from_lists([[0]], [[0]]).validate(make_tiny("bert"))


def test_validate_rejects_out_of_range_indices(make_tiny):
    model = make_tiny("bert", layers=1, heads=4, ffn=40)
    with pytest.raises(PlanError, match=r"layer 0: the plan keeps heads \[4\]"):
        PruningPlan.from_lists([[0, 4]], [[0]]).validate(model)


def test_validate_rejects_units_already_pruned(make_tiny):
    model = prune(make_tiny("bert", layers=1), PruningPlan.from_lists([[0, 1]], [[0, 1]]))
    with pytest.raises(PlanError, match=r"FFN neurons \[2\]"):
        PruningPlan.from_lists([[0]], [[2]]).validate(model)


def test_intersect_keeps_what_both_keep():
    a = PruningPlan.from_lists([[0, 1, 2]], [[0, 1, 2, 3]])
    b = PruningPlan.from_lists([[1, 2, 3]], [[3]])
    assert a.intersect(b) == PruningPlan.from_lists([[1, 2]], [[3]])


# --- keep_by_score -------------------------------------------------------------------------
def test_per_layer_ratio_removes_the_lowest_scores_of_each_layer():
    scores = [torch.tensor([0.5, 0.1, 0.9, 0.3]), torch.tensor([4.0, 3.0, 2.0, 1.0])]
    assert keep_by_score(scores, 0.5, scope="layer") == [[0, 2], [0, 1]]


def test_a_third_of_twelve_heads_is_four_even_written_as_0_3333():
    assert [len(k) for k in keep_by_score([torch.arange(12.0)], 0.3333)] == [8]


def test_global_ratio_ranks_across_layers_and_can_leave_layers_uneven():
    scores = [torch.tensor([1.0, 2.0, 3.0]), torch.tensor([10.0, 20.0, 30.0])]
    assert keep_by_score(scores, 0.5, scope="global") == [[], [0, 1, 2]]


def test_round_to_makes_widths_a_multiple_without_exceeding_the_layer():
    scores = [torch.rand(37), torch.rand(5)]
    kept = keep_by_score(scores, 0.3, scope="layer", round_to=8)
    assert [len(k) for k in kept] == [24, 5]


def test_min_kept_is_respected_even_when_global_ranking_empties_a_layer():
    scores = [torch.tensor([1.0, 2.0, 3.0]), torch.tensor([10.0, 20.0, 30.0])]
    assert keep_by_score(scores, 0.5, scope="global", min_kept=1) == [[2], [0, 1, 2]]


def test_ties_keep_the_lower_position_so_results_are_deterministic():
    assert keep_by_score([torch.zeros(4)], 0.5) == [[0, 1]]


@pytest.mark.parametrize("ratio", [-0.1, 1.0, 1.5])
def test_ratios_outside_zero_one_are_rejected(ratio):
    with pytest.raises(PlanError, match=r"outside \[0, 1\)"):
        keep_by_score([torch.rand(4)], ratio)


@given(
    st.lists(st.integers(0, 30), min_size=1, max_size=5),
    st.floats(0, 0.99),
    st.sampled_from(["layer", "global"]),
    st.integers(1, 8),
)
@settings(max_examples=150, deadline=None)
def test_kept_positions_are_sorted_unique_and_in_range(sizes, ratio, scope, round_to):
    g = torch.Generator().manual_seed(sum(sizes))
    scores = [torch.rand(n, generator=g) for n in sizes]
    try:
        kept = keep_by_score(scores, ratio, scope=scope, round_to=round_to)
    except PlanError as err:  # refused only when the ratio rounds to removing every unit
        groups = sizes if scope == "layer" else [sum(sizes)]
        assert "removes all" in str(err)
        assert all(n - int(ratio * n + 0.5 + 1e-9) == 0 for n in groups)
        return
    for positions, n in zip(kept, sizes, strict=True):
        assert positions == sorted(set(positions))
        assert all(0 <= p < n for p in positions)
    if scope == "global" and round_to == 1:
        assert sum(map(len, kept)) == sum(sizes) - int(ratio * sum(sizes) + 0.5 + 1e-9)


def test_plan_from_scores_maps_positions_to_original_indices(make_tiny):
    model = prune(
        make_tiny("bert", layers=1, heads=4, ffn=40), PruningPlan.from_lists([[1, 3]], [[5, 6, 7]])
    )
    plan = plan_from_scores(
        model,
        [torch.tensor([0.0, 1.0])],
        [torch.tensor([3.0, 1.0, 2.0])],
        heads_ratio=0.5,
        ffn_ratio=0.34,
    )
    assert plan == PruningPlan.from_lists([[3]], [[5, 7]])


def test_plan_from_scores_rejects_scores_of_the_wrong_size(make_tiny):
    model = make_tiny("bert", layers=1, heads=4, ffn=40)
    with pytest.raises(PlanError, match="head scores have sizes"):
        plan_from_scores(model, [torch.rand(3)], [torch.rand(40)], heads_ratio=0.5, ffn_ratio=0)


def test_plan_json_keeps_index_lists_on_one_line():
    text = PruningPlan.from_lists([[0, 1]], [[2, 3]]).to_json()
    assert '"heads_kept": [0, 1]' in text
    assert json.loads(text)["version"] == 1
