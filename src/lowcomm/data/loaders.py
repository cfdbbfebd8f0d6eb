"""Loaders for LIBSVM files, MNIST idx files, scikit-learn's bundled sets and synthetic data.

Every loader returns dense NumPy arrays with labels mapped to 0..C-1 (except LIBSVM files too
wide to densify, which stay SciPy CSR: :mod:`lowcomm.data.sparse`), and draws all its
randomness from :class:`lowcomm.core.rng.Streams`. Malformed files raise one
:class:`DataError` naming the file, the line (where there is one) and what was expected.
"""

from __future__ import annotations

import bz2
import gzip
import io
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from lowcomm.core.errors import DataError, InvalidConfigError
from lowcomm.core.rng import Streams
from lowcomm.core.validate import at_least, one_of, positive
from lowcomm.data.dataset import Dataset, TrainTest
from lowcomm.data.sparse import DENSE_LIMIT, Features, fits_dense
from lowcomm.data.spec import FILE_KINDS, SKLEARN_SETS, DataSpec
from lowcomm.data.synthetic_pca import pca_data

_DECOMPRESS = {".gz": gzip.decompress, ".bz2": bz2.decompress}
_SKLEARN_LOADERS = {  # scikit-learn's loader of each bundled set (imported when one is read)
    "digits": "load_digits",
    "breast-cancer": "load_breast_cancer",
    "wine": "load_wine",
    "iris": "load_iris",
}
_MNIST_SIDE = 28
_MNIST_TEST_SHARE = 5  # without train images, 1/5 of t10k (2,000 of 10,000) is the test set


def load_data(spec: DataSpec, seed: int, test_fraction: float = 0.25) -> TrainTest:
    """Load the data set named by a parsed ``--data`` string.

    ``seed`` drives splits and synthesis; ``test_fraction`` is the share held out where the
    data set has no test split of its own (a LIBSVM, CSV or Parquet file or an archive
    alone, bundled and synthetic sets).
    """
    if spec.kind in FILE_KINDS:
        from lowcomm.data.tabular import load_tabular  # tabular reuses this module's helpers

        return load_tabular(spec, seed, test_fraction)
    if spec.kind == "libsvm":
        return load_libsvm_pair(
            spec.path, spec.test_path, spec.n_features, test_fraction=test_fraction, seed=seed
        )
    if spec.kind == "mnist":
        return load_mnist(spec.path)
    if spec.kind == "text":
        from lowcomm.data.text import load_text  # text reuses this module's helpers

        return load_text(spec, seed, test_fraction)
    if spec.kind == "synthetic-logistic":
        return synthetic_logistic(spec.n, spec.d, seed=seed, test_fraction=test_fraction)
    if spec.kind == "synthetic-pca":
        return pca_data(spec.n, spec.d, seed=seed)
    return load_sklearn(spec.kind, seed=seed, test_fraction=test_fraction)


# --- LIBSVM ------------------------------------------------------------------------------------


def load_libsvm(
    path: str | Path, n_features: int | None = None, dense_limit: int = DENSE_LIMIT
) -> Dataset:
    """Read one LIBSVM file (plain, ``.gz`` or ``.bz2``) as a float64 data set.

    Args:
        path: the file.
        n_features: the width; indices beyond it are an error. None: the largest index present.
        dense_limit: the features are a dense array when that takes at most this many bytes,
            else a CSR matrix (0: always CSR).

    Raises:
        DataError: the file is missing, empty or malformed (with the first bad line).
    """
    X, raw = _read_libsvm(Path(path), n_features)
    y, classes = encode_labels(raw, source=path)
    features = _features(X, X.shape[1], fits_dense(X.shape, dense_limit))
    return Dataset(file_stem(path), features, y, int(classes.size))


