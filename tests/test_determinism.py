"""The same seed gives the same plan, the same ticket step and, on CPU, the same final metrics,
for every registered strategy (the registry is iterated, so a new strategy is tested too)."""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import batch, tiny_model

from compresskit.io import MANIFEST
from compresskit.registry import get_strategy, get_strategy_class, strategy_names
from compresskit.train.run import TrainingOptions, TrainJob, TrainReport, run_training

RATIOS = {"heads_ratio": 0.25, "ffn_ratio": 0.5}
# Options that make a training-time search end within the tiny run; given to strategies
# whose config has them.
SEARCH = {"mask_interval": 1, "window": 2, "coef_lr": 0.05}
# 128 examples, batch 16: 8 steps.
TRAINING = TrainingOptions(epochs=1, batch_size=16, lr=5e-3, max_seq_len=16, progress=False)


def options(name: str, seed: int) -> dict[str, Any]:
    known = {f.name for f in fields(get_strategy_class(name).Config)}
    return RATIOS | {k: v for k, v in SEARCH.items() if k in known} | {"seed": seed}


def labelled_batches(model: torch.nn.Module) -> list[dict[str, torch.Tensor]]:
    """Two batches with class labels, for strategies that score with data."""
    batches = [batch(model, seed=s) for s in (1, 2)]
    return [b | {"labels": torch.arange(b["input_ids"].shape[0]) % 2} for b in batches]


@pytest.mark.parametrize("name", strategy_names())
def test_the_same_seed_gives_the_same_one_shot_plan(name):
    if get_strategy_class(name).kind != "one-shot":
        pytest.skip(f"{name} chooses while training: see the training test below")
    plans = []
    for global_seed in (1, 2):  # a strategy must not depend on the global random state
        torch.manual_seed(global_seed)
        model = tiny_model("bert")
        plans.append(
            get_strategy(name, **options(name, seed=7)).plan(model, labelled_batches(model))
        )
    assert plans[0] == plans[1]


@pytest.fixture(scope="module")
def twice_trained(tiny_task: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Two seeded fine-tuning runs of a strategy, made when a test first asks for them."""
    root, runs = tmp_path_factory.mktemp("determinism"), {}
    model, data = tiny_task

    def trained(name: str) -> list[TrainReport]:
        if name not in runs:
            runs[name] = [
                run_training(
                    TrainJob(
                        model=str(model),
                        strategy=name,
                        task="sst2",
                        data=str(data),
                        output=root / f"{name}-{i}",
                        options=options(name, seed=3),
                        training=TRAINING,
                    )
                )
                for i in range(2)
            ]
        return runs[name]

    return trained


@pytest.mark.parametrize("name", strategy_names())
def test_the_same_seed_gives_the_same_plan_ticket_and_metrics_after_training(twice_trained, name):
    first, second = twice_trained(name)
    layers = [json.loads((r.job.output / MANIFEST).read_text())["layers"] for r in (first, second)]
    assert layers[0] == layers[1]
    if get_strategy_class(name).kind != "one-shot":  # it searched: the same way both times
        assert first.search is not None and second.search is not None
        assert first.search.decided_at is not None
        assert first.search.decided_at == second.search.decided_at
        assert first.search.history == second.search.history
    assert first.metrics == second.metrics  # exactly: CPU training is deterministic
