"""Second-order machinery, batched over workers: Newton directions by exact solve or CG.

Every worker solves its own system H_w p_w = g_w at once. Conjugate gradients (Hestenes and
Stiefel, 1952; Nocedal and Wright, Alg. 5.2) run on all workers in lock-step, each stopping
when its relative residual ||r|| <= tol ||b|| or at ``max_iter``; a stopped worker's iterate is
frozen. Each iteration costs one Hessian-vector product per worker still running, counted by
:class:`~lowcomm.algorithms.local_data.LocalData`.

An exact solve forms the d x d Hessian (counted as d HVPs; in closed form for the linear models,
batched matrix products over all workers) and solves all workers' systems in one batched LU
call (``torch.linalg.solve``); ``auto`` does that up to d = :data:`EXACT_MAX_DIM` and uses CG
above. LU, not Cholesky: a batched Cholesky is no faster in float32 at the demo's d = 640, and
it moved a torchdist run's CG iteration counts away from simulate's (the engines' gradients
agree to about 1e-16, not bit for bit, and Cholesky's rounding tipped a count at tol 1e-12).
Measured by ``benchmarks/bench_newton.py`` (one CPU thread, 8 workers, one direction,
exact vs CG with 50 iterations, tol 1e-6, float32; docs/benchmarks.md): logistic regression
d = 300: 9 ms vs 11 ms; softmax on digits d = 640: 37 ms vs 34 ms (CG's residual still 2e-2);
d = 1000: 0.12 s vs 0.02 s; d = 2000: 0.56 s vs 0.04 s; earlier, an MLP on digits d = 1210:
1.9 s vs 0.02 s; d = 4810: 41 s vs 0.02 s. The rule: exact while an exact direction costs a
fraction of a second for a linear model (every published LocalNewton setting, d <= 300, and the
demo's d = 640 stay exact); above it the cubic cost takes over.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass

import torch

from lowcomm.algorithms.local_data import LocalData
from lowcomm.core.constraints import Interval, OneOf

SOLVER_PART = "newton solver"  # the part of an algorithm its solver settings configure, in errors
SOLVER = OneOf(("exact", "cg"))
AUTO_SOLVER = OneOf(("auto", "exact", "cg"))
EXACT_MAX_DIM = 1000
"""The largest dimension ``auto`` solves exactly (the module docstring gives the measurements)."""
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

    A row whose search direction meets curvature p.Ap <= 0 (A is not positive definite there,
    e.g. a network's Hessian) stops at its current iterate, or at b if that is still 0: the
    truncated Newton-CG rule (Nocedal and Wright, Alg. 7.1), so a descent direction comes back
    instead of a step divided by a curvature near 0.
    """
    x = torch.zeros_like(b)
    r = b.clone()
    p = r.clone()
    rr = (r * r).sum(dim=1)
    target = (tol**2) * rr
    iterations = torch.zeros(b.shape[0], dtype=torch.int64, device=b.device)
    flat = torch.zeros(b.shape[0], dtype=torch.bool, device=b.device)
    for _ in range(max_iter):
        active = (rr > target) & ~flat
        if not bool(active.any()):
            break
        Ap = apply(p, active)
        pAp = (p * Ap).sum(dim=1)
        newly_flat = active & ~(pAp > 0)
        x = torch.where((newly_flat & (iterations == 0))[:, None], b, x)
        flat |= newly_flat
        active &= ~newly_flat
        alpha = torch.where(active, rr / pAp.clamp_min(1e-300), 0.0)
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
    """How a worker finds its Newton direction: ``exact`` (d x d solve), ``cg`` or ``auto``.

    ``auto``: exact up to d = :data:`EXACT_MAX_DIM`, CG above. The configs that build one
    declare the allowed values (:data:`SOLVER` or :data:`AUTO_SOLVER`, :data:`CG_TOL`,
    :data:`CG_ITERS`).
    """

    method: str = "exact"
    cg_tol: float = 1e-6
    cg_iters: int = 50

    def solve(self, data: LocalData, params: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
        """The solution p of (local Hessian at ``params``) p = ``rhs``, for every worker."""
        if self.resolved(params.shape[1]) == "exact":
            return torch.linalg.solve(data.hessian(params), rhs)
        direction, _ = conjugate_gradient(
            lambda v, active: data.hvp_rows(params, v, active), rhs, self.cg_tol, self.cg_iters
        )
        return direction

    def resolved(self, dim: int) -> str:
        """The method used for a model of ``dim`` parameters: ``exact`` or ``cg``."""
        if self.method != "auto":
            return self.method
        return "exact" if dim <= EXACT_MAX_DIM else "cg"

    def note(self, algorithm: str, dim: int) -> str | None:
        """A line for stderr when ``dim`` is over :data:`EXACT_MAX_DIM`: what the solve costs."""
        if dim <= EXACT_MAX_DIM or self.method == "cg":
            return None
        hessian = f"an exact {dim} x {dim} Hessian per worker and step"
        if self.method == "exact":
            instead = "solver=cg uses Hessian-vector products instead"
            return f"note: {algorithm} forms {hessian} as asked (solver=exact; {instead})"
        cg = f"CG (at most {self.cg_iters} Hessian-vector products, tol {self.cg_tol:g})"
        why = f"d = {dim} is over {EXACT_MAX_DIM}, where forming {hessian} costs too much"
        return f"note: {algorithm} solves its Newton systems by {cg}: {why} (solver=exact insists)"

    def announce(self, algorithm: str, dim: int) -> None:
        """Print :meth:`note` on stderr, if there is one (once, when a run starts)."""
        note = self.note(algorithm, dim)
        if note is not None:
            print(note, file=sys.stderr)
