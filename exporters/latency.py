"""Measure a latency model (compresskit/latency.py) on ONNX Runtime, on this machine.

What is timed are the graphs `compresskit export onnx` would deploy (the same trace, fusion and
int8 quantisation, `onnx.timing_graph`), of random-init models of the user's architecture
(weights do not change the time a dense kernel takes):

- `fixed`: the model with no encoder layer (embeddings, pooler, task head), at the real
  vocabulary size;
- `base`: the same with a 1,024-token vocabulary;
- one graph per grid point (h, f): `base` plus one encoder layer pruned to h heads and FFN
  width f, also with the small vocabulary (the embedding table's size does not change the
  time of a look-up, and small graphs keep the measurement in memory);
- `whole`: the dense model with all its layers, at the real vocabulary, to calibrate on.

One layer's milliseconds at (h, f) are median(grid point) - median(base); the fixed cost is
median(fixed); median(whole) scales them all (compresskit/latency.py, `LatencyModel`). Every
graph runs in the same interleaved rounds (compresskit.bench), each round in a new shuffled
order, so that drift in machine load hits every grid point alike.
"""

from __future__ import annotations

import copy
import logging
import math
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from compresskit.bench import interleaved_times
from compresskit.exporters.onnx import timed_call, timing_graph
from compresskit.hf import split_config
from compresskit.latency import (
    LatencyModel,
    LatencyModelError,
    LatencySetting,
    cache_path,
    default_grid,
)
from compresskit.plan import PruningPlan
from compresskit.target import model_shape

logger = logging.getLogger(__name__)

SMALL_VOCAB = 1024
# A speed-up is timed for at least this long: at batch 1 a round of MiniLM and its pruned
# model takes ~11 ms, and two 30-round measurements (0.3 s) of the same pair differed by up
# to 12% (docs/latency-target.md).
MIN_TIMING_SECONDS = 3.0


def measure_latency_model(
    model: Any,
    setting: LatencySetting,
    *,
    heads_grid: Sequence[int] | None = None,
    ffn_grid: Sequence[int] | None = None,
    runs: int | None = None,
    warmup: int = 3,
) -> LatencyModel:
    """Time one layer of `model`'s architecture at every grid point, and the fixed cost.

    Args:
        setting: threads, batch, sequence length, int8 and fusion of the deployment.
        heads_grid, ffn_grid: counts to measure, ascending from 0 to the dense count
            (default: 0, 1/16, 1/4, 1/2, 3/4 and all of each, `default_grid`).
        runs: timed rounds (default: enough for ~2 s per graph at its first timing, 10..60).
    """
    shape = model_shape(model)
    heads = tuple(heads_grid or default_grid(shape.heads))
    widths = tuple(ffn_grid or default_grid(shape.ffn))
    config = split_config(model.config)[0]
    builders: dict[str, Callable[[], nn.Module]] = {
        "fixed": lambda: _random_model(model, config, layers=0, vocab=shape.vocab_size),
        "base": lambda: _random_model(model, config, layers=0, vocab=SMALL_VOCAB),
        "whole": lambda: _random_model(model, config, layers=shape.layers, vocab=shape.vocab_size),
    }
    for h in heads:
        for f in widths:
            builders[f"{h}/{f}"] = _layer_builder(model, config, h, f)
    with tempfile.TemporaryDirectory(prefix="compresskit-latency-") as work:
        calls = {}
        for name, build in builders.items():
            folder = Path(work) / name.replace("/", "_")
            folder.mkdir()
            graph = timing_graph(
                build().eval(),
                folder,
                head_dim=shape.head_dim,
                optimize=setting.optimize,
                quantize="int8" if setting.int8 else None,
            )
            real_vocab = name in ("fixed", "whole")
            calls[name] = _timed_call(graph, setting, shape.vocab_size if real_vocab else 0)
        rounds = runs or _rounds(calls[f"{heads[-1]}/{widths[-1]}"])
        seconds = interleaved_times(list(calls.values()), rounds, warmup)
    median_ms = {name: 1e3 * statistics.median(s) for name, s in zip(calls, seconds, strict=True)}
    base = median_ms["base"]
    return LatencyModel(
        setting=setting,
        shape=shape,
        fixed_ms=median_ms["fixed"],
        heads_grid=heads,
        ffn_grid=widths,
        layer_ms=tuple(tuple(median_ms[f"{h}/{f}"] - base for f in widths) for h in heads),
        machine=_machine() | {"runs": rounds, "warmup": warmup},
        whole_ms=median_ms["whole"],
    )


def _random_model(model: Any, config: Any, *, layers: int, vocab: int) -> Any:
    """A seeded random-init model of `model`'s class with `layers` dense layers."""
    config = copy.deepcopy(config)
    config.num_hidden_layers = layers
    config.vocab_size = vocab
    torch.manual_seed(0)
    built = type(model)(config)
    built.set_attn_implementation("eager")  # what export_onnx traces
    return built


