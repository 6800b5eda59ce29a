"""ONNX Runtime side of the export: sessions, fused graphs for pruned models, int8 weights.

ORT's transformer optimizer fuses a BERT attention block only when it can read the block's head
count from the constant shape of the query Reshape. transformers 5 exports that shape as
`(batch, seq, -1, head_dim)`, computed at run time, so the optimizer either fuses nothing
(`num_heads=0`) or, given one global `num_heads`, fuses every layer with that count: silently
wrong for a pruned model whose layers keep different numbers of heads (docs/library-pitfalls.md).

`optimize` therefore first writes each layer's own head count into the graph
(`pin_head_counts`): the query/key/value Reshapes of layer l get the constant shape
`[0, 0, heads_l, head_dim]` and its context Reshape `[0, 0, heads_l * head_dim]`. `heads_l` is
read from the width of that block's projection weights in the graph and must equal the model's
own head count for the layer. Then the optimizer runs with `num_heads=0` (read per layer, never
one global count) and every fused Attention node is checked against the layer it replaced.
Whatever cannot be proved raises `FusionRejected`, and the caller keeps the unfused graph.
"""

from __future__ import annotations

import logging
import re
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from compresskit._optional import import_extra, missing_extra

try:
    import onnx
    from onnx import NodeProto, numpy_helper
except ImportError as err:  # the onnx extra is optional: one line, not a traceback
    raise missing_extra("onnx", "ONNX export", err) from None

logger = logging.getLogger(__name__)

# Fused operators counted in reports, in the order they are shown.
FUSED_OPS = (
    "EmbedLayerNormalization",
    "Attention",
    "MultiHeadAttention",
    "SkipLayerNormalization",
    "BiasGelu",
    "FastGelu",
    "Gelu",
)
ATTENTION_OPS = ("Attention", "MultiHeadAttention")
# Dynamic int8 quantisation covers the weights of the linear layers, fused attention included.
INT8_OPS = ("MatMul", "Attention")

# Scope names written by the TorchScript exporter: "/bert/encoder/layer.3/attention/...".
_LAYER_SCOPE = re.compile(r"(?:^|/)layer\.(\d+)/")


class FusionRejected(Exception):
    """The fused graph cannot be proved to compute what the model computes."""


@dataclass(frozen=True)
class GraphLayout:
    """What the graph must show per layer: the model's head counts and head size."""

    heads_per_layer: tuple[int, ...]
    head_dim: int


