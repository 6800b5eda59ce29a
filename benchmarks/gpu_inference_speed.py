"""Inference latency of the pruned against the dense model in PyTorch on a GPU (or the CPU):
eager and `torch.compile`, fp32 and fp16.

The dense model is MiniLM with a sequence-classification head; the pruned one is the same
model with 4 of 12 heads per layer and 40% of the FFN neurons removed (magnitude plan, the
README's ratios). For every precision, way of running and batch size, both models run on the
same seeded random token ids (sequence 128, no padding) under `torch.inference_mode`, in
interleaved rounds (one call of each per round, the order alternating) after warm-up calls;
each call ends with a device synchronisation and is timed with CUDA events on a GPU. Medians
and p90 are reported, with the speedup of pruned over dense (ratio of medians) beside the
MACs ratio.

`torch.compile` (default mode, static shapes) compiles each model once per batch size and
precision; the compile time is recorded. The outputs are checked: the largest absolute
difference of the logits, fp16 against fp32 and compiled against eager, is recorded for each
model.

    python benchmarks/gpu_inference_speed.py                  # MiniLM, on the GPU if any
    python benchmarks/gpu_inference_speed.py --smoke          # tiny random model (CI, CPU)

Writes gpu_inference_speed.json and gpu_inference_speed.md to --output (bench-out/).
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from _gpu import classifier, describe_machine, device_timer, machine_info

import compresskit
import compresskit.machine
from compresskit.bench import percentile

MINILM = Path(__file__).resolve().parents[2] / "shared" / "models" / "minilm-l6-h384-uncased"
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=Path("bench-out"))
    parser.add_argument("--smoke", action="store_true", help="tiny random model, a few runs")
    parser.add_argument("--model", type=Path, default=MINILM)
    parser.add_argument("--device", default=None, help="cuda or cpu (default: cuda if any)")
    parser.add_argument("--batch-sizes", default="1,32")
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--dtypes", default="fp32,fp16", help="for eager: fp32, fp16, bf16")
    parser.add_argument(
        "--compile-dtypes", default="fp32,fp16", help="for torch.compile ('' for none)"
    )
    parser.add_argument(
        "--compile-batch-sizes", default=None, help="batch sizes to compile (default: all)"
    )
    parser.add_argument("--runs", type=int, default=100, help="timed calls per model and case")
    parser.add_argument("--warmup", type=int, default=10, help="untimed calls per model")
    parser.add_argument("--heads-ratio", type=float, default=1 / 3)
    parser.add_argument("--ffn-ratio", type=float, default=0.4)
    parser.add_argument(
        "--round-to", type=int, default=1, help="make every pruned FFN width a multiple of this"
    )
    parser.add_argument(
        "--time-budget",
        type=float,
        default=None,
        help="seconds: compiled cases that would start after this are skipped (and listed)",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args(argv)
    args.batch_sizes = _ints(args.batch_sizes)
    args.compile_batch_sizes = (
        args.batch_sizes if args.compile_batch_sizes is None else _ints(args.compile_batch_sizes)
    )
    args.dtypes = _names(args.dtypes)
    args.compile_dtypes = _names(args.compile_dtypes)
    unknown = [d for d in args.dtypes + args.compile_dtypes if d not in DTYPES]
    if unknown:
        parser.error(f"unknown dtype(s) {unknown}: use {', '.join(DTYPES)}")
    if args.device is None:
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    return args


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def _names(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


# --- the models --------------------------------------------------------------------------------
def load_models(args: argparse.Namespace) -> tuple[Any, Any, dict[str, Any]]:
    dense = classifier(args.model, args.smoke)
    dense.eval()
    strategy = compresskit.get_strategy(
        "magnitude", heads_ratio=args.heads_ratio, ffn_ratio=args.ffn_ratio, round_to=args.round_to
    )
    plan = strategy.plan(dense)
    pruned = compresskit.prune(copy.deepcopy(dense), plan).eval()
    shapes = {
        "heads_per_layer": plan.heads_per_layer,
        "ffn_per_layer": plan.ffn_per_layer,
        "macs_ratio": compresskit.model_stats(dense, args.seq_len).macs
        / compresskit.model_stats(pruned, args.seq_len).macs,
        "params": {
            "dense": sum(p.numel() for p in dense.parameters()),
            "pruned": sum(p.numel() for p in pruned.parameters()),
        },
    }
    return dense, pruned, shapes


def inputs(vocab: int, batch_size: int, args: argparse.Namespace) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(batch_size)
    ids = torch.randint(min(1000, vocab // 2), vocab, (batch_size, args.seq_len), generator=g)
    batch = {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "token_type_ids": torch.zeros_like(ids),
    }
    return {k: v.to(args.device) for k, v in batch.items()}


# --- timing ------------------------------------------------------------------------------------
def logits_of(model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    with torch.inference_mode():
        return model(**batch).logits


def measure_case(
    calls: dict[str, Callable[[], Any]], args: argparse.Namespace
) -> dict[str, list[float]]:
    timer = device_timer(args.device)
    for _ in range(args.warmup):
        for call in calls.values():
            timer(call)
    names = list(calls)
    seconds: dict[str, list[float]] = {name: [] for name in names}
    for i in range(args.runs):
        for name in names if i % 2 == 0 else names[::-1]:
            seconds[name].append(timer(calls[name]))
    return seconds


def run(args: argparse.Namespace) -> dict[str, Any]:
    begin = time.perf_counter()
    # Every (model, precision, batch) is its own compiled graph: never fall back to eager
    # for having compiled too many.
    for name in ("recompile_limit", "cache_size_limit"):
        if hasattr(torch._dynamo.config, name):
            setattr(torch._dynamo.config, name, 64)
    dense32, pruned32, shapes = load_models(args)
    vocab = dense32.config.vocab_size
    cases: list[dict[str, Any]] = []
    skipped: list[str] = []
    plans = [("eager", d) for d in args.dtypes] + [("compile", d) for d in args.compile_dtypes]
    reference: dict[tuple[str, int], torch.Tensor] = {}  # fp32 eager logits
    for mode, dtype_name in plans:
        dtype = DTYPES[dtype_name]
        models = {
            "dense": copy.deepcopy(dense32).to(args.device, dtype),
            "pruned": copy.deepcopy(pruned32).to(args.device, dtype),
        }
        batch_sizes = args.batch_sizes if mode == "eager" else args.compile_batch_sizes
        for batch_size in batch_sizes:
            label = f"{mode} {dtype_name} batch {batch_size}"
            elapsed = time.perf_counter() - begin
            if mode == "compile" and args.time_budget and elapsed > args.time_budget:
                skipped.append(label)
                print(f"skipped (time budget): {label}", file=sys.stderr, flush=True)
                continue
            print(f"{label} ...", file=sys.stderr, flush=True)
            try:
                cases.append(run_case(models, mode, dtype_name, batch_size, vocab, reference, args))
            except Exception as err:  # a case that fails (a compiler missing) is reported
                error = f"{type(err).__name__}: {str(err).strip().splitlines()[0][:300]}"
                print(f"{label} failed: {error}", file=sys.stderr, flush=True)
                cases.append(
                    {"mode": mode, "dtype": dtype_name, "batch_size": batch_size, "error": error}
                )
    return {"cases": cases, "skipped": skipped, "shapes": shapes}


def run_case(
    models: dict[str, Any],
    mode: str,
    dtype_name: str,
    batch_size: int,
    vocab: int,
    reference: dict[tuple[str, int], torch.Tensor],
    args: argparse.Namespace,
) -> dict[str, Any]:
    batch = inputs(vocab, batch_size, args)
    runners: dict[str, Callable[[], Any]] = {}
    compile_s: dict[str, float] = {}
    checks: dict[str, float | None] = {}
    graphs: dict[str, int] = {}
    if mode == "compile":
        torch._dynamo.reset()  # this case's models compile afresh; earlier cases are done
    for name, model in models.items():
        runner = model
        if mode == "compile":
            before = _dynamo_counts()
            runner = torch.compile(model, dynamic=False)
            start = time.perf_counter()
            logits_of(runner, batch)
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            compile_s[name] = time.perf_counter() - start
            after = _dynamo_counts()
            graphs[name] = after[0] - before[0]
            graphs[name + " graph breaks"] = after[1] - before[1]
        out = logits_of(runner, batch).float()
        key = (name, batch_size)
        if mode == "eager" and dtype_name == "fp32":
            reference[key] = out
        checks[name] = float((out - reference[key]).abs().max()) if key in reference else None
        runners[name] = lambda r=runner: logits_of(r, batch)
    seconds = measure_case(runners, args)
    med = {name: statistics.median(v) for name, v in seconds.items()}
    return {
        "mode": mode,
        "dtype": dtype_name,
        "batch_size": batch_size,
        "seq_len": args.seq_len,
        "median_ms": {k: 1e3 * v for k, v in med.items()},
        "p90_ms": {k: 1e3 * percentile(v, 90) for k, v in seconds.items()},
        "speedup": med["dense"] / med["pruned"],
        "sequences_per_s": {k: batch_size / v for k, v in med.items()},
        "max_abs_diff_vs_fp32_eager": checks,
        "compile_s": compile_s,
        "compiled_graphs": graphs,
        "times_ms": {k: [1e3 * t for t in v] for k, v in seconds.items()},
    }


def _dynamo_counts() -> tuple[int, int]:
    """(graphs compiled, graph breaks) so far, from dynamo's counters: a model that compiled
    into one graph with no break runs compiled, not eager, when timed."""
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"]), sum(counters["graph_break"].values())


# --- report ------------------------------------------------------------------------------------
def rounded(round_to: int) -> str:
    return f" (rounded to multiples of {round_to})" if round_to > 1 else ""


def markdown(result: dict[str, Any]) -> str:
    shapes, m = result["shapes"], result["machine"]
    lines = [
        f"# Inference: pruned vs dense in PyTorch ({result['mode']})",
        "",
        f"{result['model']} (sequence classifier) on {result['device']}, sequence "
        f"{result['seq_len']}, no padding; {result['runs']} timed calls per model and case "
        f"after {result['warmup']} warm-up, interleaved; medians (p90). Pruned: heads per "
        f"layer {shapes['heads_per_layer']}, FFN per layer {shapes['ffn_per_layer']}"
        f"{rounded(result['round_to'])}, MACs ratio {shapes['macs_ratio']:.2f}×.",
        "",
        "| way | precision | batch | dense ms | pruned ms | speedup | "
        "max abs diff vs fp32 eager (dense / pruned) | compile s (dense / pruned) |",
        "|---|---|--:|--:|--:|--:|---|---|",
    ]
    for c in result["cases"]:
        if "error" in c:
            lines.append(
                f"| {c['mode']} | {c['dtype']} | {c['batch_size']} | failed: "
                f"{c['error'].replace('|', '/')} | | | | |"
            )
            continue
        med, p90 = c["median_ms"], c["p90_ms"]
        diffs = " / ".join(
            "–"
            if c["max_abs_diff_vs_fp32_eager"][k] is None
            else f"{c['max_abs_diff_vs_fp32_eager'][k]:.1e}"
            for k in ("dense", "pruned")
        )
        compiled = " / ".join(f"{c['compile_s'][k]:.1f}" for k in c["compile_s"]) or "–"
        lines.append(
            f"| {c['mode']} | {c['dtype']} | {c['batch_size']} | {med['dense']:.3f} "
            f"({p90['dense']:.3f}) | {med['pruned']:.3f} ({p90['pruned']:.3f}) | "
            f"{c['speedup']:.2f}× | {diffs} | {compiled} |"
        )
    if result["skipped"]:
        lines += ["", f"Skipped (time budget): {', '.join(result['skipped'])}."]
    lines += [
        "",
        f"Machine: {describe_machine(m)}.",
        "",
        f"Command: `{result['command']}`",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.smoke:
        args.seq_len = min(args.seq_len, 16)
        args.batch_sizes, args.compile_batch_sizes = [1, 4], [4]
        args.runs, args.warmup = min(args.runs, 3), min(args.warmup, 1)
        args.compile_dtypes = []  # a compile needs a C++ compiler and a minute: not in CI
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    measured = run(args)
    result = {
        "benchmark": "gpu_inference_speed",
        "mode": "smoke" if args.smoke else "full",
        "model": "tiny random BERT" if args.smoke else args.model.name,
        "device": args.device,
        "seq_len": args.seq_len,
        "round_to": args.round_to,
        "runs": args.runs,
        "warmup": args.warmup,
        **measured,
        "command": " ".join(["python", *sys.argv]),
        "machine": machine_info(args.device),
    }
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "gpu_inference_speed.json").write_text(json.dumps(result, indent=1) + "\n")
    text = markdown(result)
    (args.output / "gpu_inference_speed.md").write_text(text)
    print(text, end="")


if __name__ == "__main__":
    main()
