"""What a model of given per-layer widths costs: measured latency on the deployment runtime, or
MACs. The width chooser (compresskit/target.py) asks a cost model two things: the fixed cost
(embeddings, task head, the runtime's own overhead) and the cost of one encoder layer keeping
h heads and an FFN of width f. A whole model then costs

    fixed + Σ_layers layer(h_l, f_l)

`LatencyModel` holds milliseconds measured on a small grid of (h, f), interpolated linearly in
each axis between grid points, scaled so that the dense model's prediction equals the whole
dense model measured in the same rounds (`whole_ms`; the parts summed fell 13–16% short of
the whole at batch 1, alike for dense and pruned models). It is measured by
`compresskit.exporters.latency` on the runtime, threads, batch, sequence length and precision
the user deploys with, and cached per machine and setting (`cache_path`). `MacsModel` counts
encoder MACs (compresskit.stats).

This module imports neither torch nor onnxruntime.
"""

from __future__ import annotations

import bisect
import functools
import hashlib
import json
import os
import tempfile
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Protocol

from compresskit._json import dumps, read_format_file
from compresskit.errors import CompressKitError, ConfigError

FORMAT = "compresskit.latency"
FORMAT_VERSION = 1
# How a latency model is measured (default_grid's points, the whole-model calibration): a new
# way is measured again rather than read from a cache of the old one.
MEASUREMENT_VERSION = 3
CACHE_ENV = "COMPRESSKIT_CACHE"


class LatencyModelError(CompressKitError):
    """A latency model file is damaged, or was measured for another model or setting."""


class CostModel(Protocol):
    """What the width chooser needs: a fixed cost and the cost of one layer."""

    unit: str
    fixed: float

    def layer(self, heads: int, ffn: int) -> float: ...