# --- sessions ----------------------------------------------------------------------------------
def session(path: Path, *, threads: int = 1) -> Any:
    """A CPU InferenceSession with all of ORT's own graph optimisations on, as deployed."""
    onnxruntime = import_extra("onnxruntime", "ONNX export")
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run(sess: Any, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every output of `sess`, by name."""
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, feeds), strict=True))


# --- reading the graph -------------------------------------------------------------------------
class _Graph:
    """Producer / consumer look-ups over one ONNX graph."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self.model = model
        self.producer: dict[str, NodeProto] = {}
        self.consumers: dict[str, list[NodeProto]] = defaultdict(list)
        for node in model.graph.node:
            for name in node.output:
                self.producer[name] = node
            for name in node.input:
                self.consumers[name].append(node)
        self.initializers = {t.name: t for t in model.graph.initializer}
        self._lengths: dict[str, int] | None = None

    def constant(self, name: str) -> np.ndarray | None:
        """The value of an initializer or Constant output; None when computed at run time."""
        if name in self.initializers:
            return numpy_helper.to_array(self.initializers[name])
        node = self.producer.get(name)
        if node is not None and node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    return numpy_helper.to_array(attr.t)
        return None

    def up(
        self, tensor: str, target: str, through: Sequence[str], depth: int = 6
    ) -> NodeProto | None:
        """The nearest `target` node above `tensor`, passing only through `through` ops."""
        frontier = [tensor]
        for _ in range(depth):
            parents = [self.producer[t] for t in frontier if t in self.producer]
            for node in parents:
                if node.op_type == target:
                    return node
            frontier = [i for n in parents if n.op_type in through for i in n.input if i]
        return None

    def down(
        self, tensor: str, target: str, through: Sequence[str], depth: int = 4
    ) -> NodeProto | None:
        """The nearest `target` node below `tensor`, passing only through `through` ops."""
        frontier = [tensor]
        for _ in range(depth):
            children = [c for t in frontier for c in self.consumers.get(t, [])]
            for node in children:
                if node.op_type == target:
                    return node
            frontier = [o for n in children if n.op_type in through for o in n.output]
        return None

    def projection_width(self, tensor: str) -> int | None:
        """Output width of the Linear (MatMul by a weight, then maybe Add bias) giving `tensor`."""
        matmul = self.up(tensor, "MatMul", through=("Add",), depth=2)
        if matmul is None or matmul.input[1] not in self.initializers:
            return None
        return int(self.initializers[matmul.input[1]].dims[-1])

    def length(self, name: str) -> int | None:
        """The static length of a 1-D tensor (a shape), from ONNX shape inference."""
        if self._lengths is None:
            inferred = onnx.shape_inference.infer_shapes(self.model)
            self._lengths = {}
            for info in inferred.graph.value_info:
                dims = info.type.tensor_type.shape.dim
                if len(dims) == 1 and dims[0].HasField("dim_value"):
                    self._lengths[info.name] = int(dims[0].dim_value)
        return self._lengths.get(name)


# --- attention blocks and their head counts ------------------------------------------------------
@dataclass(frozen=True)
class AttentionBlock:
    """One exported self-attention block.

    q, k, v reshape (B, T, heads * head_dim) -> (B, T, heads, head_dim); `context` reshapes
    (B, T, heads, head_dim) -> (B, T, heads * head_dim) after the weighted sum.
    """

    q: NodeProto
    k: NodeProto
    v: NodeProto
    context: NodeProto
    width: int  # heads * head_dim: the output width of the q, k and v projections
    scale: float | None  # the constant the scores q·kᵀ are multiplied by
    scope_layer: int | None  # the layer index in the exporter's node names, if any


def _block_around(g: _Graph, softmax: NodeProto) -> AttentionBlock:
    # scores = (q @ kᵀ) * scale + mask -> Softmax -> probs @ v
    qk = g.up(softmax.input[0], "MatMul", through=("Add", "Mul", "Div", "Where", "Cast"))
    pv = g.down(softmax.output[0], "MatMul", through=("Cast", "Dropout", "Identity"))
    if qk is None or pv is None:
        raise FusionRejected(f"Softmax {softmax.name!r} is not between a q·kᵀ and a ·v MatMul")
    q = g.up(qk.input[0], "Reshape", through=("Transpose",))
    k = g.up(qk.input[1], "Reshape", through=("Transpose",))
    v = g.up(pv.input[1], "Reshape", through=("Transpose",))
    context = g.down(pv.output[0], "Reshape", through=("Transpose",))
    if q is None or k is None or v is None or context is None:
        raise FusionRejected(f"the attention around {softmax.name!r} lacks its q/k/v Reshapes")
    widths = {g.projection_width(r.input[0]) for r in (q, k, v)}
    width = widths.pop() if len(widths) == 1 else None
    if width is None:
        raise FusionRejected(f"the q/k/v projections around {softmax.name!r} differ in width")
    return AttentionBlock(q, k, v, context, width, _scores_scale(g, qk), _scope_layer(qk))


def _scores_scale(g: _Graph, qk: NodeProto) -> float | None:
    for node in g.consumers.get(qk.output[0], []):
        if node.op_type in ("Mul", "Div"):
            value = g.constant(node.input[1])
            if value is not None and value.size == 1:
                scalar = float(value.reshape(-1)[0])
                return scalar if node.op_type == "Mul" else 1.0 / scalar
    return None


def _scope_layer(node: NodeProto) -> int | None:
    for name in (node.name, *node.output):
        match = _LAYER_SCOPE.search(name)
        if match:
            return int(match.group(1))
    return None


def pin_head_counts(model: onnx.ModelProto, layout: GraphLayout) -> dict[str, int]:
    """Give every attention Reshape of `model` a constant shape holding its layer's head count.

    Blocks are matched to the layers that have heads, in order, and each match is checked: the
    block's projection width must be heads_l * head_dim (and its scope name, when it has one,
    must name layer l). Rewriting `(B, T, -1, d)` as `[0, 0, heads_l, d]` is then exact:
    Reshape's 0 copies B and T from its input (B, T, heads_l * d), and -1 could only be heads_l.

    Returns:
        For each block, the name of its context output (what a fused Attention node outputs)
        mapped to the layer index.
    """
    g = _Graph(model)
    blocks = [_block_around(g, n) for n in model.graph.node if n.op_type == "Softmax"]
    with_heads = [(i, h) for i, h in enumerate(layout.heads_per_layer) if h > 0]
    if len(blocks) != len(with_heads):
        raise FusionRejected(
            f"the graph has {len(blocks)} attention blocks but the model has "
            f"{len(with_heads)} layers with heads"
        )
    d = layout.head_dim
    owners = {}
    for block, (layer, heads) in zip(blocks, with_heads, strict=True):
        _check_block(block, layer, heads, d)
        for reshape in (block.q, block.k, block.v):
            _pin_shape(g, reshape, [0, 0, heads, d], accepted_tails=([-1, d], [heads, d]))
        _pin_shape(g, block.context, [0, 0, heads * d], accepted_tails=([-1], [heads * d]))
        owners[block.context.output[0]] = layer
    return owners


def _check_block(block: AttentionBlock, layer: int, heads: int, head_dim: int) -> None:
    if block.scope_layer not in (None, layer):
        raise FusionRejected(
            f"layer {layer}: the graph's next attention block is named for layer "
            f"{block.scope_layer}"
        )
    if block.width != heads * head_dim:
        raise FusionRejected(
            f"layer {layer}: its projections are {block.width} wide in the graph, "
            f"not {heads} heads x {head_dim}"
        )
    # ORT's Attention scales scores by 1/sqrt(head_size); the model must do the same.
    if block.scale is None or not np.isclose(block.scale, head_dim**-0.5, rtol=1e-5):
        raise FusionRejected(
            f"layer {layer}: scores are scaled by {block.scale}, not 1/sqrt({head_dim})"
        )


def _pin_shape(
    g: _Graph, reshape: NodeProto, shape: list[int], accepted_tails: Sequence[list[int]]
) -> None:
    """Replace a Reshape's shape input by the constant `shape`, after checking that the
    original has the same length, a tail in `accepted_tails` and nothing constant before the
    tail except 0 ("copy this dimension")."""
    entries = _shape_entries(g, reshape.input[1])
    if any(a.name == "allowzero" and a.i for a in reshape.attribute) or entries is None:
        raise FusionRejected(f"cannot read the shape of Reshape {reshape.name!r}")
    tail_length = len(accepted_tails[0])
    lead, tail = entries[:-tail_length], entries[-tail_length:]
    if (
        len(entries) != len(shape)
        or tail not in accepted_tails
        or any(e not in (None, 0) for e in lead)
    ):
        raise FusionRejected(
            f"Reshape {reshape.name!r} has shape {entries} (None: computed), "
            f"expected a computed batch and sequence and {accepted_tails[0]}"
        )
    name = f"pinned_shape_{len(g.model.graph.initializer)}"
    g.model.graph.initializer.append(numpy_helper.from_array(np.array(shape, np.int64), name))
    reshape.input[1] = name


def _shape_entries(g: _Graph, shape: str) -> list[int | None] | None:
    """A Reshape's shape input, entry by entry: ints where constant, None where computed at
    run time (`(*x.shape[:-1], -1, d)` is exported as Concat(Slice(Shape(x)), [-1], [d]))."""
    value = g.constant(shape)
    if value is not None:
        return [int(x) for x in value.reshape(-1)]
    concat = g.producer.get(shape)
    if concat is None or concat.op_type != "Concat":
        return None
    entries: list[int | None] = []
    for piece in concat.input:
        piece_value = g.constant(piece)
        if piece_value is not None:
            entries += [int(x) for x in piece_value.reshape(-1)]
            continue
        length = g.length(piece)
        if length is None or g.up(piece, "Shape", through=_SHAPE_ARITHMETIC) is None:
            return None  # not derived from the input's run-time shape
        entries += [None] * length
    return entries


_SHAPE_ARITHMETIC = ("Gather", "Slice", "Unsqueeze", "Squeeze", "Cast", "Concat")


# --- the optimizer -------------------------------------------------------------------------------
@dataclass(frozen=True)
class FusionReport:
    """Fused operators per layer (and outside the layers: embeddings, task head)."""

    heads_per_layer: tuple[int, ...]
    per_layer: tuple[dict[str, int], ...]
    outside_layers: dict[str, int]

    @property
    def unfused_attention(self) -> list[int]:
        """Layers that have heads but kept unfused attention."""
        return [
            i
            for i, (heads, ops) in enumerate(zip(self.heads_per_layer, self.per_layer, strict=True))
            if heads and not any(ops.get(op) for op in ATTENTION_OPS)
        ]

    def total(self) -> dict[str, int]:
        counts: Counter[str] = Counter(self.outside_layers)
        for ops in self.per_layer:
            counts.update(ops)
        return {op: counts[op] for op in FUSED_OPS if counts[op]}

    def to_dict(self) -> dict[str, Any]:
        return {
            "per_layer": [
                {"layer": i, "heads": heads, **ops}
                for i, (heads, ops) in enumerate(
                    zip(self.heads_per_layer, self.per_layer, strict=True)
                )
            ],
            "outside_layers": self.outside_layers,
            "total": self.total(),
        }


def optimize(source: Path, target: Path, layout: GraphLayout) -> FusionReport:
    """Fuse `source` with ORT's transformer optimizer, head counts pinned per layer, and write
    it to `target`. Raises FusionRejected when the result cannot be proved right."""
    model = onnx.load(str(source))
    owners = pin_head_counts(model, layout)
    # The optimizer gets a file: given a ModelProto it moves every initializer out of the
    # graph, and its shape inference then cannot read the pinned shapes.
    pinned = target.with_name(target.stem + ".pinned.onnx")
    onnx.save(model, str(pinned))
    try:
        fused = _run_optimizer(pinned)
    finally:
        pinned.unlink()
    report = fusion_report(fused, owners, layout)
    onnx.save(fused, str(target))
    return report


def _run_optimizer(path: Path) -> onnx.ModelProto:
    from onnxruntime.transformers.optimizer import FusionOptions, optimize_model

    options = FusionOptions("bert")
    # bert's default mask format turns the mask into one length per row, which is right only
    # for right padding; the raw mask is right for any mask.
    options.use_raw_attention_mask(True)
    try:
        # The optimizer warns when the Attention input width differs from heads * head_dim,
        # which it always does after head pruning (docs/library-pitfalls.md); the fusion is right.
        with _without("fusion_attention", "Input hidden size"):
            # num_heads=0, hidden_size=0: read per layer from the pinned shapes. One global
            # count would be applied to every layer (wrong for uneven heads).
            optimizer = optimize_model(
                str(path),
                model_type="bert",
                num_heads=0,
                hidden_size=0,
                optimization_options=options,
            )
    except Exception as err:  # a third-party graph rewriter: any failure means "keep unfused"
        raise FusionRejected(f"ORT's optimizer failed: {type(err).__name__}: {err}") from err
    return optimizer.model


class _DropMessages(logging.Filter):
    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefix)


