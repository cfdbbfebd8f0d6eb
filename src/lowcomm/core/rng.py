"""Counter-based random streams keyed by (seed, stream name, worker, round).

Every random draw in lowcomm is a pure function of its key, so a worker's draws do not depend on
which process hosts it or on how many other workers are computed alongside it: the in-process and
the multi-process engines see the same numbers, and no global RNG state is ever touched. The
generator is SplitMix64 (Steele, Lea and Flood, 2014) applied to a counter, vectorised over the
worker axis in torch's int64 arithmetic, which wraps around as uint64 arithmetic does (the same
bits: a right shift is made logical by masking the sign bits off). Draws are computed on the
device of the ``workers`` tensor that asks for them, so a run on a GPU draws there, and every
device gives the same bits. A call on the CPU that wants only a few draws (one worker's
mini-batch) makes them in Python integers instead, the same bits without some 30 small tensor
operations (on another device the draws stay there).
"""

from __future__ import annotations

import functools
import math
import zlib
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import torch

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
_MASK = _WORD - 1
_FEW = 128
"""Most draws of a call made in Python integers; more are made in torch, vectorised."""


@functools.lru_cache(maxsize=256)
def _stream_key(seed: int, stream: str) -> int:
    """The part of a key that depends on (seed, stream) only, computed once per pair."""
    return _mix(seed ^ (zlib.crc32(stream.encode()) << 32))


def _keys(
    seed: int, stream: str, workers: torch.Tensor, round_: Round, steps: range
) -> torch.Tensor:
    """One 64-bit key per (step, worker), ``[len(steps), w]``, on ``workers.device``.

    ``round_`` is one round for all workers or a tensor of one round per worker; the part of
    the key shared by all workers is mixed in Python integers when the round is shared.
    """
    shared = _stream_key(seed, stream)
    if isinstance(round_, int):
        words = [[_round_word(shared, round_ + 1, s)] for s in steps]
        base = torch.tensor(words, dtype=torch.int64, device=workers.device)
    else:
        rounds = (round_.to(workers.device, torch.int64) + 1).expand(workers.shape[0])
        base = torch.stack([_round_key(shared, rounds, s) for s in steps])
    return _mix((workers.to(torch.int64) + 1) * _GOLDEN + base)


def _round_key(shared: int, rounds: Word, step: int) -> Word:
    """The part of a key that the workers of one round share (``rounds``: the round plus one)."""
    return _mix(_mix(rounds * _GOLDEN + shared) + _word((step + 1) * _MUL1))


@functools.lru_cache(maxsize=4096)
def _round_word(shared: int, rounds: int, step: int) -> int:
    """:func:`_round_key` of one round, remembered (the workers of a run reach the same rounds)."""
    return _round_key(shared, rounds, step)


def _mix_unsigned(z: int) -> int:
    """:func:`_mix` of a word held as an unsigned integer below 2**64: the same bits, faster."""
    z = ((z ^ (z >> 30)) * _MUL1) & _MASK
    z = ((z ^ (z >> 27)) * _MUL2) & _MASK
    return z ^ (z >> 31)


def _key_word(seed: int, stream: str, worker: int, round_: int, step: int) -> int:
    """The key of :func:`_keys` for one (worker, round, step), unsigned, in Python integers."""
    base = _round_word(_stream_key(seed, stream), round_ + 1, step)
    return _mix_unsigned(((worker + 1) * _GOLDEN + base) & _MASK)


def _few_uniform(
    seed: int, stream: str, workers: torch.Tensor, round_: Round, n: int, steps: range
) -> list[list[list[float]]]:
    """The draws of :meth:`Streams.uniform` per step, worker and counter, as Python floats.

    The same bits as the tensor arithmetic: the words agree modulo 2**64, and a 53-bit integer
    and its division by 2**53 are exact in float64.
    """
    ids = workers.to(torch.int64).tolist()
    if isinstance(round_, int):
        rounds = [round_] * len(ids)
    else:  # one round per worker, or one for all (broadcast, as the tensor arithmetic does)
        rounds = round_.to(torch.int64).expand(len(ids)).tolist()
    counters = [(j * _GOLDEN) & _MASK for j in range(1, n + 1)]
    return [
        [
            [(_mix_unsigned((key + c) & _MASK) >> 11) / _TWO_POW_53 for c in counters]
            for key in (_key_word(seed, stream, w, r, s) for w, r in zip(ids, rounds, strict=True))
        ]
        for s in steps
    ]


def _tensor(
    values: list[Any], shape: tuple[int, ...], dtype: torch.dtype, device: torch.device
) -> torch.Tensor:
    """Nested lists of ``shape`` as a tensor (lists with an empty level keep the shape)."""
    out = torch.tensor(values, dtype=dtype, device=device)
    return out if out.shape == shape else out.reshape(shape)


def _host_key(seed: int, stream: str, worker: int, round_: int) -> int:
    """The key of a one-off draw as an unsigned 64-bit integer."""
    return _key_word(seed, stream, worker + 1, round_, 0)


def _few(shape: tuple[int, ...], workers: torch.Tensor) -> bool:
    """Whether to draw in Python integers: few draws, asked for on the CPU."""
    return math.prod(shape) <= _FEW and workers.device.type == "cpu"


@dataclass(frozen=True)
class Streams:
    """Random streams of one run; ``seed`` is the run's root seed."""

    seed: int

    def uniform(
        self, stream: str, workers: torch.Tensor, round_: Round, n: int, step: int = 0
    ) -> torch.Tensor:
        """Uniform draws in [0, 1), float64, shape [len(workers), n], on ``workers.device``."""
        return self.uniform_steps(stream, workers, round_, n, range(step, step + 1))[0]

    def uniform_steps(
        self, stream: str, workers: torch.Tensor, round_: Round, n: int, steps: range
    ) -> torch.Tensor:
        """The draws of :meth:`uniform` at each step of ``steps`` in one call: [len(steps), w, n].

        A few draws are made in Python integers (a worker's mini-batch: cheaper than the
        tensor arithmetic's many small operations), more in torch; the bits are the same.
        """
        shape = (len(steps), workers.shape[0], n)
        if _few(shape, workers):
            draws = _few_uniform(self.seed, stream, workers, round_, n, steps)
            return _tensor(draws, shape, torch.float64, workers.device)
        keys = _keys(self.seed, stream, workers, round_, steps)
        counters = torch.arange(1, n + 1, dtype=torch.int64, device=workers.device) * _GOLDEN
        bits = _mix(keys[:, :, None] + counters)
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
        return self.integers_steps(stream, workers, round_, n, high, range(step, step + 1))[0]

    def integers_steps(
        self,
        stream: str,
        workers: torch.Tensor,
        round_: Round,
        n: int,
        high: torch.Tensor,
        steps: range,
    ) -> torch.Tensor:
        """The draws of :meth:`integers` at each step of ``steps`` in one call: [len(steps), w, n].

        floor(u * high) of :meth:`uniform_steps`' draws, in Python floats when they are few
        (the same float64 product and floor).
        """
        shape = (len(steps), workers.shape[0], n)
        if _few(shape, workers):
            draws = _few_uniform(self.seed, stream, workers, round_, n, steps)
            highs = [float(h) for h in high.tolist()]  # as exact as .to(torch.float64)
            ints = [
                [[math.floor(u * h) for u in row] for row, h in zip(rows, highs, strict=True)]
                for rows in draws
            ]
            return _tensor(ints, shape, torch.int64, workers.device)
        u = self.uniform_steps(stream, workers, round_, n, steps)
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
