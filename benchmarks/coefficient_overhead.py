"""Training-step overhead of EarlyBERT's slimming coefficients.

Times one training step (forward, backward, AdamW step) of the real MiniLM at batch 32,
sequence 64, without and with coefficients attached (the "with" step also adds the L1 term to
the loss and steps the coefficients). The two models are identical copies stepped in
alternating order (plain, slim, slim, plain, ...) so drift in machine load hits both; the
first steps of each are warm-up and not counted. The target is <= 5% overhead; the measured
number is reported as it is.

    python benchmarks/coefficient_overhead.py                 # MiniLM, a few minutes on 2 cores
    python benchmarks/coefficient_overhead.py --smoke         # tiny random model, seconds (CI)

Writes coefficient_overhead.json and coefficient_overhead.md to --output (bench-out/).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import transformers
from torch import nn

import compresskit
import compresskit.machine

# isort: split
# (ruff files compresskit.strategies, which installs from strategies/, under third-party)

MINILM = Path(__file__).resolve().parents[2] / "shared" / "models" / "minilm-l6-h384-uncased"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=Path("bench-out"))
    parser.add_argument("--smoke", action="store_true", help="tiny random model, 3 steps each")
    parser.add_argument("--model", type=Path, default=MINILM)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--steps", type=int, default=30, help="timed steps per variant")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per variant")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: as is)")
    return parser.parse_args()


def load_model(args: argparse.Namespace) -> transformers.PreTrainedModel:
    torch.manual_seed(0)
    if args.smoke:
        config = transformers.BertConfig(
            vocab_size=128,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=64,
            max_position_embeddings=64,
        )
        config.num_labels = 2
        return transformers.BertForSequenceClassification(config)
    if not (args.model / "config.json").is_file():
        raise SystemExit(f"no model at {args.model}: pass --model or use --smoke")
    return transformers.AutoModelForSequenceClassification.from_pretrained(args.model, num_labels=2)


def make_batch(vocab: int, batch_size: int, seq_len: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    input_ids = torch.randint(min(1000, vocab // 2), vocab, (batch_size, seq_len), generator=g)
    return {
        "input_ids": input_ids,
        "attention_mask": torch.ones_like(input_ids),
        "labels": torch.randint(0, 2, (batch_size,), generator=g),
    }


def step_fn(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    batch: dict[str, torch.Tensor],
    penalty: Callable[[], torch.Tensor] | None,
) -> Callable[[], float]:
    """One timed training step, returning its seconds."""

    def step() -> float:
        start = time.perf_counter()
        loss = model(**batch).loss
        if penalty is not None:
            loss = loss + penalty()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return time.perf_counter() - start

    return step


def run(args: argparse.Namespace) -> dict[str, Any]:
    plain = load_model(args).train()
    slim = copy.deepcopy(plain)
    strategy = compresskit.get_strategy("earlybird", rewind=False)
    strategy.attach(slim)
    batch = make_batch(plain.config.vocab_size, args.batch_size, args.seq_len)
    steps = {
        "plain": step_fn(plain, torch.optim.AdamW(plain.parameters(), lr=2e-5), batch, None),
        "coefficients": step_fn(
            slim,
            torch.optim.AdamW([{"params": slim.parameters()}, strategy.param_group()], lr=2e-5),
            batch,
            strategy.regularizer,
        ),
    }
    times: dict[str, list[float]] = {"plain": [], "coefficients": []}
    load_before = os.getloadavg()
    for i in range(args.warmup + args.steps):
        order = ("plain", "coefficients") if i % 2 == 0 else ("coefficients", "plain")
        for name in order:
            seconds = steps[name]()
            if i >= args.warmup:
                times[name].append(seconds)
        if (i + 1) % 10 == 0:
            print(f"{i + 1}/{args.warmup + args.steps} step pairs", file=sys.stderr, flush=True)
    mask_seconds = time_mask_draw(strategy)
    return summarise(args, times, mask_seconds, strategy, load_before)


def time_mask_draw(strategy: Any, repeats: int = 20) -> float:
    """Median seconds to turn the coefficients into a mask (done every mask_interval steps)."""
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        strategy.current_mask()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def summarise(
    args: argparse.Namespace,
    times: dict[str, list[float]],
    mask_seconds: float,
    strategy: Any,
    load_before: tuple[float, float, float],
) -> dict[str, Any]:
    plain, slim = statistics.median(times["plain"]), statistics.median(times["coefficients"])
    paired = [c / p for p, c in zip(times["plain"], times["coefficients"], strict=True)]
    interval = strategy.config.mask_interval
    return {
        "benchmark": "coefficient_overhead",
        "mode": "smoke" if args.smoke else "full",
        "model": "tiny random BERT" if args.smoke else args.model.name,
        "batch_size": args.batch_size,
        "seq_len": args.seq_len,
        "warmup_steps": args.warmup,
        "timed_steps": args.steps,
        "median_step_s": {"plain": plain, "coefficients": slim},
        "quartiles_step_s": {k: quartiles(v) for k, v in times.items()},
        "overhead_of_medians": slim / plain - 1,
        "overhead_median_of_pairs": statistics.median(paired) - 1,
        "mask_draw_s": mask_seconds,
        "mask_draw_per_step_s": mask_seconds / interval,
        "mask_interval": interval,
        "target_overhead": 0.05,
        "step_times_s": times,
        "machine": machine_info(load_before),
    }


def quartiles(values: list[float]) -> list[float]:
    if len(values) < 2:
        return [values[0]] * 3
    q = statistics.quantiles(values, n=4)
    return [q[0], statistics.median(values), q[2]]


def machine_info(load_before: tuple[float, float, float]) -> dict[str, Any]:
    return compresskit.machine.machine_info() | {
        "load_average_1m": {"before": load_before[0], "after": os.getloadavg()[0]}
    }


def markdown(result: dict[str, Any]) -> str:
    med, q = result["median_step_s"], result["quartiles_step_s"]
    m = result["machine"]
    rows = [
        f"# Slimming-coefficient overhead ({result['mode']})",
        "",
        f"{result['model']}, batch {result['batch_size']}, seq {result['seq_len']}, "
        f"forward + backward + AdamW step; {result['timed_steps']} timed steps per variant "
        f"after {result['warmup_steps']} warm-up, interleaved.",
        "",
        "| variant | median step (ms) | quartiles (ms) |",
        "|---|---|---|",
    ]
    for name in ("plain", "coefficients"):
        lo, _, hi = q[name]
        rows.append(f"| {name} | {1e3 * med[name]:.1f} | {1e3 * lo:.1f} – {1e3 * hi:.1f} |")
    rows += [
        "",
        f"- overhead (ratio of medians): **{100 * result['overhead_of_medians']:+.2f}%** "
        f"(target ≤ {100 * result['target_overhead']:.0f}%)",
        f"- overhead (median of paired ratios): {100 * result['overhead_median_of_pairs']:+.2f}%",
        f"- drawing a mask: {1e3 * result['mask_draw_s']:.2f} ms, every "
        f"{result['mask_interval']} steps ({1e3 * result['mask_draw_per_step_s']:.3f} ms/step)",
        "",
        f"Machine: {m['cpu']}, {m['logical_cores']} logical cores, {m['torch_threads']} torch "
        f"threads; torch {m['torch']}, transformers {m['transformers']}, "
        f"compresskit {m['compresskit']}, Python {m['python']}; 1-min load average "
        f"{m['load_average_1m']['before']:.2f} before, {m['load_average_1m']['after']:.2f} after.",
    ]
    return "\n".join(rows) + "\n"


def main() -> None:
    args = parse_args()
    if args.smoke:
        args.batch_size, args.seq_len = min(args.batch_size, 4), min(args.seq_len, 16)
        args.steps, args.warmup = 3, 1
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    result = run(args)
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "coefficient_overhead.json").write_text(json.dumps(result, indent=1) + "\n")
    text = markdown(result)
    (args.output / "coefficient_overhead.md").write_text(text)
    print(text, end="")


if __name__ == "__main__":
    main()
