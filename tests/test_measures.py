"""The shared measures against values worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from lowcomm.experiments.config import make_config
from lowcomm.experiments.measures import (
    decreased,
    exact_optimum,
    first_reach,
    loglog_slope,
    non_increasing,
    optima,
    pooled_loglog_slope,
    reach,
    seed_mean,
    suboptimality,
)
from lowcomm.experiments.runner import prepare
from lowcomm.problems.logistic import LogisticRegression

NAN = math.nan


def test_first_reach_falling_and_rising() -> None:
    assert first_reach([5.0, 3.0, 2.0, 1.0], 2.0) == 2  # first value <= 2 is at position 2
    assert first_reach([0.1, NAN, 0.8, 0.9], 0.8, rising=True) == 2  # NaN never reaches
    assert first_reach([5.0, 3.0], 1.0) is None


def test_reach_returns_the_cost_at_the_first_hit() -> None:
    assert reach([5.0, 3.0, 2.0, 1.0], [10, 20, 30, 40], 2.5) == 30.0
    assert reach([0.5, 0.7, 0.9], [1, 4, 9], 0.7, rising=True) == 4.0
    assert math.isnan(reach([5.0, 3.0], [1, 2], 1.0))


def test_suboptimality_absolute_and_relative() -> None:
    loss = pd.Series([3.0, 2.5, 2.0])
    assert suboptimality(loss, 2.0).tolist() == [1.0, 0.5, 0.0]
    assert suboptimality(loss, 2.0, relative=True).tolist() == [0.5, 0.25, 0.0]


def test_exact_optimum_of_a_one_weight_logistic_regression() -> None:
    # two points x = +1 (y = 1) and x = -1 (y = 0): by symmetry the loss of weight w is
    # log(1 + e^-w) + l2/2 w^2, minimised where e^-w / (1 + e^-w) = l2 w.
    problem = LogisticRegression(1, 0.1, dtype=torch.float64)
    f_star = exact_optimum(problem, np.array([[1.0], [-1.0]]), np.array([1, 0]))
    w = 0.0
    for _ in range(200):  # fixed point of w = sigmoid(-w) / l2, damped
        w = 0.5 * w + 0.5 * (1 / (1 + math.exp(w))) / 0.1
    assert f_star == pytest.approx(math.log1p(math.exp(-w)) + 0.05 * w * w, rel=1e-9)
    assert math.isnan(exact_optimum(object(), np.zeros((2, 1)), np.zeros(2)))


def test_loglog_slope_recovers_a_power_law() -> None:
    x = np.array([1.0, 2.0, 4.0, 8.0])
    assert loglog_slope(x, 3 * x**1.5) == pytest.approx(1.5)
    assert loglog_slope(x, 7 / x) == pytest.approx(-1.0)
    assert math.isnan(loglog_slope([2.0, 2.0], [1.0, 4.0]))  # no line through one abscissa


def test_pooled_slope_shares_the_slope_not_the_intercept() -> None:
    x = np.array([1.0, 0.5, 0.25])
    # intercepts 3 and 7 differ; a one-point group carries no slope and is dropped
    groups = [(x, 3 * x**1.5), (x[:2], 7 * x[:2] ** 1.5), (np.array([1.0]), np.array([2.0]))]
    assert pooled_loglog_slope(groups) == pytest.approx(1.5)
    # by hand: centred logs dx = (-1, 1) log 2 / 2 paired with dy = (-1, 3) / 2 -> slope 2/log 2
    two = np.array([1.0, 2.0])
    assert pooled_loglog_slope([(two, np.exp([0.0, 2.0]))]) == pytest.approx(2 / math.log(2))
    assert math.isnan(pooled_loglog_slope([(np.array([1.0]), np.array([1.0]))]))


def test_non_increasing_on_finite_values() -> None:
    assert non_increasing([0.9, 0.9, 0.5])
    assert not non_increasing([0.5, 0.7])
    assert non_increasing([4.0])


def test_nan_rule_missing_ranks_below_every_value() -> None:
    # tau*(mu) of the async-msgd report, d=50, eta=0.005: no delay converges from mu = 0.7 on
    assert non_increasing([128, 128, 32, NAN, NAN, NAN, NAN])
    assert decreased([128, 128, 32, NAN, NAN, NAN, NAN])
    # best mu per delay, d=50, eta=0.01: no momentum converges at the two largest delays
    assert non_increasing([0, 0, 0, 0, 0, 0, 0, NAN, NAN])
    # a value after none is a rise: a violation
    assert not non_increasing([3.0, NAN, 1.0])
    assert not non_increasing([NAN, 0.5])


def test_nan_rule_for_a_group_where_nothing_converges() -> None:
    nothing = [NAN, NAN, NAN]
    assert non_increasing(nothing)  # vacuously: no value ever rises
    assert not decreased(nothing)  # but it gives no evidence of a decrease


def test_decreased_compares_last_with_first() -> None:
    assert decreased([128, 256, 64])
    assert not decreased([16, 8, 16])
    assert not decreased([5.0])


def test_seed_mean_has_no_value_when_a_seed_has_none() -> None:
    assert seed_mean([1.0, 3.0]) == 2.0
    assert math.isnan(seed_mean([1.0, math.nan]))
    frame = pd.DataFrame({"m": [1, 1, 2, 2], "v": [1.0, 2.0, 4.0, math.nan]})
    means = frame.groupby("m")["v"].agg(seed_mean)
    assert means[1] == 1.5 and math.isnan(means[2])


def test_optima_are_each_configs_kept_training_set_optimum() -> None:
    base = {"data": "synthetic-logistic:300,5", "workers": 4, "rounds": 1, "dtype": "float64"}
    logistic = make_config(base | {"l2": 0.1, "seed": 1})
    network = make_config({"data": "digits", "model": "mlp", "hidden": (4,), "rounds": 1})
    table = optima((logistic, network))
    assert list(table.columns) == ["f_star", "n_train", "dim"]
    train = prepare(logistic).data.train
    X = torch.as_tensor(train.X, dtype=torch.float64)
    expected = exact_optimum(LogisticRegression(5, 0.1, dtype=torch.float64), X, train.y)
    assert table["f_star"].iloc[0] == expected and table["n_train"].iloc[0] == train.n == 225
    assert table["dim"].iloc[0] == 5
    assert math.isnan(table["f_star"].iloc[1])  # a network's optimum is unknown
