"""TorchModel against plain autograd on the nn.Module and against LogisticRegression."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn.utils import parameters_to_vector, vector_to_parameters

from lowcomm.problems.logistic import LogisticRegression
from lowcomm.problems.torch_model import TorchModel, cross_entropy, lenet, mlp

W, B, NF, C = 3, 6, 4, 3
F64 = torch.float64


def make_data(
    seed: int = 0, feature_shape: tuple[int, ...] = (NF,), n_classes: int = C
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Three workers with 6, 4 and 2 real examples; padding rows hold garbage."""
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(W, B, *feature_shape, generator=g, dtype=F64)
    y = torch.randint(0, n_classes, (W, B), generator=g)
    weight = torch.zeros(W, B, dtype=F64)
    for w, n in enumerate((6, 4, 2)):
        weight[w, :n] = 1.0
        X[w, n:] = 30.0
    return X, y, weight


def mlp_loss(
    x: torch.Tensor, X: torch.Tensor, y: torch.Tensor, weight: torch.Tensor, l2: float
) -> torch.Tensor:
    """One worker's objective for ``mlp(NF, (5,), C)``, with the forward pass written by hand."""
    W1, b1, W2, b2 = x.split((5 * NF, 5, 5 * C, C))
    hidden = torch.relu(X @ W1.view(5, NF).T + b1)
    logits = hidden @ W2.view(C, 5).T + b2
    losses = torch.logsumexp(logits, 1) - logits.gather(1, y[:, None])[:, 0]
    return (weight * losses).sum() / weight.sum() + 0.5 * l2 * (x @ x)


def module_grad(module: nn.Module, x: torch.Tensor, *data: torch.Tensor, l2: float) -> torch.Tensor:
    """Plain ``loss.backward()`` through the module's own parameters."""
    net = copy.deepcopy(module).double()
    vector_to_parameters(x, net.parameters())
    X, y, weight = data
    losses = F.cross_entropy(net(X), y, reduction="none")
    loss = (weight * losses).sum() / weight.sum() + 0.5 * l2 * parameters_to_vector(
        net.parameters()
    ).square().sum()
    loss.backward()
    return parameters_to_vector(p.grad for p in net.parameters())


@pytest.fixture
def setup():
    torch.manual_seed(0)
    module = mlp(NF, (5,), C)
    problem = TorchModel(module, l2=0.1, dtype=F64)
    params = torch.stack([problem.init_params(torch.Generator().manual_seed(s)) for s in range(W)])
    X, y, weight = make_data()
    return module, problem, params, X, y, weight


def test_segments_follow_named_parameters(setup) -> None:
    module, problem, params, *_ = setup
    assert problem.segments == tuple(p.numel() for p in module.parameters())
    assert problem.dim == sum(problem.segments) == params.shape[1]
    parts = problem.unflatten(params[0])
    assert list(parts) == [n for n, _ in module.named_parameters()]
    torch.testing.assert_close(parameters_to_vector(parts.values()), params[0])


def test_loss_and_grad_match_module_autograd(setup) -> None:
    module, problem, params, X, y, weight = setup
    loss = problem.loss(params, X, y, weight)
    grad = problem.grad(params, X, y, weight)
    for w in range(W):
        data = (X[w], y[w], weight[w])
        torch.testing.assert_close(loss[w], mlp_loss(params[w], *data, l2=problem.l2))
        torch.testing.assert_close(grad[w], module_grad(module, params[w], *data, l2=problem.l2))


def test_per_example_grads_match_single_example_loop(setup) -> None:
    module, problem, params, X, y, _ = setup
    got = problem.per_example_grads(params, X[:, :3], y[:, :3])
    one = torch.ones(1, dtype=F64)
    for w in range(W):
        for i in range(3):
            data = (X[w, i : i + 1], y[w, i : i + 1], one)
            torch.testing.assert_close(
                got[w, i], module_grad(module, params[w], *data, l2=problem.l2)
            )


