"""Each baseline against its NumPy reference in float64, and the degenerate equivalences."""

import numpy as np
import pytest

from lowcomm.algorithms.gd import GD, GDConfig
from lowcomm.algorithms.local_sgd import LocalSGD, LocalSGDConfig
from lowcomm.algorithms.sgd import SGD, SGDConfig
from tests import reference
from tests.conftest import Setup


def numpy_shards(setup: Setup) -> list[tuple[np.ndarray, np.ndarray]]:
    train = setup.data.train
    return [(train.X[p], train.y[p]) for p in setup.parts]


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_sgd_matches_numpy_reference(setup: Setup, momentum: float) -> None:
    result = setup.run(SGD(SGDConfig(lr=0.3, batch_size=7, momentum=momentum)), rounds=12, seed=3)
    expected = reference.sgd(numpy_shards(setup), 1e-2, 3, 12, 0.3, 7, momentum)
    np.testing.assert_allclose(result.model.numpy(), expected, rtol=1e-12, atol=1e-14)


def test_local_sgd_matches_numpy_reference(setup: Setup) -> None:
    config = LocalSGDConfig(lr=0.2, batch_size=5, local_steps=3)
    result = setup.run(LocalSGD(config), rounds=6, seed=1)
    expected = reference.local_sgd(numpy_shards(setup), 1e-2, 1, 6, 0.2, 5, 3)
    np.testing.assert_allclose(result.model.numpy(), expected, rtol=1e-12, atol=1e-14)


def test_gd_with_line_search_matches_numpy_reference(setup: Setup) -> None:
    result = setup.run(GD(GDConfig()), rounds=16)
    expected = reference.gd(numpy_shards(setup), 1e-2, iterations=8)
    np.testing.assert_allclose(result.model.numpy(), expected, rtol=1e-10, atol=1e-12)
    losses = result.history["train_loss"].to_numpy()
    assert (np.diff(losses[::2]) < 0).all(), "every gd iteration must decrease the loss"


def test_local_sgd_with_one_step_is_minibatch_sgd(setup: Setup) -> None:
    local = setup.run(LocalSGD(LocalSGDConfig(lr=0.4, batch_size=9, local_steps=1)), rounds=10)
    sgd = setup.run(SGD(SGDConfig(lr=0.4, batch_size=9)), rounds=10)
    np.testing.assert_allclose(local.model.numpy(), sgd.model.numpy(), rtol=1e-12)
    assert local.ledger.snapshot() == sgd.ledger.snapshot()
