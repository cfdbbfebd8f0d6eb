import bz2
import gzip
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from lowcomm.core.errors import DataError, InvalidConfigError
from lowcomm.core.rng import Streams
from lowcomm.data import loaders
from lowcomm.data.loaders import (
    encode_labels,
    load_data,
    load_libsvm,
    load_libsvm_pair,
    load_mnist,
    load_sklearn,
    synthetic_logistic,
    synthetic_logistic_teacher,
)
from lowcomm.data.spec import parse_data_spec

SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets"

SMALL = b"-1 1:0.5 3:2\n+1 2:1.5\n\n-1 3:-1 # a comment\n"
SMALL_X = np.array([[0.5, 0.0, 2.0], [0.0, 1.5, 0.0], [0.0, 0.0, -1.0]])


def _exact(message: str) -> str:
    return f"^{re.escape(message)}$"


def _write(path: Path, content: bytes) -> Path:
    opener: Callable = {".gz": gzip.open, ".bz2": bz2.open}.get(path.suffix, open)
    with opener(path, "wb") as f:
        f.write(content)
    return path


# --- LIBSVM ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["small", "small.gz", "small.bz2"])
def test_libsvm_plain_and_compressed(tmp_path: Path, name: str) -> None:
    data = load_libsvm(_write(tmp_path / name, SMALL))
    assert data.name == "small"
    assert data.X.dtype == np.float64
    np.testing.assert_array_equal(data.X, SMALL_X)
    np.testing.assert_array_equal(data.y, [0, 1, 0])
    assert data.y.dtype == np.int64
    assert data.n_classes == 2


@pytest.mark.parametrize(
    ("labels", "codes"),
    [
        ([-1, 1, 1, -1], [0, 1, 1, 0]),
        ([0, 1, 0, 0], [0, 1, 0, 0]),
        ([2, 1, 2, 2], [1, 0, 1, 1]),
        ([7, 3, 5, 3], [2, 0, 1, 0]),
    ],
)
def test_libsvm_label_mapping(tmp_path: Path, labels: list[int], codes: list[int]) -> None:
    content = "".join(f"{label} 1:1\n" for label in labels).encode()
    data = load_libsvm(_write(tmp_path / "f", content))
    np.testing.assert_array_equal(data.y, codes)
    assert data.n_classes == len(set(labels))


def test_encode_labels_reuses_the_training_mapping() -> None:
    y, classes = encode_labels(np.array([1.0, -1.0, 1.0]))
    np.testing.assert_array_equal(y, [1, 0, 1])
    np.testing.assert_array_equal(classes, [-1.0, 1.0])
    test_y, same = encode_labels(np.array([1.0, 1.0]), classes)
    np.testing.assert_array_equal(test_y, [1, 1])
    assert same is classes
    with pytest.raises(
        DataError, match=_exact("t.gz: label 0.5 is not among the training labels (-1, 1)")
    ):
        encode_labels(np.array([1.0, 0.5]), classes, source="t.gz")


@pytest.mark.parametrize(
    ("content", "line", "problem"),
    [
        (b"1 1:2\n-1 abc\n", 2, "expected 'index:value' pairs after the label, found 'abc'"),
        (b"x 1:2\n", 1, "expected a numeric label, found 'x'"),
        (b"1,2 1:2\n", 1, "expected a numeric label, found '1,2'"),
        (b"1 0:1\n", 1, "expected a positive integer feature index, found '0'"),
        (b"1 -2:1\n", 1, "expected a positive integer feature index, found '-2'"),
        (b"1 1.5:1\n", 1, "expected a positive integer feature index, found '1.5'"),
        (b"1 3:1 2:1\n", 1, "expected strictly increasing feature indices, found 2 after 3"),
        (b"1 2:1 2:1\n", 1, "expected strictly increasing feature indices, found 2 after 2"),
        (b"1 1:x\n", 1, "expected 'index:value' pairs after the label, found '1:x'"),
        (b"1 1:2:3\n", 1, "expected 'index:value' pairs after the label, found '1:2:3'"),
        (
            b"# header\n\n1 1:1\n1 1:a\n",
            4,
            "expected 'index:value' pairs after the label, found '1:a'",
        ),
    ],
)
def test_libsvm_malformed_line(tmp_path: Path, content: bytes, line: int, problem: str) -> None:
    path = _write(tmp_path / "bad.gz", content)
    with pytest.raises(DataError, match=_exact(f"{path}, line {line}: {problem}")) as info:
        load_libsvm(path)
    assert info.value.line == line


