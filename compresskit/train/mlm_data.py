"""Raw text for masked-LM pre-training: read lines, hold out a seeded part, tokenise, cut
into blocks, and mask them.

`data` is a text file (one document or paragraph per line), several files joined by commas,
a folder (every `*.txt` in it, sorted by name) or `hf:NAME[:CONFIG]` (its "text" column; the
"validation" split is the held-out text when there is one). Blank lines are skipped. Without
a held-out split, a seeded 10% of the *lines* is held out before tokenising, so no block
mixes training and held-out text.

Each split is tokenised without special tokens, concatenated and cut into blocks of
`max_seq_len - 2` tokens framed by [CLS] ... [SEP] (the last, shorter block is dropped), so
every block is as long as training allows and looks like a fine-tuning input. Training blocks
are masked afresh in every batch (dynamic masking: 15% of tokens, of which 80% become [MASK],
10% a random token, 10% stay); held-out blocks are masked once, with the seed, so every
evaluation of every run scores the same positions.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transformers import DataCollatorForLanguageModeling, default_data_collator

from compresskit.errors import ConfigError
from compresskit.train.data import HUB_PREFIX, hold_out, load_hub, read_lines, text_encoding
from compresskit.train.encode import EncodedSplit

MLM_PROBABILITY = 0.15
TEXT_COLUMN = "text"


@dataclass(frozen=True)
class TextData:
    """Lines of text for training and for the held-out loss."""

    train: tuple[str, ...]
    held_out: tuple[str, ...]
    source: str  # one line for reports


def load_text(
    data: str, *, max_train_lines: int | None = None, seed: int = 0, encoding: str = "utf-8"
) -> TextData:
    """Read training and held-out lines from files, a folder or `hf:NAME[:CONFIG]`.

    Args:
        max_train_lines: keep this many training lines, drawn with `seed` and kept in file
            order; None keeps all.
        seed: which lines are held out (when the data has no held-out split) and the subset.
        encoding: of the text files (utf-8, latin-1, cp1252, ...).
    """
    codec = text_encoding(encoding)
    if data.startswith(HUB_PREFIX):
        train, held_out, origin = _hub_lines(data, seed)
    else:
        paths = _text_files(data)
        lines = [line for path in paths for line in _text_lines(path, codec)]
        if len(lines) < 2:
            raise ConfigError(
                f"{data} has {len(lines)} non-blank line(s): pre-training needs text, "
                "one document or paragraph per line"
            )
        train, held_out = hold_out(lines, seed, data)
        origin = f"{data} ({len(held_out)} of {len(lines)} lines held out, seed {seed})"
    if max_train_lines is not None and max_train_lines < len(train):
        keep = sorted(random.Random(seed).sample(range(len(train)), max_train_lines))
        origin += f"; train: {max_train_lines} of {len(train)} lines, seed {seed}"
        train = [train[i] for i in keep]
    return TextData(tuple(train), tuple(held_out), origin)


def _text_files(data: str) -> list[Path]:
    path = Path(data)
    if path.is_dir():
        files = sorted(path.glob("*.txt"))
        if not files:
            raise ConfigError(f"{path} holds no *.txt files: give text files or a folder of them")
        return files
    files = [Path(part) for part in data.split(",") if part]
    for file in files:
        if not file.is_file():
            raise ConfigError(
                f"text file {str(file)!r} does not exist: give one or more text files "
                f"(comma-separated), a folder of *.txt files or {HUB_PREFIX}NAME[:CONFIG]"
            )
    return files


def _text_lines(path: Path, encoding: str) -> list[str]:
    return [line.strip() for _, line in read_lines(path, encoding) if line.strip()]


def _hub_lines(ref: str, seed: int) -> tuple[list[str], list[str], str]:
    dataset = load_hub(ref)
    if "train" not in dataset:
        raise ConfigError(f"{ref} has no 'train' split (it has {', '.join(dataset)})")
    train = _hub_column(dataset["train"], f"{ref} train")
    if "validation" in dataset:
        return train, _hub_column(dataset["validation"], f"{ref} validation"), ref
    train, held_out = hold_out(train, seed, f"{ref} train")
    return train, held_out, f"{ref} ({len(held_out)} train lines held out, seed {seed})"


def _hub_column(split: Any, where: str) -> list[str]:
    if TEXT_COLUMN not in split.column_names:
        raise ConfigError(f"{where} has no {TEXT_COLUMN!r} column (it has {split.column_names})")
    return [line.strip() for line in split[TEXT_COLUMN] if line and line.strip()]


# --- blocks -------------------------------------------------------------------------------------
def encode_blocks(
    lines: tuple[str, ...], tokenizer: Any, max_seq_len: int, where: str
) -> EncodedSplit:
    """Tokenise `lines`, concatenate them and cut blocks of `max_seq_len` tokens, each framed
    by the tokenizer's [CLS] and [SEP]."""
    if max_seq_len < 3:
        raise ConfigError(f"max_seq_len must be at least 3 for pre-training, got {max_seq_len}")
    if tokenizer.cls_token_id is None or tokenizer.sep_token_id is None:
        raise ConfigError("the tokenizer has no [CLS] / [SEP] tokens: pre-training needs both")
    ids = tokenizer(list(lines), add_special_tokens=False)["input_ids"]
    stream = [token for line in ids for token in line]
    width = max_seq_len - 2
    if len(stream) < width:
        raise ConfigError(
            f"the {where} text has {len(stream)} tokens, fewer than one block of {width}: "
            "add text or lower --max-seq-len"
        )
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
    blocks = [[cls, *stream[i : i + width], sep] for i in range(0, len(stream) - width + 1, width)]
    return EncodedSplit([{"input_ids": b, "attention_mask": [1] * len(b)} for b in blocks])


class MlmCollator:
    """Batches for masked-LM training and evaluation. Training blocks are masked here, with
    the global torch RNG, which the Trainer seeds and checkpoints (so a resumed run masks what
    an uninterrupted one would); held-out blocks come masked already (they have labels) and
    are only stacked: the Trainer uses one collator for both."""

    def __init__(self, tokenizer: Any) -> None:
        self.masking = DataCollatorForLanguageModeling(tokenizer, mlm_probability=MLM_PROBABILITY)

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        if "labels" in features[0]:
            return default_data_collator(features)  # blocks have one length: no padding
        return self.masking(features)


def masked_once(split: EncodedSplit, tokenizer: Any, seed: int) -> EncodedSplit:
    """`split` with its masks drawn now, from `seed`: a fixed held-out set."""
    collate = DataCollatorForLanguageModeling(tokenizer, mlm_probability=MLM_PROBABILITY, seed=seed)
    batch = collate(split.features)  # blocks have one length: no padding
    return EncodedSplit(
        [
            {key: batch[key][i].tolist() for key in ("input_ids", "attention_mask", "labels")}
            for i in range(len(split))
        ]
    )
