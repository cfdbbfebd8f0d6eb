"""Schedules evaluated on exact counters: sample sizes per round and step sizes per gradient.

Written as ``KIND:ARGS`` strings so that they travel through configs and command lines:

* sample sizes s_i of round i = 0, 1, ...: ``const:S``; ``linear:A,B`` (s_i = A i + B);
  ``poly:P`` (s_i = (i + 1)^P, rounded);
* step sizes on the global gradient count t: ``const:ETA``; ``inv:ETA0,T0``
  (eta_0 / (1 + t / t_0)); ``hogwild:ALPHA,MU,E`` (alpha / (mu (t + E)), the diminishing step of
  the Hogwild! analyses without bounded gradients, Nguyen et al., ICML 2018).

The offset E of ``hogwild:`` has documented choices (:func:`delay_aware_offset`):
``classic`` E = 4 L alpha / mu, the offset of the delay-free SGD analysis (the step at t = 0 is
1 / (4 L)); ``delay-aware``: a round of ``hogwild-ib`` applies tau_i = n s_i summed steps computed
without the other workers' updates of that round, a Hogwild! delay of up to tau_i. The Hogwild!
analyses (Nguyen et al., ICML 2018, Sec. 4) keep the SGD step condition for a delayed step only if
E also grows with the delay ("E must exceed a multiple of the initial delay"; their exact
constants were not available, ../shared/papers/hogwild-increasing-batch-and-async-msgd.md, A.3).
The condition used here: a round's summed step is no longer than the classic first step,
tau_i eta(t_i) <= 1 / (4 L) with t_i = n (s_0 + ... + s_{i-1}), which holds iff
E >= E_classic tau_i - t_i. Asked of every round i < T (``rounds = T``) it gives
E = max_{i < T} (E_classic tau_i - t_i), which grows with the largest round of the schedule and
leaves increasing schedules with steps far below the constant ones'; asked of the initial delay
only (``rounds = 1``, the milder rule) it gives E = E_classic n s_0, so every schedule that
starts at s_0 = 1 shares one step-size function. Both are never below E_classic (tau_0 >= 1).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lowcomm.core.errors import InvalidConfigError

SAMPLE_SIZES = "const:S, linear:A,B or poly:P with S, A, B >= 1 integers and P > 0"
STEP_SIZES = "const:ETA, inv:ETA0,T0 or hogwild:ALPHA,MU,E with positive numbers"


def _numbers(text: str, owner: str, name: str, allowed: str) -> tuple[str, list[float]]:
    kind, _, args = text.partition(":")
    try:
        values = [float(v) for v in args.split(",")] if args else []
    except ValueError:
        raise InvalidConfigError(name, owner, allowed, text) from None
    return kind, values


@dataclass(frozen=True)
class SampleSizes:
    """s_i for round i (see the module docstring)."""

    text: str

    def __post_init__(self) -> None:
        kind, v = _numbers(self.text, "hogwild-ib", "sample_sizes", SAMPLE_SIZES)
        ok = (
            (kind == "const" and len(v) == 1 and v[0] >= 1 and v[0].is_integer())
            or (
                kind == "linear"
                and len(v) == 2
                and all(x >= 0 and x.is_integer() for x in v)
                and v[1] >= 1
            )
            or (kind == "poly" and len(v) == 1 and v[0] > 0)
        )
        if not ok:
            raise InvalidConfigError("sample_sizes", "hogwild-ib", SAMPLE_SIZES, self.text)
        object.__setattr__(self, "_kind", kind)
        object.__setattr__(self, "_args", tuple(v))

    def __call__(self, round_: int) -> int:
        """s_i."""
        v = self._args  # type: ignore[attr-defined]
        if self._kind == "const":  # type: ignore[attr-defined]
            return int(v[0])
        if self._kind == "linear":  # type: ignore[attr-defined]
            return int(v[0]) * round_ + int(v[1])
        return max(1, round((round_ + 1) ** v[0]))

    def total(self, rounds: int) -> int:
        """s_0 + ... + s_{rounds - 1}: one worker's gradients in its first ``rounds`` rounds."""
        v = self._args  # type: ignore[attr-defined]
        if self._kind == "const":  # type: ignore[attr-defined]
            return int(v[0]) * rounds
        if self._kind == "linear":  # type: ignore[attr-defined]
            return int(v[0]) * rounds * (rounds - 1) // 2 + int(v[1]) * rounds
        sizes = np.maximum(1, np.round(np.arange(1, rounds + 1, dtype=float) ** v[0]))
        return int(sizes.sum())


def delay_aware_offset(classic: float, sizes: SampleSizes, workers: int, rounds: int) -> float:
    """E = max over rounds i < ``rounds`` of (``classic`` n s_i - n (s_0 + ... + s_{i-1})).

    The smallest offset with tau_i eta(t_i) <= alpha / (mu ``classic``) for tau_i = n s_i in
    each of the first ``rounds`` rounds (see the module docstring): ``rounds`` = T for every
    round of a run, 1 for the initial delay only (E = ``classic`` n s_0); at least ``classic``
    since tau_0 >= 1.
    """
    i = np.arange(max(1, rounds))
    s = np.array([sizes(int(r)) for r in i], dtype=float)
    done = np.concatenate(([0.0], np.cumsum(s)[:-1]))
    return float(np.max(workers * (classic * s - done)))


@dataclass(frozen=True)
class StepSize:
    """eta(t) on the global gradient count t (see the module docstring)."""

    text: str

    def __post_init__(self) -> None:
        kind, v = _numbers(self.text, "hogwild-ib", "step", STEP_SIZES)
        sizes = {"const": 1, "inv": 2, "hogwild": 3}
        if kind not in sizes or len(v) != sizes[kind] or any(not x > 0 for x in v):
            raise InvalidConfigError("step", "hogwild-ib", STEP_SIZES, self.text)
        object.__setattr__(self, "_kind", kind)
        object.__setattr__(self, "_args", tuple(v))

    def __call__(self, t: float) -> float:
        """eta(t)."""
        v = self._args  # type: ignore[attr-defined]
        if self._kind == "const":  # type: ignore[attr-defined]
            return float(v[0])
        if self._kind == "inv":  # type: ignore[attr-defined]
            return float(v[0] / (1.0 + t / v[1]))
        return float(v[0] / (v[1] * (t + v[2])))