@dataclass(frozen=True)
class LatencySetting:
    """How the model will be served: the latency model holds for this setting only."""

    runtime: str = "ort"  # ONNX Runtime, CPU execution provider
    threads: int = 1
    batch_size: int = 1
    seq_len: int = 128
    int8: bool = False  # dynamic int8 weights (compresskit export onnx --quantize int8)
    optimize: bool = False  # ORT's fused graph (compresskit export onnx --optimize)

    def __post_init__(self) -> None:
        if self.runtime != "ort":
            raise ConfigError(f"runtime {self.runtime!r} is not supported: use 'ort'")
        for name in ("threads", "batch_size", "seq_len"):
            value = getattr(self, name)
            if type(value) is not int or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        for name in ("int8", "optimize"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be true or false, got {getattr(self, name)!r}")

    def in_float32(self) -> LatencySetting:
        """The same deployment without int8: what a speed-up with int8 is measured against."""
        return replace(self, int8=False)

    def describe(self) -> str:
        precision = "int8" if self.int8 else "fp32"
        graph = ", fused" if self.optimize else ""
        return (
            f"ONNX Runtime CPU, {self.threads} thread(s), batch {self.batch_size}, "
            f"seq {self.seq_len}, {precision}{graph}"
        )


@dataclass(frozen=True)
class ModelShape:
    """The dense shape a latency model was measured for: the same shape, the same costs."""

    model_type: str
    architecture: str
    layers: int
    hidden: int
    heads: int
    head_dim: int
    ffn: int
    vocab_size: int


@dataclass(frozen=True)
class LatencyModel:
    """Milliseconds per forward pass: `fixed_ms` plus, per layer, `layer_ms[i][j]` measured
    at `heads_grid[i]` heads and FFN width `ffn_grid[j]` (both grids ascending, from 0 to the
    dense count), all scaled by `whole_ms` / (the dense model so summed) when `whole_ms`, the
    whole dense model's time in the same rounds, is known.

    Why scale everything alike: graphs of one layer leave out what a deep graph pays on top
    (measured at batch 1: the whole dense model 13–16% slower than its parts, and pruned
    models from 1.5x to 3x faster off by the same fraction), so ratios hold without it and
    milliseconds (--target-latency) need it."""

    setting: LatencySetting
    shape: ModelShape
    fixed_ms: float
    heads_grid: tuple[int, ...]
    ffn_grid: tuple[int, ...]
    layer_ms: tuple[tuple[float, ...], ...]
    machine: dict[str, Any]
    whole_ms: float | None = None

    unit = "ms"

    def __post_init__(self) -> None:
        for name, grid, top in (
            ("heads_grid", self.heads_grid, self.shape.heads),
            ("ffn_grid", self.ffn_grid, self.shape.ffn),
        ):
            if len(grid) < 2 or list(grid) != sorted(set(grid)) or grid[0] != 0 or grid[-1] != top:
                raise LatencyModelError(
                    f"{name} {list(grid)} must rise from 0 to the dense count {top}"
                )
        if len(self.layer_ms) != len(self.heads_grid) or any(
            len(row) != len(self.ffn_grid) for row in self.layer_ms
        ):
            raise LatencyModelError(
                "layer_ms must have one row per head count, one value per width"
            )
        if self.whole_ms is not None and not self.whole_ms > 0:
            raise LatencyModelError(f"whole_ms must be positive, got {self.whole_ms!r}")

    @functools.cached_property
    def scale(self) -> float:
        """whole_ms over the dense model's sum of parts (1 when the whole was not measured);
        computed once, as every layer() of a width choice uses it."""
        if self.whole_ms is None:
            return 1.0
        s = self.shape
        parts = self.fixed_ms + s.layers * self._measured_layer(s.heads, s.ffn)
        return self.whole_ms / parts if parts > 0 else 1.0

    @property
    def fixed(self) -> float:
        return self.fixed_ms * self.scale

    def layer(self, heads: int, ffn: int) -> float:
        """Milliseconds of one layer with `heads` heads and FFN width `ffn`: the grid
        interpolated, times `scale`."""
        return self._measured_layer(heads, ffn) * self.scale

    def _measured_layer(self, heads: int, ffn: int) -> float:
        """The grid interpolated linearly between measured points (never below zero: a
        measured difference can be slightly negative at the smallest widths)."""
        i, a = _bracket(self.heads_grid, heads)
        j, b = _bracket(self.ffn_grid, ffn)
        t = self.layer_ms
        value = (
            (1 - a) * (1 - b) * t[i][j]
            + a * (1 - b) * t[i + 1][j]
            + (1 - a) * b * t[i][j + 1]
            + a * b * t[i + 1][j + 1]
        )
        return max(value, 0.0)

    def predict(self, heads_per_layer: list[int], ffn_per_layer: list[int]) -> float:
        """Predicted milliseconds of a model with these widths."""
        return self.fixed + sum(
            self.layer(h, f) for h, f in zip(heads_per_layer, ffn_per_layer, strict=True)
        )

    def dense(self) -> float:
        s = self.shape
        return self.predict([s.heads] * s.layers, [s.ffn] * s.layers)

    def table(self) -> str:
        """Milliseconds of one layer by head count (rows) and FFN width (columns)."""
        head = "heads \\ ffn " + " ".join(f"{f:>8}" for f in self.ffn_grid)
        rows = [
            f"{h:>11} " + " ".join(f"{v:>8.3f}" for v in row)
            for h, row in zip(self.heads_grid, self.layer_ms, strict=True)
        ]
        return "\n".join(
            [
                f"{self.shape.architecture} ({self.shape.model_type}), {self.setting.describe()}",
                f"fixed (embeddings, head): {self.fixed_ms:.3f} ms; one layer, ms:",
                head,
                *rows,
                self._calibration(),
                f"dense: {self.dense():.3f} ms predicted ({self.shape.layers} layers)",
            ]
        )

    def _calibration(self) -> str:
        if self.whole_ms is None:
            return "not calibrated on a whole model: milliseconds are the parts' sum"
        return (
            f"calibrated: the whole dense model took {self.whole_ms:.3f} ms, its parts summed "
            f"{self.whole_ms / self.scale:.3f} ms; every cost above is scaled by "
            f"{self.scale:.3f}"
        )

    # --- files ----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "setting": asdict(self.setting),
            "shape": asdict(self.shape),
            "fixed_ms": self.fixed_ms,
            "heads_grid": list(self.heads_grid),
            "ffn_grid": list(self.ffn_grid),
            "layer_ms": [list(row) for row in self.layer_ms],
            "whole_ms": self.whole_ms,
            "machine": self.machine,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "latency model") -> LatencyModel:
        try:
            return cls(
                setting=LatencySetting(**data["setting"]),
                shape=ModelShape(**data["shape"]),
                fixed_ms=_number(data["fixed_ms"]),
                heads_grid=tuple(_integer(v) for v in data["heads_grid"]),
                ffn_grid=tuple(_integer(v) for v in data["ffn_grid"]),
                layer_ms=tuple(tuple(_number(v) for v in row) for row in data["layer_ms"]),
                machine=dict(data.get("machine") or {}),
                whole_ms=None if data.get("whole_ms") is None else _number(data["whole_ms"]),
            )
        except LatencyModelError as err:
            raise LatencyModelError(f"{where}: {err}") from None
        except (KeyError, TypeError, ValueError, ConfigError) as err:
            raise LatencyModelError(f"{where} is damaged: {type(err).__name__}: {err}") from None

    def save(self, path: Path) -> None:
        """Write atomically: a reader never sees half a file."""
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(dumps(self.to_dict()) + "\n")
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    @classmethod
    def load(cls, path: Path) -> LatencyModel:
        data = read_format_file(
            path, fmt=FORMAT, version=FORMAT_VERSION, what="latency model", error=LatencyModelError
        )
        return cls.from_dict(data, str(path))

    def check_fits(self, setting: LatencySetting, shape: ModelShape, where: str) -> None:
        """Refuse a model measured for another setting or another model shape."""
        for what, mine, wanted in (
            ("setting", self.setting, setting),
            ("shape", self.shape, shape),
        ):
            if mine != wanted:
                diff = {k: v for k, v in asdict(mine).items() if asdict(wanted)[k] != v}
                raise LatencyModelError(
                    f"{where} was measured for another {what} ({_pairs(diff)}; this run has "
                    f"{_pairs({k: asdict(wanted)[k] for k in diff})}): measure it again "
                    "for this model and setting"
                )


