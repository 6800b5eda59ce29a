"""Which of ONNX Runtime's fusions pay on CPU, for dense and pruned MiniLM?

Four graphs per model, the unfused export (as ORT's session optimises it on load), the fused
graph `compresskit export onnx --optimize` builds (Attention, SkipLayerNormalization, BiasGelu,
EmbedLayerNormalization), the same without the attention and skip-LayerNorm fusions, and the
same without the skip-LayerNorm fusion only, timed in interleaved rounds in one process (every
session's threads stop spinning between runs), then each profiled by ORT's profiler for the
milliseconds per operator type. Dense MiniLM and MiniLM pruned to 4 of 12 heads per layer and
40% of the FFN neurons (magnitude), 2 threads, sequence length 128, batch 1 and 32.

    python benchmarks/fusion_profile.py
    python benchmarks/fusion_profile.py --smoke        # tiny model, seconds (CI)

Writes fusion_profile.json and .md to --output (bench-out/fusion_profile).
"""

from __future__ import annotations

import argparse
import collections
import copy
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from _prune_runs import MINILM

import compresskit.machine

VARIANTS = {  # name -> (attention fusion, skip-LayerNorm fusion); None: the unfused export
    "unfused": None,
    "fused": (True, True),
    "fused-no-skip": (True, False),
    "fused-no-attention-no-skip": (False, False),
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=Path("bench-out/fusion_profile"))
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--model", type=Path, default=MINILM)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--batches", default="1,32")
    return parser.parse_args()


def models(args: argparse.Namespace) -> dict[str, Any]:
    import transformers

    from compresskit.pruner import prune
    from compresskit.registry import get_strategy

    if args.smoke:
        from compresskit.arch import adapter_class

        tiny = adapter_class("bert").tiny_config(vocab=64, layers=2, heads=4, head_dim=8, ffn=48)
        dense = transformers.BertForSequenceClassification(tiny)
        args.seq_len, args.batches = 16, "1"
    else:
        dense = transformers.AutoModelForSequenceClassification.from_pretrained(args.model)
    dense = dense.eval()
    dense.set_attn_implementation("eager")
    strategy = get_strategy("magnitude", heads_ratio=1 / 3, ffn_ratio=0.4)
    return {"dense": dense, "pruned": prune(copy.deepcopy(dense), strategy.plan(dense))}


def graphs(model: Any, folder: Path) -> dict[str, Path]:
    """The four graphs of `model` (VARIANTS) in `folder`."""
    import onnx
    from onnxruntime.transformers.optimizer import FusionOptions, optimize_model

    from compresskit.exporters import ort
    from compresskit.exporters.onnx import timing_graph
    from compresskit.plan import PruningPlan
    from compresskit.target import model_shape

    head_dim = model_shape(model).head_dim
    folder.mkdir(parents=True, exist_ok=True)
    exported = timing_graph(model, folder, head_dim=head_dim)
    pinned = onnx.load(str(exported))
    layout = ort.GraphLayout(tuple(PruningPlan.of_model(model).heads_per_layer), head_dim)
    ort.pin_head_counts(pinned, layout)
    onnx.save(pinned, str(folder / "pinned.onnx"))
    out = {}
    for name, fusions in VARIANTS.items():
        if fusions is None:
            out[name] = exported
            continue
        options = FusionOptions("bert")
        options.enable_attention, options.enable_skip_layer_norm = fusions
        options.use_raw_attention_mask(True)
        fused = optimize_model(
            str(folder / "pinned.onnx"),
            model_type="bert",
            num_heads=0,
            hidden_size=0,
            optimization_options=options,
        )
        out[name] = folder / f"{name}.onnx"
        onnx.save(fused.model, str(out[name]))
    return out


def per_operator_ms(graph: Path, feeds: dict[str, Any], threads: int, runs: int) -> dict:
    """Milliseconds per operator type and run, from ORT's profiler (after 3 warm-up runs)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.add_session_config_entry("session.force_spinning_stop", "1")
    options.enable_profiling = True
    options.profile_file_prefix = str(graph.with_suffix(""))
    sess = onnxruntime.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])
    mine = {i.name: feeds[i.name] for i in sess.get_inputs()}
    for _ in range(3 + runs):
        sess.run(None, mine)
    events = json.loads(Path(sess.end_profiling()).read_text())
    total: collections.Counter[str] = collections.Counter()
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            total[e["args"]["op_name"]] += e["dur"]
    return {op: round(us / (3 + runs) / 1e3, 3) for op, us in total.most_common(8)}


def main() -> None:
    import tempfile

    from compresskit.bench import synthetic_ids
    from compresskit.exporters.onnx import median_ms

    args = parse_args()
    args.output.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()[0]
    built = models(args)
    result: dict[str, Any] = {"medians_ms": {}, "per_operator_ms": {}}
    with tempfile.TemporaryDirectory() as work:
        paths = {
            f"{m}/{v}": path
            for m, model in built.items()
            for v, path in graphs(model, Path(work) / m).items()
        }
        vocab = int(built["dense"].config.vocab_size)
        for batch in (int(b) for b in args.batches.split(",")):
            runs = 40 if batch == 1 else 12
            medians = median_ms(
                list(paths.values()),
                vocab=vocab,
                batch=batch,
                seq=args.seq_len,
                threads=args.threads,
                runs=runs,
            )
            result["medians_ms"][str(batch)] = dict(zip(paths, medians, strict=True))
            ids = synthetic_ids(vocab, batch, args.seq_len)
            feeds = {
                "input_ids": ids,
                "attention_mask": np.ones_like(ids),
                "token_type_ids": np.zeros_like(ids),
            }
            result["per_operator_ms"][str(batch)] = {
                name: per_operator_ms(path, feeds, args.threads, max(2, runs // 4))
                for name, path in paths.items()
            }
    result |= {
        "model": "tiny" if args.smoke else str(args.model),
        "threads": args.threads,
        "seq_len": args.seq_len,
        "machine": compresskit.machine.machine_info(),
        "load_before": load_before,
    }
    (args.output / "fusion_profile.json").write_text(json.dumps(result, indent=1) + "\n")
    text = markdown(result)
    (args.output / "fusion_profile.md").write_text(text)
    print(text, end="")


def markdown(result: dict[str, Any]) -> str:
    m = result["machine"]
    batches = list(result["medians_ms"])
    lines = [
        "# ONNX Runtime fusions on CPU: dense and pruned",
        "",
        f"{result['model']}, {result['threads']} threads, sequence length {result['seq_len']}; "
        "interleaved medians in one process.",
        "",
        "| graph | " + " | ".join(f"batch {b} ms" for b in batches) + " |",
        "|---|" + "--:|" * len(batches),
    ]
    for name in result["medians_ms"][batches[0]]:
        cells = " | ".join(f"{result['medians_ms'][b][name]:.2f}" for b in batches)
        lines.append(f"| {name} | {cells} |")
    lines += ["", "Milliseconds per operator type (ORT's profiler), the largest eight:", ""]
    for b in batches:
        for name, ops in result["per_operator_ms"][b].items():
            top = ", ".join(f"{op} {ms:.2f}" for op, ms in ops.items())
            lines.append(f"- batch {b}, {name}: {top}")
    lines += [
        "",
        f"Machine: {m['cpu']}, {m['logical_cores']} logical cores; torch {m['torch']}, "
        f"Python {m['python']}; 1-min load average {result['load_before']:.2f} before.",
        "",
        "Command: `python benchmarks/fusion_profile.py`",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
