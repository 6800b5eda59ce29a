"""Masked-LM pre-training from scratch on WikiText-2: earlybird against dense.

Both runs are the same `compresskit prune --task mlm --config ...` command with the same data,
held-out split, seed, step budget and hyper-parameters; only the strategy differs. Each
records its held-out MLM loss every --eval-every steps with the wall-clock at that point
(evaluation time left out). The table answers: when is the ticket drawn (as a fraction of the
budget), and how do the two compare in held-out loss at equal steps and at equal wall-clock?

A third run per seed, "earlybird-time", gives earlybird the step budget that fits in dense's
wall-clock (budget x dense seconds / earlybird seconds, from the two runs before it): what a
user with a fixed time budget would run. It answers the time-to-quality question: does
earlybird reach dense's final held-out loss in less wall-clock than dense took?

    python benchmarks/pretrain_wikitext.py --seeds 0,1,2   # small BERT, 2 cores: ~20 minutes
    python benchmarks/pretrain_wikitext.py --smoke  # tiny synthetic text and model (CI)

Writes pretrain_wikitext.json, .md and .png (loss against wall-clock and against step, and
the mask distances of the search), and each run's output folder and log, to --output.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from _prune_runs import machine_and_commands, run_prune

import compresskit.machine
from compresskit.testing import write_tiny_text, write_tiny_tokenizer

SHARED = Path(__file__).resolve().parents[2] / "shared"
TOKENIZER = SHARED / "models" / "minilm-l6-h384-uncased"
WIKITEXT = SHARED / "data" / "wikitext-2"
RUNS = {"dense": ["--strategy", "none"], "earlybird": ["--strategy", "earlybird"]}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=Path("bench-out/pretrain_wikitext"))
    parser.add_argument("--smoke", action="store_true", help="tiny model and text, seconds")
    parser.add_argument("--tokenizer", type=Path, default=TOKENIZER)
    parser.add_argument(
        "--data", default=f"{WIKITEXT / 'valid.txt'},{WIKITEXT / 'test.txt'}", help="text files"
    )
    parser.add_argument("--config", default="layers=4,hidden=256,heads=8,ffn=1024")
    parser.add_argument("--max-steps", default="400")
    parser.add_argument("--batch-size", default="16")
    parser.add_argument("--lr", default="5e-4")
    parser.add_argument("--max-seq-len", default="64")
    parser.add_argument("--eval-every", default="25")
    parser.add_argument("--seeds", default="0", help="comma-separated; three runs per seed")
    parser.add_argument(
        "--no-equal-time", action="store_true", help="skip the run at dense's wall-clock"
    )
    parser.add_argument(
        "--earlybird", default="", help="extra options for the earlybird run, e.g. '--eps 0.05'"
    )
    return parser.parse_args()


def common(args: argparse.Namespace) -> list[str]:
    return [
        *("--task", "mlm", "--data", str(args.data), "--config", args.config),
        *("--tokenizer", str(args.tokenizer)),
        *("--batch-size", args.batch_size, "--lr", args.lr, "--max-seq-len", args.max_seq_len),
        *("--eval-every", args.eval_every, "--eval-batch-size", "64"),
        *("--no-progress", "--overwrite"),
    ]


def run_one(
    name: str, options: list[str], args: argparse.Namespace, seed: str, max_steps: str
) -> dict[str, Any]:
    argv = [*options, *common(args), "--seed", seed, "--max-steps", max_steps]
    return run_prune(name, argv, args.output)


def equal_time_steps(dense: dict[str, Any], earlybird: dict[str, Any]) -> int:
    """The step budget earlybird trains in dense's wall-clock: the budget scaled by the ratio of
    their measured training seconds (search, pruning and slim training; evaluation excluded)."""
    budget = dense["steps"]["train"]
    return max(1, int(budget * dense["curve"][-1]["seconds"] / earlybird["curve"][-1]["seconds"]))


# --- comparing ----------------------------------------------------------------------------------
def loss_at(curve: list[dict[str, Any]], key: str, x: float) -> float | None:
    """The held-out loss at step / second `x`, linear between evaluations; None past the end."""
    xs = [p[key] for p in curve]
    if not xs or x > xs[-1] or x < xs[0]:
        return None
    return float(np.interp(x, xs, [p["loss"] for p in curve]))


def compare(dense: dict[str, Any], earlybird: dict[str, Any]) -> dict[str, Any]:
    search = earlybird["search"]
    budget = dense["steps"]["train"]
    d_curve, e_curve = dense["curve"], earlybird["curve"]
    e_seconds, d_seconds = e_curve[-1]["seconds"], d_curve[-1]["seconds"]
    checkpoints = sorted({budget // 4, budget // 2, 3 * budget // 4, budget})
    return {
        "budget": budget,
        "ticket": {
            "state": search["state"],
            "step": search["decided_at"],
            "fraction_of_budget": search["decided_at"] / budget,
        },
        "at_equal_steps": [
            {
                "step": s,
                "dense": loss_at(d_curve, "step", s),
                "earlybird": loss_at(e_curve, "step", s),
            }
            for s in checkpoints
        ],
        "at_equal_seconds": {
            "seconds": min(d_seconds, e_seconds),  # when the faster run finished
            "dense": loss_at(d_curve, "seconds", min(d_seconds, e_seconds)),
            "earlybird": loss_at(e_curve, "seconds", min(d_seconds, e_seconds)),
            "dense_step": _steps_by(d_curve, min(d_seconds, e_seconds)),
            "earlybird_step": _steps_by(e_curve, min(d_seconds, e_seconds)),
        },
        "training_seconds": {"dense": d_seconds, "earlybird": e_seconds},
        # The target: earlybird at dense's final held-out loss sooner than dense got there.
        "dense_final_loss": {
            "loss": d_curve[-1]["loss"],
            "dense_seconds": d_seconds,
            "earlybird_seconds": seconds_to_reach(e_curve, d_curve[-1]["loss"]),
        },
        "final": {"dense": dense["metrics"], "earlybird": earlybird["metrics"]},
        "macs_ratio": earlybird["macs_ratio"],
        "params_ratio": earlybird["params_ratio"],
    }


def seconds_to_reach(curve: list[dict[str, Any]], loss: float) -> float | None:
    """The wall-clock at which the held-out loss first reaches `loss`, linear between the two
    evaluations around the crossing; None if it never does."""
    for before, after in zip([None, *curve], curve, strict=False):
        if after["loss"] > loss:
            continue
        if before is None:
            return float(after["seconds"])
        share = (before["loss"] - loss) / (before["loss"] - after["loss"])
        return float(before["seconds"] + share * (after["seconds"] - before["seconds"]))
    return None


def equal_time(dense: dict[str, Any], run: dict[str, Any]) -> dict[str, Any]:
    """Earlybird given dense's wall-clock: when it reaches dense's final loss, where it ends."""
    target, d_seconds = dense["curve"][-1]["loss"], dense["curve"][-1]["seconds"]
    reached = seconds_to_reach(run["curve"], target)
    return {
        "steps": sum(run["steps"].values()),  # the budget: search and slim training
        "ticket_step": run["search"]["decided_at"],
        "dense_final_loss": target,
        "dense_seconds": d_seconds,
        "seconds_to_dense_loss": reached,
        "saving": None if reached is None else 1 - reached / d_seconds,
        "final_loss": run["curve"][-1]["loss"],
        "training_seconds": run["curve"][-1]["seconds"],
        "macs_ratio": run["macs_ratio"],
    }


def _steps_by(curve: list[dict[str, Any]], seconds: float) -> float:
    return float(np.interp(seconds, [p["seconds"] for p in curve], [p["step"] for p in curve]))


# --- writing ------------------------------------------------------------------------------------
def figure(path: Path, runs: dict[str, dict[str, Any]]) -> None:
    """Held-out loss against wall-clock and against step (every run of one seed), and the
    earlybird search's mask distances."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(15, 4), layout="constrained")
    FigureCanvasAgg(fig)
    by_time, by_step, distance = fig.subplots(1, 3)
    earlybird = runs["earlybird"]
    ticket = earlybird["search"]["decided_at"]
    for name, report in runs.items():
        curve = report["curve"]
        by_time.plot([p["seconds"] for p in curve], [p["loss"] for p in curve], label=name)
        by_step.plot([p["step"] for p in curve], [p["loss"] for p in curve], label=name)
    if "earlybird-time" in runs:
        by_time.axhline(runs["dense"]["curve"][-1]["loss"], color="grey", linestyle=":", lw=1)
    by_step.axvline(ticket, color="red", linewidth=1, label=f"ticket, step {ticket}")
    ticket_seconds = _seconds_at(earlybird["curve"], ticket)
    if ticket_seconds is not None:
        by_time.axvline(ticket_seconds, color="red", linewidth=1, label="ticket")
    for ax, xlabel in (
        (by_time, "training wall-clock (s, evaluation excluded)"),
        (by_step, "step"),
    ):
        ax.set_xlabel(xlabel)
        ax.set_ylabel("held-out MLM loss")
        ax.legend(fontsize=8)
    by_time.set_title("loss against wall-clock")
    by_step.set_title("loss against step")
    _distances(distance, earlybird["search"])
    fig.savefig(path, dpi=100)


