"""`compresskit bench`: time models in PyTorch and exported ONNX folders on the same inputs.

    compresskit bench out/dense out/pruned out/pruned-onnx --baseline out/dense \\
        --batch-sizes 1,32 --seq-lens 128 --threads 2 --output bench-out/

A target is a model folder (compresskit or transformers; runs in PyTorch) or a folder written
by `compresskit export onnx` (runs in onnxruntime). For every (batch, seq) shape all targets
get the same seeded random token ids, without padding. After the warm-up, the timed runs are
interleaved, one run of each target per round in a shuffled order, so that drift in machine
load hits every target alike; the speedup against the baseline is the ratio of median
latencies measured in that same interleaved run, and beside it stands the MACs ratio (dense
MACs / target MACs).

Heavy imports (torch, transformers, onnxruntime) happen inside functions, so that
`compresskit --help` stays fast.
"""

from __future__ import annotations

import logging
import os
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import click

from compresskit.errors import CompressKitError, ConfigError

log = logging.getLogger(__name__)

JSON_FILE = "bench.json"
MARKDOWN_FILE = "bench.md"
SEED = 0
DEBUG_ENV = "COMPRESSKIT_DEBUG"  # as in compresskit.cli (not imported: cli imports this module)


@dataclass(frozen=True)
class BenchTarget:
    """One timed model: `kind` is "torch" or "onnx"."""

    name: str
    path: str
    kind: str
    model_type: str
    architecture: str
    optimized: bool | None = None
    quantized: str | None = None

    def describe(self) -> str:
        if self.kind == "torch":
            return f"PyTorch {self.architecture}"
        extras = [x for x in ("optimised" if self.optimized else "", self.quantized or "") if x]
        return f"ONNX Runtime {self.architecture}" + (f" ({', '.join(extras)})" if extras else "")


@dataclass(frozen=True)
class Measurement:
    """Latency of one target at one shape. `speedup` is the baseline's median over this
    target's; `speedup_paired` the median over rounds of the same ratio within a round."""

    target: str
    batch_size: int
    seq_len: int
    median_ms: float
    p90_ms: float
    throughput: float  # sequences per second at the median latency
    speedup: float
    speedup_paired: float
    macs_ratio: float  # dense MACs / this target's MACs, at seq_len
    times_ms: tuple[float, ...]


@dataclass(frozen=True)
class BenchResult:
    targets: tuple[BenchTarget, ...]
    baseline: str
    batch_sizes: tuple[int, ...]
    seq_lens: tuple[int, ...]
    threads: int
    runs: int
    warmup: int
    measurements: tuple[Measurement, ...]
    machine: dict[str, Any]

    def measurement(self, target: str, batch_size: int, seq_len: int) -> Measurement:
        for m in self.measurements:
            if (m.target, m.batch_size, m.seq_len) == (target, batch_size, seq_len):
                return m
        raise KeyError((target, batch_size, seq_len))

    def to_dict(self) -> dict[str, Any]:
        return {
            "benchmark": "compresskit.bench",
            "baseline": self.baseline,
            "batch_sizes": list(self.batch_sizes),
            "seq_lens": list(self.seq_lens),
            "threads": self.threads,
            "runs": self.runs,
            "warmup": self.warmup,
            "seed": SEED,
            "order": "interleaved: each round runs every target once, in a seeded shuffled order",
            "targets": [asdict(t) for t in self.targets],
            "measurements": [asdict(m) for m in self.measurements],
            "machine": self.machine,
        }

    def table(self) -> str:
        """The Markdown table of every target and shape."""
        rows = [
            "| target | batch | seq | median ms | p90 ms | seq/s | speedup | MACs ratio |",
            "|---|--:|--:|--:|--:|--:|--:|--:|",
        ]
        for m in self.measurements:
            rows.append(
                f"| {m.target} | {m.batch_size} | {m.seq_len} | {m.median_ms:.2f} | "
                f"{m.p90_ms:.2f} | {m.throughput:,.1f} | {m.speedup:.2f}× | "
                f"{m.macs_ratio:.2f}× |"
            )
        return "\n".join(rows)

    def markdown(self, title: str = "compresskit bench", level: int = 1) -> str:
        """The report: settings, the table, what each target is, and the machine."""
        m = self.machine
        lines = [
            f"{'#' * level} {title}",
            "",
            f"{self.threads} thread(s); per target and shape {self.warmup} warm-up and "
            f"{self.runs} timed runs in rounds of one run per target (shuffled order); "
            f"speedup = the baseline's median / the target's (baseline: {self.baseline}); "
            "MACs ratio = dense encoder MACs / the target's.",
            "",
            self.table(),
            "",
            *[f"- {t.name}: {t.describe()}, `{t.path}`" for t in self.targets],
            "",
            f"Machine: {m.get('cpu')}, {m.get('logical_cores')} logical cores; "
            f"torch {m.get('torch')}, onnxruntime {m.get('onnxruntime')}, transformers "
            f"{m.get('transformers')}, compresskit {m.get('compresskit')}, Python "
            f"{m.get('python')}; 1-min load average {m['load_average_1m']['before']:.2f} "
            f"before, {m['load_average_1m']['after']:.2f} after.",
        ]
        return "\n".join(lines) + "\n"

    def write(self, folder: str | Path) -> tuple[Path, Path]:
        """Write bench.json and bench.md into `folder` (created if needed)."""
        from compresskit._json import dumps

        out = Path(folder)
        out.mkdir(parents=True, exist_ok=True)
        (out / JSON_FILE).write_text(dumps(self.to_dict()) + "\n", encoding="utf-8")
        (out / MARKDOWN_FILE).write_text(self.markdown(), encoding="utf-8")
        return out / JSON_FILE, out / MARKDOWN_FILE


