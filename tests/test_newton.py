"""Second-order algorithms: CG, LocalNewton (fixed and adaptive L), GIANT, round latency."""

import math

import numpy as np
import pytest
import torch

from lowcomm.algorithms.base import Context
from lowcomm.algorithms.giant import GIANT, GIANTConfig
from lowcomm.algorithms.local_newton import (
    FLOAT32_UNIT_ROUNDOFF,
    LocalNewton,
    LocalNewtonConfig,
    LocalNewtonState,
)
from lowcomm.algorithms.newton import conjugate_gradient
from lowcomm.core.clock import ClockModel
from lowcomm.core.errors import InvalidConfigError
from lowcomm.core.messages import Bundle, Dense, Scalars, Upload
from lowcomm.core.rng import Streams
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


def judged(config: LocalNewtonConfig, losses: list[float]) -> list[int]:
    """L after the aggregator judges each reported loss in turn (2 equal workers, d = 2)."""
    algorithm = LocalNewton(config)
    params = torch.zeros(2, dtype=torch.float64)
    inf = torch.tensor(math.inf, dtype=torch.float64)
    sizes = torch.tensor([5, 5])
    state = LocalNewtonState(params, torch.tensor(config.local_steps), inf, params, sizes)
    ctx = Context(1, torch.arange(2), 2, Streams(0))
    steps = []
    for loss in losses:
        reported = Scalars(torch.full((2, 1), loss, dtype=torch.float64))
        up = Upload.all(Bundle((Dense(torch.zeros(2, 2, dtype=torch.float64)), reported)))
        state, _ = algorithm.aggregate(state, up, ctx)
        steps.append(int(state.local_steps))
    return steps


def test_relative_tolerance_lowers_l_once_the_relative_gain_falls_under_it() -> None:
    # rtol = 1e-3; gains relative to the best loss so far, by hand:
    # 1.0 (first), 0.99 (1e-2: keep), 0.9885 (~1.5e-3: keep), 0.988 (~5.1e-4 < 1e-3: drop),
    # 0.9869 (best 0.988: ~1.1e-3: keep), 0.9865 (~4.1e-4: drop)
    losses = [1.0, 0.99, 0.9885, 0.988, 0.9869, 0.9865]
    config = LocalNewtonConfig(local_steps=4, adaptive=True, relative_tolerance=1e-3)
    assert judged(config, losses) == [4, 4, 4, 3, 3, 2]
    # the old rule (no tolerance at all) lowers L only when the loss does not go down
    old = LocalNewtonConfig(local_steps=4, adaptive=True, relative_tolerance=0.0)
    assert judged(old, losses) == [4] * 6
    assert judged(old, [1.0, 0.5, 0.5, 0.6]) == [4, 4, 4, 3]  # equal counts as improved
    # the absolute tolerance keeps its meaning and adds to the relative one
    both = LocalNewtonConfig(4, adaptive=True, tolerance=0.005, relative_tolerance=1e-3)
    absolute = LocalNewtonConfig(4, adaptive=True, tolerance=0.005, relative_tolerance=0.0)
    # gains 0.0055 (then 0.0065 from the best, 1.0, or 0.001 from 0.9945): both need 0.006
    assert judged(both, [1.0, 0.9945, 0.9935]) == [4, 3, 3]
    assert judged(absolute, [1.0, 0.9945, 0.9935]) == [4, 4, 3]


def test_default_relative_tolerance_is_float32_unit_roundoff() -> None:
    config = LocalNewtonConfig()
    assert config.relative_tolerance == FLOAT32_UNIT_ROUNDOFF == torch.finfo(torch.float32).eps
    assert config.tolerance == 0.0
    assert config.improved(1.0 - 2e-7, 1.0) and not config.improved(1.0 - 1e-7, 1.0)
    assert config.improved(5.0, math.inf)