def _seconds_at(curve: list[dict[str, Any]], step: int) -> float | None:
    steps = [p["step"] for p in curve]
    if not steps or step < steps[0]:
        return None
    return float(np.interp(step, steps, [p["seconds"] for p in curve]))


def _distances(ax: Any, search: dict[str, Any]) -> None:
    records = [r for r in search["history"] if r["max_distance"] is not None]
    steps = [r["step"] for r in records]
    for kind in ("heads", "ffn"):
        ax.plot(steps, [max(r[kind]) for r in records], "-o", markersize=3, label=kind)
    ax.axhline(
        search["settings"]["eps"],
        color="grey",
        linestyle="--",
        label=f"eps {search['settings']['eps']}",
    )
    ax.axvline(search["decided_at"], color="red", linewidth=1, label=search["state"])
    ax.set_xlabel("step")
    ax.set_ylabel(f"max mask distance in window of {search['settings']['window']}")
    ax.set_title("early-bird search")
    ax.legend(fontsize=8)


def markdown(result: dict[str, Any]) -> str:
    s, seeds = result["settings"], result["seeds"]
    first = seeds[0]["comparison"]
    lines = [
        f"# Masked-LM pre-training from scratch: earlybird against dense ({result['mode']})",
        "",
        f"BERT `{s['config']}` from scratch, tokenizer {s['tokenizer']}; text "
        f"{result['data_source']}; {first['budget']} steps, batch {s['batch_size']}, blocks of "
        f"{s['max_seq_len']} tokens, lr {s['lr']}; held-out loss every {s['eval_every']} steps; "
        f"seeds {', '.join(r['seed'] for r in seeds)}.",
        "",
        *_seed_table(seeds),
        "",
        *_summary(seeds),
        "",
        f"## Seed {seeds[0]['seed']} in detail",
        "",
        *_detail(first),
        "",
        *machine_and_commands(result),
    ]
    return "\n".join(lines) + "\n"


