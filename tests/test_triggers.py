"""Lazy triggers by hand, and the lazy family over other compressors and step-size schedules."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from lowcomm.algorithms.base import Context, NoState
from lowcomm.algorithms.lazy_presets import LASGConfig, TopKEFConfig
from lowcomm.algorithms.learning_rate import step_size
from lowcomm.algorithms.registry import build_algorithm
from lowcomm.algorithms.triggers import LAGPS, LAGWK, LASGWK2, Always, Anchors, Step, WorkerView
from lowcomm.core.clock import ClockModel
from lowcomm.core.errors import InvalidConfigError
from lowcomm.core.messages import Bundle, Dense, Scalars, SignBits, Upload
from lowcomm.core.rng import Streams
from lowcomm.data.dataset import Shards
from lowcomm.engines.evaluation import Evaluator
from lowcomm.engines.session import RunOptions, RunResult
from lowcomm.engines.simulate import Simulation
from lowcomm.problems.torch_model import TorchModel
from tests import reference
from tests.conftest import Setup
from tests.test_algorithms_reference import numpy_shards

F64 = torch.float64


class Quadratic:
    """Worker m's loss a_m ||x||^2 / 2: gradient a_m x, Hessian a_m I; counts gradient calls."""

    def __init__(self, a: list[float]) -> None:
        self.a = torch.tensor(a, dtype=F64)[:, None]
        self.calls = 0
        self.rows: list[int] = []

    def grad(self, params: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
        self.calls += 1
        return self.a * params

    def grad_of_rows(self, params: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        self.rows = rows.tolist()
        out = torch.zeros_like(params)
        out[rows] = self.a[rows] * params[rows]
        return out

    def hvp(self, params: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return self.a * v


def quadratic(*a: float) -> Any:
    """A :class:`Quadratic` where the triggers take a LocalData."""
    return Quadratic(list(a))


def ctx(round_: int, workers: tuple[int, ...] = (0, 1), n_workers: int = 2) -> Context:
    return Context(round_, torch.tensor(workers), n_workers, Streams(0))


def t(rows: list) -> torch.Tensor:
    return torch.tensor(rows, dtype=F64)


ONES = t([[1.0, 1.0], [1.0, 1.0]])
THRESHOLD_2 = Scalars(t([[2.0], [2.0]]))


def view(extra: Any, data: Any, context: Context) -> WorkerView:
    """Two workers at the model [1, 1] (the batch does not matter to :class:`Quadratic`)."""
    return WorkerView(ONES, extra, data, None, context)


def test_always_sends_every_worker_and_downloads_only_the_model() -> None:
    decision = Always().decide(NoState(), view(None, quadratic(1.0, 2.0), ctx(7)))
    assert decision.sent.tolist() == [True, True]
    assert torch.equal(decision.grad, t([[1.0, 1.0], [2.0, 2.0]]))
    assert Always().download(NoState(), torch.tensor(3.0)) is None


def test_lasg_wk2_compares_the_fresh_gradient_at_the_reference_model() -> None:
    # gradients [1, 1] and [2, 2]; at the references [1, 0] and [0, 0]: [1, 0] and [0, 0];
    # squared changes 1 and 8 against the threshold 2
    trigger = LASGWK2(window=2)
    state = Anchors(t([[1.0, 0.0], [0.0, 0.0]]), torch.tensor([1, 2]))
    data = quadratic(1.0, 2.0)
    decision = trigger.decide(state, view(THRESHOLD_2, data, ctx(2)))
    assert decision.sent.tolist() == [False, True]
    assert torch.equal(decision.state.anchor, t([[1.0, 0.0], [1.0, 1.0]]))
    assert decision.state.staleness.tolist() == [2, 1]
    assert data.calls == 2
    download = trigger.download(NoState(), torch.tensor(2.5, dtype=F64))
    assert download.values.tolist() == [[2.5]]


def test_lasg_wk2_forces_after_window_skips_and_sends_all_in_the_warm_up() -> None:
    trigger = LASGWK2(window=2)
    stale = Anchors(t([[1.0, 0.0], [0.0, 0.0]]), torch.tensor([3, 1]))
    decision = trigger.decide(stale, view(THRESHOLD_2, quadratic(1.0, 2.0), ctx(5)))
    assert decision.sent.tolist() == [True, True]  # worker 0 skipped D = 2 rounds in a row
    warm = quadratic(1.0, 2.0)
    decision = trigger.decide(stale, view(None, warm, ctx(1)))
    assert decision.sent.tolist() == [True, True]
    assert warm.calls == 1, "no second gradient in the warm-up"


def test_lasg_wk2_previous_iterate_moves_every_reference() -> None:
    state = Anchors(t([[1.0, 0.0], [0.0, 0.0]]), torch.tensor([1, 1]))
    trigger = LASGWK2(window=2, reference="previous-iterate")
    decision = trigger.decide(state, view(THRESHOLD_2, quadratic(1.0, 2.0), ctx(2)))
    assert decision.sent.tolist() == [False, True]
    assert torch.equal(decision.state.anchor, ONES)


def test_lag_wk_compares_with_the_last_uploaded_gradient() -> None:
    # fresh [1, 1] and [2, 2] against the last uploaded [1, 0] and [2, 2]: changes 1 and 0
    state = Anchors(t([[1.0, 0.0], [2.0, 2.0]]), torch.tensor([1, 1]))
    threshold = Scalars(t([[0.5], [0.5]]))
    decision = LAGWK(window=2).decide(state, view(threshold, quadratic(1.0, 2.0), ctx(4)))
    assert decision.sent.tolist() == [True, False]
    assert torch.equal(decision.state.anchor, t([[1.0, 1.0], [2.0, 2.0]]))
    assert decision.state.staleness.tolist() == [1, 2]


def test_lag_ps_workers_compute_only_when_asked_and_send_their_smoothness_once() -> None:
    data = quadratic(1.0, 2.0)
    asked = SignBits(torch.tensor([[True, False, False, True]]).expand(2, 4))
    decision = LAGPS(window=2).decide(NoState(), view(asked, data, ctx(3, (1, 3), 4)))
    assert decision.sent.tolist() == [False, True]
    assert data.rows == [1]
    assert torch.equal(decision.grad, t([[0.0, 0.0], [2.0, 2.0]]))
    first = LAGPS(window=2).piggyback(view(None, data, ctx(0)))
    assert first is not None
    np.testing.assert_allclose(first.values.numpy(), [[1.0], [2.0]], rtol=1e-12)
    assert LAGPS(window=2).piggyback(view(None, data, ctx(1))) is None


def test_lag_ps_asks_whom_drift_times_smoothness_puts_over_the_threshold() -> None:
    trigger = LAGPS(window=2)
    state = trigger.init(torch.zeros(2, dtype=F64), 2)
    assert state.asked.tolist() == [True, True]
    origin, moved, threshold = t([0.0, 0.0]), t([1.0, 0.0]), torch.tensor(2.0, dtype=F64)
    smoothness = Scalars(t([[1.0], [3.0]]))
    # worker 0 sends at theta = 0, worker 1 last sent at 0 too: drifts 1 * 1 and 9 * 1
    first = Step(torch.tensor([True, False]), origin, moved, threshold, ctx(5))
    new = trigger.update(state, smoothness, first)
    assert new.asked.tolist() == [False, True]
    assert new.staleness.tolist() == [1, 1]
    assert new.smoothness.tolist() == [1.0, 3.0]
    assert trigger.download(new, threshold).signs.tolist() == [[False, True]]
    # two more rounds without uploads: worker 0 has waited D + 1 = 3 rounds and is asked
    later = new
    for round_ in (6, 7):
        idle = Step(torch.tensor([False, False]), moved, moved, threshold, ctx(round_))
        later = trigger.update(later, None, idle)
    assert later.staleness.tolist() == [3, 3]
    assert later.asked.tolist() == [True, True]
    warm = trigger.update(state, smoothness, first._replace(ctx=ctx(0)))
    assert warm.asked.tolist() == [True, True], "round 1 is still in the warm-up of D = 2"


def test_threshold_uses_the_step_size_of_the_round_it_is_applied_in(setup: Setup) -> None:
    # lr_k = 0.1 / (1 + k); xi_d = c * lr_{k+1} over D - 1 = 2 differences, divided by
    # lr_{k+1}^2 M^2: thr = c * (diff_1 + diff_2) / (lr_{k+1} M^2)
    algorithm = LASGConfig(lr="inv:0.1,1", window=3, threshold=1.0).build()
    state, _ = algorithm.init(setup.problem, torch.tensor([10, 10]), Streams(0))
    rows = t([[1.0, 0, 0, 0, 0], [0, 2.0, 0, 0, 0]])
    state, down = algorithm.aggregate(
        state, Upload(Dense(rows), torch.tensor([True, True])), ctx(0)
    )
    assert float(state.threshold) == pytest.approx(5.0 / (0.05 * 4), rel=1e-12)
    payload = down.payload
    assert isinstance(payload, Bundle) and isinstance(payload.parts[1], Scalars)
    assert float(payload.parts[1].values) == float(state.threshold)
    fresh = t([[9.0, 9, 9, 9, 9], [0, 0, 1.0, 0, 0]])  # worker 0 skips: its stored row counts
    state, _ = algorithm.aggregate(state, Upload(Dense(fresh), torch.tensor([False, True])), ctx(1))
    assert state.params.tolist() == [-2.0, -2.0, -1.0, 0.0, 0.0]
    assert float(state.threshold) == pytest.approx((2.0 + 5.0) / ((0.1 / 3) * 4), rel=1e-12)


def test_messages_are_scaled_by_the_step_size_of_their_round(setup: Setup) -> None:
    lr, b, rounds = "step:0.1,0.5,3", 6, 8
    config = {"compressor": "identity", "error_feedback": False, "sampling": "replacement"}
    result = setup.run(TopKEFConfig(lr=lr, batch_size=b, **config).build(), rounds, seed=2)
    x = np.zeros(setup.problem.dim)
    for r in range(rounds):
        grads = []
        shards = numpy_shards(setup)
        for m, (A, y) in enumerate(shards):
            i = reference.batch(2, m, r, b, len(y))
            grads.append(reference.shares(shards)[m] * reference.logistic_grad(x, A[i], y[i], 1e-2))
        x = x - step_size(lr, r) * np.sum(grads, axis=0)
    np.testing.assert_allclose(result.model.numpy(), x, rtol=1e-12, atol=1e-15)


def same_run(a: RunResult, b: RunResult) -> None:
    assert torch.equal(a.model, b.model)
    assert a.history.drop(columns="wall_time").equals(b.history.drop(columns="wall_time"))
    assert a.ledger.records().equals(b.ledger.records())


LAZY = {"lr": 0.05, "window": 3, "threshold": 0.5}


def test_sasg_with_its_compressor_spelled_out_is_sasg_bit_for_bit(setup: Setup) -> None:
    explicit = {"compressor": "topk:0.01", "error_feedback": True}
    same_run(
        setup.run(build_algorithm("sasg", LAZY), 30),
        setup.run(build_algorithm("sasg", {**LAZY, **explicit}), 30),
    )
    same_run(
        setup.run(build_algorithm("topk-ef", {"density": 0.4}), 10),
        setup.run(build_algorithm("topk-ef", {"compressor": "topk:0.4"}), 10),
    )


def test_a_constant_schedule_is_the_number_bit_for_bit(setup: Setup) -> None:
    same_run(
        setup.run(build_algorithm("sasg", LAZY), 30),
        setup.run(build_algorithm("sasg", {**LAZY, "lr": "const:0.05"}), 30),
    )


def test_lasg_over_sign_sends_sign_sized_messages() -> None:
    setup = Setup(d=20, dtype=torch.float32)
    rounds, window, workers = 30, 5, 4
    signs = setup.run(LASGConfig(lr=0.05, window=window, compressor="sign").build(), rounds)
    dense = setup.run(LASGConfig(lr=0.05, window=window).build(), rounds)
    records = signs.ledger.records().groupby("round")[["uploads", "bytes_up"]].sum()
    # ceil(20 / 8) = 3 bytes of packed signs and one float32 scale per upload
    assert (records["bytes_up"] == records["uploads"] * (3 + 4)).all()
    dense_records = dense.ledger.records().groupby("round")["uploads"].sum()
    warm = range(1, window + 1)
    assert (records.loc[warm, "uploads"] == workers).all()
    assert records.loc[warm, "uploads"].equals(dense_records.loc[warm])
    assert signs.ledger.total("uploads") < rounds * workers


def test_a_trigger_over_random_k_with_error_feedback_learns(setup: Setup) -> None:
    settings = {**LAZY, "compressor": "randk:0.6", "error_feedback": True}
    result = setup.run(build_algorithm("sasg", settings), 200, eval_every=50)
    loss = result.history["train_loss"]
    assert loss.iloc[-1] < 0.8 * loss.iloc[0]
    assert result.ledger.total("uploads") < 200 * 4


def test_low_rank_messages_use_the_models_tensor_shapes(setup: Setup) -> None:
    torch.manual_seed(0)
    module = nn.Sequential(nn.Linear(5, 20), nn.ReLU(), nn.Linear(20, 2))
    problem = TorchModel(module, l2=1e-3, dtype=F64)
    shards = Shards.build(setup.data.train, setup.parts, F64)
    algorithm = build_algorithm("sasg", {**LAZY, "compressor": "lowrank:1"})
    evaluator = Evaluator.build(problem, setup.data)
    options = RunOptions(rounds=3)
    run = Simulation(algorithm, problem, shards, evaluator, Streams(0), ClockModel(), options)
    result = run.run()
    # rank 1 of the 20 x 5 and 2 x 20 weights seen by their shapes: 25 + 22 values, biases
    # whole: 20 + 2 (flat 100 and 40 values would be viewed as 10 x 10 and 5 x 8: 20 + 13)
    assert result.ledger.total("bytes_up") == result.ledger.total("uploads") * 8 * (25 + 22 + 22)
    assert result.ledger.total("uploads") == 3 * 4, "the warm-up (D = 3): everybody sends"


@pytest.mark.parametrize("name", ["sasg", "topk-ef"])
def test_a_density_together_with_a_compressor_is_refused(name: str) -> None:
    message = (
        rf"The 'density' parameter of {name} must be 0.01 \(its default\) when a compressor is "
        r"set \(topk:DENSITY\). Got 0.4."
    )
    with pytest.raises(InvalidConfigError, match=message):
        build_algorithm(name, {"density": 0.4, "compressor": "sign"})
