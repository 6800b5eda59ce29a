"""Bad training data, in every format, is one ConfigError naming the file and line, never a
traceback and never data read silently wrong: JSON too deep or too long to read, labels that
are numbers but not integers (a regression target), CSV quoting that would merge or shift
lines. And a command that needs the onnx extra, without it, says so in one line."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import compresskit.exporters
from compresskit.cli import cli
from compresskit.errors import ConfigError, MissingDependencyError
from compresskit.testing import write_tiny_checkpoint
from compresskit.train.data import load_task
from compresskit.train.mlm_data import load_text

DEEP = 100_000


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def config_error(path: Path, task: str = "classification") -> str:
    """The one-line ConfigError that reading `path` raises."""
    with pytest.raises(ConfigError) as raised:
        load_task(task, path)
    message = str(raised.value)
    assert "\n" not in message and len(message) < 400, message
    return message


def one_line_error(result: Any) -> str:
    """The single line a failed command printed on stderr: no traceback, nothing on stdout."""
    assert "Traceback" not in result.output
    assert result.stdout.strip() == ""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.fixture(scope="module")
def dense(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_checkpoint(tmp_path_factory.mktemp("bad_data") / "dense")


# --- JSON the json module cannot hold ------------------------------------------------------

GOOD_LINE = '{"text": "good", "label": 1}'
UNREADABLE_JSON = {
    "an array nested 100000 deep, unclosed": "[" * DEEP,
    "an array nested 100000 deep, closed": "[" * DEEP + "]" * DEEP,
    "objects nested 100000 deep": '{"a": ' * DEEP + "1" + "}" * DEEP,
    "a text nested 100000 deep": '{"text": ' + "[" * DEEP + "]" * DEEP + ', "label": 1}',
    "a label nested 100000 deep": '{"text": "a", "label": ' + "[" * DEEP + "]" * DEEP + "}",
    "a label of 5000 digits": '{"text": "a", "label": ' + "7" * 5000 + "}",
}


@pytest.mark.parametrize("line", UNREADABLE_JSON.values(), ids=list(UNREADABLE_JSON))
@pytest.mark.parametrize("number", [1, 3])
def test_json_too_deep_or_too_long_to_read_is_one_config_error_naming_file_and_line(
    tmp_path, line, number
):
    lines = [GOOD_LINE, '{"text": "bad", "label": 0}', GOOD_LINE]
    lines[number - 1] = line
    path = write(tmp_path / "train.jsonl", "\n".join(lines) + "\n")
    assert f"train.jsonl:{number} " in config_error(path)


@pytest.mark.parametrize("value", ["[" * 50 + "]" * 50, '{"a": ' * 50 + "1" + "}" * 50])
def test_a_nested_value_that_json_can_read_is_refused_in_a_short_line(tmp_path, value):
    text = f'{{"text": {value}, "label": 1}}\n{{"text": "b", "label": 0}}\n'
    message = config_error(write(tmp_path / "train.jsonl", text))
    assert "train.jsonl line 1: column 'text' must be a string" in message


BRACKETS = "[" * DEEP + " {" * 1000
TEXT_FILES = {
    "tsv": ("train.tsv", f"sentence\tlabel\n{BRACKETS}\t1\na\t0\nb\t1\nc\t0\n"),
    "csv": ("train.csv", f"text,label\n{BRACKETS},1\na,0\nb,1\nc,0\n"),
}


@pytest.mark.parametrize(("name", "text"), TEXT_FILES.values(), ids=list(TEXT_FILES))
def test_brackets_in_tsv_and_csv_text_are_text(tmp_path, name, text):
    data = load_task("classification", write(tmp_path / name, text), seed=1)
    assert BRACKETS in [e.text for e in (*data.train, *data.dev)]


def test_brackets_in_pretraining_text_are_text(tmp_path):
    data = load_text(str(write(tmp_path / "text.txt", f"{BRACKETS}\nplain words\n")))
    assert BRACKETS in (*data.train, *data.held_out)


# --- labels: integers or names, never decimal numbers ---------------------------------------


def labelled(suffix: str, labels: list[Any]) -> tuple[str, str]:
    """A file of `suffix` with one example per label, each written as that format writes it."""
    if suffix == "jsonl":
        rows = [json.dumps({"text": f"t{i}", "label": label}) for i, label in enumerate(labels)]
        return "train.jsonl", "\n".join(rows) + "\n"
    sep = "\t" if suffix == "tsv" else ","
    rows = [f"t{i}{sep}{label}" for i, label in enumerate(labels)]
    return f"train.{suffix}", "\n".join([f"text{sep}label", *rows]) + "\n"


# (format, labels): numbers that are not written as integers, as each format writes them.
DECIMAL_LABELS = {
    "tsv 0.0 / 0.5 / 1.0 (STS-B style)": ("tsv", ["0.0", "0.5", "1.0"]),
    "tsv 1.0 / 0.0": ("tsv", ["1.0", "0.0"]),
    "tsv 3.800 / 5.000": ("tsv", ["3.800", "5.000"]),
    "csv 0.5 / 1": ("csv", ["0.5", "1"]),
    "csv 1.0 / 0.0": ("csv", ["1.0", "0.0"]),
    "csv 2.5e-1 / 1e0": ("csv", ["2.5e-1", "1e0"]),
    "csv nan / 1": ("csv", ["nan", "1"]),
    "jsonl float 0.5": ("jsonl", [0.5, 1]),
    "jsonl float 1.0": ("jsonl", [1.0, 0.0]),
    "jsonl text 0.5": ("jsonl", ["0.5", "1"]),
    "jsonl text 1.0": ("jsonl", ["1.0", "0.0"]),
}


@pytest.mark.parametrize(("suffix", "labels"), DECIMAL_LABELS.values(), ids=list(DECIMAL_LABELS))
def test_labels_that_are_numbers_but_not_integers_are_refused_in_every_format(
    tmp_path, suffix, labels
):
    name, text = labelled(suffix, labels)
    message = config_error(write(tmp_path / name, text))
    line = 1 if suffix == "jsonl" else 2
    assert f"{name} line {line}: label" in message
    assert "not an integer" in message and "regression" in message


# (format, labels, the classes they make)
CLASS_LABELS = {
    "tsv integers": ("tsv", ["0", "1", "2", "10"], ("0", "1", "2", "10")),
    "csv signed integers": ("csv", ["-1", "+1", "-1"], ("-1", "+1")),
    "csv names": ("csv", ["pos", "neg", "0.5x"], ("0.5x", "neg", "pos")),
    "jsonl integers": ("jsonl", [1, 0, 10], ("0", "1", "10")),
    "jsonl integers as text": ("jsonl", ["1", "0"], ("0", "1")),
    "jsonl names": ("jsonl", ["entailment", "neutral"], ("entailment", "neutral")),
}


@pytest.mark.parametrize(
    ("suffix", "labels", "classes"), CLASS_LABELS.values(), ids=list(CLASS_LABELS)
)
def test_integer_and_name_labels_are_classes_in_every_format(tmp_path, suffix, labels, classes):
    name, text = labelled(suffix, labels * 2)  # twice: the held-out dev has every label too
    assert load_task("classification", write(tmp_path / name, text)).labels == classes


# --- CSV quoting: refused where it would merge or shift lines ------------------------------

# (file, the line named, words of the message)
BROKEN_CSV = {
    "a quote never closed": (
        'text,label\nfine,0\n"good,1\nbad,0\nok,1\n',
        3,
        "opens a quoted field that is never closed",
    ),
    "text after a closing quote": ('text,label\nfine,0\n"good" film,1\nbad,0\n', 3, "not valid"),
    "a quote closed lines later": (
        'text,label\nfine,0\n"good,1\nbad,0\nsay "hi",1\n',
        3,
        "not valid CSV (a quoted field runs on to line 5)",
    ),
    "an unquoted comma": (
        "text,label\nfine,0\ngood, really good,1\n",
        3,
        "has 3 fields but the header has 2",
    ),
    "an unquoted comma in a pair": (
        "text,text_pair,label\na,b,0\nc,d, e,1\n",
        3,
        "has 4 fields but the header has 3",
    ),
}


@pytest.mark.parametrize(("text", "line", "words"), BROKEN_CSV.values(), ids=list(BROKEN_CSV))
def test_broken_csv_quoting_is_refused_at_the_line_where_it_starts(tmp_path, text, line, words):
    message = config_error(write(tmp_path / "train.csv", text))
    assert f"train.csv line {line} " in message and words in message


def test_csv_quotes_may_hold_commas_quotes_and_line_breaks(tmp_path):
    text = 'text,label,\n"a, b",0,\n"say ""hi""",1,\n"two\nlines",0,\nx"y,1,\n'
    data = load_task("classification", write(tmp_path / "train.csv", text), seed=0)
    texts = {e.text for e in (*data.train, *data.dev)}
    assert texts == {"a, b", 'say "hi"', "two\nlines", 'x"y'}


