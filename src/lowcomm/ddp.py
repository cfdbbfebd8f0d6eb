"""lowcomm's compressors as DDP communication hooks.

``model.register_comm_hook(None, lowcomm.ddp.hook("topk:0.01"))`` makes a
:class:`~torch.nn.parallel.DistributedDataParallel` model send each gradient bucket through a
lowcomm compressor (with error feedback by default) instead of all-reducing it dense. Every
rank compresses its bucket as one row ``values[1, n]`` and the ranks exchange payloads:

- a :class:`~lowcomm.core.messages.Dense` payload (``identity``) is averaged by one all-reduce,
  as PyTorch's default ``allreduce_hook`` does, so the model trains exactly as plain DDP;
- any other payload is all-gathered as bytes, in lowcomm's wire format
  (:mod:`lowcomm.engines.wire`: a header naming the type, dtypes, shapes and metadata, then the
  tensors' raw bytes) padded to the longest rank's row; then every rank decodes every rank's
  payload, densifies it and averages, in rank order, so all ranks get the same result.

A :class:`HookLedger` records what each bucket cost at each step.
"""

# No ``from __future__ import annotations`` here: DDP compares the hook's annotations with
# ``dist.GradBucket`` and ``torch.futures.Future[torch.Tensor]`` as objects, not strings.

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import pandas as pd
import torch
import torch.distributed as dist
from torch.utils._pytree import tree_map_only

from lowcomm.compress.base import Compressor, DrawKey
from lowcomm.compress.spec import CompressorSpec
from lowcomm.core.messages import Compressed, Dense
from lowcomm.core.rng import Streams
from lowcomm.engines import wire

CommHook = Callable[[dist.ProcessGroup | None, dist.GradBucket], torch.futures.Future[torch.Tensor]]


class BucketBytes(NamedTuple):
    """What one rank's bucket cost at one step.

    ``sent``: the payload's exact size (``payload.nbytes()``, what lowcomm's ledger bills);
    ``dense``: the bucket's size uncompressed; ``exchanged``: the bytes this rank put into the
    collectives (the payload as stored, plus a shape header and padding when all-gathered).
    """

    step: int
    bucket: int
    sent: int
    dense: int
    exchanged: int


@dataclass
class HookLedger:
    """The bytes of every bucket at every step, as this rank sent them."""

    records: list[BucketBytes] = field(default_factory=list)

    def frame(self) -> pd.DataFrame:
        """One row per (step, bucket): columns step, bucket, sent, dense, exchanged."""
        return pd.DataFrame(self.records, columns=list(BucketBytes._fields))

    @property
    def sent(self) -> int:
        """Payload bytes sent over all steps and buckets."""
        return sum(r.sent for r in self.records)

    @property
    def dense(self) -> int:
        """Bytes dense all-reduce would have sent over the same steps and buckets."""
        return sum(r.dense for r in self.records)


class _Peers(NamedTuple):
    """The process group a bucket is averaged over, its size, and the bucket's device."""

    group: dist.ProcessGroup
    world: int
    device: torch.device


def _all_reduce_mean(dense: torch.Tensor, peers: _Peers) -> torch.futures.Future[torch.Tensor]:
    """The ranks' mean of ``dense``: divided first, then summed (PyTorch's default hook)."""
    tensor = dense.reshape(-1) / peers.world
    work = dist.all_reduce(tensor, group=peers.group, async_op=True)
    assert work is not None
    mean: torch.futures.Future[torch.Tensor] = work.get_future().then(lambda _: tensor)
    return mean


def _gather(
    tensor: torch.Tensor, peers: _Peers, async_op: bool = False
) -> tuple[torch.Tensor, dist.Work | None]:
    """Every rank's ``tensor`` (all the same shape) stacked as ``[world, ...]``."""
    out = tensor.new_empty(peers.world, *tensor.shape)
    work = dist.all_gather(list(out.unbind(0)), tensor, group=peers.group, async_op=async_op)
    return out, work


def _to_row(payload: Compressed, device: torch.device) -> tuple[torch.Tensor, int]:
    """The payload as one byte row, its wire header's int64 words then its data; the words."""
    header, data = wire.encode(payload)
    return torch.cat([header.to(device).view(torch.uint8), data.to(device)]), header.numel()


def _from_row(row: torch.Tensor, words: int) -> Compressed:
    """The payload a byte row of :func:`_to_row` holds (padding past its data is ignored)."""
    split = words * torch.int64.itemsize
    payload = wire.decode(row[:split].clone().view(torch.int64), row[split:])
    assert isinstance(payload, Compressed), type(payload)
    return payload


