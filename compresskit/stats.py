"""Parameters and MACs, per layer and in total, for dense and pruned models.

MACs are counted analytically for one sequence of `seq_len` tokens through the encoder layers
(the part pruning changes): per layer,
    projections  4 · T · hidden · (heads · head_dim)      (query, key, value, output)
    attention    2 · heads · T² · head_dim                (scores QKᵀ and the weighted sum AV)
    FFN          2 · T · hidden · ffn_width
Embedding look-ups have no MACs; the task head is excluded because pruning does not touch it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from torch import nn

from compresskit.arch import get_adapter


@dataclass(frozen=True)
class LayerStats:
    index: int
    heads: int
    head_dim: int
    ffn_width: int
    params: int
    macs: int


@dataclass(frozen=True)
class ModelStats:
    seq_len: int
    params: int
    macs: int
    layers: tuple[LayerStats, ...]

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    def table(self, baseline: ModelStats | None = None) -> str:
        """A per-layer text table; with `baseline`, the totals show the reduction."""
        header = (
            f"{'layer':>5} {'heads':>5} {'head_dim':>8} {'ffn':>6} {'params':>11} "
            f"{'MACs@' + str(self.seq_len):>12}"
        )
        rows = [
            f"{s.index:>5} {s.heads:>5} {s.head_dim:>8} {s.ffn_width:>6} "
            f"{s.params:>11,} {_mega(s.macs):>12}"
            for s in self.layers
        ]
        total = (
            f"{'total':>5} {sum(s.heads for s in self.layers):>5} {'':>8} "
            f"{sum(s.ffn_width for s in self.layers):>6} {self.params:>11,} "
            f"{_mega(self.macs):>12}"
        )
        lines = [header, *rows, total]
        if baseline is not None:
            lines.append(
                f"params {baseline.params:,} -> {self.params:,} "
                f"({baseline.params / max(self.params, 1):.2f}x smaller); "
                f"encoder MACs {_mega(baseline.macs)} -> {_mega(self.macs)} "
                f"({baseline.macs / max(self.macs, 1):.2f}x fewer)"
            )
        return "\n".join(lines)


def _mega(macs: int) -> str:
    return f"{macs / 1e6:,.1f}M"


def layer_macs(seq_len: int, hidden: int, heads: int, head_dim: int, ffn_width: int) -> int:
    width = heads * head_dim
    return (
        4 * seq_len * hidden * width
        + 2 * heads * seq_len**2 * head_dim
        + 2 * seq_len * hidden * ffn_width
    )


def count_params(module: nn.Module) -> int:
    """Distinct parameters (tied weights once)."""
    return sum(p.numel() for p in {id(p): p for p in module.parameters()}.values())


def dense_stats(model: nn.Module, seq_len: int = 128) -> ModelStats:
    """The stats of the dense model that `model` was pruned from (itself, if never pruned).

    Each removed head had 3 rows (with bias) in query/key/value and `head_dim` columns in the
    output projection; each removed neuron a row (with bias) in the first FFN linear and a
    column in the second: that is what is added back.
    """
    adapter = get_adapter(model)
    hidden = adapter.hidden_size()
    _, heads, head_dim, ffn = adapter.config_shape(model.config)
    pruned = model_stats(model, seq_len)
    layers = []
    for s in pruned.layers:
        extra = (heads - s.heads) * (4 * hidden * head_dim + 3 * head_dim) + (ffn - s.ffn_width) * (
            2 * hidden + 1
        )
        layers.append(
            LayerStats(
                s.index,
                heads,
                head_dim,
                ffn,
                s.params + extra,
                layer_macs(seq_len, hidden, heads, head_dim, ffn),
            )
        )
    added = sum(d.params - s.params for d, s in zip(layers, pruned.layers, strict=True))
    return ModelStats(seq_len, pruned.params + added, sum(s.macs for s in layers), tuple(layers))


def model_stats(model: nn.Module, seq_len: int = 128) -> ModelStats:
    adapter = get_adapter(model)
    hidden = adapter.hidden_size()
    layers = []
    for i, layer in enumerate(adapter.layers()):
        heads, head_dim, ffn = (
            adapter.num_heads(layer),
            adapter.head_dim(layer),
            adapter.ffn_width(layer),
        )
        layers.append(
            LayerStats(
                i,
                heads,
                head_dim,
                ffn,
                count_params(layer),
                layer_macs(seq_len, hidden, heads, head_dim, ffn),
            )
        )
    return ModelStats(seq_len, count_params(model), sum(s.macs for s in layers), tuple(layers))
