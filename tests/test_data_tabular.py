"""Users' own CSV, Parquet and .npz files: parsing, loading, splitting, errors and the CLI."""

import gzip
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from lowcomm.core.errors import DataError, InvalidConfigError
from lowcomm.core.rng import Streams
from lowcomm.data.loaders import load_data
from lowcomm.data.npz import load_npz
from lowcomm.data.spec import DataSpec, parse_data_spec
from lowcomm.data.tabular import load_table_pair

RNG = np.random.default_rng(0)
X = RNG.standard_normal((12, 3))
X_TEST = RNG.standard_normal((4, 3))
Y = np.array([0, 1, 2] * 4)
Y_TEST = np.array([2, 0, 1, 1])


def _exact(message: str) -> str:
    return f"^{re.escape(message)}$"


def _csv(path: Path, X: np.ndarray, y: np.ndarray, names: str = "a,b,c,y") -> Path:
    rows = [
        ",".join(map(repr, map(float, row))) + f",{label}" for row, label in zip(X, y, strict=True)
    ]
    path.write_text("\n".join([names, *rows]) + "\n")
    return path


def _frame(X: np.ndarray, y: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame({"a": X[:, 0], "b": X[:, 1], "c": X[:, 2], "y": y})


def _raises(path: Path, problem: str, line: int | None = None) -> Any:
    where = f"{path}, line {line}" if line is not None else f"{path}"
    return pytest.raises(DataError, match=_exact(f"{where}: {problem}"))


# --- parsing -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("csv:data.csv", DataSpec("csv", path="data.csv")),
        ("csv:tr.csv,te.csv", DataSpec("csv", path="tr.csv", test_path="te.csv")),
        ("csv:d.csv,label=age", DataSpec("csv", path="d.csv", label="age")),
        (
            "csv:tr.csv,te.csv,label=y",
            DataSpec("csv", path="tr.csv", test_path="te.csv", label="y"),
        ),
        ("csv:C:/d/x:y.csv", DataSpec("csv", path="C:/d/x:y.csv")),
        ("parquet:d.parquet", DataSpec("parquet", path="d.parquet")),
        (
            "parquet:a.parquet,b.parquet,label=class",
            DataSpec("parquet", path="a.parquet", test_path="b.parquet", label="class"),
        ),
        ("npz:data/arrays.npz", DataSpec("npz", path="data/arrays.npz")),
    ],
)
def test_parse_file_specs(text: str, expected: DataSpec) -> None:
    assert parse_data_spec(text) == expected


@pytest.mark.parametrize(
    "text",
    ["csv", "csv:", "csv:a,b,c", "csv:a,,", "csv:a,label=", "csv:label=y", "parquet:", "npz"],
)
def test_malformed_file_specs(text: str) -> None:
    with pytest.raises(InvalidConfigError, match="csv:TRAIN\\[,TEST\\]\\[,label=NAME\\]") as info:
        parse_data_spec(text)
    assert info.value.name == "data"
    assert str(info.value).endswith(f"Got {text!r}.")


# --- CSV and Parquet: values -------------------------------------------------------------------


def test_csv_pair_equals_the_arrays_written(tmp_path: Path) -> None:
    train = _csv(tmp_path / "train.csv", X, Y)
    test = _csv(tmp_path / "test.csv", X_TEST, Y_TEST)
    data = load_data(parse_data_spec(f"csv:{train},{test}"), seed=0)
    assert data.train.X.dtype == np.float64
    np.testing.assert_array_equal(data.train.X, X)
    np.testing.assert_array_equal(data.train.y, Y)
    np.testing.assert_array_equal(data.test.X, X_TEST)
    np.testing.assert_array_equal(data.test.y, Y_TEST)
    assert data.train.y.dtype == np.int64
    assert (data.train.n_classes, data.test.n_classes) == (3, 3)
    assert (data.train.name, data.test.name) == ("train.csv", "test.csv")


def test_parquet_pair_equals_the_arrays_written(tmp_path: Path) -> None:
    _frame(X, Y).to_parquet(tmp_path / "train.parquet")
    _frame(X_TEST, Y_TEST).to_parquet(tmp_path / "test.parquet")
    spec = f"parquet:{tmp_path / 'train.parquet'},{tmp_path / 'test.parquet'}"
    data = load_data(parse_data_spec(spec), seed=0)
    np.testing.assert_array_equal(data.train.X, X)
    np.testing.assert_array_equal(data.train.y, Y)
    np.testing.assert_array_equal(data.test.X, X_TEST)
    np.testing.assert_array_equal(data.test.y, Y_TEST)


