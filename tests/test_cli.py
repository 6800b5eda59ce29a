"""The `compresskit` command line."""

from __future__ import annotations

import subprocess
import sys

from click.testing import CliRunner
from conftest import tiny_model

import compresskit
from compresskit.cli import cli
from compresskit.plan import PruningPlan


def test_version_and_help():
    runner = CliRunner()
    assert compresskit.__version__ in runner.invoke(cli, ["--version"]).output
    result = runner.invoke(cli, ["--help"])
    assert result.exit_code == 0 and "info" in result.output


def test_help_does_not_import_torch():
    code = (
        "import sys; from compresskit.cli import cli\n"
        "try:\n    cli(['--help'])\nexcept SystemExit: pass\n"
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


def test_info_prints_the_per_layer_table(tmp_path):
    plan = PruningPlan.from_lists([[0, 1], [], [3]], [[1, 2], [3], []])
    compresskit.save(compresskit.prune(tiny_model("bert"), plan), tmp_path / "m")
    result = CliRunner().invoke(cli, ["info", str(tmp_path / "m"), "--seq-len", "16"])
    assert result.exit_code == 0, result.output
    rows = [line.split() for line in result.output.splitlines()[2:5]]
    assert [(r[1], r[3]) for r in rows] == [("2", "2"), ("0", "1"), ("1", "0")]
    assert "MACs@16" in result.output


def test_errors_are_one_line_with_a_non_zero_exit(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "compresskit", "info", str(tmp_path / "x")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"Error: model folder {tmp_path / 'x'} does not exist"
    ]


def test_debug_variable_shows_the_traceback(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "compresskit", "info", str(tmp_path / "x")],
        capture_output=True,
        text=True,
        env={"COMPRESSKIT_DEBUG": "1"},
    )
    assert result.returncode != 0 and "Traceback" in result.stderr