def test_hvp_matches_double_backward_and_hessian(setup) -> None:
    _, problem, params, X, y, weight = setup
    v = torch.randn(params.shape, generator=torch.Generator().manual_seed(5), dtype=F64)
    hvp = problem.hvp(params, X, y, weight, v)
    H = problem.hessian(params, X, y, weight)
    for w in range(W):
        x = params[w].clone().requires_grad_()
        g = torch.autograd.grad(
            mlp_loss(x, X[w], y[w], weight[w], problem.l2), x, create_graph=True
        )[0]
        expected = torch.autograd.grad(g @ v[w], x)[0]
        torch.testing.assert_close(hvp[w], expected)
        expected_H = torch.autograd.functional.hessian(
            lambda z, w=w: mlp_loss(z, X[w], y[w], weight[w], problem.l2), params[w]
        )
        torch.testing.assert_close(H[w], expected_H)
    torch.testing.assert_close(hvp, torch.einsum("wij,wj->wi", H, v))


def test_padding_rows_are_ignored(setup) -> None:
    _, problem, params, X, y, weight = setup
    v = torch.randn(params.shape, dtype=F64)
    methods = (
        lambda *a: problem.loss(*a[:4]),
        lambda *a: problem.grad(*a[:4]),
        problem.hvp,
    )
    for method in methods:
        padded = method(params, X, y, weight, v)
        for w in range(W):
            n = int(weight[w].sum())
            rows = slice(w, w + 1)
            alone = method(params[rows], X[rows, :n], y[rows, :n], weight[rows, :n], v[rows])
            torch.testing.assert_close(padded[w], alone[0])


def bce(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logits[:, 0], y.to(logits.dtype), reduction="none")


def test_linear_with_bce_matches_logistic_regression() -> None:
    """Two independent implementations of the same objective agree on every method."""
    X, y, weight = make_data()
    y = y % 2
    logistic = LogisticRegression(NF, l2=0.3, fit_intercept=True, dtype=F64)
    model = TorchModel(nn.Linear(NF, 1), loss=bce, l2=0.3, dtype=F64)
    assert model.dim == logistic.dim and model.segments == (NF, 1)
    params = torch.randn(W, NF + 1, generator=torch.Generator().manual_seed(6), dtype=F64)
    v = torch.randn(W, NF + 1, generator=torch.Generator().manual_seed(7), dtype=F64)
    for name in ("loss", "grad", "hessian"):
        torch.testing.assert_close(
            getattr(model, name)(params, X, y, weight),
            getattr(logistic, name)(params, X, y, weight),
        )
    torch.testing.assert_close(
        model.hvp(params, X, y, weight, v), logistic.hvp(params, X, y, weight, v)
    )
    torch.testing.assert_close(
        model.per_example_grads(params, X, y), logistic.per_example_grads(params, X, y)
    )


def test_init_params_is_deterministic_and_uses_no_global_rng() -> None:
    problem = TorchModel(mlp(NF, (7, 5), C))
    state = torch.get_rng_state()
    a = problem.init_params(torch.Generator().manual_seed(11))
    b = problem.init_params(torch.Generator().manual_seed(11))
    c = problem.init_params(torch.Generator().manual_seed(12))
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.dtype == torch.float32 and a.shape == (problem.dim,)
    ratios = []
    for name, part in zip(problem.names, a.split(problem.segments), strict=True):
        layer = problem.module.get_submodule(name.rsplit(".", 1)[0])
        ratios.append(part * layer.weight.shape[1] ** 0.5)  # draw / (1/sqrt(fan_in))
    r = torch.cat(ratios)
    assert r.abs().max() <= 1.0 and r.max() > 0.9 and r.min() < -0.9


def test_init_params_keeps_parameters_of_other_layers() -> None:
    problem = TorchModel(nn.Sequential(nn.Linear(3, 3), nn.LayerNorm(3)))
    x = problem.init_params(torch.Generator().manual_seed(0))
    torch.testing.assert_close(x[12:], torch.tensor([1.0, 1.0, 1.0, 0.0, 0.0, 0.0]))


def batch_norm_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(NF, 5), nn.BatchNorm1d(5), nn.ReLU(), nn.Linear(5, C)).double()


