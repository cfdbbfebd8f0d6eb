"""Second-order algorithms: CG, LocalNewton (fixed and adaptive L), GIANT, round latency."""

import numpy as np
import pytest
import torch

from lowcomm.algorithms.giant import GIANT, GIANTConfig
from lowcomm.algorithms.local_newton import LocalNewton, LocalNewtonConfig
from lowcomm.algorithms.newton import conjugate_gradient
from lowcomm.core.clock import ClockModel
from lowcomm.core.errors import InvalidConfigError
from tests import reference
from tests.conftest import Setup
from tests.test_algorithms_reference import numpy_shards


def test_conjugate_gradient_solves_spd_systems_row_by_row() -> None:
    g = torch.Generator().manual_seed(3)
    M = torch.randn(3, 8, 8, dtype=torch.float64, generator=g)
    A = M @ M.mT + 0.5 * torch.eye(8, dtype=torch.float64)
    b = torch.randn(3, 8, dtype=torch.float64, generator=g)
    calls = []

    def apply(v: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
        calls.append(active.clone())
        return (A @ v[..., None])[..., 0]

    x, iterations = conjugate_gradient(apply, b, tol=1e-12, max_iter=50)
    torch.testing.assert_close(x, torch.linalg.solve(A, b), rtol=1e-9, atol=1e-10)
    assert (iterations <= 8 + 2).all(), "CG converges in about d steps"
    capped, few = conjugate_gradient(apply, b, tol=1e-12, max_iter=2)
    assert few.tolist() == [2, 2, 2]
    assert not torch.allclose(capped, x)


def test_one_worker_with_one_local_step_is_newton_with_line_search() -> None:
    setup = Setup(workers=1, n=400, d=6, l2=1e-2)
    result = setup.run(LocalNewton(LocalNewtonConfig(local_steps=1)), 5)
    ((A, y),) = numpy_shards(setup)
    x = np.zeros(6)
    for _ in range(5):
        x = reference.local_newton_round([(A, y)], 1e-2, x, 1)
    np.testing.assert_allclose(result.model.numpy(), x, rtol=1e-10, atol=1e-12)
    assert result.history["train_loss"].iloc[-1] < result.history["train_loss"].iloc[1]


@pytest.mark.parametrize("solver", ["exact", "cg"])
def test_local_newton_rounds_match_numpy_reference(setup: Setup, solver: str) -> None:
    config = LocalNewtonConfig(local_steps=2, solver=solver, cg_tol=1e-14)
    result = setup.run(LocalNewton(config), 3)
    x = np.zeros(setup.problem.dim)
    for _ in range(3):
        x = reference.local_newton_round(numpy_shards(setup), 1e-2, x, 2)
    np.testing.assert_allclose(result.model.numpy(), x, rtol=1e-9, atol=1e-11)
    sizes = [len(y) for _, y in numpy_shards(setup)]
    assert result.ledger.totals["grad_evals"].tolist() == [3 * 2 * n for n in sizes]
    assert result.ledger.sync_rounds == 3


def test_giant_iterations_match_numpy_reference(setup: Setup) -> None:
    result = setup.run(GIANT(GIANTConfig(solver="exact")), 6)
    x = np.zeros(setup.problem.dim)
    for _ in range(2):
        x = reference.giant_iteration(numpy_shards(setup), 1e-2, x)
    np.testing.assert_allclose(result.model.numpy(), x, rtol=1e-10, atol=1e-12)


def test_giant_counts_two_sync_rounds_per_iteration_unless_asked_for_three(setup: Setup) -> None:
    clock = ClockModel(round_latency=1.0)
    piggy = setup.run(GIANT(GIANTConfig()), 9, clock=clock)
    third = setup.run(GIANT(GIANTConfig(line_search="third-round")), 9, clock=clock)
    assert piggy.ledger.sync_rounds == 6 and third.ledger.sync_rounds == 9
    assert piggy.ledger.snapshot()["uploads"] == third.ledger.snapshot()["uploads"] == 36
    assert piggy.history["sim_time"].iloc[-1] == pytest.approx(6.0)
    assert third.history["sim_time"].iloc[-1] == pytest.approx(9.0)
    torch.testing.assert_close(piggy.model, third.model, rtol=0, atol=0)


def test_giant_cg_is_capped_and_counted(setup: Setup) -> None:
    result = setup.run(GIANT(GIANTConfig(cg_iters=3)), 3)
    assert result.ledger.totals["hvps"].tolist() == [3] * 4


def test_adaptive_l_never_increases_and_shrinks_when_the_loss_stalls() -> None:
    setup = Setup(workers=4, n=2000, d=10, l2=1e-3)
    config = LocalNewtonConfig(local_steps=8, adaptive=True)
    result = setup.run(LocalNewton(config), 12)
    steps = result.history["local_steps"].to_numpy()
    assert steps[0] == 8 and (np.diff(steps) <= 0).all() and steps[-1] < 8
    halve = setup.run(LocalNewton(LocalNewtonConfig(8, adaptive=True, decrease="halve")), 12)
    assert set(halve.history["local_steps"]) <= {8.0, 4.0, 2.0, 1.0}
    # the loss of the model each worker received travels with its upload: 1 scalar, 8 bytes
    d = setup.problem.dim
    assert result.ledger.total("bytes_up") == 12 * 4 * 8 * (d + 1)


def test_rollback_returns_to_the_best_average(setup: Setup) -> None:
    config = LocalNewtonConfig(local_steps=6, adaptive=True, rollback=True, tolerance=10.0)
    sim = setup.simulation(LocalNewton(config), 2)
    state = sim.start()
    first = state.aggregator.params
    sim.run(state)
    # round 1 judges the initial model (the first, so the best); round 2 judges the first
    # average, which a tolerance of 10 cannot count as an improvement: L drops, model rolls back
    assert int(state.aggregator.local_steps) == 5
    assert torch.equal(state.aggregator.params, first)


def test_then_giant_switches_once_l_is_1_and_goes_on_as_giant_from_the_best_average() -> None:
    setup = Setup(workers=4, n=2000, d=10, l2=1e-3)
    config = LocalNewtonConfig(local_steps=2, adaptive=True, tolerance=1e-6, then_giant=True)
    algorithm = LocalNewton(config)
    sim = setup.simulation(algorithm, 1)
    state = sim.start()
    switched_at = None
    for round_ in range(1, 40):
        before = state.aggregator
        setup.simulation(algorithm, round_).run(state)
        if switched_at is None and state.aggregator.giant is not None:
            switched_at, start = round_, before.best_params.numpy()
            assert int(before.local_steps) == 1  # only once L has come down to 1
        if switched_at is not None and (round_ - switched_at) == 9:
            break
    assert switched_at is not None, "the stall at L = 1 must trigger the switch"
    x = start
    for _ in range(3):  # 3 GIANT iterations = 9 engine rounds after the switch
        x = reference.giant_iteration(numpy_shards(setup), 1e-3, x)
    np.testing.assert_allclose(algorithm.model(state.aggregator).numpy(), x, rtol=1e-8, atol=1e-10)
    steps = [row["local_steps"] for row in state.history]
    assert steps[switched_at] == 0 and steps[switched_at - 1] == 1 and steps[-1] == 0
    plain_config = LocalNewtonConfig(local_steps=2, adaptive=True, tolerance=1e-6)
    plain = setup.run(LocalNewton(plain_config), round_)
    assert state.history[-1]["train_loss"] < plain.history["train_loss"].iloc[-1]


def test_then_giant_needs_adaptive_l() -> None:
    with pytest.raises(InvalidConfigError, match=r"then_giant.*without adaptive"):
        LocalNewtonConfig(then_giant=True)
