"""The run's figure, drawn from its report (the dict report.json holds): a title naming the
model, the strategy and the result; what a training-time strategy watched while it searched
(earlybird: mask distance against step, the ticket marked); the held-out loss against
wall-clock when the run recorded it (--eval-every); and what was kept per layer. Drawn with
matplotlib's object API on the Agg canvas, so it needs no display and leaves pyplot's global
state alone."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def write_figure(path: Path, report: dict[str, Any]) -> None:
    """A PNG of the panels `report` has data for, side by side, under a title."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    panels = [
        *([_plot_search] if report.get("search") else []),
        *([_plot_curve] if report.get("curve") else []),
        _plot_kept,
    ]
    figure = Figure(figsize=(5.5 * len(panels), 4.4), layout="constrained")
    FigureCanvasAgg(figure)
    for ax, panel in zip(figure.subplots(1, len(panels), squeeze=False)[0], panels, strict=True):
        panel(ax, report)
    figure.suptitle(title(report), fontsize=11)
    figure.savefig(path, dpi=120)


def title(report: dict[str, Any]) -> str:
    """One line, such as: minilm-l6-h384-uncased, earlybird on sst2, accuracy 0.8532, 1.60x
    fewer MACs, est. 21% less training time than dense."""
    model = Path(str(report.get("model") or "BERT from scratch")).name
    strategy = report.get("strategy", {}).get("strategy", "?")
    parts = [f"{model}, {strategy} on {report.get('task', '?')}"]
    metric = report.get("primary_metric")
    if metric in report.get("metrics", {}):
        parts.append(f"{metric} {report['metrics'][metric]:.4f}")
    if report.get("macs_ratio", 1.0) > 1.0:
        parts.append(f"{report['macs_ratio']:.2f}x fewer MACs")
    saving = (report.get("time") or {}).get("estimated_saving")
    if saving is not None:
        more_or_less = "less" if saving >= 0 else "more"
        parts.append(f"est. {abs(saving):.0%} {more_or_less} training time than dense")
    return ", ".join(parts)


def _plot_search(ax: Any, report: dict[str, Any]) -> None:
    """What the strategy watched while it searched (`search.plot` says which series and what
    line to draw), and the step it decided at. A series value that is a list (one distance
    per older mask in earlybird's window) is drawn as its largest. A search that ended before
    it had anything to show says so instead of drawing an empty box."""
    search = report["search"]
    plot = search.get("plot", {})
    drawn = 0
    for series, style in zip(plot.get("series", []), ("-o", "-s", "-^", "-v"), strict=False):
        points = [
            (r["step"], max(v) if isinstance(v, list) else v)
            for r in search.get("history", [])
            if (v := r.get(series)) not in (None, [])
        ]
        drawn += len(points)
        ax.plot([p[0] for p in points], [p[1] for p in points], style, markersize=3, label=series)
    if not drawn:
        ax.text(
            0.5,
            0.5,
            f"search {search.get('state')} at step {search.get('decided_at')}\n"
            "before it had anything to compare\n(a longer budget, or a smaller mask interval)",
            ha="center",
            va="center",
            transform=ax.transAxes,
            fontsize=9,
        )
    if plot.get("threshold") is not None:
        ax.axhline(
            plot["threshold"], color="grey", linestyle="--", linewidth=1, label=plot.get("label")
        )
    if search.get("decided_at") is not None:
        ax.axvline(
            search["decided_at"],
            color="red",
            linewidth=1,
            label=f"{plot.get('decision', search.get('state'))}, step {search['decided_at']}",
        )
    ax.set_xlabel("optimizer step")
    ax.set_ylabel(plot.get("ylabel", ""))
    ax.set_title(plot.get("title", "search"))
    ax.legend(fontsize=8)


def _plot_curve(ax: Any, report: dict[str, Any]) -> None:
    """Held-out loss against training wall-clock (evaluations left out), one colour per
    stage (the search, then the slim training)."""
    curve = report["curve"]
    for stage in dict.fromkeys(p["stage"] for p in curve):
        points = [p for p in curve if p["stage"] == stage]
        label = {"search": "search (dense model)", "train": "training"}.get(stage, stage)
        ax.plot([p["seconds"] for p in points], [p["loss"] for p in points], "-o", markersize=3,
                label=label)  # fmt: skip
    ax.set_xlabel("training wall-clock (s)")
    ax.set_ylabel("held-out loss")
    ax.set_title("held-out loss during training")
    ax.legend(fontsize=8)


def _plot_kept(ax: Any, report: dict[str, Any]) -> None:
    """Fraction of heads and of FFN neurons kept in each layer; the legend below the axes,
    never over the bars."""
    after, dense = report["after"]["layers"], report["dense"]["layers"]
    layers = [layer["index"] for layer in after]
    heads = [a["heads"] / max(d["heads"], 1) for a, d in zip(after, dense, strict=True)]
    ffn = [a["ffn_width"] / max(d["ffn_width"], 1) for a, d in zip(after, dense, strict=True)]
    width = 0.4
    ax.bar([i - width / 2 for i in layers], heads, width, label="heads kept")
    ax.bar([i + width / 2 for i in layers], ffn, width, label="FFN neurons kept")
    ax.set_xticks(layers)
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("layer")
    ax.set_ylabel("fraction of the dense layer kept")
    ax.set_title("kept per layer")
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, frameon=False)