def test_libsvm_sklearn_error_without_a_bad_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail(*args: object, **kwargs: object) -> None:
        raise ValueError("boom")

    monkeypatch.setattr(loaders, "load_svmlight_file", fail)
    path = _write(tmp_path / "f", SMALL)
    with pytest.raises(DataError, match=_exact(f"{path}: not a valid LIBSVM file (boom)")):
        load_libsvm(path)


def test_libsvm_dropped_rows_are_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = loaders.load_svmlight_file
    monkeypatch.setattr(
        loaders, "load_svmlight_file", lambda f, **kw: tuple(a[:2] for a in real(f, **kw))
    )
    path = _write(tmp_path / "f", SMALL)
    with pytest.raises(DataError, match=_exact(f"{path}: read 2 examples from 3 non-empty lines")):
        load_libsvm(path)


def test_libsvm_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.gz"
    with pytest.raises(DataError, match=_exact(f"{path}: file not found")):
        load_libsvm(path)


@pytest.mark.parametrize("content", [b"", b"\n\n", b"# only a comment\n"])
def test_libsvm_empty_file(tmp_path: Path, content: bytes) -> None:
    path = _write(tmp_path / "empty", content)
    problem = "expected LIBSVM lines 'label index:value ...', found none"
    with pytest.raises(DataError, match=_exact(f"{path}: {problem}")):
        load_libsvm(path)


def test_libsvm_corrupt_gzip(tmp_path: Path) -> None:
    path = tmp_path / "f.gz"
    path.write_bytes(b"not gzip at all")
    with pytest.raises(DataError, match=f"^{re.escape(f'{path}: cannot decompress the .gz file')}"):
        load_libsvm(path)


def test_libsvm_pair_pads_the_narrower_file(tmp_path: Path) -> None:
    train = _write(tmp_path / "tr", b"1 1:1 3:3\n-1 2:2\n")
    test = _write(tmp_path / "te.gz", b"-1 5:5\n1 1:1\n")
    split = load_libsvm_pair(train, test)
    np.testing.assert_array_equal(split.train.X, [[1, 0, 3, 0, 0], [0, 2, 0, 0, 0]])
    np.testing.assert_array_equal(split.test.X, [[0, 0, 0, 0, 5], [1, 0, 0, 0, 0]])
    np.testing.assert_array_equal(split.train.y, [1, 0])
    np.testing.assert_array_equal(split.test.y, [0, 1])
    assert (split.train.name, split.test.name) == ("tr", "te")
    assert split.train.n_classes == split.test.n_classes == 2


def test_libsvm_pair_test_uses_the_train_label_mapping(tmp_path: Path) -> None:
    train = _write(tmp_path / "tr", b"0 1:1\n1 1:1\n2 1:1\n")
    test = _write(tmp_path / "te", b"2 1:1\n2 1:1\n")
    np.testing.assert_array_equal(load_libsvm_pair(train, test).test.y, [2, 2])


def test_libsvm_pair_unseen_test_label(tmp_path: Path) -> None:
    train = _write(tmp_path / "tr", b"-1 1:1\n1 1:1\n")
    test = _write(tmp_path / "te", b"1 1:1\n3 1:1\n")
    message = f"{test}: label 3 is not among the training labels (-1, 1)"
    with pytest.raises(DataError, match=_exact(message)):
        load_libsvm_pair(train, test)


def test_libsvm_n_features_pads_both(tmp_path: Path) -> None:
    train = _write(tmp_path / "tr", b"1 1:1\n-1 2:2\n")
    test = _write(tmp_path / "te", b"1 3:3\n")
    split = load_libsvm_pair(train, test, n_features=4)
    assert split.train.X.shape == (2, 4)
    np.testing.assert_array_equal(split.test.X, [[0, 0, 3, 0]])
    assert load_libsvm(train, n_features=6).X.shape == (2, 6)


