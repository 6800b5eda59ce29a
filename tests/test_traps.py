"""The library behaviours of docs/library-pitfalls.md that compresskit depends on. If an
upgrade changes one of them, this file says which assumption broke."""

from __future__ import annotations

import pytest
import torch
import transformers
from conftest import batch, tiny_model


def test_transformers_has_no_prune_heads_any_more():
    # Why compresskit has its own pruner and loader.
    assert not hasattr(transformers.PreTrainedModel, "prune_heads")


def test_from_pretrained_cannot_rebuild_a_pruned_model(tmp_path):
    # BertConfig cannot express pruned shapes: from_pretrained fails, and with
    # ignore_mismatched_sizes=True it silently re-initialises the pruned weights at dense
    # shapes. Why compresskit.json carries the per-layer shapes and compresskit.load exists.
    import compresskit
    from compresskit.plan import PruningPlan

    model = compresskit.prune(tiny_model("bert"), PruningPlan.from_lists([[0]] * 3, [[0]] * 3))
    # transformers' own save_pretrained: compresskit wraps it to write its folder for pruned
    # models (compresskit/hf.py), and this pins what transformers does by itself.
    transformers_save = transformers.PreTrainedModel.save_pretrained.__wrapped__
    transformers_save(model, tmp_path)
    with pytest.raises(RuntimeError, match="ignore_mismatched_sizes"):
        transformers.BertForSequenceClassification.from_pretrained(tmp_path)
    reloaded = transformers.BertForSequenceClassification.from_pretrained(
        tmp_path, ignore_mismatched_sizes=True
    )
    assert reloaded.bert.encoder.layer[0].attention.self.query.weight.shape == (32, 32)


def test_bert_attention_infers_the_head_count_at_run_time():
    # Reshape uses (-1, head_size): the forward runs with fewer heads than the config says.
    model = tiny_model("bert", layers=1, heads=4)
    attn = model.bert.encoder.layer[0].attention
    for proj in (attn.self.query, attn.self.key, attn.self.value):
        proj.weight.data, proj.bias.data = proj.weight.data[:16], proj.bias.data[:16]
    attn.output.dense.weight.data = attn.output.dense.weight.data[:, :16]
    assert model(**batch(model)).logits.shape == (3, 2)


def test_torch_pruning_reports_version_1_6_0_in_the_1_6_1_wheel():
    import torch_pruning

    assert torch_pruning.__version__.startswith("1.6")


def test_whole_model_pickles_need_weights_only_false(tmp_path):
    torch.save(tiny_model("bert"), tmp_path / "m.pt")
    with pytest.raises(Exception, match=r"[Ww]eights only"):
        torch.load(tmp_path / "m.pt")
