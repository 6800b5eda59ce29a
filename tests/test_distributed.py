"""Training under torch.distributed: `torchrun --nproc_per_node 2` on CPUs (gloo) runs the
same `compresskit prune` command; every process makes the same decision and plan (checked by
the pipeline, which fails loudly otherwise), and one output folder is written, by process 0.
Two processes with half the batch each train what one process trains with the whole batch."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from helpers import quick_args, training_time_strategies
from safetensors.torch import load_file

import compresskit
from compresskit.testing import (
    write_tiny_checkpoint,
    write_tiny_sentiment,
    write_tiny_text,
    write_tiny_tokenizer,
)

ENV = os.environ | {"OMP_NUM_THREADS": "1"}
BIN = Path(sys.executable).parent


def free_port() -> int:
    """A port for the rendezvous, so that no two launches (or a stray one) share one."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def torchrun_command(logs: Path, *, nodes: int = 1, node_rank: int = 0, port: int = 0) -> list[str]:
    """torchrun with two processes per node; each one's stdout and stderr go to files under
    `logs`."""
    return [
        sys.executable, "-m", "torch.distributed.run", "--nnodes", str(nodes),
        "--node_rank", str(node_rank), "--nproc_per_node", str(2 // nodes),
        "--master_addr", "127.0.0.1", "--master_port", str(port or free_port()),
        "--redirects", "3", "--log-dir", str(logs),
    ]  # fmt: skip


def run(
    command: list[str], cwd: Path, env: dict[str, str] = ENV
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False
    )


def torchrun(args: list[str], logs: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return run([*torchrun_command(logs), *args], cwd)


def rank_output(logs: Path, rank: int, stream: str = "stdout") -> str:
    (path,) = logs.glob(f"**/attempt_0/{rank}/{stream}.log")
    return path.read_text()


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(folder / "model.safetensors")


# A training-time strategy for the launcher tests, which are about the launchers: the
# strategies themselves go through DDP in the parametrised equivalence test below.
SEARCHING = training_time_strategies()[0]


def decision(report: dict[str, Any]) -> str:
    """The line the main process prints about how the search ended."""
    search = report["search"]
    return f"search: {search['state']} at step {search['decided_at']}"


@pytest.mark.parametrize("strategy", training_time_strategies())
def test_two_processes_decide_alike_and_write_one_output(tmp_path, strategy):
    model = write_tiny_checkpoint(tmp_path / "model")
    data = write_tiny_sentiment(tmp_path / "data")
    output = tmp_path / "out"
    result = torchrun(
        ["-m", "compresskit", "prune", *quick_args(strategy), "--model", str(model),
         "--task", "sst2", "--data", str(data), "--output", str(output), "--epochs", "4",
         "--batch-size", "8", "--max-seq-len", "16", "--no-progress", "--seed", "0"],
        tmp_path / "logs",
        tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((output / "report.json").read_text())
    ticket = report["search"]["decided_at"]
    assert report["processes"] == 2 and report["global_batch_size"] == 16
    # 128 examples / (2 processes x 8) = 8 steps an epoch: the ranks shared the data.
    assert report["steps"]["search"] + report["steps"]["train"] >= 32
    main, other = rank_output(tmp_path / "logs", 0), rank_output(tmp_path / "logs", 1)
    assert decision(report) in main
    assert (
        f"process 1 of 2: done, with the same plan as process 0, decided at step {ticket}" in other
    )
    # One output, nothing left beside it (no second writer, no run folder).
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "logs", "model", "out"]
    slim = compresskit.load(output)
    assert slim.config.num_labels == 2


def test_processes_that_disagree_fail_loudly(tmp_path):
    script = tmp_path / "disagree.py"
    script.write_text(
        textwrap.dedent(
            """
            from compresskit.train.distributed import check_same_everywhere, process_state

            state = process_state()
            check_same_everywhere("the plan", {"heads": [[0, 1], [state.process_index]]})
            """
        )
    )
    result = torchrun([str(script)], tmp_path / "logs", tmp_path)
    assert result.returncode != 0
    errors = rank_output(tmp_path / "logs", 0, "stderr") + rank_output(
        tmp_path / "logs", 1, "stderr"
    )
    assert "DistributedMismatchError: the plan differs between processes" in errors
    assert "rank 0 has" in errors and "rank 1 has" in errors


@pytest.mark.parametrize("value", [{"step": 3}, [1, 2]])
def test_one_process_agrees_with_itself(value):
    from compresskit.train.distributed import check_same_everywhere

    check_same_everywhere("anything", value)  # a world of one: nothing to compare


# --- two processes compute what one computes --------------------------------------------------
SST2 = [
    "prune", "--model", "model", "--task", "sst2", "--data", "data", "--epochs", "3",
    "--max-seq-len", "16", "--lr", "1e-3", "--no-progress", "--seed", "0",
]  # fmt: skip


@pytest.mark.parametrize("strategy", training_time_strategies())
def test_two_processes_train_what_one_process_trains_with_the_global_batch(tmp_path, strategy):
    """Without dropout, training is a function of the data order, which the sampler's seed
    fixes: two processes with batch 8 see each step the 16 examples that one process with
    batch 16 sees, so the search, the plan and the trained weights must come out the same
    (up to the order of floating-point sums), for every training-time strategy. Before the
    classifiers' loss was declared a per-process mean, the Trainer doubled it and a search's
    weights differed by 0.12."""
    write_tiny_checkpoint(tmp_path / "model", dropout=0.0)
    write_tiny_sentiment(tmp_path / "data")
    reports = one_and_two_processes([*SST2, *quick_args(strategy)], tmp_path)
    assert [r["global_batch_size"] for r in reports] == [16, 16]
    assert reports[0]["search"] == reports[1]["search"]  # every step it watched, the decision
    assert reports[0]["search"]["decided_at"] is not None
    assert reports[0]["metrics"] == reports[1]["metrics"]


def one_and_two_processes(command: list[str], tmp_path: Path) -> list[dict[str, Any]]:
    """Run `command` in one process with batch 16 (-> one/) and in two with batch 8 (-> two/),
    check that both trained the same weights (up to the order of floating-point sums) and
    return their reports."""
    one = run([sys.executable, "-m", "compresskit", *command, "--batch-size", "16",
               "--output", "one"], tmp_path)  # fmt: skip
    assert one.returncode == 0, one.stderr[-3000:]
    two = torchrun(["-m", "compresskit", *command, "--batch-size", "8",
                    "--output", "two"], tmp_path / "logs", tmp_path)  # fmt: skip
    assert two.returncode == 0, two.stderr[-3000:]
    alone, shared = weights(tmp_path / "one"), weights(tmp_path / "two")
    assert alone.keys() == shared.keys()
    for name, tensor in alone.items():
        torch.testing.assert_close(shared[name], tensor, atol=1e-5, rtol=1e-4, msg=name)
    return [json.loads((tmp_path / name / "report.json").read_text()) for name in ("one", "two")]


def test_two_processes_distil_what_one_process_distils(tmp_path):
    """Distillation under DDP: the teacher's soft labels are a mean over each process's
    batch, as the task loss is, so two processes of batch 8 train the 16-example steps of one
    process. The teacher is the fine-tuned model before pruning, to a latency-free target."""
    write_tiny_checkpoint(tmp_path / "model", dropout=0.0)
    write_tiny_sentiment(tmp_path / "data")
    dense = run([sys.executable, "-m", "compresskit", *SST2, "--strategy", "none",
                 "--batch-size", "16", "--output", "teacher"], tmp_path)  # fmt: skip
    assert dense.returncode == 0, dense.stderr[-3000:]
    command = [*SST2, "--strategy", "magnitude", "--target-macs", "1.5", "--distill"]
    command[command.index("model")] = "teacher"
    reports = one_and_two_processes(command, tmp_path)
    assert [r["distillation"]["teacher"] for r in reports] == ["the model before pruning"] * 2
    assert reports[0]["target"]["heads_per_layer"] == reports[1]["target"]["heads_per_layer"]


def test_masked_lm_gradients_under_ddp_are_the_whole_batch_gradients(tmp_path):
    """The masked-LM loss through the DDP wrapper, each process on half the blocks and
    normalised by the masked tokens of both halves (as the Trainer passes them), gives the
    gradients of the mean over every masked token of the whole batch; the head runs on the
    masked positions only, also under DDP. The model has a layer with no heads, whose empty
    query/key/value weights DDP must be told to expect no gradient for."""
    script = tmp_path / "ddp_mlm.py"
    script.write_text(
        textwrap.dedent(
            """
            import copy

            import torch
            import transformers
            from torch.nn.parallel import DistributedDataParallel

            from compresskit.plan import PruningPlan
            from compresskit.pruner import prune
            from compresskit.train.distributed import has_unused_parameters, process_state
            from compresskit.train.mlm_model import masked_positions_loss

            state = process_state()
            rank, world = state.process_index, state.num_processes
            config = transformers.BertConfig(
                vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                intermediate_size=16, max_position_embeddings=32, hidden_dropout_prob=0.0,
                attention_probs_dropout_prob=0.0,
            )
            torch.manual_seed(0)
            model = transformers.BertForMaskedLM(config)
            prune(model, PruningPlan.from_lists([[], [0, 2]], [list(range(16)), [1, 5]]))
            assert has_unused_parameters(model)
            g = torch.Generator().manual_seed(1)
            ids = torch.randint(5, 50, (16, 12), generator=g)
            labels = torch.where(torch.rand(16, 12, generator=g) < 0.3, ids, -100)
            batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}

            alone = copy.deepcopy(model)
            masked_positions_loss(alone, batch).backward()
            want = {name: p.grad for name, p in alone.named_parameters()}

            rows = []
            model.cls.register_forward_hook(lambda _, args, out: rows.append(out.shape[:-1]))
            ddp = DistributedDataParallel(model, find_unused_parameters=True)
            half = {k: v[rank * 8 : (rank + 1) * 8] for k, v in batch.items()}
            for step in range(2):  # a second step fails if DDP waits for a missing gradient
                ddp.zero_grad()
                loss = masked_positions_loss(ddp, half, (labels != -100).sum()) * world
                loss.backward()
            masked = int((half["labels"] != -100).sum())
            assert rows == [(masked,)] * 2, rows  # one row of logits per masked token
            for name, p in model.named_parameters():
                torch.testing.assert_close(p.grad, want[name], atol=1e-6, rtol=1e-5, msg=name)
            print("gradients equal", flush=True)
            """
        )
    )
    result = torchrun([str(script)], tmp_path / "logs", tmp_path)
    logs = tmp_path / "logs"
    assert result.returncode == 0, rank_output(logs, 0, "stderr")[-3000:]
    assert "gradients equal" in rank_output(logs, 0) and "gradients equal" in rank_output(logs, 1)


# --- every launcher, task and kind of strategy ------------------------------------------------
def test_masked_lm_pretraining_on_two_machines(tmp_path):
    """Pre-training from scratch with a search, started as on two machines (two torchrun
    launches, node ranks 0 and 1, one process each, meeting at node 0's address): the same
    ticket on both, one output, written by global rank 0."""
    write_tiny_tokenizer(tmp_path / "tokenizer")
    write_tiny_text(tmp_path / "text.txt")
    command = [
        "-m", "compresskit", "prune", *quick_args(SEARCHING), "--task", "mlm",
        "--data", "text.txt", "--config", "layers=2,hidden=32,heads=4,ffn=16",
        "--tokenizer", "tokenizer", "--max-steps", "40", "--batch-size", "8",
        "--max-seq-len", "16", "--lr", "5e-3", "--no-progress", "--output", "out",
    ]  # fmt: skip
    port = free_port()
    nodes = []
    for rank in (0, 1):
        launch = torchrun_command(tmp_path / f"node{rank}", nodes=2, node_rank=rank, port=port)
        output = dict(stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        nodes.append(subprocess.Popen([*launch, *command], cwd=tmp_path, env=ENV, **output))
    outputs = [node.communicate(timeout=300)[0] for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], outputs[0][-3000:]
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["processes"] == 2 and report["global_batch_size"] == 16
    ticket = report["search"]["decided_at"]
    assert decision(report) in rank_output(tmp_path / "node0", 0)
    assert f"process 1 of 2: done, with the same plan as process 0, decided at step {ticket}" in (
        rank_output(tmp_path / "node1", 0)
    )
    assert type(compresskit.load(tmp_path / "out")).__name__ == "BertForMaskedLM"


@pytest.mark.parametrize(
    ("strategy", "launcher"),
    [("magnitude", "accelerate"), ("random", "torchrun"), ("taylor", "installed script")],
)
def test_one_shot_strategies_under_every_launcher(tmp_path, strategy, launcher):
    """One-shot strategies score on each process alike, prune, then fine-tune under DDP.
    `accelerate launch --multi_gpu` starts torchrun's launcher, the one it uses on GPUs."""
    write_tiny_checkpoint(tmp_path / "model")
    write_tiny_sentiment(tmp_path / "data")
    args = ["prune", "--strategy", strategy, "--model", "model", "--task", "sst2",
            "--data", "data", "--epochs", "1", "--batch-size", "8", "--max-seq-len", "16",
            "--no-progress", "--output", "out"]  # fmt: skip
    if launcher == "accelerate":
        command = [str(BIN / "accelerate"), "launch", "--multi_gpu", "--num_processes", "2",
                   "--main_process_port", str(free_port()), "-m", "compresskit", *args]  # fmt: skip
    elif launcher == "torchrun":
        command = [*torchrun_command(tmp_path / "logs"), "-m", "compresskit", *args]
    else:
        command = [*torchrun_command(tmp_path / "logs"), str(BIN / "compresskit"), *args]
    result = run(command, tmp_path)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["processes"] == 2 and report["global_batch_size"] == 16
    assert report["strategy"]["strategy"] == strategy
    assert report["steps"]["train"] == 8  # 128 examples / (2 processes x 8)
    compresskit.load(tmp_path / "out")


@pytest.mark.skipif(shutil.which("mpirun", path=str(BIN)) is None, reason="needs mpich (dev extra)")
def test_a_search_under_accelerate_launch_on_cpus(tmp_path):
    """On CPUs `accelerate launch --cpu --num_processes 2` starts its processes with mpirun
    (the dev extra installs mpich): the same ticket on both, one output."""
    write_tiny_checkpoint(tmp_path / "model")
    write_tiny_sentiment(tmp_path / "data")
    (tmp_path / "hostfile").write_text("localhost\n")
    command = [
        str(BIN / "accelerate"), "launch", "--cpu", "--num_processes", "2",
        "--num_machines", "1", "--mpirun_hostfile", "hostfile",
        "--main_process_port", str(free_port()),
        "-m", "compresskit", "prune", *quick_args(SEARCHING), "--model", "model",
        "--task", "sst2", "--data", "data", "--epochs", "4", "--batch-size", "8",
        "--max-seq-len", "16", "--no-progress", "--output", "out",
    ]  # fmt: skip
    env = ENV | {"PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}  # mpirun is beside python
    result = run(command, tmp_path, env)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["processes"] == 2 and report["global_batch_size"] == 16
    ticket = report["search"]["decided_at"]
    assert (
        f"process 1 of 2: done, with the same plan as process 0, decided at step {ticket}"
        in result.stdout
    )
    compresskit.load(tmp_path / "out")


# --- each process its own random stream -----------------------------------------------------
def test_each_process_gets_its_own_random_stream_and_one_process_keeps_the_trainers():
    from compresskit.train.distributed import IndependentRandomness, rank_seed

    def first_draw(world_size: int, rank: int) -> float:
        torch.manual_seed(0)  # what the Trainer does on every process
        args = SimpleNamespace(world_size=world_size, process_index=rank, seed=0)
        IndependentRandomness().on_train_begin(args, None, None)
        return float(torch.rand(()))

    torch.manual_seed(0)
    trainers = float(torch.rand(()))
    assert first_draw(1, 0) == trainers
    draws = {first_draw(4, rank) for rank in range(4)}
    assert len(draws) == 4 and trainers not in draws
    assert first_draw(4, 2) == first_draw(4, 2)  # reproducible
    assert rank_seed(0, 1) != rank_seed(1, 0)


def test_more_processes_than_gpus_is_one_line_before_the_process_group(monkeypatch):
    from compresskit.train import distributed

    monkeypatch.setattr(distributed, "on_cpu", lambda: False)
    monkeypatch.setattr(distributed.torch.cuda, "device_count", lambda: 1)
    with pytest.raises(distributed.LaunchError, match=r"2 processes .* 1 GPU: start one process"):
        distributed.check_one_process_per_gpu({"LOCAL_WORLD_SIZE": "2"})
    distributed.check_one_process_per_gpu({"LOCAL_WORLD_SIZE": "1"})  # one per GPU: fine
