"""Fine-tuning on SST-2: earlybird and movement against dense, random and magnitude pruning.

Every run is the same `compresskit prune --task sst2 ...` command with the same data subset,
seed, epochs and hyper-parameters; only the strategy (and, for the second earlybird run, the
coefficients' learning rate) differs. Runs go one after another on this machine, so their
wall-clocks are comparable with each other; the table gives dev accuracy, the ticket step,
the wall-clock of each stage and the total against dense.

    python benchmarks/finetune_comparison.py          # MiniLM, SST-2 8k subset, ~40 min, 2 cores
    python benchmarks/finetune_comparison.py --smoke  # tiny synthetic model and data (CI)

Writes finetune_comparison.json and .md, and every run's output folder (model, report.json,
figure) and log, to --output (bench-out/finetune_comparison).
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from _prune_runs import (
    machine_and_commands,
    run_prune,
    save_result,
    smoke_inputs,
    sst2_parser,
)

import compresskit.machine

PRUNING = ["--heads-ratio", "0.3333", "--ffn-ratio", "0.4"]


def parse_args() -> argparse.Namespace:
    parser = sst2_parser(__doc__.splitlines()[0], "bench-out/finetune_comparison")
    parser.add_argument("--batch-size", default="32")
    parser.add_argument("--max-seq-len", default="64")
    parser.add_argument("--coef-lr", default="1e-2", help="coefficients' lr of the 2nd earlybird")
    parser.add_argument("--seed", default="0")
    parser.add_argument(
        "--runs", default="dense,earlybird,earlybird-coef-lr,movement,random,magnitude"
    )
    return parser.parse_args()


def runs(args: argparse.Namespace) -> dict[str, list[str]]:
    """Each run's own options; the shared ones come from `common`."""
    search = ["--mask-interval", "1", "--window", "3"] if args.smoke else []
    return {
        "dense": ["--strategy", "none"],
        "earlybird": ["--strategy", "earlybird", *PRUNING, *search],
        "earlybird-coef-lr": [
            *("--strategy", "earlybird", *PRUNING, *search, "--coef-lr", args.coef_lr),
        ],
        "movement": ["--strategy", "movement", *PRUNING],
        "random": ["--strategy", "random", *PRUNING],
        "magnitude": ["--strategy", "magnitude", *PRUNING],
    }


def common(args: argparse.Namespace) -> list[str]:
    subset = ["--max-train-samples", str(args.max_train_samples)] if args.max_train_samples else []
    return [
        *("--model", str(args.model), "--task", "sst2", "--data", str(args.data), *subset),
        *("--epochs", args.epochs),
        *("--batch-size", args.batch_size, "--lr", args.lr, "--max-seq-len", args.max_seq_len),
        *("--seed", args.seed, "--no-progress", "--overwrite"),
    ]


def run_one(name: str, options: list[str], args: argparse.Namespace) -> dict[str, Any]:
    return run_prune(name, [*options, *common(args)], args.output)


def summarise(reports: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    dense = reports.get("dense")
    rows = []
    for name, r in reports.items():
        search = r["search"] or {}
        row = {
            "run": name,
            "accuracy": r["metrics"]["accuracy"],
            "decided": f"{search['state']} @ {search['decided_at']}" if search else "",
            "seconds": r["seconds"],
            "steps": r["steps"],
            "macs_ratio": r["macs_ratio"],
        }
        if dense is not None:
            row["accuracy_vs_dense"] = r["metrics"]["accuracy"] - dense["metrics"]["accuracy"]
            row["total_vs_dense"] = r["seconds"]["total"] / dense["seconds"]["total"] - 1
        rows.append(row)
    return rows


def markdown(result: dict[str, Any]) -> str:
    s = result["settings"]
    lines = [
        f"# SST-2 fine-tuning comparison ({result['mode']})",
        "",
        f"{s['model']}, {s['data']}; {s['epochs']} epochs, batch {s['batch_size']}, "
        f"lr {s['lr']}, max length {s['max_seq_len']}, seed {s['seed']}; pruned runs remove "
        "4 of 12 heads per layer and 40% of FFN neurons (global).",
        "",
        "| run | dev acc | Δ vs dense | decided | search s | score s | prune s | train s "
        "| eval s | total s | total vs dense | MACs ratio |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in result["rows"]:
        sec = row["seconds"]
        lines.append(
            f"| {row['run']} | {100 * row['accuracy']:.2f} | "
            f"{_points(row.get('accuracy_vs_dense'))} | {row['decided']} | "
            f"{_s(sec, 'search')} | {_s(sec, 'score')} | {_s(sec, 'prune')} | "
            f"{_s(sec, 'train')} | {_s(sec, 'evaluate')} | {_s(sec, 'total')} | "
            f"{_percent(row.get('total_vs_dense'))} | {row['macs_ratio']:.2f}x |"
        )
    lines += [
        "",
        *machine_and_commands(result),
    ]
    return "\n".join(lines) + "\n"


def _s(seconds: dict[str, float], stage: str) -> str:
    return f"{seconds[stage]:.1f}" if stage in seconds else ""


def _points(delta: float | None) -> str:
    return "" if delta is None else f"{100 * delta:+.2f}"


def _percent(ratio: float | None) -> str:
    return "" if ratio is None else f"{100 * ratio:+.1f}%"


def main() -> None:
    args = parse_args()
    with smoke_inputs(args):
        if args.smoke:
            args.max_train_samples, args.epochs, args.batch_size = 64, "1", "16"
            args.lr, args.max_seq_len = "5e-3", "16"
        load_before = os.getloadavg()[0]
        chosen = args.runs.split(",")
        reports = {n: run_one(n, o, args) for n, o in runs(args).items() if n in chosen}
    result = {
        "mode": "smoke" if args.smoke else "full",
        "settings": {k: str(v) for k, v in vars(args).items()},
        "machine": compresskit.machine.machine_info(),
        "load_before": load_before,
        "rows": summarise(reports),
        "reports": reports,
    }
    save_result(args.output, "finetune_comparison", result, markdown(result))


if __name__ == "__main__":
    main()
