"""A third-party *training-time* strategy, installed as a package that only declares an entry
point and implements the TrainingTimeStrategy contract, runs end to end through
`compresskit prune --task sst2`: its options reach it from the command line (a generated flag)
and from a recipe, and a run killed in the middle of its search resumes to the same decision,
plan and metrics. compresskit is not changed for it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import install_plugin, kill_when

from compresskit.testing import write_tiny_checkpoint, write_tiny_sentiment

PLUGIN_MODULE = '''
"""Prune the heads and FFN neurons whose output-projection columns got the smallest
gradients, summed over the first `decide_at` optimizer steps."""
from dataclasses import dataclass, field

import torch
from compresskit.arch import get_adapter
from compresskit.strategies.base import (
    Scores, SearchRecord, StrategyConfig, TrainingTimeStrategy, option_help)


@dataclass(frozen=True)
class GradientSumConfig(StrategyConfig):
    decide_at: int = field(default=4, metadata=option_help("Decide after this many steps."))


class GradientSum(TrainingTimeStrategy):
    """Demo plugin: keep the units whose output columns got the largest gradients."""

    Config = GradientSumConfig

    def __init__(self, config=None, **options):
        super().__init__(config, **options)
        self.model, self.sums, self.seen, self.decided_at = None, None, [], None

    def attach(self, model, *, as_submodule=False):
        adapter = get_adapter(model)
        self.model = model
        self.sums = Scores([torch.zeros(adapter.num_heads(l)) for l in adapter.layers()],
                           [torch.zeros(adapter.ffn_width(l)) for l in adapter.layers()])

    def detach(self):
        self.model = None

    @property
    def attached(self):
        return self.model is not None

    @torch.no_grad()
    def before_optimizer_step(self):
        adapter = get_adapter(self.model)
        for i, layer in enumerate(adapter.layers()):
            out = adapter.attention_parts(layer).output.weight.grad.abs().sum(0)
            self.sums.heads[i] += out.reshape(-1, adapter.head_dim(layer)).sum(1)
            self.sums.ffn[i] += adapter.ffn_parts(layer).down.weight.grad.abs().sum(0)

    def on_step(self, step):
        self.seen.append({"step": step, "total": float(sum(s.sum() for s in self.sums.heads))})
        if step >= self.config.decide_at:
            self.decided_at = step
        return self.decided

    @property
    def decided(self):
        return self.decided_at is not None

    def end(self, step):
        self.decided_at = step

    def scores(self, model, batches=None):
        return self.sums

    def state_dict(self):
        return {"heads": [s.tolist() for s in self.sums.heads],
                "ffn": [s.tolist() for s in self.sums.ffn],
                "seen": self.seen, "decided_at": self.decided_at}

    def load_state_dict(self, state):
        self.sums = Scores([torch.tensor(s) for s in state["heads"]],
                           [torch.tensor(s) for s in state["ffn"]])
        self.seen, self.decided_at = state["seen"], state["decided_at"]

    def record(self):
        return SearchRecord("decided", self.decided_at, self.seen,
                            {"title": "gradient sums", "series": ["total"]},
                            {"decide_at": self.config.decide_at})
'''

PYPROJECT = """
[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "ck-gradient-sum"
version = "1.0"

[project.entry-points."compresskit.strategies"]
gradsum = "ck_gradient_sum:GradientSum"
"""
# 128 examples, batch 8: 16 steps an epoch; the search decides at --decide-at.
TRAIN = ["--task", "sst2", "--epochs", "2", "--batch-size", "8", "--max-seq-len", "16",
         "--heads-ratio", "0.5", "--ffn-ratio", "0.25", "--lr", "1e-3",
         "--no-progress"]  # fmt: skip


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return install_plugin(
        tmp_path_factory.mktemp("plugin-src"),
        tmp_path_factory.mktemp("plugin-site"),
        PYPROJECT,
        {"ck_gradient_sum": PLUGIN_MODULE},
    )


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("inputs")
    return write_tiny_checkpoint(root / "model"), write_tiny_sentiment(root / "data")


def command(site: Path, inputs: tuple[Path, Path], output: Path, *extra: str) -> list[str]:
    model, data = inputs
    return [
        *[sys.executable, "-m", "compresskit", "prune", "--strategy", "gradsum"],
        *["--model", str(model), "--data", str(data), "--output", str(output), *TRAIN, *extra],
    ]


def environment(site: Path) -> dict[str, str]:
    return os.environ | {"PYTHONPATH": str(site), "OMP_NUM_THREADS": "1"}


def run(site: Path, args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, env=environment(site), capture_output=True, text=True, timeout=300)


def outcome(output: Path) -> dict[str, object]:
    report = json.loads((output / "report.json").read_text())
    manifest = json.loads((output / "compresskit.json").read_text())
    return {"search": report["search"], "layers": manifest["layers"], "metrics": report["metrics"]}


def test_the_plugin_is_listed_as_training_time(site):
    done = run(site, [sys.executable, "-m", "compresskit", "strategies", "--json"])
    listed = {s["name"]: s for s in json.loads(done.stdout)}
    assert listed["gradsum"]["kind"] == "training-time"
    assert listed["gradsum"]["provider"] == "ck-gradient-sum"


@pytest.mark.parametrize("how", ["flag", "recipe"])
def test_the_plugin_prunes_while_training_with_its_options(site, inputs, tmp_path, how):
    extra = ["--decide-at", "5"]
    if how == "recipe":
        (tmp_path / "r.yaml").write_text("decide-at: 5\n")
        extra = ["--recipe", str(tmp_path / "r.yaml")]
    done = run(site, command(site, inputs, tmp_path / "out", *extra))
    assert done.returncode == 0, done.stderr[-2000:]
    result = outcome(tmp_path / "out")
    search = result["search"]
    assert isinstance(search, dict)
    assert (search["decided_at"], search["settings"]) == (5, {"decide_at": 5})
    assert [len(layer["heads_kept"]) for layer in result["layers"]] == [2, 2]  # type: ignore[attr-defined]
    assert (tmp_path / "out" / "pruning.png").is_file()


def test_a_run_killed_mid_search_resumes_to_the_same_decision(site, inputs, tmp_path):
    extra = ("--decide-at", "10", "--save-every", "2")
    reference = run(site, command(site, inputs, tmp_path / "reference", *extra))
    assert reference.returncode == 0, reference.stderr[-2000:]
    output = tmp_path / "out"
    process = subprocess.Popen(
        command(site, inputs, output, *extra), env=environment(site), stderr=subprocess.DEVNULL
    )
    kill_when(
        process, output.with_name("out.run") / "search" / "checkpoint-4" / "search_state.json"
    )
    resumed = run(site, command(site, inputs, output, *extra, "--resume"))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    expected, got = outcome(tmp_path / "reference"), outcome(output)
    assert got["search"]["resumed_from_step"] == 4  # type: ignore[index]
    got["search"]["resumed_from_step"] = None  # type: ignore[index]
    assert got == expected