def _all_gather_mean(
    payload: Compressed, peers: _Peers
) -> tuple[torch.futures.Future[torch.Tensor], int]:
    """The mean of every rank's densified payload, and the bytes this rank exchanged.

    One all-gather of each rank's (header words, row bytes), then one of the rows, padded to
    the longest; every rank decodes the rows in rank order, so all get the same mean.
    """
    row, words = _to_row(payload, peers.device)
    sizes = torch.tensor([words, row.numel()], device=peers.device)
    layout = _gather(sizes, peers)[0].tolist()
    width = max(size for _, size in layout)
    padded = torch.cat([row, row.new_zeros(width - row.numel())])
    gathered, work = _gather(padded, peers, async_op=True)
    assert work is not None

    def average(_: torch.futures.Future[Any]) -> torch.Tensor:
        rows = (_from_row(gathered[r], layout[r][0]).to_dense()[0] for r in range(peers.world))
        return functools.reduce(torch.add, rows) / peers.world

    exchanged = sizes.numel() * sizes.element_size() + width
    return work.get_future().then(average), exchanged


def _exchange(payload: Compressed, peers: _Peers) -> tuple[torch.futures.Future[torch.Tensor], int]:
    """The ranks' mean of the decoded payloads, and the bytes this rank exchanged."""
    if isinstance(payload, Dense):
        return _all_reduce_mean(payload.values, peers), int(payload.nbytes().sum())
    return _all_gather_mean(payload, peers)


@dataclass
class _Slot:
    """One bucket's compressor, its state for this rank's row, and its random streams."""

    shapes: tuple[torch.Size, ...]
    compressor: Compressor
    state: Any
    streams: Streams


@dataclass
class _Hook:
    """The hook's state: one slot per bucket index and the step count."""

    spec: CompressorSpec
    error_feedback: bool
    ledger: HookLedger | None
    seed: int
    slots: dict[int, _Slot] = field(default_factory=dict)
    step: int = 0

    def slot(self, bucket: dist.GradBucket) -> _Slot:
        """The bucket's slot, made anew on first sight or when DDP rebuilt its buckets."""
        shapes = tuple(g.shape for g in bucket.gradients())
        found = self.slots.get(bucket.index())
        if found is not None and found.shapes == shapes:
            return found
        buffer = bucket.buffer()
        segments = tuple(math.prod(s) for s in shapes)
        compressor = self.spec.build(segments, self.error_feedback, shapes)
        state = compressor.init(1, buffer.numel(), buffer.dtype)
        state = tree_map_only(torch.Tensor, lambda t: t.to(buffer.device), state)
        seed = Streams(self.seed).numpy("ddp-bucket", bucket.index()).integers(2**62)
        self.slots[bucket.index()] = _Slot(shapes, compressor, state, Streams(int(seed)))
        return self.slots[bucket.index()]

    def __call__(
        self, process_group: dist.ProcessGroup | None, bucket: dist.GradBucket
    ) -> torch.futures.Future[torch.Tensor]:
        """Compress this rank's bucket, exchange, and return the future of the mean."""
        group = process_group if process_group is not None else dist.group.WORLD
        assert group is not None, "call dist.init_process_group first"
        buffer, slot = bucket.buffer(), self.slot(bucket)
        key = DrawKey(slot.streams, torch.tensor([dist.get_rank(group)]), self.step)
        payload, slot.state = slot.compressor.compress(buffer.view(1, -1), slot.state, key)
        future, exchanged = _exchange(
            payload, _Peers(group, dist.get_world_size(group), buffer.device)
        )
        if self.ledger is not None:
            sent, dense = int(payload.nbytes().sum()), buffer.numel() * buffer.element_size()
            self.ledger.records.append(
                BucketBytes(self.step, bucket.index(), sent, dense, exchanged)
            )
        if bucket.is_last():
            self.step += 1
        return future


def hook(
    compressor: str,
    error_feedback: bool = True,
    ledger: HookLedger | None = None,
    seed: int = 0,
) -> CommHook:
    """A DDP communication hook that sends each gradient bucket through ``compressor``.

    Register it with ``ddp_model.register_comm_hook(process_group, hook(...))``; pass ``None``
    as the process group for the default (world) group.

    Args:
        compressor: A compressor string of :class:`~lowcomm.compress.spec.CompressorSpec`,
            e.g. ``"topk:0.01"``; per-tensor compressors see the bucket's parameter tensors.
        error_feedback: Keep each rank's residual per bucket and add it to the next gradient.
        ledger: Where to record the bytes of every bucket at every step, if given.
        seed: Root seed of the random compressors' draws (keyed by bucket, rank and step).

    Returns:
        The hook, a function ``(process_group, bucket) -> Future[Tensor]``.

    Raises:
        ValueError: ``compressor`` is not a known compressor string.
    """
    state = _Hook(CompressorSpec(compressor), error_feedback, ledger, seed)

    def lowcomm_hook(
        process_group: dist.ProcessGroup | None, bucket: dist.GradBucket
    ) -> torch.futures.Future[torch.Tensor]:
        return state(process_group, bucket)

    return lowcomm_hook
