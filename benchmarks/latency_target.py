"""Compression to a latency target on ONNX Runtime, end to end: does the measured speed-up land
on the target, and what accuracy does each speed-up keep?

1. The teacher: dense MiniLM fine-tuned on the task's subset (`--task`, SST-2 by default;
   `--strategy none`), or `--teacher PATH`.
2. Speed: `compresskit prune --strategy magnitude --model TEACHER --target-speedup X
   --target-shape layers` for every target and deployment setting (fp32 and int8, batch 1
   and 32, seq 128, 2 threads), no training. Each run plans on the latency model (measured
   once per setting, kept in OUTPUT/cache) and times its result against the teacher in
   interleaved rounds. The table:
   predicted and measured speed-up, and the latency model's error on the whole model.
3. Accuracy (`--accuracy`): the same targets, fine-tuned on the subset, every layer's widths
   chosen (`--target-shape layers`) with and without distillation from the teacher, and
   ratio-shaped (`--target-shape ratios`, distilled): `uniform`, one ratio of heads and of
   FFN neurons removed in every layer, and `ratios`, what a target gives by default (one
   heads ratio per layer, FFN neurons ranked across layers: the scores decide how wide each
   layer's FFN stays).

Every run is one command, run one after another; a run whose report is saved is not run
again, so the benchmark continues where it stopped and merges what is there.
`--retime N` times every saved accuracy run's model against the teacher again until it has
N more measurements (for a run whose measurement met a busy machine).

    python benchmarks/latency_target.py                    # teacher + speed at every target
    python benchmarks/latency_target.py --accuracy --settings fp32-b1 --targets 2.0
    python benchmarks/latency_target.py --smoke            # tiny model and data (CI)

Writes latency_target.json, .md and .png to --output (bench-out/latency_target).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _prune_runs import run_prune, save_result, smoke_inputs, sst2_parser

import compresskit.machine

# name -> (extra prune flags, targets)
SETTINGS = {
    "fp32-b1": (["--batch", "1"], [1.5, 2.0, 2.5, 3.0]),
    "fp32-b32": (["--batch", "32"], [1.5, 2.0, 2.5, 3.0]),
    "int8-b1": (["--batch", "1", "--int8"], [3.0, 4.0, 5.0]),
    "int8-b32": (["--batch", "32", "--int8"], [3.0, 4.0, 5.0]),
}
# Accuracy runs: target widths distilled and not; at the same predicted latency, one ratio
# in every layer, and compresskit's default ratios (FFN ranked across layers).
VARIANTS = ("distilled", "plain", "uniform", "ratios")


def parse_args() -> argparse.Namespace:
    parser = sst2_parser(__doc__.splitlines()[0], "bench-out/latency_target")
    parser.add_argument("--teacher", type=Path, help="a fine-tuned classifier (default: train)")
    parser.add_argument("--task", default="sst2", help="the GLUE task of --data (sst2, cola, ...)")
    parser.add_argument("--settings", default=",".join(SETTINGS))
    parser.add_argument("--targets", help="comma-separated speed-ups (default: per setting)")
    parser.add_argument("--threads", default="2")
    parser.add_argument("--seq-len", default="128")
    parser.add_argument("--accuracy", action="store_true", help="also fine-tune to each target")
    parser.add_argument("--seeds", default="0")
    parser.add_argument(
        "--strategies", default="magnitude", help="comma-separated: the scores of accuracy runs"
    )
    parser.add_argument("--variants", default=",".join(VARIANTS), help="accuracy runs to do")
    parser.add_argument(
        "--speed-shapes", default="ratios,layers", help="target shapes of the speed runs"
    )
    parser.add_argument("--merge-only", action="store_true", help="only merge saved runs")
    parser.add_argument(
        "--retime",
        type=int,
        default=0,
        help="time each saved accuracy run's model against the teacher until it has N more "
        "measurements (a quiet machine's second opinion)",
    )
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    with smoke_inputs(args):
        if args.smoke:
            # a tiny model's fixed cost is most of it: one ratio gets it ~1.2x faster at most
            args.settings, args.targets, args.seq_len = "fp32-b1", "1.1", "16"
            args.max_train_samples, args.epochs = 0, "1"
        os.environ["COMPRESSKIT_CACHE"] = str(args.output / "cache")
        load_before = os.getloadavg()[0]
        teacher = args.teacher or train_teacher(args)
        runs = speed_runs(args, teacher)
        if args.accuracy:
            runs |= accuracy_runs(args, teacher)
        teacher_report = teacher / "report.json"
        result = {
            "benchmark": "latency_target",
            "teacher": str(teacher),
            "task": args.task,
            "teacher_accuracy": (
                primary_metric(json.loads(teacher_report.read_text()))
                if teacher_report.is_file()
                else None
            ),
            "threads": int(args.threads),
            "seq_len": int(args.seq_len),
            "machine": compresskit.machine.machine_info(),
            "load_before": load_before,
            "runs": runs,
        }
        figure(result, args.output / "latency_target.png")
        save_result(args.output, "latency_target", result, markdown(result))


def subset(args: argparse.Namespace) -> list[str]:
    return ["--max-train-samples", str(args.max_train_samples)] if args.max_train_samples else []


def fine_tuning(args: argparse.Namespace, seed: str) -> list[str]:
    return [
        *("--task", args.task, "--data", str(args.data), *subset(args)),
        *("--epochs", args.epochs, "--lr", args.lr, "--batch-size", "32"),
        *("--max-seq-len", "16" if args.smoke else "64"),
        *("--seed", seed, "--no-progress", "--overwrite"),
    ]


def once(
    args: argparse.Namespace, name: str, options: list[str] | Callable[[], list[str]]
) -> dict[str, Any] | None:
    """The saved report of run `name`, else run it with `options` (or what they are made by)
    unless --merge-only."""
    path = args.output / f"{name}.json"
    if path.is_file():
        return json.loads(path.read_text())
    if args.merge_only:
        return None
    load_before = os.getloadavg()[0]
    report = run_prune(name, options() if callable(options) else options, args.output)
    report["load_before"] = load_before
    path.write_text(json.dumps(report, indent=1) + "\n")
    return report


def train_teacher(args: argparse.Namespace) -> Path:
    options = ["--strategy", "none", "--model", str(args.model), *fine_tuning(args, "0")]
    once(args, "teacher", options)
    return args.output / "teacher"


def targets_of(args: argparse.Namespace, setting: str) -> list[float]:
    return [float(t) for t in args.targets.split(",")] if args.targets else SETTINGS[setting][1]


def deployment(args: argparse.Namespace, setting: str) -> list[str]:
    return [*SETTINGS[setting][0], "--threads", args.threads, "--seq-len", args.seq_len]


def speed_runs(args: argparse.Namespace, teacher: Path) -> dict[str, dict[str, Any]]:
    """One-shot prunes of the teacher to every target in every shape, each timed against the
    teacher (`layers` runs keep the names they had when it was the only shape)."""
    runs = {}
    targets = [(s, t) for s in args.settings.split(",") for t in targets_of(args, s)]
    for shape, (setting, target) in itertools.product(args.speed_shapes.split(","), targets):
        name = f"speed-{setting}-{target:g}x" + ("" if shape == "layers" else f"-{shape}")
        options = [
            *("--strategy", "magnitude", "--model", str(teacher)),
            *("--target-speedup", f"{target:g}", *deployment(args, setting)),
            *("--target-shape", shape, "--overwrite"),
        ]
        try:
            report = once(args, name, options)
        except SystemExit as refused:  # a target the model cannot meet: a result too
            # "run NAME failed (1): Error: WHY — see LOG"
            why = str(refused).split(" failed (", 1)[-1].split("): ", 1)[-1]
            report = {"refused": why.split(" — see")[0]}
            (args.output / f"{name}.json").write_text(json.dumps(report) + "\n")
        if report is not None and "refused" in report:
            # (runs saved before the log's last line was quoted as a list)
            why = report["refused"].strip("[]'").removeprefix("Error: ")
            runs[name] = {
                "kind": "refused",
                "setting": setting,
                "target": target,
                "shape": shape,
                "refused": why,
            }
        elif report is not None:
            where = {"setting": setting, "target": target, "shape": shape}
            runs[name] = {"kind": "speed"} | where | row(report)
    return runs


def accuracy_runs(args: argparse.Namespace, teacher: Path) -> dict[str, dict[str, Any]]:
    """Fine-tuning to each target, distilled and not, and ratios at the same predicted
    latency, with each strategy's scores."""
    runs = {}
    for seed, strategy in itertools.product(args.seeds.split(","), args.strategies.split(",")):
        for setting in args.settings.split(","):
            for target in targets_of(args, setting):
                base = [
                    *("--strategy", strategy, "--model", str(teacher)),
                    *fine_tuning(args, seed),
                ]
                for variant in args.variants.split(","):
                    # magnitude's runs keep the names they had before --strategies existed
                    scored = "" if strategy == "magnitude" else f"-{strategy}"
                    name = f"accuracy-{setting}-{target:g}x-{variant}{scored}-seed{seed}"
                    options = variant_options(args, base, variant, setting, target)
                    report = once(args, name, options)
                    if report is not None and report.get("target") is None:
                        report["target"] = timed_against(args, setting, teacher, name)
                        (args.output / f"{name}.json").write_text(json.dumps(report, indent=1))
                    if report is not None and len(report.get("retimed", [])) < args.retime:
                        retime(args, setting, teacher, name, report)
                    if report is not None:
                        runs[name] = {
                            "kind": variant,
                            "strategy": strategy,
                            "setting": setting,
                            "target": target,
                            "seed": int(seed),
                        } | row(report)
    return runs


