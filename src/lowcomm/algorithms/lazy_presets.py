"""The public configs of the lazy family, with the SASG paper's constants as defaults.

Defaults are the SASG authors' MNIST notebook (10 workers are a run setting): step 0.005,
batch 10 per worker with reshuffling every epoch, D = 10, threshold multiplier c = 1/2, top-k
density 1% per parameter tensor (see ../shared/papers/sasg-and-localnewton.md, 1.2). ``lag``
follows the official LAG code: D = 10, xi_d = xi / D with xi = 1 (WK) or 10 (PS).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from lowcomm.algorithms.lazy import REFERENCES, LazyAggregation, LazySpec
from lowcomm.algorithms.local_data import SAMPLING
from lowcomm.algorithms.settings import (
    NON_NEGATIVE,
    POSITIVE,
    About,
    AlgorithmSettings,
    Interval,
    ListOf,
    NoneOr,
    OneOf,
    setting,
)

DENSITY = Interval(float, 1e-12, 1.0, closed="both")
XI = ListOf(Interval(float, 0.0, math.inf, closed="both"))
LAZY_UP = "a lazy worker sends nothing"


def _notebook_weights(threshold: float, lr: float, window: int) -> tuple[float, ...]:
    """xi_d = c * lr over the D - 1 differences of a window of D models (the notebooks)."""
    return (threshold * lr,) * max(window - 1, 1)


@dataclass(frozen=True)
class LASGConfig(AlgorithmSettings):
    """``lasg``: the LASG-WK2 trigger over dense messages (SASG without sparsification)."""

    ABOUT = About(
        "lasg",
        "lazily aggregated stochastic gradients (LASG-WK2 trigger), dense messages",
        up=f"lr * gradient (d values); {LAZY_UP}",
        down="the model and the threshold (d + 1 values)",
    )

    lr: float = setting(0.005, POSITIVE, "step size")
    batch_size: int = setting(10, Interval(int, 1), "examples per worker per round")
    sampling: str = setting(
        "reshuffle", OneOf(SAMPLING), "uniform draws, or a fresh order of the shard every epoch"
    )
    window: int = setting(
        10, Interval(int, 1), "D: models in the trigger; a worker sends at least every D rounds"
    )
    threshold: float = setting(
        0.5, NON_NEGATIVE, "c: the trigger weights are xi_d = c * lr over D - 1 differences"
    )
    reference: str = setting(
        "last-upload", OneOf(REFERENCES), "the model the fresh gradient is compared at"
    )
    xi: tuple[float, ...] = setting((), XI, "the trigger weights xi_d (overrides threshold)")

    def _density(self) -> float | None:
        return None

    def build(self) -> LazyAggregation:
        """The algorithm."""
        weights = self.xi or _notebook_weights(self.threshold, self.lr, self.window)
        spec = LazySpec(
            self.lr,
            self.batch_size,
            self.sampling,
            "lasg-wk2",
            self.window,
            weights,
            self.reference,
            self._density(),
        )
        return LazyAggregation(self.ABOUT.name, spec)


@dataclass(frozen=True)
class SASGConfig(LASGConfig):
    """``sasg``: the LASG-WK2 trigger over error-feedback top-k (per tensor) messages."""

    ABOUT = About(
        "sasg",
        "sparse lazy SGD: the LASG-WK2 trigger over top-k messages with error feedback",
        up=f"top-k of lr * gradient + error (index and value each); {LAZY_UP}",
        down="the model and the threshold (d + 1 values)",
    )

    density: float = setting(0.01, DENSITY, "share of each parameter tensor top-k keeps")

    def _density(self) -> float | None:
        return self.density


@dataclass(frozen=True)
class LAGConfig(AlgorithmSettings):
    """``lag``: deterministic (full local) gradients, worker- (``wk``) or server-side (``ps``)."""

    ABOUT = About(
        "lag",
        "lazily aggregated (full local) gradients, triggered at the worker or the aggregator",
        up=f"lr * local gradient (d values); {LAZY_UP}",
        down="the model and the threshold (d + 1 values; ps: + 1 request bit per worker)",
    )

    lr: float = setting(0.1, POSITIVE, "step size")
    rule: str = setting(
        "wk", OneOf(("wk", "ps")), "the trigger runs at the worker (wk) or the aggregator (ps)"
    )
    window: int = setting(10, Interval(int, 1), "D: model differences in the trigger")
    threshold: float | None = setting(
        None, NoneOr(NON_NEGATIVE), "xi, with xi_d = xi / D (null: 1 for wk, 10 for ps)"
    )
    xi: tuple[float, ...] = setting((), XI, "the trigger weights xi_d (overrides threshold)")

    def build(self) -> LazyAggregation:
        """The algorithm; the threshold defaults to LAG's xi = 1 (WK) or 10 (PS)."""
        xi = self.threshold if self.threshold is not None else (1.0 if self.rule == "wk" else 10.0)
        weights = self.xi or (xi / self.window,) * self.window
        spec = LazySpec(
            self.lr,
            None,
            "replacement",
            f"lag-{self.rule}",
            self.window,
            weights,
            "last-upload",
            None,
        )
        return LazyAggregation(self.ABOUT.name, spec)


@dataclass(frozen=True)
class TopKEFConfig(AlgorithmSettings):
    """``topk-ef``: top-k (per tensor) with error feedback, every worker every round."""

    ABOUT = About(
        "topk-ef",
        "top-k sparsified SGD with error feedback, every worker every round",
        up="top-k of lr * gradient + error (index and value each)",
        down="the model (d values)",
    )

    lr: float = setting(0.005, POSITIVE, "step size")
    batch_size: int = setting(10, Interval(int, 1), "examples per worker per round")
    sampling: str = setting(
        "reshuffle", OneOf(SAMPLING), "uniform draws, or a fresh order of the shard every epoch"
    )
    density: float = setting(0.01, DENSITY, "share of each parameter tensor top-k keeps")

    def build(self) -> LazyAggregation:
        """The algorithm."""
        spec = LazySpec(
            self.lr,
            self.batch_size,
            self.sampling,
            "always",
            1,
            (0.0,),
            "last-upload",
            self.density,
        )
        return LazyAggregation(self.ABOUT.name, spec)
