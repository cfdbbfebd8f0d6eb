"""The aggregator's step against torch.optim.SGD, and step-size schedules by hand."""

from __future__ import annotations

import math

import pytest
import torch

from lowcomm.algorithms.learning_rate import Schedule, step_size
from lowcomm.algorithms.registry import build_algorithm
from lowcomm.algorithms.server_step import ServerStep
from lowcomm.core.errors import InvalidConfigError
from tests.conftest import Setup


@pytest.mark.parametrize(("momentum", "nesterov"), [(0.0, False), (0.9, False), (0.9, True)])
def test_server_step_is_torch_sgd(momentum: float, nesterov: bool) -> None:
    """The same gradients through ServerStep and through torch.optim.SGD give the same iterates."""
    g = torch.Generator().manual_seed(0)
    start = torch.randn(7, generator=g, dtype=torch.float64)
    grads = [torch.randn(7, generator=g, dtype=torch.float64) for _ in range(5)]
    reference = start.clone().requires_grad_(True)
    optimiser = torch.optim.SGD([reference], lr=0.1, momentum=momentum, nesterov=nesterov)
    step = ServerStep(0.1, momentum, nesterov)
    params, velocity = start.clone(), torch.zeros_like(start)
    for k, grad in enumerate(grads):
        reference.grad = grad.clone()
        optimiser.step()
        params, velocity = step.apply(params, velocity, grad, k)
        torch.testing.assert_close(params, reference.detach(), rtol=0, atol=1e-15)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("const:0.3", [0.3, 0.3, 0.3, 0.3]),
        ("inv:1,2", [1.0, 1 / 1.5, 0.5, 0.4]),
        ("step:0.8,0.5,2", [0.8, 0.8, 0.4, 0.4]),
        ("cosine:1,2", [1.0, 0.5, 0.0, 0.0]),
    ],
)
def test_schedules_by_hand(text: str, expected: list[float]) -> None:
    for k, value in enumerate(expected):
        assert Schedule(text)(k) == pytest.approx(value, abs=1e-15)
    assert step_size(0.25, 99) == 0.25


@pytest.mark.parametrize("text", ["inv:1", "cosine:1,0", "warm:1", "const:nan", "const:-1"])
def test_malformed_schedules_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        Schedule(text)
    with pytest.raises(InvalidConfigError, match="'lr' parameter of sgd"):
        build_algorithm("sgd", {"lr": text})


def test_a_constant_schedule_is_the_number_and_a_decaying_one_slows_the_steps(
    setup: Setup,
) -> None:
    plain = setup.run(build_algorithm("sgd", {"lr": 0.5, "batch_size": 8}), 6)
    const = setup.run(build_algorithm("sgd", {"lr": "const:0.5", "batch_size": 8}), 6)
    assert torch.equal(plain.model, const.model)
    step = setup.run(build_algorithm("sgd", {"lr": "step:0.5,0.0001,3", "batch_size": 8}), 6)
    early = setup.run(build_algorithm("sgd", {"lr": 0.5, "batch_size": 8}), 3)
    # after round 3 the step is 5e-5: the model barely moves from where 3 full steps left it
    assert (step.model - early.model).abs().max() < 1e-3 * (early.model.abs().max() + 1)
    assert not math.isclose(float((plain.model - early.model).abs().max()), 0.0)
