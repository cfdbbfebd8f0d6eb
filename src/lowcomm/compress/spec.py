"""Compressors named by a string, as the ``compressor`` setting and the DDP hook take them.

``identity``; ``topk:DENSITY`` (per parameter tensor), ``topk-global:DENSITY``, ``randk:DENSITY``
(unbiased: rescaled by d / k), where k = max(1, floor(DENSITY * d)); ``sign`` (scaled sign);
``qsgd:LEVELS`` (unbiased stochastic quantisation); ``lowrank:RANK`` (PowerSGD-style). A
compressor is built for the parameter layout ``segments`` (one size per tensor; ``lowrank`` also
uses the tensors' ``shapes`` when given) and, with ``error_feedback``, wrapped in
:class:`~lowcomm.compress.error_feedback.ErrorFeedback`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from lowcomm.compress.base import Compressor, Identity
from lowcomm.compress.error_feedback import ErrorFeedback
from lowcomm.compress.lowrank import LowRank, Shapes
from lowcomm.compress.qsgd import QSGD
from lowcomm.compress.randk import RandomK
from lowcomm.compress.sign import ScaledSign
from lowcomm.compress.topk import TopK, TopKPerTensor

COMPRESSORS = (
    "identity, topk:DENSITY, topk-global:DENSITY, randk:DENSITY (DENSITY in (0, 1]), sign, "
    "qsgd:LEVELS or lowrank:RANK (LEVELS and RANK integers >= 1)"
)

_A = TypeVar("_A")


def _nothing(argument: str) -> None:
    if argument:
        raise ValueError(f"takes no argument, got {argument!r}")


def _density(argument: str) -> float:
    density = float(argument)
    if not 0 < density <= 1:
        raise ValueError(f"density {argument!r} is not in (0, 1]")
    return density


def _positive(argument: str) -> int:
    number = int(argument)
    if number < 1:
        raise ValueError(f"{argument!r} is not an integer >= 1")
    return number


def _count(density: float, dim: int) -> int:
    """Entries kept of ``dim`` at ``density``: at least one."""
    return max(1, int(density * dim))


@dataclass(frozen=True)
class _Kind(Generic[_A]):
    """How one compressor's argument is read and the compressor built from it."""

    parse: Callable[[str], _A]
    make: Callable[[_A, tuple[int, ...], Shapes | None], Compressor]


_KINDS: dict[str, _Kind[Any]] = {
    "identity": _Kind(_nothing, lambda _, segments, shapes: Identity()),
    "topk": _Kind(_density, lambda density, segments, shapes: TopKPerTensor(density, segments)),
    "topk-global": _Kind(
        _density, lambda density, segments, shapes: TopK(_count(density, sum(segments)))
    ),
    "randk": _Kind(
        _density, lambda density, segments, shapes: RandomK(_count(density, sum(segments)))
    ),
    "sign": _Kind(_nothing, lambda _, segments, shapes: ScaledSign(segments)),
    "qsgd": _Kind(_positive, lambda levels, segments, shapes: QSGD(levels, segments)),
    "lowrank": _Kind(_positive, LowRank),
}


@dataclass(frozen=True)
class CompressorSpec:
    """A parsed compressor string; raises ValueError when it is not one of :data:`COMPRESSORS`."""

    text: str

    def __post_init__(self) -> None:
        kind, _, argument = self.text.partition(":")
        if kind not in _KINDS:
            raise ValueError(f"unknown compressor {self.text!r}: expected {COMPRESSORS}")
        try:
            _KINDS[kind].parse(argument)
        except ValueError as err:
            raise ValueError(f"compressor {self.text!r}: {err}") from err

    @property
    def kind(self) -> str:
        """The compressor's name, e.g. ``topk``."""
        return self.text.partition(":")[0]

    def build(
        self,
        segments: tuple[int, ...],
        error_feedback: bool = False,
        shapes: Sequence[Sequence[int]] | None = None,
    ) -> Compressor:
        """The compressor for a vector made of tensors of sizes ``segments``.

        Args:
            segments: the size of each parameter tensor, in the flat vector's order.
            error_feedback: wrap the compressor in error feedback (a residual per worker).
            shapes: the tensors' shapes (e.g. ``TorchModel.shapes``); only ``lowrank`` uses
                them, to view a tensor as its first dimension by the rest.
        """
        kind, _, argument = self.text.partition(":")
        layout = None if shapes is None else tuple(tuple(int(n) for n in s) for s in shapes)
        spec = _KINDS[kind]
        inner = spec.make(spec.parse(argument), tuple(segments), layout)
        return ErrorFeedback(inner) if error_feedback else inner
