"""Run an exported classifier without torch: onnxruntime, tokenizers and numpy only.

    clf = OnnxClassifier("out/onnx/")
    clf.predict(["a lovely film", "dull and weak"])      # [Prediction(label=..., ...), ...]
    clf.predict([("premise", "hypothesis")])            # sentence pairs

The folder is the one `compresskit export onnx` writes: model.onnx, tokenizer.json,
config.json and export.json. This module imports nothing that pulls in torch (checked by a
test), so a deployment needs only `pip install onnxruntime tokenizers numpy` and compresskit.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from compresskit._json import read_format_file
from compresskit._optional import import_extra
from compresskit.errors import CompressKitError, ModelFileError, one_line

MODEL_FILE = "model.onnx"
TOKENIZER_FILE = "tokenizer.json"
EXPORT_FILE = "export.json"
EXPORT_FORMAT = "compresskit.onnx"
EXPORT_FORMAT_VERSION = 1

Texts = Sequence[str] | Sequence[tuple[str, str]]


class ExportFolderError(ModelFileError):
    """An exported ONNX folder is missing a file, or export.json is not ours or is corrupt."""


class NotAClassifierError(CompressKitError):
    """The exported model has no labels: it is a base model, not a sequence classifier."""


@dataclass(frozen=True)
class Prediction:
    """The most likely label of one text, its probability, and every label's probability."""

    label: str
    score: float
    scores: dict[str, float]


