"""ONNX export: parity with PyTorch at every stage (export, fused, int8) for every architecture,
dense and pruned; per-layer head counts in fused graphs; the folder format; typed errors."""

from __future__ import annotations

import copy
import json

import numpy as np
import onnx
import pytest
import torch
import transformers
from conftest import ALL_MODEL_CLASSES, tiny_model
from helpers import max_diff_at_tokens, outputs
from onnx import numpy_helper

import compresskit
from compresskit.errors import (
    ConfigError,
    ExportParityError,
    ModelFileError,
    OutputExistsError,
    OutputPathError,
)
from compresskit.exporters import onnx as onnx_export
from compresskit.exporters import ort
from compresskit.exporters.onnx import export_onnx
from compresskit.plan import PruningPlan
from compresskit.testing import write_tiny_tokenizer

pytest.importorskip("onnxruntime")

# Uneven heads, a layer with no heads and a layer with no FFN neurons (as in test_pruner).
UNEVEN = PruningPlan.from_lists([[0, 2, 3], [], [1]], [list(range(0, 40, 3)), [7], []])
# Every layer keeps heads, each a different number: 4, 2, 3.
HEADS_423 = PruningPlan.from_lists([[0, 1, 2, 3], [1, 3], [0, 2, 3]], [list(range(40))] * 3)
# Words the tiny tokenizer knows, in sentences of different lengths.
TEXTS = [
    "the movie was good",
    "a really awful film and the plot was dull and weak and it was terrible",
    "great",
    "it was a fine film",
    "the plot was poor",
    "lovely",
]


@pytest.fixture(scope="session")
def tokenizer(tmp_path_factory):
    return write_tiny_tokenizer(tmp_path_factory.mktemp("tokenizer"))


@pytest.fixture
def save(tmp_path, tokenizer):
    """Save a (pruned) tiny model with the tiny tokenizer; returns the folder."""

    def _save(model, plan=None, name="model"):
        if plan is not None:
            model = compresskit.prune(model, plan)
        return compresskit.save(model, tmp_path / name, tokenizer=tokenizer)

    return _save


def export(folder, output, **options):
    """Export with the tiny texts; fusion is kept whatever its speed (tested on its own)."""
    return export_onnx(folder, output, sample_texts=TEXTS, **{"speed_check": False, **options})


def onnx_vs_torch(onnx_dir, model_dir, tokenizer, texts):
    """Largest |ONNX - PyTorch| over real tokens, computed here and not by the exporter."""
    info = json.loads((onnx_dir / "export.json").read_text())
    encoded = tokenizer(texts, padding=True, return_tensors="pt")
    zeros = torch.zeros_like(encoded["input_ids"])  # token types, if the tokenizer gives none
    inputs = {k: encoded.get(k, zeros) for k in info["inputs"]}
    model = compresskit.load(model_dir, attn_implementation="eager")
    expected = {k: v for k, v in outputs(model, inputs).items() if k in info["outputs"]}
    got = ort.run(ort.session(onnx_dir / "model.onnx"), {k: v.numpy() for k, v in inputs.items()})
    return max_diff_at_tokens(
        {k: torch.from_numpy(v) for k, v in got.items()}, expected, inputs["attention_mask"]
    )


def stages(info):
    return {p["stage"] for p in info["parity"]}


def attention_heads(onnx_path):
    """num_heads of every fused Attention node, in graph order."""
    graph = onnx.load(str(onnx_path)).graph
    return [
        next(a.i for a in node.attribute if a.name == "num_heads")
        for node in graph.node
        if node.op_type in ort.ATTENTION_OPS
    ]