def load_libsvm_pair(
    train_path: str | Path,
    test_path: str | Path | None = None,
    n_features: int | None = None,
    test_fraction: float = 0.25,
    seed: int = 0,
    dense_limit: int = DENSE_LIMIT,
) -> TrainTest:
    """Read a LIBSVM training file and its test file, or split the training file.

    Widths: with ``n_features``, both files have that width and a larger index is an error.
    Without it, the narrower file is padded with zero columns to the wider one (a test file
    often lacks the last rare features), as LIBSVM tools do. Test labels use the training
    file's mapping; a test label absent from training is an error.

    Without a test file, a random ``test_fraction`` of the examples (not stratified) is the
    test set, drawn from ``Streams(seed).numpy("split")``.

    Both sets are dense when the dense float64 matrix of all their examples takes at most
    ``dense_limit`` bytes, else CSR (:mod:`lowcomm.data.sparse`).

    Raises:
        DataError: a file is missing, empty or malformed, or has an unseen test label.
        InvalidConfigError: ``test_fraction`` is not in (0, 1).
    """
    X, raw = _read_libsvm(Path(train_path), n_features)
    y, classes = encode_labels(raw, source=train_path)
    if test_path is None:
        features = _features(X, X.shape[1], fits_dense(X.shape, dense_limit))
        data = Dataset(file_stem(train_path), features, y, int(classes.size))
        return split_train_test(data, test_fraction, seed)
    X_test, raw_test = _read_libsvm(Path(test_path), n_features)
    y_test, _ = encode_labels(raw_test, classes, source=test_path)
    width = max(X.shape[1], X_test.shape[1])
    dense = fits_dense((X.shape[0] + X_test.shape[0], width), dense_limit)
    return TrainTest(
        Dataset(file_stem(train_path), _features(X, width, dense), y, int(classes.size)),
        Dataset(file_stem(test_path), _features(X_test, width, dense), y_test, int(classes.size)),
    )


def encode_labels(
    raw: np.ndarray, classes: np.ndarray | None = None, source: str | Path = "labels"
) -> tuple[np.ndarray, np.ndarray]:
    """Map raw labels to 0..C-1 by rank among the sorted distinct values.

    So {-1, 1}, {0, 1} and {1, 2} all become {0, 1}. Pass the ``classes`` returned for a
    training file to encode its test file with the same mapping.

    Returns:
        The int64 codes and the sorted distinct raw values (``classes``).

    Raises:
        DataError: a label is not among ``classes``; names ``source`` and the label.
    """
    if classes is None:
        classes, codes = np.unique(raw, return_inverse=True)
        return codes.astype(np.int64), classes
    codes = np.minimum(np.searchsorted(classes, raw), classes.size - 1)
    unseen = classes[codes] != raw
    if unseen.any():
        known = ", ".join(number_text(c) for c in classes)
        problem = f"label {number_text(raw[unseen][0])} is not among the training labels ({known})"
        raise DataError(source, problem)
    return codes.astype(np.int64), classes


def _read_libsvm(path: Path, n_features: int | None) -> tuple[sp.csr_matrix, np.ndarray]:
    """The CSR features (``n_features`` wide when given) and raw labels of one file."""
    if n_features is not None:
        at_least("load_libsvm", "n_features", n_features, 1)
    data = read_bytes(path)
    n_lines = sum(1 for line in data.split(b"\n") if _content(line))
    if n_lines == 0:
        raise DataError(path, "expected LIBSVM lines 'label index:value ...', found none")
    try:
        X, raw = load_svmlight_file(io.BytesIO(data), zero_based=False)
    except ValueError as err:
        raise _diagnose(path, data, None, f"not a valid LIBSVM file ({err})") from err
    if X.shape[0] != n_lines:
        raise DataError(path, f"read {X.shape[0]} examples from {n_lines} non-empty lines")
    _check_values(path, data, X, raw)
    if n_features is not None:
        if X.shape[1] > n_features:
            fallback = f"feature index {X.shape[1]} exceeds n_features={n_features}"
            raise _diagnose(path, data, n_features, fallback)
        X.resize((X.shape[0], n_features))
    return X, raw


