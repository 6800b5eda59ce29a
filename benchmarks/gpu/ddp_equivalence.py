"""docs/distributed.md's equivalence test, by hand, on whatever this machine has: earlybird on
a tiny BERT without dropout, 1 process × batch 16 against 2 processes × batch 8, with the
commands of tests/test_distributed.py (imported from it, not copied): the same search record,
the same plan and dev metrics, trained weights within 1e-5.

    python benchmarks/gpu/ddp_equivalence.py --work /tmp/ddp --output bench-out/ddp \\
        --launches one,torchrun2,nccl2,gloo2,torchrun1

Launches (each writes its own output folder, compared with `one`'s):

- one:        `python -m compresskit prune ... --batch-size 16` (a single process)
- torchrun2:  `torchrun --nproc_per_node 2 -m compresskit prune ... --batch-size 8`, exactly
              the test's command; the backend is accelerate's choice (NCCL on a GPU)
- nccl2:      the same with the process group made by launch_with_backend.py on NCCL, both
              processes on GPU 0 (what NCCL says about two ranks on one GPU)
- gloo2:      the same on gloo, both processes on GPU 0 (DDP over gloo with CUDA tensors)
- torchrun1:  `torchrun --nproc_per_node 1 -m compresskit ... --batch-size 16`: a world of
              one on accelerate's backend (NCCL on a GPU), against `one`

Writes ddp_equivalence.json and ddp_equivalence.md to --output; a launch that fails is
recorded with the end of its processes' output, and the others still run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))

from test_distributed import SST2, quick, torchrun_command  # noqa: E402

from compresskit.machine import machine_info  # noqa: E402
from compresskit.testing import write_tiny_checkpoint, write_tiny_sentiment  # noqa: E402

# The test's earlybird command (its quick options: the ticket within a few steps).
EARLYBIRD_SST2 = [*SST2, *quick("earlybird")]

SHIM = Path(__file__).resolve().parent / "launch_with_backend.py"
TOLERANCE = {"atol": 1e-5, "rtol": 1e-4}  # the test's


def commands(logs: Path) -> dict[str, list[str]]:
    def torchrun(nproc: int, name: str) -> list[str]:
        command = torchrun_command(logs / name)
        command[command.index("--nproc_per_node") + 1] = str(nproc)
        return command

    def two(name: str, entry: list[str]) -> list[str]:
        return [*torchrun(2, name), *entry, *EARLYBIRD_SST2, "--batch-size", "8", "--output", name]

    return {
        "one": [sys.executable, "-m", "compresskit", *EARLYBIRD_SST2, "--batch-size", "16",
                "--output", "one"],
        "torchrun2": two("torchrun2", ["-m", "compresskit"]),
        "nccl2": two("nccl2", [str(SHIM), "nccl"]),
        "gloo2": two("gloo2", [str(SHIM), "gloo"]),
        "torchrun1": [*torchrun(1, "torchrun1"), "-m", "compresskit", *EARLYBIRD_SST2,
                      "--batch-size", "16", "--output", "torchrun1"],
    }  # fmt: skip


def launch(name: str, command: list[str], work: Path, timeout: float) -> dict[str, Any]:
    env = os.environ | {"OMP_NUM_THREADS": "1", "NCCL_DEBUG": "WARN"}
    start = time.perf_counter()
    try:
        done = subprocess.run(
            command, cwd=work, env=env, capture_output=True, text=True, timeout=timeout
        )
        code, out = done.returncode, done.stdout + done.stderr
    except subprocess.TimeoutExpired as err:
        code, out = None, f"timed out after {timeout} s\n{err.stdout or ''}{err.stderr or ''}"
    seconds = round(time.perf_counter() - start, 1)
    ranks = sorted((work / "logs" / name).glob("**/attempt_0/*/std*.log"))
    for path in ranks:  # each process's own output, where torchrun redirected it
        out += f"\n--- {path.relative_to(work)}\n{path.read_text(errors='replace')}"
    (work / f"{name}.log").write_text(f"$ {' '.join(command)}\n{out}")
    print(f"{name}: exit {code} in {seconds} s", file=sys.stderr, flush=True)
    return {
        "command": " ".join(command),
        "returncode": code,
        "seconds": seconds,
        "error_lines": error_lines(out) if code != 0 else [],
    }


def error_lines(text: str, limit: int = 12) -> list[str]:
    """The lines that say what went wrong, at most `limit`: NCCL's warnings and the processes'
    own exceptions first, torchrun's report of a failed child last."""
    lines = list(dict.fromkeys(line.strip() for line in text.splitlines() if line.strip()))
    first = ("Duplicate", "NCCL WARN", "Error: ", "Error(", "error: ", "timed out")
    later = ("Error", "WARN", "failed", "invalid")
    noise = ("ChildFailedError", "elastic", "UserWarning", "raise ")
    picked = [x for x in lines if any(k in x for k in first) and not any(n in x for n in noise)]
    picked += [x for x in lines if any(k in x for k in later) and x not in picked]
    return picked[:limit] or lines[-limit:]


