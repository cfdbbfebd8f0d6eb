"""async-msgd: delay models, the delayed recursion against NumPy, tau = 0 is momentum SGD."""

import numpy as np
import pytest
import torch

from lowcomm.algorithms.async_msgd import AsyncMSGD, AsyncMSGDConfig, DelayModel
from lowcomm.algorithms.sgd import SGD, SGDConfig
from lowcomm.core.clock import ClockModel
from lowcomm.core.errors import InvalidConfigError
from lowcomm.core.rng import Streams
from lowcomm.data.dataset import Shards
from lowcomm.data.synthetic_pca import pca_data
from lowcomm.engines.evaluation import Evaluator
from lowcomm.engines.session import RunOptions
from lowcomm.engines.simulate import Simulation
from lowcomm.problems.pca import StreamingPCA
from tests import reference
from tests.conftest import Setup


def pca_run(config: AsyncMSGDConfig, rounds: int, workers: int = 2, seed: int = 0):
    data = pca_data(400, 6, seed=1)
    parts = np.array_split(np.arange(400), workers)
    problem = StreamingPCA(6, dtype=torch.float64)
    sim = Simulation(
        AsyncMSGD(config),
        problem,
        Shards.build(data.train, parts, torch.float64),
        Evaluator.build(problem, data),
        Streams(seed),
        ClockModel(),
        RunOptions(rounds=rounds),
    )
    return sim.run(), data, parts


@pytest.mark.parametrize("delay", ["const:3", "uniform:4", "geometric:0.5"])
def test_delayed_recursion_matches_numpy_reference(delay: str) -> None:
    config = AsyncMSGDConfig(lr=0.05, momentum=0.7, batch_size=3, delay=delay)
    result, data, parts = pca_run(config, 30)
    model = DelayModel(delay)
    taus = [model.draw(Streams(0), torch.arange(2), k).tolist() for k in range(30)]
    v0 = StreamingPCA(6, dtype=torch.float64).init_params(Streams(0).generator("init")).numpy()
    X = [data.train.X[p] for p in parts]
    expected = reference.delayed_msgd(X, v0, 30, 0.05, 0.7, 3, 0, taus)
    np.testing.assert_allclose(result.model.numpy(), expected, rtol=1e-11, atol=1e-13)
    assert result.history["staleness"].iloc[-1] == pytest.approx(np.mean(taus[-1]))


def test_tau_zero_is_synchronous_momentum_sgd(setup: Setup) -> None:
    config = AsyncMSGDConfig(lr=0.1, momentum=0.8, batch_size=5, delay="const:0")
    msgd = setup.run(AsyncMSGD(config), 25)
    sgd = setup.run(SGD(SGDConfig(lr=0.1, momentum=0.8, batch_size=5)), 25)
    torch.testing.assert_close(msgd.model, sgd.model, rtol=1e-12, atol=1e-14)
    engine = setup.run(AsyncMSGD(AsyncMSGDConfig(lr=0.1, momentum=0.8, batch_size=5)), 25)
    torch.testing.assert_close(engine.model, sgd.model, rtol=1e-12, atol=1e-14)
    assert (engine.history["staleness"] == 0).all()


@pytest.mark.parametrize(
    ("delay", "expected"),
    [
        ("const:5", {5: 1.0}),
        ("uniform:3", {j: 0.25 for j in range(4)}),
        ("geometric:0.4", {j: 0.4 * 0.6**j for j in range(6)}),
    ],
)
def test_each_delay_model_draws_the_distribution_it_states(delay: str, expected: dict) -> None:
    model = DelayModel(delay)
    draws = torch.cat([model.draw(Streams(3), torch.arange(50), k) for k in range(400)])
    for value, probability in expected.items():
        assert float((draws == value).double().mean()) == pytest.approx(probability, abs=0.01)
    assert int(draws.max()) <= model.longest


def test_momentum_speeds_up_pca_and_normalize_keeps_unit_norm() -> None:
    slow, _, _ = pca_run(AsyncMSGDConfig(lr=0.02, momentum=0.0, delay="const:0"), 300, 1)
    fast, _, _ = pca_run(AsyncMSGDConfig(lr=0.02, momentum=0.8, delay="const:0"), 300, 1)
    assert fast.history["test_metric"].iloc[-1] < slow.history["test_metric"].iloc[-1] < 0.9
    unit, _, _ = pca_run(AsyncMSGDConfig(lr=0.02, momentum=0.5, normalize=True), 50, 1)
    assert float(unit.model.norm()) == pytest.approx(1.0)


@pytest.mark.parametrize("delay", ["const:-1", "uniform:1.5", "geometric:0", "poisson:2"])
def test_bad_delay_models_are_refused(delay: str) -> None:
    with pytest.raises(
        InvalidConfigError, match="The 'delay' parameter of async-msgd must be engine"
    ):
        AsyncMSGDConfig(delay=delay)