def _seed_table(seeds: list[dict[str, Any]]) -> list[str]:
    head = (
        "| seed | ticket | MACs | dense: final loss, s | earlybird, same steps: final loss, s "
        "| earlybird, dense's time: steps, final loss, s to dense's loss |"
    )
    lines = [head, "|---|---|---|---|---|---|"]
    for r in seeds:
        c, t = r["comparison"], r.get("equal_time")
        same = (
            f"{t['steps']}, {t['final_loss']:.3f}, {_seconds(t['seconds_to_dense_loss'])}"
            if t
            else "not run"
        )
        lines.append(
            f"| {r['seed']} | {c['ticket']['state']} at {c['ticket']['step']} | "
            f"{c['macs_ratio']:.2f}x | {c['dense_final_loss']['loss']:.3f}, "
            f"{c['training_seconds']['dense']:.1f} | {c['final']['earlybird']['mlm_loss']:.3f}, "
            f"{c['training_seconds']['earlybird']:.1f} | {same} |"
        )
    return lines


def _seconds(value: float | None) -> str:
    return "never" if value is None else f"{value:.1f}"


def _summary(seeds: list[dict[str, Any]]) -> list[str]:
    """Means and spreads over seeds of what the targets ask."""
    deltas = [
        r["comparison"]["final"]["earlybird"]["mlm_loss"]
        - r["comparison"]["final"]["dense"]["mlm_loss"]
        for r in seeds
    ]
    lines = [f"- Same step budget: earlybird − dense final loss {_mean_spread(deltas, '+.3f')}."]
    timed = [r["equal_time"] for r in seeds if r.get("equal_time")]
    if timed:
        savings = [t["saving"] for t in timed if t["saving"] is not None]
        lines.append(
            f"- Given dense's wall-clock: earlybird reached dense's final loss in "
            f"{len(savings)} of {len(timed)} seeds"
            + (f", {_mean_spread([100 * x for x in savings], '.1f')}% sooner" if savings else "")
            + "; its final loss minus dense's "
            + _mean_spread([t["final_loss"] - t["dense_final_loss"] for t in timed], "+.3f")
            + "."
        )
    return lines


def _mean_spread(values: list[float], spec: str) -> str:
    """Mean ± sample standard deviation, both in `spec` (the spread without its sign)."""
    if len(values) == 1:
        return format(values[0], spec)
    spread = format(float(np.std(values, ddof=1)), spec.replace("+", ""))
    return f"{format(float(np.mean(values)), spec)} ± {spread}"


