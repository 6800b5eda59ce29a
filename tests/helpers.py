"""Assertions, a tiny dataset, and process and plugin helpers shared by test modules."""

from __future__ import annotations

import copy
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import torch
from conftest import VOCAB
from torch import nn

import compresskit
from compresskit.plan import PruningPlan


def outputs(model: nn.Module, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        out = model(**inputs)
    return {k: v for k, v in out.items() if isinstance(v, torch.Tensor)}


def max_diff_at_tokens(
    a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], attention_mask: torch.Tensor
) -> float:
    """Largest difference over real (non-padding) positions. Outputs at padded positions
    are meaningless and, in float32, differ by rounding noise even between two runs of
    mathematically identical models (see test_pruner's float64 test)."""
    assert a.keys() == b.keys()
    worst = 0.0
    keep = attention_mask.bool()
    for key in a:
        x, y = a[key], b[key]
        assert x.shape == y.shape, key
        if x.dim() >= 2 and x.shape[:2] == keep.shape:
            x, y = x[keep], y[keep]
        worst = max(worst, (x - y).abs().max().item() if x.numel() else 0.0)
    return worst


def assert_pruned_equals_masked(
    model: nn.Module, plan: PruningPlan, inputs: dict[str, torch.Tensor], atol: float = 1e-5
) -> nn.Module:
    """Prune a copy of `model` with `plan` and check it computes what the masked model does."""
    masked = compresskit.mask(copy.deepcopy(model), plan)
    pruned = compresskit.prune(copy.deepcopy(model), plan)
    diff = max_diff_at_tokens(
        outputs(masked, inputs), outputs(pruned, inputs), inputs["attention_mask"]
    )
    assert diff <= atol, f"pruned differs from masked by {diff:.3g} (> {atol})"
    return pruned


class RandomTokens(torch.utils.data.Dataset):
    """`size` sequences of 12 random tokens, labelled by whether the second token is in the
    upper half of the vocabulary (something a tiny model can learn)."""

    def __init__(self, size: int = 64, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.input_ids = torch.randint(3, VOCAB, (size, 12), generator=g)
        self.labels = (self.input_ids[:, 1] >= VOCAB // 2).long()

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.input_ids[i], "labels": self.labels[i]}


def kill_when(process: subprocess.Popen[bytes], path: Path, timeout: float = 240) -> None:
    """SIGKILL `process` as soon as `path` exists (it must still be running then)."""
    deadline = time.monotonic() + timeout
    while not path.is_file():
        assert process.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()


def install_plugin(source: Path, site: Path, pyproject: str, modules: dict[str, str]) -> Path:
    """Write a package (pyproject.toml and its modules) into `source` and pip-install it,
    entry points and all, into `site` (put it on PYTHONPATH to use it)."""
    (source / "pyproject.toml").write_text(pyproject)
    for name, code in modules.items():
        (source / f"{name}.py").write_text(textwrap.dedent(code))
    subprocess.run(
        [
            *[sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index"],
            *["--no-build-isolation", "--target", str(site), str(source)],
        ],
        check=True,
        capture_output=True,
    )
    return site


# --- training-time strategies ------------------------------------------------------------------
def training_time_strategies() -> list[str]:
    """Every registered training-time strategy, plugins included: the tests that train take
    their strategies from here, so a new one needs no new test code."""
    from compresskit.registry import get_strategy_class, strategy_names

    return [n for n in strategy_names() if get_strategy_class(n).kind == "training-time"]


def quick_args(strategy: str) -> list[str]:
    """`--strategy NAME` and its quick options (`--set KEY=VALUE`), under which it decides
    within a few steps of a tiny run."""
    import json

    from compresskit.registry import get_strategy_class

    options = getattr(get_strategy_class(strategy), "quick_options", {})
    return [
        *["--strategy", strategy],
        *[arg for key, value in options.items() for arg in ("--set", f"{key}={json.dumps(value)}")],
    ]


def search_in_trainer(strategy: Any, tmp_path: Path, *, max_steps: int) -> tuple[Any, Any]:
    """Train a tiny BERT classifier (2 layers, 4 heads, 16 FFN neurons) on random tokens in a
    plain Trainer with `strategy` under the StrategyCallback, at lr 1e-3 for up to
    `max_steps`; returns (model, trainer)."""
    from conftest import tiny_model
    from transformers import Trainer, TrainingArguments

    from compresskit.train.callback import StrategyCallback

    model = tiny_model("bert", "BertForSequenceClassification", layers=2, heads=4, ffn=16)
    args = TrainingArguments(
        output_dir=str(tmp_path),
        report_to="none",
        disable_tqdm=True,
        save_strategy="no",
        per_device_train_batch_size=8,
        use_cpu=True,
        max_steps=max_steps,
        learning_rate=1e-3,
        seed=0,
    )
    strategy.attach(model, as_submodule=True)
    trainer = Trainer(
        model=model, args=args, train_dataset=RandomTokens(), callbacks=[StrategyCallback(strategy)]
    )
    trainer.train()
    return model, trainer
