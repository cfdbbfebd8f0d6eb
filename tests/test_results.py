"""Results on disk: history CSV/Parquet, run.json (strict JSON), loading back, seed means."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import lowcomm
from lowcomm.core.errors import DataError, DivergenceError
from lowcomm.core.ledger import Ledger
from lowcomm.engines.session import RunResult
from lowcomm.experiments.config import make_config
from lowcomm.experiments.execution import run_config
from lowcomm.experiments.results import (
    RUN_JSON,
    finished_run,
    load_history,
    mean_history,
    save_run,
    stack_seeds,
)


def history(losses: list[float], start: int = 0) -> pd.DataFrame:
    """A history with cumulative counters that grow by fixed steps per round."""
    rounds = np.arange(start, start + len(losses))
    return pd.DataFrame(
        {
            "round": rounds,
            "uploads": 2 * rounds,
            "downloads": 2 * rounds,
            "bytes_up": 80 * rounds,
            "bytes_down": 80 * rounds,
            "grad_evals": 10 * rounds,
            "hvps": 0 * rounds,
            "sync_rounds": rounds,
            "sim_time": 0.5 * rounds,
            "wall_time": 0.01 * rounds,
            "train_loss": losses,
            "test_metric": np.linspace(0.5, 0.9, len(losses)),
        }
    )


def result(losses: list[float], divergence: DivergenceError | None = None) -> RunResult:
    return RunResult(history(losses), Ledger(2), torch.zeros(3), divergence)


META = {"config": {"bandwidth": math.inf, "workers": 2}, "seed": 0}


def test_save_run_writes_all_three_files_that_load_back(tmp_path: Path) -> None:
    out = tmp_path / "nested" / "run"
    save_run(out, result([1.0, 0.5, 0.25]), META)
    assert sorted(p.name for p in out.iterdir()) == ["history.csv", "history.parquet", "run.json"]
    frame, meta = load_history(out)
    pd.testing.assert_frame_equal(frame, history([1.0, 0.5, 0.25]))
    assert meta["summary"] == {
        "rounds": 2,
        "uploads": 4,
        "downloads": 4,
        "bytes_up": 160,
        "bytes_down": 160,
        "grad_evals": 20,
        "hvps": 0,
        "sync_rounds": 2,
        "sim_time": 1.0,
        "wall_time": 0.02,
        "train_loss": 0.25,
        "test_metric": 0.9,
        "divergence": None,
    }
    assert meta["seed"] == 0


def test_run_json_is_strict_json_with_non_finite_numbers_as_strings(tmp_path: Path) -> None:
    divergence = DivergenceError(1, math.nan)
    save_run(tmp_path, result([1.0, math.nan], divergence), META)
    text = (tmp_path / "run.json").read_text()
    meta = json.loads(text, parse_constant=lambda name: pytest.fail(f"non-strict {name}"))
    assert meta["config"]["bandwidth"] == "inf"
    assert meta["summary"]["train_loss"] == "nan"
    assert meta["summary"]["divergence"] == str(divergence)


def test_csv_is_the_fallback_and_matches_parquet(tmp_path: Path) -> None:
    save_run(tmp_path, result([1.0, 0.5]), META)
    from_parquet, _ = load_history(tmp_path)
    (tmp_path / "history.parquet").unlink()
    from_csv, _ = load_history(tmp_path)
    pd.testing.assert_frame_equal(from_csv, from_parquet)


def test_history_without_run_json_loads_with_empty_metadata(tmp_path: Path) -> None:
    history([1.0]).to_csv(tmp_path / "history.csv", index=False)
    assert load_history(tmp_path)[1] == {}


def test_folder_without_history_is_a_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError) as caught:
        load_history(tmp_path)
    expected = f"{tmp_path}: no history.parquet or history.csv here (not a lowcomm run folder)"
    assert str(caught.value) == expected
    with pytest.raises(DataError, match="no such folder"):
        load_history(tmp_path / "missing")


def test_malformed_run_json_is_a_data_error(tmp_path: Path) -> None:
    save_run(tmp_path, result([1.0]), META)
    (tmp_path / "run.json").write_text("{\n  oops")
    with pytest.raises(DataError, match=r"run.json, line 2: not valid JSON"):
        load_history(tmp_path)


def test_seed_mean_keeps_only_rounds_every_seed_recorded() -> None:
    short, full = history([4.0, 2.0]), history([2.0, 1.0, 0.5])
    stacked = stack_seeds([short, full])
    assert sorted(set(stacked["round"])) == [0, 1]
    assert (stacked["bytes"] == stacked["bytes_up"] + stacked["bytes_down"]).all()
    mean = mean_history([short, full])
    assert mean["round"].tolist() == [0, 1]
    assert mean["train_loss"].tolist() == [3.0, 1.5]


@pytest.mark.parametrize("mark", ["interrupted", "failed"])
def test_a_run_stopped_early_is_not_finished(tmp_path: Path, mark: str) -> None:

    config = make_config({"data": "synthetic-logistic:100,3", "workers": 2, "rounds": 2})
    run_config(config, out=tmp_path)
    assert finished_run(tmp_path, config, lowcomm.__version__)
    meta = json.loads((tmp_path / RUN_JSON).read_text())
    (tmp_path / RUN_JSON).write_text(json.dumps(meta | {mark: {"round": 1}}))
    assert not finished_run(tmp_path, config, lowcomm.__version__)
