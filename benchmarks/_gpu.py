"""What the GPU benchmarks share: a timer for the device, and the machine they ran on. Not a
benchmark itself (.ci/run skips files starting with "_")."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import torch
import transformers

import compresskit.machine


def device_timer(device: str) -> Callable[[Callable[[], Any]], float]:
    """A function that runs a call and returns its seconds: CUDA events around it on a GPU
    (after a synchronisation, so nothing queued before counts), the host clock on the CPU."""
    if device.startswith("cuda"):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)

        def on_gpu(call: Callable[[], Any]) -> float:
            torch.cuda.synchronize()
            start.record()
            call()
            end.record()
            end.synchronize()
            return start.elapsed_time(end) / 1e3

        return on_gpu

    def on_cpu(call: Callable[[], Any]) -> float:
        begin = time.perf_counter()
        call()
        return time.perf_counter() - begin

    return on_cpu


def machine_info(device: str) -> dict[str, Any]:
    """compresskit's machine record, the load average, and the GPU when there is one."""
    info = compresskit.machine.machine_info() | {"load_average_1m": os.getloadavg()[0]}
    if device.startswith("cuda"):
        props = torch.cuda.get_device_properties(0)
        info |= {
            "gpu": props.name,
            "gpu_memory_gib": round(props.total_memory / 2**30, 1),
            "cuda_runtime": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version(),
            "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
        }
    return info


def classifier(model: Any, smoke: bool) -> transformers.PreTrainedModel:
    """The model a GPU benchmark times: `model`'s encoder under a 2-label classification head,
    or, for `--smoke` (CI, on the CPU), a tiny random BERT; seeded either way."""
    torch.manual_seed(0)
    if smoke:
        config = transformers.BertConfig(
            vocab_size=128,
            hidden_size=48,
            num_hidden_layers=2,
            num_attention_heads=6,
            intermediate_size=64,
            max_position_embeddings=64,
            num_labels=2,
        )
        return transformers.BertForSequenceClassification(config)
    if not (model / "config.json").is_file():
        raise SystemExit(f"no model at {model}: pass --model or use --smoke")
    return transformers.AutoModelForSequenceClassification.from_pretrained(model, num_labels=2)


def describe_machine(m: dict[str, Any]) -> str:
    """One line for a report: the GPU if any, the CPU, the versions and the load average."""
    where = ""
    if "gpu" in m:
        where = f"{m['gpu']} ({m['gpu_memory_gib']} GiB), CUDA {m['cuda_runtime']}"
    cpu = f"{m['cpu']}, {m['logical_cores']} logical cores, {m['torch_threads']} torch threads"
    return (
        f"{where + '; ' if where else ''}{cpu}; torch {m['torch']}, transformers "
        f"{m['transformers']}, Python {m['python']}; 1-min load average {m['load_average_1m']:.2f}"
    )
