"""The command line's runtime: this rank's device and the torch.distributed group under torchrun
(progress bars: ``ross_ood.progress.bars``)."""
from __future__ import annotations

import os

import torch

__all__ = ["resolve_device", "setup_runtime"]


def resolve_device(device: str, local_rank: int, cuda_available: bool) -> torch.device:
    """The device this rank runs on: 'auto' is this rank's GPU where there is one, else the CPU; a bare
    'cuda' is this rank's GPU (``cuda:LOCAL_RANK``: torch.cuda.set_device refuses a device without index)."""
    if device == "auto":
        device = "cuda" if cuda_available else "cpu"
    dev = torch.device(device)
    return torch.device("cuda", local_rank) if dev.type == "cuda" and dev.index is None else dev


def setup_runtime(device: str) -> torch.device:
    """Join the torch.distributed group when launched by torchrun; pick this rank's device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    dev = resolve_device(device, int(os.environ.get("LOCAL_RANK", "0")), torch.cuda.is_available())
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    return dev
