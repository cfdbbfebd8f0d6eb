"""Users' own arrays: NumPy ``.npz`` archives, and the label checks shared with tables.

An archive holds ``X`` [n, ...] (numbers, any number of dimensions: rows of features, images)
and ``y`` [n] (numbers or text), optionally ``X_test`` and ``y_test``. Labels become 0..C-1
through :func:`encode_labels`, the test labels with the training codes. As for LIBSVM files,
features are used as written (float64, not scaled), and without ``X_test`` a seeded random
``test_fraction`` of the examples is the test set. Each problem raises one :class:`DataError`
naming the file, the array, the index where there is one, and what was expected.
"""

from __future__ import annotations

import zipfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from lowcomm.core.errors import DataError
from lowcomm.data.dataset import Dataset, TrainTest
from lowcomm.data.loaders import (
    encode_labels,
    file_stem,
    first_non_integer,
    number_text,
    split_train_test,
)

_SHOWN_LABELS = 10  # the training labels listed when a test label is not among them


# --- labels and names, shared with tables ------------------------------------------------------


def check_known(
    raw: np.ndarray, classes: np.ndarray | None, error: Callable[[int, str], DataError]
) -> None:
    """Raise ``error(position, expected)`` for the first label not among ``classes`` (if any)."""
    if classes is None:
        return
    unseen = ~np.isin(raw, classes)
    if unseen.any():
        shown = ", ".join(label_text(c) for c in classes[:_SHOWN_LABELS])
        more = ", ..." if classes.size > _SHOWN_LABELS else ""
        expected = f"expected one of the training labels ({shown}{more})"
        raise error(int(np.argmax(unseen)), expected)


def label_text(value: Any) -> str:
    """A label as written: text quoted, numbers plain (``'yes'``, ``1``, ``0.5``)."""
    return repr(str(value)) if isinstance(value, str | bytes) else number_text(float(value))


def quoted_names(names: Iterable[object]) -> str:
    """Column or array names, quoted and comma-separated."""
    return ", ".join(repr(str(name)) for name in names)


# --- NumPy archives ----------------------------------------------------------------------------


def load_npz(path: str | Path, test_fraction: float = 0.25, seed: int = 0) -> TrainTest:
    """Read ``X`` and ``y``, and ``X_test`` and ``y_test`` if present, from an ``.npz`` archive.

    ``X`` holds numbers, one example per row of its first axis (rows of features, images); ``y``
    holds one label (number or text) per example. Without ``X_test``, a random
    ``test_fraction`` of the examples is the test set (``Streams(seed).numpy("split")``).

    Raises:
        DataError: the archive is missing or unreadable, or an array is absent or malformed.
        InvalidConfigError: ``test_fraction`` is not in (0, 1).
    """
    path = Path(path)
    arrays = _read_npz(path)
    X = _examples(path, arrays["X"], "X", None)
    y, classes = encode_labels(_array_labels(path, arrays, "y", X.shape[0], None), source=path)
    train = Dataset(file_stem(path), X, y, int(classes.size))
    if "X_test" not in arrays:
        return split_train_test(train, test_fraction, seed)
    X_test = _examples(path, arrays["X_test"], "X_test", X.shape[1:])
    raw = _array_labels(path, arrays, "y_test", X_test.shape[0], classes)
    y_test, _ = encode_labels(raw, classes, source=path)
    return TrainTest(train, Dataset(train.name, X_test, y_test, train.n_classes))


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    """The arrays ``X``, ``y`` and, when present together, ``X_test``, ``y_test``."""
    if not path.is_file():
        raise DataError(path, "file not found")
    if not zipfile.is_zipfile(path):
        raise DataError(path, "expected a NumPy .npz archive (a zip file written by np.savez)")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except (OSError, ValueError, zipfile.BadZipFile) as err:
        raise DataError(path, f"expected a readable NumPy .npz archive ({err})") from err
    if "X" not in arrays or "y" not in arrays:
        found = quoted_names(arrays) or "none"
        raise DataError(path, f"found arrays {found}; expected arrays 'X' and 'y'")
    if ("X_test" in arrays) != ("y_test" in arrays):
        alone = "X_test" if "X_test" in arrays else "y_test"
        raise DataError(path, f"found {alone!r} alone; expected 'X_test' and 'y_test' together")
    return arrays


def _examples(path: Path, X: np.ndarray, name: str, shape: tuple[int, ...] | None) -> np.ndarray:
    """``X`` as float64 after checking it (``shape``: the shape of a training example)."""
    if X.dtype.kind not in "biuf":
        raise DataError(path, f"array {name!r} holds {X.dtype} values; expected numbers")
    if X.ndim < 2 or X.shape[0] == 0:
        expected = "[examples, features...] with at least one example"
        raise DataError(path, f"array {name!r} has shape {X.shape}; expected {expected}")
    if shape is not None and X.shape[1:] != shape:
        problem = f"array {name!r} has examples of shape {X.shape[1:]}; expected {shape} as in 'X'"
        raise DataError(path, problem)
    _check_finite(path, X, name)
    return X.astype(np.float64)


def _array_labels(
    path: Path, arrays: dict[str, np.ndarray], name: str, n: int, classes: np.ndarray | None
) -> np.ndarray:
    """The labels ``arrays[name]``: ``n`` numbers or texts (among ``classes`` when given)."""
    y = arrays[name]
    if y.shape != (n,):
        problem = f"array {name!r} has shape {y.shape}; expected ({n},), one label per example"
        raise DataError(path, problem)
    if y.dtype.kind not in "biufUS":
        raise DataError(path, f"array {name!r} holds {y.dtype} values; expected numbers or text")

    def unseen(row: int, expected: str) -> DataError:
        return DataError(path, f"{name}[{row}] holds {label_text(y[row])}; {expected}")

    if y.dtype.kind == "f":
        _check_finite(path, y, name)
        fraction = first_non_integer(y)
        if fraction is not None:
            raise unseen(fraction, "expected an integer class label")

    check_known(y, classes, unseen)
    return y


def _check_finite(path: Path, array: np.ndarray, name: str) -> None:
    """Raise for the first NaN or infinite value of ``array``, naming its index."""
    bad = np.argwhere(~np.isfinite(array))
    if bad.size:
        index = tuple(int(i) for i in bad[0])
        where = f"{name}[{', '.join(map(str, index))}]"
        raise DataError(path, f"{where} holds {array[index]}; expected finite numbers")
