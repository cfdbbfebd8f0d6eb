"""The comparison helpers: cost to reach a target, automatic target, summary, options."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lowcomm.algorithms.registry import REGISTRY
from lowcomm.core.errors import InvalidConfigError
from lowcomm.experiments.compare import automatic_target, compare, reach, summarize
from lowcomm.experiments.config import make_config
from lowcomm.experiments.variants import flatten_options, resolve_options

KNOWN = ", ".join(REGISTRY)


def history(losses: list[float]) -> pd.DataFrame:
    """A history whose counters grow by fixed steps: 4 uploads, 160 bytes, 10 grads a round."""
    rounds = np.arange(len(losses))
    counters = {"uploads": 2, "bytes_up": 80, "bytes_down": 80, "grad_evals": 10}
    return pd.DataFrame(
        {"round": rounds, **{k: step * rounds for k, step in counters.items()}}
        | {"sim_time": 0.5 * rounds, "train_loss": losses, "test_metric": 0.5}
    )


def test_reach_is_the_first_row_at_or_below_the_target() -> None:
    h = history([3.0, 2.0, 1.0, 1.5, 0.5])
    assert reach(h, 1.0) == {
        "rounds": 2.0,
        "uploads": 4.0,
        "bytes": 320.0,
        "grad_evals": 20.0,
        "sim_time": 1.0,
    }
    assert reach(h, 2.5)["rounds"] == 1.0
    assert reach(h, 3.0)["rounds"] == 0.0


def test_reach_is_nan_when_the_target_is_never_reached() -> None:
    spent = reach(history([3.0, math.nan, math.inf]), 1.0)
    assert set(spent) == {"rounds", "uploads", "bytes", "grad_evals", "sim_time"}
    assert all(math.isnan(value) for value in spent.values())


def test_automatic_target_is_the_largest_finite_final_loss() -> None:
    means = [history([3.0, 1.0]), history([3.0, 2.0]), history([3.0, math.nan])]
    assert automatic_target(means) == 2.0
    assert math.isnan(automatic_target([history([1.0, math.inf])]))


def test_summary_on_seed_means_with_automatic_and_given_targets() -> None:
    runs = {
        "fast": [history([4.0, 1.0, 0.5]), history([2.0, 1.0, 0.3])],  # mean 3, 1, 0.4
        "slow": [history([4.0, 3.0, 2.0]), history([4.0, 3.0, 1.0])],  # mean 4, 3, 1.5
    }
    table = summarize(runs, None).set_index("algorithm")
    assert table["target_loss"].tolist() == [1.5, 1.5]
    assert table["rounds_to_target"].tolist() == [1.0, 2.0]
    assert table["bytes_to_target"].tolist() == [160.0, 320.0]
    assert table.loc["fast", "final_train_loss"] == pytest.approx(0.4)
    assert table["seeds"].tolist() == [2, 2]
    given = summarize(runs, 0.45).set_index("algorithm")
    assert given.loc["fast", "rounds_to_target"] == 2.0
    assert math.isnan(given.loc["slow", "rounds_to_target"])


def test_shared_options_go_to_every_algorithm_that_accepts_them() -> None:
    settings = {"lr": 0.1, "local_steps": 8, "local-sgd.lr": 0.5}
    assert resolve_options(settings, ["sgd", "local-sgd", "gd"]) == {
        "sgd": {"lr": 0.1},
        "local-sgd": {"lr": 0.5, "local_steps": 8},
        "gd": {},
    }


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (
            {"nope": 1},
            "The 'nope' parameter of lowcomm compare must be a setting of at least one "
            "compared algorithm (sgd, gd). Got 1.",
        ),
        (
            {"local-sgd.lr": 1},
            "The 'set' parameter of lowcomm compare must be KEY or ALGORITHM.KEY with "
            "ALGORITHM one of sgd, gd. Got 'local-sgd.lr'.",
        ),
    ],
)
def test_options_that_fit_no_compared_algorithm_are_refused(
    settings: dict[str, int], message: str
) -> None:
    with pytest.raises(InvalidConfigError) as caught:
        resolve_options(settings, ["sgd", "gd"])
    assert str(caught.value) == message


def test_config_file_option_tables_become_dotted_keys() -> None:
    options = {"lr": 0.1, "local-sgd": {"local_steps": 8}, "sgd": {"momentum": 0.9}}
    assert flatten_options(options) == {
        "lr": 0.1,
        "local-sgd.local_steps": 8,
        "sgd.momentum": 0.9,
    }


@pytest.mark.parametrize(
    ("algorithms", "seeds", "message"),
    [
        (
            ["sgd", "sgd"],
            [0],
            "The 'algorithms' parameter of lowcomm compare must be distinct "
            f"names from {KNOWN}. Got 'sgd,sgd'.",
        ),
        (
            [],
            [0],
            "The 'algorithms' parameter of lowcomm compare must be distinct names from "
            f"{KNOWN}. Got ''.",
        ),
        (
            ["sgd"],
            [1, 1],
            "The 'seeds' parameter of lowcomm compare must be distinct integers >= 0. Got [1, 1].",
        ),
    ],
)
def test_compare_validates_before_writing(
    tmp_path: Path, algorithms: list[str], seeds: list[int], message: str
) -> None:
    base = make_config({"data": "synthetic-logistic:60,3", "workers": 2, "rounds": 1})
    with pytest.raises(InvalidConfigError) as caught:
        compare(base, algorithms, {}, seeds, tmp_path / "out", None)
    assert str(caught.value) == message
    assert not (tmp_path / "out").exists()


def test_compare_refuses_a_target_that_is_not_a_number(tmp_path: Path) -> None:
    base = make_config({})
    with pytest.raises(InvalidConfigError) as caught:
        compare(base, ["sgd"], {}, [0], tmp_path / "out", "low")  # type: ignore[arg-type]
    expected = "The 'target_loss' parameter of lowcomm compare must be a finite number. Got 'low'."
    assert str(caught.value) == expected


def test_compare_refuses_the_torchdist_engine(tmp_path: Path) -> None:
    base = make_config({"engine": "torchdist"})
    with pytest.raises(InvalidConfigError, match="'engine' parameter of lowcomm compare"):
        compare(base, ["sgd"], {}, [0], tmp_path, None)


def test_compare_returns_the_summary_it_writes(tmp_path: Path) -> None:
    base = make_config({"data": "synthetic-logistic:80,3", "workers": 2, "rounds": 2})
    table = compare(base, ["sgd", "gd"], {"sgd": {"lr": 0.5}}, [3], tmp_path, 10.0).summary
    pd.testing.assert_frame_equal(table, pd.read_csv(tmp_path / "summary.csv"))
    assert table["rounds_to_target"].tolist() == [0.0, 0.0]
    assert table["diverged"].tolist() == [0, 0]
    assert (tmp_path / "sgd" / "seed3" / "run.json").is_file()
