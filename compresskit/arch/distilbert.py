"""DistilBERT: `layer.attention.{q_lin,k_lin,v_lin,out_lin}`, `layer.ffn.{lin1,lin2}`.
Unlike BERT, the output projection lives inside the attention module."""

from __future__ import annotations

from typing import Any

import torch
import transformers
from torch import nn

from compresskit.arch.base import ArchAdapter, AttentionParts, FFNParts


class HeadlessDistilBertSelfAttention(nn.Module):
    """Stands in for a DistilBERT attention whose every head was pruned: it returns the output
    projection's bias at every position (what the masked dense model computes). The
    zero-width projections stay as children so the state-dict keys do not change."""

    def __init__(
        self,
        q_lin: nn.Linear,
        k_lin: nn.Linear,
        v_lin: nn.Linear,
        out_lin: nn.Linear,
        head_size: int,
    ) -> None:
        super().__init__()
        self.q_lin, self.k_lin, self.v_lin, self.out_lin = q_lin, k_lin, v_lin, out_lin
        self.n_heads = 0
        self.attention_head_size = head_size

    def forward(
        self, hidden_states: torch.Tensor, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, None]:
        empty = hidden_states.new_zeros(*hidden_states.shape[:-1], 0)
        return self.out_lin(empty), None


class DistilBertAdapter(ArchAdapter):
    model_types = ("distilbert",)
    model_classes = (
        "DistilBertModel",
        "DistilBertForSequenceClassification",
        "DistilBertForQuestionAnswering",
        "DistilBertForMaskedLM",
    )
    size_fields = (
        "n_layers",
        "n_heads",
        "dim",
        "hidden_dim",
        "vocab_size",
        "max_position_embeddings",
    )
    hidden_and_heads = ("dim", "n_heads")
    layer_fields = ("n_heads", "hidden_dim")
    activation_field = "activation"

    @classmethod
    def config_shape(cls, config: Any) -> tuple[int, int, int, int]:
        return config.n_layers, config.n_heads, config.dim // config.n_heads, config.hidden_dim

    @classmethod
    def tiny_config(cls, *, vocab: int, layers: int, heads: int, head_dim: int, ffn: int) -> Any:
        return transformers.DistilBertConfig(
            vocab_size=vocab,
            dim=heads * head_dim,
            n_layers=layers,
            n_heads=heads,
            hidden_dim=ffn,
            max_position_embeddings=64,
        )

    def layers(self) -> list[Any]:
        return list(self.model.base_model.transformer.layer)

    def attention_module(self, layer: Any) -> Any:
        return layer.attention

    def attention_parts(self, layer: Any) -> AttentionParts:
        attn = layer.attention
        return AttentionParts(attn.q_lin, attn.k_lin, attn.v_lin, attn.out_lin)

    def ffn_parts(self, layer: Any) -> FFNParts:
        return FFNParts(layer.ffn.lin1, layer.ffn.lin2)

    def set_head_count(self, layer: Any, num_heads: int) -> None:
        layer.attention.n_heads = num_heads
        # `dim` stays the hidden size (the residual width); `scaling` keeps the original
        # 1/sqrt(head_dim).

    def make_headless(self, layer: Any) -> None:
        attn = layer.attention
        if isinstance(attn, HeadlessDistilBertSelfAttention):
            return
        layer.attention = HeadlessDistilBertSelfAttention(
            attn.q_lin, attn.k_lin, attn.v_lin, attn.out_lin, attn.attention_head_size
        )
