"""Time to quality on SST-2: dense training against earlybird (continuing the budget after the
ticket, and EarlyBERT's rewind) and random pruning, with the same budget, seed and
hyper-parameters, at two pruning ratios.

Every run is one `compresskit prune --task sst2 ...` command, run one after another on this
machine; each saves its own folder (model, report.json, log), and a run whose report.json is
there already is not run again, so the benchmark can be run seed by seed, or continued, and
merged. Time ratios are only taken between runs of the same invocation's machine.

    python benchmarks/time_to_quality.py                      # MiniLM, 8k subset, 3 seeds
    python benchmarks/time_to_quality.py --seeds 0 --ratios earlybert
    python benchmarks/time_to_quality.py --max-train-samples 0 --epochs 1 --seeds 0  # full set
    python benchmarks/time_to_quality.py --smoke              # tiny model and data (CI)

Writes time_to_quality.json, .md and .png to --output (bench-out/time_to_quality).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
from pathlib import Path
from typing import Any

from _prune_runs import (
    machine_and_commands,
    run_prune,
    save_result,
    smoke_inputs,
    sst2_parser,
)

import compresskit.machine

# EarlyBERT's fine-tuning ratios (1.6x fewer encoder MACs on MiniLM), and one of >= 2.2x.
RATIOS = {
    "earlybert": ["--heads-ratio", "0.3333", "--ffn-ratio", "0.4"],
    "wide": ["--heads-ratio", "0.5", "--ffn-ratio", "0.6"],
}
VARIANTS = {
    "dense": ["--strategy", "none"],
    "earlybird-continue": ["--strategy", "earlybird", "--no-rewind"],
    "earlybird-rewind": ["--strategy", "earlybird", "--rewind"],
    "random": ["--strategy", "random"],
}


def parse_args() -> argparse.Namespace:
    parser = sst2_parser(__doc__.splitlines()[0], "bench-out/time_to_quality")
    parser.add_argument("--batch-size", default="32")
    parser.add_argument("--max-seq-len", default="64")
    parser.add_argument("--eval-every", default="100", help="steps between dev-loss points")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--ratios", default=",".join(RATIOS))
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--merge-only", action="store_true", help="only merge saved runs")
    return parser.parse_args()


def planned(args: argparse.Namespace) -> list[tuple[str, list[str]]]:
    """(run name, its own options) in the order they run: seed by seed, dense first."""
    runs = []
    for seed in args.seeds.split(","):
        for variant in args.variants.split(","):
            ratios = [""] if variant == "dense" else args.ratios.split(",")
            for ratio in ratios:
                name = f"{variant}-seed{seed}" if not ratio else f"{ratio}-{variant}-seed{seed}"
                options = [*VARIANTS[variant], *RATIOS.get(ratio, []), "--seed", seed]
                if args.smoke and variant.startswith("earlybird"):
                    options += ["--mask-interval", "1", "--window", "3"]  # a tiny budget
                runs.append((name, options))
    return runs


def common(args: argparse.Namespace) -> list[str]:
    subset = ["--max-train-samples", str(args.max_train_samples)] if args.max_train_samples else []
    return [
        *("--model", str(args.model), "--task", "sst2", "--data", str(args.data), *subset),
        *("--epochs", args.epochs, "--batch-size", args.batch_size, "--lr", args.lr),
        *("--max-seq-len", args.max_seq_len, "--eval-every", args.eval_every),
        *("--no-progress", "--overwrite"),
    ]


def saved(folder: Path, name: str) -> dict[str, Any] | None:
    path = folder / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def run_all(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    reports = {}
    for name, options in planned(args):
        report = saved(args.output, name)
        if report is None and not args.merge_only:
            load_before = os.getloadavg()[0]
            report = run_prune(name, [*options, *common(args)], args.output)
            report["load_before"] = load_before
            (args.output / f"{name}.json").write_text(json.dumps(report, indent=1) + "\n")
        if report is not None:
            reports[name] = report
    return reports


# --- merging ------------------------------------------------------------------------------------
def training_clock(report: dict[str, Any]) -> float:
    """Seconds from the start of training to its last step, evaluations left out: the dev-loss
    curve's clock at the run's last step (search and slim steps counted together; every run
    here evaluates there), else the report's training seconds."""
    curve, trained = report["curve"], sum(report["steps"].values())
    if curve and curve[-1]["step"] == trained:
        return float(curve[-1]["seconds"])
    return float(report["time"]["training_seconds"])


def row_of(name: str, report: dict[str, Any], dense: dict[str, Any] | None) -> dict[str, Any]:
    time = report["time"]
    search = report["search"] or {}
    row = {
        "run": name,
        "accuracy": report["metrics"]["accuracy"],
        "training_seconds": training_clock(report),
        "total_seconds": report["seconds"]["total"],
        "decided": f"{search['state']} @ {search['decided_at']}" if search else "",
        "search_fraction": time["search_fraction"] if search else None,
        "search_s_per_step": time["search_seconds_per_step"],
        "slim_s_per_step": time["slim_seconds_per_step"],
        "estimated_saving": time["estimated_saving"],
        "macs_ratio": report["macs_ratio"],
        "curve": report["curve"],
    }
    if dense is not None:
        row["saving_vs_dense"] = 1 - row["training_seconds"] / training_clock(dense)
        row["accuracy_vs_dense"] = row["accuracy"] - dense["metrics"]["accuracy"]
    return row


