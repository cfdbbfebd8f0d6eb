"""Counter-based random streams keyed by (seed, stream name, worker, round).

Every random draw in lowcomm is a pure function of its key, so a worker's draws do not depend on
which process hosts it or on how many other workers are computed alongside it: the in-process and
the multi-process engines see the same numbers, and no global RNG state is ever touched. The
generator is SplitMix64 (Steele, Lea and Flood, 2014) applied to a counter, vectorised over the
worker axis in torch's int64 arithmetic, which wraps around as uint64 arithmetic does (the same
bits: a right shift is made logical by masking the sign bits off). Draws are computed on the
device of the ``workers`` tensor that asks for them, so a run on a GPU draws there, and every
device gives the same bits.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import torch

from lowcomm.core.device import HOST

_WORD = 2**64


def _word(value: int) -> int:
    """The int64 with the bits of the 64-bit word ``value`` (taken modulo 2**64)."""
    value %= _WORD
    return value - _WORD if value >= 2**63 else value


_GOLDEN = _word(0x9E3779B97F4A7C15)
_MUL1 = _word(0xBF58476D1CE4E5B9)
_MUL2 = _word(0x94D049BB133111EB)
_TWO_POW_53 = float(2**53)


Word = TypeVar("Word", int, torch.Tensor)
"""64-bit words: one as a Python integer, or many as an int64 tensor."""


def _wrapped(z: Word) -> Word:
    """``z`` modulo 2**64 (a tensor's int64 arithmetic wraps by itself)."""
    return _word(z) if isinstance(z, int) else z


def _shift(z: Word, bits: int) -> Word:
    """Logical right shift of 64-bit words held as int64 (``>>`` keeps the sign)."""
    return (z >> bits) & ((1 << (64 - bits)) - 1)


def _mix(z: Word) -> Word:
    """SplitMix64 finaliser: a bijective avalanche of 64-bit words."""
    z = _wrapped(z)
    z = _wrapped((z ^ _shift(z, 30)) * _MUL1)
    z = _wrapped((z ^ _shift(z, 27)) * _MUL2)
    return z ^ _shift(z, 31)


Round = int | torch.Tensor


def _keys(seed: int, stream: str, workers: torch.Tensor, round_: Round, step: int) -> torch.Tensor:
    """One 64-bit key per worker for this (seed, stream, round, step), on ``workers.device``.

    ``round_`` is one round for all workers or a tensor of one round per worker; the part of
    the key shared by all workers is mixed in Python integers when the round is shared.
    """
    shared = _mix(seed ^ (zlib.crc32(stream.encode()) << 32))
    if isinstance(round_, int):
        base: Round = _round_key(shared, round_ + 1, step)
    else:
        base = _round_key(shared, round_.to(workers.device, torch.int64) + 1, step)
    return _mix((workers.to(torch.int64) + 1) * _GOLDEN + base)


def _round_key(shared: int, rounds: Word, step: int) -> Word:
    """The part of a key that the workers of one round share (``rounds``: the round plus one)."""
    return _mix(_mix(rounds * _GOLDEN + shared) + _word((step + 1) * _MUL1))


def _host_key(seed: int, stream: str, worker: int, round_: int) -> int:
    """The key of a one-off draw as an unsigned 64-bit integer."""
    key = _keys(seed, stream, torch.tensor([worker + 1], device=HOST), round_, 0)
    return int(key[0]) % _WORD


@dataclass(frozen=True)
class Streams:
    """Random streams of one run; ``seed`` is the run's root seed."""

    seed: int

    def uniform(
        self, stream: str, workers: torch.Tensor, round_: Round, n: int, step: int = 0
    ) -> torch.Tensor:
        """Uniform draws in [0, 1), float64, shape [len(workers), n], on ``workers.device``."""
        keys = _keys(self.seed, stream, workers, round_, step)
        counters = torch.arange(1, n + 1, dtype=torch.int64, device=workers.device) * _GOLDEN
        bits = _mix(keys[:, None] + counters[None, :])
        return _shift(bits, 11).to(torch.float64) / _TWO_POW_53

    def integers(
        self,
        stream: str,
        workers: torch.Tensor,
        round_: Round,
        n: int,
        high: torch.Tensor,
        step: int = 0,
    ) -> torch.Tensor:
        """Integers uniform in [0, high[w]) per worker, int64, shape [len(workers), n]."""
        u = self.uniform(stream, workers, round_, n, step)
        return (u * high.to(torch.float64)[:, None]).floor().to(torch.int64)

    def permutations(
        self,
        stream: str,
        workers: torch.Tensor,
        round_: Round,
        sizes: torch.Tensor,
        width: int,
        step: int = 0,
    ) -> torch.Tensor:
        """A uniform permutation of range(sizes[w]) per worker, padded to ``width`` columns.

        Columns past a worker's size hold its padding positions (sizes[w], ..., width - 1).
        """
        keys = self.uniform(stream, workers, round_, width, step)
        position = torch.arange(width, device=keys.device)
        pad = position[None, :] >= sizes[:, None]
        keys = torch.where(pad, 1.0 + position.to(keys.dtype), keys)
        return torch.argsort(keys, dim=1, stable=True)

    def normal(
        self, stream: str, workers: torch.Tensor, round_: Round, n: int, step: int = 0
    ) -> torch.Tensor:
        """Standard normal draws (Box-Muller), float64, shape [len(workers), n]."""
        u = self.uniform(stream, workers, round_, 2 * n, step)
        radius = torch.sqrt(-2.0 * torch.log1p(-u[:, :n]))
        return radius * torch.cos(2.0 * torch.pi * u[:, n:])

    def generator(self, stream: str, worker: int = -1, round_: int = 0) -> torch.Generator:
        """A CPU torch generator seeded from the key, for one-off draws (initialisation).

        Its draws are made on the CPU and moved where they are used, so that they are the
        same numbers on every device.
        """
        key = _host_key(self.seed, stream, worker, round_)
        return torch.Generator().manual_seed(key >> 1)

    def numpy(self, stream: str, worker: int = -1, round_: int = 0) -> np.random.Generator:
        """A NumPy generator seeded from the key, for one-off draws (partitions, synthesis)."""
        return np.random.default_rng(_host_key(self.seed, stream, worker, round_))
