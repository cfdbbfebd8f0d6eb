"""Binary L2-regularised logistic regression in closed form, and its exact optimum.

With labels ``s_i = 2 y_i - 1`` in {-1, +1}, rows ``a_i`` of the design matrix ``A`` (features,
plus a trailing 1 when an intercept is fitted), margins ``m_i = s_i a_i·x`` and normalised weights
``ω_i = weight_i / Σ_j weight_j``, the local objective of a worker is

    f(x) = Σ_i ω_i log(1 + exp(-m_i)) + (l2 / 2) ||x||²
    ∇f(x) = -Aᵀ (ω ⊙ s ⊙ σ(-m)) + l2 x
    ∇²f(x) = Aᵀ diag(ω ⊙ σ(m) ⊙ σ(-m)) A + l2 I

where σ is the logistic sigmoid (Bishop, *Pattern Recognition and Machine Learning*, §4.3.2-3).
The loss is evaluated as ``softplus(-m)`` so that it stays finite for any margin.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import torch
import torch.nn.functional as F

from lowcomm.core.device import as_device
from lowcomm.core.errors import InvalidConfigError
from lowcomm.problems.base import Problem
from lowcomm.problems.linear import (
    dense,
    design_matrix,
    matvec,
    normalise_weights,
    rmatvec,
    squared_norm,
    weighted_gram,
)


class LogisticRegression:
    """Binary logistic regression; labels ``y`` in {0, 1}; zero initialisation.

    Parameters are ``[weights, intercept]`` when ``fit_intercept`` (the intercept is penalised
    by ``l2`` too, so that the objective is ``l2``-strongly convex in every coordinate).
    Features of any shape are flattened, so ``n_features`` is their product. Parameters live on
    ``device`` (None: torch's default device).
    """

    metric_name = "accuracy"

    def __init__(
        self,
        n_features: int,
        l2: float = 0.0,
        fit_intercept: bool = False,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> None:
        if n_features < 1:
            raise InvalidConfigError("n_features", "LogisticRegression", ">= 1", n_features)
        if l2 < 0:
            raise InvalidConfigError("l2", "LogisticRegression", ">= 0", l2)
        self.n_features = n_features
        self.l2 = float(l2)
        self.fit_intercept = fit_intercept
        self.dtype = dtype
        self.device = as_device(device)
        self.dim = n_features + int(fit_intercept)
        self.segments: tuple[int, ...] = (self.dim,)

    def init_params(self, generator: torch.Generator) -> torch.Tensor:
        """Zeros ``[d]`` (the objective is convex, so no random start is needed)."""
        return torch.zeros(self.dim, dtype=self.dtype, device=self.device)

    def _margins(
        self, params: torch.Tensor, X: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Design ``A[w, b, d]``, signs ``s[w, b]`` and margins ``m = s ⊙ (A x)``, ``[w, b]``."""
        A = design_matrix(X, self.fit_intercept)
        s = (2 * y - 1).to(A.dtype)
        return A, s, s * matvec(A, params)

    def loss(
        self, params: torch.Tensor, X: torch.Tensor, y: torch.Tensor, weight: torch.Tensor
    ) -> torch.Tensor:
        """``Σ_i ω_i softplus(-m_i) + (l2/2)||x||²`` per worker, ``[w]``."""
        _, _, m = self._margins(params, X, y)
        data = torch.einsum("wb,wb->w", normalise_weights(weight), F.softplus(-m))
        return data + 0.5 * self.l2 * squared_norm(params)

    def grad(
        self, params: torch.Tensor, X: torch.Tensor, y: torch.Tensor, weight: torch.Tensor
    ) -> torch.Tensor:
        """``-Aᵀ(ω ⊙ s ⊙ σ(-m)) + l2 x``, ``[w, d]``."""
        A, s, m = self._margins(params, X, y)
        coeff = normalise_weights(weight) * s * torch.sigmoid(-m)
        return self.l2 * params - rmatvec(A, coeff)

    def per_example_grads(
        self, params: torch.Tensor, X: torch.Tensor, y: torch.Tensor
    ) -> torch.Tensor:
        """``-s_i σ(-m_i) a_i + l2 x`` for every example, ``[w, b, d]``."""
        A, s, m = self._margins(params, X, y)
        return self.l2 * params.unsqueeze(1) - (s * torch.sigmoid(-m)).unsqueeze(-1) * dense(A)

    def example_grad(self, params: torch.Tensor, X: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """:meth:`grad` on one dense example per worker with unit weight, ``[w, d]``.

        The weight 1 leaves ``grad``'s coefficient as it is and its product with ``A`` has one
        term, so the bits are the same.
        """
        return self.per_example_grads(params, X, y).squeeze(1)

    def _curvature(
        self, params: torch.Tensor, X: torch.Tensor, y: torch.Tensor, weight: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Design ``A`` and the diagonal ``ω ⊙ σ(m) ⊙ σ(-m)`` of the Gauss-Newton middle factor."""
        A, _, m = self._margins(params, X, y)
        return A, normalise_weights(weight) * torch.sigmoid(m) * torch.sigmoid(-m)

    def hvp(
        self,
        params: torch.Tensor,
        X: torch.Tensor,
        y: torch.Tensor,
        weight: torch.Tensor,
        v: torch.Tensor,
    ) -> torch.Tensor:
        """``Aᵀ(D ⊙ (A v)) + l2 v`` without forming the Hessian, ``[w, d]``."""
        A, D = self._curvature(params, X, y, weight)
        Av = matvec(A, v)
        return rmatvec(A, D * Av) + self.l2 * v

    def hessian(
        self, params: torch.Tensor, X: torch.Tensor, y: torch.Tensor, weight: torch.Tensor
    ) -> torch.Tensor:
        """``Aᵀ diag(D) A + l2 I``, ``[w, d, d]``."""
        A, D = self._curvature(params, X, y, weight)
        H = weighted_gram(A, D)
        H.diagonal(dim1=1, dim2=2).add_(self.l2)
        return H

    def metric(self, params: torch.Tensor, X: torch.Tensor, y: torch.Tensor) -> float:
        """Accuracy of the rule ``ŷ = [a·x > 0]`` on ``X[n, ...]``, ``y[n]``."""
        A = design_matrix(X[None], self.fit_intercept)[0]
        return ((A @ params > 0).long() == y).double().mean().item()


class RegularisedProblem(Problem, Protocol):
    """A :class:`Problem` that exposes its L2 coefficient."""

    l2: float


def newton_optimum(
    problem: RegularisedProblem,
    X: torch.Tensor,
    y: torch.Tensor,
    tol: float = 1e-12,
    max_iter: int = 100,
) -> tuple[torch.Tensor, float]:
    """Minimiser and minimum of ``problem`` on the full data set ``X[n, ...]``, ``y[n]``.

    Damped Newton in float64 (Boyd and Vandenberghe, *Convex Optimization*, Alg. 9.5): the step
    ``Δ = -H⁻¹g`` with Armijo backtracking until the Newton decrement ``λ²/2 = -gᵀΔ/2`` (an
    estimate of ``f - f*``) is below ``tol``, then one last full step, which in the quadratic
    phase leaves a gradient at rounding level. Used as the reference ``F*`` for suboptimality.
    Forms the ``d x d`` Hessian, so it is meant for small ``d``.

    Args:
        problem: a convex objective, e.g. :class:`LogisticRegression`; needs ``l2 > 0`` so
            that the optimum exists and is unique.
        X: all training examples.
        y: their labels.
        tol: threshold on ``λ²/2``.
        max_iter: Newton iterations allowed.

    Returns:
        ``x*[d]`` in float64 and ``f(x*)``.

    Raises:
        InvalidConfigError: (a ``ValueError``) when ``problem.l2 <= 0``.
        RuntimeError: when Newton has not converged within ``max_iter`` iterations.
    """
    if problem.l2 <= 0:
        raise InvalidConfigError(
            "l2", "newton_optimum", "> 0 (without it the optimum may not exist)", problem.l2
        )
    Xd, yd = X.to(torch.float64)[None], y[None]
    weight = torch.ones(yd.shape, dtype=torch.float64, device=Xd.device)

    def f(x: torch.Tensor) -> float:
        return float(problem.loss(x[None], Xd, yd, weight)[0])

    x = problem.init_params(torch.Generator().manual_seed(0)).to(Xd.device, torch.float64)
    for _ in range(max_iter):
        g = problem.grad(x[None], Xd, yd, weight)[0]
        H = problem.hessian(x[None], Xd, yd, weight)[0]
        step = -torch.linalg.solve(H, g)
        slope = float(g @ step)
        if -slope / 2 <= tol:
            x = x + step
            return x, f(x)
        x = x + _armijo(f, x, step, slope) * step
    raise RuntimeError(f"newton_optimum did not reach tol={tol} within {max_iter} iterations.")


def _armijo(
    f: Callable[[torch.Tensor], float],
    x: torch.Tensor,
    step: torch.Tensor,
    slope: float,
    alpha: float = 0.25,
) -> float:
    """Largest ``t`` in 1, 1/2, 1/4, ... with ``f(x + tΔ) <= f(x) + alpha t gᵀΔ``."""
    fx, t = f(x), 1.0
    while f(x + t * step) > fx + alpha * t * slope:
        t /= 2
        if t < 1e-20:
            raise RuntimeError("newton_optimum: backtracking found no decrease.")
    return t