def test_label_column_by_name_and_text_labels(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text("age,smoker,income\n30,yes,1.5\n40,no,2.5\n50,yes,3.5\n")
    data = load_table_pair(path, path, label="smoker")
    np.testing.assert_array_equal(data.train.X, [[30, 1.5], [40, 2.5], [50, 3.5]])
    np.testing.assert_array_equal(data.train.y, [1, 0, 1])  # no < yes
    assert data.train.n_classes == 2


def test_test_file_columns_in_another_order_and_the_training_codes(tmp_path: Path) -> None:
    train = tmp_path / "train.csv"
    train.write_text("a,b,y\n1,2,3\n4,5,7\n6,7,5\n")
    test = tmp_path / "test.csv"
    test.write_text("y,b,a\n7,20,10\n7.0,50,40\n")
    data = load_table_pair(train, test)
    np.testing.assert_array_equal(data.test.X, [[10, 20], [40, 50]])
    np.testing.assert_array_equal(data.test.y, [2, 2])  # 7 ranks third among 3, 5, 7
    assert data.test.n_classes == 3


def test_csv_blank_lines_whitespace_byte_order_mark_and_gzip(tmp_path: Path) -> None:
    content = "\ufeff a , b ,y\n\n1, 2 , yes\n  \n3,4,no \n"
    path = tmp_path / "d.csv.gz"
    path.write_bytes(gzip.compress(content.encode()))
    data = load_table_pair(path, path)
    np.testing.assert_array_equal(data.train.X, [[1, 2], [3, 4]])
    np.testing.assert_array_equal(data.train.y, [1, 0])
    assert data.train.name == "d.csv"


@pytest.mark.parametrize("kind", ["csv", "parquet"])
def test_held_out_split_is_a_seeded_partition_of_the_rows(tmp_path: Path, kind: str) -> None:
    ids = np.arange(40.0)
    features = np.column_stack([ids, ids, ids])
    path = tmp_path / f"d.{kind}"
    if kind == "csv":
        _csv(path, features, ids % 2)
    else:
        _frame(features, ids % 2).to_parquet(path)
    spec = parse_data_spec(f"{kind}:{path}")
    first, again, other = (load_data(spec, seed) for seed in (3, 3, 4))
    train_ids, test_ids = first.train.X[:, 0], first.test.X[:, 0]
    assert test_ids.size == 10  # round(40 * 0.25)
    np.testing.assert_array_equal(np.sort(np.concatenate([train_ids, test_ids])), ids)
    np.testing.assert_array_equal(test_ids, Streams(3).numpy("split").permutation(40)[:10])
    np.testing.assert_array_equal(first.train.y, train_ids % 2)
    np.testing.assert_array_equal(again.test.X, first.test.X)
    assert not np.array_equal(other.test.X, first.test.X)
    assert load_data(spec, 3, test_fraction=0.5).test.n == 20


# --- CSV errors --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "line", "problem"),
    [
        ("a,b,y\n1,2,0\n3,abc,1\n", 3, "column 'b' holds 'abc'; expected a number"),
        ("a,b,y\n1,2,0\n3,nan,1\n", 3, "column 'b' holds 'nan'; expected a finite number"),
        ("a,b,y\n1,-inf,0\n", 2, "column 'b' holds '-inf'; expected a finite number"),
        ("a,b,y\n1,,0\n", 2, "column 'b' is empty; expected a number"),
        ("a,b,y\n1,2,0\nx,y,1\n", 3, "column 'a' holds 'x'; expected a number"),
        ("a,b,y\n1,x,0\nz,2,1\n", 2, "column 'b' holds 'x'; expected a number"),
        ("a,b,y\n1,2,0\n3,4\n", 3, "found 2 fields; expected 3, one per header column"),
        ("a,b,y\n1,2,0,9\n", 2, "found 4 fields; expected 3, one per header column"),
        ("a,b,y\n1,2, \n", 2, "column 'y' is empty; expected a label"),
        ("\na,b,y\n\n1,2,0\n\n3,x,1\n", 6, "column 'b' holds 'x'; expected a number"),
        ('a,b,y\n1,2,"y\ne\ns"\n4,x,1\n', 5, "column 'b' holds 'x'; expected a number"),
        ('a,b,y\n1,"2\n3",0\n', 2, "column 'b' holds '2\\n3'; expected a number"),
        ("a,b,y\n1,2,0\n3,\xe9,1\n", 3, "found byte 0xe9; expected UTF-8 text"),
        ("a,a,y\n1,2,0\n", 1, "found column 'a' twice; expected distinct names"),
        ("a,,y\n1,2,0\n", 1, "column 2 has no name; expected a name for every column"),
        ("y\n0\n1\n", 1, "found only the label column 'y'; expected features too"),
        ("a,b,y\n1,2,0\n3," + "9" * 131073 + ",1\n", 3, None),
    ],
)
def test_csv_error_names_line_and_column(
    tmp_path: Path, content: str, line: int, problem: str | None
) -> None:
    path = tmp_path / "data.csv"
    path.write_bytes(content.encode("latin-1"))
    problem = problem or "expected CSV (field larger than field limit (131072))"
    with _raises(path, problem, line) as info:
        load_table_pair(path)
    assert info.value.line == line


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("", "found an empty file; expected a header row of column names"),
        ("\n \n", "found an empty file; expected a header row of column names"),
        ("a,b,y\n\n", "found no rows after the header; expected at least one"),
    ],
)
def test_csv_without_rows(tmp_path: Path, content: str, problem: str) -> None:
    path = tmp_path / "data.csv"
    path.write_text(content)
    with _raises(path, problem):
        load_table_pair(path)