def test_libsvm_n_features_overflow(tmp_path: Path) -> None:
    train = _write(tmp_path / "tr", b"1 1:1\n-1 2:2\n")
    test = _write(tmp_path / "te.bz2", b"1 3:3\n-1 1:1 130:1\n")
    message = f"{test}, line 2: feature index 130 exceeds n_features=123"
    with pytest.raises(DataError, match=_exact(message)):
        load_libsvm_pair(train, test, n_features=123)


def test_libsvm_n_features_must_be_positive(tmp_path: Path) -> None:
    path = _write(tmp_path / "f", SMALL)
    message = "The 'n_features' parameter of load_libsvm must be an integer >= 1. Got 0."
    with pytest.raises(InvalidConfigError, match=_exact(message)):
        load_libsvm(path, n_features=0)


def test_libsvm_split_without_test_file(tmp_path: Path) -> None:
    content = "".join(f"{i % 2} 1:{i}\n" for i in range(1, 41)).encode()
    path = _write(tmp_path / "f", content)
    split = load_libsvm_pair(path, test_fraction=0.25, seed=3)
    assert (split.train.n, split.test.n) == (30, 10)
    ids = np.concatenate([split.train.X[:, 0], split.test.X[:, 0]])
    np.testing.assert_array_equal(np.sort(ids), np.arange(1, 41))
    np.testing.assert_array_equal(split.train.y, split.train.X[:, 0] % 2)
    again = load_libsvm_pair(path, test_fraction=0.25, seed=3)
    np.testing.assert_array_equal(again.test.X, split.test.X)
    other = load_libsvm_pair(path, test_fraction=0.25, seed=4)
    assert not np.array_equal(other.test.X, split.test.X)


@pytest.mark.parametrize(
    ("fraction", "allowed"),
    [
        (0.0, "a number in (0, 1)"),
        (1.0, "a number in (0, 1)"),
        (0.01, "a fraction leaving train and test examples of the 4 in f"),
    ],
)
def test_libsvm_split_bad_fraction(tmp_path: Path, fraction: float, allowed: str) -> None:
    path = _write(tmp_path / "f", b"1 1:1\n1 1:2\n-1 1:3\n-1 1:4\n")
    message = f"The 'test_fraction' parameter of the data split must be {allowed}. Got {fraction}."
    with pytest.raises(InvalidConfigError, match=_exact(message)):
        load_libsvm_pair(path, test_fraction=fraction)


# --- MNIST -------------------------------------------------------------------------------------


def _idx_images(images: np.ndarray, magic: int = 2051) -> bytes:
    header = np.array([magic, *images.shape], dtype=">u4").tobytes()
    return header + images.astype(np.uint8).tobytes()


def _idx_labels(labels: np.ndarray) -> bytes:
    return np.array([2049, labels.size], dtype=">u4").tobytes() + labels.astype(np.uint8).tobytes()


def _mnist_files(folder: Path, prefix: str, n: int, seed: int, gz: bool = True) -> tuple:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 28, 28))
    labels = np.arange(n) % 10
    suffix = ".gz" if gz else ""
    _write(folder / f"{prefix}-images-idx3-ubyte{suffix}", _idx_images(images))
    _write(folder / f"{prefix}-labels-idx1-ubyte{suffix}", _idx_labels(labels))
    return images, labels