# --- parity at every stage, every architecture ---------------------------------------------------
@pytest.mark.parametrize("plan", [None, UNEVEN], ids=["dense", "pruned"])
@pytest.mark.parametrize(("model_type", "class_name"), ALL_MODEL_CLASSES)
def test_every_stage_matches_pytorch(save, tmp_path, monkeypatch, model_type, class_name, plan):
    # Random tiny heads give near-tied logits, so int8 flips some of their few decisions by
    # chance (down to 4 of 6 seen); real models keep >= 98% (SST-2 MiniLM). Here the int8
    # check runs with a lower bar; test_int8_keeps_the_decisions_it_must covers the default.
    monkeypatch.setattr(onnx_export, "INT8_MIN_AGREEMENT", 0.5)
    folder = save(tiny_model(model_type, class_name), plan)
    report = export(folder, tmp_path / "onnx", optimize=True, quantize="int8")
    assert stages(report.to_dict()) == {"export", "optimize", "quantize"}
    assert all(p.passed for p in report.parity), report.summary()
    assert all(p.max_abs_diff <= 1e-4 for p in report.parity if p.stage != "quantize")
    assert report.optimized and report.quantized == "int8", report.warnings
    heads = PruningPlan.of_model(compresskit.load(folder)).heads_per_layer
    # Fused attention in exactly the layers that have heads, with each layer's own count.
    assert [bool(layer.get("Attention")) for layer in report.fusions.per_layer] == [
        h > 0 for h in heads
    ]


@pytest.mark.parametrize(("model_type", "class_name"), ALL_MODEL_CLASSES)
def test_exported_and_fused_graphs_match_pytorch_on_new_text(
    save, tmp_path, tokenizer, model_type, class_name
):
    folder = save(tiny_model(model_type, class_name), UNEVEN)
    export(folder, tmp_path / "plain")
    export(folder, tmp_path / "fused", optimize=True)
    texts = ["good", "the film was dull and the plot was weak", "nice movie"]
    for onnx_dir in (tmp_path / "plain", tmp_path / "fused"):
        assert onnx_vs_torch(onnx_dir, folder, tokenizer, texts) <= 1e-4


@pytest.mark.parametrize("model_type", ["bert", "roberta", "distilbert"])
def test_the_graph_runs_at_any_batch_size_and_length(save, tmp_path, tokenizer, model_type):
    folder = save(tiny_model(model_type), UNEVEN)
    export(folder, tmp_path / "onnx", optimize=True)
    for texts in (["great"], ["good", "a film"], ["the plot " * 9, "ok", "the movie was fine"]):
        assert onnx_vs_torch(tmp_path / "onnx", folder, tokenizer, texts) <= 1e-4


def test_the_int8_check_compares_decisions_with_the_fp32_graph(save, tmp_path):
    folder = save(tiny_model("bert", "BertForSequenceClassification"), UNEVEN)
    info = export(folder, tmp_path / "onnx", quantize="int8").to_dict()
    int8 = [p for p in info["parity"] if p["stage"] == "quantize"]
    assert int8 and all(p["reference"] == "onnx-fp32" for p in int8)
    assert all(p["agreement"] >= p["min_agreement"] == 0.9 for p in int8)
    assert all(0 < p["max_abs_diff"] <= p["tolerance"] for p in int8)
    graph = onnx.load(str(tmp_path / "onnx" / "model.onnx")).graph
    assert any(n.op_type == "DynamicQuantizeLinear" for n in graph.node)


def test_int8_keeps_the_decisions_it_must(save, tmp_path, monkeypatch):
    monkeypatch.setattr(onnx_export, "INT8_MIN_AGREEMENT", 1.01)  # no graph can pass
    folder = save(tiny_model("bert", "BertForSequenceClassification"), UNEVEN)
    with pytest.raises(ExportParityError, match=r"quantize parity failed: .* decisions"):
        export(folder, tmp_path / "onnx", quantize="int8")
    assert not (tmp_path / "onnx").exists()


# --- fused graphs for uneven heads ---------------------------------------------------------------
def test_uneven_heads_fuse_with_each_layers_own_head_count(save, tmp_path, tokenizer):
    folder = save(tiny_model("bert"), HEADS_423)
    report = export(folder, tmp_path / "onnx", optimize=True)
    assert report.optimized and not report.warnings
    assert attention_heads(tmp_path / "onnx" / "model.onnx") == [4, 2, 3]
    per_layer = report.to_dict()["fusions"]["per_layer"]
    assert [(layer["heads"], layer["Attention"]) for layer in per_layer] == [(4, 1), (2, 1), (3, 1)]
    assert all(layer["SkipLayerNormalization"] == 2 for layer in per_layer)
    assert onnx_vs_torch(tmp_path / "onnx", folder, tokenizer, TEXTS) <= 1e-4


