"""Second-order machinery, batched over workers: Newton directions by exact solve or CG.

Every worker solves its own system H_w p_w = g_w at once. Conjugate gradients (Hestenes and
Stiefel, 1952; Nocedal and Wright, Alg. 5.2) run on all workers in lock-step, each stopping
when its relative residual ||r|| <= tol ||b|| or at ``max_iter``; a stopped worker's iterate is
frozen. Each iteration costs one Hessian-vector product per worker still running, counted by
:class:`~lowcomm.algorithms.local_data.LocalData`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from lowcomm.algorithms.local_data import LocalData
from lowcomm.core.constraints import Interval, OneOf

SOLVER_PART = "newton solver"  # the part of an algorithm its solver settings configure, in errors
SOLVER = OneOf(("exact", "cg"))
CG_TOL = Interval(float, 0.0, 1.0)
CG_ITERS = Interval(int, 1)


def conjugate_gradient(
    apply: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    b: torch.Tensor,
    tol: float,
    max_iter: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Solve A_w x_w = b_w for every row, A symmetric positive definite, from x = 0.

    ``apply(v, active)`` returns A v for the rows of ``v`` (rows where ``active`` is False may
    be returned as anything). Returns the solutions and the iterations each row ran.
    """
    x = torch.zeros_like(b)
    r = b.clone()
    p = r.clone()
    rr = (r * r).sum(dim=1)
    target = (tol**2) * rr
    iterations = torch.zeros(b.shape[0], dtype=torch.int64, device=b.device)
    for _ in range(max_iter):
        active = rr > target
        if not bool(active.any()):
            break
        Ap = apply(p, active)
        alpha = torch.where(active, rr / (p * Ap).sum(dim=1).clamp_min(1e-300), 0.0)
        x = x + alpha[:, None] * p
        r = r - alpha[:, None] * Ap
        new = (r * r).sum(dim=1)
        beta = torch.where(active, new / rr.clamp_min(1e-300), 0.0)
        p = torch.where(active[:, None], r + beta[:, None] * p, p)
        rr = torch.where(active, new, rr)
        iterations += active.to(torch.int64)
    return x, iterations


@dataclass(frozen=True)
class NewtonSolver:
    """How a worker finds its Newton direction: ``exact`` (d x d solve) or ``cg``.

    The configs that build one declare the allowed values (:data:`SOLVER`, :data:`CG_TOL`,
    :data:`CG_ITERS`).
    """

    method: str = "exact"
    cg_tol: float = 1e-6
    cg_iters: int = 50

    def solve(self, data: LocalData, params: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
        """The solution p of (local Hessian at ``params``) p = ``rhs``, for every worker."""
        if self.method == "exact":
            return torch.linalg.solve(data.hessian(params), rhs)
        direction, _ = conjugate_gradient(
            lambda v, active: data.hvp_rows(params, v, active), rhs, self.cg_tol, self.cg_iters
        )
        return direction
