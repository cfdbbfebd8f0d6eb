"""Simulated time from a network model and a compute model.

The network model gives each message latency + bytes / bandwidth (per-link overrides); the
compute model gives seconds per gradient evaluation and per Hessian-vector product, scaled by
per-worker speed factors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from lowcomm.core.errors import InvalidConfigError


@dataclass(frozen=True)
class Link:
    """One worker's link to the aggregator: latency in seconds, bandwidth in bytes per second."""

    latency: float = 0.0
    bandwidth: float = math.inf

    def __post_init__(self) -> None:
        if not self.latency >= 0:
            raise InvalidConfigError("latency", "Link", "a number >= 0 (seconds)", self.latency)
        if not self.bandwidth > 0:
            raise InvalidConfigError("bandwidth", "Link", "a number > 0 (bytes/s)", self.bandwidth)


@dataclass(frozen=True)
class NetworkModel:
    """Time of one message: latency + bytes / bandwidth of the worker's link (0 if not sent)."""

    default: Link = Link()
    links: dict[int, Link] = field(default_factory=dict)

    def table(self, n_workers: int) -> tuple[np.ndarray, np.ndarray]:
        """Latency and bandwidth of every worker's link, arrays of length ``n_workers``."""
        links = [self.links.get(w, self.default) for w in range(n_workers)]
        return np.array([x.latency for x in links]), np.array([x.bandwidth for x in links])


@dataclass(frozen=True)
class ComputeModel:
    """Seconds of local computation: (evaluations x cost) / speed[w]; speed 2 is twice as fast."""

    seconds_per_grad: float = 0.0
    seconds_per_hvp: float = 0.0
    speeds: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        for name in ("seconds_per_grad", "seconds_per_hvp"):
            if not getattr(self, name) >= 0:
                raise InvalidConfigError(name, "ComputeModel", "a number >= 0", getattr(self, name))
        if any(not s > 0 for s in self.speeds):
            raise InvalidConfigError("speeds", "ComputeModel", "numbers > 0", self.speeds)

    def table(self, n_workers: int) -> np.ndarray:
        """Speed factor of every worker (1 where none is given)."""
        speeds = np.ones(n_workers)
        given = np.array(self.speeds[:n_workers], dtype=float)
        speeds[: given.size] = given
        return speeds


@dataclass(frozen=True)
class ClockModel:
    """Network plus compute: the model the engines use to advance simulated time.

    ``round_latency`` is a fixed cost per synchronous round on top of the messages' own time,
    e.g. invoking serverless workers and their storage I/O (LocalNewton's AWS Lambda setting).
    """

    network: NetworkModel = NetworkModel()
    compute: ComputeModel = ComputeModel()
    round_latency: float = 0.0

    def __post_init__(self) -> None:
        if not self.round_latency >= 0:
            raise InvalidConfigError(
                "round_latency", "ClockModel", "a number >= 0 (seconds)", self.round_latency
            )

    def for_workers(self, n_workers: int) -> Timing:
        """Per-worker lookup tables for a run of ``n_workers``."""
        latency, bandwidth = self.network.table(n_workers)
        speeds = self.compute.table(n_workers)
        return Timing(latency, bandwidth, speeds, self.compute, self.round_latency)


@dataclass(frozen=True)
class Timing:
    """Vectorised timing of messages and computation for the workers of one run."""

    latency: np.ndarray
    bandwidth: np.ndarray
    speed: np.ndarray
    compute: ComputeModel
    round_latency: float = 0.0

    def transfer(self, workers: np.ndarray, nbytes: np.ndarray, sent: np.ndarray) -> np.ndarray:
        """Seconds each message takes: latency + bytes / bandwidth; rows not sent take none."""
        seconds = self.latency[workers] + nbytes / self.bandwidth[workers]
        return np.where(sent, seconds, 0.0)

    def work(self, workers: np.ndarray, grad_evals: np.ndarray, hvps: np.ndarray) -> np.ndarray:
        """Seconds each worker spends on its gradient evaluations and Hessian-vector products."""
        seconds = grad_evals * self.compute.seconds_per_grad + hvps * self.compute.seconds_per_hvp
        return seconds / self.speed[workers]

    @cached_property
    def _scalars(self) -> tuple[list[float], list[float], list[float]]:
        """Latency, bandwidth and speed of every worker as Python numbers, for one message."""
        return self.latency.tolist(), self.bandwidth.tolist(), self.speed.tolist()

    def transfer_one(self, worker: int, nbytes: int, sent: bool) -> float:
        """:meth:`transfer` of one message, the same IEEE operations on Python floats."""
        latency, bandwidth, _ = self._scalars
        return latency[worker] + nbytes / bandwidth[worker] if sent else 0.0

    def work_one(self, worker: int, grad_evals: int, hvps: int) -> float:
        """:meth:`work` of one worker, the same IEEE operations on Python floats."""
        compute = self.compute
        seconds = grad_evals * compute.seconds_per_grad + hvps * compute.seconds_per_hvp
        return seconds / self._scalars[2][worker]

    def sync_round(
        self,
        workers: np.ndarray,
        down_bytes: np.ndarray,
        up_bytes: np.ndarray,
        sent: np.ndarray,
        grad_evals: np.ndarray,
        hvps: np.ndarray,
    ) -> float:
        """A synchronous round lasts as long as its slowest worker: download, compute, upload."""
        down = self.transfer(workers, down_bytes, np.ones_like(sent))
        total = down + self.work(workers, grad_evals, hvps) + self.transfer(workers, up_bytes, sent)
        return float(total.max()) if workers.size else 0.0
