"""The device a run computes on: the ``device`` setting (``cpu``, ``cuda`` or ``auto``).

Everything a run computes with lives there: the shards, the parameters, every worker's and the
aggregator's state, and the keyed random draws. What is accounted on the host (the ledger,
the clock, history rows) reads it back once per round. Under ``torchdist`` each rank computes
on its own GPU, the one ``LOCAL_RANK`` names (the GPU the NCCL backend binds it to).
"""

from __future__ import annotations

import os
from typing import Literal

import torch

from lowcomm.core.errors import InvalidConfigError

Device = Literal["cpu", "cuda", "auto"]
HOST = torch.device("cpu")
"""Where host-side work happens: the ledger, the clock, message headers, one-off draws."""


def run_device(device: Device, engine: str = "simulate") -> torch.device:
    """The torch device of a run with the ``device`` setting on ``engine``.

    ``auto`` is ``cuda`` when PyTorch sees a GPU and ``cpu`` otherwise; ``cuda`` is the current
    GPU, or this rank's GPU (``LOCAL_RANK``) on ``torchdist``.

    Raises:
        InvalidConfigError: ``cuda`` where PyTorch sees no GPU for this process.
    """
    available = torch.cuda.is_available()
    if device == "cpu" or (device == "auto" and not available):
        return HOST
    if not available:
        allowed = "cpu or auto on this machine (PyTorch sees no CUDA GPU here)"
        raise InvalidConfigError("device", "the run config", allowed, device)
    index = int(os.environ.get("LOCAL_RANK", "0")) if engine == "torchdist" else None
    if index is None:
        return torch.device("cuda", torch.cuda.current_device())
    if index >= torch.cuda.device_count():
        allowed = f"cpu here: LOCAL_RANK {index} has no GPU ({torch.cuda.device_count()} seen)"
        raise InvalidConfigError("device", "the torchdist engine", allowed, device)
    return torch.device("cuda", index)


def as_device(device: torch.device | str | None) -> torch.device:
    """``device`` as a torch device; None is torch's default device (the CPU unless changed)."""
    return torch.device(device) if device is not None else torch.get_default_device()
