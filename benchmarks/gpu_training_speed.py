"""Training-step time of the dense, earlybird-search and slim model, on a GPU (or the CPU).

One training step as the pipeline's Trainer takes it: forward, backward, gradient clipping at
1.0, fused AdamW (the Trainer's default optimizer), in fp32 and under bf16 autocast, at batch
32 × sequence 128 (no padding):

- dense: the model as loaded;
- search: the same with EarlyBERT's slimming coefficients attached as a submodule (as the
  pipeline attaches them for DDP), in the gradient clipping, with the L1 sub-gradient added
  before the step and the coefficients in their own optimizer group; drawing a mask (every
  `--mask-interval` steps, a copy of the coefficients to the CPU) is timed on its own and
  spread over the interval;
- slim: the model pruned to 4 of 12 heads per layer and 40% of the FFN neurons removed
  (magnitude plan: the README's `--heads-ratio 0.3333 --ffn-ratio 0.4`), with a fresh AdamW.

The three run interleaved (one step of each per round, the order rotating), after warm-up
steps; every step ends with a device synchronisation, and on a GPU it is timed with CUDA
events. Medians are reported. From them, the estimated wall-clock saving of earlybird
fine-tuning over dense, for a ticket drawn after a fraction f of the schedule (the search
trains f of the schedule, then the slim model rewinds and trains all of it):

    saving(f) = 1 - (f * (t_search + t_mask / mask_interval) + t_slim) / t_dense

with f from `--ticket-report` (a report.json of `compresskit prune --strategy earlybird`:
steps.search / steps.train) or `--ticket-fraction NAME=F`.

    python benchmarks/gpu_training_speed.py                       # MiniLM, on the GPU if any
    python benchmarks/gpu_training_speed.py --device cpu --dtypes fp32 --steps 8 --warmup 2
    python benchmarks/gpu_training_speed.py --smoke               # tiny random model (CI, CPU)

Writes gpu_training_speed.json and gpu_training_speed.md to --output (bench-out/).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import transformers
from _gpu import classifier, describe_machine, device_timer, machine_info
from torch import nn

import compresskit
import compresskit.machine

# isort: split
# (ruff files compresskit.strategies, which installs from strategies/, under third-party)
from compresskit.strategies.base import TrainingTimeStrategy

MINILM = Path(__file__).resolve().parents[2] / "shared" / "models" / "minilm-l6-h384-uncased"
VARIANTS = ("dense", "search", "slim")
DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
MAX_GRAD_NORM = 1.0  # the Trainer's default


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=Path("bench-out"))
    parser.add_argument("--smoke", action="store_true", help="tiny random model, a few steps")
    parser.add_argument("--model", type=Path, default=MINILM)
    parser.add_argument("--device", default=None, help="cuda or cpu (default: cuda if any)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--steps", type=int, default=50, help="timed steps per variant")
    parser.add_argument("--warmup", type=int, default=10, help="untimed steps per variant")
    parser.add_argument("--dtypes", default="fp32,bf16", help="fp32, bf16, fp16 (autocast)")
    parser.add_argument("--heads-ratio", type=float, default=1 / 3)
    parser.add_argument("--ffn-ratio", type=float, default=0.4)
    parser.add_argument(
        "--round-to", type=int, default=1, help="make every pruned FFN width a multiple of this"
    )
    parser.add_argument("--mask-interval", type=int, default=10)
    parser.add_argument(
        "--ticket-report",
        type=Path,
        action="append",
        default=[],
        help="report.json of an earlybird fine-tuning run: its ticket fraction (repeatable)",
    )
    parser.add_argument(
        "--ticket-fraction",
        action="append",
        default=[],
        metavar="NAME=F",
        help="a ticket fraction to estimate the saving for (repeatable)",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args(argv)
    args.dtypes = [d.strip() for d in args.dtypes.split(",") if d.strip()]
    unknown = [d for d in args.dtypes if d not in DTYPES]
    if unknown:
        parser.error(f"unknown dtype(s) {unknown}: use {', '.join(DTYPES)}")
    if args.device is None:
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    return args


# --- the models --------------------------------------------------------------------------------
def load_model(args: argparse.Namespace) -> transformers.PreTrainedModel:
    return classifier(args.model, args.smoke)


def make_batch(vocab: int, args: argparse.Namespace) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    shape = (args.batch_size, args.seq_len)
    input_ids = torch.randint(min(1000, vocab // 2), vocab, shape, generator=g)
    batch = {
        "input_ids": input_ids,
        "attention_mask": torch.ones_like(input_ids),
        "token_type_ids": torch.zeros_like(input_ids),
        "labels": torch.randint(0, 2, (args.batch_size,), generator=g),
    }
    return {k: v.to(args.device) for k, v in batch.items()}


def weight_groups(model: nn.Module, skip: set[int]) -> list[dict[str, Any]]:
    """The Trainer's groups: weight decay 0.01 except biases and LayerNorm weights."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if id(p) in skip or not p.requires_grad:
            continue
        (no_decay if name.endswith("bias") or "LayerNorm" in name else decay).append(p)
    return [{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}]


