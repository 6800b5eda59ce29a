"""`compresskit` under torchrun with the process group made here, on a backend of your choice,
and every process on GPU 0: for running two DDP processes on a machine with one GPU.

    torchrun --nproc_per_node 2 benchmarks/gpu/launch_with_backend.py gloo prune ...

accelerate (which the Trainer runs on) picks NCCL whenever a GPU is visible and puts process
`LOCAL_RANK` on GPU `LOCAL_RANK`, also for DDP's `device_ids` and its barriers; with one GPU
the second process then asks for a GPU 1 that is not there. Here every process is told it is
local rank 0 (so all use cuda:0), and the process group is created before accelerate looks,
with BACKEND (`gloo`, or `nccl` to see what NCCL says about two ranks on one GPU), and so is
accelerate's state, which then uses that group and knows its backend (with gloo it gathers
with all_gather rather than all_gather_into_tensor, which gloo cannot do with CUDA tensors:
seen on an H200, torch 2.11); the Trainer's arguments get the same `ddp_backend`, since they
make accelerate's state again. On a machine without a GPU every process stays on the CPU.
Run on the H200 before the `ddp_backend` line was added (evaluation then failed in
all_gather_into_tensor); with it, only on CPUs so far. Not needed on a machine with one GPU per
process: there `torchrun -m compresskit` does it all.
"""

from __future__ import annotations

import os
import sys

import torch
import torch.distributed as dist


def main() -> None:
    if len(sys.argv) < 2:
        raise SystemExit("usage: launch_with_backend.py BACKEND COMPRESSKIT-ARGS...")
    backend = sys.argv.pop(1)
    device = None
    if torch.cuda.is_available():
        os.environ["LOCAL_RANK"] = "0"
        device = torch.device("cuda", 0)
        torch.cuda.set_device(device)
    # With device_id, NCCL creates its communicator now (and fails now, if it will).
    dist.init_process_group(backend, device_id=device if backend == "nccl" else None)
    # accelerate's state must know the backend: it would say NCCL on a GPU and gather with
    # all_gather_into_tensor, which gloo cannot do with CUDA tensors. The Trainer's arguments
    # make that state afresh from their `ddp_backend`, so set it there too.
    import transformers
    from accelerate import PartialState

    PartialState(cpu=device is None, backend=backend)
    post_init = transformers.TrainingArguments.__post_init__

    def with_backend(self: transformers.TrainingArguments) -> None:
        if self.ddp_backend is None:
            self.ddp_backend = backend
        post_init(self)

    transformers.TrainingArguments.__post_init__ = with_backend  # type: ignore[method-assign]
    from compresskit.cli import main as compresskit_main

    sys.argv[0] = "compresskit"
    compresskit_main()


if __name__ == "__main__":
    main()
