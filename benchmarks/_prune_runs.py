"""What the benchmarks that compare `compresskit prune` runs share: run one as a user would,
from the shell, with its log beside its output. Not a benchmark itself (.ci/run skips files
starting with "_")."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any


def run_prune(name: str, options: list[str], folder: Path) -> dict[str, Any]:
    """Run `compresskit prune OPTIONS --output FOLDER/NAME` in a new process; return its
    report.json with the command and the process's wall-clock seconds added. A failed run
    stops the benchmark with the last line of its log (FOLDER/NAME.log)."""
    out = folder / name
    argv = ["compresskit", "prune", *options, "--output", str(out)]
    log = folder / f"{name}.log"
    start = time.perf_counter()
    with log.open("w") as stream:
        done = subprocess.run(
            [sys.executable, "-m", "compresskit", *argv[1:]], stdout=stream, stderr=stream
        )
    if done.returncode != 0:
        tail = log.read_text().strip().splitlines()[-1:]
        raise SystemExit(f"run {name} failed ({done.returncode}): {tail} — see {log}")
    report = json.loads((out / "report.json").read_text())
    report["command"] = shlex.join(argv)
    report["process_seconds"] = round(time.perf_counter() - start, 2)
    return report


def machine_and_commands(result: dict[str, Any]) -> list[str]:
    """The Markdown lines that end a comparison's report: the machine, and every command run."""
    m = result["machine"]
    return [
        f"Machine: {m['cpu']}, {m['logical_cores']} logical cores, {m['torch_threads']} torch "
        f"threads; torch {m['torch']}, transformers {m['transformers']}, Python {m['python']}. "
        f"Runs were sequential; 1-min load average {result['load_before']:.2f} before.",
        "",
        "Commands:",
        "",
        "```",
        *[r["command"] for r in result["reports"].values()],
        "```",
    ]