STRAY_QUOTES = ['"good', 'good"', 'a "quoted start', '"', 'it \'s "fine" , really ', '""']


@pytest.mark.parametrize("sentence", STRAY_QUOTES)
def test_a_quote_in_a_tsv_is_text_and_never_joins_lines(tmp_path, sentence):
    text = f"sentence\tlabel\n{sentence}\t1\nbad\t0\nfine\t1\nmeh\t0\n"
    data = load_task("sst2", write(tmp_path / "train.tsv", text), seed=0)
    texts = [e.text for e in (*data.train, *data.dev)]
    assert sorted(texts) == sorted([sentence, "bad", "fine", "meh"])


# --- the CLI: one line, nothing written -----------------------------------------------------

BAD_FILES = {
    "json nested too deep": ("train.jsonl", GOOD_LINE + "\n" + "[" * DEEP + "\n", "train.jsonl:2"),
    "decimal labels": ("train.tsv", "sentence\tlabel\na\t0.0\nb\t0.5\n", "not an integer"),
    "a csv quote never closed": ("train.csv", 'text,label\n"a,0\nb,1\n', "never closed"),
    "an unquoted comma": ("train.csv", "text,label\na, b,0\nc,1\n", "has 3 fields"),
}


@pytest.mark.parametrize(("name", "text", "words"), BAD_FILES.values(), ids=list(BAD_FILES))
def test_the_cli_refuses_bad_data_in_one_line_and_writes_nothing(
    dense, tmp_path, name, text, words
):
    data = write(tmp_path / "data" / name, text)
    output = tmp_path / "out" / "model"
    args = ["prune", "--strategy", "magnitude", "--model", str(dense), "--output", str(output)]
    result = CliRunner().invoke(cli, [*args, "--task", "classification", "--data", str(data)])
    assert result.exit_code == 1
    line = one_line_error(result)
    assert line.startswith("Error: ") and words in line and str(data) in line
    assert not output.parent.exists() or list(output.parent.iterdir()) == []


