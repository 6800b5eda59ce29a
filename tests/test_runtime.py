"""The torch-free ONNX runtime: OnnxClassifier on exported folders of tiny models."""

from __future__ import annotations

import inspect
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers
from conftest import tiny_model
from torch import nn

import compresskit
from compresskit.errors import CompressKitError, ModelFileError
from compresskit.plan import PruningPlan
from compresskit.stats import model_stats
from compresskit.testing import write_tiny_tokenizer

ort = pytest.importorskip("onnxruntime")

from compresskit.runtime import (  # noqa: E402 (after the importorskip)
    ExportFolderError,
    NotAClassifierError,
    OnnxClassifier,
    Prediction,
)

LABELS = ["negative", "positive"]
MAX_LENGTH = 16
PLAN = PruningPlan.from_lists(
    [[0, 2, 3], [1], [1, 3]], [list(range(0, 40, 3)), [7, 9], list(range(20))]
)
TEXTS = [
    "good movie",
    "the plot was awful and dull and it really was a terrible film",
    "lovely",
    "a fine film",
    "weak",
]
PAIRS = [("good movie", "the plot was dull"), ("awful", "a superb and lovely film really")]


# --- writing exported folders ---------------------------------------------------------------


def write_onnx_folder(model: nn.Module, folder: Path, *, max_length: int = MAX_LENGTH) -> Path:
    """An exported folder of `model` (with the tiny tokenizer): by `exporters.onnx` when it
    is there, else by the TorchScript exporter in the same format."""
    saved = folder.with_name(folder.name + "-saved")
    compresskit.save(model, saved, tokenizer=write_tiny_tokenizer(saved.with_name("tok")))
    try:
        from compresskit.exporters.onnx import export_onnx
    except ImportError:
        return _write_onnx_folder_ourselves(model, saved, folder, max_length)
    export_onnx(saved, folder)
    info = json.loads((folder / "export.json").read_text())
    info["max_length"] = max_length  # the tests truncate at MAX_LENGTH whatever the default
    (folder / "export.json").write_text(json.dumps(info))
    return folder


def _write_onnx_folder_ourselves(
    model: nn.Module, saved: Path, folder: Path, max_length: int
) -> Path:
    shutil.copytree(saved, folder)
    names = ["input_ids", "attention_mask"]
    if "token_type_ids" in inspect.signature(model.forward).parameters:
        names.append("token_type_ids")
    classifier = type(model).__name__.endswith("ForSequenceClassification")
    output = "logits" if classifier else "last_hidden_state"
    ids = torch.tensor([[2, 5, 6, 7, 3], [2, 8, 3, 0, 0]])
    dummy = {
        "input_ids": ids,
        "attention_mask": (ids != 0).long(),  # padded, so the mask is not traced away
        "token_type_ids": torch.zeros_like(ids),
    }
    torch.onnx.export(
        _Named(model, names, output).eval(),  # export restores the mode it finds
        tuple(dummy[n] for n in names),
        folder / "model.onnx",
        input_names=names,
        output_names=[output],
        dynamo=False,
        dynamic_axes={n: {0: "batch", 1: "seq"} for n in names},
    )
    stats = model_stats(model)
    info = {
        "format": "compresskit.onnx",
        "format_version": 1,
        "architecture": type(model).__name__,
        "model_type": model.config.model_type,
        "inputs": names,
        "outputs": [output],
        "max_length": max_length,
        "labels": [model.config.id2label[i] for i in range(model.config.num_labels)]
        if classifier
        else None,
        "heads_per_layer": [s.heads for s in stats.layers],
        "ffn_per_layer": [s.ffn_width for s in stats.layers],
        "optimized": False,
        "quantized": None,
    }
    (folder / "export.json").write_text(json.dumps(info, indent=1))
    return folder


class _Named(nn.Module):
    """Positional inputs in, the one named output out: the signature the exporter traces."""

    def __init__(self, model: nn.Module, names: list[str], output: str) -> None:
        super().__init__()
        self.model, self.names, self.output = model, names, output

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        return self.model(**dict(zip(self.names, tensors, strict=True)))[self.output]


def tiny_classifier(model_type: str = "bert", *, pruned: bool = False) -> nn.Module:
    model = tiny_model(model_type, f"{_prefix(model_type)}ForSequenceClassification")
    model.config.id2label = dict(enumerate(LABELS))
    model.config.label2id = {label: i for i, label in enumerate(LABELS)}
    return compresskit.prune(model, PLAN) if pruned else model


def _prefix(model_type: str) -> str:
    return {"bert": "Bert", "roberta": "Roberta", "distilbert": "DistilBert"}[model_type]


def torch_logits(model: nn.Module, folder: Path, texts: list, max_length: int) -> torch.Tensor:
    """The reference: the transformers tokenizer and the PyTorch model, one padded batch."""
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    pairs = isinstance(texts[0], tuple)
    first = [t[0] for t in texts] if pairs else texts
    second = [t[1] for t in texts] if pairs else None
    enc = tokenizer(
        first,
        second,
        padding=True,
        truncation=True,
        max_length=max_length,
        return_tensors="pt",
        return_token_type_ids=True,  # the tiny tokenizer does not list them by default
    )
    # only what the graph takes (RoBERTa's has no token_type_ids)
    inputs = json.loads((folder / "export.json").read_text())["inputs"]
    with torch.no_grad():
        return model(**{k: v for k, v in enc.items() if k in inputs}).logits


