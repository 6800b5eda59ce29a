"""Training on many processes with torch.distributed (DDP), launched by `torchrun` or
`accelerate launch`: compresskit starts no processes of its own. The process group comes from
the launcher's environment through accelerate (gloo on CPUs, NCCL on GPUs); one process
without a launcher is the same code with a world of one.

What the training pipeline asks of it: every process makes the same decisions (validation,
the early-bird ticket and plan, checked here to be identical), and only the main process
writes files, while the others wait at a barrier so that none races ahead to a folder that is
not there yet.
"""

from __future__ import annotations

import atexit
import functools
import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from transformers import TrainerCallback

from compresskit._json import dumps
from compresskit.errors import CompressKitError


class DistributedMismatchError(CompressKitError):
    """Processes of one distributed run reached different decisions."""


class LaunchError(CompressKitError):
    """The launcher started processes this machine cannot run (more than its GPUs)."""


def process_state() -> Any:
    """accelerate's PartialState for this process, creating the process group on first use
    (from torchrun's RANK / WORLD_SIZE / MASTER_ADDR variables)."""
    from accelerate import PartialState

    check_one_process_per_gpu()
    state = PartialState(cpu=on_cpu())
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        _destroy_process_group_at_exit()
    return state


@functools.cache
def _destroy_process_group_at_exit() -> None:
    """Take the process group down before the interpreter exits: left to C++ teardown, a gloo
    thread still running is destroyed unjoined ("terminate called without an active
    exception") and the process aborts after its work is done, now and then (seen in a
    two-process CPU test: rank 1 printed its summary, then SIGABRT)."""

    def destroy() -> None:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()

    atexit.register(destroy)


def check_one_process_per_gpu(environ: Mapping[str, str] = os.environ) -> None:
    """On GPUs, process LOCAL_RANK trains on GPU LOCAL_RANK, and NCCL refuses two processes on
    one GPU: more processes on a machine than it has GPUs is a launch mistake, said in one line
    before the process group is made (it otherwise ends in 'invalid device ordinal' at the
    first barrier). Seen on a one-GPU H200 (docs/distributed.md)."""
    if on_cpu():
        return
    processes = int(environ.get("LOCAL_WORLD_SIZE", "1") or 1)
    gpus = torch.cuda.device_count()
    if processes > gpus:
        raise LaunchError(
            f"{processes} processes were started on this machine, which has {gpus} GPU"
            f"{'s' if gpus != 1 else ''}: start one process per GPU "
            f"(torchrun --nproc_per_node {gpus}), or hide the GPUs (CUDA_VISIBLE_DEVICES=) to "
            "train on CPUs"
        )


def on_cpu() -> bool:
    """Whether training runs on CPUs: accelerate starts a CPU process group (gloo) only when
    told so, and the Trainer's TrainingArguments(use_cpu=...) must say the same."""
    return not torch.cuda.is_available()


def is_main_process() -> bool:
    return bool(process_state().is_main_process)


def wait_for_everyone() -> None:
    process_state().wait_for_everyone()


def check_same_everywhere(what: str, value: Any) -> None:
    """Raise DistributedMismatchError unless every process holds the same `value` (compared
    as canonical JSON). A no-op with one process."""
    state = process_state()
    if state.num_processes == 1:
        return
    mine = dumps(value)
    gathered: list[Any] = [None] * state.num_processes
    torch.distributed.all_gather_object(gathered, mine)
    different = [rank for rank, text in enumerate(gathered) if text != gathered[0]]
    if different:
        raise DistributedMismatchError(
            f"{what} differs between processes: rank 0 has {_short(gathered[0])} but rank "
            f"{different[0]} has {_short(gathered[different[0]])}; the processes did not train "
            "the same coefficients (check that every rank runs the same code, data and seed)"
        )


def has_unused_parameters(model: torch.nn.Module) -> bool:
    """Whether some parameter gets no gradient in a training step, so that DDP must look for
    such parameters every step (`find_unused_parameters`) or stop at the next one. A layer
    pruned to no heads keeps zero-size query, key and value weights that no gradient reaches;
    every other parameter, earlybird's coefficients included, is used in every step."""
    return any(p.numel() == 0 for p in model.parameters())


class IndependentRandomness(TrainerCallback):
    """Gives every process its own random stream once training starts. The Trainer seeds all
    processes alike, so without this every rank would draw the same dropout masks and, since
    their blocks have one length, mask the same positions for masked-LM: N processes would
    see one pattern N times. Weights, coefficients and the data order do not depend on it
    (DDP keeps the weights equal; the sampler has its own seed, `data_seed`). A resumed run
    restores each rank's stream from its checkpoint after this, as it should. One process
    keeps the Trainer's stream, so its results do not change."""

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if args.world_size > 1:
            torch.manual_seed(rank_seed(args.seed, args.process_index))


def rank_seed(seed: int, rank: int) -> int:
    """A seed for `rank`'s stream, split from `seed` by numpy's SeedSequence (not seed+rank,
    which would make rank 1 of seed 0 replay rank 0 of seed 1)."""
    return int(np.random.SeedSequence([seed, rank]).generate_state(1)[0])


def _short(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