def variant_options(
    args: argparse.Namespace,
    base: list[str],
    variant: str,
    setting: str,
    target: float,
) -> list[str]:
    """`base` and the flags of one accuracy variant: the target with every layer's widths
    chosen (`--target-shape layers`), distilled or not, or the target with one ratio
    (`--target-shape ratios`), the same in every layer (`uniform`) or with FFN neurons ranked
    across layers (`ratios`: the CLI's default shape and scopes). Session 11's saved runs
    bisected that ratio here instead, predicting its FFN widths as uniform; runs saved before
    session 12 ran `layers` without the flag (then the default)."""
    aimed = ["--target-speedup", f"{target:g}", *deployment(args, setting)]
    if variant in ("uniform", "ratios"):
        ffn_scope = "layer" if variant == "uniform" else "global"
        shape = ["--target-shape", "ratios", "--heads-scope", "layer", "--ffn-scope", ffn_scope]
        return [*base, *aimed, *shape, "--distill"]
    layers = ["--target-shape", "layers"]
    return [*base, *aimed, *layers, "--distill" if variant == "distilled" else "--no-distill"]


def latency_setting(args: argparse.Namespace, setting: str) -> Any:
    from compresskit.latency import LatencySetting

    flags = SETTINGS[setting][0]
    return LatencySetting(
        threads=int(args.threads),
        batch_size=int(flags[flags.index("--batch") + 1]),
        seq_len=int(args.seq_len),
        int8="--int8" in flags,
    )