def adamw(groups: list[dict[str, Any]]) -> torch.optim.Optimizer:
    return torch.optim.AdamW(groups, lr=2e-5, eps=1e-8, fused=True)


class Variant:
    """A model, its optimizer and what else its training step does."""

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        strategy: TrainingTimeStrategy | None = None,
    ) -> None:
        self.model, self.optimizer, self.strategy = model.train(), optimizer, strategy
        # The L1 term goes into backward, before clipping, as in the training pipeline.
        self.hooks = [] if strategy is None else strategy.gradient_hooks()

    def step(self, batch: dict[str, torch.Tensor], autocast: Any) -> None:
        with autocast():
            loss = self.model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), MAX_GRAD_NORM)
        if self.strategy is not None:
            self.strategy.before_optimizer_step()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)


def build_variants(args: argparse.Namespace) -> tuple[dict[str, Variant], dict[str, Any]]:
    base = load_model(args)
    dense = copy.deepcopy(base).to(args.device)
    search_model = copy.deepcopy(base).to(args.device)
    strategy = compresskit.get_strategy(
        "earlybird",
        heads_ratio=args.heads_ratio,
        ffn_ratio=args.ffn_ratio,
        mask_interval=args.mask_interval,
        rewind=False,
    )
    assert isinstance(strategy, TrainingTimeStrategy)
    coefficients = strategy.attach(search_model, as_submodule=True)
    own = {id(p) for p in coefficients.parameters()}
    magnitude = compresskit.get_strategy(
        "magnitude", heads_ratio=args.heads_ratio, ffn_ratio=args.ffn_ratio, round_to=args.round_to
    )
    plan = magnitude.plan(base)
    slim = compresskit.prune(copy.deepcopy(base), plan).to(args.device)
    variants = {
        "dense": Variant(dense, adamw(weight_groups(dense, set()))),
        "search": Variant(
            search_model,
            adamw([*weight_groups(search_model, own), strategy.param_group()]),
            strategy,
        ),
        "slim": Variant(slim, adamw(weight_groups(slim, set()))),
    }
    shapes = {
        "heads_per_layer": plan.heads_per_layer,
        "ffn_per_layer": plan.ffn_per_layer,
        "params": {
            name: sum(p.numel() for n, p in v.model.named_parameters() if "slimming" not in n)
            for name, v in variants.items()
        },
        "macs_ratio": compresskit.model_stats(base, args.seq_len).macs
        / compresskit.model_stats(slim, args.seq_len).macs,
    }
    return variants, shapes


