"""LogisticRegression against a hand-written float64 loss, autograd and finite differences."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lowcomm.problems.logistic import LogisticRegression, newton_optimum

W, B, F = 3, 9, 4
F64 = torch.float64


def make_data(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Three workers with 9, 6 and 4 real examples; padding rows hold garbage."""
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(W, B, F, generator=g, dtype=F64)
    y = torch.randint(0, 2, (W, B), generator=g)
    weight = torch.zeros(W, B, dtype=F64)
    for w, n in enumerate((9, 6, 4)):
        weight[w, :n] = 1.0
        X[w, n:] = 50.0
    return X, y, weight


def ref_loss(
    x: torch.Tensor,
    X: torch.Tensor,
    y: torch.Tensor,
    weight: torch.Tensor,
    l2: float,
    intercept: bool,
) -> torch.Tensor:
    """One worker's objective, written naively: x[d], X[b, F], y[b], weight[b]."""
    logits = X @ x[:F] + (x[F] if intercept else 0.0)
    s = 2.0 * y.to(F64) - 1.0
    losses = torch.log1p(torch.exp(-s * logits))
    return (weight * losses).sum() / weight.sum() + 0.5 * l2 * (x @ x)


@pytest.fixture(params=[False, True], ids=["no-intercept", "intercept"])
def setup(request: pytest.FixtureRequest):
    intercept = request.param
    problem = LogisticRegression(F, l2=0.3, fit_intercept=intercept, dtype=F64)
    X, y, weight = make_data()
    params = torch.randn(W, problem.dim, generator=torch.Generator().manual_seed(1), dtype=F64)
    return problem, params, X, y, weight


def per_worker(fn, params, X, y, weight):
    return torch.stack([fn(params[w], X[w], y[w], weight[w]) for w in range(W)])


def test_dims() -> None:
    assert LogisticRegression(5).dim == 5 and LogisticRegression(5).segments == (5,)
    p = LogisticRegression(5, fit_intercept=True)
    assert p.dim == 6 and p.segments == (6,)
    assert torch.equal(p.init_params(torch.Generator()), torch.zeros(6))


def test_loss_and_grad_match_autograd(setup) -> None:
    problem, params, X, y, weight = setup

    def ref(x, Xw, yw, ww):
        return ref_loss(x, Xw, yw, ww, problem.l2, problem.fit_intercept)

    def ref_grad(x, Xw, yw, ww):
        return torch.func.grad(ref)(x, Xw, yw, ww)

    torch.testing.assert_close(
        problem.loss(params, X, y, weight), per_worker(ref, params, X, y, weight)
    )
    torch.testing.assert_close(
        problem.grad(params, X, y, weight), per_worker(ref_grad, params, X, y, weight)
    )


def test_grad_matches_central_differences(setup) -> None:
    problem, params, X, y, weight = setup
    eps = 1e-6
    fd = torch.zeros_like(params)
    for j in range(problem.dim):
        e = torch.zeros(problem.dim, dtype=F64)
        e[j] = eps
        fd[:, j] = (
            problem.loss(params + e, X, y, weight) - problem.loss(params - e, X, y, weight)
        ) / (2 * eps)
    torch.testing.assert_close(problem.grad(params, X, y, weight), fd, rtol=1e-6, atol=1e-8)


def test_per_example_grads_match_single_example_loop(setup) -> None:
    problem, params, X, y, _ = setup
    got = problem.per_example_grads(params, X, y)
    one = torch.ones(1, dtype=F64)
    for w in range(W):
        for i in range(B):
            expected = torch.func.grad(ref_loss)(
                params[w], X[w, i : i + 1], y[w, i : i + 1], one, problem.l2, problem.fit_intercept
            )
            torch.testing.assert_close(got[w, i], expected)


def test_padding_rows_are_ignored(setup) -> None:
    problem, params, X, y, weight = setup
    v = torch.randn(params.shape, dtype=F64)
    padded = (
        problem.loss(params, X, y, weight),
        problem.grad(params, X, y, weight),
        problem.hvp(params, X, y, weight, v),
        problem.hessian(params, X, y, weight),
    )
    for w in range(W):
        n = int(weight[w].sum())
        args = (params[w : w + 1], X[w : w + 1, :n], y[w : w + 1, :n], weight[w : w + 1, :n])
        alone = (
            problem.loss(*args),
            problem.grad(*args),
            problem.hvp(*args, v[w : w + 1]),
            problem.hessian(*args),
        )
        for a, b in zip(padded, alone, strict=True):
            torch.testing.assert_close(a[w], b[0])


def test_all_padding_worker_gives_only_l2_term(setup) -> None:
    problem, params, X, y, _ = setup
    weight = torch.zeros(W, B, dtype=F64)
    torch.testing.assert_close(
        problem.loss(params, X, y, weight), 0.5 * problem.l2 * (params**2).sum(1)
    )
    torch.testing.assert_close(problem.grad(params, X, y, weight), problem.l2 * params)