def test_csv_missing_label_column_lists_the_columns(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    path.write_text("age,income,y\n1,2,0\n")
    problem = "found no label column 'target'; expected one of the columns 'age', 'income', 'y'"
    with _raises(path, problem, line=1):
        load_table_pair(path, label="target")


def test_test_label_not_in_training(tmp_path: Path) -> None:
    train = tmp_path / "train.csv"
    train.write_text("a,y\n1,no\n2,yes\n")
    test = tmp_path / "test.csv"
    test.write_text("a,y\n1,yes\n2,maybe\n")
    problem = "column 'y' holds 'maybe'; expected one of the training labels ('no', 'yes')"
    with _raises(test, problem, line=3):
        load_table_pair(train, test)


def test_text_test_label_for_numeric_training_labels(tmp_path: Path) -> None:
    train = _csv(tmp_path / "train.csv", X, Y)
    test = tmp_path / "test.csv"
    test.write_text("a,b,c,y\n1,2,3,1\n1,2,3,one\n")
    problem = "column 'y' holds 'one'; expected one of the training labels (0, 1, 2)"
    with _raises(test, problem, line=3):
        load_table_pair(train, test)


def test_many_training_labels_are_listed_in_part(tmp_path: Path) -> None:
    train = _csv(tmp_path / "train.csv", X, np.arange(12))
    test = _csv(tmp_path / "test.csv", X_TEST, [0, 1, 2, 99])
    expected = "expected one of the training labels (0, 1, 2, 3, 4, 5, 6, 7, 8, 9, ...)"
    with _raises(test, f"column 'y' holds '99'; {expected}", line=5):
        load_table_pair(train, test)


def test_test_file_with_other_columns(tmp_path: Path) -> None:
    train = _csv(tmp_path / "train.csv", X, Y)
    test = _csv(tmp_path / "test.csv", X_TEST, Y_TEST, names="a,b,d,y")
    expected = f"expected the columns of {train}: 'a', 'b', 'c', 'y'"
    problem = f"found columns 'a', 'b', 'd', 'y'; {expected}"
    with _raises(test, problem, line=1):
        load_table_pair(train, test)


def test_missing_table_file(tmp_path: Path) -> None:
    for kind in ("csv", "parquet"):
        path = tmp_path / f"absent.{kind}"
        with _raises(path, "file not found"):
            load_table_pair(path, kind=kind)


def test_unknown_table_kind(tmp_path: Path) -> None:
    with pytest.raises(InvalidConfigError, match="'kind' parameter of load_table_pair"):
        load_table_pair(tmp_path / "d.json", kind="json")


# --- Parquet errors ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("frame", "problem"),
    [
        (
            pd.DataFrame({"a": [1.0, 2.0], "s": ["1", "x"], "y": [0, 1]}),
            "row 2, column 's' holds 'x'; expected a number",
        ),
        (
            pd.DataFrame({"a": [1.0, None, 3.0], "y": [0, 1, 0]}),
            "row 2, column 'a' holds null or NaN; expected a finite number",
        ),
        (
            pd.DataFrame({"a": [1.0, np.inf], "y": [0, 1]}),
            "row 2, column 'a' holds inf; expected a finite number",
        ),
        (
            pd.DataFrame({"a": [1.0, 2.0], "y": ["yes", None]}),
            "row 2, column 'y' is empty; expected a label",
        ),
        (pd.DataFrame({"a": [], "y": []}), "found no rows; expected at least one"),
    ],
)
def test_parquet_error_names_row_and_column(
    tmp_path: Path, frame: pd.DataFrame, problem: str
) -> None:
    path = tmp_path / "data.parquet"
    frame.to_parquet(path)
    with _raises(path, problem):
        load_table_pair(path, kind="parquet")


