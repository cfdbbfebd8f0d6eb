"""The public configs of the lazy family, with the SASG paper's constants as defaults.

Each config names a trigger (:mod:`lowcomm.algorithms.triggers`) and, except ``lag``, a
compressor with or without error feedback (the ``compressor`` and ``error_feedback`` settings).
Defaults are the SASG authors' MNIST notebook (10 workers are a run setting): step 0.005, batch
10 per worker with reshuffling every epoch, D = 10, threshold multiplier c = 1/2, top-k density 1%
per parameter tensor with error feedback (see ../shared/papers/sasg-and-localnewton.md, 1.2).
``lag`` follows the official LAG code: D = 10, xi_d = xi / D with xi = 1 (WK) or 10 (PS).
All four minimise the sum of the workers' objectives f_m = (M / N) sum_{i in S_m} loss_i plus
their shares of the L2 term, M times the reported objective
(:mod:`lowcomm.algorithms.objective`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from lowcomm.algorithms.lazy import LazyAggregation, LazySpec, Weights
from lowcomm.algorithms.learning_rate import LEARNING_RATE
from lowcomm.algorithms.local_data import SAMPLING
from lowcomm.algorithms.settings import (
    NON_NEGATIVE,
    About,
    AlgorithmSettings,
    Interval,
    ListOf,
    NoneOr,
    OneOf,
    setting,
)
from lowcomm.algorithms.triggers import LAGPS, LAGWK, LASGWK2, REFERENCES, Always
from lowcomm.algorithms.upload import (
    COMPRESSOR,
    COMPRESSOR_MEANING,
    compressor_setting,
    error_feedback_setting,
)
from lowcomm.core.errors import InvalidConfigError

DENSITY = Interval(float, 1e-12, 1.0, closed="both")
DEFAULT_DENSITY = 0.01
XI = ListOf(Interval(float, 0.0, math.inf, closed="both"))
LAZY_UP = "a lazy worker sends nothing"
LR_MEANING = "step size: a number or a schedule"
SUM_OBJECTIVE = "M F = sum_m f_m, f_m = (M/N) * worker m's loss sum (LAG's sum, scaled)"
EVERY_WORKER = "its aggregator sums a message of every worker each round (a skipper's last)"


@dataclass(frozen=True)
class LASGConfig(AlgorithmSettings):
    """``lasg``: the LASG-WK2 trigger, by default over dense messages."""

    ABOUT = About(
        "lasg",
        "lazily aggregated stochastic gradients (LASG-WK2 trigger), dense messages by default",
        up=f"lr * gradient (d values), or its compressed form; {LAZY_UP}",
        down="the model and the threshold (d + 1 values)",
        objective=SUM_OBJECTIVE,
        participation=EVERY_WORKER,
    )

    lr: float | str = setting(0.005, LEARNING_RATE, LR_MEANING)
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
    compressor: str | None = compressor_setting()
    error_feedback: bool = error_feedback_setting()

    def _compressor(self) -> str:
        """The compressor string (never null here)."""
        assert self.compressor is not None
        return self.compressor

    def build(self) -> LazyAggregation:
        """The algorithm."""
        spec = LazySpec(
            self.lr,
            self.batch_size,
            self.sampling,
            LASGWK2(self.window, self.reference),
            Weights(tuple(self.xi), self.threshold, max(self.window - 1, 1)),
            self._compressor(),
            self.error_feedback,
        )
        return LazyAggregation(self.ABOUT.name, spec)


def _topk_or(config: SASGConfig | TopKEFConfig) -> str:
    """The compressor of a config whose null compressor is top-k per tensor at ``density``.

    Raises:
        InvalidConfigError: a density other than the default together with a compressor.
    """
    if config.compressor is None:
        return f"topk:{config.density!r}"
    if config.density != DEFAULT_DENSITY:
        allowed = f"{DEFAULT_DENSITY} (its default) when a compressor is set (topk:DENSITY)"
        raise InvalidConfigError("density", config.ABOUT.name, allowed, config.density)
    return config.compressor


_TOPK_COMPRESSOR = f"{COMPRESSOR_MEANING} (null: top-k per tensor at density)"
_DENSITY_MEANING = "share of each parameter tensor top-k keeps (with compressor null)"


@dataclass(frozen=True)
class SASGConfig(LASGConfig):
    """``sasg``: the LASG-WK2 trigger, by default over error-feedback top-k (per tensor)."""

    ABOUT = About(
        "sasg",
        "sparse lazy SGD: the LASG-WK2 trigger over top-k messages with error feedback",
        up=f"top-k of lr * gradient + error (index and value each), or compressed; {LAZY_UP}",
        down="the model and the threshold (d + 1 values)",
        objective=SUM_OBJECTIVE,
        participation=EVERY_WORKER,
    )

    compressor: str | None = setting(None, NoneOr(COMPRESSOR), _TOPK_COMPRESSOR)
    error_feedback: bool = error_feedback_setting(True)
    density: float = setting(DEFAULT_DENSITY, DENSITY, _DENSITY_MEANING)

    def __post_init__(self) -> None:
        """Refuse a density together with a compressor."""
        super().__post_init__()
        _topk_or(self)

    def _compressor(self) -> str:
        return _topk_or(self)


@dataclass(frozen=True)
class LAGConfig(AlgorithmSettings):
    """``lag``: deterministic (full local) gradients, worker- (``wk``) or server-side (``ps``)."""

    ABOUT = About(
        "lag",
        "lazily aggregated (full local) gradients, triggered at the worker or the aggregator",
        up=f"lr * local gradient (d values); {LAZY_UP}",
        down="the model and the threshold (d + 1 values; ps: + 1 request bit per worker)",
        objective=SUM_OBJECTIVE,
        participation=EVERY_WORKER,
    )

    lr: float | str = setting(0.1, LEARNING_RATE, LR_MEANING)
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
        trigger = LAGWK(self.window) if self.rule == "wk" else LAGPS(self.window)
        weights = Weights(tuple(self.xi) or (xi / self.window,) * self.window)
        spec = LazySpec(self.lr, None, "replacement", trigger, weights, "identity", False)
        return LazyAggregation(self.ABOUT.name, spec)


@dataclass(frozen=True)
class TopKEFConfig(AlgorithmSettings):
    """``topk-ef``: every worker every round, by default top-k (per tensor) with error feedback."""

    ABOUT = About(
        "topk-ef",
        "top-k sparsified SGD with error feedback, every worker every round",
        up="top-k of lr * gradient + error (index and value each), or compressed",
        down="the model (d values)",
        objective=SUM_OBJECTIVE,
        participation=EVERY_WORKER,
    )

    lr: float | str = setting(0.005, LEARNING_RATE, LR_MEANING)
    batch_size: int = setting(10, Interval(int, 1), "examples per worker per round")
    sampling: str = setting(
        "reshuffle", OneOf(SAMPLING), "uniform draws, or a fresh order of the shard every epoch"
    )
    density: float = setting(DEFAULT_DENSITY, DENSITY, _DENSITY_MEANING)
    compressor: str | None = setting(None, NoneOr(COMPRESSOR), _TOPK_COMPRESSOR)
    error_feedback: bool = error_feedback_setting(True)

    def __post_init__(self) -> None:
        """Refuse a density together with a compressor."""
        super().__post_init__()
        _topk_or(self)

    def build(self) -> LazyAggregation:
        """The algorithm."""
        spec = LazySpec(
            self.lr,
            self.batch_size,
            self.sampling,
            Always(),
            Weights((0.0,)),
            _topk_or(self),
            self.error_feedback,
        )
        return LazyAggregation(self.ABOUT.name, spec)
