"""One step budget for search and slim training (train/handoff.py), for every training-time
strategy that continues the budget: the slim model starts from exactly what the search
trained, with the searched optimizer moments of the units it keeps; search and slim training
together see the batches and learning rates that dense training of the same budget sees, in
the same order, none twice; the steps add up to the budget."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import VOCAB
from helpers import max_diff_at_tokens, outputs, search_in_trainer, training_time_strategies
from transformers import Trainer, TrainerCallback

import compresskit
from compresskit.registry import get_strategy, get_strategy_class
from compresskit.train import run as run_module
from compresskit.train.handoff import Handoff
from compresskit.train.run import TrainingOptions, TrainJob, run_training

# isort: split
from compresskit.strategies.base import TrainingTimeStrategy

RATIOS = {"heads_ratio": 0.25, "ffn_ratio": 0.5}
LAYERS, HEADS, FFN = 2, 4, 16


def continuing_options(name: str) -> dict[str, Any]:
    """The ratios and quick options, and no restart for a strategy that can restart
    (earlybird's `rewind`)."""
    cls = get_strategy_class(name)
    options = RATIOS | dict(getattr(cls, "quick_options", {}))
    if "rewind" in {f.name for f in dataclasses.fields(cls.Config)}:
        options["rewind"] = False
    return options


STRATEGIES = [
    name
    for name in training_time_strategies()
    if not get_strategy(name, **continuing_options(name)).restarts_training  # type: ignore[attr-defined]
]


def searched(name: str, tmp_path: Path) -> tuple[TrainingTimeStrategy, torch.nn.Module, Trainer]:
    """A strategy that decided inside a plain Trainer on a tiny classifier."""
    strategy = get_strategy(name, **continuing_options(name))
    assert isinstance(strategy, TrainingTimeStrategy)
    model, trainer = search_in_trainer(strategy, tmp_path, max_steps=40)
    assert strategy.decided and trainer.state.global_step < 40
    return strategy, model, trainer


def inputs() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    mask = torch.ones(3, 10, dtype=torch.long)
    mask[1, 6:] = 0
    return {"input_ids": torch.randint(3, VOCAB, (3, 10), generator=g), "attention_mask": mask}


@pytest.mark.parametrize("name", STRATEGIES)
def test_the_slim_model_computes_what_the_searched_model_computes_with_the_units_masked(
    name, tmp_path
):
    strategy, model, _ = searched(name, tmp_path)
    plan = strategy.finish(model)
    model.eval()
    want = outputs(compresskit.mask(model, plan), inputs())  # what the strategy added included
    strategy.detach()
    strategy.prepare_slim(model)
    got = outputs(compresskit.prune(model, plan), inputs())
    assert max_diff_at_tokens(want, got, inputs()["attention_mask"]) <= 1e-5


@pytest.mark.parametrize("name", STRATEGIES)
def test_the_kept_units_keep_their_searched_moments(name, tmp_path):
    strategy, model, trainer = searched(name, tmp_path)
    plan = strategy.finish(model)
    strategy.detach()
    strategy.prepare_slim(model)
    state = trainer.optimizer.state
    handoff = Handoff.capture(trainer, model, plan)
    head_dim = model.config.hidden_size // HEADS
    for i, layer_plan in enumerate(plan.layers):
        heads = [h * head_dim + d for h in layer_plan.heads_kept for d in range(head_dim)]
        neurons = list(layer_plan.ffn_kept)
        layer = model.bert.encoder.layer[i]
        prefix = f"bert.encoder.layer.{i}"
        cuts = {  # parameter -> (its name, the dimension the plan cuts, the kept indices)
            layer.attention.self.query.weight: (f"{prefix}.attention.self.query.weight", 0, heads),
            layer.attention.output.dense.weight: (
                f"{prefix}.attention.output.dense.weight",
                1,
                heads,
            ),
            layer.intermediate.dense.bias: (f"{prefix}.intermediate.dense.bias", 0, neurons),
            layer.output.dense.weight: (f"{prefix}.output.dense.weight", 1, neurons),
        }
        for parameter, (key, dim, kept) in cuts.items():
            for moment in ("exp_avg", "exp_avg_sq"):
                searched_moment = state[parameter][moment].index_select(dim, torch.tensor(kept))
                assert torch.equal(handoff.moments[key][moment], searched_moment), (key, moment)
    embeddings = "bert.embeddings.word_embeddings.weight"  # not cut: the same tensor values
    assert torch.equal(
        handoff.moments[embeddings]["exp_avg"],
        state[model.bert.embeddings.word_embeddings.weight]["exp_avg"],
    )


# --- through the pipeline: the budget, the data and the schedule ------------------------------
class Seen(TrainerCallback):
    """The learning rate of every optimizer step, over all the Trainers of a run."""

    def __init__(self, lrs: list[float]) -> None:
        self.lrs = lrs

    def on_pre_optimizer_step(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        self.lrs.append(kw["optimizer"].param_groups[0]["lr"])


def watched_run(
    tiny_task: tuple[Path, Path], output: Path, strategy: str, monkeypatch: pytest.MonkeyPatch
) -> tuple[list[list[list[int]]], list[float], Any]:
    """Run `strategy` (2 epochs of 8 steps, warm-up then decay) and return the input ids of
    every training batch the model saw, the lr of every optimizer step, and the report."""
    batches: list[list[list[int]]] = []
    lrs: list[float] = []
    real_trainer = run_module._trainer

    def record(module: Any, args: Any, kwargs: dict[str, Any]) -> None:
        if module.training:
            batches.append(kwargs["input_ids"].tolist())

    def watched(*args: Any, **kwargs: Any) -> Trainer:
        trainer = real_trainer(*args, **kwargs)
        trainer.add_callback(Seen(lrs))
        if not getattr(trainer.model, "_watched", False):
            trainer.model.register_forward_pre_hook(record, with_kwargs=True)
            trainer.model._watched = True
        return trainer

    model, data = tiny_task
    training = TrainingOptions(epochs=2, batch_size=16, lr=5e-3, max_seq_len=16, progress=False)
    job = TrainJob(
        str(model), strategy, "sst2", str(data), output, training=training,
        options={} if strategy == "none" else continuing_options(strategy),
    )  # fmt: skip
    with monkeypatch.context() as patch:
        patch.setattr(run_module, "_trainer", watched)
        report = run_training(dataclasses.replace(job, training=training))
    return batches, lrs, report


@pytest.fixture(scope="module")
def dense_run(tiny_task, tmp_path_factory) -> tuple[list[list[list[int]]], list[float], Any]:
    with pytest.MonkeyPatch.context() as patch:
        return watched_run(tiny_task, tmp_path_factory.mktemp("dense") / "out", "none", patch)


@pytest.mark.parametrize("name", STRATEGIES)
def test_search_and_slim_training_see_the_batches_and_lrs_of_dense_training(
    name, tiny_task, tmp_path, monkeypatch, dense_run
):
    batches, lrs, report = watched_run(tiny_task, tmp_path / "out", name, monkeypatch)
    dense_batches, dense_lrs, _ = dense_run
    assert report.search is not None and 0 < report.search.steps < 16
    assert report.steps["search"] + report.steps["train"] == 16 == len(dense_batches)
    assert batches == dense_batches  # the same batches in the same order: none twice or missed
    assert lrs == pytest.approx(dense_lrs, rel=1e-12)  # the first slim step's included
    assert report.time.slim_steps == 16 - report.search.steps