def _check_values(path: Path, data: bytes, X: sp.csr_matrix, raw: np.ndarray) -> None:
    """Refuse a label that is not an integer and a feature value that is not finite.

    Both checks are vectorised; the file is searched for the offending line only on failure.
    """
    label = first_non_integer(raw)
    if label is not None:
        line, text = _example_line(data, label)
        raise DataError(path, f"expected an integer class label, found {text.split()[0]!r}", line)
    bad = np.flatnonzero(~np.isfinite(X.data))
    if bad.size:
        row = int(np.searchsorted(X.indptr, bad[0], side="right")) - 1
        found = f"feature {X.indices[bad[0]] + 1} = {number_text(X.data[bad[0]])}"
        line = _example_line(data, row)[0]
        raise DataError(path, f"expected finite feature values, found {found}", line)


def first_non_integer(labels: np.ndarray) -> int | None:
    """The position of the first label that is NaN, infinite or not a whole number, if any."""
    bad = np.flatnonzero(~(np.isfinite(labels) & (labels == np.round(labels))))
    return int(bad[0]) if bad.size else None


def _example_line(data: bytes, example: int) -> tuple[int, str]:
    """The file line (1-based) and comment-free text of example ``example`` (0-based)."""
    seen = -1
    for number, line in enumerate(data.split(b"\n"), start=1):
        text = _content(line)
        if text:
            seen += 1
            if seen == example:
                return number, text.decode(errors="replace")
    raise IndexError(example)


def _content(line: bytes) -> bytes:
    """A line without its ``#`` comment and surrounding white space."""
    return line.split(b"#", 1)[0].strip()


def _diagnose(path: Path, data: bytes, n_features: int | None, fallback: str) -> DataError:
    """The error for the first bad line of ``data``, or ``fallback`` when no line is bad."""
    for number, line in enumerate(data.split(b"\n"), start=1):
        problem = _line_problem(_content(line).decode(errors="replace"), n_features)
        if problem is not None:
            return DataError(path, problem, line=number)
    return DataError(path, fallback)


def _line_problem(line: str, n_features: int | None) -> str | None:
    """What is wrong with one comment-free LIBSVM line, or None when it is well formed."""
    if not line:
        return None
    label, *pairs = line.split()
    if not is_number(label):
        return f"expected a numeric label, found {label!r}"
    previous = 0
    for pair in pairs:
        index, colon, value = pair.partition(":")
        if not colon or not is_number(value):
            return f"expected 'index:value' pairs after the label, found {pair!r}"
        if not (index.isascii() and index.isdigit() and int(index) >= 1):
            return f"expected a positive integer feature index, found {index!r}"
        if int(index) <= previous:
            return f"expected strictly increasing feature indices, found {index} after {previous}"
        if n_features is not None and int(index) > n_features:
            return f"feature index {index} exceeds n_features={n_features}"
        previous = int(index)
    return None


def is_number(text: str) -> bool:
    """Whether ``text`` parses as a float."""
    try:
        float(text)
    except ValueError:
        return False
    return True


def number_text(value: float) -> str:
    """A label as written in a file: ``-1``, ``2``, ``0.5``."""
    return np.format_float_positional(float(value), trim="-")


def _features(X: sp.csr_matrix, width: int, dense: bool) -> Features:
    """``X`` padded with zero columns to ``width``: a dense float64 array if ``dense``, else CSR."""
    wide = sp.csr_matrix((X.data, X.indices, X.indptr), shape=(X.shape[0], width))
    return wide.toarray() if dense else wide


def file_stem(path: str | Path) -> str:
    """The file name without a compression suffix: ``a9a.t.gz`` -> ``a9a.t``."""
    name = Path(path).name
    suffix = Path(name).suffix
    return name[: -len(suffix)] if suffix in _DECOMPRESS else name


def read_bytes(path: Path) -> bytes:
    """The (decompressed) content of ``path``."""
    if not path.is_file():
        raise DataError(path, "file not found")
    decompress = _DECOMPRESS.get(path.suffix)
    if decompress is None:
        return path.read_bytes()
    try:
        return decompress(path.read_bytes())
    except (OSError, EOFError, ValueError) as err:
        raise DataError(path, f"cannot decompress the {path.suffix} file ({err})") from err


