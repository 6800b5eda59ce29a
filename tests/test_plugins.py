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
from helpers import install_plugin

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
    return install_plugin(
        tmp_path_factory.mktemp("plugin-src"),
        tmp_path_factory.mktemp("plugin-site"),
        PYPROJECT,
        {"ck_plugin_demo": PLUGIN_MODULE},
    )


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


# --- a broken plugin disables only itself -----------------------------------------------------

# How a plugin can be broken: (its module's code, what its entry point names, words of the error)
BROKEN_PLUGINS = {
    "module raises on import": ("raise RuntimeError('no GPU found')", "Broken", "no GPU found"),
    "module lacks a dependency": ("import ck_not_installed_anywhere", "Broken", "No module named"),
    "module calls sys.exit": ("import sys\nsys.exit('bye')", "Broken", "SystemExit: bye"),
    "object is not a class": ("Broken = 42", "Broken", "is a int, not a Strategy subclass"),
    "class is not a Strategy": ("class Broken: pass", "Broken", "not a Strategy subclass"),
    "object is missing": ("", "Missing", "AttributeError"),
}


def fake_plugins(site: Path, broken_code: str, broken_attr: str) -> Path:
    """`site` holding two installed plugins, as importlib.metadata finds them: 'highest'
    (working) and 'broken', each a module with a dist-info folder declaring its entry point."""
    plugins = {
        "highest": ("ck_good_demo", textwrap.dedent(PLUGIN_MODULE), "HighestIndexFirst"),
        "broken": ("ck_broken_demo", broken_code + "\n", broken_attr),
    }
    site.mkdir(parents=True, exist_ok=True)
    for name, (module, code, attr) in plugins.items():
        (site / f"{module}.py").write_text(code)
        meta = site / f"{module}-1.0.dist-info"
        meta.mkdir(parents=True)
        (meta / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module}\nVersion: 1.0\n")
        entry = f"[compresskit.strategies]\n{name} = {module}:{attr}\n"
        (meta / "entry_points.txt").write_text(entry)
    return site


@pytest.fixture
def fresh_registry(monkeypatch):
    """The registry as before discovery (built-ins only), restored afterwards."""
    from compresskit import registry

    registry.strategy_names()  # the built-in modules are imported once per process
    builtins = {
        n: c for n, c in registry._registry.items() if c.__module__.startswith("compresskit.")
    }
    monkeypatch.setattr(registry, "_registry", builtins)
    monkeypatch.setattr(registry, "_failed", {})
    monkeypatch.setattr(registry, "_discovered", False)
    monkeypatch.setattr(registry, "_warned", False)
    for module in ("ck_good_demo", "ck_broken_demo"):
        monkeypatch.delitem(sys.modules, module, raising=False)
    return registry


@pytest.fixture(params=list(BROKEN_PLUGINS))
def broken(request, tmp_path, monkeypatch, fresh_registry) -> str:
    """A site with a working and a broken plugin, on sys.path; the words of the error."""
    code, attr, words = BROKEN_PLUGINS[request.param]
    monkeypatch.syspath_prepend(str(fake_plugins(tmp_path / "site", code, attr)))
    return words


def test_a_broken_plugin_leaves_every_other_strategy_registered(broken, fresh_registry):
    names = fresh_registry.strategy_names()
    builtin = {module.rsplit(".", 1)[-1] for module in fresh_registry._BUILTIN_MODULES}
    assert builtin | {"highest"} <= set(names) and len(builtin) >= 5
    assert "broken" not in names


def test_a_broken_plugin_is_one_warning_naming_its_entry_point_and_error(
    broken, fresh_registry, caplog
):
    fresh_registry.strategy_names()
    fresh_registry.get_strategy("magnitude")
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1, warnings
    assert "plugin 'broken' (ck_broken_demo:" in warnings[0] and broken in warnings[0]


def test_asking_for_a_broken_plugin_says_it_failed_to_load_and_why(broken, fresh_registry):
    with pytest.raises(fresh_registry.UnknownStrategyError) as raised:
        fresh_registry.get_strategy("broken")
    message = str(raised.value)
    assert message.startswith("strategy 'broken' is not available: the strategy plugin")
    assert "failed to load" in message and broken in message and "\n" not in message


@pytest.mark.parametrize("case", ["module raises on import", "object is not a class"])
def test_the_cli_lists_the_other_strategies_under_one_warning_line(tmp_path, case):
    code, attr, words = BROKEN_PLUGINS[case]
    result = run_cli(fake_plugins(tmp_path, code, attr), "strategies", "--json")
    assert result.returncode == 0, result.stderr
    assert {s["name"] for s in json.loads(result.stdout)} >= {"magnitude", "highest"}
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "'broken'" in lines[0] and words in lines[0], result.stderr


def test_the_cli_refuses_a_broken_plugin_by_name_in_one_line(tmp_path):
    site = fake_plugins(tmp_path / "site", *BROKEN_PLUGINS["module raises on import"][:2])
    args = ["prune", "--strategy", "broken", "--model", "x", "--output", str(tmp_path / "o")]
    result = run_cli(site, *args)
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "failed to load: RuntimeError: no GPU found" in lines[0]
    assert not (tmp_path / "o").exists()