@contextmanager
def _without(logger_name: str, prefix: str) -> Iterator[None]:
    """Drop the records of one logger whose message starts with `prefix`."""
    target, drop = logging.getLogger(logger_name), _DropMessages(prefix)
    target.addFilter(drop)
    try:
        yield
    finally:
        target.removeFilter(drop)


def fusion_report(
    model: onnx.ModelProto, owners: dict[str, int], layout: GraphLayout
) -> FusionReport:
    """Count fused operators per layer, checking each fused attention against its layer.

    Args:
        owners: context output name -> layer, from `pin_head_counts` (a fused Attention node
            takes over the output of the block it replaces).
    """
    g = _Graph(model)
    per_layer: list[Counter[str]] = [Counter() for _ in layout.heads_per_layer]
    outside: Counter[str] = Counter()
    for node in model.graph.node:
        if node.op_type not in FUSED_OPS:
            continue
        if node.op_type in ATTENTION_OPS:
            layer = owners.get(node.output[0])
            if layer is None:
                raise FusionRejected(f"fused {node.op_type} {node.name!r} replaced no known block")
            _check_fused_attention(g, node, layer, layout)
        else:
            layer = _node_layer(g, node)
        (per_layer[layer] if layer is not None else outside)[node.op_type] += 1
    return FusionReport(
        layout.heads_per_layer,
        tuple(_ordered(c) for c in per_layer),
        _ordered(outside),
    )


