"""Tokenised splits for the Trainer: one dict of token ids (unpadded) and a label per example.
Batches are padded to their own longest example by the collator (dynamic padding), which on
short GLUE sentences is several times cheaper than padding everything to max_seq_len."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
from transformers import DataCollatorWithPadding

from compresskit.train.data import Example, TaskData


class EncodedSplit(torch.utils.data.Dataset):
    """Tokenised examples; item i is {"input_ids", "attention_mask", [...], "labels"}."""

    def __init__(self, features: list[dict[str, Any]]) -> None:
        self.features = features

    def __len__(self) -> int:
        return len(self.features)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.features[index]

    @property
    def labels(self) -> list[int]:
        return [f["labels"] for f in self.features]


def encode_split(
    data: TaskData, split: Literal["train", "dev"], tokenizer: Any, max_seq_len: int
) -> EncodedSplit:
    """Tokenise one split, truncating each example (both texts of a pair) to `max_seq_len`."""
    examples: Sequence[Example] = data.train if split == "train" else data.dev
    texts = [e.text for e in examples]
    pairs = [e.text_pair or "" for e in examples] if data.is_pair else None
    encoded = tokenizer(texts, pairs, truncation=True, max_length=max_seq_len)
    labels = data.label_ids(split)
    keys = list(encoded.keys())
    features = [
        {**{k: encoded[k][i] for k in keys}, "labels": labels[i]} for i in range(len(examples))
    ]
    return EncodedSplit(features)


def collator(tokenizer: Any) -> DataCollatorWithPadding:
    """Pads each batch to its longest example."""
    return DataCollatorWithPadding(tokenizer, return_tensors="pt")
