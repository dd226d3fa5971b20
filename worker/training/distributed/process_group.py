"""Joining the group in a run the launcher started: backend, device and timeout per rank.

torch's launcher gives each rank RANK, LOCAL_RANK, WORLD_SIZE and the rendezvous's
MASTER_ADDR/MASTER_PORT in its environment; a run without them is a run of its own and joins
nothing. GPUs use NCCL (rank r on the machine's device LOCAL_RANK), the CPU gloo; every
collective gives up after the config's timeout, so a dead or hung rank fails the attempt.
"""

from __future__ import annotations

import os
from datetime import timedelta

import torch
import torch.distributed as dist

from app.ml.encode import pick_device
from worker.training.config import TrainingConfig


def launched() -> bool:
    """Whether torch's launcher started this process as one of several ranks."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "TORCHELASTIC_RUN_ID" in os.environ


def join(config: TrainingConfig) -> TrainingConfig:
    """Join the launcher's group; the config comes back with this rank's device."""
    device = pick_device(config.device)
    if device.type == "cuda":
        local = int(os.environ["LOCAL_RANK"])
        torch.cuda.set_device(local)
        config = config.model_copy(update={"device": f"cuda:{local}"})
    dist.init_process_group(
        backend="nccl" if device.type == "cuda" else "gloo",
        timeout=timedelta(seconds=config.distributed_timeout_seconds),
    )
    return config


def events_descriptor() -> int:
    """Where this rank writes its events: rank 0 to the pipe the launcher left on stdout, the
    others nowhere; stdout itself then goes to the log with stderr."""
    rank = int(os.environ.get("RANK", "0"))
    events = os.dup(1) if rank == 0 else os.open(os.devnull, os.O_WRONLY)
    os.dup2(2, 1)
    return events


def leave() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
