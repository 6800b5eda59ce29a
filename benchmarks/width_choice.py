"""Which widths lose least, before any retraining: the diagonal Fisher's knapsack, the search
over the whole empirical Fisher, or ratios, at the same predicted speed-up?

A fine-tuned classifier (the latency_target benchmark's teacher) is scored by `fisher` on the
batches the training pipeline scores with (the first 8 batches of 32 of its training subset,
in file order); for each setting and target, four plans are made:

- `diagonal`: the knapsack over layers on the units' Fisher scores (Σ over examples of g²);
- `whole Fisher`: compresskit's choice, the search of compresskit/interactions.py;
- `uniform`: one ratio of the heads and of the FFN neurons removed in every layer;
- `ratios`: one heads ratio in every layer and the same FFN ratio ranked across layers
  (compresskit's default scopes);
  each the smallest ratio removed that meets the target (`--target-shape ratios`).

Each plan prunes a copy of the model, which is scored on 1,024 training examples outside the
teacher's subset (held out from all of the above) and on the dev set, with no retraining. The
latency models are the ones the latency_target benchmark measured (its cache), or are
measured here.

    python benchmarks/width_choice.py --teacher bench-out/latency_target/teacher \\
        --cache bench-out/latency_target/cache
    python benchmarks/width_choice.py --smoke      # tiny model, a minute (CI)

Writes width_choice.json and .md to --output (bench-out/width_choice).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from _prune_runs import SHARED, save_result, smoke_inputs

import compresskit.machine

SETTINGS = "fp32-b1:2,fp32-b1:2.5,fp32-b1:3,int8-b1:3,int8-b1:4,fp32-b32:2,fp32-b32:3"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=Path("bench-out/width_choice"))
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--teacher", type=Path, help="a classifier fine-tuned on --data")
    parser.add_argument("--data", type=Path, default=SHARED / "data" / "glue" / "SST-2")
    parser.set_defaults(model=None)  # --smoke: the tiny checkpoint
    parser.add_argument("--cache", type=Path, help="latency models (default: measure here)")
    parser.add_argument("--settings", default=SETTINGS, help="SETTING:TARGET, comma-separated")
    parser.add_argument("--max-train-samples", type=int, default=8000, help="the teacher's")
    parser.add_argument("--held-out", type=int, default=1024)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seq-len", type=int, default=128)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    with smoke_inputs(args):
        if args.cache is not None:
            os.environ["COMPRESSKIT_CACHE"] = str(args.cache)
        if args.smoke:  # the tiny checkpoint as its own teacher, tiny latency models
            args.teacher, args.settings, args.seq_len = args.model, "fp32-b1:1.3", 16
            args.max_train_samples, args.held_out = 64, 32
            os.environ["COMPRESSKIT_CACHE"] = str(args.output / "cache")
        if args.teacher is None:
            raise SystemExit("give --teacher: a classifier fine-tuned on --data")
        result = compare(args)
        save_result(args.output, "width_choice", result, markdown(result))


def compare(args: argparse.Namespace) -> dict[str, Any]:
    import transformers

    from compresskit.interactions import plan_fisher_loss
    from compresskit.loading import load_model
    from compresskit.registry import get_strategy

    load_before = os.getloadavg()[0]
    # A classifier as the teacher was saved (with --smoke: the tiny checkpoint, head added).
    model = load_model(
        args.teacher, auto_class=transformers.AutoModelForSequenceClassification, num_labels=2
    )
    model.eval()
    scoring, held, dev = data(args, model)
    scores = get_strategy("fisher").scores(model, scoring)
    assert scores.example_gradients is not None
    diagonal_scores = dataclasses.replace(scores, example_gradients=None)
    rows = []
    for item in args.settings.split(","):
        name, target = item.split(":")
        options = target_options(args, name, float(target))
        speedup_of = speedup_predictor(model, options)
        for choice, plan in width_choices(model, scores, diagonal_scores, options).items():
            if isinstance(plan, str):  # refused
                rows.append({"setting": name, "target": float(target), "choice": choice})
                rows[-1]["refused"] = plan
                continue
            rows.append(
                {"setting": name, "target": float(target), "choice": choice}
                | {"predicted_speedup": speedup_of(plan)}
                | {"fisher_loss": plan_fisher_loss(plan, scores.example_gradients)}
                | evaluate(model, plan, held, dev)
                | {"heads_per_layer": plan.heads_per_layer, "ffn_per_layer": plan.ffn_per_layer}
            )
            print(rows[-1], flush=True)
    return {
        "benchmark": "width_choice",
        "without_attention": without_attention(model, scores, held),
        "teacher": str(args.teacher),
        "data": str(args.data),
        "scoring_examples": int(scores.example_gradients.heads[0].shape[0]),
        "held_out_examples": sum(len(b["labels"]) for b in held),
        "machine": compresskit.machine.machine_info(),
        "load_before": load_before,
        "rows": rows,
    }


def without_attention(model: Any, scores: Any, held: list[dict]) -> list[dict[str, float]]:
    """Per layer: the held-out loss added by removing all its heads (nothing else), against
    what the diagonal (½ Σ mean g²) and the whole Fisher (½ mean (Σ g)²) estimate, and what
    fisher measured of it on its scoring examples (which the search counts)."""
    from compresskit.interactions import plan_fisher_loss
    from compresskit.plan import LayerPlan, PruningPlan

    dense = PruningPlan.of_model(model)
    base = evaluate(model, dense, held, [])["held_out_loss"]
    # The second-order estimate alone, without the measured removals.
    grads = dataclasses.replace(
        scores.example_gradients, heads_removed_loss=None, ffn_removed_loss=None
    )
    rows = []
    for index, layer in enumerate(dense.layers):
        layers = list(dense.layers)
        layers[index] = LayerPlan((), layer.ffn_kept)
        plan = PruningPlan(tuple(layers))
        examples = grads.heads[index].shape[0]
        rows.append(
            {
                "layer": index,
                "measured": evaluate(model, plan, held, [])["held_out_loss"] - base,
                "diagonal": float(scores.heads[index].sum()) / (2 * examples),
                "whole_fisher": plan_fisher_loss(plan, grads),
                "measured_scoring": scores.example_gradients.heads_removed_loss[index],
            }
        )
    return rows


def data(args: argparse.Namespace, model: Any) -> tuple[list[dict], list[dict], list[dict]]:
    """Batches of 32: the pipeline's scoring batches (the training subset in file order, the
    first 8), held-out training examples outside the subset, and dev."""
    from compresskit.loading import load_tokenizer
    from compresskit.train.data import load_task

    tokenizer = load_tokenizer(str(args.teacher), required=True)
    subset = load_task("sst2", args.data, max_train_samples=args.max_train_samples, seed=0)
    everything = load_task("sst2", args.data)
    taken = set(subset.train)
    held = [e for e in everything.train if e not in taken][: args.held_out]
    labels = subset.labels

    def batches(examples: Any) -> list[dict]:
        out = []
        for start in range(0, len(examples), 32):
            part = examples[start : start + 32]
            encoded = tokenizer(
                [e.text for e in part],
                padding=True,
                truncation=True,
                max_length=64,
                return_tensors="pt",
            )
            encoded["labels"] = torch.tensor([labels.index(e.label) for e in part])
            out.append(dict(encoded))
        return out

    return batches(list(subset.train[: 8 * 32])), batches(held), batches(list(subset.dev))


def target_options(args: argparse.Namespace, name: str, speedup: float) -> Any:
    from compresskit.latency import LatencySetting
    from compresskit.target import Target, TargetOptions

    precision, batch = name.split("-")
    setting = LatencySetting(
        threads=args.threads,
        batch_size=int(batch.removeprefix("b")),
        seq_len=args.seq_len,
        int8=precision == "int8",
    )
    return TargetOptions(Target("speedup", speedup), setting, verify=False, shape="layers")


def speedup_predictor(model: Any, options: Any) -> Callable[[Any], float]:
    """plan -> its predicted speed-up over the float32 model, on the setting's latency model
    (both models read once)."""
    from compresskit.exporters.latency import latency_model_for

    latency = latency_model_for(model, options.setting)
    baseline = latency_model_for(model, options.setting.in_float32()).dense()
    return lambda plan: baseline / latency.predict(plan.heads_per_layer, plan.ffn_per_layer)


def ratio_plan(model: Any, scores: Any, options: Any, ffn_scope: str) -> Any:
    """The ratio-shaped widths that meet the target (`--target-shape ratios`): heads ranked
    within each layer, FFN neurons within each layer (`uniform`) or across layers (`ratios`,
    the CLI's default)."""
    from compresskit.target import plan_for_target

    shaped = dataclasses.replace(options, shape="ratios")
    return plan_for_target(model, scores, shaped, scopes=("layer", ffn_scope)).plan


def width_choices(model: Any, scores: Any, diagonal_scores: Any, options: Any) -> dict[str, Any]:
    """Each kind of widths' plan for the target, or the one line that refused it (a result
    too: the table says it; e.g. a tiny model's fixed cost above the budget on a busy
    machine)."""
    from compresskit.errors import ConfigError
    from compresskit.target import plan_for_target

    makers: dict[str, Callable[[], Any]] = {
        "diagonal": lambda: plan_for_target(model, diagonal_scores, options).plan,
        "whole Fisher": lambda: plan_for_target(model, scores, options).plan,
        "uniform": lambda: ratio_plan(model, scores, options, "layer"),
        "ratios": lambda: ratio_plan(model, scores, options, "global"),
    }
    plans = {}
    for choice, make in makers.items():
        try:
            plans[choice] = make()
        except ConfigError as error:
            plans[choice] = str(error)
    return plans


def evaluate(model: Any, plan: Any, held: list[dict], dev: list[dict]) -> dict[str, float]:
    from compresskit import prune

    pruned = prune(copy.deepcopy(model), plan)
    pruned.eval()
    out = {}
    for split, batches in (("held_out", held), ("dev", dev)):
        if not batches:
            continue
        loss, correct, count = 0.0, 0, 0
        with torch.no_grad():
            for batch in batches:
                result = pruned(**batch)
                size = len(batch["labels"])
                loss += float(result.loss) * size
                correct += int((result.logits.argmax(-1) == batch["labels"]).sum())
                count += size
        out[f"{split}_loss"] = loss / count
        out[f"{split}_accuracy"] = correct / count
    return out


def markdown(result: dict[str, Any]) -> str:
    lines = [
        "# Width choices before retraining",
        "",
        f"Teacher {result['teacher']}; fisher scores on {result['scoring_examples']} "
        f"training examples; held-out loss on {result['held_out_examples']} other training "
        "examples; no retraining. ΔL: what the search minimises, the whole empirical "
        "Fisher's estimate plus the measured excess of whole-layer removals "
        "(compresskit/interactions.py).",
        "",
        "| setting | target | widths | predicted | ΔL (Fisher) | held-out loss | dev loss "
        "| dev accuracy | heads per layer |",
        "|---|--:|---|--:|--:|--:|--:|--:|---|",
    ]
    for r in result["rows"]:
        if "refused" in r:
            lines.append(f"| {r['setting']} | {r['target']:g}x | {r['choice']} | {r['refused']} |")
            continue
        lines.append(
            f"| {r['setting']} | {r['target']:g}x | {r['choice']} | "
            f"{r['predicted_speedup']:.2f}x | {r['fisher_loss']:.4f} | "
            f"{r['held_out_loss']:.4f} | {r['dev_loss']:.4f} | {r['dev_accuracy']:.2%} | "
            f"{' '.join(map(str, r['heads_per_layer']))} |"
        )
    lines += [
        "",
        "Each layer without its attention (all heads removed, nothing else), held-out loss "
        "added: measured, and estimated by the diagonal and by the whole Fisher; and the "
        "loss added on fisher's scoring examples, which fisher measures for the search.",
        "",
        "| layer | measured | diagonal | whole Fisher | measured on the scoring examples |",
        "|--:|--:|--:|--:|--:|",
        *[
            f"| {r['layer']} | {r['measured']:+.4f} | {r['diagonal']:.4f} | "
            f"{r['whole_fisher']:.4f} | {r['measured_scoring']:+.4f} |"
            for r in result["without_attention"]
        ],
        "",
        f"Machine: {result['machine']['cpu']}; 1-min load average {result['load_before']:.2f} "
        "before.",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
