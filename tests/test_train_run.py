"""The fine-tuning pipeline end to end on a tiny model and task: every training-time strategy
searches and decides at the same step every run, the baselines go through the same steps with
the same hyper-parameters, outputs load, and an interrupted run resumes."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from helpers import training_time_strategies
from transformers import TrainerCallback

import compresskit
from compresskit.errors import ConfigError, OutputExistsError
from compresskit.io import MANIFEST
from compresskit.registry import get_strategy, get_strategy_class, strategy_names
from compresskit.train import run as run_module
from compresskit.train.data import load_task
from compresskit.train.encode import collator, encode_split
from compresskit.train.metrics import accuracy
from compresskit.train.run import (
    FIGURE,
    REPORT,
    TrainingOptions,
    TrainJob,
    TrainReport,
    run_training,
)

# 128 examples, batch 16: 8 steps an epoch, 16 in all.
TRAINING = TrainingOptions(epochs=2, batch_size=16, lr=5e-3, max_seq_len=16, progress=False)
STEPS = 16
ONE_SHOT = {"heads_ratio": 0.25, "ffn_ratio": 0.5}
TRAINING_TIME = training_time_strategies()


def options_of(strategy: str) -> dict[str, Any]:
    """The ratios, and a training-time strategy's quick options (it decides within 16 steps)."""
    if strategy == "none":
        return {}
    quick = getattr(get_strategy_class(strategy), "quick_options", {})
    return ONE_SHOT | dict(quick)


def make_job(tiny_task: tuple[Path, Path], output: Path, strategy: str, **changes: Any) -> TrainJob:
    model, data = tiny_task
    job = TrainJob(
        model=str(model),
        strategy=strategy,
        task="sst2",
        data=str(data),
        output=output,
        options=options_of(strategy),
        training=TRAINING,
    )
    return replace(job, **changes)