# --- timing ------------------------------------------------------------------------------------
def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def autocast_for(device: str, dtype: torch.dtype | None) -> Callable[[], Any]:
    if dtype is None:
        return contextlib.nullcontext
    kind = "cuda" if device.startswith("cuda") else "cpu"
    return lambda: torch.autocast(kind, dtype=dtype)


def time_variants(
    variants: dict[str, Variant], batch: dict[str, torch.Tensor], args: argparse.Namespace
) -> dict[str, dict[str, list[float]]]:
    """Seconds of every timed step: {dtype: {variant: [...]}}."""
    timer = device_timer(args.device)
    times: dict[str, dict[str, list[float]]] = {}
    for dtype_name in args.dtypes:
        autocast = autocast_for(args.device, DTYPES[dtype_name])
        times[dtype_name] = {name: [] for name in variants}
        names = list(variants)
        for i in range(args.warmup + args.steps):
            order = names[i % len(names) :] + names[: i % len(names)]
            for name in order:
                variant = variants[name]
                seconds = timer(lambda v=variant, a=autocast: v.step(batch, a))
                if i >= args.warmup:
                    times[dtype_name][name].append(seconds)
            if (i + 1) % 10 == 0:
                total = args.warmup + args.steps
                print(f"{dtype_name}: {i + 1}/{total} rounds", file=sys.stderr, flush=True)
    return times


def time_mask_draw(strategy: Any, device: str, repeats: int = 20) -> float:
    """Median seconds to turn the coefficients into a mask (copied to the CPU, ranked)."""
    samples = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        strategy.current_mask()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