def _layer_builder(model: Any, config: Any, heads: int, ffn: int) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        from compresskit.pruner import prune

        one = _random_model(model, config, layers=1, vocab=SMALL_VOCAB)
        return prune(one, PruningPlan.from_lists([list(range(heads))], [list(range(ffn))]))

    return build


def _timed_call(graph: Path, setting: LatencySetting, vocab: int) -> Callable[[], None]:
    return timed_call(
        graph,
        vocab=vocab or SMALL_VOCAB,
        batch=setting.batch_size,
        seq=setting.seq_len,
        threads=setting.threads,
    )


def _rounds(call: Callable[[], None]) -> int:
    """Timed rounds: about 2 s of the dense layer's graph, at least 10, at most 60."""
    call()
    start = time.perf_counter()
    call()
    return int(min(60, max(10, 2.0 / max(time.perf_counter() - start, 1e-6))))


def _machine() -> dict[str, Any]:
    import onnxruntime

    from compresskit.machine import machine_info

    return machine_info() | {"onnxruntime": onnxruntime.__version__}


def latency_model_for(
    model: Any, setting: LatencySetting, path: str | Path | None = None
) -> LatencyModel:
    """The latency model for `model`'s shape and `setting`: read from `path` when given
    (refused if measured for another shape or setting), else this machine's cached one, else
    measured now and cached. Under torchrun the main process measures and the others receive
    its model, so that every process chooses the same widths."""
    shape = model_shape(model)
    if path is not None:
        loaded = LatencyModel.load(Path(path))
        loaded.check_fits(setting, shape, str(path))
        return loaded
    return _from_main_process(lambda: _cached_or_measured(model, setting, shape))


def _cached_or_measured(model: Any, setting: LatencySetting, shape: Any) -> LatencyModel:
    cached = cache_path(setting, shape, _machine())
    if cached.is_file():
        try:
            found = LatencyModel.load(cached)
            found.check_fits(setting, shape, str(cached))
            return found
        except LatencyModelError as err:  # compresskit's own file: measure again, say why
            logger.warning("measuring again: %s", err)
    logger.warning(
        "measuring the latency of %s layers on this machine (%s); cached in %s",
        shape.model_type,
        setting.describe(),
        cached,
    )
    measured = measure_latency_model(model, setting)
    measured.save(cached)
    return measured


def _from_main_process(make: Callable[[], LatencyModel]) -> LatencyModel:
    """`make()` in the main process, sent to the others when there are several."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return make()
    box: list[Any] = [make().to_dict() if torch.distributed.get_rank() == 0 else None]
    torch.distributed.broadcast_object_list(box, src=0)
    return LatencyModel.from_dict(box[0], "the main process's latency model")


def _rounds_for(calls: Sequence[Callable[[], None]], warmup: int, seconds: float) -> int:
    """Run the warm-up rounds (every call once each) and return how many rounds at their
    pace take `seconds`."""
    start = time.perf_counter()
    for _ in range(max(warmup, 1)):
        for call in calls:
            call()
    pace = (time.perf_counter() - start) / max(warmup, 1)
    return math.ceil(seconds / pace) if pace > 0 else 0


def measure_speedup(
    before: Any,
    after: Any,
    setting: LatencySetting,
    *,
    runs: int = 30,
    warmup: int = 3,
    before_setting: LatencySetting | None = None,
    min_seconds: float = MIN_TIMING_SECONDS,
) -> dict[str, Any]:
    """Time the graphs `export_onnx` would deploy for two models (copies, so the models are
    left as they are) in the same interleaved rounds: medians and their ratio. `before` runs
    as `before_setting` says (default `setting`; e.g. float32 against an int8 result). At
    least `runs` rounds, and as many more as take `min_seconds` by the warm-up's pace."""
    medians, seconds = {}, []
    settings = {"before": before_setting or setting, "after": setting}
    with tempfile.TemporaryDirectory(prefix="compresskit-speedup-") as work:
        calls = []
        for name, model in (("before", before), ("after", after)):
            setting = settings[name]
            copied = copy.deepcopy(model).eval()
            copied.set_attn_implementation("eager")
            folder = Path(work) / name
            folder.mkdir()
            graph = timing_graph(
                copied,
                folder,
                head_dim=model_shape(model).head_dim,
                optimize=setting.optimize,
                quantize="int8" if setting.int8 else None,
            )
            calls.append(_timed_call(graph, setting, int(model.config.vocab_size)))
        runs = max(runs, _rounds_for(calls, warmup, min_seconds))
        seconds = interleaved_times(calls, runs, warmup=0)
    for name, times in zip(("before", "after"), seconds, strict=True):
        medians[name] = 1e3 * statistics.median(times)
    return {
        "before_ms": medians["before"],
        "after_ms": medians["after"],
        "speedup": medians["before"] / medians["after"],
        "speedup_paired": statistics.median(b / a for b, a in zip(*seconds, strict=True)),
        "runs": runs,
        "setting": settings["after"].describe(),
        "before_setting": settings["before"].describe(),
    }
