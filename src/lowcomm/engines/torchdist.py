"""The multi-process engine: an aggregator rank and worker ranks over ``torch.distributed``.

Rank 0 aggregates; ranks 1..P-1 host contiguous groups of workers
(``np.array_split(range(n_workers), P - 1)``) and keep those workers' state. Each synchronous
round, rank 0 broadcasts a command, then the download (one broadcast, or each worker's row
point-to-point); each worker rank runs ``algorithm.local`` on its group and sends back a header
(sent mask, gradient evaluations and HVPs per worker) and the rows of its senders only (see
:mod:`lowcomm.engines.wire`). Rank 0 rebuilds the full upload and accounts, aggregates,
evaluates and checkpoints exactly as the ``simulate`` engine does (shared in
:mod:`lowcomm.engines.session`), so both engines give the same ledger and history.

Asynchronous algorithms run event-driven instead (:mod:`lowcomm.engines.remote_async`): rank 0
replies to each worker point-to-point and worker ranks compute one worker at a time.

Every rank computes on the device of the problem (the run's ``device``; on ``cuda`` each rank's
own GPU, ``LOCAL_RANK``): worker ranks keep their group's shards and state there and rank 0 the
aggregator's state. Payloads are decoded onto it; worker state crosses ranks (checkpoints,
resumes) through the host.

Launch under ``torchrun``, or create the default process group before :meth:`TorchDist.run`.
Without one, the engine joins from the environment:

- ``RANK``, ``WORLD_SIZE`` (required; ``torchrun`` sets them), ``WORLD_SIZE >= 2``;
- ``MASTER_ADDR`` (default ``127.0.0.1``) and ``MASTER_PORT`` (default ``29500``);
- ``LOWCOMM_BACKEND``: ``gloo`` or ``nccl``; by default NCCL when CUDA has a GPU for each
  local rank (``LOCAL_WORLD_SIZE``; ``LOCAL_RANK`` picks it), gloo otherwise;
- ``GLOO_SOCKET_IFNAME``: the interface gloo binds; when unset and ``MASTER_ADDR`` is a
  loopback address, the loopback interface. With a loopback ``MASTER_ADDR`` and no
  ``torchrun`` agent, the rendezvous store also listens on that address only, so such a run
  never listens outside the machine.

A process group the engine created is destroyed when ``run`` returns.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from lowcomm.algorithms.base import Algorithm, Context
from lowcomm.core import tree
from lowcomm.core.clock import ClockModel
from lowcomm.core.device import HOST
from lowcomm.core.errors import InvalidConfigError
from lowcomm.core.messages import AnyPayload, Download, Upload
from lowcomm.core.rng import Streams
from lowcomm.data.dataset import Shards
from lowcomm.engines import remote_async, wire
from lowcomm.engines.blocks import WorkerBlocks
from lowcomm.engines.evaluation import Evaluator
from lowcomm.engines.session import (
    RunOptions,
    RunResult,
    RunState,
    close_sync_round,
    first_state,
    run_rounds,
    save_checkpoint,
)
from lowcomm.engines.trusted import dumps, loads
from lowcomm.problems.base import Problem

_OWNER = "the torchdist engine"
# Commands rank 0 broadcasts as [command, round, broadcast download]; workers follow them.
RUN, GATHER, SCATTER, STOP = range(4)


def worker_groups(world_size: int, n_workers: int) -> list[torch.Tensor]:
    """The global worker ids each rank 1..P-1 hosts: contiguous, near-equal groups.

    Raises:
        InvalidConfigError: fewer than 2 ranks, or more worker ranks than workers.
    """
    if world_size < 2:
        allowed = ">= 2 (rank 0 aggregates, ranks 1.. host the workers)"
        raise InvalidConfigError("WORLD_SIZE", _OWNER, allowed, world_size)
    if world_size - 1 > n_workers:
        allowed = f"at most {n_workers + 1} (one aggregator and at most one rank per worker)"
        raise InvalidConfigError("WORLD_SIZE", _OWNER, allowed, world_size)
    return [torch.from_numpy(g) for g in np.array_split(np.arange(n_workers), world_size - 1)]


def owners(groups: list[torch.Tensor]) -> list[int]:
    """The rank hosting each worker, in worker order."""
    return [rank for rank, group in enumerate(groups, start=1) for _ in group]


def init_process_group() -> bool:
    """Join the default process group from the environment, unless one exists.

    Returns:
        Whether a group was created here (its creator should destroy it).
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
    if loopback and os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        store = _loopback_store(rank, world_size)
        dist.init_process_group(backend, store=store, rank=rank, world_size=world_size)
    else:
        dist.init_process_group(backend)
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


