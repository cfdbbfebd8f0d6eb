"""hogwild-ib: schedules, exact K and rounds, references, SGD and zero-delay equivalences."""

import numpy as np
import pytest
import torch

from lowcomm.algorithms.hogwild_ib import HogwildIB, HogwildIBConfig
from lowcomm.algorithms.schedules import SampleSizes, StepSize, delay_aware_offset
from lowcomm.algorithms.sgd import SGD, SGDConfig
from lowcomm.core.clock import ClockModel, ComputeModel
from lowcomm.core.errors import InvalidConfigError
from tests import reference
from tests.conftest import Setup
from tests.test_algorithms_reference import numpy_shards


@pytest.mark.parametrize(
    ("text", "first", "total_of_4"),
    [
        ("const:3", [3, 3, 3, 3], 12),
        ("linear:4,1", [1, 5, 9, 13], 28),
        ("poly:2", [1, 4, 9, 16], 30),
    ],
)
def test_sample_size_schedules(text: str, first: list[int], total_of_4: int) -> None:
    sizes = SampleSizes(text)
    assert [sizes(i) for i in range(4)] == first
    assert sizes.total(4) == total_of_4 == sum(first)


def test_step_schedules() -> None:
    assert StepSize("const:0.1")(1e6) == 0.1
    assert StepSize("inv:0.5,100")(100) == pytest.approx(0.25)
    assert StepSize("hogwild:2,0.01,400")(100) == pytest.approx(2 / (0.01 * 500))


@pytest.mark.parametrize(
    ("field", "text", "message"),
    [
        ("sample_sizes", "linear:1", "The 'sample_sizes' parameter of hogwild-ib must be const:S"),
        ("sample_sizes", "const:0", "must be const:S, linear:A,B or poly:P"),
        ("step", "inv:0.5", "The 'step' parameter of hogwild-ib must be const:ETA"),
        ("step", "const:x", "Got 'const:x'"),
    ],
)
def test_bad_schedules_are_refused(field: str, text: str, message: str) -> None:
    with pytest.raises(InvalidConfigError, match=message):
        HogwildIBConfig(**{field: text})


@pytest.mark.parametrize("minibatch", [False, True])
def test_synchronous_rounds_match_numpy_reference(setup: Setup, minibatch: bool) -> None:
    config = HogwildIBConfig(
        "linear:2,1", "inv:0.3,50", "minibatch" if minibatch else "local-steps"
    )
    result = setup.run(HogwildIB(config), 6, seed=2)
    expected = reference.hogwild_ib(
        numpy_shards(setup),
        1e-2,
        2,
        6,
        SampleSizes(config.sample_sizes),
        StepSize(config.step),
        minibatch,
    )
    np.testing.assert_allclose(result.model.numpy(), expected, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("text", ["const:1", "const:10", "linear:1,1", "linear:4,1", "poly:2"])
def test_gradient_and_round_counts_are_exact(setup: Setup, text: str) -> None:
    result = setup.run(HogwildIB(HogwildIBConfig(text, "const:0.01")), 7)
    k = SampleSizes(text).total(7)
    assert result.ledger.totals["grad_evals"].tolist() == [k] * 4
    assert result.ledger.totals["uploads"].tolist() == [7] * 4
    assert result.ledger.total("bytes_up") == 7 * 4 * 8 * setup.problem.dim


def test_one_worker_with_one_sample_is_plain_sgd() -> None:
    setup = Setup(workers=1)
    hogwild = setup.run(HogwildIB(HogwildIBConfig("const:1", "const:0.2")), 30)
    sgd = setup.run(SGD(SGDConfig(lr=0.2, batch_size=1, reduce="sum")), 30)
    torch.testing.assert_close(hogwild.model, sgd.model, rtol=1e-13, atol=1e-15)


def test_zero_delays_make_the_asynchronous_engine_synchronous(setup: Setup) -> None:
    algorithm = HogwildIB(HogwildIBConfig("linear:1,1", "inv:0.3,50"))
    zero = setup.run(algorithm, 8)
    equal = setup.run(algorithm, 8, clock=ClockModel(compute=ComputeModel(1e-3)))
    torch.testing.assert_close(zero.model, equal.model, rtol=0, atol=0)
    assert zero.ledger.records().equals(equal.ledger.records())
    skewed = setup.run(
        algorithm, 8, clock=ClockModel(compute=ComputeModel(1e-3, speeds=(1, 3, 1, 2)))
    )
    assert not torch.equal(zero.model, skewed.model)


def test_budget_stops_after_k_gradients(setup: Setup) -> None:
    result = setup.run(HogwildIB(HogwildIBConfig("linear:1,1")), 10**9, grad_budget=200)
    total = result.ledger.total("grad_evals")
    # rounds of 4 workers: 4 * (1 + 2 + ... + i) first reaches 200 at i = 10 (220)
    assert total == 220 and result.history["round"].iloc[-1] == 10


def test_per_gradient_step_timing_changes_the_run(setup: Setup) -> None:
    base = setup.run(HogwildIB(HogwildIBConfig("const:5", "inv:0.3,5")), 5)
    timed = setup.run(HogwildIB(HogwildIBConfig("const:5", "inv:0.3,5", step_timing="gradient")), 5)
    assert not torch.equal(base.model, timed.model)


def test_delay_aware_offset_by_hand() -> None:
    # const:10, n = 5: tau_i = 50 for every i, largest at i = 0: E = 400 * 50
    assert delay_aware_offset(400, SampleSizes("const:10"), 5, 60) == 20_000
    # linear:1,1, n = 2, 3 rounds: s = 1, 2, 3, done = 0, 1, 3 -> 2 (10 s - done) = 20, 38, 54
    assert delay_aware_offset(10, SampleSizes("linear:1,1"), 2, 3) == 54
    # and the step it builds: a round's summed step is never longer than the classic first one
    offset = delay_aware_offset(400, SampleSizes("linear:1,1"), 5, 35)
    step, classic = StepSize(f"hogwild:2,0.1,{offset}"), StepSize("hogwild:2,0.1,400")
    sizes = SampleSizes("linear:1,1")
    for i in range(35):
        assert 5 * sizes(i) * step(5 * sizes.total(i)) <= classic(0) * (1 + 1e-12)
    assert offset >= 400
