"""Issue #2's acceptance on the real checkpoint: MiniLM-L6-H384 with 4 of 12 heads removed in
every layer and 40% of FFN neurons removed (global ranking)."""

from __future__ import annotations

import copy

import pytest
import torch
import transformers
from click.testing import CliRunner
from helpers import max_diff_at_tokens, outputs

import compresskit
from compresskit.cli import cli
from compresskit.plan import plan_from_scores
from compresskit.stats import model_stats

SENTENCES = [
    "a gripping, beautifully shot film",
    "dull.",
    "the plot never quite comes together, but the cast is wonderful to watch",
]


@pytest.fixture(scope="module")
def minilm(minilm_path):
    model = transformers.AutoModel.from_pretrained(minilm_path, attn_implementation="eager")
    tokenizer = transformers.AutoTokenizer.from_pretrained(minilm_path)
    g = torch.Generator().manual_seed(0)
    plan = plan_from_scores(
        model,
        [torch.rand(12, generator=g) for _ in range(6)],
        [torch.rand(1536, generator=g) for _ in range(6)],
        heads_ratio=1 / 3,
        ffn_ratio=0.4,
        ffn_scope="global",
    )
    inputs = dict(tokenizer(SENTENCES, padding=True, return_tensors="pt"))
    return model.eval(), tokenizer, plan, inputs


@pytest.mark.real
def test_real_minilm_pruned_equals_masked_and_cuts_macs(minilm, tmp_path):
    model, tokenizer, plan, inputs = minilm
    assert plan.heads_per_layer == [8] * 6
    assert sum(plan.ffn_per_layer) == 9216 - round(0.4 * 9216)
    masked = compresskit.mask(copy.deepcopy(model), plan)
    pruned = compresskit.prune(copy.deepcopy(model), plan)
    expected = outputs(masked, inputs)
    assert max_diff_at_tokens(expected, outputs(pruned, inputs), inputs["attention_mask"]) <= 1e-5

    dense_macs = model_stats(model, 128).macs
    assert dense_macs / model_stats(pruned, 128).macs >= 1.6

    compresskit.save(pruned, tmp_path / "slim", tokenizer=tokenizer)
    loaded = compresskit.load(tmp_path / "slim", attn_implementation="eager")
    for key, value in outputs(pruned, inputs).items():
        assert torch.equal(outputs(loaded, inputs)[key], value), key

    result = CliRunner().invoke(cli, ["info", str(tmp_path / "slim")])
    assert result.exit_code == 0, result.output
    heads = [line.split()[1] for line in result.output.splitlines()[2:8]]
    assert heads == ["8"] * 6


@pytest.mark.real
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_real_minilm_is_exact_in_float64_at_every_position(minilm, attn):
    model, _, plan, inputs = minilm
    model = copy.deepcopy(model).double()
    model.set_attn_implementation(attn)
    masked = outputs(compresskit.mask(copy.deepcopy(model), plan), inputs)
    pruned = outputs(compresskit.prune(copy.deepcopy(model), plan), inputs)
    for key in masked:
        assert (masked[key] - pruned[key]).abs().max().item() < 1e-10
