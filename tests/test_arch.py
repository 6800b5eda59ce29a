"""Architecture adapters: every supported model class is found, others are refused by name."""

from __future__ import annotations

import pytest
import transformers
from conftest import ALL_MODEL_CLASSES, tiny_model

from compresskit.arch import get_adapter, supported_model_types
from compresskit.errors import UnsupportedModelError


def test_required_families_are_supported():
    assert {"bert", "roberta", "distilbert"} <= set(supported_model_types())


@pytest.mark.parametrize(("model_type", "class_name"), ALL_MODEL_CLASSES)
def test_adapter_finds_every_layer_head_and_neuron(model_type, class_name):
    adapter = get_adapter(tiny_model(model_type, class_name, layers=3, heads=4, head_dim=8, ffn=40))
    layers = adapter.layers()
    assert len(layers) == 3
    for layer in layers:
        assert adapter.num_heads(layer) == 4 and adapter.head_dim(layer) == 8
        assert adapter.ffn_width(layer) == 40
        parts = adapter.attention_parts(layer)
        assert parts.query.out_features == parts.output.in_features == 32
    assert adapter.config_shape(adapter.model.config) == (3, 4, 8, 40)


def test_unsupported_model_type_names_itself_and_the_supported_ones():
    model = transformers.GPT2Model(transformers.GPT2Config(n_layer=1, n_embd=16, n_head=2))
    with pytest.raises(UnsupportedModelError, match=r"'gpt2' is not supported.*bert.*distilbert"):
        get_adapter(model)


def test_a_module_without_config_is_refused():
    import torch

    with pytest.raises(UnsupportedModelError, match=r"has no config\.model_type"):
        get_adapter(torch.nn.Linear(2, 2))