def _loopback_store(rank: int, world_size: int) -> dist.TCPStore:
    """The rendezvous store at MASTER_ADDR:MASTER_PORT, listening on that address only.

    The store ``env://`` makes would listen on every interface.
    """
    host, port = os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"])
    listen_fd = None
    if rank == 0:
        listen_fd = socket.create_server((socket.gethostbyname(host), port)).detach()
    return dist.TCPStore(host, port, world_size, is_master=rank == 0, master_listen_fd=listen_fd)


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(socket.gethostbyname(host)).is_loopback
    except (OSError, ValueError):
        return False


@dataclass(frozen=True)
class TorchDist:
    """One multi-process run: the same fields as :class:`~lowcomm.engines.simulate.Simulation`.

    Every rank builds it identically; ``shards`` holds all workers' shards and each worker
    rank takes its own group.
    """

    algorithm: Algorithm
    problem: Problem
    shards: Shards
    evaluator: Evaluator
    streams: Streams
    clock: ClockModel
    options: RunOptions

    def run(self, resume: RunState | None = None) -> RunResult | None:
        """Run to ``options.rounds``; the result on rank 0, None on the worker ranks.

        ``resume`` is read on rank 0 only, which sends each worker rank its workers' state.

        Asynchronous algorithms run the schedule of :mod:`lowcomm.engines.remote_async`.

        Raises:
            InvalidConfigError: checkpoints or a resume of an asynchronous run, or a bad rank
                layout.
        """
        asynchronous = not self.algorithm.synchronous
        if asynchronous and (resume is not None or self.options.checkpoint_every):
            allowed = "0 for asynchronous algorithms on torchdist (simulate checkpoints them)"
            raise InvalidConfigError("checkpoint_every", _OWNER, allowed, "a checkpoint")
        created = init_process_group()
        try:
            groups = worker_groups(dist.get_world_size(), self.shards.rows)
            rank = dist.get_rank()
            if asynchronous:
                remote_async.check_order(self.options.async_order)
            if rank == 0 and asynchronous:
                return remote_async.run_aggregator(self, owners(groups))
            if rank == 0:
                return _Aggregator(self, groups).run(resume)
            if asynchronous:
                remote_async.WorkerRank(self, groups[rank - 1]).serve()
            else:
                _WorkerRank(self, groups[rank - 1]).serve()
            return None
        finally:
            if created:
                dist.destroy_process_group()


def _command(command: int, round_: int = 0, broadcast: bool = False) -> None:
    """Rank 0 tells every worker rank what comes next."""
    words = torch.tensor([command, round_, int(broadcast)], device=HOST)
    wire.broadcast_tensor(words, (3,), torch.int64)