def summarise(reports: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per run; each is compared with the dense run of its seed."""
    rows = []
    for name, report in reports.items():
        seed = name.rsplit("-seed", 1)[1]
        rows.append(row_of(name, report, reports.get(f"dense-seed{seed}")))
    return rows


def groups(rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Rows by configuration (the run name without its seed)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        out.setdefault(row["run"].rsplit("-seed", 1)[0], []).append(row)
    return out


def mean_spread(values: list[float], scale: float = 1.0, digits: int = 2) -> str:
    values = [v * scale for v in values if v is not None]
    if not values:
        return ""
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def markdown(result: dict[str, Any]) -> str:
    s = result["settings"]
    subset = f"{s['max_train_samples']} examples" if s["max_train_samples"] != "0" else "all"
    lines = [
        f"# Time to quality on SST-2 ({result['mode']})",
        "",
        f"{s['model']}, SST-2 train {subset}; {s['epochs']} epochs, batch {s['batch_size']}, "
        f"lr {s['lr']}, max length {s['max_seq_len']}; seeds {s['seeds']}. Pruned runs: "
        "`earlybert` removes 4 of 12 heads per layer and 40% of FFN neurons, `wide` 6 of 12 "
        "and 60%. Training seconds: wall-clock from the start of training (the search, for "
        "earlybird) to the budget's last step, hand-off included, the dev-loss evaluations "
        "left out; saving is against the dense run of the same seed. Mean ± standard "
        "deviation over seeds.",
        "",
        "| configuration | seeds | dev acc | Δ vs dense (points) | training s | saving vs dense "
        "| search ended | search s/step | slim s/step | MACs ratio |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for config, rows in groups(result["rows"]).items():
        lines.append(
            f"| {config} | {len(rows)} | {mean_spread([r['accuracy'] for r in rows], 100)} | "
            f"{mean_spread([r.get('accuracy_vs_dense') for r in rows], 100)} | "
            f"{mean_spread([r['training_seconds'] for r in rows], digits=1)} | "
            f"{mean_spread([r.get('saving_vs_dense') for r in rows], 100, 1)}% | "
            f"{', '.join(r['decided'] for r in rows)} | "
            f"{mean_spread([r['search_s_per_step'] for r in rows], digits=3)} | "
            f"{mean_spread([r['slim_s_per_step'] for r in rows], digits=3)} | "
            f"{rows[0]['macs_ratio']:.2f}x |"
        )
    lines += ["", f"![accuracy against wall-clock]({result['figure']})", ""]
    lines += machine_and_commands(result)
    return "\n".join(lines) + "\n"


def figure(result: dict[str, Any], path: Path) -> None:
    """Left: dev accuracy against training wall-clock, one point per run, mean per
    configuration. Right: dev loss against wall-clock for the first seed's runs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    for i, (config, rows) in enumerate(groups(result["rows"]).items()):
        color = f"C{i}"
        xs = [r["training_seconds"] for r in rows]
        ys = [100 * r["accuracy"] for r in rows]
        left.scatter(xs, ys, color=color, alpha=0.4, s=18)
        left.scatter([statistics.mean(xs)], [statistics.mean(ys)], color=color, s=70,
                     edgecolor="black", label=config)  # fmt: skip
        curve = rows[0]["curve"]
        if curve:
            right.plot([p["seconds"] for p in curve], [p["loss"] for p in curve], color=color,
                       marker=".", label=config)  # fmt: skip
    left.set(xlabel="training wall-clock (s)", ylabel="SST-2 dev accuracy (%)",
             title="accuracy against training time (dots: seeds, ringed: mean)")  # fmt: skip
    right.set(xlabel="training wall-clock (s)", ylabel="dev loss",
              title="dev loss during training (first seed)")  # fmt: skip
    left.legend(fontsize=8, loc="lower right")
    right.legend(fontsize=8)
    fig.suptitle(f"Time to quality, {Path(result['settings']['model']).name} on SST-2")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    args = parse_args()
    with smoke_inputs(args):
        if args.smoke:
            args.max_train_samples, args.epochs, args.batch_size = 128, "4", "16"
            args.lr, args.max_seq_len, args.eval_every = "5e-3", "16", "8"
            args.seeds = "0"
        load_before = os.getloadavg()[0]
        reports = run_all(args)
    result = {
        "mode": "smoke" if args.smoke else "full",
        "settings": {k: str(v) for k, v in vars(args).items()},
        "machine": compresskit.machine.machine_info(),
        "load_before": load_before,
        "figure": "time_to_quality.png",
        "rows": summarise(reports),
        "reports": reports,
    }
    figure(result, args.output / "time_to_quality.png")
    save_result(args.output, "time_to_quality", result, markdown(result))


if __name__ == "__main__":
    main()
