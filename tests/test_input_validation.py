"""Input that means what it says: labels, values, settings and models that cannot be honoured.

Each case is one precise error (a ``DataError`` naming the file and line, or an
``InvalidConfigError`` naming the setting; on the command line one ``error:`` line, exit 2), and
expensive second-order solves switch to CG above a stated dimension.
"""

import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from lowcomm.algorithms.local_newton import LocalNewtonConfig
from lowcomm.algorithms.newton import EXACT_MAX_DIM, NewtonSolver, conjugate_gradient
from lowcomm.cli import app
from lowcomm.core.errors import DataError, InvalidConfigError
from lowcomm.data.dataset import Dataset, TrainTest
from lowcomm.data.loaders import load_libsvm, load_libsvm_pair
from lowcomm.data.tabular import load_table_pair
from lowcomm.experiments import models
from lowcomm.experiments.config import make_config
from lowcomm.experiments.models import image_shape, lenet_input


def _exact(message: str) -> str:
    return f"^{re.escape(message)}$"


def _one_error_line(args: list[str]) -> str:
    """The single stderr line of a CLI call that must fail with exit code 2."""
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


# --- labels and feature values in files ---------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "line", "problem"),
    [
        (b"1 1:1\n\n0.5 2:1\n0 1:2\n", 3, "expected an integer class label, found '0.5'"),
        (b"# head\n1 1:1\nnan 2:1 # x\n", 3, "expected an integer class label, found 'nan'"),
        (b"1 1:1\n-inf 2:1\n", 2, "expected an integer class label, found '-inf'"),
        (b"1 1:1\n0 1:2 2:nan\n", 2, "expected finite feature values, found feature 2 = nan"),
        (b"1 1:1\n\n0 3:-inf\n", 3, "expected finite feature values, found feature 3 = -inf"),
    ],
)
def test_libsvm_labels_and_values_are_checked(
    tmp_path: Path, content: bytes, line: int, problem: str
) -> None:
    path = tmp_path / "bad.svm"
    path.write_bytes(content)
    with pytest.raises(DataError, match=_exact(f"{path}, line {line}: {problem}")):
        load_libsvm(path)


def test_a_libsvm_test_file_is_checked_too(tmp_path: Path) -> None:
    train, test = tmp_path / "a.svm", tmp_path / "a.t"
    train.write_bytes(b"1 1:1\n0 2:1\n")
    test.write_bytes(b"1 1:1\n0 2:inf\n")
    problem = "expected finite feature values, found feature 2 = inf"
    with pytest.raises(DataError, match=_exact(f"{test}, line 2: {problem}")):
        load_libsvm_pair(train, test)


def test_the_command_line_names_the_bad_label(tmp_path: Path) -> None:
    path = tmp_path / "half.svm"
    path.write_bytes(b"1 1:0.5 2:1\n0.5 1:0.1 3:2\n0 2:0.3\n1 1:1 2:1 3:1\n")
    args = ["run", "--data", f"libsvm:{path}", "--rounds", "2", "-q", "--out", str(tmp_path / "o")]
    line = _one_error_line(args)
    assert line == f"error: {path}, line 2: expected an integer class label, found '0.5'"


@pytest.mark.parametrize(
    ("labels", "line", "shown"),
    [
        (["0", "1", "0.5", "1"], 4, "'0.5'"),
        (["0", "NaN", "1", "0"], 3, "'NaN'"),
        (["no", "yes", "nan", "no"], 4, "'nan'"),
        (["no", "inf", "yes", "no"], 3, "'inf'"),
    ],
)
def test_csv_labels_must_name_classes(
    tmp_path: Path, labels: list[str], line: int, shown: str
) -> None:
    path = tmp_path / "t.csv"
    path.write_text("a,y\n" + "".join(f"{i},{label}\n" for i, label in enumerate(labels)))
    problem = f"column 'y' holds {shown}; expected a class label (an integer or a name)"
    with pytest.raises(DataError, match=_exact(f"{path}, line {line}: {problem}")):
        load_table_pair(path, test_fraction=0.5)


def test_parquet_labels_must_be_finite_whole_numbers(tmp_path: Path) -> None:
    path = tmp_path / "t.parquet"
    pd.DataFrame({"a": [1.0, 2.0, 3.0], "y": [0.0, 1.0, np.inf]}).to_parquet(path)
    problem = "row 3, column 'y' holds inf; expected a class label (an integer or a name)"
    with pytest.raises(DataError, match=_exact(f"{path}: {problem}")):
        load_table_pair(path, kind="parquet", test_fraction=0.5)


