"""`compresskit report OUT [OUT ...]`: several training runs side by side, from the report.json
each output holds. A Markdown table (metric, training time and its estimated saving, MACs,
search decision) and a figure: the metric against training wall-clock and against the MACs
ratio, and the fraction of heads and FFN neurons kept per layer, one colour per run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from compresskit.errors import CompressKitError

REPORT = "report.json"


def read_reports(outputs: list[Path]) -> dict[str, dict[str, Any]]:
    """Each output's report.json of a training run, by output name (the folder's name, or
    its path when names repeat)."""
    reports: dict[str, dict[str, Any]] = {}
    for folder in outputs:
        path = folder / REPORT
        if not path.is_file():
            raise CompressKitError(f"{path} does not exist: give the output folder of a run")
        try:
            report = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise CompressKitError(f"{path} cannot be read as JSON: {err}") from None
        if not isinstance(report, dict) or "metrics" not in report or "after" not in report:
            raise CompressKitError(
                f"{path} is not the report of a training run (compresskit prune --task ...)"
            )
        name = folder.name if folder.name not in reports else str(folder)
        reports[name] = report
    return reports


def table(reports: dict[str, dict[str, Any]]) -> str:
    lines = [
        "| run | strategy | metric | training s | est. saving vs dense | MACs ratio | search |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in reports.items():
        metric = r.get("primary_metric", "")
        value = r["metrics"].get(metric)
        time = r.get("time") or {}
        saving = time.get("estimated_saving")
        search = r.get("search") or {}
        decided = f"{search.get('state')} @ {search.get('decided_at')}" if search else ""
        seconds = time.get("training_seconds", r.get("seconds", {}).get("train", 0.0))
        lines.append(
            f"| {name} | {r.get('strategy', {}).get('strategy', '?')} | "
            f"{metric} {'' if value is None else f'{value:.4f}'} | {seconds:.1f} | "
            f"{'' if saving is None else f'{saving:.0%}'} | {r.get('macs_ratio', 1.0):.2f}x | "
            f"{decided} |"
        )
    return "\n".join(lines)


FIGURE, MARKDOWN = "compare.png", "compare.md"


def write_comparison(folder: Path, reports: dict[str, dict[str, Any]]) -> None:
    """compare.md (the table) and compare.png (the figure) into `folder`."""
    (folder / MARKDOWN).write_text(table(reports) + "\n", encoding="utf-8")
    draw(folder / FIGURE, reports)


def draw(path: Path, reports: dict[str, dict[str, Any]]) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(16, 4.6), layout="constrained")
    FigureCanvasAgg(figure)
    by_time, by_macs, kept = figure.subplots(1, 3)
    metric = next(iter(reports.values())).get("primary_metric", "metric")
    for i, (name, r) in enumerate(reports.items()):
        color = f"C{i % 10}"
        value = r["metrics"].get(r.get("primary_metric"))
        seconds = (r.get("time") or {}).get("training_seconds")
        if value is not None and seconds is not None:
            by_time.scatter([seconds], [value], color=color, label=name)
        if value is not None:
            by_macs.scatter([r.get("macs_ratio", 1.0)], [value], color=color, label=name)
        after, dense = r["after"]["layers"], r["dense"]["layers"]
        layers = [layer["index"] for layer in after]
        pairs = list(zip(after, dense, strict=True))
        heads = [a["heads"] / max(d["heads"], 1) for a, d in pairs]
        ffn = [a["ffn_width"] / max(d["ffn_width"], 1) for a, d in pairs]
        kept.plot(layers, heads, "-o", color=color, label=f"{name}: heads")
        kept.plot(layers, ffn, "--s", color=color, label=f"{name}: FFN")
    by_time.set(xlabel="training wall-clock (s)", ylabel=metric, title=f"{metric} against time")
    by_macs.set(xlabel="fewer encoder MACs (x)", ylabel=metric, title=f"{metric} against MACs")
    kept.set(xlabel="layer", ylabel="fraction kept", ylim=(0, 1.05), title="kept per layer")
    for ax in (by_time, by_macs):
        ax.legend(fontsize=8)
    kept.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2, frameon=False)
    figure.suptitle(f"{len(reports)} runs compared", fontsize=11)
    figure.savefig(path, dpi=120)