def test_parquet_column_of_dates(tmp_path: Path) -> None:
    path = tmp_path / "data.parquet"
    pd.DataFrame({"a": pd.to_datetime(["2020-01-01"] * 2), "y": [0, 1]}).to_parquet(path)
    dtype = pd.read_parquet(path)["a"].dtype  # datetime64[ns] or [us], by pandas version
    with _raises(path, f"column 'a' holds {dtype} values; expected numbers"):
        load_table_pair(path, kind="parquet")


def test_parquet_missing_label_and_unseen_test_label(tmp_path: Path) -> None:
    train, test = tmp_path / "train.parquet", tmp_path / "test.parquet"
    pd.DataFrame({"a": [1.0, 2.0], "y": [0, 1]}).to_parquet(train)
    pd.DataFrame({"a": [1.0, 2.0], "y": [1, 5]}).to_parquet(test)
    with _raises(train, "found no label column 'q'; expected one of the columns 'a', 'y'"):
        load_table_pair(train, kind="parquet", label="q")
    problem = "row 2, column 'y' holds 5; expected one of the training labels (0, 1)"
    with _raises(test, problem):
        load_table_pair(train, test, kind="parquet")


def test_not_a_parquet_file(tmp_path: Path) -> None:
    path = _csv(tmp_path / "data.parquet", X, Y)
    with pytest.raises(DataError, match=f"^{re.escape(str(path))}: expected a Parquet file \\("):
        load_table_pair(path, kind="parquet")


# --- npz ---------------------------------------------------------------------------------------


def test_npz_with_test_arrays_equals_the_arrays_written(tmp_path: Path) -> None:
    images = RNG.random((6, 2, 3, 3)).astype(np.float32)
    test_images = RNG.random((2, 2, 3, 3))
    path = tmp_path / "imgs.npz"
    np.savez(path, X=images, y=np.array(["cat", "dog"] * 3), X_test=test_images, y_test=["dog"] * 2)
    data = load_data(parse_data_spec(f"npz:{path}"), seed=0)
    assert data.train.X.dtype == np.float64
    np.testing.assert_array_equal(data.train.X, images)
    assert data.train.feature_shape == (2, 3, 3)
    np.testing.assert_array_equal(data.train.y, [0, 1] * 3)
    np.testing.assert_array_equal(data.test.X, test_images)
    np.testing.assert_array_equal(data.test.y, [1, 1])
    assert (data.train.n_classes, data.train.name) == (2, "imgs.npz")


def test_npz_without_test_arrays_is_split_by_seed(tmp_path: Path) -> None:
    ids = np.arange(20.0)
    path = tmp_path / "d.npz"
    np.savez(path, X=ids[:, None], y=ids % 2)
    data = load_npz(path, test_fraction=0.25, seed=5)
    order = Streams(5).numpy("split").permutation(20)
    np.testing.assert_array_equal(data.test.X[:, 0], order[:5])
    np.testing.assert_array_equal(data.train.X[:, 0], order[5:])
    np.testing.assert_array_equal(data.train.y, order[5:] % 2)


_XY = {"X": np.zeros((4, 2)), "y": np.array([0, 1, 0, 1])}
_NAN = np.zeros((4, 2))
_NAN[2, 1] = np.nan
_EXAMPLES = "expected [examples, features...] with at least one example"