def test_whole_and_text_labels_still_load(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("a,y\n1,1.0\n2,-1\n3,1\n4,-1\n")
    assert load_table_pair(path, test_fraction=0.5).train.n_classes == 2
    path.write_text("a,y\n1,x0.5\n2,no\n3,x0.5\n4,no\n")
    assert load_table_pair(path, test_fraction=0.5).train.n_classes == 2


# --- settings ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "allowed"),
    [
        ({"rounds": True}, "a number, not true or false"),
        ({"seed": False}, "a number, not true or false"),
        ({"hidden": [8, True]}, "a number, not true or false"),
        ({"l2": float("inf")}, "a finite number"),
        ({"latency": float("inf")}, "a finite number"),
        ({"speeds": [1.0, float("inf")]}, "finite numbers > 0"),
        ({"hidden": [0]}, "layer widths >= 1"),
        ({"rounds": "abc"}, "an integer"),
        ({"rounds": 2.5}, "an integer"),
        ({"data": 3}, "text"),
        ({"intercept": "maybe"}, "true or false"),
        ({"options": 3}, "a table of settings"),
    ],
)
def test_settings_are_refused_in_plain_words(values: dict[str, Any], allowed: str) -> None:
    ((name, got),) = values.items()
    message = f"The '{name}' parameter of the run config must be {allowed}. Got {got!r}."
    with pytest.raises(InvalidConfigError, match=_exact(message)):
        make_config(values)


def test_numbers_written_as_text_and_infinite_bandwidth_still_count() -> None:
    config = make_config({"rounds": "10", "l2": "0.5", "bandwidth": float("inf")})
    assert (config.rounds, config.l2, config.bandwidth) == (10, 0.5, float("inf"))
    assert make_config({"intercept": True, "options": {"adaptive": True}}).intercept is True


