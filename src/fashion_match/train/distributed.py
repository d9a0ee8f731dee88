"""torchrun support shared by item training and the attribute branch: ranks, the process group,
and keeping BatchNorm statistics equal across ranks."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch
import torch.distributed as dist
from torch import nn


def ranks() -> tuple[int, int, int]:
    """(rank, world size, local rank) as torchrun sets them; (0, 1, 0) in a plain process."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))


@contextlib.contextmanager
def process_group() -> Iterator[None]:
    """Under torchrun (WORLD_SIZE > 1) start the process group unless the caller did, and end it
    too: every rank meets at a barrier first, so none tears down while another still talks to it."""
    _, world, _ = ranks()
    owns = world > 1 and not dist.is_initialized()
    if owns:
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    try:
        yield
        if owns:
            dist.barrier()
    finally:
        if owns:
            dist.destroy_process_group()


def average_buffers(model: nn.Module, world: int) -> None:
    """DDP keeps parameters in step but each rank's BatchNorm statistics see only its own
    batches: average them at the end of every epoch so every rank holds the same model."""
    for buf in model.buffers():
        if buf.is_floating_point():
            dist.all_reduce(buf, op=dist.ReduceOp.SUM)
            buf.div_(world)
