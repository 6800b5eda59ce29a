"""Models for masked-LM pre-training and what follows it: a BERT of a given size built from
scratch, a masked-LM head on a checkpoint, and a classifier made from a pre-trained (possibly
pruned) compresskit model for fine-tuning.

`--config` sizes a BERT from scratch with four numbers, written `layers=4,hidden=256,heads=4,
ffn=1024`. Everything else is BERT-base's (GELU, dropout 0.1, 512 positions, 2 token types);
the vocabulary is the tokenizer's.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, fields
from typing import Any

import torch
import transformers
from accelerate.utils import extract_model_from_parallel

from compresskit.arch import get_adapter
from compresskit.errors import ConfigError, ModelFileError
from compresskit.io import physical_memory
from compresskit.loading import load_model

# Upper bounds that keep a typo from allocating a huge model (BERT-large is 24 / 1024 / 16 /
# 4096); far above anything that pre-trains on a CPU.
SIZE_LIMITS = {"layers": 48, "hidden": 8192, "heads": 128, "ffn": 32768}
MAX_POSITIONS = 512


@dataclass(frozen=True)
class ModelSize:
    """A BERT's size: encoder layers, hidden size, attention heads per layer, FFN width."""

    layers: int
    hidden: int
    heads: int
    ffn: int

    def __post_init__(self) -> None:
        for name, limit in SIZE_LIMITS.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= limit:
                raise ConfigError(
                    f"--config {name} must be an integer in [1, {limit}], got {value!r}"
                )
        if self.hidden % self.heads:
            raise ConfigError(
                f"--config hidden ({self.hidden}) must be a multiple of heads ({self.heads}): "
                "each head gets hidden / heads dimensions"
            )
        self._check_fits_in_memory()

    def encoder_params(self) -> int:
        """Parameters of the encoder layers: Q, K, V, output (4 h² + 4 h), FFN (2 h f + f + h),
        two LayerNorms (4 h). Embeddings and the head come on top."""
        h, f = self.hidden, self.ffn
        return self.layers * (4 * h * h + 4 * h + 2 * h * f + f + h + 4 * h)

    def _check_fits_in_memory(self) -> None:
        # Training holds the weights, their gradients and AdamW's two moments: 16 bytes each.
        needed, available = 16 * self.encoder_params(), physical_memory()
        if available is not None and needed > available:
            raise ConfigError(
                f"--config describes a BERT of {self.encoder_params() / 1e9:.3g}B encoder "
                f"parameters: training it needs at least {needed / 1e9:.3g} GB (weights, "
                f"gradients and AdamW's two moments), more than this machine's "
                f"{available / 1e9:.3g} GB; choose a smaller size"
            )

    @classmethod
    def parse(cls, spec: str) -> ModelSize:
        """Read `layers=4,hidden=256,heads=4,ffn=1024` (all four, any order)."""
        names = [f.name for f in fields(cls)]
        example = "layers=4,hidden=256,heads=4,ffn=1024"
        values: dict[str, int] = {}
        for item in (part.strip() for part in spec.split(",")):
            key, sep, value = (s.strip() for s in item.partition("="))
            if not sep or key not in names or key in values:
                what = "repeats" if key in values else "is not one of " + ", ".join(names)
                raise ConfigError(f"--config {item!r} {what}: write it as {example}")
            try:
                values[key] = int(value)
            except ValueError:
                raise ConfigError(f"--config {key} must be an integer, got {value!r}") from None
        missing = [n for n in names if n not in values]
        if missing:
            raise ConfigError(f"--config lacks {', '.join(missing)}: write it as {example}")
        return cls(**values)

    def bert_config(self, tokenizer: Any, max_seq_len: int) -> transformers.BertConfig:
        return transformers.BertConfig(
            vocab_size=len(tokenizer),
            hidden_size=self.hidden,
            num_hidden_layers=self.layers,
            num_attention_heads=self.heads,
            intermediate_size=self.ffn,
            max_position_embeddings=max(MAX_POSITIONS, max_seq_len),
            pad_token_id=tokenizer.pad_token_id or 0,
        )


def masked_lm_from_scratch(size: ModelSize, tokenizer: Any, max_seq_len: int, seed: int) -> Any:
    """A randomly initialised BertForMaskedLM (seeded) of `size` for `tokenizer`."""
    transformers.set_seed(seed)
    return transformers.BertForMaskedLM(size.bert_config(tokenizer, max_seq_len))