def test_mnist_train_and_test(tmp_path: Path) -> None:
    train_images, train_labels = _mnist_files(tmp_path, "train", 6, seed=0)
    test_images, test_labels = _mnist_files(tmp_path, "t10k", 5, seed=1, gz=False)
    split = load_mnist(tmp_path)
    assert split.train.X.shape == (6, 1, 28, 28)
    assert split.train.X.dtype == np.float32
    np.testing.assert_allclose(split.train.X[:, 0], train_images / 255.0, rtol=1e-6)
    np.testing.assert_allclose(split.test.X[:, 0], test_images / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(split.train.y, train_labels)
    np.testing.assert_array_equal(split.test.y, test_labels)
    assert split.train.n_classes == 10


def test_mnist_t10k_only_is_split_four_to_one_independently_of_the_seed(tmp_path: Path) -> None:
    images, labels = _mnist_files(tmp_path, "t10k", 10, seed=2)
    _write(tmp_path / "train-labels-idx1-ubyte.gz", _idx_labels(np.arange(3)))
    split = load_mnist(tmp_path)
    assert (split.train.n, split.test.n) == (8, 2)
    y = np.concatenate([split.train.y, split.test.y])
    np.testing.assert_array_equal(np.sort(y), labels)
    X = np.concatenate([split.train.X, split.test.X])[np.argsort(y), 0]
    np.testing.assert_allclose(X, images / 255.0, rtol=1e-6)
    order = Streams(0).numpy("mnist-split").permutation(10)
    np.testing.assert_array_equal(split.test.y, labels[order[:2]])
    np.testing.assert_array_equal(split.train.y, labels[order[2:]])


def test_mnist_bad_magic(tmp_path: Path) -> None:
    _mnist_files(tmp_path, "t10k", 3, seed=0)
    path = _write(tmp_path / "t10k-images-idx3-ubyte.gz", _idx_images(np.zeros((3, 28, 28)), 2049))
    with pytest.raises(
        DataError, match=_exact(f"{path}: expected idx magic number 2051, found 2049")
    ):
        load_mnist(tmp_path)


def test_mnist_truncated_file(tmp_path: Path) -> None:
    _mnist_files(tmp_path, "t10k", 3, seed=0)
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    _write(path, _idx_images(np.zeros((3, 28, 28)))[:-5])
    problem = "expected 2368 bytes for an idx array of shape (3, 28, 28), found 2363"
    with pytest.raises(DataError, match=_exact(f"{path}: {problem}")):
        load_mnist(tmp_path)


def test_mnist_truncated_header(tmp_path: Path) -> None:
    _mnist_files(tmp_path, "t10k", 3, seed=0)
    path = _write(tmp_path / "t10k-labels-idx1-ubyte.gz", b"\x00\x00\x08")
    with pytest.raises(
        DataError, match=_exact(f"{path}: expected an idx header of 8 bytes, found 3 bytes")
    ):
        load_mnist(tmp_path)


def test_mnist_wrong_image_size(tmp_path: Path) -> None:
    _mnist_files(tmp_path, "t10k", 3, seed=0)
    path = _write(tmp_path / "t10k-images-idx3-ubyte.gz", _idx_images(np.zeros((3, 27, 28))))
    with pytest.raises(DataError, match=_exact(f"{path}: expected 28x28 images, found 27x28")):
        load_mnist(tmp_path)


def test_mnist_label_count_mismatch(tmp_path: Path) -> None:
    _mnist_files(tmp_path, "t10k", 3, seed=0)
    path = _write(tmp_path / "t10k-labels-idx1-ubyte.gz", _idx_labels(np.arange(4)))
    with pytest.raises(
        DataError, match=_exact(f"{path}: expected 3 labels (one per image), found 4")
    ):
        load_mnist(tmp_path)


def test_mnist_label_out_of_range(tmp_path: Path) -> None:
    _mnist_files(tmp_path, "t10k", 3, seed=0)
    path = _write(tmp_path / "t10k-labels-idx1-ubyte.gz", _idx_labels(np.array([1, 12, 3])))
    with pytest.raises(DataError, match=_exact(f"{path}: expected labels 0..9, found 12")):
        load_mnist(tmp_path)


def test_mnist_missing_files(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=_exact(f"{tmp_path / 'nope'}: folder not found")):
        load_mnist(tmp_path / "nope")
    problem = "expected t10k-images-idx3-ubyte.gz (or uncompressed)"
    with pytest.raises(DataError, match=_exact(f"{tmp_path}: {problem}")):
        load_mnist(tmp_path)
    _write(tmp_path / "t10k-images-idx3-ubyte", _idx_images(np.zeros((3, 28, 28))))
    missing = tmp_path / "t10k-labels-idx1-ubyte.gz"
    with pytest.raises(DataError, match=_exact(f"{missing}: file not found")):
        load_mnist(tmp_path)


# --- scikit-learn, synthetic and dispatch -------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "n", "d", "n_classes"),
    [
        ("digits", 1797, 64, 10),
        ("breast-cancer", 569, 30, 2),
        ("wine", 178, 13, 3),
        ("iris", 150, 4, 3),
    ],
)
def test_sklearn_sets(name: str, n: int, d: int, n_classes: int) -> None:
    split = load_sklearn(name, seed=0)
    assert split.train.n + split.test.n == n
    assert split.test.n == round(n * 0.25)
    assert split.train.X.shape[1:] == split.test.X.shape[1:] == (d,)
    assert split.train.n_classes == n_classes
    if name == "digits":
        assert split.train.X.min() == 0.0 and split.train.X.max() == 1.0
    else:
        np.testing.assert_allclose(split.train.X.mean(axis=0), 0.0, atol=1e-12)
        np.testing.assert_allclose(split.train.X.std(axis=0), 1.0, rtol=1e-12)
    np.testing.assert_array_equal(load_sklearn(name, seed=0).test.X, split.test.X)


