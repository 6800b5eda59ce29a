"""Pruned folders the Hugging Face way: config.json's per_layer_config, from_pretrained and
pipeline after `import compresskit` (exactly compresskit.load's model), save_pretrained, and
the safe failure of plain transformers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
import transformers
from conftest import ALL_MODEL_CLASSES, ARCHITECTURES, batch, tiny_model
from helpers import outputs

import compresskit
from compresskit.arch import adapter_class
from compresskit.errors import ModelFileError
from compresskit.io import MANIFEST
from compresskit.loading import load_checkpoint
from compresskit.plan import PruningPlan
from compresskit.testing import write_tiny_tokenizer

UNEVEN = PruningPlan.from_lists([[0, 2, 3], [], [1]], [list(range(0, 40, 3)), [7], []])


def assert_same_outputs(a, b, inputs):
    out_a, out_b = outputs(a, inputs), outputs(b, inputs)
    assert out_a.keys() == out_b.keys()
    for key in out_a:
        assert torch.equal(out_a[key], out_b[key]), key


def saved_pruned(tmp_path, model_type="bert", class_name=None, *, tokenizer=False):
    model = compresskit.prune(tiny_model(model_type, class_name), UNEVEN)
    folder = tmp_path / "pruned"
    compresskit.save(
        model, folder, tokenizer=write_tiny_tokenizer(tmp_path / "tok") if tokenizer else None
    )
    return model, folder


@pytest.mark.parametrize(("model_type", "class_name"), ALL_MODEL_CLASSES)
def test_config_json_states_every_layers_shape_in_transformers_schema(
    tmp_path, model_type, class_name
):
    _, folder = saved_pruned(tmp_path, model_type, class_name)
    per_layer = json.loads((folder / "config.json").read_text())["per_layer_config"]
    heads, ffn = adapter_class(model_type).layer_fields
    assert {int(i): v for i, v in per_layer.items()} == {
        0: {heads: 3, ffn: 14},
        1: {heads: 0, ffn: 1},
        2: {heads: 1, ffn: 0},
    }


def test_a_dense_model_gets_no_per_layer_config(tmp_path):
    model = tiny_model("bert", "BertForSequenceClassification")
    compresskit.save(model, tmp_path / "dense")
    assert "per_layer_config" not in json.loads((tmp_path / "dense" / "config.json").read_text())


@pytest.mark.parametrize(("model_type", "class_name"), ALL_MODEL_CLASSES)
def test_from_pretrained_returns_exactly_what_compresskit_load_builds(
    tmp_path, model_type, class_name
):
    _, folder = saved_pruned(tmp_path, model_type, class_name)
    expected = compresskit.load(folder, attn_implementation="eager")
    got = getattr(transformers, class_name).from_pretrained(folder, attn_implementation="eager")
    assert type(got) is type(expected)
    assert PruningPlan.of_model(got) == UNEVEN
    assert_same_outputs(expected, got, batch(expected))


@pytest.mark.parametrize(("model_type", "class_name"), ALL_MODEL_CLASSES)
def test_automodel_gives_the_pruned_base_model(tmp_path, model_type, class_name):
    _, folder = saved_pruned(tmp_path, model_type, class_name)
    expected = compresskit.load(folder, attn_implementation="eager").base_model
    got = transformers.AutoModel.from_pretrained(folder, attn_implementation="eager")
    assert type(got) is type(expected)
    assert_same_outputs(expected, got, batch(expected))


def test_asking_for_another_head_names_what_the_folder_holds(tmp_path):
    _, folder = saved_pruned(tmp_path, "bert", "BertForMaskedLM")
    with pytest.raises(ModelFileError, match=r"BertForMaskedLM.*BertModel"):
        transformers.BertForSequenceClassification.from_pretrained(folder)


def test_from_pretrained_takes_dtype(tmp_path):
    _, folder = saved_pruned(tmp_path)
    got = transformers.AutoModel.from_pretrained(folder, dtype=torch.float16)
    assert {p.dtype for p in got.parameters()} == {torch.float16}


def test_from_pretrained_refuses_what_it_cannot_honour(tmp_path):
    _, folder = saved_pruned(tmp_path)
    with pytest.raises(ModelFileError, match="ignore_mismatched_sizes"):
        transformers.AutoModel.from_pretrained(folder, ignore_mismatched_sizes=True)


def test_pipeline_on_the_folder_equals_compresskit_load(tmp_path):
    _, folder = saved_pruned(tmp_path, "bert", "BertForSequenceClassification", tokenizer=True)
    classify = transformers.pipeline("text-classification", model=str(folder), top_k=None)
    text = "a great film and really lovely"
    (rows,) = classify([text])
    scores = {d["label"]: d["score"] for d in rows}
    model = compresskit.load(folder)
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    with torch.no_grad():
        probs = model(**tokenizer(text, return_tensors="pt")).logits.softmax(-1)[0]
    for i, p in enumerate(probs.tolist()):
        assert scores[model.config.id2label[i]] == pytest.approx(p, abs=1e-6)


def test_save_pretrained_of_a_loaded_pruned_model_round_trips(tmp_path):
    _, folder = saved_pruned(tmp_path, "bert", "BertForSequenceClassification")
    loaded = transformers.AutoModelForSequenceClassification.from_pretrained(folder)
    loaded.save_pretrained(tmp_path / "again")
    assert (tmp_path / "again" / MANIFEST).is_file()
    again = transformers.AutoModelForSequenceClassification.from_pretrained(tmp_path / "again")
    assert PruningPlan.of_model(again) == UNEVEN
    assert_same_outputs(loaded, again, batch(loaded))


def test_save_pretrained_of_a_dense_model_is_transformers_own(tmp_path):
    model = tiny_model("bert", "BertForSequenceClassification")
    model.save_pretrained(tmp_path / "dense")
    assert not (tmp_path / "dense" / MANIFEST).exists()


def test_config_and_manifest_that_disagree_are_refused(tmp_path):
    _, folder = saved_pruned(tmp_path)
    config = json.loads((folder / "config.json").read_text())
    config["per_layer_config"]["0"]["num_attention_heads"] = 2
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelFileError, match="do not belong together"):
        compresskit.load(folder)


def test_per_layer_shapes_without_a_manifest_are_refused(tmp_path):
    _, folder = saved_pruned(tmp_path)
    (folder / MANIFEST).unlink()
    with pytest.raises(ModelFileError, match="per_layer_config"):
        load_checkpoint(str(folder))


PLAIN_TRANSFORMERS = textwrap.dedent(
    """
    import sys, transformers
    from transformers.integrations.heterogeneity.configuration_utils import (
        AmbiguousGlobalPerLayerAttributeError,
    )
    for kwargs in ({}, {"ignore_mismatched_sizes": True}):
        try:
            transformers.{cls}.from_pretrained(sys.argv[1], **kwargs)
        except AmbiguousGlobalPerLayerAttributeError:
            continue
        raise SystemExit("loaded")
    assert "compresskit" not in sys.modules
    print("refused")
    """
)


@pytest.mark.parametrize("model_type", ["bert", "distilbert"])
def test_plain_transformers_refuses_a_pruned_folder_rather_than_reinitialising(
    tmp_path, model_type
):
    class_name = f"{'Bert' if model_type == 'bert' else 'DistilBert'}ForSequenceClassification"
    _, folder = saved_pruned(tmp_path, model_type, class_name)
    done = subprocess.run(
        [sys.executable, "-c", PLAIN_TRANSFORMERS.replace("{cls}", class_name), str(folder)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.stdout.strip() == "refused", done.stderr[-2000:]


def test_import_compresskit_does_not_import_transformers():
    code = "import compresskit, sys; print('transformers' in sys.modules, 'torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "False False", done.stderr


# --- standalone folders: loadable without compresskit ------------------------------------------
def transformers_from_pretrained(cls, folder, **kwargs):
    """transformers' own from_pretrained, without compresskit's wrapper (which would load a
    compresskit folder itself)."""
    return transformers.PreTrainedModel.from_pretrained.__func__.__wrapped__(cls, folder, **kwargs)


@pytest.mark.parametrize(("model_type", "class_name"), ALL_MODEL_CLASSES)
def test_standalone_modeling_builds_exactly_compresskit_loads_model(
    tmp_path, model_type, class_name
):
    from compresskit import standalone_modeling

    model = compresskit.prune(tiny_model(model_type, class_name), UNEVEN)
    compresskit.save(model, tmp_path / "m", standalone=True)
    expected = compresskit.load(tmp_path / "m", attn_implementation="eager")
    got = transformers_from_pretrained(
        getattr(standalone_modeling, class_name), tmp_path / "m", attn_implementation="eager"
    )
    # The same weights and shapes (checked exactly below); the outputs agree to float rounding
    # (transformers' loader and compresskit's lay out some tensors differently: up to 1.4e-6
    # measured on these models).
    assert {k: v.shape for k, v in got.state_dict().items()} == {
        k: v.shape for k, v in expected.state_dict().items()
    }
    for key, value in expected.state_dict().items():
        assert torch.equal(got.state_dict()[key], value), key
    out_e, out_g = outputs(expected, batch(expected)), outputs(got, batch(expected))
    for key in out_e:
        assert torch.allclose(out_e[key], out_g[key], rtol=0, atol=1e-5), key


STANDALONE_CHECK = textwrap.dedent(
    """
    import sys
    sys.modules["compresskit"] = None  # this process cannot import compresskit
    import torch, transformers
    from safetensors.torch import load_file
    folder, expected_file, auto_class = sys.argv[1:4]
    expected = load_file(expected_file)
    model = getattr(transformers, auto_class).from_pretrained(
        folder, trust_remote_code=True, attn_implementation="eager"
    )
    inputs = {k[3:]: v for k, v in expected.items() if k.startswith("in.")}
    with torch.no_grad():
        out = model(**inputs)
    for key, value in expected.items():
        if key.startswith("out."):
            assert torch.equal(out[key[4:]], value), key
    print("same")
    """
)


@pytest.mark.parametrize("model_type", ["bert", "roberta", "distilbert"])
def test_a_standalone_folder_loads_where_compresskit_cannot_be_imported(tmp_path, model_type):
    from safetensors.torch import save_file

    class_name = next(c for c in ARCHITECTURES[model_type] if "SequenceClassification" in c)
    model = compresskit.prune(tiny_model(model_type, class_name), UNEVEN)
    compresskit.save(model, tmp_path / "m", standalone=True)
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert set(config["auto_map"]) == {"AutoModel", "AutoModelForSequenceClassification"}
    inputs = batch(model)
    with torch.no_grad():
        out = compresskit.load(tmp_path / "m", attn_implementation="eager")(**inputs)
    tensors = {f"in.{k}": v for k, v in inputs.items()}
    tensors |= {f"out.{k}": v for k, v in out.items() if isinstance(v, torch.Tensor)}
    save_file(tensors, tmp_path / "expected.safetensors")
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            STANDALONE_CHECK,
            str(tmp_path / "m"),
            str(tmp_path / "expected.safetensors"),
            "AutoModelForSequenceClassification",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"},
    )
    assert done.stdout.strip() == "same", done.stderr[-3000:]


def test_standalone_is_refused_for_an_architecture_it_does_not_know(tmp_path, monkeypatch):
    from compresskit import standalone_modeling

    monkeypatch.delitem(standalone_modeling.LAYOUTS, "bert")
    model = compresskit.prune(tiny_model("bert"), UNEVEN)
    with pytest.raises(ModelFileError, match="standalone"):
        compresskit.save(model, tmp_path / "m", standalone=True)
    assert not (tmp_path / "m").exists()