def load_masked_lm(model: str, *, trust_remote_code: bool, seed: int) -> Any:
    """A masked-LM model from a compresskit folder (a pruned one too), a transformers folder
    or a hub id; a checkpoint without an MLM head (MiniLM) gets a fresh, seeded one."""
    transformers.set_seed(seed)
    loaded = load_model(model, trust_remote_code, auto_class=transformers.AutoModelForMaskedLM)
    if not type(loaded).__name__.endswith("ForMaskedLM"):  # a compresskit folder of another head
        raise ConfigError(
            f"{model} is a {type(loaded).__name__}: pre-training with --task mlm needs a "
            "masked-LM model; start from the dense checkpoint or a compresskit mlm output"
        )
    return loaded


def classifier_from_pretrained(pretrained: Any, id2label: dict[int, str]) -> Any:
    """A sequence classifier with `pretrained`'s encoder (pruned shapes included) and a new
    head: the classifier is built dense, pruned to the same heads and neurons, then the
    encoder's weights are copied in. Only the head (and BERT's pooler, which a masked-LM
    model lacks) stay freshly initialised."""
    from compresskit.plan import PruningPlan
    from compresskit.pruner import prune

    config = copy.deepcopy(pretrained.config)
    config.num_labels = len(id2label)
    config.id2label, config.label2id = id2label, {v: k for k, v in id2label.items()}
    classifier = transformers.AutoModelForSequenceClassification.from_config(config)
    prune(classifier, PruningPlan.of_model(pretrained))
    encoder = pretrained.base_model.state_dict()
    missing, unexpected = classifier.base_model.load_state_dict(encoder, strict=False)
    if unexpected or any(not key.startswith("pooler.") for key in missing):
        raise ModelFileError(
            f"the pre-trained encoder does not fit a {type(classifier).__name__}: missing "
            f"{sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}"
        )
    return classifier


# --- the loss at masked positions only -----------------------------------------------------------
# The MLM head's vocabulary projection costs hidden x vocabulary MACs per token (256 x 30522
# is 7.8M, more than a small encoder), yet only the ~15% masked tokens have a label. The head
# works on each position alone, so running it on the masked positions only gives the same loss
# and gradients at a fraction of the cost. The adapter names the head when it is one module.


class MaskedLMTrainer(transformers.Trainer):
    """A Trainer whose loss runs the masked-LM head on the labelled (masked) positions only
    (models without a known single-module head run it everywhere) and is normalised by the
    masked tokens of the whole optimizer step."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # compute_loss divides by num_items_in_batch, the masked tokens of the step on every
        # process, so the Trainer must pass it and scale by the number of processes: DDP's
        # average of the gradients is then the mean over every masked token of the step, as
        # one process with the whole batch computes it (not a mean of per-process means).
        self.model_accepts_loss_kwargs = True

    def compute_loss(
        self,
        model: Any,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: Any = None,
    ) -> Any:
        loss = masked_positions_loss(model, inputs, num_items_in_batch)
        return (loss, {"loss": loss}) if return_outputs else loss


def masked_positions_loss(
    model: Any, inputs: dict[str, Any], num_items: Any = None
) -> torch.Tensor:
    """Cross-entropy summed over the positions whose label is not -100, divided by `num_items`
    (default: their number, which gives the model's own loss), with the head applied to those
    positions only. `model` may be wrapped (DDP): the forward pass goes through the wrapper,
    which must see it to average the gradients, and the head is found on the model inside."""
    inner = extract_model_from_parallel(model)
    labels = inputs["labels"]  # (batch, tokens), -100 where nothing is predicted
    picked = labels != -100
    features = {k: v for k, v in inputs.items() if k != "labels"}
    head_name = _mlm_head(inner)
    if head_name is None:
        logits = model(**features).logits[picked]
    else:
        head = getattr(inner, head_name)
        only_picked = head.register_forward_pre_hook(
            lambda _, args: (args[0][picked], *args[1:])  # (masked tokens, hidden)
        )
        try:
            logits = model(**features).logits  # (masked tokens, vocabulary)
        finally:
            only_picked.remove()
    total = torch.nn.functional.cross_entropy(logits.float(), labels[picked], reduction="sum")
    return total / (picked.sum() if num_items is None else num_items)


def _mlm_head(model: Any) -> str | None:
    """The attribute of `model`'s masked-LM head when the adapter knows it is one module."""
    if not type(model).__name__.endswith("ForMaskedLM"):
        return None
    return get_adapter(model).mlm_head
