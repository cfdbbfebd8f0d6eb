"""SoftmaxRegression against torch's cross-entropy, autograd and finite differences."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from lowcomm.problems.logistic import LogisticRegression, newton_optimum
from lowcomm.problems.softmax import SoftmaxRegression

W, B, NF, C = 3, 8, 3, 4
F64 = torch.float64


def make_data(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Three workers with 8, 5 and 3 real examples; padding rows hold garbage."""
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(W, B, NF, generator=g, dtype=F64)
    y = torch.randint(0, C, (W, B), generator=g)
    weight = torch.zeros(W, B, dtype=F64)
    for w, n in enumerate((8, 5, 3)):
        weight[w, :n] = 1.0
        X[w, n:] = 40.0
    return X, y, weight


def ref_loss(
    x: torch.Tensor,
    X: torch.Tensor,
    y: torch.Tensor,
    weight: torch.Tensor,
    l2: float,
    intercept: bool,
) -> torch.Tensor:
    """One worker's objective through F.cross_entropy; bias = last column of each row."""
    Wb = x.view(C, -1)
    logits = X @ Wb[:, :NF].T + (Wb[:, NF] if intercept else 0.0)
    losses = F.cross_entropy(logits, y, reduction="none")
    return (weight * losses).sum() / weight.sum() + 0.5 * l2 * (x @ x)


@pytest.fixture(params=[False, True], ids=["no-intercept", "intercept"])
def setup(request: pytest.FixtureRequest):
    problem = SoftmaxRegression(NF, C, l2=0.2, fit_intercept=request.param, dtype=F64)
    X, y, weight = make_data()
    params = torch.randn(W, problem.dim, generator=torch.Generator().manual_seed(1), dtype=F64)
    return problem, params, X, y, weight


def ref(problem: SoftmaxRegression):
    return lambda x, Xw, yw, ww: ref_loss(x, Xw, yw, ww, problem.l2, problem.fit_intercept)


def per_worker(fn, params, X, y, weight):
    return torch.stack([fn(params[w], X[w], y[w], weight[w]) for w in range(W)])


def test_dims() -> None:
    p = SoftmaxRegression(NF, C, fit_intercept=True)
    assert p.dim == C * (NF + 1) and p.segments == (p.dim,)
    assert torch.equal(p.init_params(torch.Generator()), torch.zeros(p.dim))
    with pytest.raises(ValueError, match="n_classes"):
        SoftmaxRegression(NF, 1)


def test_loss_and_grad_match_autograd(setup) -> None:
    problem, params, X, y, weight = setup
    f = ref(problem)
    got_loss = problem.loss(params, X, y, weight)
    torch.testing.assert_close(got_loss, per_worker(f, params, X, y, weight))
    got_grad = problem.grad(params, X, y, weight)
    torch.testing.assert_close(got_grad, per_worker(torch.func.grad(f), params, X, y, weight))


def test_grad_matches_central_differences(setup) -> None:
    problem, params, X, y, weight = setup
    eps = 1e-6
    fd = torch.zeros_like(params)
    for j in range(problem.dim):
        e = torch.zeros(problem.dim, dtype=F64)
        e[j] = eps
        up, down = problem.loss(params + e, X, y, weight), problem.loss(params - e, X, y, weight)
        fd[:, j] = (up - down) / (2 * eps)
    torch.testing.assert_close(problem.grad(params, X, y, weight), fd, rtol=1e-6, atol=1e-8)


def test_per_example_grads_match_single_example_loop(setup) -> None:
    problem, params, X, y, _ = setup
    got = problem.per_example_grads(params, X, y)
    g = torch.func.grad(ref(problem))
    one = torch.ones(1, dtype=F64)
    for w in range(W):
        for i in range(B):
            expected = g(params[w], X[w, i : i + 1], y[w, i : i + 1], one)
            torch.testing.assert_close(got[w, i], expected)