def test_a_layer_without_heads_keeps_no_attention_and_the_rest_fuse(save, tmp_path):
    report = export(save(tiny_model("bert"), UNEVEN), tmp_path / "onnx", optimize=True)
    assert report.optimized
    assert attention_heads(tmp_path / "onnx" / "model.onnx") == [3, 1]
    assert [layer.get("Attention", 0) for layer in report.fusions.per_layer] == [1, 0, 1]


def test_fused_attention_is_right_for_left_padding(tmp_path, tokenizer):
    # ORT's default mask format for BERT (one length per row) assumes right padding.
    left = copy.deepcopy(tokenizer)
    left.padding_side = "left"
    folder = compresskit.save(
        compresskit.prune(tiny_model("bert"), HEADS_423), tmp_path / "m", tokenizer=left
    )
    report = export(folder, tmp_path / "onnx", optimize=True)
    assert report.optimized and all(p.passed for p in report.parity)
    assert onnx_vs_torch(tmp_path / "onnx", folder, left, TEXTS) <= 1e-4


def test_one_global_head_count_is_caught_and_the_unfused_graph_kept(
    save, tmp_path, monkeypatch, caplog
):
    # The failure of docs/library-pitfalls.md: shapes left as (B, T, -1, d) and one num_heads
    # for every layer.
    from onnxruntime.transformers.optimizer import optimize_model

    monkeypatch.setattr(ort, "_pin_shape", lambda *args, **kwargs: None)
    monkeypatch.setattr(
        ort,
        "_run_optimizer",
        lambda path: optimize_model(str(path), "bert", num_heads=4, hidden_size=32).model,
    )
    folder = save(tiny_model("bert"), HEADS_423)
    report = export(folder, tmp_path / "onnx", optimize=True)
    assert not report.optimized and report.fusions is None
    assert any("kept the unfused graph" in w and "num_heads=4" in w for w in report.warnings)
    assert "kept the unfused graph" in caplog.text
    info = json.loads((tmp_path / "onnx" / "export.json").read_text())
    assert info["optimized"] is False and info["warnings"] == list(report.warnings)
    assert attention_heads(tmp_path / "onnx" / "model.onnx") == []


def test_a_fused_graph_that_fails_parity_falls_back_with_a_warning(save, tmp_path, monkeypatch):
    real_optimize = ort.optimize

    def corrupting_optimize(source, target, layout):
        report = real_optimize(source, target, layout)
        corrupt_first_float_initializer(target, "Attention")
        return report

    monkeypatch.setattr(ort, "optimize", corrupting_optimize)
    report = export(save(tiny_model("bert"), HEADS_423), tmp_path / "onnx", optimize=True)
    assert not report.optimized, report.summary()
    failed = [p for p in report.parity if p.stage == "optimize" and not p.passed]
    assert failed and "differs from PyTorch" in report.warnings[0]
    assert all(p.passed for p in report.parity if p.stage == "export")
    assert attention_heads(tmp_path / "onnx" / "model.onnx") == []


def corrupt_first_float_initializer(path, name_part=""):
    model = onnx.load(str(path))
    for i, tensor in enumerate(model.graph.initializer):
        values = numpy_helper.to_array(tensor)
        if values.dtype == np.float32 and values.size > 1 and name_part in tensor.name:
            changed = numpy_helper.from_array(values * 2.0 + 1.0, tensor.name)
            model.graph.initializer[i].CopyFrom(changed)
            break
    onnx.save(model, str(path))


# --- errors --------------------------------------------------------------------------------------
def test_a_wrong_exported_graph_raises_export_parity_error(save, tmp_path, monkeypatch):
    real_export = onnx_export._export_graph

    def corrupting_export(model, spec, batch, path, opset):
        real_export(model, spec, batch, path, opset)
        corrupt_first_float_initializer(path, "query")

    monkeypatch.setattr(onnx_export, "_export_graph", corrupting_export)
    with pytest.raises(
        ExportParityError, match=r"export parity failed: .* differs from PyTorch by"
    ):
        export(save(tiny_model("bert"), UNEVEN), tmp_path / "onnx")
    assert not (tmp_path / "onnx").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # nothing half-written