class _Aggregator:
    """Rank 0: sends downloads, rebuilds uploads, accounts, aggregates, evaluates, saves."""

    def __init__(self, engine: TorchDist, groups: list[torch.Tensor]) -> None:
        self.engine = engine
        self.groups = groups
        self.owner = owners(groups)
        self.device = engine.problem.device
        self.rows = torch.arange(engine.shards.rows, device=self.device)
        self.timing = engine.clock.for_workers(engine.shards.rows)

    def run(self, resume: RunState | None) -> RunResult:
        """The whole run; worker state lives on the worker ranks (``state.workers`` is None)."""
        r = self.engine
        if resume is None:
            sizes = r.shards.sizes
            state = first_state(r.algorithm, r.problem, sizes, r.streams, r.evaluator, None)
        else:
            state = resume
            self._scatter(state.workers)
            state.workers = None
        label = f"{r.algorithm.name} (torchdist)"
        outcome = run_rounds(
            state, r.algorithm, r.evaluator, r.options, label, self.step, self.checkpoint
        )
        _command(STOP)
        return outcome

    def step(self, state: RunState) -> None:
        """One synchronous round across the ranks."""
        r, download = self.engine, state.download
        _command(RUN, state.round, download.broadcast)
        self._send_download(download)
        up, grads, hvps = self._receive_uploads()
        ctx = Context(state.round, r.shards.workers, r.shards.rows, r.streams)
        down_bytes = download.for_workers(self.rows).nbytes().cpu().numpy()
        close_sync_round(state, r.algorithm, self.timing, ctx, down_bytes, up, grads, hvps)

    def _send_download(self, download: Download) -> None:
        if download.broadcast:
            wire.broadcast_payload(wire.row(download.payload, 0))
            return
        for worker, rank in enumerate(self.owner):
            wire.send_payload(wire.row(download.payload, worker), rank)

    def _receive_uploads(self) -> tuple[Upload, np.ndarray, np.ndarray]:
        """Every rank's header and its senders' rows, rebuilt into one upload of all workers."""
        headers, rows, like = [], [], None
        for rank, group in enumerate(self.groups, start=1):
            header = wire.recv_tensor((3, len(group)), torch.int64, rank)
            senders = int(header[0].sum())
            if senders:
                rows += [wire.recv_payload(rank, self.device) for _ in range(senders)]
            else:
                like = wire.recv_payload(rank, self.device)
            headers.append(header)
        header = torch.cat(headers, dim=1)
        sent = header[0].to(self.device, torch.bool)
        up = Upload(wire.assemble(rows, sent, like), sent)
        return up, header[1].numpy(), header[2].numpy()

    def checkpoint(self, state: RunState, folder: Path) -> None:
        """Gather the worker ranks' state (on the host) and save the run as ``simulate`` would."""
        _command(GATHER)
        modules = (type(self.engine.algorithm).__module__,)
        slices = [loads(wire.recv_bytes(rank), modules) for rank in range(1, len(self.groups) + 1)]
        workers = tree.to(tree.concat(slices), self.device)
        save_checkpoint(dataclasses.replace(state, workers=workers), folder)

    def _scatter(self, workers: Any) -> None:
        """Send each worker rank the state of its workers (through the host)."""
        _command(SCATTER)
        on_host = tree.to(workers, HOST)
        for rank, group in enumerate(self.groups, start=1):
            wire.send_bytes(dumps(tree.take(on_host, group)), rank)


class _WorkerRank:
    """Ranks 1..P-1: hold a group's state and data, follow rank 0's commands."""

    def __init__(self, engine: TorchDist, group: torch.Tensor) -> None:
        self.engine = engine
        self.device = engine.problem.device
        first, last = int(group[0]), int(group[-1]) + 1
        self.shards = engine.shards.span(first, last)
        self.blocks = WorkerBlocks(engine.problem, self.shards)
        self.state = engine.algorithm.init_workers(
            engine.problem, self.shards.workers, engine.streams
        )
        self.positions = torch.arange(group.shape[0], device=self.device)

    def serve(self) -> None:
        """Follow commands until rank 0 says stop."""
        while True:
            command, round_, broadcast = wire.broadcast_tensor(None, (3,), torch.int64).tolist()
            if command == STOP:
                return
            if command == RUN:
                self._round(round_, bool(broadcast))
            elif command == GATHER:
                wire.send_bytes(dumps(tree.to(self.state, HOST)), 0)
            elif command == SCATTER:
                modules = (type(self.engine.algorithm).__module__,)
                self.state = tree.to(loads(wire.recv_bytes(0), modules), self.device)

    def _round(self, round_: int, broadcast: bool) -> None:
        r = self.engine
        down = self._receive_download(broadcast)
        ctx = Context(round_, self.shards.workers, r.shards.rows, r.streams)
        up, self.state, grads, hvps = self.blocks.local(r.algorithm, self.state, down, ctx)
        counts = [torch.from_numpy(grads), torch.from_numpy(hvps)]
        wire.send_tensor(torch.stack([up.sent.to(HOST, torch.int64), *counts]), 0)
        senders = torch.nonzero(up.sent).flatten().tolist()
        for position in senders:
            wire.send_payload(wire.row(up.payload, position), 0)
        if not senders:
            wire.send_payload(wire.no_rows(up.payload), 0)

    def _receive_download(self, broadcast: bool) -> AnyPayload:
        if broadcast:
            payload = wire.broadcast_payload(None, device=self.device)
            return Download(payload, True).for_workers(self.positions)
        rows = [wire.recv_payload(0, self.device) for _ in self.positions]
        return wire.assemble(rows, torch.ones(len(rows), dtype=torch.bool, device=HOST))
