"""Unequal shards under example orders: every order trains on the same kept examples.

The 427 training examples of breast cancer over 8 workers make shards of 54 and 53; ``sgd`` with
an order uses n = 52 per worker (the smallest shard cut to a multiple of 2b, b = 1 or 2), so
every run keeps 52 of each shard and removes the other 11 up front, for every order alike.
"""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import lowcomm
from lowcomm.engines.session import RunOptions
from lowcomm.engines.simulate import Simulation
from lowcomm.experiments.config import make_config
from lowcomm.experiments.runner import Prepared, execute, prepare
from lowcomm.ordering.orders import ORDERS, UNITS
from lowcomm.problems.logistic import LogisticRegression, newton_optimum

CASE = {
    "algorithm": "sgd",
    "data": "breast-cancer",
    "model": "logistic",
    "workers": 8,
    "partition": "iid",
    "seed": 3,
    "l2": 0.01,
}
LOADED, KEPT = 427, 8 * 52


def prepared(order: str, batch: int = 1, unit: str = "example", epochs: int = 3) -> Prepared:
    """The breast-cancer case with ``order``, evaluated at the end only."""
    options = {"batch_size": batch, "lr": 0.1, "unit": unit}
    config = {**CASE, "order": order, "options": options, "epochs": epochs, "eval_every": 10**6}
    return prepare(make_config(config))


def visits(ready: Prepared, epochs: int) -> list[list[np.ndarray]]:
    """Per epoch, per worker: the kept training examples visited, in order (a 3-epoch run)."""
    per_epoch = ready.rounds // 3
    state, seen = None, []
    for epoch in range(epochs):
        options = RunOptions(rounds=per_epoch * epoch + 1, eval_every=10**6)
        engine = Simulation(
            ready.algorithm,
            ready.problem,
            ready.shards,
            ready.evaluator,
            ready.streams,
            ready.clock,
            options,
        )
        state = engine.start() if state is None else state
        engine.run(state)
        visiting = state.workers.visiting.numpy()
        seen.append([part[row] for part, row in zip(ready.parts, visiting, strict=True)])
    return seen


@pytest.mark.parametrize("unit", UNITS)
@pytest.mark.parametrize("batch", [1, 2])
def test_every_order_visits_every_kept_example_once_per_epoch(batch: int, unit: str) -> None:
    removed = set()
    for order in ORDERS:
        ready = prepared(order, batch, unit)
        assert ready.data.train.n == KEPT and [p.size for p in ready.parts] == [52] * 8
        removed.add(tuple(ready.removed.ids.tolist()))
        for epoch, workers in enumerate(visits(ready, 3)):
            for part, seen in zip(ready.parts, workers, strict=True):
                assert sorted(seen.tolist()) == sorted(part.tolist()), (order, epoch)
            everything = np.sort(np.concatenate(workers))
            assert np.array_equal(everything, np.arange(KEPT)), (order, epoch)
    assert len(removed) == 1, "every order keeps the same examples"
    assert len(next(iter(removed))) == LOADED - KEPT


def test_run_json_lists_the_removed_examples(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lowcomm.run(
        "sgd",
        data="breast-cancer",
        model="logistic",
        workers=8,
        seed=3,
        l2=0.01,
        order="cd-grab",
        settings={"batch_size": 1, "lr": 0.1},
        epochs=1,
        out=tmp_path,
    )
    data = json.loads((tmp_path / "run.json").read_text())["data"]
    ids = data["removed"]["ids"]
    assert data["n_train"] == KEPT and data["removed"]["count"] == len(ids) == LOADED - KEPT
    assert ids == prepared("d-rr").removed.ids.tolist()
    assert "n = 52" in data["removed"]["why"]
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("note: removed 11 of 427 training examples")


def test_without_an_order_every_example_is_kept() -> None:
    ready = prepare(make_config({**CASE, "options": {"batch_size": 1}, "rounds": 1}))
    assert ready.data.train.n == LOADED and ready.removed.ids.size == 0
    assert ready.removed.record() == {"count": 0, "ids": [], "why": ""}


def test_kept_examples_depend_on_the_seed_not_on_the_order() -> None:
    config = {**CASE, "seed": 4, "order": "so", "options": {"batch_size": 1}, "epochs": 1}
    other = prepare(make_config(config))
    assert other.removed.ids.size == LOADED - KEPT
    assert not np.array_equal(other.removed.ids, prepared("so").removed.ids)


def test_cd_grab_beats_d_rr_and_so_at_a_constant_step_on_unequal_shards() -> None:
    """The issue's case: f - f* of the kept set after 40 epochs at lr 0.1.

    Before the rule the fixed orders stopped at ~1.2e-3 (the optimum of the examples they
    visited, measured on all 427) while D-RR kept falling.
    """
    gaps = {}
    for order in ("d-rr", "so", "cd-grab"):
        ready = prepared(order, epochs=40)
        train = ready.data.train
        assert isinstance(ready.problem, LogisticRegression)
        fstar = newton_optimum(ready.problem, torch.as_tensor(train.X), torch.as_tensor(train.y))
        result = execute(ready)
        assert result is not None
        gaps[order] = float(result.history["train_loss"].iloc[-1]) - fstar[1]
    assert 0 < 3 * gaps["cd-grab"] < min(gaps["d-rr"], gaps["so"]), gaps
    assert gaps["cd-grab"] < 1e-5, "converges on the kept set instead of stopping at ~1e-3"
