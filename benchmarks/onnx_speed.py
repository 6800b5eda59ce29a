"""Inference speed of a pruned MiniLM in ONNX Runtime against the dense model in PyTorch.

Prunes the real MiniLM 4/12 heads per layer + 40% of the FFN neurons (magnitude), or takes
a model the earlybird pipeline fine-tuned on SST-2 (`--finetuned`), exports the dense and the
pruned model to ONNX (plain, optimised, and optimised + int8 for the pruned one) and times six
targets with `compresskit.bench.run_bench`, interleaved, on 2 threads at batch 32 × seq 128
and batch 1 × seq 128; the baseline is the dense model in PyTorch. The report checks the
targets and prints the measured number beside each:

- pruned ORT vs dense ORT at the same optimisation level: speedup >= 0.95 × MACs ratio;
- optimised pruned ORT vs dense PyTorch: >= 2×;
- optimised int8 pruned ORT vs dense PyTorch: >= 3×;
- with `--finetuned`: SST-2 dev accuracy of the int8 graph at most 1 point below the fp32
  graph's (measured by the exporter's `eval_data`).

    python benchmarks/onnx_speed.py                   # MiniLM, a few minutes on 2 cores
    python benchmarks/onnx_speed.py --finetuned out/sst2-earlybird   # + int8 accuracy
    python benchmarks/onnx_speed.py --smoke           # tiny random model, seconds (CI)

Writes onnx_speed.json and onnx_speed.md to --output (bench-out/).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import asdict, dataclass, is_dataclass
from pathlib import Path
from typing import Any

import transformers

import compresskit
from compresskit.bench import BenchResult, run_bench
from compresskit.exporters.onnx import export_onnx
from compresskit.loading import load_model_and_tokenizer
from compresskit.testing import write_tiny_checkpoint, write_tiny_sentiment

SHARED = Path(__file__).resolve().parents[2] / "shared"
MINILM = SHARED / "models" / "minilm-l6-h384-uncased"
SST2 = SHARED / "data" / "glue" / "SST-2"
HEADS_RATIO, FFN_RATIO = 1 / 3, 0.4
INT8_TARGET = "pruned ORT int8"
MAX_ACCURACY_DROP = 1.0  # points of SST-2 dev accuracy, int8 graph vs fp32 graph

BASELINE = "dense PyTorch"
# label -> (model, export options or None for PyTorch)
TARGETS: dict[str, tuple[str, dict[str, Any] | None]] = {
    "dense PyTorch": ("dense", None),
    "dense ORT": ("dense", {}),
    "dense ORT opt": ("dense", {"optimize": True}),
    "pruned ORT": ("pruned", {}),
    "pruned ORT opt": ("pruned", {"optimize": True}),
    "pruned ORT int8": ("pruned", {"optimize": True, "quantize": "int8"}),
}


@dataclass(frozen=True)
class Target:
    """A goal: `numerator`'s speedup over `denominator` at least `required`."""

    name: str
    numerator: str
    denominator: str
    required: float
    batch_size: int
    seq_len: int
    measured: float
    unit: str = "×"

    @property
    def met(self) -> bool:
        return self.measured >= self.required


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=Path("bench-out"))
    parser.add_argument("--smoke", action="store_true", help="tiny random model, 1 shape")
    parser.add_argument("--model", type=Path, default=MINILM)
    parser.add_argument(
        "--finetuned",
        type=Path,
        help="a pruned model fine-tuned on SST-2 by `compresskit prune --task sst2` (used as "
        "the pruned model; its int8 accuracy is measured on --eval-data)",
    )
    parser.add_argument("--eval-data", type=Path, default=SST2, help="SST-2 folder (dev.tsv)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=30, help="timed runs per target and shape")
    parser.add_argument("--warmup", type=int, default=3, help="untimed runs per target")
    parser.add_argument(
        "--work", type=Path, default=None, help="keep the models here (default: a temp folder)"
    )
    return parser.parse_args()


@dataclass(frozen=True)
class Models:
    """The dense and the pruned model as compresskit folders, and the SST-2-format data to
    score the pruned one's graphs on (None: accuracy is not measured)."""

    dense: Path
    pruned: Path
    pruned_by: str
    eval_data: Path | None


def prepare_models(args: argparse.Namespace, work: Path) -> Models:
    if args.smoke:  # a tiny random classifier, so that the accuracy path runs too
        tiny = write_tiny_checkpoint(work / "tiny")
        return _magnitude_pruned(tiny, work, write_tiny_sentiment(work / "sst2"), classifier=True)
    if not (args.model / "config.json").is_file():
        raise SystemExit(f"no model at {args.model}: pass --model or use --smoke")
    if args.finetuned is None:
        return _magnitude_pruned(args.model, work, None, classifier=False)
    return _finetuned(args, work)


def _magnitude_pruned(source: Path, work: Path, eval_data: Path | None, classifier: bool) -> Models:
    model, tokenizer = load_model_and_tokenizer(str(source))
    if classifier:
        model = transformers.AutoModelForSequenceClassification.from_pretrained(source)
    dense = compresskit.save(model, work / "dense", tokenizer=tokenizer, overwrite=True)
    strategy = compresskit.get_strategy("magnitude", heads_ratio=HEADS_RATIO, ffn_ratio=FFN_RATIO)
    slim = compresskit.prune(model, strategy.plan(model))
    pruned = compresskit.save(
        slim,
        work / "pruned",
        tokenizer=tokenizer,
        overwrite=True,
        extra={"strategy": strategy.to_dict()},
    )
    return Models(dense, pruned, "magnitude", eval_data)


def _finetuned(args: argparse.Namespace, work: Path) -> Models:
    """The fine-tuned pruned model against the dense model with the same classifier class
    (its untrained head costs the same time as a trained one)."""
    pruned = compresskit.load(args.finetuned)
    _, tokenizer = load_model_and_tokenizer(str(args.model))
    dense = transformers.AutoModelForSequenceClassification.from_pretrained(
        args.model, num_labels=pruned.config.num_labels
    )
    dense_dir = compresskit.save(dense, work / "dense", tokenizer=tokenizer, overwrite=True)
    strategy = compresskit.io.read_manifest(args.finetuned).get("strategy", {})
    return Models(dense_dir, args.finetuned, str(strategy.get("strategy")), args.eval_data)


def export_targets(models: Models, work: Path) -> tuple[dict[str, Path], dict[str, Any]]:
    """(label -> folder to time, label -> export report) for every target."""
    folders, reports = {}, {}
    for label, (which, options) in TARGETS.items():
        source = models.dense if which == "dense" else models.pruned
        if options is None:
            folders[label] = source
            continue
        if label == INT8_TARGET and models.eval_data is not None:
            options = {**options, "eval_data": models.eval_data, "eval_task": "sst2"}
        out = work / label.replace(" ", "-")
        print(f"exporting {label} ...", file=sys.stderr, flush=True)
        reports[label] = plain(export_onnx(source, out, overwrite=True, **options))
        folders[label] = out
    return folders, reports


def plain(report: Any) -> Any:
    """An export report as JSON-ready data, whatever its class offers."""
    if hasattr(report, "to_dict"):
        return report.to_dict()
    if is_dataclass(report) and not isinstance(report, type):
        return json.loads(json.dumps(asdict(report), default=str))
    return str(report)


def accuracy_goal(exports: dict[str, Any]) -> list[Target]:
    """The int8 graph's SST-2 dev accuracy against the fp32 graph's, in points."""
    evaluation = exports[INT8_TARGET].get("evaluation")
    if evaluation is None:
        return []
    change = 100 * evaluation["int8_change"]
    fp32 = 100 * evaluation["scores"]["fp32"]["accuracy"]
    name = f"int8 accuracy change on SST-2 dev (fp32 {fp32:.2f}, {evaluation['examples']} examples)"
    return [Target(name, INT8_TARGET, INT8_TARGET, -MAX_ACCURACY_DROP, 0, 0, change, " pt")]


def goals(result: BenchResult) -> list[Target]:
    """The speed targets of the issue, at every measured shape."""
    out = []
    for b in result.batch_sizes:
        for s in result.seq_lens:
            macs = result.measurement("pruned ORT", b, s).macs_ratio
            out += [
                goal(
                    result,
                    "pruned vs dense ORT, plain",
                    "pruned ORT",
                    "dense ORT",
                    0.95 * macs,
                    b,
                    s,
                ),
                goal(
                    result,
                    "pruned vs dense ORT, optimised",
                    "pruned ORT opt",
                    "dense ORT opt",
                    0.95 * macs,
                    b,
                    s,
                ),
                goal(
                    result,
                    "optimised pruned ORT vs dense PyTorch",
                    "pruned ORT opt",
                    BASELINE,
                    2.0,
                    b,
                    s,
                ),
                goal(
                    result,
                    "int8 pruned ORT vs dense PyTorch",
                    "pruned ORT int8",
                    BASELINE,
                    3.0,
                    b,
                    s,
                ),
            ]
    return out


def goal(
    result: BenchResult, name: str, num: str, den: str, required: float, b: int, s: int
) -> Target:
    """`num`'s speedup over `den`: the ratio of their medians in the same interleaved run."""
    measured = result.measurement(den, b, s).median_ms / result.measurement(num, b, s).median_ms
    return Target(name, num, den, required, b, s, measured)


def amount(value: float, unit: str) -> str:
    return f"{value:.2f}×" if unit == "×" else f"{value:+.2f}{unit}"


def markdown(report: dict[str, Any], result: BenchResult) -> str:
    lines = [
        f"# Pruned {report['model']} in ONNX Runtime ({report['mode']})",
        "",
        f"{report['model']} pruned with {report['strategy']['name']}: {HEADS_RATIO:.3g} of the "
        f"heads and {FFN_RATIO:.0%} of the FFN neurons.",
        "",
        "## Targets",
        "",
        *(
            [
                "Smoke mode (a tiny model, a few runs): these numbers show that the benchmark "
                "runs, not whether the targets are met.",
                "",
            ]
            if report["mode"] == "smoke"
            else []
        ),
        "| target | batch × seq | measured | required | |",
        "|---|---|--:|--:|---|",
    ]
    for t in report["targets"]:
        shape = f"{t['batch_size']} × {t['seq_len']}" if t["batch_size"] else "–"
        lines.append(
            f"| {t['name']} | {shape} | {amount(t['measured'], t['unit'])} | "
            f"≥ {amount(t['required'], t['unit'])} | {'met' if t['met'] else '**not met**'} |"
        )
    lines += ["", result.markdown("Latency", level=2)]
    return "\n".join(lines)


def main() -> None:
    args = parse_args()
    if args.smoke:
        args.runs, args.warmup = min(args.runs, 3), min(args.warmup, 1)
    shapes = ([2], [16]) if args.smoke else ([32, 1], [128])
    with tempfile.TemporaryDirectory(prefix="onnx_speed.") as tmp:
        work = args.work or Path(tmp)
        models = prepare_models(args, work)
        folders, exports = export_targets(models, work)
        print("timing ...", file=sys.stderr, flush=True)
        result = run_bench(
            [str(p) for p in folders.values()],
            baseline=str(folders[BASELINE]),
            labels=list(folders),
            batch_sizes=shapes[0],
            seq_lens=shapes[1],
            threads=args.threads,
            runs=args.runs,
            warmup=args.warmup,
        )
    report = {
        "benchmark": "onnx_speed",
        "mode": "smoke" if args.smoke else "full",
        "model": "tiny random BERT" if args.smoke else args.model.name,
        "pruned_model": str(models.pruned) if args.finetuned else "pruned here",
        "strategy": {"name": models.pruned_by, "heads_ratio": HEADS_RATIO, "ffn_ratio": FFN_RATIO},
        "targets": [asdict(t) | {"met": t.met} for t in goals(result) + accuracy_goal(exports)],
        "exports": exports,
        "bench": result.to_dict(),
    }
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "onnx_speed.json").write_text(json.dumps(report, indent=1) + "\n")
    text = markdown(report, result)
    (args.output / "onnx_speed.md").write_text(text)
    print(text, end="")


if __name__ == "__main__":
    main()
