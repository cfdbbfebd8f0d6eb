"""Joining the torchdist ranks' process group from the environment, with a timeout on every wait.

- ``RANK``, ``WORLD_SIZE`` (required; ``torchrun`` sets them), ``MASTER_ADDR`` (default
  ``127.0.0.1``) and ``MASTER_PORT`` (default ``29500``);
- ``LOWCOMM_BACKEND``: ``gloo`` or ``nccl``; by default NCCL when CUDA has a GPU for each
  local rank (``LOCAL_WORLD_SIZE``; ``LOCAL_RANK`` picks it), gloo otherwise;
- ``GLOO_SOCKET_IFNAME``: the interface gloo binds; when unset and ``MASTER_ADDR`` is a
  loopback address, the loopback interface.

Without a ``torchrun`` agent, rank 0 opens the rendezvous store itself: on ``MASTER_ADDR``
only when it is a loopback address (``torch``'s default store listens on every interface), so
such a run never listens outside the machine. A port already in use is refused on rank 0, and
a worker rank that reaches another run's store (whose ranks have all joined) is refused too,
instead of waiting. Joining waits at most :data:`JOIN_SECONDS` or the run's timeout if longer
(ranks may start, and load their data, at different times); each message of the run then waits
at most the run's timeout (:func:`lowcomm.engines.wire.waiting`).
"""

from __future__ import annotations

import ipaddress
import os
import socket
from datetime import timedelta

import torch
import torch.distributed as dist

from lowcomm.core.errors import InvalidConfigError, LowcommError

_OWNER = "the torchdist engine"
_JOINED = "lowcomm/joined"  # a store counter: how many worker ranks have joined this store
JOIN_SECONDS = 300.0


def init_process_group(timeout: float = 300.0) -> bool:
    """Join the default process group from the environment, unless one exists.

    ``timeout``: the run's timeout; joining waits at most ``max(timeout, JOIN_SECONDS)``.

    Returns:
        Whether a group was created here (its creator should destroy it).

    Raises:
        LowcommError: a variable is missing or wrong, the port is taken, or the ranks did not
            all join within ``timeout``.
    """
    if dist.is_initialized():
        return False
    for name in ("RANK", "WORLD_SIZE"):
        if name not in os.environ:
            raise InvalidConfigError(name, _OWNER, "set (launch with torchrun)", None)
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29500")
    backend = _backend()
    loopback = _is_loopback(os.environ["MASTER_ADDR"])
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    elif loopback and "GLOO_SOCKET_IFNAME" not in os.environ:
        _gloo_on_loopback()
    join = max(timeout, JOIN_SECONDS)
    wait = timedelta(seconds=join)
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    try:
        if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True":
            dist.init_process_group(backend, timeout=wait)
        else:
            store = _store(rank, world_size, loopback, wait)
            dist.init_process_group(
                backend, store=store, rank=rank, world_size=world_size, timeout=wait
            )
    except RuntimeError as exc:
        where = f"{os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']}"
        detail = " ".join(str(exc).split())[:200]
        raise LowcommError(
            f"rank {rank}: the {world_size} ranks did not all join at {where} within "
            f"{join:g} s ({detail})"
        ) from exc
    return True


def _backend() -> str:
    """LOWCOMM_BACKEND, else NCCL when every local rank can have its own GPU, else gloo."""
    chosen = os.environ.get("LOWCOMM_BACKEND")
    if chosen is None:
        local = int(os.environ.get("LOCAL_WORLD_SIZE", os.environ["WORLD_SIZE"]))
        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        return "nccl" if gpus >= local else "gloo"
    if chosen not in ("gloo", "nccl"):
        raise InvalidConfigError("LOWCOMM_BACKEND", _OWNER, "gloo or nccl", chosen)
    return chosen


def _gloo_on_loopback() -> None:
    """Make gloo bind the loopback interface (it binds the hostname's address otherwise)."""
    names = [name for _, name in socket.if_nameindex() if name.startswith("lo")]
    if names:
        os.environ["GLOO_SOCKET_IFNAME"] = names[0]


def _store(rank: int, world_size: int, loopback: bool, wait: timedelta) -> dist.TCPStore:
    """The rendezvous store at MASTER_ADDR:MASTER_PORT, served by rank 0.

    On a loopback MASTER_ADDR it listens on that address only. Raises if rank 0 cannot listen
    on the port, or if a worker rank finds another run's store there.
    """
    host, port = os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"])
    taken = InvalidConfigError(
        "MASTER_PORT", _OWNER, "a port no other process listens on (another run?)", port
    )
    listen_fd = None
    if rank == 0 and loopback:
        try:
            listen_fd = socket.create_server((socket.gethostbyname(host), port)).detach()
        except OSError:
            raise taken from None
    try:
        store = dist.TCPStore(
            host, port, world_size, is_master=rank == 0, timeout=wait, master_listen_fd=listen_fd
        )
    except RuntimeError as exc:
        if rank == 0 and "in use" in str(exc):
            raise taken from None
        raise
    if rank and store.add(_JOINED, 1) >= world_size:
        allowed = "a port of this run's rank 0 (another run's ranks have all joined there)"
        raise InvalidConfigError("MASTER_PORT", _OWNER, allowed, port)
    return store


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(socket.gethostbyname(host)).is_loopback
    except (OSError, ValueError):
        return False
