"""Leaf payloads: one row per worker, each computing its own size in bytes.

Dense vectors, sparse entries, a few scalars, permutations, sign bits, and the compressors'
encodings (scaled signs, quantised levels, low-rank factors). Sizes come from the tensors a
payload carries (element width times elements, index width for sparse entries, bits where the
encoding packs them below a byte), so the ledger cannot drift from what is sent.
:mod:`lowcomm.core.messages` bundles them into uploads and downloads.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Protocol, Self

import numpy as np
import torch


class Payload(Protocol):
    """A batch of messages, one row per worker."""

    @property
    def rows(self) -> int:
        """Number of worker rows."""
        ...

    @property
    def device(self) -> torch.device:
        """Where the payload's tensors live."""
        ...

    def nbytes(self) -> torch.Tensor:
        """Bytes of each row's message, int64 [rows], on the payload's device."""
        ...

    def host_nbytes(self) -> np.ndarray:
        """:meth:`nbytes` as an int64 NumPy array on the host (for the ledger and the clock)."""
        ...

    def take(self, index: torch.Tensor) -> Self:
        """The rows at ``index`` (a 1-D int64 tensor), in that order."""
        ...


_FIELDS: dict[type, tuple[str, ...]] = {}


def _field_names(kind: type) -> tuple[str, ...]:
    """The field names of a payload class, in order (``dataclasses.fields`` once per class)."""
    names = _FIELDS.get(kind)
    if names is None:
        names = _FIELDS[kind] = tuple(field.name for field in fields(kind))
    return names


@dataclass(frozen=True)
class _Rows:
    """A payload whose tensor fields all have the worker axis; its other fields are metadata."""

    def _tensors(self) -> dict[str, torch.Tensor]:
        values = {name: getattr(self, name) for name in _field_names(type(self))}
        return {name: v for name, v in values.items() if isinstance(v, torch.Tensor)}

    @property
    def rows(self) -> int:
        """Number of worker rows."""
        return next(iter(self._tensors().values())).shape[0]

    @property
    def device(self) -> torch.device:
        """Where the payload's tensors live."""
        return next(iter(self._tensors().values())).device

    def take(self, index: torch.Tensor) -> Self:
        """The rows at ``index`` (a 1-D int64 tensor), in that order; metadata unchanged."""
        values = (getattr(self, name) for name in _field_names(type(self)))
        return type(self)(*(v[index] if isinstance(v, torch.Tensor) else v for v in values))


@dataclass(frozen=True)
class _Alike(_Rows):
    """A payload whose rows all cost the same bytes, :meth:`row_bytes` (no tensor to count)."""

    def row_bytes(self) -> int:
        """The bytes of one row's message."""
        raise NotImplementedError

    def nbytes(self) -> torch.Tensor:
        """Bytes of each row's message, int64 [rows], on the payload's device."""
        return torch.full((self.rows,), self.row_bytes(), dtype=torch.int64, device=self.device)

    def host_nbytes(self) -> np.ndarray:
        """:meth:`nbytes` as an int64 NumPy array, made on the host."""
        return np.full(self.rows, self.row_bytes(), dtype=np.int64)


@dataclass(frozen=True)
class _OneTensor(_Alike):
    """A payload held in one tensor with a worker axis; costs its row's bytes as stored."""

    @property
    def _tensor(self) -> torch.Tensor:
        tensor: torch.Tensor = getattr(self, _field_names(type(self))[0])
        return tensor

    @property
    def rows(self) -> int:
        """Number of worker rows."""
        return self._tensor.shape[0]

    @property
    def device(self) -> torch.device:
        """Where the payload's tensors live."""
        return self._tensor.device

    def row_bytes(self) -> int:
        t = self._tensor
        return math.prod(t.shape[1:]) * t.element_size() if t.shape[0] else 0


