"""Shared fixtures: tiny random-init models of every supported architecture and task head,
and the real MiniLM checkpoint from ../shared when it is there."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import transformers
from torch import nn

from compresskit.arch import adapter_class, adapters
from compresskit.testing import write_tiny_checkpoint, write_tiny_sentiment

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
MINILM = SHARED / "models" / "minilm-l6-h384-uncased"
GLUE = SHARED / "data" / "glue"

VOCAB = 64

# Tiny models run fastest on one thread; with two, thread hand-offs dominate (and on a busy
# 2-core machine a tiny forward pass was seen to take 200x longer).
torch.set_num_threads(1)

# Every (model_type, model class) that compresskit supports, from the adapter registry: tests
# parametrise over it, so a new architecture (one adapter file) is tested with no test code.
ARCHITECTURES: dict[str, list[str]] = {t: list(a.model_classes) for t, a in adapters().items()}
ALL_MODEL_CLASSES = [(t, c) for t, classes in ARCHITECTURES.items() for c in classes]


def tiny_config(
    model_type: str,
    *,
    layers: int = 3,
    heads: int = 4,
    head_dim: int = 8,
    ffn: int = 40,
    attn: str = "eager",
) -> transformers.PretrainedConfig:
    config = adapter_class(model_type).tiny_config(
        vocab=VOCAB, layers=layers, heads=heads, head_dim=head_dim, ffn=ffn
    )
    config.num_labels = 2  # question answering needs exactly 2 (start, end)
    config._attn_implementation = attn
    return config


def tiny_model(
    model_type: str = "bert",
    class_name: str | None = None,
    *,
    seed: int = 0,
    **config_kwargs: object,
) -> nn.Module:
    class_name = class_name or ARCHITECTURES[model_type][1]
    torch.manual_seed(seed)
    model = getattr(transformers, class_name)(tiny_config(model_type, **config_kwargs))
    _spread_weights(model)
    return model.eval()


@torch.no_grad()
def _spread_weights(model: nn.Module) -> None:
    # BERT's init (std 0.02) makes every head nearly uniform, so a bug that mixes up heads
    # could hide; larger weights make each head's output distinct.
    for p in model.parameters():
        if p.dim() > 1:
            p.normal_(0.0, 0.3)


def batch(
    model: nn.Module, *, batch_size: int = 3, seq_len: int = 11, seed: int = 1
) -> dict[str, torch.Tensor]:
    """Random ids with right padding in all but the first row."""
    g = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(3, VOCAB, (batch_size, seq_len), generator=g)
    attention_mask = torch.ones_like(input_ids)
    for row in range(1, batch_size):
        attention_mask[row, seq_len - 2 * row :] = 0
    return {"input_ids": input_ids, "attention_mask": attention_mask}


@pytest.fixture
def make_tiny() -> Callable[..., nn.Module]:
    return tiny_model


@pytest.fixture(scope="session")
def minilm_path() -> Path:
    if not (MINILM / "model.safetensors").is_file():
        pytest.skip("the real MiniLM checkpoint is not beside the repo (../shared/models)")
    return MINILM


@pytest.fixture(scope="session")
def tiny_task(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(checkpoint folder, data folder) of the tiny fine-tuning task."""
    root = tmp_path_factory.mktemp("tiny_task")
    return write_tiny_checkpoint(root / "model"), write_tiny_sentiment(root / "data")