def test_hessian_matches_autograd_and_finite_differences(setup) -> None:
    problem, params, X, y, weight = setup
    H = problem.hessian(params, X, y, weight)
    f = ref(problem)
    for w in range(W):
        expected = torch.autograd.functional.hessian(
            lambda x, w=w: f(x, X[w], y[w], weight[w]), params[w]
        )
        torch.testing.assert_close(H[w], expected)
    eps = 1e-6
    for j in range(problem.dim):
        e = torch.zeros(problem.dim, dtype=F64)
        e[j] = eps
        up, down = problem.grad(params + e, X, y, weight), problem.grad(params - e, X, y, weight)
        torch.testing.assert_close(H[:, :, j], (up - down) / (2 * eps), rtol=1e-6, atol=1e-8)


def test_hvp_equals_hessian_times_v(setup) -> None:
    problem, params, X, y, weight = setup
    v = torch.randn(params.shape, generator=torch.Generator().manual_seed(2), dtype=F64)
    H = problem.hessian(params, X, y, weight)
    expected = torch.einsum("wij,wj->wi", H, v)
    torch.testing.assert_close(problem.hvp(params, X, y, weight, v), expected)


def test_padding_rows_are_ignored(setup) -> None:
    problem, params, X, y, weight = setup
    v = torch.randn(params.shape, dtype=F64)
    methods = (
        lambda *a: problem.loss(*a[:4]),
        lambda *a: problem.grad(*a[:4]),
        lambda *a: problem.hessian(*a[:4]),
        problem.hvp,
    )
    for method in methods:
        padded = method(params, X, y, weight, v)
        for w in range(W):
            n = int(weight[w].sum())
            rows = slice(w, w + 1)
            alone = method(params[rows], X[rows, :n], y[rows, :n], weight[rows, :n], v[rows])
            torch.testing.assert_close(padded[w], alone[0])


def test_two_classes_match_logistic_regression() -> None:
    """Softmax with C=2 and rows (0, x) is logistic regression with weights x."""
    X, y, weight = make_data()
    y = y % 2
    logistic = LogisticRegression(NF, fit_intercept=True, dtype=F64)
    softmax = SoftmaxRegression(NF, 2, fit_intercept=True, dtype=F64)
    x = torch.randn(W, NF + 1, dtype=F64)
    rows = torch.cat([torch.zeros_like(x), x], dim=1)
    torch.testing.assert_close(softmax.loss(rows, X, y, weight), logistic.loss(x, X, y, weight))
    torch.testing.assert_close(
        softmax.grad(rows, X, y, weight)[:, NF + 1 :], logistic.grad(x, X, y, weight)
    )


def test_metric_is_accuracy() -> None:
    problem = SoftmaxRegression(2, 3, dtype=F64)
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]], dtype=F64).flatten()
    X = torch.tensor([[2.0, 0.0], [0.0, 2.0], [-1.0, -1.0], [3.0, 0.0]], dtype=F64)
    assert problem.metric(x, X, torch.tensor([0, 1, 2, 0])) == 1.0
    assert problem.metric(x, X, torch.tensor([0, 1, 2, 1])) == 0.75


def test_newton_optimum_works_for_softmax() -> None:
    problem = SoftmaxRegression(NF, C, l2=0.1, fit_intercept=True, dtype=torch.float32)
    g = torch.Generator().manual_seed(4)
    X = torch.randn(120, NF, generator=g)
    y = torch.randint(0, C, (120,), generator=g)
    x_star, f_star = newton_optimum(problem, X, y)
    args = (X.double()[None], y[None], torch.ones(1, 120, dtype=F64))
    assert problem.grad(x_star[None], *args).norm() < 1e-9
    others = x_star + 0.1 * torch.randn(30, problem.dim, generator=g, dtype=F64)
    assert (problem.loss(others, *(a.expand(30, *a.shape[1:]) for a in args)) >= f_star).all()


@settings(max_examples=25, deadline=None)
@given(scale=st.floats(1e-3, 1e5), seed=st.integers(0, 2**16))
def test_large_logits_stay_finite(scale: float, seed: int) -> None:
    problem = SoftmaxRegression(NF, C, dtype=torch.float32)
    X, y, weight = make_data(seed)
    params = scale * torch.randn(W, problem.dim, generator=torch.Generator().manual_seed(seed))
    X, weight = X.float(), weight.float()
    v = torch.ones_like(params)
    for out in (
        problem.loss(params, X, y, weight),
        problem.grad(params, X, y, weight),
        problem.hvp(params, X, y, weight, v),
    ):
        assert torch.isfinite(out).all()