# --- MNIST -------------------------------------------------------------------------------------


def load_mnist(directory: str | Path) -> TrainTest:
    """Read MNIST idx files (``.gz`` or plain) from ``directory``.

    With ``train-images-idx3-ubyte`` present, the train and t10k files are the train and test
    sets. With only the t10k files (as in ``../shared/datasets/mnist``), the t10k set is split
    by a fixed permutation from ``Streams(0).numpy("mnist-split")``, independent of the run
    seed: its first fifth (2,000 of 10,000) is the test set and the rest (8,000) the train set.
    Images are float32 in [0, 1] of shape [n, 1, 28, 28]; labels are 0..9.

    Raises:
        DataError: the folder or a needed file is missing, or a file is malformed.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise DataError(directory, "folder not found")
    test = _mnist_set(directory, "t10k")
    if test is None:
        raise DataError(directory, "expected t10k-images-idx3-ubyte.gz (or uncompressed)")
    train = _mnist_set(directory, "train")
    if train is not None:
        return TrainTest(train, test)
    order = Streams(0).numpy("mnist-split").permutation(test.n)
    n_test = test.n // _MNIST_TEST_SHARE
    return TrainTest(test.subset(order[n_test:]), test.subset(order[:n_test]))


def _mnist_set(directory: Path, prefix: str) -> Dataset | None:
    """The images and labels named ``prefix-*``, or None when the images are absent."""
    images_path = _find(directory, f"{prefix}-images-idx3-ubyte")
    if images_path is None:
        return None
    labels_path = _find(directory, f"{prefix}-labels-idx1-ubyte")
    if labels_path is None:
        raise DataError(directory / f"{prefix}-labels-idx1-ubyte.gz", "file not found")
    images = _read_idx(images_path, 2051, 3)
    if images.shape[1:] != (_MNIST_SIDE, _MNIST_SIDE):
        found = "x".join(map(str, images.shape[1:]))
        raise DataError(images_path, f"expected 28x28 images, found {found}")
    labels = _read_idx(labels_path, 2049, 1)
    if labels.size != images.shape[0]:
        problem = f"expected {images.shape[0]} labels (one per image), found {labels.size}"
        raise DataError(labels_path, problem)
    if labels.size and labels.max() > 9:
        raise DataError(labels_path, f"expected labels 0..9, found {labels.max()}")
    X = (images[:, None, :, :] / np.float32(255)).astype(np.float32)
    return Dataset("mnist", X, labels.astype(np.int64), 10)


def _find(directory: Path, stem: str) -> Path | None:
    """``stem.gz`` or ``stem`` in ``directory``, whichever exists first."""
    for candidate in (directory / f"{stem}.gz", directory / stem):
        if candidate.is_file():
            return candidate
    return None


def _read_idx(path: Path, magic: int, ndim: int) -> np.ndarray:
    """A uint8 idx array: big-endian magic, ``ndim`` uint32 sizes, then the bytes."""
    data = read_bytes(path)
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(path, f"expected an idx header of {header} bytes, found {len(data)} bytes")
    found = int.from_bytes(data[:4], "big")
    if found != magic:
        raise DataError(path, f"expected idx magic number {magic}, found {found}")
    shape = tuple(int(s) for s in np.frombuffer(data, ">u4", count=ndim, offset=4))
    expected = header + int(np.prod(shape))
    if len(data) != expected:
        problem = f"expected {expected} bytes for an idx array of shape {shape}, found {len(data)}"
        raise DataError(path, problem)
    return np.frombuffer(data, np.uint8, offset=header).reshape(shape)


# --- scikit-learn and synthetic sets -----------------------------------------------------------


def load_svmlight_file(source: io.BytesIO, **options: object) -> tuple[sp.csr_matrix, np.ndarray]:
    """scikit-learn's LIBSVM reader, imported on first use (it takes a second to import)."""
    from sklearn.datasets import load_svmlight_file as read

    X, y = read(source, **options)
    return X, y


