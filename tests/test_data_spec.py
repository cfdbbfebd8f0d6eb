import re

import pytest

from lowcomm.core.errors import InvalidConfigError
from lowcomm.data.spec import DataSpec, PartitionSpec, parse_data_spec, parse_partition_spec

DATA_ALLOWED = (
    "one of libsvm:TRAIN[,TEST][,n_features=N], csv:TRAIN[,TEST][,label=NAME], "
    "parquet:TRAIN[,TEST][,label=NAME], npz:PATH, mnist:DIR, digits, breast-cancer, wine, iris, "
    "synthetic-logistic[:N,D], synthetic-pca[:N,D], "
    "text:TRAIN[,TEST][,streams=S][,bptt=T][,group=G]"
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("libsvm:data/a9a.gz", DataSpec("libsvm", path="data/a9a.gz")),
        ("libsvm:a9a.gz,a9a.t.gz", DataSpec("libsvm", path="a9a.gz", test_path="a9a.t.gz")),
        (
            "libsvm:a9a.gz,a9a.t.gz,n_features=123",
            DataSpec("libsvm", path="a9a.gz", test_path="a9a.t.gz", n_features=123),
        ),
        ("libsvm:w8a.gz,n_features=300", DataSpec("libsvm", path="w8a.gz", n_features=300)),
        ("libsvm:C:/data/x:y.gz", DataSpec("libsvm", path="C:/data/x:y.gz")),
        ("mnist:../shared/datasets/mnist", DataSpec("mnist", path="../shared/datasets/mnist")),
        ("digits", DataSpec("digits")),
        ("breast-cancer", DataSpec("breast-cancer")),
        ("wine", DataSpec("wine")),
        ("iris", DataSpec("iris")),
        ("synthetic-logistic", DataSpec("synthetic-logistic", n=2000, d=20)),
        ("synthetic-logistic:500,3", DataSpec("synthetic-logistic", n=500, d=3)),
    ],
)
def test_parse_data_spec_valid(text: str, expected: DataSpec) -> None:
    assert parse_data_spec(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "cifar10",
        "",
        "libsvm",
        "libsvm:",
        "libsvm:a,b,c",
        "libsvm:a,,",
        "libsvm:a,n_features=0",
        "libsvm:a,n_features=x",
        "mnist",
        "mnist:",
        "digits:3",
        "synthetic-logistic:",
        "synthetic-logistic:100",
        "synthetic-logistic:1,5",
        "synthetic-logistic:100,0",
        "synthetic-logistic:100,2.5",
        "synthetic-logistic:100,5,2",
    ],
)
def test_parse_data_spec_invalid(text: str) -> None:
    message = f"The 'data' parameter of lowcomm run must be {DATA_ALLOWED}. Got {text!r}."
    with pytest.raises(InvalidConfigError, match=f"^{re.escape(message)}$"):
        parse_data_spec(text)


@pytest.mark.parametrize(
    ("text", "expected", "canonical"),
    [
        ("iid", PartitionSpec("iid"), "iid"),
        ("sorted", PartitionSpec("sorted"), "sorted"),
        ("classes:2", PartitionSpec("classes", 2.0), "classes:2"),
        ("dirichlet:0.1", PartitionSpec("dirichlet", 0.1), "dirichlet:0.1"),
        ("dirichlet:1e-3", PartitionSpec("dirichlet", 0.001), "dirichlet:0.001"),
        ("size-skew:1.5", PartitionSpec("size-skew", 1.5), "size-skew:1.5"),
        ("size-skew:0", PartitionSpec("size-skew", 0.0), "size-skew:0"),
    ],
)
def test_parse_partition_spec_valid(text: str, expected: PartitionSpec, canonical: str) -> None:
    spec = parse_partition_spec(text)
    assert spec == expected
    assert str(spec) == canonical


@pytest.mark.parametrize(
    ("text", "allowed"),
    [
        ("shuffle", "one of iid, sorted, classes:K, dirichlet:ALPHA, size-skew:POWER, contiguous"),
        ("iid:2", "one of iid, sorted, classes:K, dirichlet:ALPHA, size-skew:POWER, contiguous"),
        ("", "one of iid, sorted, classes:K, dirichlet:ALPHA, size-skew:POWER, contiguous"),
        ("classes", "classes:K with an integer K >= 1"),
        ("classes:0", "classes:K with an integer K >= 1"),
        ("classes:1.5", "classes:K with an integer K >= 1"),
        ("classes:-2", "classes:K with an integer K >= 1"),
        ("dirichlet:0", "dirichlet:ALPHA with a finite number ALPHA > 0"),
        ("dirichlet:-1", "dirichlet:ALPHA with a finite number ALPHA > 0"),
        ("dirichlet:abc", "dirichlet:ALPHA with a finite number ALPHA > 0"),
        ("dirichlet:inf", "dirichlet:ALPHA with a finite number ALPHA > 0"),
        ("dirichlet:nan", "dirichlet:ALPHA with a finite number ALPHA > 0"),
        ("size-skew:-0.5", "size-skew:POWER with a finite number POWER >= 0"),
        ("size-skew:", "size-skew:POWER with a finite number POWER >= 0"),
    ],
)
def test_parse_partition_spec_invalid(text: str, allowed: str) -> None:
    message = f"The 'partition' parameter of lowcomm run must be {allowed}. Got {text!r}."
    with pytest.raises(InvalidConfigError, match=f"^{re.escape(message)}$"):
        parse_partition_spec(text)
