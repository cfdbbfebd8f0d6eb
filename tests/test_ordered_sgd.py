"""SGD over example orders: permutations, CD-GraB's server, sign bits, bytes, epochs, units."""

import numpy as np
import pytest
import torch

from lowcomm.algorithms.registry import build_algorithm
from lowcomm.core.errors import InvalidConfigError
from lowcomm.engines.session import RunResult
from lowcomm.experiments.config import make_config
from lowcomm.experiments.runner import prepare
from lowcomm.ordering.balance import coordinated_pair_balance, mean_balance
from lowcomm.ordering.orders import (
    UNITS,
    MeanBalanceState,
    balance_mean,
    balance_pairs,
    fresh_pair_balancer,
    no_pending,
    pair_up,
)
from tests import reference
from tests.conftest import Setup


def epochs_of_workers(
    setup: Setup, order: str, epochs: int, batch: int = 1, unit: str = "example"
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The workers' visiting orders (example ids) and unit orders of epochs 0..``epochs - 1``."""
    settings = {"order": order, "batch_size": batch, "lr": 0.2, "unit": unit}
    algorithm = build_algorithm("sgd", settings)
    per_epoch = algorithm.rounds_per_epoch(setup.shards.sizes)
    seen = []
    state = setup.simulation(algorithm, per_epoch).start()
    for epoch in range(epochs):
        setup.simulation(algorithm, per_epoch * epoch + 1).run(state)
        seen.append((state.workers.visiting.clone(), state.workers.unit_order.clone()))
    return seen


def epochs_of_orders(setup: Setup, order: str, epochs: int, batch: int = 1) -> list[torch.Tensor]:
    """The workers' visiting orders of epochs 1..``epochs``."""
    return [visiting for visiting, _ in epochs_of_workers(setup, order, epochs + 1, batch)[1:]]


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


# ---- minibatch units (spec cd-grab.md 3.3) ----


def run_both_units(setup: Setup, settings: dict, rounds: int) -> tuple[RunResult, RunResult]:
    """The same run with example units, then with minibatch units."""
    example = setup.run(build_algorithm("sgd", settings), rounds)
    minibatch = setup.run(build_algorithm("sgd", {**settings, "unit": "minibatch"}), rounds)
    return example, minibatch


TOTALS = ("bytes_up", "bytes_down", "uploads", "downloads", "grad_evals")


@pytest.mark.parametrize("order", ["so", "id-grab", "id-grab-mean", "cd-grab", "cd-grab-signs"])
def test_minibatch_units_of_one_example_are_example_units(setup: Setup, order: str) -> None:
    settings = {"order": order, "batch_size": 1, "lr": 0.2, "momentum": 0.5}
    example, minibatch = run_both_units(setup, settings, 120)  # 2 epochs (n = 50) and a bit
    assert torch.equal(example.model, minibatch.model)
    if order == "cd-grab-signs":  # same decisions, but no pair differences to upload
        assert minibatch.ledger.total("bytes_up") < example.ledger.total("bytes_up")
        assert minibatch.ledger.total("bytes_down") == example.ledger.total("bytes_down")
        return
    for counter in TOTALS:
        assert minibatch.ledger.total(counter) == example.ledger.total(counter), counter


@pytest.mark.parametrize("batch", [2, 3])
def test_shuffle_once_visits_the_same_examples_in_both_modes(setup: Setup, batch: int) -> None:
    settings = {"order": "so", "batch_size": batch, "lr": 0.2, "momentum": 0.5}
    example, minibatch = run_both_units(setup, settings, 60)
    # the same examples each step; only the rounding of the mean gradient differs (the batched
    # gradient against the mean of per-example gradients)
    torch.testing.assert_close(minibatch.model, example.model, rtol=1e-13, atol=1e-15)
    for counter in TOTALS:
        assert minibatch.ledger.total(counter) == example.ledger.total(counter), counter
    orders = [epochs_of_workers(setup, "so", 2, batch, unit)[-1][0] for unit in UNITS]
    assert torch.equal(orders[0], orders[1])


def test_cd_grab_minibatch_matches_numpy_reference() -> None:
    setup = Setup(workers=3, n=120)  # shards of 26, 40, 54 examples: n = 24, 12 units of 2
    settings = {"order": "cd-grab", "unit": "minibatch", "batch_size": 2, "lr": 0.2}
    algorithm = build_algorithm("sgd", {**settings, "momentum": 0.5})
    per_epoch, epochs = algorithm.rounds_per_epoch(setup.shards.sizes), 3
    assert per_epoch == 12
    state = setup.simulation(algorithm, 1).start()
    models, orders = [], [state.aggregator.unit_order.clone()]
    for round_ in range(1, epochs * per_epoch + 1):
        setup.simulation(algorithm, round_).run(state)
        models.append(state.aggregator.params.clone())
        if round_ % per_epoch == 0:
            orders.append(state.aggregator.unit_order.clone())  # what the server sends
    train = setup.data.train
    shards = [(train.X[p], train.y[p]) for p in setup.parts]
    expected, expected_orders = reference.cd_grab_minibatch(shards, 1e-2, 0, epochs, 0.2, 2, 0.5)
    np.testing.assert_allclose(torch.stack(models).numpy(), expected, rtol=1e-12, atol=1e-14)
    assert [o.tolist() for o in orders] == expected_orders
    assert expected_orders[1] != expected_orders[2] != expected_orders[0]


@pytest.mark.parametrize(
    "order", ["d-rr", "so", "id-grab", "id-grab-mean", "cd-grab", "cd-grab-signs"]
)
def test_minibatch_orders_permute_whole_fixed_groups(setup: Setup, order: str) -> None:
    b, sizes = 3, setup.shards.sizes
    seen = epochs_of_workers(setup, order, 4, b, "minibatch")
    example_first, _ = epochs_of_workers(setup, order, 1, b)[0]
    first, first_units = seen[0]
    w, n = first.shape
    assert n == 48 and torch.equal(first, example_first)  # epoch 0: as with example units
    assert torch.equal(first_units, torch.arange(n // b).repeat(w, 1))
    groups = first.reshape(w, n // b, b)
    for visiting, units in seen:
        for j in range(w):
            row = visiting[j].tolist()
            assert len(set(row)) == n and max(row) < int(sizes[j]), "own examples, each once"
            assert sorted(units[j].tolist()) == list(range(n // b))
        # each group's examples stay together, in their order: the units index the groups
        assert torch.equal(visiting.reshape(w, n // b, b), groups[torch.arange(w)[:, None], units])
    units = [u for _, u in seen]
    if order == "so":
        assert all(torch.equal(units[0], u) for u in units)
    else:
        assert not torch.equal(units[1], units[2]) and not torch.equal(units[2], units[3])


def test_minibatch_cd_grab_sends_a_unit_order_or_sign_bits(setup: Setup) -> None:
    settings = {"batch_size": 2, "lr": 0.2, "momentum": 0.5, "unit": "minibatch"}
    full = setup.run(build_algorithm("sgd", {**settings, "order": "cd-grab"}), 100)
    signs = setup.run(build_algorithm("sgd", {**settings, "order": "cd-grab-signs"}), 100)
    assert torch.equal(full.model, signs.model)
    d, workers = setup.problem.dim, 4
    n = 50 // 4 * 4  # the smallest shard (50) cut to a multiple of 2b
    units = n // 2
    epochs_ended = 100 // units
    model_down = 100 * workers * d * 8 + workers * 8  # and n, once
    for run in (full, signs):
        assert run.ledger.total("bytes_up") == 100 * workers * d * 8  # each step one mean
        assert run.ledger.total("grad_evals") == 100 * workers * 2
    assert full.ledger.total("bytes_down") == model_down + epochs_ended * workers * 4 * units
    bits = (units // 2 + 7) // 8  # one bit per pair of units, packed: 12 bits in 2 bytes
    assert bits == 2
    assert signs.ledger.total("bytes_down") == model_down + epochs_ended * workers * bits


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (
            {"unit": "minibatch"},
            r"The 'unit' parameter of sgd must be 'example' without an order \(minibatch units "
            r"need an order\). Got 'minibatch'.",
        ),
        (
            {"unit": "minibatch", "order": "cd-grab-signs", "projection": 4},
            r"The 'projection' parameter of sgd must be 0 with unit 'minibatch' \(the server "
            r"already holds the minibatch gradients\). Got 4.",
        ),
        (
            {"unit": "batch", "order": "cd-grab"},
            "The 'unit' parameter of sgd must be one of 'example', 'minibatch'. Got 'batch'.",
        ),
    ],
)
def test_unit_settings_are_validated(settings: dict, message: str) -> None:
    with pytest.raises(InvalidConfigError, match=message):
        build_algorithm("sgd", settings)


def test_mean_balance_of_minibatch_units_keeps_the_epochs_mean_gradient(setup: Setup) -> None:
    """The stale mean is the mean of the unit gradients, so the epoch's mean gradient.

    Example units give it too, visiting the same examples at the same models in epoch 0.
    """
    settings = {"order": "id-grab-mean", "batch_size": 3, "lr": 0.2}
    stale = []
    for unit in UNITS:
        algorithm = build_algorithm("sgd", {**settings, "unit": unit})
        sim = setup.simulation(algorithm, algorithm.rounds_per_epoch(setup.shards.sizes) + 1)
        state = sim.start()
        sim.run(state)
        stale.append(state.workers.mean.stale_mean)
    assert stale[0].abs().min() > 1e-3
    torch.testing.assert_close(stale[1], stale[0], rtol=1e-13, atol=1e-15)
