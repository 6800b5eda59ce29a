"""Every registered training-time strategy (built in, or a plugin installed)
through the contract alone: inside a plain Trainer with the one StrategyCallback it decides, its
plan prunes the model to the requested shapes exactly (the pruned model computes what the
masked one does), its state survives JSON, and `detach` gives back the model it was attached
to. No test here names a strategy."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import VOCAB, tiny_model
from helpers import (
    assert_pruned_equals_masked,
    max_diff_at_tokens,
    outputs,
    search_in_trainer,
    training_time_strategies,
)

import compresskit
from compresskit.registry import get_strategy

# isort: split
from compresskit.strategies.base import SearchRecord, TrainingTimeStrategy

TRAINING_TIME = training_time_strategies()
RATIOS = {"heads_ratio": 0.25, "ffn_ratio": 0.5}
LAYERS, HEADS, FFN, STEPS = 2, 4, 16, 8


def search(name: str, tmp_path: Path) -> tuple[TrainingTimeStrategy, torch.nn.Module]:
    strategy = get_strategy(name, **RATIOS)
    assert isinstance(strategy, TrainingTimeStrategy)
    model, _ = search_in_trainer(strategy, tmp_path, max_steps=STEPS)
    return strategy, model


def inputs() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    mask = torch.ones(3, 10, dtype=torch.long)
    mask[1, 6:] = 0
    return {"input_ids": torch.randint(3, VOCAB, (3, 10), generator=g), "attention_mask": mask}


@pytest.mark.parametrize("name", TRAINING_TIME)
def test_the_strategy_decides_within_the_budget_and_its_plan_prunes_exactly(name, tmp_path):
    strategy, model = search(name, tmp_path)
    assert strategy.decided
    plan = strategy.finish(model)
    strategy.detach()
    strategy.prepare_slim(model)
    assert plan.heads_per_layer == [3] * LAYERS and sum(plan.ffn_per_layer) == FFN * LAYERS // 2
    model.eval()
    assert_pruned_equals_masked(model, plan, inputs())


@pytest.mark.parametrize("name", TRAINING_TIME)
def test_detach_leaves_the_model_as_it_was_attached(name):
    model = tiny_model("bert", layers=LAYERS, heads=HEADS, ffn=FFN).eval()
    before = outputs(model, inputs())
    keys = set(model.state_dict())
    strategy = get_strategy(name, **RATIOS)
    assert isinstance(strategy, TrainingTimeStrategy)
    strategy.attach(model, as_submodule=True)
    assert strategy.attached
    strategy.detach()
    assert not strategy.attached and set(model.state_dict()) == keys
    assert max_diff_at_tokens(before, outputs(model, inputs()), inputs()["attention_mask"]) == 0


@pytest.mark.parametrize("name", TRAINING_TIME)
def test_the_state_and_record_survive_json(name, tmp_path):
    strategy, model = search(name, tmp_path)
    state = json.loads(json.dumps(strategy.state_dict()))
    plan = strategy.finish(model)
    strategy.detach()
    resumed = get_strategy(name, **RATIOS)
    assert isinstance(resumed, TrainingTimeStrategy)
    resumed.attach(model)
    resumed.load_state_dict(state)
    assert resumed.decided and resumed.finish(model) == plan
    record = strategy.record()
    assert isinstance(record, SearchRecord) and record.decided_at is not None
    assert SearchRecord.from_dict(json.loads(json.dumps(record.to_dict()))) == record


@pytest.mark.parametrize("name", TRAINING_TIME)
def test_one_shot_use_is_refused_with_a_pointer_to_training(name, tmp_path):
    compresskit.save(tiny_model("bert", layers=LAYERS, heads=HEADS, ffn=FFN), tmp_path / "m")
    from compresskit.errors import ConfigError
    from compresskit.pipeline import PruneJob, run_prune

    with pytest.raises(ConfigError, match="prunes while training: give --task and --data"):
        run_prune(PruneJob(str(tmp_path / "m"), name, tmp_path / "out", dict(RATIOS)))
