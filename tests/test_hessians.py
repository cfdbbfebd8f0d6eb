"""Closed-form Hessians against autograd; the batched Cholesky Newton solve and its fallback."""

from __future__ import annotations

import pytest
import torch

from lowcomm.problems.base import Problem
from lowcomm.problems.logistic import LogisticRegression
from lowcomm.problems.softmax import SoftmaxRegression

F64 = torch.float64
W, B, FEATURES, CLASSES = 3, 9, 4, 5


def data(classes: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Three workers with 9, 6 and 2 real examples of unequal weights; padding is garbage."""
    g = torch.Generator().manual_seed(0)
    X = torch.randn(W, B, FEATURES, generator=g, dtype=F64)
    y = torch.randint(0, classes, (W, B), generator=g)
    weight = torch.rand(W, B, generator=g, dtype=F64) + 0.25
    for w, n in enumerate((9, 6, 2)):
        weight[w, n:] = 0.0
        X[w, n:] = 30.0
    return X, y, weight


def problems() -> list[tuple[Problem, int]]:
    """Softmax and logistic regression, with and without intercept, l2 > 0; their classes."""
    out: list[tuple[Problem, int]] = []
    for intercept in (False, True):
        out.append((SoftmaxRegression(FEATURES, CLASSES, 0.3, intercept, dtype=F64), CLASSES))
        out.append((LogisticRegression(FEATURES, 0.3, intercept, dtype=F64), 2))
    return out


@pytest.mark.parametrize(
    ("problem", "classes"), problems(), ids=["softmax", "logistic", "softmax-b", "logistic-b"]
)
def test_closed_form_hessian_equals_autograd_hessian_of_the_loss(
    problem: Problem, classes: int
) -> None:
    X, y, weight = data(classes)
    params = torch.randn(W, problem.dim, generator=torch.Generator().manual_seed(1), dtype=F64)
    H = problem.hessian(params, X, y, weight)
    assert H.shape == (W, problem.dim, problem.dim)
    for w in range(W):
        rows = slice(w, w + 1)

        def loss(x: torch.Tensor, rows: slice = rows) -> torch.Tensor:
            return problem.loss(x[None], X[rows], y[rows], weight[rows])[0]

        expected = torch.func.hessian(loss)(params[w])
        torch.testing.assert_close(H[w], expected, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(H[w], H[w].mT, rtol=0, atol=1e-15)


def test_softmax_hessian_of_a_sparse_design_is_the_dense_one() -> None:
    problem = SoftmaxRegression(FEATURES, CLASSES, 0.1, fit_intercept=True, dtype=F64)
    X, y, weight = data(CLASSES)
    params = torch.randn(W, problem.dim, generator=torch.Generator().manual_seed(1), dtype=F64)
    dense = problem.hessian(params, X, y, weight)
    assert torch.equal(problem.hessian(params, X.to_sparse(), y, weight), dense)
