"""Bad input, at every entry point, is one line saying what is wrong and how to fix it: a
non-zero exit from the CLI, a CompressKitError subclass from Python; no traceback unless
COMPRESSKIT_DEBUG=1, and nothing written. Files from strangers (plans, compresskit.json,
weights, ONNX folders) end in the same errors, never in another exception."""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import pytest
import transformers
from click.testing import CliRunner
from conftest import tiny_model
from helpers import training_time_strategies
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import compresskit
from compresskit.cli import cli
from compresskit.cli import prune as prune_command
from compresskit.errors import (
    CompressKitError,
    ConfigError,
    ModelFileError,
    OutputExistsError,
    PlanError,
    UnknownStrategyError,
    UnsupportedModelError,
)
from compresskit.io import MANIFEST, WEIGHTS
from compresskit.plan import PruningPlan
from compresskit.registry import get_strategy, strategy_names
from compresskit.testing import write_tiny_checkpoint, write_tiny_sentiment, write_tiny_tokenizer

SEARCHING = training_time_strategies()[0]  # any training-time strategy
PLAN = PruningPlan.from_lists([[0, 2, 3], [], [1]], [list(range(0, 40, 3)), [7], []])


# --- the files the cases start from ----------------------------------------------------------
class Files:
    """Good inputs, written once; each case damages a copy of one of them."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.dense = write_tiny_checkpoint(root / "dense")  # a plain transformers folder
        self.data = write_tiny_sentiment(root / "data", n_train=16, n_dev=8)
        self.text = write(root / "text.txt", "the movie was good\n" * 8)
        self.saved = root / "saved"  # a pruned 2-label classifier, saved by compresskit
        compresskit.save(
            compresskit.prune(tiny_model("bert"), PLAN),
            self.saved,
            tokenizer=write_tiny_tokenizer(root / "tokenizer"),
        )

    def copy(self, name: str, tmp: Path) -> Path:
        return Path(shutil.copytree(getattr(self, name), tmp / f"{name}-copy"))


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Files:
    return Files(tmp_path_factory.mktemp("bad_input"))


def edit_json(path: Path, change: Callable[[dict[str, Any]], None]) -> Path:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))
    return path.parent


def truncate(path: Path, keep: int) -> Path:
    path.write_bytes(path.read_bytes()[:keep])
    return path.parent


def write(path: Path, content: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    return path


def data_folder(tmp: Path, train: str | bytes, dev: str = "sentence\tlabel\ngood\t1\n") -> Path:
    write(tmp / "d" / "train.tsv", train)
    write(tmp / "d" / "dev.tsv", dev)
    return tmp / "d"


def gpt2_folder(tmp: Path) -> Path:
    config = transformers.GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=50, n_positions=16)
    transformers.GPT2Model(config).save_pretrained(tmp / "gpt2")
    return tmp / "gpt2"


def pickled_weights(tmp: Path, files: Files) -> Path:
    folder = files.copy("dense", tmp)
    (folder / WEIGHTS).rename(folder / "pytorch_model.bin")
    return folder


def without_tokenizer(folder: Path) -> Path:
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (folder / name).unlink()
    return folder


def recipe(tmp: Path, text: str) -> str:
    return str(write(tmp / "recipe.yaml", text))


def prune_args(model: Path | str, out: Path, *extra: str) -> list[str]:
    return ["prune", "--strategy", "magnitude", "--model", str(model), "--output", str(out), *extra]


# --- the CLI ---------------------------------------------------------------------------------
# case -> (files, tmp, output) -> CLI arguments, and a fragment of the one line expected.
CliCase = Callable[[Files, Path, Path], list[str]]
CLI_CASES: dict[str, tuple[CliCase, str]] = {
    "model path missing": (
        lambda f, t, o: prune_args(t / "nowhere", o),
        "does not exist: give a folder with config.json",
    ),
    "model path is a file": (
        lambda f, t, o: prune_args(f.dense / "config.json", o),
        "is a file: give the folder",
    ),
    "model folder without config.json": (
        lambda f, t, o: prune_args(f.data, o),
        "has no config.json",
    ),
    "model type not supported": (
        lambda f, t, o: prune_args(gpt2_folder(t), o, "--heads-ratio", "0.5"),
        "model type 'gpt2' is not supported; supported types: bert",
    ),
    "heads ratio 1": (
        lambda f, t, o: prune_args(f.dense, o, "--heads-ratio", "1"),
        "heads_ratio must be a number in [0, 1)",
    ),
    "ffn ratio negative": (
        lambda f, t, o: prune_args(f.dense, o, "--ffn-ratio", "-0.1"),
        "ffn_ratio must be a number in [0, 1)",
    ),
    "heads ratio nan": (
        lambda f, t, o: prune_args(f.dense, o, "--heads-ratio", "nan"),
        "heads_ratio must be a number in [0, 1)",
    ),
    "ffn ratio inf": (
        lambda f, t, o: prune_args(f.dense, o, "--ffn-ratio", "inf"),
        "ffn_ratio must be a number in [0, 1)",
    ),
    "ratio not a number": (
        lambda f, t, o: prune_args(f.dense, o, "--heads-ratio", "half"),
        "'half' is not a valid float",
    ),
    "heads ratio leaves no head": (
        lambda f, t, o: prune_args(f.dense, o, "--heads-ratio", "0.9"),
        "heads_ratio 0.9 removes all 8 heads, leaving the model none: use a ratio below 0.875",
    ),
    "ffn ratio leaves no neuron": (
        lambda f, t, o: prune_args(f.dense, o, "--ffn-ratio", "0.99"),
        "ffn_ratio 0.99 removes all 32 FFN neurons",
    ),
    "unknown strategy": (
        lambda f, t, o: [
            "prune",
            "--strategy",
            "nope",
            "--model",
            str(f.dense),
            "--output",
            str(o),
        ],
        "unknown strategy 'nope'; known strategies:",
    ),
    "training strategy without a task": (
        lambda f, t, o: [
            *["prune", "--strategy", SEARCHING, "--model", str(f.dense), "--output", str(o)],
        ],
        "prunes while training: give --task and --data",
    ),
    "unknown option in a recipe": (
        lambda f, t, o: prune_args(f.dense, o, "--recipe", str(write(t / "r.yaml", "headz: 1\n"))),
        "unknown option(s) headz",
    ),
    "recipe not a mapping": (
        lambda f, t, o: prune_args(f.dense, o, "--recipe", str(write(t / "r.yaml", "- a\n"))),
        "must be a mapping",
    ),
    "unknown task": (
        lambda f, t, o: prune_args(f.dense, o, "--task", "nope", "--data", str(f.data)),
        "unknown task 'nope'",
    ),
    "data missing": (
        lambda f, t, o: prune_args(f.dense, o, "--task", "sst2", "--data", str(t / "none")),
        "does not exist: give a folder with train and dev files",
    ),
    "data file empty": (
        lambda f, t, o: prune_args(f.dense, o, "--task", "sst2", "--data", str(data_folder(t, ""))),
        "train.tsv is empty",
    ),
    "training from truncated weights": (
        lambda f, t, o: prune_args(
            truncate(f.copy("dense", t) / WEIGHTS, 200),
            o,
            "--task",
            "sst2",
            "--data",
            str(f.data),
        ),
        "is corrupt or truncated",
    ),
    "training from a folder without a tokenizer": (
        lambda f, t, o: prune_args(
            without_tokenizer(f.copy("dense", t)),
            o,
            "--task",
            "sst2",
            "--data",
            str(f.data),
        ),
        "has no usable tokenizer",
    ),
    "unknown data encoding": (
        lambda f, t, o: prune_args(
            f.dense, o, "--task", "sst2", "--data", str(f.data), "--encoding", "klingon"
        ),
        "unknown encoding 'klingon': give a Python codec name such as utf-8",
    ),
    "data file not utf-8": (
        lambda f, t, o: prune_args(
            f.dense,
            o,
            *["--task", "sst2", "--data"],
            str(data_folder(t, "sentence\tlabel\ncaf\xe9 good\t1\n".encode("latin-1"))),
        ),
        "train.tsv line 2 is not UTF-8 text (invalid continuation byte): re-save the file as "
        "UTF-8, or name its encoding with --encoding",
    ),
    "data without a label column": (
        lambda f, t, o: prune_args(
            f.dense, o, "--task", "sst2", "--data", str(data_folder(t, "text\ty\ngood\t1\n"))
        ),
        "has no label column",
    ),
    "labels the model cannot take": (
        lambda f, t, o: prune_args(
            f.saved,
            o,
            *["--task", "classification", "--data"],
            str(data_folder(t, "text\tlabel\ngood\ta\nbad\tb\nfine\tc\n", "text\tlabel\nok\ta\n")),
        ),
        "with 2 labels in the checkpoint, 3 in the data",
    ),
    "weights truncated": (
        lambda f, t, o: prune_args(truncate(f.copy("dense", t) / WEIGHTS, 500), o),
        "model.safetensors is corrupt or truncated",
    ),
    "weights not safetensors": (
        lambda f, t, o: prune_args(write(f.copy("dense", t) / WEIGHTS, b"\0" * 64).parent, o),
        "model.safetensors is corrupt or truncated",
    ),
    "weights only as a pickle": (
        lambda f, t, o: prune_args(pickled_weights(t, f), o),
        "a pickle that can run code",
    ),
    "config.json of another model": (
        lambda f, t, o: prune_args(
            edit_json(f.copy("dense", t) / "config.json", lambda c: c.update(intermediate_size=24)),
            o,
        ),
        "does not match config.json",
    ),
    "config.json with a field of the wrong type": (
        lambda f, t, o: prune_args(
            edit_json(f.copy("dense", t) / "config.json", lambda c: c.update(hidden_size="32")),
            o,
        ),
        "Validation error for field 'hidden_size'",
    ),
    "compresskit.json with absurd sizes": (
        lambda f, t, o: prune_args(
            edit_json(
                f.copy("saved", t) / "config.json", lambda c: c.update(intermediate_size=10**12)
            ),
            o,
        ),
        "more than this machine's",
    ),
    "compresskit.json of another layer count": (
        lambda f, t, o: prune_args(
            edit_json(f.copy("saved", t) / MANIFEST, lambda m: m["layers"].pop()), o
        ),
        "describes 2 layers but config.json has 3",
    ),
    "compresskit.json keeping heads the weights lack": (
        lambda f, t, o: prune_args(
            edit_json(
                f.copy("saved", t) / MANIFEST, lambda m: m["layers"][1].update(heads_kept=[0])
            ),
            o,
        ),
        "the files do not belong together",
    ),
    "export of a missing folder": (
        lambda f, t, o: ["export", "onnx", str(t / "nowhere"), "--output", str(o)],
        "does not exist",
    ),
    "export with a wrong opset": (
        lambda f, t, o: ["export", "onnx", str(f.saved), "--output", str(o), "--opset", "9"],
        "Invalid value for '--opset'",
    ),
    "info of a plain transformers folder": (
        lambda f, t, o: ["info", str(f.dense)],
        "compresskit.json is missing",
    ),
    # Recipes: the same checks as the flags, with YAML's types; never remote code.
    **{
        f"recipe {text.strip()!r}": (
            lambda f, t, o, text=text: prune_args(f.dense, o, "--recipe", recipe(t, text)),
            message,
        )
        for text, message in [
            ("trust-remote-code: true", "cannot be set in a recipe"),
            ('trust-remote-code: "no"', "cannot be set in a recipe"),
            ('overwrite: "false"', "overwrite must be true or false, got 'false' (a string)"),
            ("overwrite: 1", "overwrite must be true or false, got 1 (an integer)"),
            ('seq_len: "abc"', "seq_len must be an integer, got 'abc'"),
            ("seq_len: 0", "0 is not in the range x>=1"),
            ("seq_len: 1.5", "seq_len must be an integer"),
            ("output: [a, b]", "output must be a string, got ['a', 'b'] (a list)"),
            ("model: null", "model has no value"),
            ('heads-ratio: "0.5"', "heads_ratio must be a number, got '0.5'"),
            ("progress: yes-please", "progress must be true or false"),
            ("task: 3", "task must be a string"),
            ("a: &a [1, 1, 1]\nb: &b [*a, *a, *a]\nc: [*b, *b, *b]\n", "aliases"),
            ("a: " + "x" * 70_000 + "\n", "recipes are at most 65536"),
        ]
    },
    # config.json values transformers would reject (or crash on) while building the model.
    **{
        f"config.json with {change}": (
            lambda f, t, o, change=change: prune_args(
                edit_json(f.copy("dense", t) / "config.json", lambda c: c.update(change)), o
            ),
            message,
        )
        for change, message in [
            ({"num_attention_heads": 3}, "hidden_size 32 is not a multiple of 3 heads"),
            ({"intermediate_size": -4}, "intermediate_size must be a positive integer, got -4"),
            ({"num_hidden_layers": 0}, "num_hidden_layers must be a positive integer, got 0"),
            ({"vocab_size": 0}, "vocab_size must be a positive integer"),
            ({"hidden_dropout_prob": 2.0}, "hidden_dropout_prob must be a probability"),
            ({"hidden_act": "nope"}, "hidden_act 'nope' is not an activation"),
            ({"layer_norm_eps": -1.0}, "layer_norm_eps must be a small positive number"),
        ]
    },
    "config.json that is a list": (
        lambda f, t, o: prune_args(write(f.copy("dense", t) / "config.json", "[1, 2]").parent, o),
        "cannot read the config of",
    ),
    "compresskit.json naming a class of another architecture": (
        lambda f, t, o: prune_args(
            edit_json(f.copy("saved", t) / MANIFEST, lambda m: m.update(architecture="GPT2Model")),
            o,
        ),
        "'GPT2Model' is not a transformers model class for model_type 'bert'",
    ),
    "compresskit.json naming an abstract class": (
        lambda f, t, o: prune_args(
            edit_json(
                f.copy("saved", t) / MANIFEST,
                lambda m: m.update(architecture="BertPreTrainedModel"),
            ),
            o,
        ),
        "is not a transformers model class",
    ),
    "max-seq-len above the model's positions": (
        lambda f, t, o: prune_args(
            f.dense, o, "--task", "sst2", "--data", str(f.data), "--max-seq-len", "64"
        ),
        "--max-seq-len 64 is above the 32 positions of",
    ),
    "pre-training a model larger than memory": (
        lambda f, t, o: [
            *["prune", "--strategy", SEARCHING, "--task", "mlm", "--data", str(f.text)],
            *["--config", "layers=48,hidden=8192,heads=64,ffn=32768", "--tokenizer", str(f.dense)],
            *["--output", str(o)],
        ],
        "more than this machine's",
    ),
    "a local path that does not exist": (
        lambda f, t, o: prune_args(Path(os.path.relpath(t)) / "bse1", o),
        "does not exist: give a folder with config.json",
    ),
    "a corrupt tokenizer.json": (
        lambda f, t, o: prune_args(truncate(f.copy("dense", t) / "tokenizer.json", 100), o),
        "tokenizer.json, tokenizer_config.json) cannot be read",
    ),
}


def one_line_error(result: Any) -> str:
    """The single line a failed command printed (stdout is empty, and no progress bar of
    a model that had started loading comes before it)."""
    assert "Traceback" not in result.output
    assert result.stdout.strip() == ""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.mark.parametrize(("case", "message"), CLI_CASES.values(), ids=list(CLI_CASES))
def test_cli_bad_input_is_one_line_and_writes_nothing(files, tmp_path, case, message):
    output = tmp_path / "out" / "model"
    result = CliRunner().invoke(cli, case(files, tmp_path, output))
    assert result.exit_code != 0
    assert isinstance(result.exception, SystemExit), result.exception
    line = one_line_error(result)
    assert line.startswith("Error: ") and message in line
    # Neither the output nor anything beside it (a temporary folder, an unfinished run).
    assert not output.parent.exists() or list(output.parent.iterdir()) == []


def test_an_existing_output_is_refused_and_kept(files, tmp_path):
    output = tmp_path / "out"
    write(output / "mine.txt", "keep")
    result = CliRunner().invoke(cli, prune_args(files.dense, output))
    assert result.exit_code == 1
    assert "already exists: choose another folder or pass" in one_line_error(result)
    assert [p.name for p in output.iterdir()] == ["mine.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_the_debug_variable_shows_the_traceback_of_bad_input(files, tmp_path):
    args = prune_args(files.dense, tmp_path / "out", "--heads-ratio", "1")
    run = subprocess.run(
        [sys.executable, "-m", "compresskit", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "COMPRESSKIT_DEBUG": "1"},
    )
    assert run.returncode != 0
    assert "Traceback" in run.stderr and "ConfigError: heads_ratio must be" in run.stderr


# --- the Python API --------------------------------------------------------------------------
ApiCase = Callable[[Files, Path, Path], Any]
API_CASES: dict[str, tuple[ApiCase, type[CompressKitError], str]] = {
    "load a missing folder": (
        lambda f, t, o: compresskit.load(t / "nowhere"),
        ModelFileError,
        "does not exist",
    ),
    "load a truncated model.safetensors": (
        lambda f, t, o: compresskit.load(truncate(f.copy("saved", t) / WEIGHTS, 2000)),
        ModelFileError,
        "corrupt or truncated",
    ),
    "load with a hostile compresskit.json": (
        lambda f, t, o: compresskit.load(
            edit_json(f.copy("saved", t) / MANIFEST, lambda m: m.update(layers=[{"a": 1}] * 3))
        ),
        ModelFileError,
        "needs 'heads_kept' and 'ffn_kept'",
    ),
    "load a compresskit.json of a newer format": (
        lambda f, t, o: compresskit.load(
            edit_json(f.copy("saved", t) / MANIFEST, lambda m: m.update(format_version=2))
        ),
        ModelFileError,
        "format_version 2; this compresskit reads version 1",
    ),
    "unknown strategy": (lambda f, t, o: get_strategy("nope"), UnknownStrategyError, "nope"),
    "ratio as a string": (
        lambda f, t, o: get_strategy("magnitude", heads_ratio="0.5"),
        ConfigError,
        "heads_ratio must be a number",
    ),
    "a plan of another layer count": (
        lambda f, t, o: compresskit.prune(tiny_model("bert"), PruningPlan.from_lists([[0]], [[0]])),
        PlanError,
        "the plan has 1 layers but the model has 3",
    ),
    "a plan keeping heads the model lacks": (
        lambda f, t, o: compresskit.prune(
            tiny_model("bert"), PruningPlan.from_lists([[9]] * 3, [[0]] * 3)
        ),
        PlanError,
        "keeps heads [9] that the model does not have",
    ),
    "a plan file that is not UTF-8": (
        lambda f, t, o: PruningPlan.from_json(write(t / "plan.json", b"\xff\xfe{")),
        PlanError,
        "cannot read plan file",
    ),
    "a plan file nested too deeply": (
        lambda f, t, o: PruningPlan.from_json(write(t / "plan.json", "[" * 100_000)),
        PlanError,
        "not valid JSON",
    ),
    "save something that is not a model": (
        lambda f, t, o: compresskit.save(object(), o),  # type: ignore[arg-type]
        UnsupportedModelError,
        "has no config.model_type",
    ),
    "save over an existing output": (
        lambda f, t, o: compresskit.save(tiny_model("bert"), write(o / "x", "mine").parent),
        OutputExistsError,
        "already exists",
    ),
}


@pytest.mark.parametrize(("case", "error", "message"), API_CASES.values(), ids=list(API_CASES))
def test_api_bad_input_raises_a_typed_one_line_error(files, tmp_path, case, error, message):
    output = tmp_path / "out"
    with pytest.raises(error) as raised:
        case(files, tmp_path, output)
    assert message in str(raised.value) and "\n" not in str(raised.value)
    existed = output.exists()  # only "save over an existing output" made it beforehand
    assert not existed or [p.name for p in output.iterdir()] == ["x"]
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # no scratch left


# --- untrusted files, fuzzed -----------------------------------------------------------------
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)
layer_entries = st.fixed_dictionaries(
    {"heads_kept": json_values | st.lists(st.integers(-3, 2**40), max_size=5)},
    optional={
        "ffn_kept": json_values | st.lists(st.integers(-3, 50), max_size=5),
        "x": json_values,
    },
)
plan_documents = json_values | st.fixed_dictionaries(
    {"layers": st.lists(layer_entries, max_size=4)},
    optional={"format": json_values, "version": json_values},
)
FUZZ_MODEL = tiny_model("bert")
FUZZ = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@FUZZ
@given(document=plan_documents)
def test_any_plan_file_is_read_or_refused_with_plan_error(tmp_path, document):
    path = write(tmp_path / "plan.json", json.dumps(document))
    try:
        plan = PruningPlan.from_json(path)
    except PlanError as err:
        assert "\n" not in str(err)
        return
    with contextlib.suppress(PlanError):  # a plan that parses may still not fit the model
        plan.validate(FUZZ_MODEL)


manifest_changes = st.dictionaries(
    st.sampled_from(["format", "format_version", "model_type", "architecture", "layers"]),
    json_values | st.lists(layer_entries, min_size=3, max_size=3),
    min_size=1,
    max_size=2,
) | st.tuples(
    st.integers(0, 2),
    st.sampled_from(["heads_kept", "ffn_kept", "head_dim"]),
    json_values | st.lists(st.integers(-1, 2**40), max_size=4),
)


@FUZZ
@given(change=manifest_changes)
def test_any_compresskit_json_loads_or_is_refused_with_a_typed_error(files, tmp_path, change):
    folder = tmp_path / "fuzzed"
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(files.saved, folder)
    manifest = json.loads((folder / MANIFEST).read_text())
    if isinstance(change, dict):
        manifest.update(change)
    else:
        layer, key, value = change
        manifest["layers"][layer][key] = value
    (folder / MANIFEST).write_text(json.dumps(manifest))
    try:
        compresskit.load(folder)
    except CompressKitError as err:
        assert "\n" not in str(err)


ratio_values = (
    st.floats(allow_nan=True, allow_infinity=True).filter(lambda x: not 0 <= x < 1)
    | st.sampled_from([math.nan, math.inf, -math.inf, 1.0, -0.0001, 1e308])
    | st.text(max_size=6)
    | st.none()
    | st.booleans()
    | st.lists(st.floats(0, 0.5), max_size=2)
)


@FUZZ
@given(
    name=st.sampled_from(strategy_names()),
    option=st.sampled_from(["heads_ratio", "ffn_ratio"]),
    value=ratio_values,
)
def test_get_strategy_refuses_any_ratio_outside_zero_one(name, option, value):
    with pytest.raises(ConfigError, match=f"{option} must be a number in \\[0, 1\\)"):
        get_strategy(name, **{option: value})


@FUZZ
@given(
    value=st.floats(allow_nan=True, allow_infinity=True).filter(lambda x: not 0 <= x < 1).map(repr)
    | st.text(min_size=1, max_size=6).filter(lambda s: not s.startswith("-"))
)
def test_the_cli_refuses_any_ratio_outside_zero_one_in_one_line(files, tmp_path, value):
    assume(not _a_good_ratio(value))  # text such as "0" is a ratio the command takes
    output = tmp_path / "out"
    result = CliRunner().invoke(cli, prune_args(files.dense, output, "--ffn-ratio", value))
    assert result.exit_code != 0
    line = one_line_error(result)
    assert "ffn-ratio" in line or "ffn_ratio" in line
    assert not output.exists()


RECIPE_OPTIONS = [
    p
    for p in prune_command.params
    if isinstance(p, click.Option) and p.name not in ("recipe", "trust_remote_code")
]
TEXT = st.text(max_size=6)
SCALARS = st.integers(-5, 5) | st.floats(allow_nan=False, allow_infinity=False) | st.booleans()
CONTAINERS = st.lists(st.integers(), max_size=2) | st.dictionaries(TEXT, st.integers(), max_size=1)
# For each kind of flag: YAML values of every other type.
WRONG_TYPE = {
    "flag": TEXT | st.integers() | st.floats() | CONTAINERS,
    "integer": TEXT
    | st.floats().filter(lambda x: x != int(x) if math.isfinite(x) else True)
    | st.booleans()
    | CONTAINERS,
    "number": TEXT | st.booleans() | CONTAINERS,
    "string": SCALARS | CONTAINERS,
}


def _kind(option: click.Option) -> str:
    if option.is_flag:
        return "flag"
    if isinstance(option.type, click.types.IntParamType):
        return "integer"
    return "number" if isinstance(option.type, click.types.FloatParamType) else "string"


@FUZZ
@given(option=st.sampled_from(RECIPE_OPTIONS), data=st.data())
def test_a_recipe_value_of_the_wrong_type_is_refused_in_one_line(files, tmp_path, option, data):
    value = data.draw(WRONG_TYPE[_kind(option)])
    path = write(tmp_path / "r.json", json.dumps({option.name: value}))
    output = tmp_path / "out"
    result = CliRunner().invoke(cli, prune_args(files.dense, output, "--recipe", str(path)))
    assert result.exit_code == 1
    assert f"recipe {path}: {option.name} must be" in one_line_error(result)
    assert not output.exists()


def _a_good_ratio(text: str) -> bool:
    try:
        return 0 <= float(text) < 1
    except ValueError:
        return False


# --- atomic outputs --------------------------------------------------------------------------
KILLED_SAVE = """
import os, signal, sys
sys.path.insert(0, "tests")
from conftest import tiny_model
import compresskit, compresskit.io as io
real = io.save_model
def save_then_die(*args, **kwargs):
    real(*args, **kwargs)
    os.kill(os.getpid(), signal.SIGKILL)  # killed mid-write: weights written, manifest not