@pytest.mark.parametrize(
    ("arrays", "problem"),
    [
        ({"X": np.zeros((4, 2))}, "found arrays 'X'; expected arrays 'X' and 'y'"),
        ({"features": np.zeros(2)}, "found arrays 'features'; expected arrays 'X' and 'y'"),
        (
            {**_XY, "X_test": np.zeros((1, 2))},
            "found 'X_test' alone; expected 'X_test' and 'y_test' together",
        ),
        (
            {"X": np.zeros((4, 2)), "y": np.zeros(3)},
            "array 'y' has shape (3,); expected (4,), one label per example",
        ),
        (
            {"X": np.zeros((4, 2)), "y": np.zeros((4, 2))},
            "array 'y' has shape (4, 2); expected (4,), one label per example",
        ),
        (
            {**_XY, "X_test": np.zeros((1, 3)), "y_test": np.zeros(1)},
            "array 'X_test' has examples of shape (3,); expected (2,) as in 'X'",
        ),
        (
            {**_XY, "X_test": np.zeros((2, 2)), "y_test": np.zeros(1)},
            "array 'y_test' has shape (1,); expected (2,), one label per example",
        ),
        ({"X": _NAN, "y": _XY["y"]}, "X[2, 1] holds nan; expected finite numbers"),
        ({"X": np.zeros((2, 2)), "y": [0.0, np.inf]}, "y[1] holds inf; expected finite numbers"),
        (
            {"X": np.zeros((3, 2)), "y": [1.0, 0.0, 0.5]},
            "y[2] holds 0.5; expected an integer class label",
        ),
        ({"X": np.array([["a"]]), "y": [0]}, "array 'X' holds <U1 values; expected numbers"),
        (
            {"X": np.zeros(4), "y": _XY["y"]},
            f"array 'X' has shape (4,); {_EXAMPLES}",
        ),
        (
            {"X": np.zeros((0, 2)), "y": np.zeros(0)},
            f"array 'X' has shape (0, 2); {_EXAMPLES}",
        ),
        (
            {**_XY, "X_test": np.zeros((2, 2)), "y_test": [1, 7]},
            "y_test[1] holds 7; expected one of the training labels (0, 1)",
        ),
        (
            {"X": np.zeros((2, 1)), "y": ["n", "y"], "X_test": np.zeros((1, 1)), "y_test": ["m"]},
            "y_test[0] holds 'm'; expected one of the training labels ('n', 'y')",
        ),
        (
            {"X": np.zeros((2, 2)), "y": np.array([1, None], dtype=object)},
            "expected a readable NumPy .npz archive "
            "(Object arrays cannot be loaded when allow_pickle=False)",
        ),
    ],
)
def test_npz_errors(tmp_path: Path, arrays: dict[str, object], problem: str) -> None:
    path = tmp_path / "data.npz"
    np.savez(path, **arrays)
    with _raises(path, problem):
        load_npz(path)


def test_npz_that_is_not_an_archive(tmp_path: Path) -> None:
    single = tmp_path / "single.npy"
    np.save(single, np.zeros(3))
    with _raises(single, "expected a NumPy .npz archive (a zip file written by np.savez)"):
        load_npz(single)
    with _raises(tmp_path / "absent.npz", "file not found"):
        load_npz(tmp_path / "absent.npz")


# --- the command line --------------------------------------------------------------------------


def _run_on(data: str, out: Path) -> subprocess.CompletedProcess[str]:
    args = ["run", "--data", data, "--workers", "2", "--rounds", "20", "--out", str(out)]
    argv = [sys.executable, "-m", "lowcomm", *args]
    return subprocess.run(argv, capture_output=True, text=True, check=False, timeout=300)


@pytest.mark.slow
def test_cli_trains_on_a_csv_file(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    features = rng.standard_normal((200, 3))
    labels = np.where(features @ [2.0, -1.0, 0.5] > 0, "yes", "no")  # linearly separable
    path = _csv(tmp_path / "sep.csv", features, labels, names="x1,x2,x3,label")
    out = tmp_path / "run"
    done = _run_on(f"csv:{path}", out)
    assert done.returncode == 0, done.stderr
    history = pd.read_csv(out / "history.csv")
    assert history["train_loss"].iloc[0] == pytest.approx(np.log(2), abs=1e-4)
    assert history["train_loss"].iloc[-1] < 0.55
    assert history["test_metric"].iloc[-1] >= 0.95


@pytest.mark.parametrize(
    ("text", "data", "problem"),
    [
        ("a,b,y\n1,2,0\n3,abc,1\n", "", "line 3: column 'b' holds 'abc'; expected a number"),
        ("a,b,y\n1,2,0\n3,4\n", "", "line 3: found 2 fields; expected 3, one per header column"),
        ("a,b,y\n1,2,0\n3,4,1\n", ",label=kind", "no label column 'kind'"),
    ],
)
def test_cli_bad_csv_is_one_error_line_and_writes_nothing(
    tmp_path: Path, text: str, data: str, problem: str
) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(text)
    out = tmp_path / "run"
    done = _run_on(f"csv:{path}{data}", out)
    assert done.returncode == 2
    assert done.stderr.startswith(f"error: {path}")
    assert problem in done.stderr and done.stderr.count("\n") == 1
    assert not out.exists()
