"""Do FFN widths that are multiples of 8, 16 or 32 run faster on ONNX Runtime CPU?

One encoder layer of MiniLM (12 heads) at every FFN width in a window (896..960 by default),
timed with compresskit's latency-model measurement (the graphs `compresskit export onnx`
deploys, every width in the same interleaved rounds), at batch 1 and 32, sequence length 128,
2 threads, fp32 and int8. A straight line through latency against width is the cost of the
width itself; what a multiple of k gains is its residual against that line, compared with the
other widths' (negative: faster than its width predicts).

    python benchmarks/width_multiples.py
    python benchmarks/width_multiples.py --smoke      # tiny model, seconds (CI)

Writes width_multiples.json, .md and .png to --output (bench-out/width_multiples).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
from pathlib import Path
from typing import Any

import numpy as np
from _prune_runs import MINILM

import compresskit.machine

MULTIPLES = (8, 16, 32)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=Path("bench-out/width_multiples"))
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--model", type=Path, default=MINILM)
    parser.add_argument("--widths", default="896:961", help="start:stop of the FFN widths")
    parser.add_argument("--batches", default="1,32")
    parser.add_argument("--precisions", default="fp32,int8")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--runs", type=int, default=30)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    args.output.mkdir(parents=True, exist_ok=True)
    import transformers

    from compresskit.exporters.latency import measure_latency_model
    from compresskit.latency import LatencySetting

    if args.smoke:
        from compresskit.arch import adapter_class

        tiny = adapter_class("bert").tiny_config(vocab=64, layers=1, heads=4, head_dim=8, ffn=48)
        model = transformers.BertForSequenceClassification(tiny)
        args.widths, args.batches, args.precisions = "16:25", "1", "fp32"
        args.seq_len, args.runs = 16, 3
    else:
        model = transformers.AutoModelForSequenceClassification.from_pretrained(args.model)
    start, stop = (int(x) for x in args.widths.split(":"))
    heads = int(model.config.num_attention_heads)
    dense = int(model.config.intermediate_size)
    load_before = os.getloadavg()[0]
    series = []
    for precision in args.precisions.split(","):
        for batch in (int(b) for b in args.batches.split(",")):
            setting = LatencySetting(
                threads=args.threads,
                batch_size=batch,
                seq_len=args.seq_len,
                int8=precision == "int8",
            )
            grid = sorted({0, *range(start, stop), dense})
            lm = measure_latency_model(
                model, setting, heads_grid=[0, heads], ffn_grid=grid, runs=args.runs
            )
            widths = list(range(start, stop))
            ms = [lm.layer(heads, w) for w in widths]
            series.append({"precision": precision, "batch": batch, "widths": widths, "ms": ms}
                          | {"gain": gains(widths, ms)})  # fmt: skip
            print(precision, batch, series[-1]["gain"], flush=True)
    result = {
        "benchmark": "width_multiples",
        "model": str(args.model) if not args.smoke else "tiny",
        "heads": heads,
        "threads": args.threads,
        "seq_len": args.seq_len,
        "runs": args.runs,
        "series": series,
        "machine": compresskit.machine.machine_info(),
        "load_before": load_before,
    }
    (args.output / "width_multiples.json").write_text(json.dumps(result, indent=1) + "\n")
    (args.output / "width_multiples.md").write_text(markdown(result))
    figure(result, args.output / "width_multiples.png")
    print(markdown(result), end="")


def gains(widths: list[int], ms: list[float]) -> dict[str, float]:
    """Per k: the median residual (against the least-squares line of ms on width) of widths
    that are multiples of k, minus that of the others, as a fraction of the mean latency."""
    x, y = np.array(widths, float), np.array(ms, float)
    slope, intercept = np.polyfit(x, y, 1)
    residual = y - (slope * x + intercept)
    out = {}
    for k in MULTIPLES:
        on = [r for w, r in zip(widths, residual, strict=True) if w % k == 0]
        off = [r for w, r in zip(widths, residual, strict=True) if w % k]
        if on and off:
            out[str(k)] = float((statistics.median(on) - statistics.median(off)) / y.mean())
    return out


def markdown(result: dict[str, Any]) -> str:
    m = result["machine"]
    lines = [
        "# FFN widths that are multiples of 8, 16 and 32 on ONNX Runtime CPU",
        "",
        f"One layer of {result['model']} ({result['heads']} heads), every width in the window, "
        f"{result['threads']} threads, sequence length {result['seq_len']}, medians of "
        f"{result['runs']} interleaved rounds. *Gain*: median residual (against the straight "
        "line through latency and width) of the multiples minus that of the other widths, as "
        "a share of the layer's latency; negative means faster than the width predicts.",
        "",
        "| precision | batch | layer ms (first width) | gain, multiples of 8 | of 16 | of 32 |",
        "|---|--:|--:|--:|--:|--:|",
    ]
    for s in result["series"]:
        g = s["gain"]
        cells = " | ".join(f"{100 * g[str(k)]:+.1f}%" if str(k) in g else "" for k in MULTIPLES)
        lines.append(f"| {s['precision']} | {s['batch']} | {s['ms'][0]:.3f} | {cells} |")
    lines += [
        "",
        f"Machine: {m['cpu']}, {m['logical_cores']} logical cores; onnxruntime via compresskit "
        f"{m['compresskit']}, Python {m['python']}. 1-min load average "
        f"{result['load_before']:.2f} before.",
        "",
        "Command: `python benchmarks/width_multiples.py`",
        "",
    ]
    return "\n".join(lines)


def figure(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = result["series"]
    fig, axes = plt.subplots(1, len(series), figsize=(4.5 * len(series), 3.8), squeeze=False)
    for ax, s in zip(axes[0], series, strict=True):
        ax.plot(s["widths"], s["ms"], ".-", color="0.5", label="every width")
        for k, color in zip(MULTIPLES, ("C0", "C1", "C3"), strict=True):
            pts = [(w, v) for w, v in zip(s["widths"], s["ms"], strict=True) if w % k == 0]
            ax.plot(*zip(*pts, strict=True), "o", color=color, label=f"multiple of {k}")
        ax.set_title(f"{s['precision']}, batch {s['batch']}")
        ax.set_xlabel("FFN width")
        ax.set_ylabel("one layer, ms")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