def test_sklearn_unknown_name() -> None:
    allowed = "one of 'digits', 'breast-cancer', 'wine', 'iris'"
    message = f"The 'name' parameter of load_sklearn must be {allowed}. Got 'mnist'."
    with pytest.raises(InvalidConfigError, match=_exact(message)):
        load_sklearn("mnist")


def test_synthetic_logistic_is_deterministic_and_follows_its_teacher() -> None:
    split = synthetic_logistic(n=4000, d=5, seed=7)
    again = synthetic_logistic(n=4000, d=5, seed=7)
    np.testing.assert_array_equal(split.train.X, again.train.X)
    np.testing.assert_array_equal(split.test.y, again.test.y)
    assert (split.train.n, split.test.n, split.train.n_classes) == (3000, 1000, 2)
    teacher = synthetic_logistic_teacher(d=5, seed=7)
    assert np.linalg.norm(teacher) == pytest.approx(2.0)
    agreement = np.mean((split.train.X @ teacher > 0) == (split.train.y == 1))
    assert 0.7 < agreement < 0.95  # informative labels, but not separable by the teacher
    other = synthetic_logistic(n=4000, d=5, seed=8)
    assert not np.array_equal(other.train.X, split.train.X)


def test_load_data_dispatch(tmp_path: Path) -> None:
    train = _write(tmp_path / "tr", b"1 1:1\n-1 2:2\n")
    test = _write(tmp_path / "te", b"1 3:3\n")
    split = load_data(parse_data_spec(f"libsvm:{train},{test},n_features=5"), seed=0)
    assert split.test.X.shape == (1, 5)
    synthetic = load_data(parse_data_spec("synthetic-logistic:40,3"), seed=1)
    np.testing.assert_array_equal(synthetic.train.X, synthetic_logistic(40, 3, seed=1).train.X)
    assert load_data(parse_data_spec("iris"), seed=0).train.n == 112
    _mnist_files(tmp_path, "t10k", 5, seed=0)
    assert load_data(parse_data_spec(f"mnist:{tmp_path}"), seed=0).test.n == 1


# --- the real files in ../shared/datasets --------------------------------------------------------


def _shared() -> Path:
    if not SHARED.is_dir():
        pytest.skip("../shared/datasets not present (a user's clone has no ../shared)")
    return SHARED


@pytest.mark.shared_data
def test_shared_a9a() -> None:
    split = load_libsvm_pair(_shared() / "a9a" / "a9a.gz", _shared() / "a9a" / "a9a.t.gz")
    assert split.train.X.shape == (32561, 123)
    assert split.test.X.shape == (16281, 123)
    assert np.bincount(split.train.y).tolist() == [24720, 7841]
    assert np.bincount(split.test.y).tolist() == [12435, 3846]


@pytest.mark.shared_data
def test_shared_phishing_labels() -> None:
    data = load_libsvm(_shared() / "phishing" / "phishing.gz")
    assert data.X.shape == (11055, 68)
    assert np.bincount(data.y).tolist() == [4898, 6157]


@pytest.mark.shared_data
def test_shared_mnist_is_the_fixed_t10k_split() -> None:
    split = load_mnist(_shared() / "mnist")
    assert split.train.X.shape == (8000, 1, 28, 28)
    assert split.test.X.shape == (2000, 1, 28, 28)
    counts = np.bincount(np.concatenate([split.train.y, split.test.y])).tolist()
    assert counts == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