@pytest.fixture(scope="module", params=["bert", "roberta", "distilbert"])
def exported(request, tmp_path_factory) -> tuple[nn.Module, Path]:
    """(PyTorch model, exported folder) of a pruned tiny classifier of each model type."""
    model = tiny_classifier(request.param, pruned=True)
    return model, write_onnx_folder(model, tmp_path_factory.mktemp("rt") / "onnx")


@pytest.fixture(scope="module")
def bert_folder(tmp_path_factory) -> Path:
    return write_onnx_folder(tiny_classifier("bert"), tmp_path_factory.mktemp("rt") / "onnx")


# --- behaviour ------------------------------------------------------------------------------


def test_predictions_equal_the_pytorch_models_argmax(exported):
    model, folder = exported
    expected = torch_logits(model, folder, TEXTS, MAX_LENGTH)
    predictions = OnnxClassifier(folder, threads=1).predict(TEXTS)
    assert [p.label for p in predictions] == [LABELS[i] for i in expected.argmax(1).tolist()]


def test_logits_match_the_pytorch_model_with_truncation(exported):
    model, folder = exported
    expected = torch_logits(model, folder, TEXTS, MAX_LENGTH).numpy()
    got = OnnxClassifier(folder, threads=1).logits(TEXTS)
    assert got.shape == (len(TEXTS), len(LABELS))
    assert np.abs(got - expected).max() <= 1e-4


def test_sentence_pairs_match_the_pytorch_model(exported):
    model, folder = exported
    expected = torch_logits(model, folder, PAIRS, MAX_LENGTH).numpy()
    got = OnnxClassifier(folder, threads=1).logits(PAIRS)
    assert np.abs(got - expected).max() <= 1e-4


def test_a_texts_logits_do_not_depend_on_its_batch_or_padding(exported):
    _, folder = exported
    clf = OnnxClassifier(folder, threads=1)
    alone = np.concatenate([clf.logits([t]) for t in TEXTS])
    for batch_size in (2, 3, len(TEXTS)):
        assert np.abs(clf.logits(TEXTS, batch_size=batch_size) - alone).max() <= 1e-4


def test_predictions_carry_softmax_scores_over_every_label(bert_folder):
    (p,) = OnnxClassifier(bert_folder, threads=1).predict(["good movie"])
    assert isinstance(p, Prediction)
    assert set(p.scores) == set(LABELS)
    assert sum(p.scores.values()) == pytest.approx(1.0, abs=1e-6)
    assert p.score == max(p.scores.values()) and p.scores[p.label] == p.score


def test_an_empty_list_gives_no_predictions(bert_folder):
    clf = OnnxClassifier(bert_folder, threads=1)
    assert clf.predict([]) == []
    assert clf.logits([]).shape == (0, len(LABELS))


@pytest.mark.parametrize("texts", ["good movie", [1, 2], [("a", "b", "c")]])
def test_texts_of_the_wrong_type_are_refused(bert_folder, texts):
    with pytest.raises(CompressKitError, match="text"):
        OnnxClassifier(bert_folder, threads=1).predict(texts)


def test_the_runtime_runs_without_importing_torch(bert_folder):
    code = (
        f"import compresskit.runtime as r; c = r.OnnxClassifier({str(bert_folder)!r}); "
        "c.predict(['good movie']); import sys; assert 'torch' not in sys.modules, 'torch'"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]


# --- errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize("missing", ["model.onnx", "tokenizer.json", "export.json"])
def test_a_folder_missing_a_file_is_refused_naming_it(bert_folder, tmp_path, missing):
    folder = shutil.copytree(bert_folder, tmp_path / "onnx")
    (folder / missing).unlink()
    with pytest.raises(ExportFolderError, match=missing.replace(".", r"\.")):
        OnnxClassifier(folder)


def test_a_missing_folder_is_refused(tmp_path):
    with pytest.raises(ModelFileError, match="does not exist"):
        OnnxClassifier(tmp_path / "nowhere")


@pytest.mark.parametrize(
    "change", [{"format": "compresskit.model"}, {"format_version": 99}, {"max_length": "long"}]
)
def test_an_export_json_of_another_format_is_refused(bert_folder, tmp_path, change):
    folder = shutil.copytree(bert_folder, tmp_path / "onnx")
    info = json.loads((folder / "export.json").read_text()) | change
    (folder / "export.json").write_text(json.dumps(info))
    with pytest.raises(ExportFolderError, match=r"export\.json"):
        OnnxClassifier(folder)


def test_a_model_without_labels_is_not_a_classifier(tmp_path):
    folder = write_onnx_folder(tiny_model("bert", "BertModel"), tmp_path / "onnx")
    with pytest.raises(NotAClassifierError, match="not a sequence classifier"):
        OnnxClassifier(folder)