def _detail(c: dict[str, Any]) -> list[str]:
    t, same = c["ticket"], c["at_equal_seconds"]
    return [
        f"- Ticket: {t['state']} at step {t['step']} = {100 * t['fraction_of_budget']:.1f}% of "
        "the budget.",
        f"- Slim model: {c['macs_ratio']:.2f}x fewer MACs, {c['params_ratio']:.2f}x fewer "
        "parameters (embeddings and MLM head included).",
        f"- Training wall-clock to the end of the budget (evaluation excluded): dense "
        f"{c['training_seconds']['dense']:.1f} s, earlybird "
        f"{c['training_seconds']['earlybird']:.1f} s.",
        "",
        "| at step | dense loss | earlybird loss | Δ (earlybird − dense) |",
        "|---|---|---|---|",
        *[
            f"| {r['step']} | {_f(r['dense'])} | {_f(r['earlybird'])} | "
            f"{_delta(r['earlybird'], r['dense'])} |"
            for r in c["at_equal_steps"]
        ],
        "",
        f"At equal wall-clock ({same['seconds']:.1f} s, when the faster run finished): dense "
        f"{_f(same['dense'])} (step {same['dense_step']:.0f}), earlybird "
        f"{_f(same['earlybird'])} (step {same['earlybird_step']:.0f}), Δ "
        f"{_delta(same['earlybird'], same['dense'])}.",
        "",
        f"Final held-out perplexity: dense {c['final']['dense']['perplexity']:.1f}, earlybird "
        f"{c['final']['earlybird']['perplexity']:.1f}.",
        "",
        _time_to_dense_loss(c["dense_final_loss"]),
    ]


def _time_to_dense_loss(target: dict[str, Any]) -> str:
    reached = target["earlybird_seconds"]
    head = f"Time to dense's final held-out loss ({target['loss']:.3f}), same step budget: "
    head += "dense "
    head += f"{target['dense_seconds']:.1f} s, earlybird "
    if reached is None:
        return head + "never within the budget."
    return head + f"{reached:.1f} s ({100 * (1 - reached / target['dense_seconds']):.0f}% less)."


def _f(value: float | None) -> str:
    return "" if value is None else f"{value:.3f}"


def _delta(a: float | None, b: float | None) -> str:
    return "" if a is None or b is None else f"{a - b:+.3f}"


def run_seed(seed: str, args: argparse.Namespace, extra: dict[str, list[str]]) -> dict[str, Any]:
    """Dense and earlybird at the step budget, then earlybird at dense's wall-clock."""
    runs = {
        name: run_one(f"{name}-s{seed}", [*opts, *extra[name]], args, seed, args.max_steps)
        for name, opts in RUNS.items()
    }
    record: dict[str, Any] = {
        "seed": seed,
        "comparison": compare(runs["dense"], runs["earlybird"]),
    }
    if not args.no_equal_time:
        steps = str(equal_time_steps(runs["dense"], runs["earlybird"]))
        options = [*RUNS["earlybird"], *extra["earlybird"]]
        runs["earlybird-time"] = run_one(f"earlybird-time-s{seed}", options, args, seed, steps)
        record["equal_time"] = equal_time(runs["dense"], runs["earlybird-time"])
    record["reports"] = runs
    return record


def main() -> None:
    args = parse_args()
    args.output.mkdir(parents=True, exist_ok=True)
    extra = {"dense": [], "earlybird": shlex.split(args.earlybird)}
    with tempfile.TemporaryDirectory() as tiny:
        if args.smoke:
            args.tokenizer = Path(tiny) / "tokenizer"
            write_tiny_tokenizer(args.tokenizer)
            args.data = str(write_tiny_text(Path(tiny) / "text.txt"))
            args.config, args.max_steps, args.lr = "layers=2,hidden=32,heads=4,ffn=16", "30", "5e-3"
            args.max_seq_len, args.eval_every = "16", "5"
            extra["earlybird"] += ["--mask-interval", "1", "--window", "3"]
        load_before = os.getloadavg()[0]
        start = time.perf_counter()
        seeds = [run_seed(seed, args, extra) for seed in args.seeds.split(",")]
    reports = {f"{name}-s{r['seed']}": rep for r in seeds for name, rep in r["reports"].items()}
    result = {
        "mode": "smoke" if args.smoke else "full",
        "settings": {k: str(v) for k, v in vars(args).items()},
        "machine": compresskit.machine.machine_info(),
        "load_before": load_before,
        "seconds": round(time.perf_counter() - start, 1),
        "data_source": seeds[0]["reports"]["dense"]["data"],
        "seeds": [{k: v for k, v in r.items() if k != "reports"} for r in seeds],
        "reports": reports,
    }
    (args.output / "pretrain_wikitext.json").write_text(json.dumps(result, indent=1) + "\n")
    figure(args.output / "pretrain_wikitext.png", seeds[0]["reports"])
    text = markdown(result)
    (args.output / "pretrain_wikitext.md").write_text(text)
    print(text, end="")


if __name__ == "__main__":
    main()