# --- targets ------------------------------------------------------------------------------


class _Runner:
    """A loaded target: knows its vocabulary, positions and MACs, and builds a timed call."""

    target: BenchTarget
    vocab_size: int
    max_positions: int

    def macs_ratio(self, seq_len: int) -> float:
        raise NotImplementedError

    def prepare(self, input_ids: Any) -> Callable[[], None]:
        """A call that runs one forward pass of `input_ids` (B, T), int64, no padding."""
        raise NotImplementedError


class _TorchRunner(_Runner):
    def __init__(self, name: str, path: Path) -> None:
        from compresskit.loading import load_model

        self.model = load_model(path).eval()
        config = self.model.config
        self.vocab_size = int(config.vocab_size)
        self.max_positions = _max_positions(config)
        self.target = BenchTarget(
            name, str(path), "torch", config.model_type, type(self.model).__name__
        )

    def macs_ratio(self, seq_len: int) -> float:
        from compresskit.stats import dense_stats, model_stats

        return dense_stats(self.model, seq_len).macs / model_stats(self.model, seq_len).macs

    def prepare(self, input_ids: Any) -> Callable[[], None]:
        import torch

        ids = torch.from_numpy(input_ids)
        mask = torch.ones_like(ids)

        def call() -> None:
            with torch.no_grad():
                self.model(input_ids=ids, attention_mask=mask)

        return call


class _OnnxRunner(_Runner):
    def __init__(self, name: str, path: Path, threads: int) -> None:
        from compresskit.runtime import MODEL_FILE, open_session, read_export_info

        info = read_export_info(path)
        self.config = _read_config(path)
        self.heads, self.ffn = _layer_widths(info, self.config, path)
        self.session = open_session(path / MODEL_FILE, threads=threads, spin_between_runs=False)
        self.vocab_size = int(self.config.vocab_size)
        self.max_positions = _max_positions(self.config)
        self.target = BenchTarget(
            name,
            str(path),
            "onnx",
            str(info.get("model_type", self.config.model_type)),
            str(info.get("architecture", "?")),
            bool(info.get("optimized", False)),
            info.get("quantized"),
        )

    def macs_ratio(self, seq_len: int) -> float:
        from compresskit.arch import adapter_class
        from compresskit.stats import layer_macs

        _, heads, head_dim, ffn = adapter_class(self.config.model_type).config_shape(self.config)
        hidden = heads * head_dim  # dense BERT and DistilBERT: hidden = heads · head_dim
        dense = len(self.heads) * layer_macs(seq_len, hidden, heads, head_dim, ffn)
        kept = sum(
            layer_macs(seq_len, hidden, h, head_dim, f)
            for h, f in zip(self.heads, self.ffn, strict=True)
        )
        return dense / max(kept, 1)

    def prepare(self, input_ids: Any) -> Callable[[], None]:
        import numpy as np

        arrays = {
            "input_ids": input_ids,
            "attention_mask": np.ones_like(input_ids),
            "token_type_ids": np.zeros_like(input_ids),
        }
        names = [i.name for i in self.session.get_inputs()]
        unknown = [n for n in names if n not in arrays]
        if unknown:
            raise ConfigError(
                f"{self.target.path}: model.onnx has inputs {unknown} that bench cannot fill "
                f"(it fills {sorted(arrays)})"
            )
        feeds = {n: arrays[n] for n in names}

        def call() -> None:
            self.session.run(None, feeds)

        return call


