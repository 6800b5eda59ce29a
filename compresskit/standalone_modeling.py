"""Modeling code for a model pruned by compresskit, so that it loads without compresskit:

    AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True)

`compresskit prune --standalone` (or `compresskit.save(..., standalone=True)`) copies this file
into the model folder as modeling_compresskit.py and names its classes in config.json's
`auto_map`. config.json's `per_layer_config` gives each layer's head count and FFN width; a
class here builds the transformers model at the dense shape the rest of config.json describes,
then narrows every layer's projections to those widths before from_pretrained loads the
weights (which were saved at exactly those shapes), and replaces the attention of a layer with
no heads left by one that adds only the output projection's bias (what the dense model
computes with every head of that layer masked).

It imports only torch and transformers: it is a copy of what compresskit's own loader does
(compresskit/io.py with the architecture adapters in compresskit/arch/), kept short, and tested
to give exactly compresskit.load's outputs for every architecture and task head
(tests/test_hf.py). Weights still load from model.safetensors only.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import transformers
from torch import nn

# model_type -> (attention module path, output projection path, FFN up path, FFN down path,
# (q, k, v names), the config's names for one layer's head count and FFN width)
LAYOUTS: dict[str, tuple[str, str, str, str, tuple[str, str, str], tuple[str, str]]] = {
    "bert": (
        "attention.self",
        "attention.output.dense",
        "intermediate.dense",
        "output.dense",
        ("query", "key", "value"),
        ("num_attention_heads", "intermediate_size"),
    ),
    "distilbert": (
        "attention",
        "attention.out_lin",
        "ffn.lin1",
        "ffn.lin2",
        ("q_lin", "k_lin", "v_lin"),
        ("n_heads", "hidden_dim"),
    ),
}
LAYOUTS["roberta"] = LAYOUTS["bert"]


class HeadlessAttention(nn.Module):
    """A layer's attention with every head pruned: an empty context (BERT: the output
    projection, a Linear with no inputs, then adds its bias) or the output projection's bias
    itself (DistilBERT, whose attention module holds the output projection)."""

    def __init__(self, attention: nn.Module, names: tuple[str, str, str], out: str | None):
        super().__init__()
        for name in (*names, *([out] if out else [])):
            setattr(self, name, getattr(attention, name))  # same state-dict keys
        self.out = out
        self.attention_head_size = attention.attention_head_size

    def forward(self, hidden_states: torch.Tensor, *args: Any, **kwargs: Any) -> tuple[Any, None]:
        empty = hidden_states.new_zeros(*hidden_states.shape[:-1], 0)
        return (getattr(self, self.out)(empty) if self.out else empty), None


def _module(root: nn.Module, path: str) -> Any:
    for name in path.split("."):
        root = getattr(root, name)
    return root


def _narrow(linear: nn.Linear, *, n_in: int | None = None, n_out: int | None = None) -> None:
    """Give a Linear new (uninitialised) parameters of the pruned shape; from_pretrained fills
    them from the file."""
    n_in = linear.in_features if n_in is None else n_in
    n_out = linear.out_features if n_out is None else n_out
    linear.weight = nn.Parameter(linear.weight.new_empty(n_out, n_in))
    if linear.bias is not None:
        linear.bias = nn.Parameter(linear.bias.new_empty(n_out))
    linear.in_features, linear.out_features = n_in, n_out


def _narrow_layers(model: Any, config: Any) -> None:
    attention_path, out_path, up_path, down_path, qkv, fields = LAYOUTS[config.model_type]
    base = model.base_model
    layers = base.transformer.layer if config.model_type == "distilbert" else base.encoder.layer
    for layer, layer_config in zip(layers, config.per_layer_config, strict=True):
        heads, width = (getattr(layer_config, f) for f in fields)
        attention = _module(layer, attention_path)
        head_dim = attention.attention_head_size
        for name in qkv:
            _narrow(getattr(attention, name), n_out=heads * head_dim)
        _narrow(_module(layer, out_path), n_in=heads * head_dim)
        _narrow(_module(layer, up_path), n_out=width)
        _narrow(_module(layer, down_path), n_in=width)
        if hasattr(attention, "n_heads"):  # DistilBERT
            attention.n_heads = heads
        else:
            attention.num_attention_heads = heads
            attention.all_head_size = heads * head_dim
        if heads == 0:
            inside = out_path[len(attention_path) + 1 :]  # the output projection, if inside
            inside = inside if out_path.startswith(attention_path + ".") else ""
            parent, _, name = attention_path.rpartition(".")
            owner = _module(layer, parent) if parent else layer
            setattr(owner, name, HeadlessAttention(attention, qkv, inside or None))


def _dense_config(config: Any) -> Any:
    dense = copy.deepcopy(config)
    dense.per_layer_config = None
    dense.__dict__.pop("auto_map", None)
    return dense


def _pruned(base: Any) -> type:
    """`base` (a transformers model class) built with the per-layer widths of its config."""

    def __init__(self: Any, config: Any, *args: Any, **kwargs: Any) -> None:
        base.__init__(self, _dense_config(config), *args, **kwargs)
        _narrow_layers(self, config)

    return type(base.__name__, (base,), {"__init__": __init__, "__module__": __name__})


# One class per transformers class a compresskit folder may hold; auto_map names them.
for _name in (
    "BertModel",
    "BertForSequenceClassification",
    "BertForTokenClassification",
    "BertForQuestionAnswering",
    "BertForMaskedLM",
    "BertForPreTraining",
    "RobertaModel",
    "RobertaForSequenceClassification",
    "RobertaForMaskedLM",
    "DistilBertModel",
    "DistilBertForSequenceClassification",
    "DistilBertForQuestionAnswering",
    "DistilBertForMaskedLM",
):
    globals()[_name] = _pruned(getattr(transformers, _name))
