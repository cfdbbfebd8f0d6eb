"""Users' own tables: CSV and Parquet files (and the dispatch of ``npz:`` archives).

A table has a header row of column names. One column holds the labels (``label``, by default
the last column) and every other column is a numeric feature. Labels may be numbers or text
(``yes``/``no``); they become 0..C-1 through :func:`encode_labels`, a test file's with the
training file's codes. As for LIBSVM files, features are used as written (float64, not
scaled), and without a test file a seeded random ``test_fraction`` of the rows is the test
set (the split of :func:`load_libsvm_pair`).

Each problem raises one :class:`DataError` naming the file, the place (the file line of a CSV
row, counting the header as line 1; the row of a Parquet file), the column and what was
expected.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from pandas.api.types import is_numeric_dtype, is_string_dtype

from lowcomm.core.errors import DataError
from lowcomm.core.text import utf8_text
from lowcomm.core.validate import one_of
from lowcomm.data.dataset import Dataset, TrainTest
from lowcomm.data.loaders import (
    encode_labels,
    file_stem,
    is_number,
    read_bytes,
    split_train_test,
)
from lowcomm.data.npz import check_known, label_text, load_npz, quoted_names
from lowcomm.data.spec import TABLE_KINDS, DataSpec

_NAN_TEXT = ("nan", "+nan", "-nan")  # what float() reads as NaN, lower-cased


def load_tabular(spec: DataSpec, seed: int, test_fraction: float = 0.25) -> TrainTest:
    """Load a parsed ``csv:``, ``parquet:`` or ``npz:`` data string.

    ``seed`` and ``test_fraction`` split a file that comes without a test file or test arrays.
    """
    if spec.kind == "npz":
        return load_npz(spec.path, test_fraction, seed)
    return load_table_pair(spec.path, spec.test_path, spec.label, spec.kind, test_fraction, seed)


# --- CSV and Parquet ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Table:
    """The cells of one table file, with the file line of each row and of the header (CSV).

    The lines are None for a Parquet file, whose rows are counted from 1 instead.
    """

    path: Path
    frame: pd.DataFrame
    lines: list[int] | None
    header_line: int | None


def load_table_pair(
    train_path: str | Path,
    test_path: str | Path | None = None,
    label: str | None = None,
    kind: str = "csv",
    test_fraction: float = 0.25,
    seed: int = 0,
) -> TrainTest:
    """Read a CSV or Parquet training file and its test file, or split the training file.

    Args:
        train_path: the training file (a CSV file may be ``.gz`` or ``.bz2``).
        test_path: a file with the same columns, in any order; None: a random
            ``test_fraction`` of the training rows (``Streams(seed).numpy("split")``).
        label: the label column; None: the last column of the training file.
        kind: ``csv`` or ``parquet``.
        test_fraction: the held-out share without a test file.
        seed: the seed of that split.

    Raises:
        DataError: a file is missing, empty or malformed, or a cell is not what its column needs.
        InvalidConfigError: ``kind`` is unknown or ``test_fraction`` is not in (0, 1).
    """
    one_of("load_table_pair", "kind", kind, TABLE_KINDS)
    table = _read_table(Path(train_path), kind)
    label = _label_column(table, label)
    features = [name for name in table.frame.columns if name != label]
    if not features:
        raise _header_error(table, f"found only the label column {label!r}; expected features too")
    train, classes = _table_dataset(table, label, features, None)
    if test_path is None:
        return split_train_test(train, test_fraction, seed)
    test_table = _read_table(Path(test_path), kind)
    if sorted(test_table.frame.columns) != sorted(table.frame.columns):
        found, expected = quoted_names(test_table.frame.columns), quoted_names(table.frame.columns)
        problem = f"found columns {found}; expected the columns of {table.path}: {expected}"
        raise _header_error(test_table, problem)
    test, _ = _table_dataset(test_table, label, features, classes)
    return TrainTest(train, test)


def _read_table(path: Path, kind: str) -> _Table:
    """One CSV or Parquet file, with distinct, non-empty column names."""
    table = _read_csv(path) if kind == "csv" else _read_parquet(path)
    names = list(table.frame.columns)
    for position, name in enumerate(names):
        if not name:
            problem = f"column {position + 1} has no name; expected a name for every column"
            raise _header_error(table, problem)
        if name in names[:position]:
            raise _header_error(table, f"found column {name!r} twice; expected distinct names")
    return table


def _read_csv(path: Path) -> _Table:
    """The header and rows of a CSV file; every row has one field per header column."""
    records = _records(path)
    first = next(records, None)
    if first is None:
        raise DataError(path, "found an empty file; expected a header row of column names")
    header_line, header = first
    rows, lines = [], []
    for line, row in records:
        if len(row) != len(header):
            problem = f"found {len(row)} fields; expected {len(header)}, one per header column"
            raise DataError(path, problem, line=line)
        rows.append(row)
        lines.append(line)
    if not rows:
        raise DataError(path, "found no rows after the header; expected at least one")
    columns = [name.strip() for name in header]
    return _Table(path, pd.DataFrame(rows, columns=columns, dtype=object), lines, header_line)


def _records(path: Path) -> Iterator[tuple[int, list[str]]]:
    """The records of a CSV file that are not blank lines, each with the file line it starts on."""
    reader = csv.reader(io.StringIO(_text(path), newline=""))
    start = 1
    try:
        for row in reader:
            if len(row) > 1 or any(cell.strip() for cell in row):
                yield start, row
            start = reader.line_num + 1
    except csv.Error as err:
        raise DataError(path, f"expected CSV ({err})", line=reader.line_num) from err


def _text(path: Path) -> str:
    """The (decompressed) UTF-8 text of ``path``, without a byte-order mark."""
    return utf8_text(path, read_bytes(path))


def _read_parquet(path: Path) -> _Table:
    """The columns of a Parquet file, named by their text."""
    if not path.is_file():
        raise DataError(path, "file not found")
    try:
        frame = pd.read_parquet(path)
    except (OSError, ValueError) as err:  # pyarrow's ArrowInvalid is a ValueError
        raise DataError(path, f"expected a Parquet file ({err})") from err
    if len(frame) == 0:
        raise DataError(path, "found no rows; expected at least one")
    frame.columns = pd.Index([str(name) for name in frame.columns])
    return _Table(path, frame.reset_index(drop=True), None, None)


def _label_column(table: _Table, label: str | None) -> str:
    """``label``, which must be a column, or the last column when None."""
    names = list(table.frame.columns)
    if label is None:
        return str(names[-1])
    if label not in names:
        expected = f"expected one of the columns {quoted_names(names)}"
        raise _header_error(table, f"found no label column {label!r}; {expected}")
    return label


def _table_dataset(
    table: _Table, label: str, features: list[str], classes: np.ndarray | None
) -> tuple[Dataset, np.ndarray]:
    """The examples of ``table`` and its classes (``classes``: the training file's)."""
    X = _features(table, features)
    y, classes = encode_labels(_table_labels(table, label, classes), classes, source=table.path)
    return Dataset(file_stem(table.path), X, y, int(classes.size)), classes


def _features(table: _Table, names: list[str]) -> np.ndarray:
    """The ``names`` columns as finite float64 numbers; the first other cell is an error."""
    X = np.column_stack([_numbers(table, name) for name in names])
    bad = np.argwhere(~np.isfinite(X))
    if bad.size:
        row, column = (int(i) for i in bad[0])
        name = names[column]
        raise _cell_error(table, row, name, _cell_problem(table.frame[name].iloc[row]))
    return X


def _numbers(table: _Table, name: str) -> np.ndarray:
    """One column as float64, NaN where a cell is not a number."""
    column = table.frame[name]
    if not (is_numeric_dtype(column) or is_string_dtype(column)):
        raise _header_error(table, f"column {name!r} holds {column.dtype} values; expected numbers")
    return pd.to_numeric(column, errors="coerce").to_numpy(np.float64, na_value=np.nan)


def _cell_problem(cell: object) -> str:
    """What is wrong with a feature cell that is not a finite number."""
    if not isinstance(cell, str):  # a typed Parquet cell
        found = "null or NaN" if pd.isna(cell) else str(cell)
        return f"holds {found}; expected a finite number"
    if not cell.strip():
        return "is empty; expected a number"
    return f"holds {cell!r}; expected {'a finite number' if is_number(cell) else 'a number'}"


def _table_labels(table: _Table, label: str, classes: np.ndarray | None) -> np.ndarray:
    """The raw labels: numbers when every training label is one, else their stripped text.

    Labels name classes: NaN, an infinity or (among numbers) a fraction is an error.
    """
    column = table.frame[label]
    text = column.astype(str).str.strip()
    empty = (column.isna() | (text == "")).to_numpy()
    if empty.any():
        raise _cell_error(table, int(np.argmax(empty)), label, "is empty; expected a label")
    numbers = pd.to_numeric(column, errors="coerce").to_numpy(np.float64, na_value=np.nan)
    numeric = bool(np.isfinite(numbers).all()) if classes is None else classes.dtype.kind == "f"
    raw = numbers if numeric else text.to_numpy(dtype=str)

    def unseen(row: int, expected: str) -> DataError:
        return _cell_error(table, row, label, f"holds {label_text(column.iloc[row])}; {expected}")

    bad = _not_class_labels(numbers, text, numeric)
    if bad.any():
        raise unseen(int(np.argmax(bad)), "expected a class label (an integer or a name)")
    check_known(raw, classes, unseen)
    return raw


def _not_class_labels(numbers: np.ndarray, text: pd.Series, numeric: bool) -> np.ndarray:
    """Which labels name no class: NaN or infinite, or (``numeric``) a fraction."""
    bad = np.isinf(numbers) | text.str.lower().isin(_NAN_TEXT).to_numpy()
    if numeric:
        bad |= np.isfinite(numbers) & (numbers != np.round(numbers))
    return np.asarray(bad)


def _cell_error(table: _Table, row: int, column: str, problem: str) -> DataError:
    """The error for the cell at ``row`` (0-based among the rows) of ``column``."""
    if table.lines is None:
        return DataError(table.path, f"row {row + 1}, column {column!r} {problem}")
    return DataError(table.path, f"column {column!r} {problem}", line=table.lines[row])


def _header_error(table: _Table, problem: str) -> DataError:
    """The error for the header (the column names) of ``table``."""
    return DataError(table.path, problem, line=table.header_line)
