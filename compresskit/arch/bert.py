"""BERT and RoBERTa: `layer.attention.self.{query,key,value}`, `layer.attention.output.dense`,
`layer.intermediate.dense`, `layer.output.dense` (RoBERTa copies BERT's modules verbatim; its
adapter differs in inputs, positions and the masked-LM head's name)."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import transformers
from torch import nn

from compresskit.arch.base import ArchAdapter, AttentionParts, FFNParts


class HeadlessBertSelfAttention(nn.Module):
    """Stands in for a BERT self-attention whose every head was pruned.

    It returns an empty context, shape (..., 0), so the output projection, a Linear with
    in_features == 0, adds only its bias: exactly what the dense model computes with every
    head masked. The zero-width query/key/value stay as children so the state dict keeps the
    same keys as any other layer.
    """

    def __init__(self, query: nn.Linear, key: nn.Linear, value: nn.Linear, head_size: int) -> None:
        super().__init__()
        self.query, self.key, self.value = query, key, value
        self.num_attention_heads = 0
        self.attention_head_size = head_size
        self.all_head_size = 0

    def forward(
        self, hidden_states: torch.Tensor, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, None]:
        return hidden_states.new_zeros(*hidden_states.shape[:-1], 0), None


class BertAdapter(ArchAdapter):
    model_types = ("bert",)
    model_classes: ClassVar[tuple[str, ...]] = (
        "BertModel",
        "BertForSequenceClassification",
        "BertForTokenClassification",
        "BertForQuestionAnswering",
        "BertForMaskedLM",
        "BertForPreTraining",
    )
    onnx_inputs: ClassVar[tuple[str, ...]] = ("input_ids", "attention_mask", "token_type_ids")
    mlm_head: ClassVar[str | None] = "cls"
    size_fields = (
        "num_hidden_layers",
        "num_attention_heads",
        "hidden_size",
        "intermediate_size",
        "vocab_size",
        "max_position_embeddings",
        "type_vocab_size",
    )

    @classmethod
    def tiny_config(cls, *, vocab: int, layers: int, heads: int, head_dim: int, ffn: int) -> Any:
        config_class: Any = transformers.AutoConfig.for_model(cls.model_types[0]).__class__
        return config_class(
            vocab_size=vocab,
            hidden_size=heads * head_dim,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            intermediate_size=ffn,
            max_position_embeddings=72,
            type_vocab_size=2,
            pad_token_id=1,
        )

    @classmethod
    def config_shape(cls, config: Any) -> tuple[int, int, int, int]:
        heads = config.num_attention_heads
        return (
            config.num_hidden_layers,
            heads,
            config.hidden_size // heads,
            config.intermediate_size,
        )

    def layers(self) -> list[Any]:
        return list(self.model.base_model.encoder.layer)

    def attention_module(self, layer: Any) -> Any:
        return layer.attention.self

    def attention_parts(self, layer: Any) -> AttentionParts:
        attn = layer.attention.self
        return AttentionParts(attn.query, attn.key, attn.value, layer.attention.output.dense)

    def ffn_parts(self, layer: Any) -> FFNParts:
        return FFNParts(layer.intermediate.dense, layer.output.dense)

    def set_head_count(self, layer: Any, num_heads: int) -> None:
        attn = layer.attention.self
        attn.num_attention_heads = num_heads
        attn.all_head_size = num_heads * attn.attention_head_size
        # `scaling` is 1/sqrt(head_dim) of the original head size: it must not change.

    def make_headless(self, layer: Any) -> None:
        attn = layer.attention.self
        if isinstance(attn, HeadlessBertSelfAttention):
            return
        layer.attention.self = HeadlessBertSelfAttention(
            attn.query, attn.key, attn.value, attn.attention_head_size
        )


class RobertaAdapter(BertAdapter):
    """RoBERTa: BERT's modules, no token types, positions numbered after the padding index."""

    model_types = ("roberta",)
    model_classes = ("RobertaModel", "RobertaForSequenceClassification", "RobertaForMaskedLM")
    onnx_inputs = ("input_ids", "attention_mask")
    mlm_head = "lm_head"

    @classmethod
    def max_positions(cls, config: Any) -> int:
        # Positions are numbered from pad_token_id + 1.
        return int(config.max_position_embeddings) - (int(config.pad_token_id or 0) + 1)
