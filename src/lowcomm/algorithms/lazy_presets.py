"""The public configs of the lazy family, with the SASG paper's constants as defaults.

Defaults are the SASG authors' MNIST notebook (10 workers are a run setting): step 0.005,
batch 10 per worker with reshuffling every epoch, D = 10, threshold multiplier c = 1/2, top-k
density 1% per parameter tensor (see ../shared/papers/sasg-and-localnewton.md, 1.2). ``lag``
follows the official LAG code: D = 10, xi_d = xi / D with xi = 1 (WK) or 10 (PS).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from lowcomm.algorithms.lazy import REFERENCES, LazyAggregation, LazySpec
from lowcomm.algorithms.local_data import SAMPLING
from lowcomm.core.errors import InvalidConfigError
from lowcomm.core.validate import at_least, in_interval, one_of, positive


def _check_common(owner: str, lr: float, window: int, xi: tuple[float, ...]) -> None:
    positive(owner, "lr", lr)
    at_least(owner, "window", window, 1)
    if any(not x >= 0 for x in xi):
        raise InvalidConfigError("xi", owner, "a list of numbers >= 0", xi)


def _check_stochastic(owner: str, batch_size: int, sampling: str) -> None:
    at_least(owner, "batch_size", batch_size, 1)
    one_of(owner, "sampling", sampling, SAMPLING)


def _notebook_weights(threshold: float, lr: float, window: int) -> tuple[float, ...]:
    """xi_d = c * lr over the D - 1 differences of a window of D models (the notebooks)."""
    return (threshold * lr,) * max(window - 1, 1)


@dataclass(frozen=True)
class LASGConfig:
    """``lasg``: the LASG-WK2 trigger over dense messages (SASG without sparsification)."""

    NAME: ClassVar[str] = "lasg"

    lr: float = 0.005
    batch_size: int = 10
    sampling: str = "reshuffle"
    window: int = 10
    threshold: float = 0.5
    reference: str = "last-upload"
    xi: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        _check_common(self.NAME, self.lr, self.window, self.xi)
        _check_stochastic(self.NAME, self.batch_size, self.sampling)
        in_interval(self.NAME, "threshold", self.threshold, 0.0, float("inf"))
        one_of(self.NAME, "reference", self.reference, REFERENCES)

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
        return LazyAggregation(self.NAME, spec)


@dataclass(frozen=True)
class SASGConfig(LASGConfig):
    """``sasg``: the LASG-WK2 trigger over error-feedback top-k (per tensor) messages."""

    NAME: ClassVar[str] = "sasg"

    density: float = 0.01

    def __post_init__(self) -> None:
        super().__post_init__()
        in_interval(self.NAME, "density", self.density, 1e-12, 1.0, closed_high=True)

    def _density(self) -> float | None:
        return self.density


@dataclass(frozen=True)
class LAGConfig:
    """``lag``: deterministic (full local) gradients, worker- (``wk``) or server-side (``ps``)."""

    lr: float = 0.1
    rule: str = "wk"
    window: int = 10
    threshold: float | None = None
    xi: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        _check_common("lag", self.lr, self.window, self.xi)
        one_of("lag", "rule", self.rule, ("wk", "ps"))
        if self.threshold is not None:
            in_interval("lag", "threshold", self.threshold, 0.0, float("inf"))

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
        return LazyAggregation("lag", spec)


@dataclass(frozen=True)
class TopKEFConfig:
    """``topk-ef``: top-k (per tensor) with error feedback, every worker every round."""

    lr: float = 0.005
    batch_size: int = 10
    sampling: str = "reshuffle"
    density: float = 0.01

    def __post_init__(self) -> None:
        positive("topk-ef", "lr", self.lr)
        _check_stochastic("topk-ef", self.batch_size, self.sampling)
        in_interval("topk-ef", "density", self.density, 1e-12, 1.0, closed_high=True)

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
        return LazyAggregation("topk-ef", spec)