def _read_config(path: Path) -> Any:
    import transformers

    from compresskit.hf import split_config
    from compresskit.runtime import ExportFolderError

    try:
        return split_config(transformers.AutoConfig.from_pretrained(path))[0]
    except (OSError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ExportFolderError(f"{path / 'config.json'} cannot be read: {first}") from None


def _layer_widths(info: dict[str, Any], config: Any, path: Path) -> tuple[list[int], list[int]]:
    """Heads and FFN width per layer, as export.json records them."""
    from compresskit.arch import adapter_class
    from compresskit.runtime import EXPORT_FILE, ExportFolderError

    n_layers = adapter_class(config.model_type).config_shape(config)[0]
    widths = []
    for key in ("heads_per_layer", "ffn_per_layer"):
        value = info.get(key)
        if not (
            isinstance(value, list)
            and len(value) == n_layers
            and all(isinstance(v, int) and v >= 0 for v in value)
        ):
            raise ExportFolderError(
                f"{path / EXPORT_FILE}: {key} must list a width for each of the "
                f"{n_layers} layers, got {value!r}"
            )
        widths.append(value)
    return widths[0], widths[1]


def _max_positions(config: Any) -> int:
    """The longest sequence the model takes, as its adapter says (RoBERTa's offset too)."""
    from compresskit.arch import adapter_class

    return adapter_class(config.model_type).max_positions(config)


def _open_target(path_text: str, name: str, threads: int) -> _Runner:
    path = Path(path_text)
    if (path / "export.json").is_file():
        return _OnnxRunner(name, path, threads)
    if (path / "config.json").is_file():
        return _TorchRunner(name, path)
    what = "does not exist" if not path.exists() else "has neither export.json nor config.json"
    raise ConfigError(
        f"bench target {path_text} {what}: give a model folder (config.json) or a folder "
        "written by `compresskit export onnx` (export.json)"
    )


# --- the measurement ----------------------------------------------------------------------


def run_bench(
    targets: Sequence[str],
    *,
    baseline: str | None = None,
    batch_sizes: Sequence[int] = (1, 8, 32),
    seq_lens: Sequence[int] = (32, 128),
    threads: int | None = None,
    runs: int = 20,
    warmup: int = 3,
    labels: Sequence[str] | None = None,
) -> BenchResult:
    """Time every target at every (batch, seq) shape on the same inputs, interleaved.

    Args:
        targets: model folders (PyTorch) and exported ONNX folders.
        baseline: the target speedups are measured against (default: the first); timed too
            when it is not among `targets`.
        threads: torch threads and onnxruntime intra-op threads (default: torch's default).
        labels: names for the targets in the report (default: their folder names).
    """
    import torch

    _check_settings(targets, batch_sizes, seq_lens, threads, runs, warmup)
    paths, names, base = _plan_targets(targets, baseline, labels)
    _check_onnxruntime(paths)
    threads = threads or torch.get_num_threads()
    load_before = os.getloadavg()[0]
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        runners = [_open_target(p, n, threads) for p, n in zip(paths, names, strict=True)]
        _check_shapes(runners, seq_lens)
        measurements = [
            m
            for batch_size in batch_sizes
            for seq_len in seq_lens
            for m in _measure_shape(runners, base, batch_size, seq_len, runs, warmup)
        ]
        machine = _machine(load_before)
    finally:
        torch.set_num_threads(previous_threads)
    return BenchResult(
        targets=tuple(r.target for r in runners),
        baseline=names[base],
        batch_sizes=tuple(batch_sizes),
        seq_lens=tuple(seq_lens),
        threads=threads,
        runs=runs,
        warmup=warmup,
        measurements=tuple(measurements),
        machine=machine,
    )


def _check_settings(
    targets: Sequence[str],
    batch_sizes: Sequence[int],
    seq_lens: Sequence[int],
    threads: int | None,
    runs: int,
    warmup: int,
) -> None:
    if not targets:
        raise ConfigError("bench needs at least one target folder")
    for name, values in (("batch sizes", batch_sizes), ("sequence lengths", seq_lens)):
        if not values or any(int(v) != v or v < 1 for v in values):
            raise ConfigError(f"{name} must be positive integers, got {list(values)}")
    if threads is not None and threads < 1:
        raise ConfigError(f"threads must be at least 1, got {threads}")
    if runs < 1 or warmup < 0:
        raise ConfigError(f"runs must be >= 1 and warmup >= 0, got {runs} and {warmup}")


def _check_onnxruntime(paths: Sequence[str]) -> None:
    """ONNX targets need onnxruntime: say so before any model is loaded. PyTorch targets
    alone do not."""
    from compresskit._optional import import_extra

    if any((Path(p) / "export.json").is_file() for p in paths):
        import_extra("onnxruntime", "benchmarking an ONNX folder")


def _plan_targets(
    targets: Sequence[str], baseline: str | None, labels: Sequence[str] | None
) -> tuple[list[str], list[str], int]:
    """(paths, names, index of the baseline); the baseline is prepended when not a target."""
    if labels is not None and len(labels) != len(targets):
        raise ConfigError(f"{len(labels)} labels given for {len(targets)} targets")
    paths, names = list(targets), list(labels) if labels is not None else _names(targets)
    resolved = [Path(p).resolve() for p in paths]
    if len(set(resolved)) != len(resolved):
        raise ConfigError("a bench target is listed twice: list each folder once")
    if baseline is None:
        return paths, names, 0
    if Path(baseline).resolve() in resolved:
        return paths, names, resolved.index(Path(baseline).resolve())
    name = Path(baseline).name or baseline
    if name in names:
        name = baseline
    return [baseline, *paths], [name, *names], 0


def _names(paths: Sequence[str]) -> list[str]:
    short = [Path(p).name or p for p in paths]
    return [s if short.count(s) == 1 else p for s, p in zip(short, paths, strict=True)]


def _check_shapes(runners: list[_Runner], seq_lens: Sequence[int]) -> None:
    """Fail before any timing: sequences too long for a model, or MACs that cannot be
    counted (an unsupported architecture)."""
    for r in runners:
        if max(seq_lens) > r.max_positions:
            raise ConfigError(
                f"sequence length {max(seq_lens)} exceeds the {r.max_positions} positions of "
                f"{r.target.name}: choose --seq-lens up to {r.max_positions}"
            )
        r.macs_ratio(max(seq_lens))


def synthetic_ids(vocab_size: int, batch_size: int, seq_len: int) -> Any:
    """Seeded random token ids (B, T), int64, the same for every target at a shape. Ids
    below min(1000, vocab/2) are skipped: that is where special tokens live."""
    import numpy as np

    rng = np.random.default_rng([SEED, batch_size, seq_len])
    low = min(1000, vocab_size // 2)
    return rng.integers(low, vocab_size, size=(batch_size, seq_len), dtype=np.int64)


def _measure_shape(
    runners: list[_Runner], base: int, batch_size: int, seq_len: int, runs: int, warmup: int
) -> list[Measurement]:
    log.info("bench: batch %d, seq %d", batch_size, seq_len)
    input_ids = synthetic_ids(min(r.vocab_size for r in runners), batch_size, seq_len)
    calls = [r.prepare(input_ids) for r in runners]
    seconds = interleaved_times(calls, runs, warmup)
    base_median = statistics.median(seconds[base])
    return [
        Measurement(
            target=r.target.name,
            batch_size=batch_size,
            seq_len=seq_len,
            median_ms=1e3 * statistics.median(times),
            p90_ms=1e3 * percentile(times, 90),
            throughput=batch_size / statistics.median(times),
            speedup=base_median / statistics.median(times),
            speedup_paired=statistics.median(
                b / t for b, t in zip(seconds[base], times, strict=True)
            ),
            macs_ratio=r.macs_ratio(seq_len),
            times_ms=tuple(1e3 * t for t in times),
        )
        for r, times in zip(runners, seconds, strict=True)
    ]


def interleaved_times(
    calls: Sequence[Callable[[], None]], runs: int, warmup: int, seed: int = SEED
) -> list[list[float]]:
    """Seconds of each call's timed runs. Each round runs every call once, in an order
    shuffled afresh (seeded) each round: load drift then hits all calls alike, and no call
    always runs first or right after the same other one (whose idle threads may still hold
    the cores). Warm-up rounds run every call once each, untimed."""
    import random

    for _ in range(warmup):
        for call in calls:
            call()
    seconds: list[list[float]] = [[] for _ in calls]
    order, rng = list(range(len(calls))), random.Random(seed)
    for _ in range(runs):
        rng.shuffle(order)
        for i in order:
            start = time.perf_counter()
            calls[i]()
            seconds[i].append(time.perf_counter() - start)
    return seconds


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile, linear between order statistics (numpy's default)."""
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _machine(load_before: float) -> dict[str, Any]:
    import numpy

    from compresskit.machine import machine_info

    try:
        import onnxruntime
    except ImportError:  # PyTorch targets alone are timed without the onnx extra
        onnxruntime = None
    return machine_info() | {
        "onnxruntime": getattr(onnxruntime, "__version__", None),
        "numpy": numpy.__version__,
        "load_average_1m": {"before": load_before, "after": os.getloadavg()[0]},
    }


# --- the command --------------------------------------------------------------------------


def parse_int_list(text: str) -> list[int]:
    """ "1,8,32" -> [1, 8, 32]; ConfigError for anything but positive integers."""
    try:
        values = [int(part) for part in text.split(",")]
    except ValueError:
        values = []
    if not values or any(v < 1 for v in values):
        raise ConfigError(
            f"expected comma-separated positive integers such as 1,8,32, got {text!r}"
        )
    return values


def _int_list_option(ctx: click.Context, param: click.Parameter, value: str) -> list[int]:
    try:
        return parse_int_list(value)
    except ConfigError as err:
        raise click.BadParameter(str(err)) from None


@click.command("bench")
@click.argument("targets", nargs=-1, required=True)
@click.option("--baseline", help="Folder the speedups are measured against [first target].")
@click.option(
    "--batch-sizes",
    default="1,8,32",
    show_default=True,
    callback=_int_list_option,
    help="Comma-separated batch sizes.",
)
@click.option(
    "--seq-lens",
    default="32,128",
    show_default=True,
    callback=_int_list_option,
    help="Comma-separated sequence lengths.",
)
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    help="torch threads and onnxruntime intra-op threads [torch's default].",
)
@click.option(
    "--runs",
    default=20,
    show_default=True,
    type=click.IntRange(min=1),
    help="Timed runs per target and shape.",
)
@click.option(
    "--warmup",
    default=3,
    show_default=True,
    type=click.IntRange(min=0),
    help="Untimed runs per target and shape, first.",
)
@click.option(
    "--output", type=click.Path(path_type=Path), help="Folder for bench.json and bench.md."
)
def bench_command(
    targets: tuple[str, ...],
    baseline: str | None,
    batch_sizes: list[int],
    seq_lens: list[int],
    threads: int | None,
    runs: int,
    warmup: int,
    output: Path | None,
) -> None:
    """Time model folders (PyTorch) and exported ONNX folders on the same inputs.

    Runs are interleaved across targets; each target's median and p90 latency, throughput,
    speedup against the baseline and MACs ratio are printed as a Markdown table.
    """
    try:
        result = run_bench(
            list(targets),
            baseline=baseline,
            batch_sizes=batch_sizes,
            seq_lens=seq_lens,
            threads=threads,
            runs=runs,
            warmup=warmup,
        )
    except CompressKitError as err:
        # the one-line error of compresskit.cli, also when this command runs on its own
        if os.environ.get(DEBUG_ENV) == "1":
            raise
        raise click.ClickException(str(err)) from None
    click.echo(result.markdown(), nl=False)
    if output is not None:
        json_path, md_path = result.write(output)
        click.echo(f"wrote {json_path} and {md_path}")
