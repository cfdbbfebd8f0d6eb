"""The lazy family (sasg, lasg, lag, topk-ef): references, degenerate cases, bytes, options."""

import numpy as np
import pytest
import torch

from lowcomm.algorithms.lazy_presets import LAGConfig, LASGConfig, SASGConfig, TopKEFConfig
from lowcomm.algorithms.registry import build_algorithm
from lowcomm.algorithms.sgd import SGD, SGDConfig
from tests import reference
from tests.conftest import Setup
from tests.test_algorithms_reference import numpy_shards


@pytest.mark.parametrize("density", [None, 0.4])
def test_sasg_and_lasg_match_the_notebook_loop_in_float64(setup: Setup, density) -> None:
    common = {"lr": 0.05, "batch_size": 6, "sampling": "replacement", "window": 3}
    if density is None:
        algorithm = LASGConfig(threshold=2.0, **common).build()
    else:
        algorithm = SASGConfig(threshold=2.0, density=density, **common).build()
    result = setup.run(algorithm, 25, seed=4)
    weights = algorithm.spec.weights
    theta, uploads = reference.lasg_wk2(
        numpy_shards(setup), 1e-2, 4, 25, 0.05, 6, 3, weights, density
    )
    np.testing.assert_allclose(result.model.numpy(), theta, rtol=1e-12, atol=1e-14)
    assert result.ledger.total("uploads") == uploads
    assert uploads < 25 * 4, "the threshold must make some workers skip"


def test_threshold_zero_uploads_every_round(setup: Setup) -> None:
    for name in ("sasg", "lasg"):
        result = setup.run(build_algorithm(name, {"threshold": 0.0, "lr": 0.05}), 20)
        assert result.ledger.totals["uploads"].tolist() == [20] * 4
        assert result.history["skip_ratio"].tolist() == [0.0] * 21


def test_topk_with_every_entry_and_error_feedback_is_dense_sgd(setup: Setup) -> None:
    # the sum of the workers' shares of the total is M = 4 times the size-weighted mean
    topk = TopKEFConfig(lr=0.05, batch_size=7, density=1.0).build()
    sgd = SGD(SGDConfig(lr=0.2, batch_size=7, reduce="size-weighted", sampling="reshuffle"))
    a, b = setup.run(topk, 12), setup.run(sgd, 12)
    np.testing.assert_allclose(a.model.numpy(), b.model.numpy(), rtol=1e-12, atol=1e-15)
    d = setup.problem.dim
    assert a.ledger.total("bytes_up") == 12 * 4 * d * (4 + 8)
    assert b.ledger.total("bytes_up") == 12 * 4 * d * 8


def test_lag_with_threshold_zero_is_gradient_descent_on_the_sum(setup: Setup) -> None:
    result = setup.run(LAGConfig(lr=0.1, threshold=0.0).build(), 15)
    shards = numpy_shards(setup)
    share = reference.shares(shards)
    x = np.zeros(setup.problem.dim)
    for _ in range(15):
        grads = [
            s * reference.logistic_grad(x, A, y, 1e-2)
            for s, (A, y) in zip(share, shards, strict=True)
        ]
        x = x - 0.1 * sum(grads)
    np.testing.assert_allclose(result.model.numpy(), x, rtol=1e-12)
    sizes = [len(y) for _, y in shards]
    assert result.ledger.totals["grad_evals"].tolist() == [15 * n for n in sizes]


def test_lag_ps_asks_few_workers_and_unasked_workers_compute_nothing(setup: Setup) -> None:
    result = setup.run(LAGConfig(lr=0.3, rule="ps").build(), 60)
    records = result.ledger.records()
    asked = records[records["uploads"] > 0]
    evals = records.set_index(["round", "worker"])["grad_evals"]
    sizes = dict(enumerate(len(y) for _, y in numpy_shards(setup)))
    for (round_, worker), count in evals.items():
        uploaded = ((asked["round"] == round_) & (asked["worker"] == worker)).any()
        assert count == (sizes[worker] if uploaded else 0)
    assert len(asked) < 60 * 4
    # the smoothness estimate travels once, with each worker's first upload: 30 HVPs each
    assert result.ledger.totals["hvps"].tolist() == [30] * 4


def test_lasg_skips_grow_and_second_gradient_is_counted(setup: Setup) -> None:
    result = setup.run(LASGConfig(lr=0.05, batch_size=5, threshold=1.0).build(), 60)
    records = result.ledger.records()
    per_round = records.groupby("round")[["uploads", "grad_evals"]].sum()
    assert (per_round.loc[1:10, "uploads"] == 4).all(), "warm-up: everybody sends"
    assert (per_round.loc[1:10, "grad_evals"] == 4 * 5).all()
    assert (per_round.loc[11:, "grad_evals"] == 4 * 10).all(), "two gradients after warm-up"
    assert per_round.loc[11:, "uploads"].mean() < 4


def test_no_worker_skips_more_than_window_rounds_in_a_row(setup: Setup) -> None:
    result = setup.run(LASGConfig(lr=0.05, threshold=1e6, window=3).build(), 40)
    sent = (
        result.ledger.records()
        .pivot_table(index="round", columns="worker", values="uploads", fill_value=0)
        .reindex(range(1, 41), fill_value=0)
    )
    for worker in sent.columns:
        gaps = np.diff(np.flatnonzero(sent[worker].to_numpy()))
        assert gaps.max() <= 4  # at most D = 3 skips, then forced


def test_float32_sparse_uploads_cost_eight_bytes_per_kept_entry() -> None:
    setup = Setup(d=20, dtype=torch.float32)
    algorithm = SASGConfig(lr=0.05, density=0.1, threshold=0.0).build()
    result = setup.run(algorithm, 5)
    assert result.ledger.total("bytes_up") == 5 * 4 * 8 * 2  # k = floor(0.1 * 20) = 2
    # downlink: the model (4 bytes per float32 value) plus the 4-byte threshold
    assert result.ledger.total("bytes_down") == 5 * 4 * (4 * 20 + 4)
    dense = setup.run(LASGConfig(lr=0.05, threshold=0.0).build(), 5)
    assert dense.ledger.total("bytes_up") == 5 * 4 * 4 * 20


def test_previous_iterate_reference_is_the_multi_process_variant(setup: Setup) -> None:
    config = {"lr": 0.05, "batch_size": 6, "sampling": "replacement", "threshold": 0.1}
    last = setup.run(LASGConfig(**config).build(), 40)
    variant = LASGConfig(reference="previous-iterate", **config).build()
    previous = setup.run(variant, 40)
    theta, uploads = reference.lasg_wk2(
        numpy_shards(setup), 1e-2, 0, 40, 0.05, 6, 10, variant.spec.weights, previous=True
    )
    np.testing.assert_allclose(previous.model.numpy(), theta, rtol=1e-12, atol=1e-14)
    assert previous.ledger.total("uploads") == uploads
    assert last.ledger.total("uploads") != uploads
