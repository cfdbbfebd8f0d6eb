"""Parsing of the command-line strings that name a data set and a partition scheme.

Data sets (``--data``):

- ``libsvm:TRAIN`` or ``libsvm:TRAIN,TEST``, optionally followed by ``,n_features=N``: LIBSVM
  files (plain, ``.gz`` or ``.bz2``). Only the first ``:`` separates the kind, so paths may hold
  colons; fields are separated by commas, so paths must not hold commas.
- ``csv:TRAIN`` or ``csv:TRAIN,TEST``, optionally followed by ``,label=NAME``: CSV files with a
  header row; the label column is NAME (default: the last column), every other column is a
  numeric feature. ``parquet:TRAIN[,TEST][,label=NAME]``: the same for Parquet files.
- ``npz:PATH``: a NumPy archive with arrays ``X`` [n, ...] and ``y`` [n], optionally ``X_test``
  and ``y_test``.
- ``mnist:DIR``: a folder with MNIST idx files.
- ``digits``, ``breast-cancer``, ``wine``, ``iris``: scikit-learn's bundled sets.
- ``synthetic-logistic`` or ``synthetic-logistic:N,D``: N examples (before the train/test split)
  with D Gaussian features and labels from a logistic teacher.
- ``text:TRAIN`` or ``text:TRAIN,TEST``, optionally followed by ``,streams=S``, ``,bptt=T``
  and ``,group=G`` (integers >= 1, G dividing S; defaults 16, 35, 1): word-level language
  modelling text (:mod:`lowcomm.data.text`).

Partitions (``--partition``): ``iid``, ``sorted``, ``classes:K`` (integer K >= 1),
``dirichlet:ALPHA`` (ALPHA > 0) or ``dirichlet:ALPHA,min_size=M`` (integer M >= 1: redraw until
every worker holds at least M examples), ``size-skew:POWER`` (POWER >= 0) and ``contiguous``;
see :func:`lowcomm.data.partition.partition` for what each one does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from lowcomm.core.errors import InvalidConfigError

SKLEARN_SETS = ("digits", "breast-cancer", "wine", "iris")
TABLE_KINDS = ("csv", "parquet")
FILE_KINDS = (*TABLE_KINDS, "npz")
DATA_SYNTAX = (
    "one of libsvm:TRAIN[,TEST][,n_features=N], csv:TRAIN[,TEST][,label=NAME], "
    "parquet:TRAIN[,TEST][,label=NAME], npz:PATH, mnist:DIR, digits, breast-cancer, wine, iris, "
    "synthetic-logistic[:N,D], synthetic-pca[:N,D], "
    "text:TRAIN[,TEST][,streams=S][,bptt=T][,group=G]"
)
_OWNER = "lowcomm run"
_N_FEATURES = "n_features="
_LABEL = "label="


@dataclass(frozen=True)
class DataSpec:
    """A parsed ``--data`` string.

    Attributes:
        kind: ``libsvm``, ``mnist``, ``synthetic-logistic``, ``synthetic-pca``, ``text``, one
            of :data:`FILE_KINDS` or one of :data:`SKLEARN_SETS`.
        path: the training file (LIBSVM, CSV, Parquet, text), the ``.npz`` archive or the
            MNIST folder (empty for the other kinds).
        test_path: the LIBSVM, CSV, Parquet or text test file, if any.
        n_features: the LIBSVM width asked for, if any.
        label: the name of the label column of a CSV or Parquet file (None: the last column).
        n: number of synthetic examples (before the split).
        d: number of synthetic features.
        streams: text: the token streams a file is split into.
        bptt: text: the tokens of one example per stream.
        group: text: the consecutive streams one example holds.
    """

    kind: str
    path: str = ""
    test_path: str | None = None
    n_features: int | None = None
    label: str | None = None
    n: int = 2000
    d: int = 20
    streams: int = 16
    bptt: int = 35
    group: int = 1


@dataclass(frozen=True)
class PartitionSpec:
    """A parsed ``--partition`` string: the scheme and its parameter (K, ALPHA or POWER).

    ``min_size`` (``dirichlet`` only): the fewest examples a worker may get; 0 keeps the first
    draw as it is.
    """

    kind: str
    param: float | None = None
    min_size: int = 0

    def __str__(self) -> str:
        """The canonical command-line form, e.g. ``classes:2`` or ``dirichlet:0.5,min_size=10``."""
        if self.param is None:
            return self.kind
        value = int(self.param) if self.param.is_integer() else self.param
        floor = f",{_MIN_SIZE}{self.min_size}" if self.min_size else ""
        return f"{self.kind}:{value}{floor}"


def parse_data_spec(text: str) -> DataSpec:
    """Parse a ``--data`` string (syntax in the module docstring).

    Raises:
        InvalidConfigError: the kind is unknown or its arguments are malformed.
    """
    kind, sep, rest = text.partition(":")
    if kind in SKLEARN_SETS and not sep:
        return DataSpec(kind)
    if kind in ("synthetic-logistic", "synthetic-pca"):
        return _synthetic(kind, text, rest if sep else None)
    if kind == "mnist" and rest:
        return DataSpec("mnist", path=rest)
    if kind == "libsvm" and rest:
        return _libsvm(text, rest)
    if kind in TABLE_KINDS and rest:
        train, test, label = _files(text, rest, _LABEL)
        return DataSpec(kind, path=train, test_path=test, label=label)
    if kind == "npz" and rest:
        return DataSpec("npz", path=rest)
    if kind == "text" and rest:
        return _text(text, rest)
    raise _bad_data(text)


def _bad_data(text: str) -> InvalidConfigError:
    """The error for a malformed ``--data`` string."""
    return InvalidConfigError("data", _OWNER, DATA_SYNTAX, text)


def _positive_int(text: str) -> int | None:
    """``text`` as an integer >= 1, or None when it is not one."""
    return int(text) if text.isascii() and text.isdigit() and int(text) >= 1 else None


def _synthetic(kind: str, text: str, rest: str | None) -> DataSpec:
    """``synthetic-logistic`` or ``synthetic-pca`` with optional ``N,D`` (N >= 2, D >= 1)."""
    if rest is None:
        return DataSpec(kind)
    fields = rest.split(",")
    sizes = [_positive_int(f.strip()) for f in fields]
    if len(sizes) != 2 or sizes[0] is None or sizes[1] is None or sizes[0] < 2:
        raise _bad_data(text)
    return DataSpec(kind, n=sizes[0], d=sizes[1])


def _libsvm(text: str, rest: str) -> DataSpec:
    """``libsvm:TRAIN[,TEST][,n_features=N]``."""
    train, test, width = _files(text, rest, _N_FEATURES)
    n_features = None if width is None else _positive_int(width)
    if width is not None and n_features is None:
        raise _bad_data(text)
    return DataSpec("libsvm", path=train, test_path=test, n_features=n_features)


_TEXT_OPTIONS = ("streams", "bptt", "group")


def _text(text: str, rest: str) -> DataSpec:
    """``text:TRAIN[,TEST]`` then any of ``,streams=S``, ``,bptt=T``, ``,group=G``."""
    fields = rest.split(",")
    sizes = {"streams": 16, "bptt": 35, "group": 1}
    while fields and fields[-1].partition("=")[0] in _TEXT_OPTIONS:
        name, _, value = fields.pop().partition("=")
        number = _positive_int(value)
        if number is None:
            raise _bad_data(text)
        sizes[name] = number
    if not 1 <= len(fields) <= 2 or not all(fields) or sizes["streams"] % sizes["group"]:
        raise _bad_data(text)
    test = fields[1] if len(fields) == 2 else None
    streams, bptt, group = sizes["streams"], sizes["bptt"], sizes["group"]
    return DataSpec("text", fields[0], test, streams=streams, bptt=bptt, group=group)


def _files(text: str, rest: str, option: str) -> tuple[str, str | None, str | None]:
    """``TRAIN[,TEST]`` then optionally ``,`` ``option`` VALUE: the paths and VALUE (or None)."""
    fields = rest.split(",")
    value = fields.pop()[len(option) :] if fields[-1].startswith(option) else None
    if not 1 <= len(fields) <= 2 or not all(fields) or value == "":
        raise _bad_data(text)
    return fields[0], fields[1] if len(fields) == 2 else None, value


_PARTITION_RULES = {
    "classes": "classes:K with an integer K >= 1",
    "dirichlet": "dirichlet:ALPHA with a finite number ALPHA > 0",
    "size-skew": "size-skew:POWER with a finite number POWER >= 0",
}
PARTITION_SYNTAX = "one of iid, sorted, classes:K, dirichlet:ALPHA, size-skew:POWER, contiguous"
_MIN_SIZE = "min_size="
_MIN_SIZE_RULE = "dirichlet:ALPHA,min_size=M with an integer M >= 1"


def parse_partition_spec(text: str) -> PartitionSpec:
    """Parse a ``--partition`` string.

    Raises:
        InvalidConfigError: the scheme is unknown (the message lists the schemes) or its
            parameter is out of range (the message gives the range).
    """
    kind, sep, arg = text.partition(":")
    if kind in ("iid", "sorted", "contiguous") and not sep:
        return PartitionSpec(kind)
    if kind not in _PARTITION_RULES:
        raise InvalidConfigError("partition", _OWNER, PARTITION_SYNTAX, text)
    arg, comma, extra = arg.partition(",") if kind == "dirichlet" else (arg, "", "")
    min_size = _positive_int(extra.removeprefix(_MIN_SIZE)) if comma else 0
    if min_size is None or (comma and not extra.startswith(_MIN_SIZE)):
        raise InvalidConfigError("partition", _OWNER, _MIN_SIZE_RULE, text)
    value = _partition_param(kind, arg)
    if value is None:
        raise InvalidConfigError("partition", _OWNER, _PARTITION_RULES[kind], text)
    return PartitionSpec(kind, value, min_size)


def _partition_param(kind: str, arg: str) -> float | None:
    """The parameter of ``kind`` parsed from ``arg``, or None when it is out of range."""
    if kind == "classes":
        k = _positive_int(arg)
        return None if k is None else float(k)
    try:
        value = float(arg)
    except ValueError:
        return None
    ok = math.isfinite(value) and (value > 0 if kind == "dirichlet" else value >= 0)
    return value if ok else None