def timed_against(args: argparse.Namespace, setting: str, teacher: Path, name: str) -> dict:
    """A run without a target (ratios) timed against the teacher as --verify times
    a target's result, in this process."""
    from compresskit.exporters.latency import measure_speedup
    from compresskit.loading import load_model

    deployed = latency_setting(args, setting)
    measured = measure_speedup(
        load_model(teacher),
        load_model(args.output / name),
        deployed,
        before_setting=deployed.in_float32(),  # as --verify measures an int8 result
    )
    return {"predicted_ratio": None, "predicted": None, "measured": measured}


def retime(
    args: argparse.Namespace, setting: str, teacher: Path, name: str, report: dict[str, Any]
) -> None:
    """Time run `name`'s model against the teacher again (as --verify does) until its report
    holds args.retime such measurements under `retimed`; saved after each."""
    retimed = report.setdefault("retimed", [])
    while len(retimed) < args.retime:
        measured = timed_against(args, setting, teacher, name)["measured"]
        retimed.append(measured | {"load_before": os.getloadavg()[0]})
        (args.output / f"{name}.json").write_text(json.dumps(report, indent=1))


def row(report: dict[str, Any]) -> dict[str, Any]:
    target = report.get("target") or {}
    measured = target.get("measured") or {}
    return {
        "command": report["command"],
        "predicted_speedup": target.get("predicted_ratio"),
        "predicted_ms": target.get("predicted"),
        "measured_speedup": measured.get("speedup"),
        "measured_ms": measured.get("after_ms"),
        "teacher_ms": measured.get("before_ms"),
        "accuracy": primary_metric(report),
        "metric": report.get("primary_metric", "accuracy"),
        "params": report["after"]["params"],
        "macs_ratio": report["macs_ratio"],
        "heads_per_layer": [layer["heads"] for layer in report["after"]["layers"]],
        "ffn_per_layer": [layer["ffn_width"] for layer in report["after"]["layers"]],
        "distillation": report.get("distillation"),
        "interactions": target.get("interactions"),
        "retimed_speedups": [m["speedup"] for m in report.get("retimed", [])],
        "load_before": report.get("load_before"),
    }


