"""Tiny, fully synthetic fine-tuning inputs for tests, smoke benchmarks and examples: a
word-level tokenizer, a random-init BERT saved like a hub checkpoint, SST-2-format files
whose label is the polarity of one sentiment word, and raw text in the same words for
pre-training. Nothing here is downloaded."""

from __future__ import annotations

import random
from pathlib import Path

import transformers

POSITIVE = ["good", "great", "fine", "lovely", "superb", "nice"]
NEGATIVE = ["bad", "awful", "poor", "dull", "terrible", "weak"]
FILLER = ["the", "movie", "was", "a", "film", "plot", "and", "it", "really"]
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def write_tiny_tokenizer(folder: Path) -> transformers.PreTrainedTokenizerBase:
    """A word-level tokenizer over the task's words, saved like any hub tokenizer."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    vocab = {t: i for i, t in enumerate([*SPECIAL, *POSITIVE, *NEGATIVE, *FILLER])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", 2), ("[SEP]", 3)],
    )
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="[PAD]",
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )
    fast.save_pretrained(folder)
    return fast


def write_tiny_checkpoint(
    folder: Path, layers: int = 2, heads: int = 4, ffn: int = 16, dropout: float = 0.1
) -> Path:
    """A seeded random-init BertModel (no task head, like MiniLM) with its tokenizer.
    `dropout=0` makes training a function of the data order alone (no random masks), for
    tests that compare two ways of running the same training."""
    tokenizer = write_tiny_tokenizer(folder)
    config = transformers.BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=heads * 8,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=ffn,
        max_position_embeddings=32,
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
    )
    transformers.set_seed(0)
    transformers.BertModel(config).save_pretrained(folder)
    return folder


def write_tiny_sentiment(folder: Path, n_train: int = 128, n_dev: int = 32, seed: int = 0) -> Path:
    """SST-2-format train.tsv / dev.tsv: a few filler words and one sentiment word, whose
    polarity is the label."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for split, size in (("train", n_train), ("dev", n_dev)):
        rows = ["sentence\tlabel"]
        for _ in range(size):
            label = rng.random() < 0.5
            words = [rng.choice(FILLER) for _ in range(rng.randint(2, 6))]
            words.insert(rng.randint(0, len(words)), rng.choice(POSITIVE if label else NEGATIVE))
            rows.append(f"{' '.join(words)}\t{int(label)}")
        (folder / f"{split}.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return folder


def write_tiny_text(path: Path, lines: int = 300, seed: int = 0) -> Path:
    """Raw text for pre-training, one "paragraph" per line, in the tiny tokenizer's words.
    Each line repeats its sentiment word's polarity (a pattern a masked LM can learn)."""
    rng = random.Random(seed)
    rows = []
    for _ in range(lines):
        words = POSITIVE if rng.random() < 0.5 else NEGATIVE
        sentence = [rng.choice(FILLER) for _ in range(rng.randint(3, 8))]
        for _ in range(2):
            sentence.insert(rng.randint(0, len(sentence)), rng.choice(words))
        rows.append(" ".join(sentence))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path