def _packed(bits: int) -> int:
    """Bytes that hold ``bits`` bits packed: ceil(bits / 8)."""
    return -(-bits // 8)


def segment_index(segments: tuple[int, ...], device: torch.device | None = None) -> torch.Tensor:
    """The tensor number of each of the sum(segments) positions of a flat vector, int64."""
    sizes = torch.tensor(segments, device=device)
    return torch.repeat_interleave(torch.arange(len(segments), device=device), sizes)


@dataclass(frozen=True)
class Dense(_OneTensor):
    """A dense vector per worker: ``values[w, d]``; costs d times the value width."""

    values: torch.Tensor

    def to_dense(self) -> torch.Tensor:
        """The rows ``[w, d]`` themselves."""
        return self.values


@dataclass(frozen=True)
class Sparse(_Rows):
    """Sparse entries per worker: the first ``counts[w]`` columns of ``indices`` and ``values``.

    Rows may carry different numbers of entries (padding past ``counts`` is never sent). Each
    entry costs one index (int32: 4 bytes) plus one value (float32: 4 bytes).
    """

    indices: torch.Tensor
    values: torch.Tensor
    counts: torch.Tensor
    dim: int

    def nbytes(self) -> torch.Tensor:  # noqa: D102
        width = self.indices.element_size() + self.values.element_size()
        return self.counts.to(torch.int64) * width

    def host_nbytes(self) -> np.ndarray:
        """:meth:`nbytes` as an int64 NumPy array."""
        return self.nbytes().cpu().numpy()

    def widen(self, width: int) -> Sparse:
        """The same rows with exactly ``width`` entry columns (cut, or padded with zeros)."""

        def fit(t: torch.Tensor) -> torch.Tensor:
            t = t[:, :width]
            return torch.cat([t, t.new_zeros(t.shape[0], width - t.shape[1])], dim=1)

        return Sparse(fit(self.indices), fit(self.values), self.counts, self.dim)

    def to_dense(self) -> torch.Tensor:
        """The dense rows ``[w, dim]`` (padding entries contribute nothing)."""
        columns = torch.arange(self.values.shape[1], device=self.values.device)
        valid = columns[None, :] < self.counts[:, None]
        out = self.values.new_zeros(self.rows, self.dim)
        out.scatter_add_(1, self.indices.to(torch.int64) * valid, self.values * valid)
        return out


@dataclass(frozen=True)
class Scalars(_OneTensor):
    """A few scalars per worker (a loss, a step size): ``values[w, s]``."""

    values: torch.Tensor


@dataclass(frozen=True)
class Permutation(_OneTensor):
    """An order of a worker's n examples: ``indices[w, n]`` as int32 (4 bytes each)."""

    indices: torch.Tensor


@dataclass(frozen=True)
class SignBits(_OneTensor):
    """One bit per entry, packed: ``signs[w, n]`` (bool) costs ceil(n / 8) bytes."""

    signs: torch.Tensor

    def row_bytes(self) -> int:  # noqa: D102
        return _packed(self.signs.shape[1])


@dataclass(frozen=True)
class ScaledSigns(_Alike):
    """Scaled signs (EF-signSGD; Karimireddy et al., 2019): entry i of tensor j is ±scales[w, j].

    ``signs[w, d]`` (bool, True for +) travel packed, one bit each: ceil(d / 8) bytes; plus one
    scale per tensor of ``segments`` at the scales' width (float32: 4 bytes).
    """

    signs: torch.Tensor
    scales: torch.Tensor
    segments: tuple[int, ...]

    def row_bytes(self) -> int:  # noqa: D102
        return _packed(self.signs.shape[1]) + self.scales.shape[1] * self.scales.element_size()

    def to_dense(self) -> torch.Tensor:
        """The rows ``[w, d]``: scale_j * sign."""
        magnitude = self.scales[:, segment_index(self.segments, self.scales.device)]
        return torch.where(self.signs, magnitude, -magnitude)


@dataclass(frozen=True)
class Quantized(_Alike):
    """QSGD levels (Alistarh et al., 2017): entry i of tensor j is norms[w, j] * levels[w, i] / s.

    ``levels[w, d]`` are integers in [-s, s]. Each travels as a sign bit and a level index of
    ceil(log2(s + 1)) bits, packed across the row: ceil(d (1 + ceil(log2(s + 1))) / 8) bytes,
    whatever integer type stores them here; plus one norm per tensor of ``segments`` at the
    norms' width (float32: 4 bytes).
    """

    norms: torch.Tensor
    levels: torch.Tensor
    s: int
    segments: tuple[int, ...]

    def row_bytes(self) -> int:  # noqa: D102
        bits = self.levels.shape[1] * (1 + self.s.bit_length())  # bit_length = ceil(log2(s+1))
        return _packed(bits) + self.norms.shape[1] * self.norms.element_size()

    def to_dense(self) -> torch.Tensor:
        """The rows ``[w, d]``: norm_j * level / s."""
        norms = self.norms[:, segment_index(self.segments, self.norms.device)]
        return norms * self.levels.to(norms.dtype) / self.s


@dataclass(frozen=True)
class LowRankFactors(_OneTensor):
    """Per tensor, rank-r factors (PowerSGD; Vogels et al., 2019) or the tensor itself.

    Tensor j, viewed as an ``heights[j]`` x ``widths[j]`` matrix M, is sent in ``numbers[w, N]``
    as P (n x r) then Q (m x r), both row-major, standing for M ≈ P Qᵀ with r = ``ranks[j]``;
    or, where r = 0, as its n * m values. Costs N times the value width.
    """

    numbers: torch.Tensor
    heights: tuple[int, ...]
    widths: tuple[int, ...]
    ranks: tuple[int, ...]

    def _parts(self) -> list[int]:
        """Columns of ``numbers`` each piece takes: n * m, or n * r and m * r."""
        layout = zip(self.heights, self.widths, self.ranks, strict=True)
        return [size for n, m, r in layout for size in ((n * r, m * r) if r else (n * m,))]

    def to_dense(self) -> torch.Tensor:
        """The rows ``[w, d]``: P Qᵀ of each factored tensor, the others as sent."""
        pieces = iter(torch.split(self.numbers, self._parts(), dim=1))
        blocks = []
        for n, m, r in zip(self.heights, self.widths, self.ranks, strict=True):
            if not r:
                blocks.append(next(pieces))
                continue
            p, q = next(pieces).unflatten(1, (n, r)), next(pieces).unflatten(1, (m, r))
            blocks.append((p @ q.mT).flatten(1))
        return torch.cat(blocks, dim=1)


Leaf = Dense | Sparse | Scalars | Permutation | SignBits | ScaledSigns | Quantized | LowRankFactors
Compressed = Dense | Sparse | ScaledSigns | Quantized | LowRankFactors
"""The payloads a compressor sends: each has ``to_dense()``, the rows it stands for."""