# --- a missing onnx extra -------------------------------------------------------------------


@pytest.fixture
def without(monkeypatch):
    """Make `import NAME` fail as if NAME were not installed, and forget the exporter modules
    that imported it already, so that they import it again."""

    def block(name: str) -> None:
        monkeypatch.setitem(sys.modules, name, None)
        for module in ("onnx", "ort"):
            monkeypatch.delitem(sys.modules, f"compresskit.exporters.{module}", raising=False)
            monkeypatch.delattr(compresskit.exporters, module, raising=False)

    return block


def fake_onnx_folder(tmp: Path) -> Path:
    write(tmp / "onnx" / "model.onnx", "")
    return write(tmp / "onnx" / "export.json", "{}").parent


# (missing module, CLI arguments from (dense model, tmp, output))
NEEDS_THE_EXTRA = {
    "export onnx without onnx": (
        "onnx",
        lambda d, t, o: ["export", "onnx", str(d), "--output", str(o)],
    ),
    "export onnx without onnxruntime": (
        "onnxruntime",
        lambda d, t, o: ["export", "onnx", str(d), "--output", str(o)],
    ),
    "bench of an onnx folder without onnxruntime": (
        "onnxruntime",
        lambda d, t, o: ["bench", str(d), str(fake_onnx_folder(t)), "--output", str(o)],
    ),
}


@pytest.mark.parametrize(("missing", "args"), NEEDS_THE_EXTRA.values(), ids=list(NEEDS_THE_EXTRA))
def test_a_command_without_the_onnx_extra_says_how_to_install_it_in_one_line(
    dense, tmp_path, without, missing, args
):
    without(missing)
    output = tmp_path / "out" / "x"
    result = CliRunner().invoke(cli, args(dense, tmp_path, output))
    assert result.exit_code == 1
    line = one_line_error(result)
    assert f"({missing} is not installed): pip install 'compresskit[onnx]'" in line
    assert not output.parent.exists()


@pytest.mark.parametrize("missing", ["onnxruntime", "tokenizers"])
def test_the_runtime_without_its_packages_raises_missing_dependency_error(
    tmp_path, without, missing
):
    from compresskit.runtime import OnnxClassifier

    without(missing)
    with pytest.raises(MissingDependencyError, match=r"pip install 'compresskit\[onnx\]'"):
        OnnxClassifier(fake_onnx_folder(tmp_path))


def test_importing_the_exporter_without_onnx_is_an_import_error_too(without):
    without("onnx")
    with pytest.raises(ImportError, match="needs the onnx extra") as raised:
        import compresskit.exporters.onnx  # noqa: F401
    assert isinstance(raised.value, MissingDependencyError)


def test_bench_of_pytorch_folders_needs_no_onnx_extra(dense, without):
    without("onnxruntime")
    args = ["bench", str(dense), "--batch-sizes", "1", "--seq-lens", "8", "--runs", "1"]
    result = CliRunner().invoke(cli, [*args, "--warmup", "0"])
    assert result.exit_code == 0, result.output