def read_export_info(folder: str | Path) -> dict[str, Any]:
    """export.json of an exported folder, after checking that model.onnx is beside it.

    Raises ExportFolderError naming the missing or foreign file.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ExportFolderError(f"ONNX folder {folder} does not exist")
    path = folder / EXPORT_FILE
    if not path.is_file():
        raise ExportFolderError(
            f"{path} is missing: {folder} was not written by `compresskit export onnx`"
        )
    info = read_format_file(
        path,
        fmt=EXPORT_FORMAT,
        version=EXPORT_FORMAT_VERSION,
        what="ONNX export",
        error=ExportFolderError,
        fix=": re-export with this version",
    )
    if not (folder / MODEL_FILE).is_file():
        raise ExportFolderError(f"{folder / MODEL_FILE} is missing: re-export the model")
    _check_model_file_size(folder, info)
    return info


def _check_model_file_size(folder: Path, info: dict[str, Any]) -> None:
    """export.json records the size of the model.onnx it was written with: another size is
    another file (replaced, or truncated by an interrupted copy)."""
    recorded = info.get("model_bytes")
    if not isinstance(recorded, int) or isinstance(recorded, bool) or recorded <= 0:
        return  # older folders do not record it
    actual = (folder / MODEL_FILE).stat().st_size
    if actual != recorded:
        raise ExportFolderError(
            f"{folder / MODEL_FILE} is {actual} bytes but {EXPORT_FILE} was written for one "
            f"of {recorded}: it is not the model exported with this folder (replaced or "
            "truncated); re-export the model"
        )


def open_session(
    model_path: str | Path,
    *,
    threads: int | None = None,
    providers: Sequence[str] | None = None,
    spin_between_runs: bool = True,
) -> Any:
    """An onnxruntime session on `threads` intra-op threads and one inter-op thread.

    The graph optimisation level is onnxruntime's default (all): an offline-optimised model
    runs as it was saved, plus whatever fusions the session adds on load, as in deployment.
    `spin_between_runs=False` stops the intra-op threads spinning once a run ends, so that
    another model timed right after this one does not share its cores with idle spinners.
    """
    ort = import_extra("onnxruntime", "running an exported model")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or 0  # 0: onnxruntime's default (physical cores)
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3  # errors only: the fusion notices are not for users
    if not spin_between_runs:
        options.add_session_config_entry("session.force_spinning_stop", "1")
    try:
        return ort.InferenceSession(
            str(model_path), options, providers=list(providers or ["CPUExecutionProvider"])
        )
    except Exception as err:  # onnxruntime raises its own untyped errors for bad files
        raise ExportFolderError(f"onnxruntime cannot load {model_path}: {one_line(err)}") from None


class OnnxClassifier:
    """A sequence classifier exported by compresskit, run with onnxruntime.

    Args:
        folder: the exported folder.
        threads: intra-op threads (default: onnxruntime's choice, the physical cores).
        providers: onnxruntime execution providers (default: CPU).
    """

    def __init__(
        self,
        folder: str | Path,
        *,
        threads: int | None = None,
        providers: Sequence[str] | None = None,
    ) -> None:
        # The packages first: a deployment that lacks them learns that before anything else.
        for module in ("onnxruntime", "tokenizers"):
            import_extra(module, "running an exported model")
        self.folder = Path(folder)
        self.info = read_export_info(self.folder)
        self.labels = _labels(self.info, self.folder)
        self.max_length = _max_length(self.info, self.folder)
        self.tokenizer = _tokenizer(self.folder, self.max_length)
        self.session = open_session(self.folder / MODEL_FILE, threads=threads, providers=providers)
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_name = _logits_output(self.session, self.folder)
        _check_graph_matches_folder(self.session, self.info, self.labels, self.folder)

    def logits(self, texts: Texts, batch_size: int = 32) -> np.ndarray:
        """Logits of shape (len(texts), len(labels)), float32, in the order of `texts`."""
        items = _checked_texts(texts)
        if batch_size < 1:
            raise CompressKitError(f"batch_size must be at least 1, got {batch_size}")
        chunks = [
            self._run(items[start : start + batch_size])
            for start in range(0, len(items), batch_size)
        ]
        if not chunks:
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        return np.concatenate(chunks, axis=0)

    def predict(self, texts: Texts, batch_size: int = 32) -> list[Prediction]:
        """The most likely label of each text (or sentence pair), with softmax scores."""
        probs = softmax(self.logits(texts, batch_size))
        best = probs.argmax(axis=1)
        return [
            Prediction(
                label=self.labels[b],
                score=float(row[b]),
                scores={label: float(p) for label, p in zip(self.labels, row, strict=True)},
            )
            for row, b in zip(probs, best, strict=True)
        ]

    def _run(self, batch: list[str | tuple[str, str]]) -> np.ndarray:
        # Padding is to the longest text of this batch; the attention mask hides it, so a
        # text's logits do not depend on the batch it runs in.
        encodings = self.tokenizer.encode_batch(batch)
        arrays = {
            "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),  # (B, T)
            "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
            "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64),
        }
        feeds = {name: arrays[_FEEDS[name]] for name in self.input_names}
        try:
            (logits,) = self.session.run([self.output_name], feeds)
        except Exception as err:  # onnxruntime's errors are untyped
            raise ExportFolderError(
                f"{self.folder / MODEL_FILE} failed on this input ({one_line(err)}): the "
                f"graph does not fit the folder's tokenizer; re-export the model"
            ) from None
        if logits.ndim != 2 or logits.shape[1] != len(self.labels):
            raise ExportFolderError(
                f"{self.folder / MODEL_FILE} returns logits of shape {logits.shape} but "
                f"{EXPORT_FILE} lists {len(self.labels)} labels"
            )
        return np.asarray(logits, dtype=np.float32)


# session input name -> tokenizer array
_FEEDS = {
    "input_ids": "input_ids",
    "attention_mask": "attention_mask",
    "token_type_ids": "token_type_ids",
}


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax, stable for large logits."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return np.asarray(exp / exp.sum(axis=1, keepdims=True))


def _checked_texts(texts: Texts) -> list[str | tuple[str, str]]:
    if isinstance(texts, str):
        raise CompressKitError("predict takes a list of texts, not one string: wrap it in [...]")
    items: list[str | tuple[str, str]] = []
    for i, text in enumerate(texts):
        if isinstance(text, str):
            items.append(text)
        elif (
            isinstance(text, (tuple, list))
            and len(text) == 2
            and all(isinstance(t, str) for t in text)
        ):
            items.append((text[0], text[1]))
        else:
            raise CompressKitError(
                f"text {i} is {type(text).__name__}: give strings or (text, text_pair) tuples"
            )
    return items


def _labels(info: dict[str, Any], folder: Path) -> list[str]:
    labels = info.get("labels")
    if not labels:
        raise NotAClassifierError(
            f"{folder / EXPORT_FILE} lists no labels: {info.get('architecture', 'the model')} "
            "is not a sequence classifier (export a *ForSequenceClassification model)"
        )
    if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
        raise ExportFolderError(f"{folder / EXPORT_FILE}: labels must be a list of strings")
    return labels


def _max_length(info: dict[str, Any], folder: Path) -> int:
    max_length = info.get("max_length")
    if not isinstance(max_length, int) or isinstance(max_length, bool) or max_length < 2:
        raise ExportFolderError(
            f"{folder / EXPORT_FILE}: max_length must be an integer >= 2, got {max_length!r}"
        )
    return max_length


def _tokenizer(folder: Path, max_length: int) -> Any:
    Tokenizer = import_extra("tokenizers", "running an exported model").Tokenizer
    path = folder / TOKENIZER_FILE
    if not path.is_file():
        raise ExportFolderError(
            f"{path} is missing: export a model saved with its (fast) tokenizer"
        )
    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as err:  # tokenizers raises a bare Exception for a bad file
        raise ExportFolderError(f"{path} cannot be read: {err}") from None
    pad_token, pad_id = _pad_token(tokenizer, folder)
    tokenizer.enable_truncation(max_length)
    tokenizer.enable_padding(pad_id=pad_id, pad_token=pad_token)  # to each batch's longest
    return tokenizer


def _pad_token(tokenizer: Any, folder: Path) -> tuple[str, int]:
    """The tokenizer's own pad token: from tokenizer.json's padding, else the files that
    transformers saves beside it, else the usual names."""
    padding = tokenizer.padding
    if padding:
        return str(padding["pad_token"]), int(padding["pad_id"])
    candidates = [
        _special_token(folder / name, "pad_token")
        for name in ("tokenizer_config.json", "special_tokens_map.json")
    ]
    for token in [*candidates, "[PAD]", "<pad>"]:
        if token is not None and tokenizer.token_to_id(token) is not None:
            return token, int(tokenizer.token_to_id(token))
    raise ExportFolderError(
        f"{folder / TOKENIZER_FILE} has no pad token: batches of different lengths cannot be "
        "padded (set tokenizer.pad_token before exporting)"
    )


def _special_token(path: Path, key: str) -> str | None:
    try:
        value = json.loads(path.read_text(encoding="utf-8")).get(key)
    # ValueError: not UTF-8, not JSON, a number too long; RecursionError: nested too deeply.
    except (OSError, ValueError, RecursionError, AttributeError):
        return None
    if isinstance(value, dict):  # {"content": "[PAD]", "lstrip": false, ...}
        value = value.get("content")
    return value if isinstance(value, str) else None


def _check_graph_matches_folder(
    session: Any, info: dict[str, Any], labels: list[str], folder: Path
) -> None:
    """The graph takes what export.json says and a tokenizer gives, and has a logit per label."""
    inputs = [i.name for i in session.get_inputs()]
    unknown = set(inputs) - set(_FEEDS)
    if unknown:
        raise ExportFolderError(
            f"{folder / MODEL_FILE} has inputs {sorted(unknown)} that a tokenizer "
            f"does not produce (expected some of {sorted(_FEEDS)})"
        )
    recorded = info.get("inputs")
    if isinstance(recorded, list) and sorted(map(str, recorded)) != sorted(inputs):
        raise ExportFolderError(
            f"{folder / MODEL_FILE} takes {sorted(inputs)} but {EXPORT_FILE} lists "
            f"{sorted(map(str, recorded))}: the graph is not this folder's; re-export the model"
        )
    logits = next(o for o in session.get_outputs() if o.name == "logits")
    width = logits.shape[-1] if logits.shape else None
    if isinstance(width, int) and width != len(labels):
        raise ExportFolderError(
            f"{folder / MODEL_FILE} gives {width} logits but {EXPORT_FILE} lists "
            f"{len(labels)} labels: the graph is not this folder's; re-export the model"
        )


def _logits_output(session: Any, folder: Path) -> str:
    names = [o.name for o in session.get_outputs()]
    if "logits" not in names:
        raise NotAClassifierError(
            f"{folder / MODEL_FILE} has outputs {names}, no 'logits': it is not a "
            "sequence classifier"
        )
    return "logits"