@dataclass(frozen=True)
class MacsModel:
    """Encoder MACs of one sequence of `seq_len` tokens (compresskit.stats.layer_macs)."""

    shape: ModelShape
    seq_len: int

    unit = "MACs"
    fixed = 0.0  # embeddings and task head: not counted (compresskit.stats)

    def layer(self, heads: int, ffn: int) -> float:
        from compresskit.stats import layer_macs

        s = self.shape
        return float(layer_macs(self.seq_len, s.hidden, heads, s.head_dim, ffn))

    def dense(self) -> float:
        return self.shape.layers * self.layer(self.shape.heads, self.shape.ffn)


def cache_path(setting: LatencySetting, shape: ModelShape, machine: dict[str, Any]) -> Path:
    """Where the latency model of this machine, setting and shape is cached:
    $COMPRESSKIT_CACHE/latency/ (default ~/.cache/compresskit, or $XDG_CACHE_HOME/compresskit).
    The name hashes everything the timings depend on."""
    identity = {
        "setting": asdict(setting),
        "shape": asdict(shape),
        "machine": {k: machine.get(k) for k in ("cpu", "logical_cores", "onnxruntime")},
        "format_version": FORMAT_VERSION,
        "measurement": MEASUREMENT_VERSION,
    }
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
    return cache_root() / "latency" / f"{shape.model_type}-{digest}.json"


def cache_root() -> Path:
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "compresskit"


def default_grid(count: int, points: int = 5) -> tuple[int, ...]:
    """`points` counts spread evenly from 0 to `count`, and the smallest width that is not
    nothing (1/16 of `count`, at least 1): a layer's first head (and first neurons) cost
    more than the next ones (attention's softmax and copies run at any head count), so a line
    from 0 to a quarter of the heads under-predicted layers left with 1 or 2 heads by up to
    10% (int8, batch 1; docs/latency-target.md). Fewer points when `count` is small."""
    spread = {round(count * i / (points - 1)) for i in range(points)}
    return tuple(sorted(spread | ({max(1, round(count / 16))} if count else set())))


def _bracket(grid: tuple[int, ...], value: int) -> tuple[int, float]:
    """(i, a): `value` lies at fraction a of the way from grid[i] to grid[i + 1]."""
    if not grid[0] <= value <= grid[-1]:
        raise ConfigError(f"width {value} lies outside the measured {grid[0]}..{grid[-1]}")
    i = min(bisect.bisect_right(grid, value) - 1, len(grid) - 2)
    return i, (value - grid[i]) / (grid[i + 1] - grid[i])


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        raise ValueError(f"{value!r} is not a number")
    return float(value)


def _integer(value: Any) -> int:
    if type(value) is not int:
        raise ValueError(f"{value!r} is not an integer")
    return value


def _pairs(values: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in values.items())
