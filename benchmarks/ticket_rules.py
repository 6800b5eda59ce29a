"""Which early-bird ticket test suits models of every size: candidate rules replayed on
recorded mask-distance histories.

Each recorded run is `compresskit prune --strategy earlybird` on SST-2 with the ticket test
switched off (eps 1e-6: only identical masks would draw) and the search allowed 60% of the
budget, so its report.json holds the distance history far past where any rule would stop.
A history records, every `mask_interval` steps, the distance of the newest mask to each of
the `window - 1` older ones, per kind (heads, FFN, both concatenated), as the fraction of
positions whose keep bit differs. Every rule below is a function of those numbers, so it can
be replayed offline on every history:

- `positions` (the test before this benchmark): heads and FFN each below eps, distances as
  a fraction of all positions. Its resolution is 2/N: one swap among 72 heads is 0.028, among
  32 heads 0.0625, so eps 0.1 allows three swaps in one model and one in the other.
- `concat`: one distance over heads and FFN together (the FFN's thousands of positions
  outvote the heads).
- `kept`: heads and FFN each below eps, distances as the fraction of the *kept* units that
  changed (swaps / kept = positions · N / (2 · kept)): "at most 10% of the kept heads
  changed" means the same on every model and at every ratio.
- `concat-kept`: one distance over heads and FFN together, as a fraction of kept units.

Histories recorded in either measure (the search's settings say which) are converted.

For each rule and eps the replay gives the step the ticket would be drawn at, and how far the
mask still moved afterwards (the distance, in the rule's own measure, between the mask at
that step and the one `window - 1` intervals later), the price of stopping there.

    python benchmarks/ticket_rules.py               # MiniLM, 8k subset, 3 seeds x 2 ratios
    python benchmarks/ticket_rules.py --merge-only  # replay the saved histories only
    python benchmarks/ticket_rules.py --smoke       # tiny model and data (CI)

Writes ticket_rules.json and .md to --output (bench-out/ticket_rules).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
from typing import Any

from _prune_runs import (
    machine_and_commands,
    run_prune,
    save_result,
    smoke_inputs,
    sst2_parser,
)
from time_to_quality import RATIOS  # the same two pruning ratios

import compresskit.machine

EPS = (0.05, 0.1, 0.15, 0.2)
# rule -> (track, measure), as EarlyBirdConfig names them
RULES = {
    "positions": ("separate", "positions"),
    "concat": ("concat", "positions"),
    "kept": ("separate", "kept"),
    "concat-kept": ("concat", "kept"),
}


def parse_args() -> argparse.Namespace:
    parser = sst2_parser(__doc__.splitlines()[0], "bench-out/ticket_rules")
    parser.add_argument("--search-fraction", default="0.6", help="of the budget, recorded")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--ratios", default=",".join(RATIOS))
    parser.add_argument("--merge-only", action="store_true", help="only replay saved runs")
    return parser.parse_args()


def options(args: argparse.Namespace, ratio: str, seed: str) -> list[str]:
    subset = ["--max-train-samples", str(args.max_train_samples)] if args.max_train_samples else []
    smoke = ["--mask-interval", "1"] if args.smoke else []
    return [
        *("--strategy", "earlybird", *RATIOS[ratio], "--seed", seed, *smoke),
        *("--eps", "1e-6", "--max-search-fraction", args.search_fraction),
        *("--model", str(args.model), "--task", "sst2", "--data", str(args.data), *subset),
        *("--epochs", args.epochs, "--batch-size", "32", "--lr", args.lr),
        *("--max-seq-len", "16" if args.smoke else "64", "--no-progress", "--overwrite"),
    ]


def record(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """Every (ratio, seed) run's report.json, run now unless saved already."""
    reports = {}
    for seed in args.seeds.split(","):
        for ratio in args.ratios.split(","):
            name = f"{ratio}-seed{seed}"
            path = args.output / f"{name}.json"
            if path.is_file():
                reports[name] = json.loads(path.read_text())
            elif not args.merge_only:
                report = run_prune(name, options(args, ratio, seed), args.output)
                path.write_text(json.dumps(report, indent=1) + "\n")
                reports[name] = report
    return reports


# --- replaying rules ----------------------------------------------------------------------------
def unit_counts(report: dict[str, Any]) -> dict[str, tuple[int, int]]:
    """(positions, kept) per kind ("all": both), from the dense and pruned shapes."""
    dense, after = report["dense"]["layers"], report["after"]["layers"]
    heads = (sum(x["heads"] for x in dense), sum(x["heads"] for x in after))
    ffn = (sum(x["ffn_width"] for x in dense), sum(x["ffn_width"] for x in after))
    return {"heads": heads, "ffn": ffn, "all": (heads[0] + ffn[0], heads[1] + ffn[1])}