def test_hessian_matches_autograd_and_finite_differences(setup) -> None:
    problem, params, X, y, weight = setup
    H = problem.hessian(params, X, y, weight)
    for w in range(W):
        expected = torch.autograd.functional.hessian(
            lambda x, w=w: ref_loss(x, X[w], y[w], weight[w], problem.l2, problem.fit_intercept),
            params[w],
        )
        torch.testing.assert_close(H[w], expected)
    eps = 1e-6
    for j in range(problem.dim):
        e = torch.zeros(problem.dim, dtype=F64)
        e[j] = eps
        column = (
            problem.grad(params + e, X, y, weight) - problem.grad(params - e, X, y, weight)
        ) / (2 * eps)
        torch.testing.assert_close(H[:, :, j], column, rtol=1e-6, atol=1e-8)


def test_hvp_equals_hessian_times_v(setup) -> None:
    problem, params, X, y, weight = setup
    v = torch.randn(params.shape, generator=torch.Generator().manual_seed(2), dtype=F64)
    H = problem.hessian(params, X, y, weight)
    torch.testing.assert_close(
        problem.hvp(params, X, y, weight, v), torch.einsum("wij,wj->wi", H, v)
    )


def test_metric_is_accuracy() -> None:
    problem = LogisticRegression(2, fit_intercept=True, dtype=F64)
    X = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 2.0], [0.0, -2.0]], dtype=F64)
    y = torch.tensor([1, 0, 0, 0])
    x = torch.tensor([1.0, 0.0, -0.5], dtype=F64)  # predicts 1 only for the first row
    assert problem.metric(x, X, y) == 1.0
    assert problem.metric(-x, X, y) == 0.0


def test_float32_runs_in_float32() -> None:
    problem = LogisticRegression(F, l2=0.1)
    X, y, weight = make_data()
    params = torch.zeros(W, F)
    assert problem.grad(params, X.float(), y, weight.float()).dtype == torch.float32


def test_newton_optimum_is_stationary_and_minimal() -> None:
    problem = LogisticRegression(F, l2=0.05, fit_intercept=True, dtype=torch.float32)
    g = torch.Generator().manual_seed(3)
    X = torch.randn(200, F, generator=g)
    y = (X[:, 0] + 0.5 * torch.randn(200, generator=g) > 0).long()
    x_star, f_star = newton_optimum(problem, X, y)
    assert x_star.dtype == F64
    args = (X.double()[None], y[None], torch.ones(1, 200, dtype=F64))
    assert problem.grad(x_star[None], *args).norm() < 1e-9
    assert abs(problem.loss(x_star[None], *args).item() - f_star) < 1e-15
    others = x_star + 0.1 * torch.randn(50, problem.dim, generator=g, dtype=F64)
    assert (problem.loss(others, *(a.expand(50, *a.shape[1:]) for a in args)) >= f_star).all()


def test_newton_optimum_needs_l2() -> None:
    with pytest.raises(ValueError, match="l2"):
        newton_optimum(LogisticRegression(F), torch.zeros(3, F), torch.zeros(3, dtype=torch.long))


@settings(max_examples=40, deadline=None)
@given(scale=st.floats(1e-3, 1e6), sign=st.sampled_from([-1.0, 1.0]), label=st.integers(0, 1))
def test_extreme_margins_stay_finite(scale: float, sign: float, label: int) -> None:
    problem = LogisticRegression(2, l2=0.0, dtype=torch.float32)
    X = torch.tensor([[[1.0, -1.0]]])
    y = torch.tensor([[label]])
    weight = torch.ones(1, 1)
    params = torch.tensor([[sign * scale, -sign * scale]])  # margin ±2·scale
    loss = problem.loss(params, X, y, weight)
    assert torch.isfinite(loss).all() and (loss >= 0).all()
    assert torch.isfinite(problem.grad(params, X, y, weight)).all()
    assert torch.isfinite(problem.hessian(params, X, y, weight)).all()
    margin = (2 * label - 1) * 2 * sign * scale
    expected = torch.nn.functional.softplus(torch.tensor(-margin, dtype=F64))
    torch.testing.assert_close(loss.double()[0], expected, rtol=1e-5, atol=1e-7)


@settings(max_examples=25, deadline=None)
@given(a=st.floats(-10, 10), b=st.floats(-10, 10), seed=st.integers(0, 2**16))
def test_hvp_is_linear_in_v(a: float, b: float, seed: int) -> None:
    problem = LogisticRegression(F, l2=0.2, fit_intercept=True, dtype=F64)
    X, y, weight = make_data(seed)
    g = torch.Generator().manual_seed(seed)
    params, u, v = (torch.randn(W, problem.dim, generator=g, dtype=F64) for _ in range(3))
    hvp = problem.hvp
    torch.testing.assert_close(
        hvp(params, X, y, weight, a * u + b * v),
        a * hvp(params, X, y, weight, u) + b * hvp(params, X, y, weight, v),
    )