def batch_norm_loss(x: torch.Tensor, X: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy with the hidden layer normalised by the batch's own statistics."""
    W1, b1, gamma, beta, W2, b2 = x.split((5 * NF, 5, 5, 5, 5 * C, C))
    h = X @ W1.view(5, NF).T + b1
    h = (h - h.mean(0)) / torch.sqrt(h.var(0, unbiased=False) + 1e-5) * gamma + beta
    return F.cross_entropy(torch.relu(h) @ W2.view(C, 5).T + b2, y)


def test_batch_norm_normalises_by_each_workers_batch() -> None:
    """Workers with the same parameters but different batches see their own statistics."""
    X, y, _ = make_data(3)
    problem = TorchModel(batch_norm_net(), l2=0.0, dtype=F64)
    params = torch.stack([problem.init_params(torch.Generator().manual_seed(w)) for w in range(W)])
    weight = torch.ones(W, B, dtype=F64)
    expected = torch.stack([batch_norm_loss(params[w], X[w], y[w]) for w in range(W)])
    torch.testing.assert_close(problem.loss(params, X, y, weight), expected)
    x = params.clone().requires_grad_(True)
    manual = torch.autograd.grad(sum(batch_norm_loss(x[w], X[w], y[w]) for w in range(W)), x)[0]
    torch.testing.assert_close(problem.grad(params, X, y, weight), manual)


def test_state_dict_carries_the_training_sets_batch_norm_statistics() -> None:
    net = batch_norm_net()
    problem = TorchModel(net, dtype=F64)
    flat = problem.init_params(torch.Generator().manual_seed(4))
    X = torch.randn(50, NF, generator=torch.Generator().manual_seed(5), dtype=F64)
    state = problem.state_dict(flat, X)
    hidden = X @ flat[: 5 * NF].view(5, NF).T + flat[5 * NF : 5 * NF + 5]
    torch.testing.assert_close(state["1.running_mean"], hidden.mean(0))
    torch.testing.assert_close(state["1.running_var"], hidden.var(0, unbiased=True))
    torch.testing.assert_close(state["0.weight"], flat[: 5 * NF].view(5, NF))
    assert net[1].running_mean.abs().max() == 0, "the user's module is left untouched"


def test_metric_is_argmax_accuracy(setup) -> None:
    module, problem, params, X, y, _ = setup
    net = copy.deepcopy(module).double()
    vector_to_parameters(params[0], net.parameters())
    with torch.no_grad():
        expected = (net(X[0]).argmax(1) == y[0]).double().mean().item()
    assert problem.metric(params[0], X[0], y[0]) == pytest.approx(expected)
    assert cross_entropy(torch.zeros(2, C), torch.tensor([0, 1])).shape == (2,)


@pytest.mark.parametrize("image_size", [8, 28])
def test_lenet_shapes_and_grad(image_size: int) -> None:
    module = lenet(n_classes=10, image_size=image_size)
    problem = TorchModel(module, dtype=F64)
    X, y, weight = make_data(feature_shape=(1, image_size, image_size), n_classes=10)
    X, y, weight = X[:, :2], y[:, :2], weight[:, :2]
    params = torch.stack([problem.init_params(torch.Generator().manual_seed(s)) for s in range(W)])
    grad = problem.grad(params, X, y, weight)
    assert grad.shape == (W, problem.dim)
    assert problem.per_example_grads(params, X, y).shape == (W, 2, problem.dim)
    torch.testing.assert_close(
        grad[1], module_grad(module, params[1], X[1], y[1], weight[1], l2=0.0)
    )


@settings(max_examples=15, deadline=None)
@given(a=st.floats(-5, 5), b=st.floats(-5, 5), seed=st.integers(0, 2**16))
def test_hvp_is_linear_in_v(a: float, b: float, seed: int) -> None:
    torch.manual_seed(0)
    problem = TorchModel(
        nn.Sequential(nn.Linear(NF, 4), nn.Tanh(), nn.Linear(4, C)), l2=0.1, dtype=F64
    )
    X, y, weight = make_data(seed)
    g = torch.Generator().manual_seed(seed)
    params, u, v = (torch.randn(W, problem.dim, generator=g, dtype=F64) for _ in range(3))
    hvp = problem.hvp
    torch.testing.assert_close(
        hvp(params, X, y, weight, a * u + b * v),
        a * hvp(params, X, y, weight, u) + b * hvp(params, X, y, weight, v),
    )