def test_an_existing_output_needs_overwrite(save, tmp_path):
    folder = save(tiny_model("bert"))
    (tmp_path / "onnx").mkdir()
    (tmp_path / "onnx" / "keep.txt").write_text("mine")
    with pytest.raises(OutputExistsError, match="overwrite"):
        export(folder, tmp_path / "onnx")
    assert (tmp_path / "onnx" / "keep.txt").exists()
    with pytest.raises(OutputPathError, match=r"keep\.txt, which compresskit did not write"):
        export(folder, tmp_path / "onnx", overwrite=True)  # a file of the user's is never lost
    (tmp_path / "onnx" / "keep.txt").unlink()
    export(folder, tmp_path / "onnx")
    export(folder, tmp_path / "onnx", overwrite=True)  # over its own previous output
    assert (tmp_path / "onnx" / "model.onnx").is_file()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"quantize": "fp16"}, "quantize='fp16'"),
        ({"opset": 9}, "opset 9"),
        ({"sample_texts": ["one", "two"]}, "at least 4"),
        ({"parity_tolerance": 0}, "parity_tolerance"),
    ],
)
def test_bad_options_raise_config_error(tmp_path, options, message):
    with pytest.raises(ConfigError, match=message):
        export_onnx(tmp_path / "model", tmp_path / "onnx", **options)


def test_a_missing_model_folder_raises_model_file_error(tmp_path):
    with pytest.raises(ModelFileError, match="does not exist"):
        export(tmp_path / "nope", tmp_path / "onnx")


def test_a_model_without_tokenizer_cannot_be_exported(tmp_path):
    compresskit.save(tiny_model("bert"), tmp_path / "model")
    with pytest.raises(ModelFileError, match="has no usable tokenizer"):
        export(tmp_path / "model", tmp_path / "onnx")


# --- the folder ----------------------------------------------------------------------------------
def test_the_folder_deploys_alone_and_export_json_describes_it(save, tmp_path):
    model = tiny_model("bert", "BertForSequenceClassification")
    model.config.id2label = {0: "negative", 1: "positive"}
    folder = save(model, UNEVEN)
    export(folder, tmp_path / "onnx", optimize=True)
    out = tmp_path / "onnx"
    names = {p.name for p in out.iterdir()}
    assert {"model.onnx", "tokenizer.json", "config.json", "compresskit.json", "export.json"} <= (
        names
    )
    assert not any(n.endswith((".data", ".tmp", ".safetensors")) for n in names)
    info = json.loads((out / "export.json").read_text())
    assert info["format"] == "compresskit.onnx" and info["format_version"] == 1
    assert info["source"] == str(folder)
    assert info["architecture"] == "BertForSequenceClassification"
    assert info["model_type"] == "bert"
    assert info["inputs"] == ["input_ids", "attention_mask", "token_type_ids"]
    assert info["outputs"] == ["logits"]
    assert info["opset"] == 17 and info["max_length"] == 72
    assert info["labels"] == ["negative", "positive"]
    assert info["heads_per_layer"] == [3, 0, 1] and info["ffn_per_layer"] == [14, 1, 0]
    assert info["optimized"] is True and info["quantized"] is None
    assert info["fusions"]["per_layer"][0] == {
        "layer": 0,
        "heads": 3,
        "Attention": 1,
        "SkipLayerNormalization": 2,
        "BiasGelu": 1,
    }
    assert {tuple(sorted(p)) for p in info["parity"]} >= {
        ("batch", "max_abs_diff", "passed", "seq_len", "stage", "tolerance", "worst_output")
    }
    assert info["warnings"] == []
    config = json.loads((out / "config.json").read_text())
    assert config["id2label"] == {"0": "negative", "1": "positive"}
    assert json.loads((out / "compresskit.json").read_text())["layers"][1]["heads_kept"] == []
    loaded = transformers.AutoTokenizer.from_pretrained(out)
    assert loaded("good film")["input_ids"] == [2, 5, 21, 3]  # [CLS] good film [SEP]


