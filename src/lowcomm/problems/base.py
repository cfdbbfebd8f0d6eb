"""The problem seam: an objective evaluated for many workers at once.

Parameters are flat vectors with a leading worker axis, ``params[w, d]``; data come as
``X[w, b, *feature_shape]``, ``y[w, b]`` and per-example weights ``weight[w, b]`` (0 marks
padding, so workers with unequal shards share one batched call). For data too wide to densify,
``X`` is a sparse COO tensor ``[w, b, d]``, which only the linear problems read
(:mod:`lowcomm.problems.linear`). Parameters and data live on the problem's ``device``. The local
objective of a worker is the weighted mean of its
per-example losses plus the L2 term:

    f_w(x) = sum_i weight_i * loss_i(x) / sum_i weight_i + (l2 / 2) * ||x||^2
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch


class Problem(Protocol):
    """An objective with batched loss, gradients and second-order products."""

    dim: int
    segments: tuple[int, ...]
    dtype: torch.dtype
    device: torch.device
    metric_name: str

    def init_params(self, generator: torch.Generator) -> torch.Tensor:
        """Initial parameters ``[d]`` on ``device``, drawn from the CPU ``generator``."""
        ...

    def loss(
        self, params: torch.Tensor, X: torch.Tensor, y: torch.Tensor, weight: torch.Tensor
    ) -> torch.Tensor:
        """Local objective of each worker, ``[w]``."""
        ...

    def grad(
        self, params: torch.Tensor, X: torch.Tensor, y: torch.Tensor, weight: torch.Tensor
    ) -> torch.Tensor:
        """Gradient of :meth:`loss`, ``[w, d]``."""
        ...

    def per_example_grads(
        self, params: torch.Tensor, X: torch.Tensor, y: torch.Tensor
    ) -> torch.Tensor:
        """Gradient of each example's loss plus the L2 term, ``[w, b, d]``."""
        ...

    def hvp(
        self,
        params: torch.Tensor,
        X: torch.Tensor,
        y: torch.Tensor,
        weight: torch.Tensor,
        v: torch.Tensor,
    ) -> torch.Tensor:
        """Hessian of :meth:`loss` times ``v[w, d]``, ``[w, d]``."""
        ...

    def hessian(
        self, params: torch.Tensor, X: torch.Tensor, y: torch.Tensor, weight: torch.Tensor
    ) -> torch.Tensor:
        """Hessian of :meth:`loss`, ``[w, d, d]`` (for small d)."""
        ...

    def metric(self, params: torch.Tensor, X: torch.Tensor, y: torch.Tensor) -> float:
        """Test metric (accuracy) of one parameter vector ``[d]`` on ``X[n, ...]``, ``y[n]``."""
        ...


@runtime_checkable
class ExampleGradients(Protocol):
    """A problem with a fast gradient of one example per worker, for sequential SGD steps."""

    def example_grad(self, params: torch.Tensor, X: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Gradient ``[w, d]`` on one dense example per worker, ``X[w, 1, ...]``, ``y[w, 1]``.

        The bits of :meth:`Problem.grad` with unit weights (the one example's weight is 1).
        """
        ...