def compare(work: Path, reference: str, other: str) -> dict[str, Any]:
    """What the test asserts, measured: equal search records, plans and metrics, and the
    largest weight difference."""
    names = (reference, other)
    reports = [json.loads((work / n / "report.json").read_text()) for n in names]
    plans = [json.loads((work / n / "compresskit.json").read_text())["layers"] for n in names]
    alone, shared = (load_file(work / n / "model.safetensors") for n in names)
    largest, close = 0.0, alone.keys() == shared.keys()
    for key, tensor in alone.items():
        if key not in shared or shared[key].shape != tensor.shape:
            close = False
            continue
        largest = max(largest, float((shared[key].double() - tensor.double()).abs().max()))
        close = close and bool(torch.allclose(shared[key], tensor, **TOLERANCE))
    return {
        "processes": [r["processes"] for r in reports],
        "global_batch_size": [r["global_batch_size"] for r in reports],
        "same_search_record": reports[0]["search"] == reports[1]["search"],
        "search_state": reports[0]["search"]["state"],
        "ticket_step": [r["search"]["ticket_step"] for r in reports],
        "same_plan": plans[0] == plans[1],
        "same_metrics": reports[0]["metrics"] == reports[1]["metrics"],
        "metrics": [r["metrics"] for r in reports],
        "largest_weight_difference": largest,
        "weights_within_tolerance": close,
        "passed": reports[0]["search"] == reports[1]["search"]
        and reports[0]["search"]["state"] == "drawn"
        and plans[0] == plans[1]
        and reports[0]["metrics"] == reports[1]["metrics"]
        and close,
    }


def markdown(result: dict[str, Any]) -> str:
    m = result["machine"]
    lines = [
        "# DDP equivalence: 1 process × batch 16 against 2 processes × batch 8",
        "",
        "Earlybird on a tiny BERT without dropout, tests/test_distributed.py's commands.",
        "",
        "| launch | exit | seconds | against `one` | largest weight difference | "
        "search record, plan, metrics | what went wrong |",
        "|---|--:|--:|---|--:|---|---|",
    ]
    for name, run in result["launches"].items():
        c = result["comparisons"].get(name)
        verdict = "–" if c is None else ("**passed**" if c["passed"] else "**differs**")
        diff = "–" if c is None else f"{c['largest_weight_difference']:.2e}"
        same = (
            "–"
            if c is None
            else ", ".join(
                f"{k} {'same' if c['same_' + k.replace(' ', '_')] else 'DIFFERENT'}"
                for k in ("search record", "plan", "metrics")
            )
        )
        why = "<br>".join(x.replace("|", "\\|")[:200] for x in run["error_lines"][:4]) or ""
        lines.append(
            f"| {name} | {run['returncode']} | {run['seconds']} | {verdict} | {diff} | {same} "
            f"| {why} |"
        )
    gpu = f"{m['cuda']}; " if m.get("cuda") else ""
    lines += [
        "",
        f"Machine: {gpu}{m['cpu']}, {m['logical_cores']} logical cores; torch {m['torch']}, "
        f"transformers {m['transformers']}, Python {m['python']}.",
        "",
        "Commands (run in the work folder):",
        "",
        "```",
        *[run["command"] for run in result["launches"].values()],
        "```",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--launches", default="one,torchrun2,nccl2,gloo2,torchrun1")
    parser.add_argument("--timeout", type=float, default=180, help="seconds per launch")
    args = parser.parse_args()
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    write_tiny_checkpoint(work / "model", dropout=0.0)
    write_tiny_sentiment(work / "data")
    every = commands(work / "logs")
    launches = {}
    for name in args.launches.split(","):
        launches[name] = launch(name, every[name], work, args.timeout)
    comparisons = {}
    for name, run in launches.items():
        if (
            name != "one"
            and run["returncode"] == 0
            and launches.get("one", {}).get("returncode") == 0
        ):
            comparisons[name] = compare(work, "one", name)
    result = {
        "benchmark": "ddp_equivalence",
        "launches": launches,
        "comparisons": comparisons,
        "nccl_version": ".".join(map(str, torch.cuda.nccl.version()))
        if torch.cuda.is_available()
        else None,
        "gpus": torch.cuda.device_count(),
        "machine": machine_info(),
    }
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "ddp_equivalence.json").write_text(json.dumps(result, indent=1) + "\n")
    text = markdown(result)
    (args.output / "ddp_equivalence.md").write_text(text)
    print(text, end="")


if __name__ == "__main__":
    main()
