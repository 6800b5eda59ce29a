"""`compresskit export onnx`."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner
from conftest import tiny_model

import compresskit
from compresskit.cli import cli
from compresskit.plan import PruningPlan
from compresskit.testing import write_tiny_tokenizer

pytest.importorskip("onnxruntime")

UNEVEN = PruningPlan.from_lists([[0, 2, 3], [], [1]], [list(range(0, 40, 3)), [7], []])


@pytest.fixture
def model_dir(tmp_path):
    tokenizer = write_tiny_tokenizer(tmp_path / "tokenizer")
    model = compresskit.prune(tiny_model("bert", "BertForSequenceClassification"), UNEVEN)
    return compresskit.save(model, tmp_path / "model", tokenizer=tokenizer)


def export_cli(*args: str):
    return CliRunner().invoke(cli, ["export", "onnx", *args])


def test_export_writes_the_folder_and_prints_parity_fusions_and_size(model_dir, tmp_path):
    out = tmp_path / "onnx"
    result = export_cli(
        str(model_dir), "--output", str(out), "--optimize", "--no-speed-check", "--quantize", "int8"
    )
    assert result.exit_code == 0, result.output
    for stage in ("export", "optimize", "quantize"):
        assert f"  {stage} " in result.output
    assert "layer  0 ( 3 heads): Attention 1" in result.output
    assert (
        "layer  1 ( 0 heads)" in result.output
        and " kB, opset 17, optimized, int8)" in result.output
    )
    info = json.loads((out / "export.json").read_text())
    assert info["optimized"] is True and info["quantized"] == "int8"
    assert (out / "model.onnx").is_file()


def test_a_missing_model_folder_is_one_line(tmp_path):
    result = export_cli(str(tmp_path / "nope"), "--output", str(tmp_path / "onnx"))
    assert result.exit_code == 1
    assert result.output.startswith("Error: model folder") and result.output.count("\n") == 1
    assert "does not exist" in result.output


def test_an_existing_output_needs_overwrite(model_dir, tmp_path):
    out = tmp_path / "onnx"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    result = export_cli(str(model_dir), "--output", str(out))
    assert result.exit_code == 1 and result.output.count("\n") == 1
    assert "already exists" in result.output and "--overwrite" in result.output
    result = export_cli(str(model_dir), "--output", str(out), "--overwrite")
    assert result.exit_code == 1 and "keep.txt, which compresskit did not write" in result.output
    (out / "keep.txt").unlink()
    assert export_cli(str(model_dir), "--output", str(out)).exit_code == 0  # empty: free
    assert export_cli(str(model_dir), "--output", str(out), "--overwrite").exit_code == 0
    assert (out / "model.onnx").is_file()


def test_only_int8_quantisation_is_offered(model_dir, tmp_path):
    result = export_cli(str(model_dir), "--output", str(tmp_path / "o"), "--quantize", "fp16")
    assert result.exit_code == 2 and "'fp16' is not 'int8'" in result.output


def test_export_help_does_not_import_torch():
    code = (
        "import sys; from compresskit.cli import cli\n"
        "try:\n    cli(['export', 'onnx', '--help'])\nexcept SystemExit: pass\n"
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "--optimize" in done.stdout
