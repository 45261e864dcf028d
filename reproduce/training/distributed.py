"""torchrun: this process's rank in the world, and the batch gathered over the processes.

`python -m reproduce.train` under `torchrun --nproc_per_node G` splits one configuration's batch
over G processes (env RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT); a single process is rank 0 of 1.
"""
import os

import torch
import torch.distributed as dist

from ..errors import UserError


def process_rank():
    """(rank, world_size) under torchrun (env RANK, WORLD_SIZE), (0, 1) in a single process.

    Refused as bad input, before any work: values that are not whole numbers (a traceback), a
    RANK outside the world (RANK=1 left in a shell: the process trained on an empty share of the
    list, a traceback, and took no --out lock, rank 0's job), and a world without the rendezvous
    torchrun gives (MASTER_ADDR / MASTER_PORT: torch's own ValueError traceback)."""
    env = {k: os.environ.get(k) for k in ("RANK", "WORLD_SIZE")}
    shown = ", ".join(f"{k}={v!r}" for k, v in env.items() if v is not None)
    try:
        rank, world_size = int(env["RANK"] or "0"), int(env["WORLD_SIZE"] or "1")
    except ValueError:
        raise UserError(f"environment {shown}: not whole numbers (torchrun sets them; unset them to "
                        "train in one process)") from None
    if world_size < 1 or not 0 <= rank < world_size:
        raise UserError(f"environment {shown}: RANK must lie in 0..WORLD_SIZE-1 (torchrun sets both; "
                        "unset them to train in one process)")
    if world_size > 1 and not dist.is_initialized():
        missing = [k for k in ("MASTER_ADDR", "MASTER_PORT") if not os.environ.get(k)]
        if missing:
            raise UserError(f"environment {shown}: {' and '.join(missing)} not set; start several "
                            "processes with torchrun (or unset RANK/WORLD_SIZE to train in one)")
    return rank, world_size


class Distributed:
    """rank / world size under torchrun (env WORLD_SIZE), or a single process."""

    def __init__(self, device):
        self.rank, self.world_size = process_rank()
        self.enabled = self.world_size > 1
        if self.enabled and not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")

    def gather(self, local):
        """Concatenate every process's rows in rank order; gradient flows into this rank's rows only.

        Each process then computes the same loss on the same B x B pairs; DDP averages the
        parameter gradients over processes, so the loss is scaled by world_size before backward
        (see train) to give exactly the single-process gradient.
        """
        if not self.enabled:
            return local
        parts = [torch.empty_like(local) for _ in range(self.world_size)]
        dist.all_gather(parts, local.detach().contiguous())
        parts[self.rank] = local
        return torch.cat(parts)
