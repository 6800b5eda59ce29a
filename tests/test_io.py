"""save/load: exact round trips of dense and pruned models, and clear errors on bad files."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
import transformers
from conftest import ALL_MODEL_CLASSES, batch, tiny_model
from helpers import outputs

import compresskit
from compresskit.errors import ModelFileError, OutputExistsError, OutputPathError
from compresskit.io import MANIFEST, WEIGHTS
from compresskit.plan import PruningPlan

UNEVEN = PruningPlan.from_lists([[0, 2, 3], [], [1]], [list(range(0, 40, 3)), [7], []])


def assert_same_outputs(a, b, inputs):
    out_a, out_b = outputs(a, inputs), outputs(b, inputs)
    for key in out_a:
        assert torch.equal(out_a[key], out_b[key]), key


@pytest.mark.parametrize(("model_type", "class_name"), ALL_MODEL_CLASSES)
def test_pruned_model_round_trips_exactly(tmp_path, model_type, class_name):
    model = compresskit.prune(tiny_model(model_type, class_name), UNEVEN)
    compresskit.save(model, tmp_path / "m")
    loaded = compresskit.load(tmp_path / "m", attn_implementation="eager")
    assert type(loaded) is type(model)
    assert PruningPlan.of_model(loaded) == UNEVEN
    assert_same_outputs(model, loaded, batch(model))


def test_a_dense_model_saved_by_compresskit_loads(tmp_path):
    model = tiny_model("bert", "BertForMaskedLM")
    compresskit.save(model, tmp_path / "m")
    assert_same_outputs(
        model, compresskit.load(tmp_path / "m", attn_implementation="eager"), batch(model)
    )


def test_tied_weights_stay_tied_after_load(tmp_path):
    model = compresskit.prune(tiny_model("bert", "BertForMaskedLM"), UNEVEN)
    compresskit.save(model, tmp_path / "m")
    loaded = compresskit.load(tmp_path / "m")
    assert loaded.cls.predictions.decoder.weight is loaded.bert.embeddings.word_embeddings.weight


def test_save_writes_safetensors_config_manifest_and_tokenizer(tmp_path, minilm_path):
    tokenizer = transformers.AutoTokenizer.from_pretrained(minilm_path)
    compresskit.save(
        compresskit.prune(tiny_model("bert"), UNEVEN), tmp_path / "m", tokenizer=tokenizer
    )
    names = {p.name for p in (tmp_path / "m").iterdir()}
    assert {"config.json", WEIGHTS, MANIFEST, "tokenizer.json"} <= names
    assert not any(n.endswith((".bin", ".pt", ".pkl")) for n in names)
    manifest = json.loads((tmp_path / "m" / MANIFEST).read_text())
    assert manifest["format_version"] == 1 and manifest["model_type"] == "bert"
    assert manifest["layers"][0] == {
        "heads_kept": [0, 2, 3],
        "head_dim": 8,
        "ffn_kept": list(range(0, 40, 3)),
    }


def test_loaded_model_works_with_a_transformers_pipeline(tmp_path, minilm_path):
    tokenizer = transformers.AutoTokenizer.from_pretrained(minilm_path)
    model = transformers.AutoModelForSequenceClassification.from_pretrained(
        minilm_path, num_labels=2
    )
    plan = PruningPlan.from_lists([[0, 5, 11]] * 6, [list(range(0, 1536, 2))] * 6)
    compresskit.save(compresskit.prune(model, plan), tmp_path / "m", tokenizer=tokenizer)
    classify = transformers.pipeline(
        "text-classification", model=compresskit.load(tmp_path / "m"), tokenizer=tokenizer
    )
    assert classify("a fine film")[0]["label"] in {"LABEL_0", "LABEL_1"}


def test_saving_over_a_previous_output_needs_overwrite(tmp_path):
    compresskit.save(tiny_model("bert"), tmp_path / "m")
    with pytest.raises(OutputExistsError, match="already exists"):
        compresskit.save(tiny_model("bert"), tmp_path / "m")
    compresskit.save(tiny_model("bert"), tmp_path / "m", overwrite=True)
    assert [p.name for p in tmp_path.iterdir()] == ["m"]  # no temporary folders left


def test_overwrite_never_deletes_a_file_compresskit_did_not_write(tmp_path):
    compresskit.save(tiny_model("bert"), tmp_path / "m")
    (tmp_path / "m" / "keep.txt").write_text("mine")
    with pytest.raises(OutputPathError, match=r"would delete .*keep.txt, which compresskit"):
        compresskit.save(tiny_model("bert"), tmp_path / "m", overwrite=True)
    assert (tmp_path / "m" / "keep.txt").read_text() == "mine"


def test_a_failed_save_leaves_nothing_behind(tmp_path):
    class Broken:
        def save_pretrained(self, path):
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        compresskit.save(tiny_model("bert"), tmp_path / "m", tokenizer=Broken())
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def saved(tmp_path):
    folder = tmp_path / "m"
    compresskit.save(compresskit.prune(tiny_model("bert"), UNEVEN), folder)
    return folder


def edit_manifest(folder, change):
    manifest = json.loads((folder / MANIFEST).read_text())
    change(manifest)
    (folder / MANIFEST).write_text(json.dumps(manifest))


def edit_config_layer(folder, layer, **values):
    config = json.loads((folder / "config.json").read_text())
    config["per_layer_config"][str(layer)].update(values)
    (folder / "config.json").write_text(json.dumps(config))


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda f: (f / WEIGHTS).unlink(), "model.safetensors is missing"),
        (lambda f: (f / MANIFEST).unlink(), "compresskit.json is missing"),
        (
            lambda f: (f / WEIGHTS).write_bytes((f / WEIGHTS).read_bytes()[:300]),
            "corrupt or truncated",
        ),
        (lambda f: (f / WEIGHTS).write_bytes(b"\x00" * 64), "corrupt or truncated"),
        (lambda f: (f / MANIFEST).write_text("{not json"), "not readable JSON"),
        (
            lambda f: edit_manifest(f, lambda m: m["layers"].pop()),
            "describes 2 layers but config.json has 3",
        ),
        (
            lambda f: edit_manifest(f, lambda m: m["layers"][0].update(heads_kept=[0, 9])),
            "beyond the config",
        ),
        (
            lambda f: edit_manifest(f, lambda m: m["layers"][0].update(heads_kept=[0, 1])),
            "per_layer_config gives layer 0 num_attention_heads=3 but compresskit.json keeps 2",
        ),
        (  # both descriptions edited alike: the weights file still tells
            lambda f: (
                edit_manifest(f, lambda m: m["layers"][0].update(heads_kept=[0, 1])),
                edit_config_layer(f, 0, num_attention_heads=2),
            ),
            "does not match",
        ),
        (lambda f: edit_manifest(f, lambda m: m["layers"][0].update(head_dim=16)), "head_dim 16"),
        (
            lambda f: edit_manifest(f, lambda m: m.update(architecture="os.system")),
            "not a transformers model class",
        ),
        (lambda f: edit_manifest(f, lambda m: m.update(model_type="roberta")), "says model_type"),
        (lambda f: edit_manifest(f, lambda m: m.update(format_version=99)), "format_version 99"),
    ],
)
def test_damaged_folders_raise_an_error_naming_the_problem(saved, damage, message):
    damage(saved)
    with pytest.raises(ModelFileError, match=message):
        compresskit.load(saved)


def test_loading_a_missing_folder_says_so(tmp_path):
    with pytest.raises(ModelFileError, match="does not exist"):
        compresskit.load(tmp_path / "nope")


def test_copied_folder_loads_the_same(saved, tmp_path):
    shutil.copytree(saved, tmp_path / "copy")
    model = compresskit.load(tmp_path / "copy")
    assert PruningPlan.of_model(model) == UNEVEN


@pytest.mark.parametrize("model_type", ["bert", "roberta", "distilbert"])
def test_a_model_with_empty_layers_exports_to_onnx_and_runs_in_onnxruntime(tmp_path, model_type):
    # Issue #2 promises that head-less and FFN-less layers still export; the ONNX exporter
    # proper (issue #5) builds on this.
    ort = pytest.importorskip("onnxruntime")
    model = compresskit.prune(tiny_model(model_type), UNEVEN)
    inputs = batch(model)
    names = ["input_ids", "attention_mask"]
    torch.onnx.export(
        model,
        tuple(inputs[n] for n in names),
        tmp_path / "m.onnx",
        input_names=names,
        output_names=["logits"],
        dynamo=False,
        dynamic_axes={n: {0: "batch", 1: "seq"} for n in names},
    )
    session = ort.InferenceSession(str(tmp_path / "m.onnx"))
    (logits,) = session.run(None, {n: inputs[n].numpy() for n in names})
    expected = outputs(model, inputs)["logits"]
    assert torch.from_numpy(logits).sub(expected).abs().max().item() < 1e-4


def test_a_loaded_pruned_model_trains_with_the_hf_trainer(tmp_path):
    pytest.importorskip("accelerate")
    compresskit.save(compresskit.prune(tiny_model("bert"), UNEVEN), tmp_path / "m")
    model = compresskit.load(tmp_path / "m")
    inputs = batch(model)
    rows = [
        {
            "input_ids": inputs["input_ids"][i],
            "attention_mask": inputs["attention_mask"][i],
            "labels": torch.tensor(i % 2),
        }
        for i in range(3)
    ]
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / "run"),
        max_steps=2,
        per_device_train_batch_size=3,
        report_to=[],
        save_strategy="no",
        use_cpu=True,
    )
    before = model.classifier.weight.detach().clone()
    transformers.Trainer(model=model, args=args, train_dataset=rows).train()
    assert not torch.equal(before, model.classifier.weight)