def primary_metric(report: dict[str, Any]) -> float | None:
    """The task's metric in a run's report (accuracy for SST-2, Matthews' for CoLA)."""
    return (report.get("metrics") or {}).get(report.get("primary_metric", "accuracy"))


def metric_name(result: dict[str, Any]) -> str:
    task = {"sst2": "SST-2", "cola": "CoLA"}.get(result.get("task", "sst2"), result.get("task"))
    metric = next((r.get("metric") for r in result["runs"].values() if r.get("metric")), None)
    return f"{task} dev {metric or 'accuracy'}"


def markdown(result: dict[str, Any]) -> str:
    runs = result["runs"]
    lines = [
        "# Compression to a latency target on ONNX Runtime",
        "",
        f"Teacher: {result['teacher']}; {result['threads']} threads, sequence length "
        f"{result['seq_len']}. Speed runs: magnitude scores, on the setting's latency model, "
        "in each target shape (ratios, the default; layers, the knapsack over layers). "
        "*Measured*: the pruned graph against the teacher's, the graphs `compresskit export "
        "onnx` deploys, interleaved medians of at least 30 rounds and 3 s in one process "
        "(compresskit's --verify; runs saved before that took 30 rounds); *re-timed*: the "
        "same again on a quiet machine (`--retime`), "
        "each run's median.",
        "",
        "## Speed",
        "",
        "| setting | target | shape | predicted | measured | off target | predicted ms "
        "| measured ms | model error | MACs ratio | heads per layer | FFN per layer |",
        "|---|--:|---|--:|--:|--:|--:|--:|--:|--:|---|---|",
    ]
    for r in runs.values():
        if r["kind"] != "speed" or r["measured_speedup"] is None:
            continue
        off = r["measured_speedup"] / r["target"] - 1
        error = r["predicted_ms"] / r["measured_ms"] - 1
        lines.append(
            f"| {r['setting']} | {r['target']:g}x | {r.get('shape', 'layers')} | "
            f"{r['predicted_speedup']:.2f}x | "
            f"{r['measured_speedup']:.2f}x | {off:+.1%} | {r['predicted_ms']:.2f} | "
            f"{r['measured_ms']:.2f} | {error:+.1%} | {r['macs_ratio']:.2f}x | "
            f"{r['heads_per_layer']} | {r['ffn_per_layer']} |"
        )
    lines += [
        f"| {r['setting']} | {r['target']:g}x | {r.get('shape', 'layers')} | "
        f"refused: {r['refused']} |"
        for r in runs.values()
        if r["kind"] == "refused"
    ]
    accuracy = [r for r in runs.values() if r["kind"] not in ("speed", "refused")]
    if accuracy:
        teacher = result.get("teacher_accuracy")
        lines += [
            "",
            "## Accuracy",
            "",
            f"Metric: {metric_name(result)} (× 100). Teacher: "
            + (f"{100 * teacher:.2f}." if teacher is not None else "not known (given)."),
            "",
            "| setting | target | scores | variant | seeds | dev metric | measured speed-up "
            "| re-timed | MACs ratio | heads per layer (first seed) | FFN per layer (first seed) |",
            "|---|--:|---|---|--:|--:|--:|--:|--:|---|---|",
        ]
        groups: dict[tuple[str, float, str, str], list[dict[str, Any]]] = {}
        for r in accuracy:
            key = (r["setting"], r["target"], r.get("strategy", "magnitude"), r["kind"])
            groups.setdefault(key, []).append(r)
        for (setting, target, strategy, kind), group in sorted(groups.items()):
            acc = [100 * g["accuracy"] for g in group]
            spread = f" ± {statistics.stdev(acc):.2f}" if len(acc) > 1 else ""
            speed = [g["measured_speedup"] for g in group if g["measured_speedup"]]
            # per run, the median of its re-timings; then those runs' values, listed
            again = [
                statistics.median(g["retimed_speedups"]) for g in group if g.get("retimed_speedups")
            ]
            lines.append(
                f"| {setting} | {target:g}x | {strategy} | {kind} | {len(group)} | "
                f"{statistics.mean(acc):.2f}{spread} | "
                f"{' / '.join(f'{x:.2f}' for x in speed)} | "
                f"{' / '.join(f'{x:.2f}' for x in again)} | "
                f"{group[0]['macs_ratio']:.2f}x | "
                f"{' '.join(map(str, group[0]['heads_per_layer']))} | "
                f"{' '.join(map(str, group[0]['ffn_per_layer']))} |"
            )
    m = result["machine"]
    lines += [
        "",
        f"Machine: {m['cpu']}, {m['logical_cores']} logical cores; torch {m['torch']}, "
        f"transformers {m['transformers']}, Python {m['python']}. Runs were sequential; "
        f"1-min load average {result['load_before']:.2f} before.",
        "",
        "Commands:",
        "",
        "```",
        *[r["command"] for r in runs.values() if "command" in r],
        "```",
        "",
    ]
    return "\n".join(lines)