def _ordered(counts: Counter[str]) -> dict[str, int]:
    return {op: counts[op] for op in FUSED_OPS if counts[op]}


def _check_fused_attention(g: _Graph, node: NodeProto, layer: int, layout: GraphLayout) -> None:
    heads, d = layout.heads_per_layer[layer], layout.head_dim
    num_heads = next((a.i for a in node.attribute if a.name == "num_heads"), None)
    if num_heads != heads:
        raise FusionRejected(
            f"layer {layer}: the fused {node.op_type} has num_heads={num_heads}, "
            f"the layer has {heads} heads"
        )
    if node.op_type == "Attention":
        weight = g.initializers.get(node.input[1])
        if weight is None or weight.dims[-1] != 3 * heads * d:
            raise FusionRejected(
                f"layer {layer}: the fused Attention's q/k/v weight is not 3 x {heads} x {d} wide"
            )


def _node_layer(g: _Graph, node: NodeProto) -> int | None:
    """The layer a fused node belongs to, from the exporter's scope names of the tensors it
    writes (or, failing that, reads): "/bert/encoder/layer.2/output/LayerNorm/..." -> 2."""
    inputs = [i for i in node.input if i and i not in g.initializers]
    for name in (*node.output, *inputs, node.name):
        match = _LAYER_SCOPE.search(name)
        if match:
            return int(match.group(1))
    return None


