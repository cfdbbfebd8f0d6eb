"""Streaming PCA: Oja's rule as a problem, and data X ~ N(0, Sigma) with a chosen eigengap.

The task is max v' Sigma v over ||v|| = 1 (non-convex: the other eigenvectors are saddles),
with data from :mod:`lowcomm.data.synthetic_pca` (e_1 is the top eigenvector there). The
"gradient" of one sample x is the negated Oja direction (Oja, 1982), so that a descent step
v - eta g is Oja's update:

    g(v; x) = -((x.v) x - (x.v)^2 v),   v <- v + eta (I - v v') x x' v.

The loss the engine reports is the negated Rayleigh quotient -v' S v / ||v||^2 on the data, and
the metric is sin^2 of the angle to e_1, 1 - v_1^2 / ||v||^2 (smaller is better). There is no
Hessian: second-order algorithms are refused with a clear message.
"""

from __future__ import annotations

import torch

from lowcomm.core.device import as_device
from lowcomm.core.errors import InvalidConfigError
from lowcomm.problems.linear import normalise_weights


class StreamingPCA:
    """Oja's rule for the top eigenvector; see the module docstring.

    Parameters live on ``device`` (None: torch's default device).
    """

    metric_name = "sin2"

    def __init__(
        self,
        dim: int,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> None:
        self.dim = dim
        self.segments: tuple[int, ...] = (dim,)
        self.dtype = dtype
        self.device = as_device(device)

    def init_params(self, generator: torch.Generator) -> torch.Tensor:
        """A random unit vector almost orthogonal to e_1 (its e_1 part scaled by 0.05)."""
        v = torch.randn(self.dim, generator=generator, dtype=torch.float64, device=generator.device)
        v[0] *= 0.05
        return (v / v.norm()).to(self.device, self.dtype)

    def loss(
        self, params: torch.Tensor, X: torch.Tensor, y: torch.Tensor, weight: torch.Tensor
    ) -> torch.Tensor:
        """-v' S v / ||v||^2 with S the weighted sample covariance."""
        proj = torch.bmm(params.unsqueeze(1), X.mT).squeeze(1)
        quotient = (normalise_weights(weight) * proj**2).sum(dim=1)
        return -quotient / (params**2).sum(dim=1)

    def per_example_grads(
        self, params: torch.Tensor, X: torch.Tensor, y: torch.Tensor
    ) -> torch.Tensor:
        """-((x.v) x - (x.v)^2 v) for every sample, ``[w, b, d]``."""
        proj = torch.bmm(params.unsqueeze(1), X.mT).squeeze(1)
        return -(proj[..., None] * X - (proj**2)[..., None] * params[:, None, :])

    def grad(
        self, params: torch.Tensor, X: torch.Tensor, y: torch.Tensor, weight: torch.Tensor
    ) -> torch.Tensor:
        """The weighted mean of :meth:`per_example_grads`."""
        per_example = self.per_example_grads(params, X, y)
        return (normalise_weights(weight)[..., None] * per_example).sum(dim=1)

    def hvp(self, *args: torch.Tensor) -> torch.Tensor:
        """Not defined: Oja's direction is not the gradient of a loss."""
        raise _no_second_order()

    def hessian(self, *args: torch.Tensor) -> torch.Tensor:
        """Not defined: Oja's direction is not the gradient of a loss."""
        raise _no_second_order()

    def metric(self, params: torch.Tensor, X: torch.Tensor, y: torch.Tensor) -> float:
        """sin^2 of the angle between v and e_1."""
        v = params.to(torch.float64)
        return float(1.0 - v[0] ** 2 / (v**2).sum())


def _no_second_order() -> InvalidConfigError:
    return InvalidConfigError("model", "streaming PCA", "used with first-order algorithms", "pca")
