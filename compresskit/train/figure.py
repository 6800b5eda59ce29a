"""The run's figure: how the mask settled (distance against step, ticket marked) and what was
kept per layer. Drawn with matplotlib's object API on the Agg canvas, so it needs no display
and leaves pyplot's global state alone."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from compresskit.stats import ModelStats

if TYPE_CHECKING:
    from compresskit.train.run import SearchRecord


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
        _plot_distances(axes[0], search)
    _plot_kept(axes[-1], after, dense)
    figure.savefig(path, dpi=120)


def _plot_distances(ax: Any, search: SearchRecord) -> None:
    """The largest distance from the newest mask to the older ones in the window, per kind."""
    records = [r for r in search.history if r["max_distance"] is not None]
    steps = [r["step"] for r in records]
    for kind, style in (("heads", "-o"), ("ffn", "-s")):
        ax.plot(steps, [max(r[kind]) for r in records], style, markersize=3, label=kind)
    ax.axhline(search.eps, color="grey", linestyle="--", linewidth=1, label=f"eps {search.eps}")
    if search.ticket_step is not None:
        label = "ticket" if search.state == "drawn" else "capped (no ticket)"
        ax.axvline(
            search.ticket_step,
            color="red",
            linewidth=1,
            label=f"{label}, step {search.ticket_step}",
        )
    ax.set_xlabel("optimizer step")
    ax.set_ylabel(f"max mask distance in window of {search.window}")
    ax.set_title("early-bird search")
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
