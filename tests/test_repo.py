"""The repository's promises: the README's commands are the ones CI runs, and only
`compresskit` is installed as a top-level package."""

from __future__ import annotations

import re
import subprocess
import sys

from conftest import REPO


def readme_commands() -> list[str]:
    text = (REPO / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.S)
    return [next(line for line in b.splitlines() if not line.startswith("#")) for b in blocks]


def test_ci_runs_the_readme_test_command():
    test_command = readme_commands()[1]
    assert "pytest" in test_command
    assert test_command in (REPO / ".ci" / "run").read_text()


def test_readme_main_job_prunes_the_real_minilm():
    assert "compresskit prune" in readme_commands()[0]
    assert "-c constraints.txt" in readme_commands()[0]


def test_torch_is_pinned_in_the_constraints():
    assert "torch==2.13.0" in (REPO / "constraints.txt").read_text().splitlines()


def test_strategies_and_exporters_are_not_top_level_packages(tmp_path):
    code = (
        "import importlib.util as u, sys\n"
        "assert u.find_spec('compresskit.strategies') and u.find_spec('compresskit.exporters')\n"
        "sys.exit(bool(u.find_spec('strategies') or u.find_spec('exporters')))"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=tmp_path)