# --- what the numbers say ------------------------------------------------------------------------
def ticket_fractions(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for path in args.ticket_report:
        if not path.is_file():
            print(f"no report at {path}: skipped", file=sys.stderr)
            continue
        report = json.loads(path.read_text())
        steps = report["steps"]
        name = f"{path.parent.name}: {report['search']['state']} at step {steps['search']}"
        out[f"{name} of {steps['train']}"] = {
            "fraction": steps["search"] / steps["train"],
            "search_steps": steps["search"],
            "schedule_steps": steps["train"],
            "ticket": report["search"]["state"],
        }
    for item in args.ticket_fraction:
        name, _, value = item.rpartition("=")
        out[name or item] = {"fraction": float(value)}
    return out


def saving(f: float, t: dict[str, float], mask_per_step: float) -> float:
    """Estimated saving of earlybird fine-tuning over dense (see the module docstring)."""
    return 1 - (f * (t["search"] + mask_per_step) + t["slim"]) / t["dense"]


def summarise(
    args: argparse.Namespace,
    times: dict[str, dict[str, list[float]]],
    mask_seconds: float,
    shapes: dict[str, Any],
    fractions: dict[str, dict[str, Any]],
) -> dict[str, Any]:
    per_dtype = {}
    for dtype_name, by_variant in times.items():
        med = {name: statistics.median(v) for name, v in by_variant.items()}
        mask_per_step = mask_seconds / args.mask_interval
        per_dtype[dtype_name] = {
            "median_step_s": med,
            "quartiles_step_s": {k: quartiles(v) for k, v in by_variant.items()},
            "search_overhead": (med["search"] + mask_per_step) / med["dense"] - 1,
            "slim_speedup": med["dense"] / med["slim"],
            "slim_saving": 1 - med["slim"] / med["dense"],
            "savings": {
                name: saving(info["fraction"], med, mask_per_step)
                for name, info in fractions.items()
            },
        }
    return {
        "benchmark": "gpu_training_speed",
        "mode": "smoke" if args.smoke else "full",
        "model": "tiny random BERT" if args.smoke else args.model.name,
        "device": args.device,
        "batch_size": args.batch_size,
        "seq_len": args.seq_len,
        "warmup_steps": args.warmup,
        "timed_steps": args.steps,
        "heads_ratio": args.heads_ratio,
        "ffn_ratio": args.ffn_ratio,
        "round_to": args.round_to,
        "mask_interval": args.mask_interval,
        "mask_draw_s": mask_seconds,
        "slim_shapes": shapes,
        "ticket_fractions": fractions,
        "results": per_dtype,
        "step_times_s": times,
        "command": " ".join(["python", *sys.argv]),
        "machine": machine_info(args.device),
    }


def quartiles(values: list[float]) -> list[float]:
    if len(values) < 2:
        return [values[0]] * 3
    q = statistics.quantiles(values, n=4)
    return [q[0], statistics.median(values), q[2]]


def rounded(round_to: int) -> str:
    return f", rounded to multiples of {round_to}" if round_to > 1 else ""


def markdown(result: dict[str, Any]) -> str:
    ms = 1e3
    lines = [
        f"# Training-step time: dense, earlybird search, slim ({result['mode']})",
        "",
        f"{result['model']} on {result['device']}, batch {result['batch_size']} × seq "
        f"{result['seq_len']} (no padding); forward, backward, clipping, fused AdamW; "
        f"{result['timed_steps']} timed steps per variant after {result['warmup_steps']} "
        "warm-up, interleaved; medians. Slim: heads per layer "
        f"{result['slim_shapes']['heads_per_layer']}, FFN per layer "
        f"{result['slim_shapes']['ffn_per_layer']}{rounded(result['round_to'])} (MACs ratio "
        f"{result['slim_shapes']['macs_ratio']:.2f}×).",
        "",
        "| precision | dense (ms) | search (ms) | slim (ms) | search vs dense | dense / slim |",
        "|---|--:|--:|--:|--:|--:|",
    ]
    for dtype_name, r in result["results"].items():
        med = r["median_step_s"]
        lines.append(
            f"| {dtype_name} | {ms * med['dense']:.2f} | {ms * med['search']:.2f} | "
            f"{ms * med['slim']:.2f} | {100 * r['search_overhead']:+.1f}% | "
            f"{r['slim_speedup']:.2f}× |"
        )
    lines += [
        "",
        f"Drawing a mask: {ms * result['mask_draw_s']:.2f} ms every {result['mask_interval']} "
        "steps (counted in 'search vs dense').",
    ]
    if result["ticket_fractions"]:
        dtypes = list(result["results"])
        lines += [
            "",
            "Estimated saving of earlybird fine-tuning over dense, "
            "1 − (f·(t_search + t_mask/interval) + t_slim) / t_dense:",
            "",
            "| ticket at (fraction f of the schedule) | " + " | ".join(dtypes) + " |",
            "|---|" + "--:|" * len(dtypes),
            "| f = 0 (slim training alone; the upper bound) | "
            + " | ".join(f"{100 * result['results'][d]['slim_saving']:.1f}%" for d in dtypes)
            + " |",
        ]
        for name, info in result["ticket_fractions"].items():
            row = " | ".join(f"{100 * result['results'][d]['savings'][name]:.1f}%" for d in dtypes)
            lines.append(f"| {name}: f = {info['fraction']:.3f} | {row} |")
    lines += [
        "",
        f"Machine: {describe_machine(result['machine'])}.",
        "",
        f"Command: `{result['command']}`",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.smoke:
        args.batch_size, args.seq_len = min(args.batch_size, 4), min(args.seq_len, 16)
        args.steps, args.warmup = min(args.steps, 3), min(args.warmup, 1)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    variants, shapes = build_variants(args)
    batch = make_batch(variants["dense"].model.config.vocab_size, args)
    times = time_variants(variants, batch, args)
    strategy = variants["search"].strategy
    assert strategy is not None
    mask_seconds = time_mask_draw(strategy, args.device)
    result = summarise(args, times, mask_seconds, shapes, ticket_fractions(args))
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "gpu_training_speed.json").write_text(json.dumps(result, indent=1) + "\n")
    text = markdown(result)
    (args.output / "gpu_training_speed.md").write_text(text)
    print(text, end="")


if __name__ == "__main__":
    main()
