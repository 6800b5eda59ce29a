"""`compresskit prune` with one-shot strategies."""

from __future__ import annotations

import copy
import json

import pytest
import torch
import transformers
from click.testing import CliRunner
from conftest import batch, tiny_model
from helpers import max_diff_at_tokens, outputs

import compresskit
from compresskit.cli import cli


@pytest.fixture
def dense_dir(tmp_path):
    compresskit.save(tiny_model("bert", "BertForSequenceClassification"), tmp_path / "dense")
    return tmp_path / "dense"


def prune_cli(*args: str):
    return CliRunner().invoke(cli, ["prune", *args])


def test_prune_saves_the_model_the_report_and_prints_the_table(dense_dir, tmp_path):
    result = prune_cli(
        "--strategy",
        "magnitude",
        "--model",
        str(dense_dir),
        "--heads-ratio",
        "0.5",
        "--ffn-ratio",
        "0.5",
        "--output",
        str(tmp_path / "out"),
    )
    assert result.exit_code == 0, result.output
    assert "layer heads" in result.output and "fewer" in result.output
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert [layer["heads"] for layer in report["after"]["layers"]] == [2, 2, 2]
    assert report["strategy"]["config"]["heads_ratio"] == 0.5
    assert report["macs_ratio"] > 1.5
    assert compresskit.PruningPlan.of_model(compresskit.load(tmp_path / "out")).heads_per_layer == [
        2,
        2,
        2,
    ]


def test_recipe_values_apply_and_flags_override_them(dense_dir, tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        f"strategy: random\nmodel: {dense_dir}\nheads-ratio: 0.5\n"
        "ffn_ratio: 0.25\nseed: 3\nround_to: 8\n"
    )
    result = prune_cli(
        "--recipe", str(recipe), "--heads-ratio", "0.25", "--output", str(tmp_path / "out")
    )
    assert result.exit_code == 0, result.output
    config = json.loads((tmp_path / "out" / "report.json").read_text())["strategy"]["config"]
    assert (config["heads_ratio"], config["ffn_ratio"], config["seed"], config["round_to"]) == (
        0.25,
        0.25,
        3,
        8,
    )


def test_same_seed_gives_the_same_plan(dense_dir, tmp_path):
    for name in ("a", "b"):
        prune_cli(
            "--strategy",
            "random",
            "--model",
            str(dense_dir),
            "--heads-ratio",
            "0.5",
            "--ffn-ratio",
            "0.5",
            "--seed",
            "7",
            "--output",
            str(tmp_path / name),
        )
    plans = [
        json.loads((tmp_path / n / "compresskit.json").read_text())["layers"] for n in ("a", "b")
    ]
    assert plans[0] == plans[1]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--heads-ratio", "1.0"], "heads_ratio must be a number in [0, 1)"),
        (["--ffn-ratio", "-0.1"], "ffn_ratio must be a number in [0, 1)"),
        (["--strategy", "nope"], "unknown strategy 'nope'; known strategies:"),
        (["--model", "./no/such/model"], "does not exist"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(dense_dir, tmp_path, args, message):
    base = {"--strategy": "magnitude", "--model": str(dense_dir), "--output": str(tmp_path / "o")}
    base.update(dict(zip(args[::2], args[1::2], strict=True)))
    result = prune_cli(*[x for kv in base.items() for x in kv])
    assert result.exit_code == 1
    (line,) = result.output.strip().splitlines()
    assert line.startswith("Error: ") and message in line
    assert not (tmp_path / "o").exists()


def test_an_existing_output_needs_overwrite(dense_dir, tmp_path):
    args = ["--strategy", "magnitude", "--model", str(dense_dir), "--output", str(tmp_path / "o")]
    assert prune_cli(*args).exit_code == 0
    result = prune_cli(*args)
    assert result.exit_code == 1 and "--overwrite" in result.output
    assert prune_cli(*args, "--overwrite").exit_code == 0


def test_overwrite_refuses_a_folder_with_the_users_files(dense_dir, tmp_path):
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "mine.txt").write_text("keep")
    args = ["--strategy", "magnitude", "--model", str(dense_dir), "--output", str(tmp_path / "o")]
    result = prune_cli(*args, "--overwrite")
    assert result.exit_code == 1 and "mine.txt, which compresskit did not write" in result.output
    assert (tmp_path / "o" / "mine.txt").read_text() == "keep"


def test_a_bad_recipe_is_one_line(tmp_path):
    (tmp_path / "r.yaml").write_text("- just\n- a list\n")
    result = prune_cli("--recipe", str(tmp_path / "r.yaml"))
    assert result.exit_code == 1 and "must be a mapping" in result.output


def test_pruning_a_pruned_folder_composes(dense_dir, tmp_path):
    common = ["--strategy", "magnitude", "--ffn-ratio", "0.5"]
    prune_cli(
        *common,
        "--model",
        str(dense_dir),
        "--heads-ratio",
        "0.5",
        "--output",
        str(tmp_path / "once"),
    )
    result = prune_cli(
        *common,
        "--model",
        str(tmp_path / "once"),
        "--heads-ratio",
        "0.5",
        "--output",
        str(tmp_path / "twice"),
    )
    assert result.exit_code == 0, result.output
    model = compresskit.load(tmp_path / "twice")
    assert compresskit.PruningPlan.of_model(model).heads_per_layer == [1, 1, 1]
    inputs = batch(model)
    assert outputs(model, inputs)["logits"].shape == (3, 2)


@pytest.mark.real
def test_magnitude_on_the_real_minilm_gives_8_heads_equal_to_the_masked_model(
    minilm_path, tmp_path
):
    result = prune_cli(
        "--strategy",
        "magnitude",
        "--model",
        str(minilm_path),
        "--heads-ratio",
        "0.3333",
        "--ffn-ratio",
        "0.4",
        "--output",
        str(tmp_path / "out"),
    )
    assert result.exit_code == 0, result.output
    slim = compresskit.load(tmp_path / "out", attn_implementation="eager")
    plan = compresskit.PruningPlan.of_model(slim)
    assert plan.heads_per_layer == [8] * 6
    dense = transformers.AutoModel.from_pretrained(minilm_path, attn_implementation="eager")
    masked = compresskit.mask(copy.deepcopy(dense), plan).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(tmp_path / "out")
    inputs = dict(tokenizer(["a tender, funny film", "no."], padding=True, return_tensors="pt"))
    with torch.no_grad():
        diff = max_diff_at_tokens(
            outputs(masked, inputs), outputs(slim, inputs), inputs["attention_mask"]
        )
    assert diff <= 1e-5