@pytest.mark.parametrize(
    ("model_type", "class_name", "inputs", "outputs", "labelled"),
    [
        ("roberta", "RobertaForMaskedLM", ["input_ids", "attention_mask"], ["logits"], False),
        (
            "distilbert",
            "DistilBertForQuestionAnswering",
            ["input_ids", "attention_mask"],
            ["start_logits", "end_logits"],
            False,
        ),
        ("bert", "BertModel", ["input_ids", "attention_mask", "token_type_ids"], None, False),
        ("bert", "BertForTokenClassification", None, ["logits"], True),
    ],
)
def test_inputs_outputs_and_labels_follow_the_model_class(
    save, tmp_path, model_type, class_name, inputs, outputs, labelled
):
    info = export(save(tiny_model(model_type, class_name)), tmp_path / "onnx").to_dict()
    assert inputs is None or info["inputs"] == inputs
    assert outputs is None or info["outputs"] == outputs
    assert (info["labels"] is not None) == labelled
    if class_name == "BertModel":
        assert info["outputs"] == ["last_hidden_state"]


def test_a_plain_transformers_folder_exports(tmp_path, tokenizer):
    model = tiny_model("distilbert", "DistilBertForSequenceClassification")
    model.save_pretrained(tmp_path / "hf")
    tokenizer.save_pretrained(tmp_path / "hf")
    report = export(tmp_path / "hf", tmp_path / "onnx", optimize=True)
    assert report.optimized and report.heads_per_layer == [4, 4, 4]
    assert all(p.passed for p in report.parity)
    assert not (tmp_path / "onnx" / "compresskit.json").exists()


# --- the real MiniLM -----------------------------------------------------------------------------
@pytest.mark.real
def test_pruned_minilm_fuses_attention_in_every_layer(tmp_path, minilm_path):
    model = transformers.AutoModel.from_pretrained(minilm_path)
    tok = transformers.AutoTokenizer.from_pretrained(minilm_path)
    plan = compresskit.get_strategy("magnitude", heads_ratio=1 / 3, ffn_ratio=0.4).plan(model)
    compresskit.save(compresskit.prune(model, plan), tmp_path / "slim", tokenizer=tok)
    report = export_onnx(tmp_path / "slim", tmp_path / "onnx", optimize=True, speed_check=False)
    assert report.heads_per_layer == [8] * 6
    assert attention_heads(tmp_path / "onnx" / "model.onnx") == [8] * 6
    assert [layer.get("Attention") for layer in report.fusions.per_layer] == [1] * 6
    assert all(p.max_abs_diff <= 1e-4 for p in report.parity), report.summary()


# --- fusion must never make a model slower -------------------------------------------------------
@pytest.mark.parametrize(("fused_ms", "kept"), [(2.0, "unfused"), (0.5, "fused")])
def test_the_fused_graph_is_kept_only_when_faster(save, tmp_path, monkeypatch, fused_ms, kept):
    """The speed check times both graphs (here: made-up medians, fused first) at batch 1 and
    32 and keeps the fused graph only if it is faster at both; the timings go in export.json."""
    calls = []

    def medians(graphs, *, vocab, batch, seq, threads, runs):
        calls.append((batch, seq, threads))
        return [fused_ms, 1.0]

    monkeypatch.setattr(onnx_export, "median_ms", medians)
    folder = save(tiny_model("bert", "BertForSequenceClassification"), UNEVEN)
    report = export_onnx(folder, tmp_path / "onnx", sample_texts=TEXTS, optimize=True, threads=3)
    assert calls == [(1, 72, 3), (32, 72, 3)]  # the tiny model takes 72 positions
    info = json.loads((tmp_path / "onnx" / "export.json").read_text())
    assert info["fusion_timing"]["shapes"][0] == {
        "batch": 1, "seq": 72, "fused_ms": fused_ms, "unfused_ms": 1.0
    }  # fmt: skip
    assert info["optimized"] is (kept == "fused")
    if kept == "unfused":
        assert "ran slower on this machine (batch 1: 2.0 vs 1.0 ms" in report.warnings[0]
        assert attention_heads(tmp_path / "onnx" / "model.onnx") == []
