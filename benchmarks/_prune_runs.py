"""What the benchmarks that compare `compresskit prune` runs share: run one as a user would,
from the shell, with its log beside its output. Not a benchmark itself (.ci/run skips files
starting with "_")."""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

SHARED = Path(__file__).resolve().parents[2] / "shared"
MINILM = SHARED / "models" / "minilm-l6-h384-uncased"
SST2 = SHARED / "data" / "glue" / "SST-2"


def sst2_parser(description: str, output: str) -> argparse.ArgumentParser:
    """The options every SST-2 comparison of prune runs takes: where to write, smoke mode,
    model, data, subset size, epochs and learning rate (each benchmark adds its own)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--output", type=Path, default=Path(output))
    parser.add_argument("--smoke", action="store_true", help="tiny model and data, seconds")
    parser.add_argument("--model", type=Path, default=MINILM)
    parser.add_argument("--data", type=Path, default=SST2)
    parser.add_argument("--max-train-samples", type=int, default=8000, help="0: all")
    parser.add_argument("--epochs", default="2")
    parser.add_argument("--lr", default="1e-4")
    return parser


@contextmanager
def smoke_inputs(args: argparse.Namespace) -> Iterator[None]:
    """Create --output; with --smoke, point args.model and args.data at a tiny checkpoint and
    a tiny sentiment task in a temporary folder, which lasts until the block ends (each
    benchmark sets its own smoke sizes)."""
    from compresskit.testing import write_tiny_checkpoint, write_tiny_sentiment

    args.output.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tiny:
        if args.smoke:
            args.model = write_tiny_checkpoint(Path(tiny) / "model")
            args.data = write_tiny_sentiment(Path(tiny) / "data")
        yield


def save_result(folder: Path, stem: str, result: dict[str, Any], text: str) -> None:
    """STEM.json (the result) and STEM.md (its Markdown) into `folder`; the Markdown printed."""
    (folder / f"{stem}.json").write_text(json.dumps(result, indent=1) + "\n")
    (folder / f"{stem}.md").write_text(text)
    print(text, end="")


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
        tail = (log.read_text().strip().splitlines() or [""])[-1]
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
