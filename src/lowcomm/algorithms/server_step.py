"""The aggregator's step on a combined gradient: plain, heavy-ball or Nesterov momentum.

In PyTorch's convention (``torch.optim.SGD``), with step size lr_k at the aggregator's update k
(a number or a schedule, :mod:`lowcomm.algorithms.learning_rate`):

    v_{k+1} = momentum * v_k + g_k,
    x_{k+1} = x_k - lr_k * v_{k+1}                      (heavy-ball; plain when momentum = 0),
    x_{k+1} = x_k - lr_k * (g_k + momentum * v_{k+1})   (Nesterov, Sutskever et al., 2013).

With a constant lr the heavy-ball form equals Polyak's x_{k+1} = x_k + momentum (x_k - x_{k-1})
- lr g_k. ``async-msgd`` keeps that iterate form itself, because its ``normalize`` option
rescales the iterates the recursion differences.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lowcomm.algorithms.learning_rate import step_size


@dataclass(frozen=True)
class ServerStep:
    """One momentum step of the aggregator (see the module docstring)."""

    lr: float | str
    momentum: float = 0.0
    nesterov: bool = False

    def apply(
        self, params: torch.Tensor, velocity: torch.Tensor, grad: torch.Tensor, k: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The new model and momentum buffer after update ``k`` with gradient ``grad``."""
        velocity = self.momentum * velocity + grad
        direction = grad + self.momentum * velocity if self.nesterov else velocity
        return params - step_size(self.lr, k) * direction, velocity
