"""A third-party strategy, installed as a real package that only declares an entry point,
is listed by `compresskit strategies` and prunes with `compresskit prune --strategy`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import tiny_model

import compresskit

PLUGIN_MODULE = '''
"""A plugin strategy: keeps the heads and neurons with the highest index."""
import torch
from compresskit.arch import get_adapter
from compresskit.strategies.base import Scores, Strategy


class HighestIndexFirst(Strategy):
    """Demo plugin: prefer units with higher indices."""

    def scores(self, model, batches=None):
        adapter = get_adapter(model)
        layers = adapter.layers()
        return Scores(
            heads=[torch.arange(adapter.num_heads(l), dtype=torch.float) for l in layers],
            ffn=[torch.arange(adapter.ffn_width(l), dtype=torch.float) for l in layers])
'''

PYPROJECT = """
[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "ck-plugin-demo"
version = "1.0"

[project.entry-points."compresskit.strategies"]
highest = "ck_plugin_demo:HighestIndexFirst"
"""


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory) -> Path:
    source = tmp_path_factory.mktemp("plugin-src")
    (source / "pyproject.toml").write_text(PYPROJECT)
    (source / "ck_plugin_demo.py").write_text(textwrap.dedent(PLUGIN_MODULE))
    site = tmp_path_factory.mktemp("plugin-site")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-index",
            "--no-build-isolation",
            "--target",
            str(site),
            str(source),
        ],
        check=True,
        capture_output=True,
    )
    return site


def run_cli(site: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = os.environ | {"PYTHONPATH": str(site)}
    return subprocess.run(
        [sys.executable, "-m", "compresskit", *args], env=env, capture_output=True, text=True
    )


def test_installed_plugin_is_listed_with_its_package(plugin_site):
    result = run_cli(plugin_site, "strategies", "--json")
    assert result.returncode == 0, result.stderr
    listed = {s["name"]: s for s in json.loads(result.stdout)}
    assert listed["highest"]["provider"] == "ck-plugin-demo"
    assert listed["highest"]["kind"] == "one-shot"
    assert listed["highest"]["description"] == "Demo plugin: prefer units with higher indices."
    assert {"magnitude", "random", "taylor"} <= listed.keys()


def test_installed_plugin_prunes_from_the_command_line(plugin_site, tmp_path):
    compresskit.save(tiny_model("bert", heads=4, ffn=40), tmp_path / "dense")
    result = run_cli(
        plugin_site,
        "prune",
        "--strategy",
        "highest",
        "--model",
        str(tmp_path / "dense"),
        "--heads-ratio",
        "0.5",
        "--ffn-ratio",
        "0.25",
        "--output",
        str(tmp_path / "slim"),
    )
    assert result.returncode == 0, result.stderr
    plan = compresskit.PruningPlan.of_model(compresskit.load(tmp_path / "slim"))
    assert plan.heads_per_layer == [2, 2, 2]
    assert plan.layers[0].heads_kept == (2, 3)
    manifest = json.loads((tmp_path / "slim" / "compresskit.json").read_text())
    assert manifest["strategy"]["strategy"] == "highest"


def test_without_the_plugin_the_name_is_unknown(tmp_path):
    result = run_cli(
        tmp_path, "prune", "--strategy", "highest", "--model", "x", "--output", str(tmp_path / "o")
    )
    assert result.returncode == 1
    assert "unknown strategy 'highest'; known strategies:" in result.stderr
    assert not (tmp_path / "o").exists()
