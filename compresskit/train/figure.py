"""The run's figure: what a training-time strategy watched while it searched (earlybird: mask
distance against step, the ticket marked) and what was kept per layer. Drawn with matplotlib's
object API on the Agg canvas, so it needs no display and leaves pyplot's global state alone."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from compresskit.stats import ModelStats

if TYPE_CHECKING:
    from compresskit.strategies.base import SearchRecord


def write_figure(
    path: Path, search: SearchRecord | None, after: ModelStats, dense: ModelStats
) -> None:
    """A PNG with the distance panel (only for a search) and the kept-per-layer panel."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    panels = 2 if search is not None else 1
    figure = Figure(figsize=(5.5 * panels, 4), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, panels, squeeze=False)[0]
    if search is not None:
        _plot_search(axes[0], search)
    _plot_kept(axes[-1], after, dense)
    figure.savefig(path, dpi=120)


def _plot_search(ax: Any, search: SearchRecord) -> None:
    """What the strategy watched while it searched (`search.plot` says which series and what
    line to draw), and the step it decided at. A series value that is a list (one distance
    per older mask in earlybird's window) is drawn as its largest."""
    plot = search.plot
    for series, style in zip(plot.get("series", []), ("-o", "-s", "-^", "-v"), strict=False):
        points = [
            (r["step"], max(v) if isinstance(v, list) else v)
            for r in search.history
            if (v := r.get(series)) not in (None, [])
        ]
        ax.plot([p[0] for p in points], [p[1] for p in points], style, markersize=3, label=series)
    if plot.get("threshold") is not None:
        ax.axhline(
            plot["threshold"], color="grey", linestyle="--", linewidth=1, label=plot.get("label")
        )
    if search.decided_at is not None:
        ax.axvline(
            search.decided_at,
            color="red",
            linewidth=1,
            label=f"{plot.get('decision', search.state)}, step {search.decided_at}",
        )
    ax.set_xlabel("optimizer step")
    ax.set_ylabel(plot.get("ylabel", ""))
    ax.set_title(plot.get("title", "search"))
    ax.legend(fontsize=8)


def _plot_kept(ax: Any, after: ModelStats, dense: ModelStats) -> None:
    """Fraction of heads and of FFN neurons kept in each layer."""
    layers = [s.index for s in after.layers]
    heads = [a.heads / max(d.heads, 1) for a, d in zip(after.layers, dense.layers, strict=True)]
    ffn = [
        a.ffn_width / max(d.ffn_width, 1) for a, d in zip(after.layers, dense.layers, strict=True)
    ]
    width = 0.4
    ax.bar([i - width / 2 for i in layers], heads, width, label="heads kept")
    ax.bar([i + width / 2 for i in layers], ffn, width, label="FFN neurons kept")
    ax.set_xticks(layers)
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("layer")
    ax.set_ylabel("fraction of the dense layer kept")
    ax.set_title("kept per layer")
    ax.legend(fontsize=8)
