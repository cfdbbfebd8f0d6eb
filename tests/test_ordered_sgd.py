"""SGD over example orders: permutations, CD-GraB's server, sign bits, bytes, epochs."""

import numpy as np
import pytest
import torch

from lowcomm.algorithms.registry import build_algorithm
from lowcomm.experiments.config import make_config
from lowcomm.experiments.runner import prepare
from lowcomm.ordering.balance import coordinated_pair_balance, mean_balance
from lowcomm.ordering.orders import (
    MeanBalanceState,
    balance_mean,
    balance_pairs,
    fresh_pair_balancer,
    no_pending,
    pair_up,
)
from tests.conftest import Setup


def epochs_of_orders(setup: Setup, order: str, epochs: int, batch: int = 1) -> list[torch.Tensor]:
    algorithm = build_algorithm("sgd", {"order": order, "batch_size": batch, "lr": 0.2})
    per_epoch = algorithm.rounds_per_epoch(setup.shards.sizes)
    seen = []
    sim = setup.simulation(algorithm, per_epoch)
    state = sim.start()
    for epoch in range(1, epochs + 1):
        sim = setup.simulation(algorithm, per_epoch * epoch + 1)
        sim.run(state)
        seen.append(state.workers.visiting.clone())
    return seen


@pytest.mark.parametrize(
    "order", ["d-rr", "so", "id-grab", "id-grab-mean", "cd-grab", "cd-grab-signs"]
)
def test_every_order_is_a_permutation_of_the_workers_own_examples(setup: Setup, order: str) -> None:
    orders = epochs_of_orders(setup, order, 3)
    sizes = setup.shards.sizes
    n = orders[0].shape[1]
    for visiting in orders:
        for w, row in enumerate(visiting.tolist()):
            assert len(set(row)) == n and max(row) < int(sizes[w])
    if order == "so":
        assert all(torch.equal(orders[0], o) for o in orders)
    else:
        assert not torch.equal(orders[1], orders[2])
    if order.startswith(("id-grab", "cd-grab")):
        assert all(
            sorted(a.tolist()) == sorted(b.tolist())
            for a, b in zip(orders[1], orders[2], strict=True)
        )


def test_same_seed_same_orders(setup: Setup) -> None:
    a, b = epochs_of_orders(setup, "cd-grab", 2), epochs_of_orders(setup, "cd-grab", 2)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def test_cd_grab_with_one_worker_is_centralised_pair_balance() -> None:
    setup = Setup(workers=1, n=200)
    runs = {
        order: setup.run(build_algorithm("sgd", {"order": order, "batch_size": 1, "lr": 0.2}), 400)
        for order in ("cd-grab", "id-grab")
    }
    assert torch.equal(runs["cd-grab"].model, runs["id-grab"].model)


@pytest.mark.parametrize("batch", [1, 2, 3])
def test_online_server_over_steps_equals_the_whole_epoch_offline(batch: int) -> None:
    rng = np.random.default_rng(batch)
    m, n, d = 3, 12, 4
    grads = rng.normal(size=(m, n, d))
    order = np.stack([rng.permutation(n) for _ in range(m)])
    expected, _, _ = coordinated_pair_balance(order, grads)
    server = fresh_pair_balancer(m, 1, n, d, torch.float64)
    pending = no_pending(m, d, torch.float64)
    for start in range(0, n, batch):
        ids = torch.from_numpy(order[:, start : start + batch])
        step = torch.from_numpy(grads[:, start : start + batch])
        pair_ids, deltas, pending = pair_up(pending, ids, step)
        server, _ = balance_pairs(server, pair_ids, deltas, coordinated=True)
    assert server.next_order.tolist() == expected.tolist()
    stale = rng.normal(size=(m, d))
    mean = MeanBalanceState(
        torch.zeros(m, d, dtype=torch.float64),
        torch.from_numpy(stale),
        torch.zeros(m, d, dtype=torch.float64),
        torch.zeros(m, n, dtype=torch.int64),
        torch.zeros(m, dtype=torch.int64),
        torch.full((m,), n - 1),
    )
    for start in range(0, n, batch):
        ids = torch.from_numpy(order[:, start : start + batch])
        mean = balance_mean(mean, ids, torch.from_numpy(grads[:, start : start + batch]))
    assert mean.next_order.tolist() == mean_balance(order, grads, stale).tolist()


def test_sign_bits_give_the_same_run_as_per_example_gradients_and_cost_less(setup: Setup) -> None:
    config = {"batch_size": 2, "lr": 0.2, "momentum": 0.5}
    full = setup.run(build_algorithm("sgd", {**config, "order": "cd-grab"}), 100)
    signs = setup.run(build_algorithm("sgd", {**config, "order": "cd-grab-signs"}), 100)
    torch.testing.assert_close(full.model, signs.model, rtol=1e-12, atol=1e-14)
    projected = setup.run(
        build_algorithm("sgd", {**config, "order": "cd-grab-signs", "projection": 2}), 100
    )
    assert not torch.equal(projected.model, full.model)
    d, workers = setup.problem.dim, 4
    n = 50 // 4 * 4  # the smallest shard (50) cut to a multiple of 2b
    steps = n // 2
    # per step: cd-grab sends 2 per-example gradients; the sign variant a mean and one delta
    assert full.ledger.total("bytes_up") == 100 * workers * 2 * d * 8
    assert signs.ledger.total("bytes_up") == 100 * workers * 2 * d * 8
    assert projected.ledger.total("bytes_up") == 100 * workers * (d + 2) * 8
    epochs_ended = 100 // steps
    model_down = 100 * workers * d * 8 + workers * 8
    assert full.ledger.total("bytes_down") == model_down + epochs_ended * workers * 4 * n
    bits = (n // 2 + 7) // 8  # n/2 sign bits, packed
    assert signs.ledger.total("bytes_down") == model_down + epochs_ended * workers * bits


def test_herding_bound_is_logged_per_epoch_and_lowest_for_cd_grab() -> None:
    setup = Setup(workers=4, n=1024, d=8, l2=1e-3)
    bounds = {}
    for order in ("d-rr", "id-grab", "cd-grab"):
        algorithm = build_algorithm("sgd", {"order": order, "batch_size": 1, "lr": 0.05})
        per_epoch = algorithm.rounds_per_epoch(setup.shards.sizes)
        history = setup.run(algorithm, 8 * per_epoch, eval_every=per_epoch).history
        assert np.isnan(history["herding_bound"].iloc[0])
        bounds[order] = history["herding_bound"].iloc[-3:].mean()
    assert bounds["cd-grab"] < bounds["id-grab"] < bounds["d-rr"]


def test_epochs_size_a_run_and_are_refused_without_an_order() -> None:
    prepared = prepare(
        make_config(
            {
                "data": "breast-cancer",
                "workers": 4,
                "epochs": 3,
                "order": "d-rr",
                "options": {"batch_size": 4},
            }
        )
    )
    n = min(p.size for p in prepared.parts) // 8 * 8
    assert prepared.rounds == 3 * n // 4
    with pytest.raises(Exception, match="The 'epochs' parameter of the run config must be used"):
        prepare(make_config({"data": "breast-cancer", "workers": 4, "epochs": 3}))