@pytest.fixture(scope="module", params=TRAINING_TIME)
def strategy(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def searched_runs(
    strategy: str, tiny_task: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory
) -> list[TrainReport]:
    root = tmp_path_factory.mktemp(f"{strategy}_runs")
    return [run_training(make_job(tiny_task, root / f"run{i}", strategy)) for i in range(2)]


# --- every training-time strategy ------------------------------------------------------------
def slim_steps(report: TrainReport) -> int:
    """The slim training's steps after a search: the rest of the budget, or all of it for a
    strategy that restarts training (earlybird rewinding)."""
    assert report.search is not None
    restarts = get_strategy(report.job.strategy, **report.job.options).restarts_training
    return STEPS if restarts else STEPS - report.search.steps


def test_a_seeded_search_decides_at_the_same_step_every_run(
    searched_runs: list[TrainReport],
) -> None:
    first, second = searched_runs
    assert first.search is not None and second.search is not None
    assert first.search.decided_at == second.search.decided_at
    assert first.search.history == second.search.history
    manifests = [json.loads((r.job.output / MANIFEST).read_text()) for r in searched_runs]
    assert manifests[0]["layers"] == manifests[1]["layers"]


def test_the_search_stops_at_its_decision_and_the_slim_model_trains_the_rest_of_the_budget(
    searched_runs: list[TrainReport],
) -> None:
    """... or, for a strategy that restarts training (earlybird rewinding), all of it."""
    report = searched_runs[0]
    assert report.search is not None and report.search.decided_at is not None
    searched = report.search.decided_at
    assert report.steps == {"search": searched, "train": slim_steps(report)}
    assert report.search.decided_at <= STEPS
    time = report.time.to_dict()
    assert (time["budget_steps"], time["search_steps"]) == (STEPS, searched)
    assert time["search_fraction"] == pytest.approx(searched / STEPS, abs=1e-4)
    assert time["dense_estimate_seconds"] > 0 and time["estimated_saving"] is not None


def test_pruned_shapes_match_the_ratios(searched_runs: list[TrainReport]) -> None:
    model = compresskit.load(searched_runs[0].job.output)
    plan = compresskit.PruningPlan.of_model(model)
    assert plan.heads_per_layer == [3, 3]  # 1 of 4 heads removed in each layer
    assert sum(plan.ffn_per_layer) == 16  # half of 2 x 16 neurons, ranked globally


def test_the_saved_model_loads_and_scores_what_the_report_says(
    searched_runs: list[TrainReport], tiny_task: tuple[Path, Path]
) -> None:
    report = searched_runs[0]
    model = compresskit.load(report.job.output).eval()
    tokenizer = __import__("transformers").AutoTokenizer.from_pretrained(report.job.output)
    dev = encode_split(load_task("sst2", tiny_task[1]), "dev", tokenizer, TRAINING.max_seq_len)
    inputs = collator(tokenizer)([{k: v for k, v in f.items()} for f in dev.features])
    with torch.no_grad():
        logits = model(**{k: v for k, v in inputs.items() if k != "labels"}).logits
    assert accuracy(logits.argmax(-1).numpy(), np.array(dev.labels)) == report.metrics["accuracy"]


def test_outputs_record_plan_strategy_ticket_timings_and_figure(
    searched_runs: list[TrainReport],
) -> None:
    out = searched_runs[0].job.output
    manifest = json.loads((out / MANIFEST).read_text())
    report = searched_runs[0]
    assert manifest["strategy"] == report.strategy
    assert report.search is not None and manifest["search"] == report.search.to_dict()
    assert manifest["search"]["history"]
    assert manifest["task"] == {"name": "sst2", "labels": ["0", "1"]}
    report = json.loads((out / REPORT).read_text())
    assert set(report["seconds"]) == {
        *("load", "search", "prune", "train", "evaluate", "save", "total"),
    }
    assert report["seconds"]["total"] >= sum(
        v for k, v in report["seconds"].items() if k not in ("total", "save")
    )
    assert report["primary_metric"] == "accuracy" and 0 <= report["metrics"]["accuracy"] <= 1
    assert report["macs_ratio"] > 1 and report["params_ratio"] > 1
    assert (out / FIGURE).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not out.with_name(out.name + ".run").exists()  # the work folder is cleaned up


# --- every strategy, and the dense reference ---------------------------------------------------
@pytest.mark.parametrize("strategy", ["none", *strategy_names()])
def test_every_strategy_runs_through_the_same_pipeline(
    strategy: str, tiny_task: tuple[Path, Path], tmp_path: Path
) -> None:
    options = {} if strategy == "none" else ONE_SHOT
    report = run_training(make_job(tiny_task, tmp_path / "out", strategy, options=options))
    model = compresskit.load(tmp_path / "out")
    plan = compresskit.PruningPlan.of_model(model)
    assert (tmp_path / "out" / FIGURE).is_file()
    if strategy == "none":
        assert plan.heads_per_layer == [4, 4] and report.after == report.dense
        assert report.steps == {"train": STEPS} and report.search is None
        return
    assert plan.heads_per_layer == [3, 3] and sum(plan.ffn_per_layer) == 16
    assert "prune" in report.seconds
    if get_strategy_class(strategy).kind == "training-time":
        assert report.search is not None and report.search.decided_at is not None
        assert report.steps == {"search": report.search.steps, "train": slim_steps(report)}
        assert report.to_dict()["search"]["history"]
    else:
        assert report.steps == {"train": STEPS} and report.search is None
        assert "score" in report.seconds


def test_none_refuses_pruning_options(tiny_task: tuple[Path, Path], tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--strategy none trains the dense model"):
        run_training(make_job(tiny_task, tmp_path / "out", "none", options=ONE_SHOT))
    assert not (tmp_path / "out.run").exists()


# --- refusing and resuming -------------------------------------------------------------------
def test_an_existing_output_is_refused_before_any_work(
    tiny_task: tuple[Path, Path], tmp_path: Path
) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    with pytest.raises(OutputExistsError):
        run_training(make_job(tiny_task, tmp_path / "out", "random"))
    assert (tmp_path / "out" / "keep.txt").read_text() == "mine"


class _Interrupt(TrainerCallback):
    """Stops the slim training like Ctrl-C would, after `at` optimizer steps."""

    def __init__(self, at: int) -> None:
        self.at = at

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.global_step == self.at:
            raise KeyboardInterrupt


@pytest.fixture
def interrupted(
    strategy: str, tiny_task: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> TrainJob:
    """A run interrupted one step past the middle of the slim training (after a checkpoint)."""
    real_trainer = run_module._trainer

    def trainer_that_stops(*args: Any, **kwargs: Any) -> Any:
        trainer = real_trainer(*args, **kwargs)
        if Path(args[2]).name == "train":  # the slim training, not the search
            trainer.add_callback(_Interrupt(STEPS // 2 + 1))
        return trainer

    job = make_job(tiny_task, tmp_path / "out", strategy)
    with monkeypatch.context() as patch:
        patch.setattr(run_module, "_trainer", trainer_that_stops)
        with pytest.raises(KeyboardInterrupt):
            run_training(job)
    return job


def test_an_interrupted_run_leaves_its_work_and_no_output(interrupted: TrainJob) -> None:
    assert not interrupted.output.exists()
    assert (interrupted.run_dir / "plan.json").is_file()
    assert (interrupted.run_dir / "train" / f"checkpoint-{STEPS // 2}").is_dir()


def test_resume_finishes_the_run_as_if_never_interrupted(
    interrupted: TrainJob, searched_runs: list[TrainReport]
) -> None:
    report = run_training(replace(interrupted, resume=True))
    reference = searched_runs[0]
    assert report.resumed and report.steps == reference.steps
    assert report.search == reference.search
    resumed, whole = compresskit.load(interrupted.output), compresskit.load(reference.job.output)
    for (name, a), (_, b) in zip(
        resumed.state_dict().items(), whole.state_dict().items(), strict=True
    ):
        torch.testing.assert_close(a, b, msg=name)
    assert not interrupted.run_dir.exists()


def test_an_unfinished_run_is_not_silently_restarted(interrupted: TrainJob) -> None:
    with pytest.raises(ConfigError, match="--resume"):
        run_training(interrupted)


def test_resume_refuses_changed_options(interrupted: TrainJob) -> None:
    changed = replace(interrupted, resume=True, training=replace(TRAINING, lr=1e-3))
    with pytest.raises(ConfigError, match="different training"):
        run_training(changed)


def test_the_figure_explains_an_empty_search_and_names_the_run(tmp_path):
    from compresskit.train.figure import title, write_figure

    layers = [{"index": 0, "heads": 2, "ffn_width": 8}]
    report = {
        "model": "/models/tiny-bert",
        "task": "sst2",
        "strategy": {"strategy": "earlybird"},
        "metrics": {"accuracy": 0.75},
        "primary_metric": "accuracy",
        "macs_ratio": 1.6,
        "time": {"estimated_saving": 0.21},
        "search": {
            "state": "capped",
            "decided_at": 1,
            "history": [],
            "plot": {"series": ["heads"]},
        },
        "curve": [{"stage": "search", "step": 1, "seconds": 0.5, "loss": 0.7}],
        "after": {"layers": layers},
        "dense": {"layers": [{"index": 0, "heads": 4, "ffn_width": 16}]},
    }
    assert title(report) == (
        "tiny-bert, earlybird on sst2, accuracy 0.7500, 1.60x fewer MACs, "
        "est. 21% less training time than dense"
    )
    write_figure(tmp_path / "f.png", report)
    assert (tmp_path / "f.png").read_bytes()[:4] == b"\x89PNG"
