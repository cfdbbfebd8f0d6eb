"""Step sizes that may change with the round: the ``lr`` setting of every algorithm.

``lr`` is a number (constant) or a schedule string, evaluated at the round k = 0, 1, ... of the
step (the aggregator's update count, or the worker's own round for local steps):

* ``const:ETA``: eta;
* ``inv:ETA0,T0``: eta_0 / (1 + k / T0);
* ``step:ETA0,GAMMA,EVERY``: eta_0 * GAMMA^floor(k / EVERY);
* ``cosine:ETA0,K``: eta_0 * (1 + cos(pi * min(k, K) / K)) / 2 (Loshchilov and Hutter, 2017).

A number gives back exactly that number at every round, so constant step sizes behave as
before schedules existed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from lowcomm.core.constraints import POSITIVE, Either, Text

SCHEDULES = "const:ETA, inv:ETA0,T0, step:ETA0,GAMMA,EVERY or cosine:ETA0,K"
_ARITY = {"const": 1, "inv": 2, "step": 3, "cosine": 2}


@dataclass(frozen=True)
class Schedule:
    """A parsed schedule string; raises ValueError when it is not one of :data:`SCHEDULES`."""

    text: str

    def __post_init__(self) -> None:
        kind, _, argument = self.text.partition(":")
        values = [float(v) for v in argument.split(",")] if argument else []
        if kind not in _ARITY or len(values) != _ARITY[kind]:
            raise ValueError(self.text)
        if not all(math.isfinite(v) and v > 0 for v in values):
            raise ValueError(self.text)
        object.__setattr__(self, "_kind", kind)
        object.__setattr__(self, "_values", tuple(values))

    def __call__(self, k: int) -> float:
        """The step size at round ``k``."""
        kind: str = self._kind  # type: ignore[attr-defined]
        v: tuple[float, ...] = self._values  # type: ignore[attr-defined]
        if kind == "const":
            return v[0]
        if kind == "inv":
            return v[0] / (1.0 + k / v[1])
        if kind == "step":
            return v[0] * v[1] ** (k // int(v[2]))
        return v[0] * (1.0 + math.cos(math.pi * min(k, v[1]) / v[1])) / 2.0


LEARNING_RATE = Either(POSITIVE, Text(SCHEDULES, Schedule))
"""The constraint of every ``lr`` setting: a finite number > 0 or a schedule."""


def step_size(lr: float | str, k: int) -> float:
    """The step size ``lr`` (a number or a schedule string) gives at round ``k``."""
    return lr if isinstance(lr, int | float) else Schedule(lr)(k)