def distances(
    record: dict[str, Any], recorded: str, rule: str, counts: dict[str, tuple[int, int]]
) -> list[list[float]]:
    """The record's distances to the older masks (recorded in measure `recorded`), in
    `rule`'s measure; one list per tested quantity (the rule draws when every number in every
    list is below eps). Both measures count the differing bits, over N positions or over the
    2·K bits kept in the two masks, so one converts to the other by N / (2·K)."""
    track, measure = RULES[rule]
    kinds = {"separate": ("heads", "ffn"), "concat": ("all",)}[track]
    out = []
    for kind in kinds:
        n, k = counts[kind]
        scale = 1.0 if measure == recorded else (n / (2 * k) if measure == "kept" else 2 * k / n)
        values = record["concat" if kind == "all" else kind]
        out.append([d * scale for d in values])
    return out


def replay(report: dict[str, Any], rule: str, eps: float) -> dict[str, Any]:
    """The step `rule` at `eps` draws the ticket on this history (None: not within it), and
    the distance from that mask to the one window - 1 intervals later (the drift after)."""
    search = report["search"]
    window, recorded = search["settings"]["window"], search["settings"].get("measure", "positions")
    counts = unit_counts(report)
    history = [r for r in search["history"] if r["max_distance"] is not None]
    for i, record in enumerate(history):
        full = len(record["heads"]) == window - 1
        worst = max(max(d) for d in distances(record, recorded, rule, counts))
        if full and worst < eps:
            later = i + window - 1
            drift = None
            if later < len(history):
                drift = max(d[0] for d in distances(history[later], recorded, rule, counts))
            return {"step": record["step"], "drift_after": drift}
    return {"step": None, "drift_after": None}


def table(reports: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for rule in RULES:
        for eps in EPS:
            for name, report in reports.items():
                budget = report["time"]["budget_steps"]
                got = replay(report, rule, eps)
                fraction = None if got["step"] is None else got["step"] / budget
                rows.append({"rule": rule, "eps": eps, "run": name, **got, "fraction": fraction})
    return rows


def markdown(result: dict[str, Any]) -> str:
    lines = [
        f"# Ticket rules replayed on recorded searches ({result['mode']})",
        "",
        "Step at which each rule draws the ticket on each recorded search (— : not within the "
        f"recorded {result['settings']['search_fraction']} of the budget), its fraction of the "
        "budget, and in brackets how far the mask still moved in the next window (the rule's "
        "own measure). Heads / FFN units per run (all, kept): "
        + "; ".join(f"{n}: {c}" for n, c in result["units"].items()),
        "",
        "| rule | eps | " + " | ".join(result["runs"]) + " | mean fraction |",
        "|---|---|" + "---|" * (len(result["runs"]) + 1),
    ]
    for rule in RULES:
        for eps in EPS:
            cells, fractions = [], []
            for run in result["runs"]:
                row = next(
                    r for r in result["rows"] if (r["rule"], r["eps"], r["run"]) == (rule, eps, run)
                )
                if row["step"] is None:
                    cells.append("—")
                    continue
                fractions.append(row["fraction"])
                drift = "" if row["drift_after"] is None else f" ({row['drift_after']:.2f})"
                cells.append(f"{row['step']}{drift}")
            mean = f"{statistics.mean(fractions):.2f}" if len(fractions) == len(cells) else "—"
            lines.append(f"| {rule} | {eps} | " + " | ".join(cells) + f" | {mean} |")
    lines += ["", *machine_and_commands(result)]
    return "\n".join(lines) + "\n"


def main() -> None:
    args = parse_args()
    with smoke_inputs(args):
        if args.smoke:
            args.max_train_samples, args.epochs, args.seeds = 128, "4", "0"
            args.lr, args.ratios = "5e-3", "earlybert"
        load_before = os.getloadavg()[0]
        reports = record(args)
    result = {
        "mode": "smoke" if args.smoke else "full",
        "settings": {k: str(v) for k, v in vars(args).items()},
        "machine": compresskit.machine.machine_info(),
        "load_before": load_before,
        "runs": list(reports),
        "units": {n: unit_counts(r) for n, r in reports.items()},
        "rows": table(reports),
        "reports": reports,
    }
    save_result(args.output, "ticket_rules", result, markdown(result))


if __name__ == "__main__":
    main()