def test_a_toml_bool_for_rounds_is_one_error_line(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('rounds = true\ndata = "digits"\n')
    line = _one_error_line(["run", str(path), "-q", "--out", str(tmp_path / "o")])
    expected = "must be a number, not true or false. Got True."
    assert line == f"error: The 'rounds' parameter of the run config {expected}"


def test_a_config_file_that_is_not_utf8_is_one_error_line(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_bytes(b"data: digits\n# caf\xe9\n")
    line = _one_error_line(["run", str(path), "-q", "--out", str(tmp_path / "o")])
    assert line == f"error: {path}, line 2: found byte 0xe9; expected UTF-8 text"


def test_hidden_zero_for_an_mlp_is_one_error_line(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("model: mlp\nhidden: [0]\n")
    line = _one_error_line(["run", str(path), "-q", "--out", str(tmp_path / "o")])
    assert line.endswith("'hidden' parameter of the run config must be layer widths >= 1. Got [0].")


def test_an_lstm_needs_a_width(tmp_path: Path) -> None:
    text = tmp_path / "t.txt"
    text.write_text("the cat sat on the mat and the dog sat on the log\n" * 20)
    args = ["run", "--data", f"text:{text},streams=4,bptt=5", "--model", "lstm-lm", "--workers"]
    config = tmp_path / "c.yaml"
    config.write_text("hidden: []\n")
    line = _one_error_line([*args, "2", str(config), "-q", "--out", str(tmp_path / "o")])
    allowed = "at least one width for lstm-lm (hidden[0] is also its embedding width). Got []."
    assert line == f"error: The 'hidden' parameter of the run config must be {allowed}"


# --- models that cannot fit the data or the memory ----------------------------------------------


def _data(X: np.ndarray, name: str = "set") -> TrainTest:
    y = np.arange(X.shape[0]) % 2
    return TrainTest(Dataset(name, X, y, 2), Dataset(name, X, y, 2))


@pytest.mark.parametrize(
    ("shape", "expected"), [((64,), (1, 8)), ((28, 28), (1, 28)), ((3, 8, 8), (3, 8))]
)
def test_square_images_are_lenet_input(shape: tuple[int, ...], expected: tuple[int, int]) -> None:
    data = _data(np.zeros((2, *shape)))
    assert image_shape(data.train) == expected
    assert lenet_input(data).test.feature_shape == (expected[0], expected[1], expected[1])


@pytest.mark.parametrize(("shape", "found"), [((13,), "13"), ((9,), "9"), ((3, 4), "3x4")])
def test_lenet_refuses_data_that_are_not_square_images(shape: tuple[int, ...], found: str) -> None:
    allowed = (
        f"a model for non-image data such as mlp or softmax (wine: examples of shape {found}, "
        "not square images; lenet needs S x S features or C x S x S, S >= 4)"
    )
    message = f"The 'model' parameter of the run config must be {allowed}. Got 'lenet'."
    with pytest.raises(InvalidConfigError, match=_exact(message)):
        lenet_input(_data(np.zeros((2, *shape)), "wine"))


def test_the_command_line_refuses_lenet_on_tabular_data(tmp_path: Path) -> None:
    args = ["run", "--model", "lenet", "--data", "wine", "-q", "--out", str(tmp_path / "o")]
    line = _one_error_line(args)
    assert line.startswith("error: The 'model' parameter of the run config must be a model for")
    assert "(wine: examples of shape 13, not square images;" in line
    assert not (tmp_path / "o").exists()


def test_a_model_larger_than_the_memory_is_refused_before_allocation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "wide.svm"
    path.write_bytes(b"1 1:0.5\n0 2:1\n1 1:1\n0 3:1\n" * 2 + b"1 1:2\n0 1000000000:1\n")
    monkeypatch.setattr(models, "device_memory", lambda device: 16 * 2**30)
    out = tmp_path / "o"
    args = ["run", "--data", f"libsvm:{path}", "--workers", "2", "-q", "--out", str(out)]
    line = _one_error_line(args)
    allowed = (
        "data whose model fits in memory: the model has 1,000,000,000 parameters, so the 2 "
        "workers' copies take 7.5 GiB, over 1/8 of the 16.0 GiB memory (check the feature "
        "indices of the data, or use fewer --workers)"
    )
    assert line == f"error: The 'data' parameter of the run config must be {allowed}. " + (
        f"Got 'libsvm:{path}'."
    )
    assert not (out / "run.json").exists()


# --- expensive second-order solves ---------------------------------------------------------------


def test_auto_solves_exactly_up_to_the_line_and_by_cg_above() -> None:
    assert LocalNewtonConfig().solver == "auto" and EXACT_MAX_DIM == 1000
    auto = NewtonSolver("auto")
    assert (auto.resolved(68), auto.resolved(300), auto.resolved(1000)) == ("exact",) * 3
    assert auto.resolved(1001) == "cg" and NewtonSolver("exact").resolved(4810) == "exact"
    assert auto.note("local-newton", 1000) is None and NewtonSolver("cg").note("x", 9999) is None


def _local_newton(
    tmp_path: Path, d: int, solver: str | None, algorithm: str = "local-newton"
) -> tuple[pd.DataFrame, str]:
    """One round (one local step) of ``algorithm`` on d logistic features over 2 workers."""
    out = tmp_path / f"{d}-{solver}-{algorithm}"
    args = ["run", "--algorithm", algorithm, "--data", f"synthetic-logistic:200,{d}"]
    args += ["--workers", "2", "--rounds", "1", "-q", "--out", str(out)]
    if algorithm == "local-newton":
        args += ["--set", "local_steps=1"]
    if solver is not None:
        args += ["--set", f"solver={solver}"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return pd.read_csv(out / "history.csv"), result.stderr


def test_local_newton_switches_to_cg_above_the_line_with_a_note(tmp_path: Path) -> None:
    exact, quiet = _local_newton(tmp_path, 1000, None)
    assert exact["hvps"].iloc[-1] == 2 * 1000 and quiet == ""  # the d x d Hessian: d HVPs each
    cg, note = _local_newton(tmp_path, 1001, None)
    assert 0 < cg["hvps"].iloc[-1] <= 2 * 50
    assert note == (
        "note: local-newton solves its Newton systems by CG (at most 50 Hessian-vector "
        "products, tol 1e-06): d = 1001 is over 1000, where forming an exact 1001 x 1001 "
        "Hessian per worker and step costs too much (solver=exact insists)\n"
    )
    assert cg["train_loss"].iloc[-1] < cg["train_loss"].iloc[0]


def test_an_exact_solve_asked_above_the_line_is_honoured_with_its_cost(tmp_path: Path) -> None:
    history, note = _local_newton(tmp_path, 1001, "exact")
    assert history["hvps"].iloc[-1] == 2 * 1001
    assert note == (
        "note: local-newton forms an exact 1001 x 1001 Hessian per worker and step as asked "
        "(solver=exact; solver=cg uses Hessian-vector products instead)\n"
    )


def test_giant_asked_for_an_exact_solve_above_the_line_says_what_it_costs(
    tmp_path: Path,
) -> None:
    _, note = _local_newton(tmp_path, 1001, "exact", "giant")
    assert note == (
        "note: giant forms an exact 1001 x 1001 Hessian per worker and step as asked "
        "(solver=exact; solver=cg uses Hessian-vector products instead)\n"
    )
    assert _local_newton(tmp_path, 1001, None, "giant")[1] == ""  # its default: CG, no note


def test_cg_stops_at_negative_curvature_with_a_descent_direction() -> None:
    diagonals = torch.tensor([[2.0, 1.0, -1.0], [-1.0, 1.0, 1.0]], dtype=torch.float64)
    A = torch.diag_embed(diagonals)  # indefinite: CG's second direction, or its first, is flat
    b = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]], dtype=torch.float64)
    x, iterations = conjugate_gradient(lambda v, _: (A @ v[:, :, None])[:, :, 0], b, 1e-12, 10)
    assert iterations.tolist() == [1, 0]
    assert x.tolist() == [[1.5, 1.5, 1.5], [1.0, 0.0, 0.0]]  # a CG iterate; b itself