def load_sklearn(name: str, seed: int = 0, test_fraction: float = 0.25) -> TrainTest:
    """One of scikit-learn's bundled sets, randomly split (``Streams(seed).numpy("split")``).

    ``digits`` stays flat ([n, 64]) and is scaled to [0, 1] by /16; ``breast-cancer``,
    ``wine`` and ``iris`` are standardised with the training set's mean and deviation.

    Raises:
        InvalidConfigError: ``name`` is not one of :data:`SKLEARN_SETS`.
    """
    one_of("load_sklearn", "name", name, SKLEARN_SETS)
    from sklearn import datasets  # a second to import: only when a bundled set is read

    bunch = getattr(datasets, _SKLEARN_LOADERS[name])()
    X = np.asarray(bunch.data, dtype=np.float64)
    data = Dataset(name, X, bunch.target.astype(np.int64), len(bunch.target_names))
    if name == "digits":
        return split_train_test(
            Dataset(name, X / 16.0, data.y, data.n_classes), test_fraction, seed
        )
    return _standardise(split_train_test(data, test_fraction, seed))


def synthetic_logistic_teacher(d: int = 20, seed: int = 0, teacher_norm: float = 2.0) -> np.ndarray:
    """The teacher weights behind :func:`synthetic_logistic` for the same ``d``, ``seed``.

    A standard normal direction (``Streams(seed).numpy("synthetic-teacher")``) scaled to norm
    ``teacher_norm``.
    """
    at_least("synthetic_logistic", "d", d, 1)
    positive("synthetic_logistic", "teacher_norm", teacher_norm)
    direction = Streams(seed).numpy("synthetic-teacher").standard_normal(d)
    return teacher_norm * direction / np.linalg.norm(direction)


def synthetic_logistic(
    n: int = 2000,
    d: int = 20,
    seed: int = 0,
    test_fraction: float = 0.25,
    teacher_norm: float = 2.0,
) -> TrainTest:
    """A binary logistic-regression set, a pure function of its arguments.

    Features x ~ N(0, I_d); label 1 with probability sigmoid(x . w*), where w* is
    :func:`synthetic_logistic_teacher` (d, seed, teacher_norm). Labels are drawn, not
    thresholded, so the set is not separable; a smaller ``teacher_norm`` means noisier labels.
    The ``n`` examples are then split as by :func:`load_sklearn`.
    """
    at_least("synthetic_logistic", "n", n, 2)
    teacher = synthetic_logistic_teacher(d, seed, teacher_norm)
    streams = Streams(seed)
    X = streams.numpy("synthetic-features").standard_normal((n, d))
    chance = 1.0 / (1.0 + np.exp(-X @ teacher))
    y = (streams.numpy("synthetic-labels").random(n) < chance).astype(np.int64)
    return split_train_test(Dataset("synthetic-logistic", X, y, 2), test_fraction, seed)


# --- splitting and scaling ---------------------------------------------------------------------


def split_train_test(data: Dataset, test_fraction: float, seed: int) -> TrainTest:
    """A random train/test split: round(n * test_fraction) test examples, the rest train."""
    if not 0 < test_fraction < 1:
        raise InvalidConfigError(
            "test_fraction", "the data split", "a number in (0, 1)", test_fraction
        )
    n_test = round(data.n * test_fraction)
    if not 0 < n_test < data.n:
        allowed = f"a fraction leaving train and test examples of the {data.n} in {data.name}"
        raise InvalidConfigError("test_fraction", "the data split", allowed, test_fraction)
    order = Streams(seed).numpy("split").permutation(data.n)
    return TrainTest(data.subset(order[n_test:]), data.subset(order[:n_test]))


def _standardise(split: TrainTest) -> TrainTest:
    """Both sets centred and scaled by the training set's per-feature mean and deviation."""
    mean = split.train.X.mean(axis=0)
    scale = split.train.X.std(axis=0)
    scale[scale == 0] = 1.0
    train, test = split.train, split.test
    return TrainTest(
        Dataset(train.name, (train.X - mean) / scale, train.y, train.n_classes),
        Dataset(test.name, (test.X - mean) / scale, test.y, test.n_classes),
    )
