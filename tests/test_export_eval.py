"""`export_onnx(eval_data=...)` / `--eval-data`: the task metric of the fp32 and int8 graphs,
checked against the metric PyTorch's own predictions give on the same examples."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import tiny_model

import compresskit
from compresskit.cli import cli
from compresskit.errors import ConfigError
from compresskit.exporters.onnx import export_onnx
from compresskit.io import write_model
from compresskit.plan import PruningPlan
from compresskit.testing import write_tiny_sentiment, write_tiny_tokenizer
from compresskit.train.data import load_task
from compresskit.train.metrics import compute_metrics

pytest.importorskip("onnxruntime")

PLAN = PruningPlan.from_lists([[0, 2, 3], [1], [1, 2]], [list(range(0, 40, 3)), [7], []])
TEXTS = ["the movie was good", "a really awful film", "great", "it was a fine film"]


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return write_tiny_tokenizer(tmp_path_factory.mktemp("tokenizer"))


@pytest.fixture(scope="module")
def sentiment(tmp_path_factory):
    return write_tiny_sentiment(tmp_path_factory.mktemp("sst2"), n_train=16, n_dev=150)


def classifier(tokenizer, folder, *, labels=("0", "1"), task=None, model_type="bert"):
    class_name = "RobertaForSequenceClassification" if model_type == "roberta" else None
    model = tiny_model(model_type, class_name or "BertForSequenceClassification")
    model.config.id2label = dict(enumerate(labels))
    model.config.label2id = {name: i for i, name in enumerate(labels)}
    model = compresskit.prune(model, PLAN)
    extra = {"task": {"name": task, "labels": list(labels)}} if task else None
    write_model(model, folder, tokenizer, extra=extra)
    return folder


def pytorch_scores(folder, tokenizer, task, data):
    """The metric of the PyTorch model's own predictions, computed here, not by the exporter."""
    task_data = load_task(task, data)
    model = compresskit.load(folder).eval()
    texts = [e.text for e in task_data.dev]
    pairs = [e.text_pair for e in task_data.dev] if task_data.is_pair else None
    with torch.no_grad():
        logits = model(**tokenizer(texts, pairs, padding=True, return_tensors="pt")).logits
    label2id = model.config.label2id
    labels = [label2id[e.label] for e in task_data.dev]
    return compute_metrics(task_data.metrics, logits.argmax(-1).numpy(), np.array(labels))


def test_fp32_and_int8_are_scored_and_fp32_matches_pytorch(tmp_path, tokenizer, sentiment):
    model_dir = classifier(tokenizer, tmp_path / "model", task="sst2")
    report = export_onnx(
        model_dir, tmp_path / "onnx", quantize="int8", eval_data=sentiment, sample_texts=TEXTS
    )
    evaluation = report.evaluation
    assert evaluation is not None and evaluation.task == "sst2" and evaluation.examples == 150
    assert set(evaluation.scores) == {"fp32", "int8"}
    assert evaluation.scores["fp32"] == pytorch_scores(model_dir, tokenizer, "sst2", sentiment)
    saved = json.loads((tmp_path / "onnx" / "export.json").read_text())["evaluation"]
    assert saved["scores"] == evaluation.scores
    assert saved["int8_change"] == pytest.approx(
        evaluation.scores["int8"]["accuracy"] - evaluation.scores["fp32"]["accuracy"]
    )
    assert "evaluation: sst2, 150 examples" in report.summary()


def test_pair_tasks_are_scored_with_both_texts_and_labels_matched_by_name(tmp_path, tokenizer):
    rows = ["index\tsentence1\tsentence2\tlabel"]
    words = ["good film", "bad plot", "great", "dull and weak", "a fine movie", "terrible"]
    for i in range(40):
        label = "entailment" if i % 3 else "not_entailment"
        rows.append(f"{i}\t{words[i % 6]}\t{words[(i * 5) % 6]}\t{label}")
    data = tmp_path / "rte"
    data.mkdir()
    for split in ("train", "dev"):
        (data / f"{split}.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    # The model's classes are in the opposite order to the data's sorted labels.
    labels = ("not_entailment", "entailment")
    model_dir = classifier(tokenizer, tmp_path / "model", labels=labels, model_type="roberta")
    report = export_onnx(
        model_dir, tmp_path / "onnx", eval_data=data, eval_task="rte", sample_texts=TEXTS
    )
    assert report.evaluation is not None
    assert report.evaluation.scores == {"fp32": pytorch_scores(model_dir, tokenizer, "rte", data)}


def test_the_cli_records_the_metric_of_both_graphs(tmp_path, tokenizer, sentiment):
    model_dir = classifier(tokenizer, tmp_path / "model", labels=("LABEL_0", "LABEL_1"))
    result = CliRunner().invoke(
        cli,
        ["export", "onnx", str(model_dir), "--output", str(tmp_path / "onnx"), "--quantize",
         "int8", "--eval-data", str(sentiment), "--eval-task", "sst2"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "evaluation: sst2, 150 examples" in result.output
    assert "fp32      accuracy" in result.output and "int8      accuracy" in result.output


@pytest.mark.parametrize(
    ("labels", "task", "eval_task", "message"),
    [
        (("0", "1"), None, None, "does not record the task it was trained on"),
        (("neg", "pos"), "sst2", None, "the evaluation data has label '0'"),
        (("0", "1"), "sst2", "nosuchtask", "nosuchtask"),
    ],
    ids=["no-task", "label-mismatch", "unknown-task"],
)
def test_bad_evaluation_input_is_refused_before_anything_is_written(
    tmp_path, tokenizer, sentiment, labels, task, eval_task, message
):
    model_dir = classifier(tokenizer, tmp_path / "model", labels=labels, task=task)
    with pytest.raises(ConfigError, match=message):
        export_onnx(model_dir, tmp_path / "onnx", eval_data=sentiment, eval_task=eval_task)
    assert not (tmp_path / "onnx").exists()


def test_only_sequence_classifiers_can_be_evaluated(tmp_path, tokenizer, sentiment):
    model_dir = compresskit.save(
        tiny_model("bert", "BertModel"), tmp_path / "m", tokenizer=tokenizer
    )
    with pytest.raises(ConfigError, match="needs a sequence classifier"):
        export_onnx(model_dir, tmp_path / "onnx", eval_data=sentiment, eval_task="sst2")
    assert not (tmp_path / "onnx").exists()
