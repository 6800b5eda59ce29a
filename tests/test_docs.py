"""The runnable examples in docs/ run."""

from __future__ import annotations

import re

import pytest
from conftest import MINILM, REPO, SHARED


def python_blocks(doc: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", (REPO / "docs" / doc).read_text(), flags=re.S)


@pytest.mark.real
def test_python_api_example_runs(tmp_path, monkeypatch, minilm_path):
    monkeypatch.chdir(tmp_path)
    (code,) = python_blocks("python-api.md")
    exec(compile(code.replace("../shared", str(SHARED)), "python-api.md", "exec"), {})
    assert (tmp_path / "out" / "api-example" / "compresskit.json").is_file()
    assert MINILM.is_dir()


@pytest.mark.real
def test_own_trainer_example_runs(tmp_path, monkeypatch, minilm_path):
    monkeypatch.chdir(tmp_path)
    (code,) = python_blocks("fine-tuning.md")
    namespace: dict = {}
    exec(compile(code.replace("../shared", str(SHARED)), "fine-tuning.md", "exec"), namespace)
    assert namespace["strategy"].search_done and namespace["strategy"].ticket_step <= 10
    assert (tmp_path / "out" / "sst2-slim" / "compresskit.json").is_file()


def test_training_time_plugin_example_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    blocks = [b for b in python_blocks("strategies.md") if "TrainingTimeStrategy" in b]
    assert len(blocks) == 1
    namespace: dict = {}
    exec(compile(blocks[0], "strategies.md", "exec"), namespace)
    assert namespace["strategy"].decided_at == 3
    assert namespace["plan"].heads_per_layer == [2, 2]


@pytest.mark.real
def test_latency_target_example_runs(tmp_path, monkeypatch, minilm_path):
    """The example plans on this machine's cached latency model: one is planted in an empty
    cache (made-up costs, linear in heads and width) so the test times nothing."""
    pytest.importorskip("onnxruntime")
    import transformers

    from compresskit.exporters.latency import _machine
    from compresskit.latency import LatencyModel, LatencySetting, cache_path, default_grid
    from compresskit.target import model_shape

    monkeypatch.setenv("COMPRESSKIT_CACHE", str(tmp_path / "cache"))
    setting = LatencySetting(threads=2, batch_size=1, seq_len=128)
    shape = model_shape(transformers.AutoModelForSequenceClassification.from_pretrained(MINILM))
    heads, widths = default_grid(shape.heads), default_grid(shape.ffn)
    table = tuple(tuple(0.1 + 0.2 * h + 0.001 * f for f in widths) for h in heads)
    LatencyModel(setting, shape, 1.0, heads, widths, table, {}).save(
        cache_path(setting, shape, _machine())
    )
    blocks = python_blocks("latency-target.md")
    assert len(blocks) == 1
    namespace: dict = {}
    exec(
        compile(blocks[0].replace("../shared", str(SHARED)), "latency-target.md", "exec"), namespace
    )
    assert namespace["choice"].predicted_ratio >= 2.0
