"""`compresskit bench`: interleaved timing of PyTorch and ONNX folders, its statistics,
report files and command line, on tiny models (one shape, 2 runs, 1 warm-up)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import compresskit
from compresskit.bench import (
    BenchResult,
    bench_command,
    interleaved_times,
    parse_int_list,
    percentile,
    run_bench,
)
from compresskit.errors import ConfigError
from compresskit.stats import dense_stats, model_stats

pytest.importorskip("onnxruntime")

from test_runtime import tiny_classifier, write_onnx_folder

SHAPE = {"batch_sizes": [2], "seq_lens": [8], "threads": 1, "runs": 2, "warmup": 1}


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    """Saved dense and pruned tiny classifiers and the pruned one exported to ONNX."""
    root = tmp_path_factory.mktemp("bench")
    dense, pruned = tiny_classifier("bert"), tiny_classifier("bert", pruned=True)
    return {
        "dense": compresskit.save(dense, root / "dense"),
        "pruned": compresskit.save(pruned, root / "pruned"),
        "pruned-onnx": write_onnx_folder(pruned, root / "pruned-onnx"),
    }


@pytest.fixture(scope="module")
def result(folders) -> BenchResult:
    targets = [str(folders[k]) for k in ("dense", "pruned", "pruned-onnx")]
    return run_bench(targets, baseline=str(folders["dense"]), **SHAPE)


def test_every_target_is_measured_at_every_shape(result):
    assert [(m.target, m.batch_size, m.seq_len) for m in result.measurements] == [
        ("dense", 2, 8),
        ("pruned", 2, 8),
        ("pruned-onnx", 2, 8),
    ]
    assert [t.kind for t in result.targets] == ["torch", "torch", "onnx"]
    for m in result.measurements:
        assert len(m.times_ms) == 2 and 0 < m.median_ms <= m.p90_ms
        assert m.throughput == pytest.approx(2 / (m.median_ms / 1e3))


def test_the_baseline_against_itself_is_exactly_one(result):
    base = result.measurement("dense", 2, 8)
    assert result.baseline == "dense"
    assert base.speedup == 1.0 and base.speedup_paired == 1.0 and base.macs_ratio == 1.0


def test_speedup_is_the_ratio_of_medians(result):
    base, onnx = result.measurement("dense", 2, 8), result.measurement("pruned-onnx", 2, 8)
    assert onnx.speedup == pytest.approx(base.median_ms / onnx.median_ms)


def test_the_macs_ratio_of_a_pruned_model_is_compresskit_stats_ratio(result):
    pruned = tiny_classifier("bert", pruned=True)
    expected = dense_stats(pruned, 8).macs / model_stats(pruned, 8).macs
    assert expected > 1.5
    assert result.measurement("pruned", 2, 8).macs_ratio == pytest.approx(expected)
    assert result.measurement("pruned-onnx", 2, 8).macs_ratio == pytest.approx(expected)


def test_the_json_and_markdown_reports_are_written(result, tmp_path):
    json_path, md_path = result.write(tmp_path / "out")
    data = json.loads(json_path.read_text())
    assert data["baseline"] == "dense" and data["threads"] == 1
    assert {"runs", "warmup", "batch_sizes", "seq_lens", "order", "targets"} <= set(data)
    assert data["machine"]["onnxruntime"] and data["machine"]["torch"]
    assert set(data["measurements"][0]) >= {
        "target",
        "median_ms",
        "p90_ms",
        "throughput",
        "speedup",
        "macs_ratio",
        "times_ms",
    }
    text = md_path.read_text()
    assert "| target | batch | seq | median ms |" in text
    assert all(f"| {name} | 2 | 8 |" in text for name in ("dense", "pruned", "pruned-onnx"))


def test_a_baseline_outside_the_targets_is_timed_first(folders):
    result = run_bench([str(folders["pruned-onnx"])], baseline=str(folders["dense"]), **SHAPE)
    assert [t.name for t in result.targets] == ["dense", "pruned-onnx"]
    assert result.baseline == "dense"


def test_runs_are_interleaved_in_rounds_of_one_run_per_target():
    order: list[str] = []
    calls = [lambda name=name: order.append(name) for name in "ABC"]
    seconds = interleaved_times(calls, runs=6, warmup=1)
    assert "".join(order[:3]) == "ABC"  # the warm-up round
    rounds = ["".join(order[i : i + 3]) for i in range(3, len(order), 3)]
    assert len(rounds) == 6 and all(sorted(r) == ["A", "B", "C"] for r in rounds)
    assert len(set(rounds)) > 1  # the order changes from round to round
    assert [len(s) for s in seconds] == [6, 6, 6]


def test_percentile_is_numpys_linear_percentile():
    values = [5.0, 1.0, 4.0, 2.0, 3.0, 10.0]
    assert percentile(values, 90) == pytest.approx(np.percentile(values, 90))
    assert percentile([7.0], 90) == 7.0


@pytest.mark.parametrize("text", ["1,x", "", "0,8", "1,,2"])
def test_bad_list_syntax_is_refused(text):
    with pytest.raises(ConfigError, match="comma-separated positive integers"):
        parse_int_list(text)


def test_a_sequence_longer_than_the_models_positions_is_refused(folders):
    with pytest.raises(ConfigError, match="exceeds the 72 positions"):
        run_bench([str(folders["dense"])], **(SHAPE | {"seq_lens": [100]}))


def test_a_foreign_export_json_is_refused(folders, tmp_path):
    folder = shutil.copytree(folders["pruned-onnx"], tmp_path / "onnx")
    (folder / "export.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(compresskit.CompressKitError, match="not a compresskit ONNX export"):
        run_bench([str(folder)], **SHAPE)


# --- the command ----------------------------------------------------------------------------


def test_the_command_prints_the_table_and_writes_the_reports(folders, tmp_path):
    args = [str(folders["dense"]), str(folders["pruned-onnx"]), "--batch-sizes", "2"]
    args += ["--seq-lens", "8", "--threads", "1", "--runs", "2", "--warmup", "1"]
    done = CliRunner().invoke(bench_command, [*args, "--output", str(tmp_path / "out")])
    assert done.exit_code == 0, done.output
    assert "| dense | 2 | 8 |" in done.output and "| pruned-onnx | 2 | 8 |" in done.output
    assert (tmp_path / "out" / "bench.json").is_file()
    assert (tmp_path / "out" / "bench.md").is_file()


def test_a_target_that_is_neither_kind_is_one_line_error(tmp_path):
    (tmp_path / "empty").mkdir()
    done = CliRunner().invoke(bench_command, [str(tmp_path / "empty")])
    assert done.exit_code == 1
    assert done.output.strip().splitlines() == [
        f"Error: bench target {tmp_path / 'empty'} has neither export.json nor config.json: "
        "give a model folder (config.json) or a folder written by `compresskit export onnx` "
        "(export.json)"
    ]


def test_bad_list_syntax_on_the_command_line_is_a_usage_error(folders):
    done = CliRunner().invoke(bench_command, [str(folders["dense"]), "--seq-lens", "8,x"])
    assert done.exit_code == 2
    assert "--seq-lens" in done.output and "comma-separated" in done.output