def figure(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    speed = [r for r in result["runs"].values() if r["kind"] == "speed" and r["measured_speedup"]]
    accuracy = [
        r
        for r in result["runs"].values()
        if r["kind"] not in ("speed", "refused") and r["accuracy"]
    ]
    panels = bool(speed) + bool(accuracy) or 1
    fig, axes = plt.subplots(1, panels, figsize=(6 * panels, 4.5), squeeze=False)
    if speed or not accuracy:
        plot_speed(axes[0][0], speed)
    if accuracy:
        plot_accuracy(axes[0][-1], accuracy, metric_name(result))
    fig.suptitle(f"Latency targets: {Path(result['teacher']).name}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_speed(ax: Any, speed: list[dict[str, Any]]) -> None:
    for setting, shape in sorted({(r["setting"], r.get("shape", "layers")) for r in speed}):
        rows = [r for r in speed if (r["setting"], r.get("shape", "layers")) == (setting, shape)]
        ax.plot(
            [r["target"] for r in rows],
            [r["measured_speedup"] for r in rows],
            "o-" if shape == "ratios" else "s--",
            label=f"{setting}, {shape}",
        )
    if speed:
        top = max(max(r["target"] for r in speed), max(r["measured_speedup"] for r in speed))
        ax.plot([1, top], [1, top], "k:", label="on target")
        ax.fill_between([1, top], [0.93, 0.93 * top], [1.07, 1.07 * top], color="0.9", label="±7%")
    ax.set_xlabel("target speed-up")
    ax.set_ylabel("measured speed-up (ONNX Runtime)")
    ax.set_title("Measured against target")
    ax.legend(fontsize=8)


def plot_accuracy(ax: Any, accuracy: list[dict[str, Any]], metric: str) -> None:
    markers = {"distilled": "o", "plain": "s", "uniform": "^", "ratios": "v"}
    for strategy, kind in sorted({(r.get("strategy", "magnitude"), r["kind"]) for r in accuracy}):
        rows = [
            r for r in accuracy if r["kind"] == kind and r.get("strategy", "magnitude") == strategy
        ]
        ax.plot(
            [best_speedup(r) for r in rows],
            [100 * r["accuracy"] for r in rows],
            markers.get(kind, "x"),
            label=f"{kind}, {strategy}",
        )
    ax.set_xlabel("measured speed-up (re-timed where it was)")
    ax.set_ylabel(f"{metric} (× 100)")
    ax.set_title("Accuracy against speed")
    ax.legend(fontsize=8)


def best_speedup(run: dict[str, Any]) -> float | None:
    """A run's re-timed median where it was re-timed, else its own measurement."""
    again = run.get("retimed_speedups")
    return statistics.median(again) if again else run["measured_speedup"]


if __name__ == "__main__":
    main()
