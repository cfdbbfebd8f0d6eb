"""From config to run: problem choice, the held-out share, and the a9a comparison."""

from pathlib import Path

import pandas as pd
import pytest

from lowcomm.core.errors import InvalidConfigError
from lowcomm.experiments.compare import compare
from lowcomm.experiments.config import load_yaml, make_config
from lowcomm.experiments.runner import prepare
from lowcomm.problems.logistic import LogisticRegression
from lowcomm.problems.softmax import SoftmaxRegression
from lowcomm.problems.torch_model import TorchModel
from tests.conftest import SHARED_DATASETS


def test_auto_model_is_logistic_for_two_classes_and_softmax_otherwise() -> None:
    binary = prepare(make_config({"data": "breast-cancer", "workers": 2}))
    multi = prepare(make_config({"data": "digits", "workers": 2}))
    assert isinstance(binary.problem, LogisticRegression) and binary.problem.dim == 30
    assert isinstance(multi.problem, SoftmaxRegression) and multi.problem.dim == 640
    mlp = prepare(make_config({"data": "digits", "workers": 2, "model": "mlp", "hidden": [16]}))
    assert isinstance(mlp.problem, TorchModel) and mlp.problem.dim == 64 * 16 + 16 + 16 * 10 + 10


def test_logistic_on_multiclass_data_is_refused() -> None:
    with pytest.raises(InvalidConfigError, match="The 'model' parameter of the run config"):
        prepare(make_config({"data": "digits", "model": "logistic"}))


def test_test_fraction_sets_the_held_out_share() -> None:
    half = prepare(make_config({"data": "digits", "workers": 2, "test_fraction": 0.5}))
    quarter = prepare(make_config({"data": "digits", "workers": 2}))
    assert abs(half.data.test.n - 1797 / 2) <= 1
    assert abs(quarter.data.test.n - 1797 / 4) <= 1
    assert sum(p.size for p in half.parts) == half.data.train.n


def test_yaml_settings_read_exponents_as_numbers() -> None:
    assert load_yaml("lr: 1e-3\nreduce: mean") == {"lr": 0.001, "reduce": "mean"}


@pytest.mark.shared_data
@pytest.mark.slow
def test_compare_sgd_and_local_sgd_on_a9a(tmp_path: Path) -> None:
    a9a = SHARED_DATASETS / "a9a"
    if not a9a.is_dir():
        pytest.skip("../shared/datasets not present (a user's clone has no ../shared)")
    base = make_config(
        {
            "data": f"libsvm:{a9a / 'a9a.gz'},{a9a / 'a9a.t.gz'}",
            "workers": 8,
            "partition": "dirichlet:0.5",
            "rounds": 30,
            "eval_every": 5,
        }
    )
    options = {"sgd": {"lr": 0.5}, "local-sgd": {"lr": 0.5, "local_steps": 4}}
    summary = compare(base, ["sgd", "local-sgd"], options, [0], tmp_path, None).summary
    for name in ("compare.png", "compare-round.png", "compare-bytes.png", "summary.csv"):
        assert (tmp_path / name).is_file(), name
    saved = pd.read_csv(tmp_path / "summary.csv")
    assert sorted(saved["algorithm"]) == ["local-sgd", "sgd"]
    assert saved["rounds_to_target"].tolist() == summary["rounds_to_target"].tolist()
    # local SGD does 4x the gradient work per round and must be ahead in loss at equal rounds
    final = saved.set_index("algorithm")["final_train_loss"]
    assert final["local-sgd"] < final["sgd"] < 0.69