io.save_model = save_then_die
compresskit.save(tiny_model("bert"), sys.argv[1], overwrite=True)
"""


def test_a_save_killed_mid_write_leaves_the_previous_output_and_is_cleaned_up(tmp_path):
    target = tmp_path / "model"
    compresskit.save(compresskit.prune(tiny_model("bert"), PLAN), target)
    before = sorted(p.name for p in target.iterdir())
    run = subprocess.run(
        [sys.executable, "-c", KILLED_SAVE, str(target)], cwd=Path(__file__).parents[1]
    )
    assert run.returncode == -signal.SIGKILL
    assert PruningPlan.of_model(compresskit.load(target)) == PLAN  # the previous output
    assert sorted(p.name for p in target.iterdir()) == before
    leftovers = [p for p in tmp_path.iterdir() if p.name != "model"]
    assert leftovers and all(p.name.startswith(".model.ck-") for p in leftovers)
    compresskit.save(tiny_model("bert"), target, overwrite=True)  # the next write cleans up
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


def test_a_previous_output_moved_aside_by_a_killed_writer_is_put_back(tmp_path):
    target = tmp_path / "model"
    compresskit.save(compresskit.prune(tiny_model("bert"), PLAN), target)
    # A writer killed between its two renames leaves the old output at .NAME.ck-PID-old.
    dead_pid = _a_pid_that_is_not_running()
    target.rename(tmp_path / f".model.ck-{dead_pid}-old")
    compresskit.save(tiny_model("bert"), tmp_path / "model", overwrite=False)
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


def _a_pid_that_is_not_running() -> int:
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    return int(done.stdout)


@pytest.mark.parametrize("stage", ["score", "save"])
def test_a_prune_that_fails_at_any_stage_writes_nothing(files, tmp_path, monkeypatch, stage):
    from compresskit import pipeline

    def fail(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError(f"failed while {stage}")

    if stage == "score":
        monkeypatch.setattr(pipeline, "get_strategy_class", lambda name: _failing_strategy(fail))
    else:
        monkeypatch.setattr(pipeline, "write_model", fail)
    job = pipeline.PruneJob(str(files.dense), "magnitude", tmp_path / "out", {"heads_ratio": 0.5})
    with pytest.raises(RuntimeError, match=f"failed while {stage}"):
        pipeline.run_prune(job)
    assert list(tmp_path.iterdir()) == []


def _failing_strategy(fail: Callable[..., None]) -> Any:
    from compresskit.registry import get_strategy_class

    base = get_strategy_class("magnitude")
    return type("Failing", (base,), {"plan": lambda self, model, batches=None: fail()})