# --- int8 ----------------------------------------------------------------------------------
def quantize_int8(source: Path, target: Path, *, per_channel: bool) -> None:
    """Dynamic quantisation: int8 weights for the linear layers (activations quantised at run
    time); embeddings, LayerNorm and the rest stay float32."""
    model = onnx.load(str(source))
    # ORT's quantiser advises (on the root logger) a pre-processing step meant for static
    # quantisation of CNNs: not relevant to dynamic int8 of a transformer graph.
    with _without("", "Please consider to run pre-processing"):
        _quantize_dynamic(model, target, per_channel)


def _quantize_dynamic(model: onnx.ModelProto, target: Path, per_channel: bool) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(
        model,
        target,
        op_types_to_quantize=list(INT8_OPS),
        per_channel=per_channel,
        weight_type=QuantType.QInt8,
        nodes_to_exclude=_empty_weight_nodes(model),
        # ONNX shape inference gives no types past ORT's fused (com.microsoft) nodes; every
        # tensor the quantiser asks about in a float32 graph is float32.
        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
    )


def _empty_weight_nodes(model: onnx.ModelProto) -> list[str]:
    """Nodes whose weight has no elements (a layer pruned to no heads or no FFN neurons):
    nothing to quantise, and a quantisation range cannot be taken over an empty tensor."""
    sizes = {t.name: int(np.prod(t.dims)) for t in model.graph.initializer}
    return [
        node.name
        for node in model.graph.node
        if node.op_type in INT8_OPS and any(sizes.get(i) == 0 for i in node.input[1:2])
    ]
