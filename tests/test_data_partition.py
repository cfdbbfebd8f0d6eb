import hashlib
import json
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lowcomm.core.errors import InvalidConfigError
from lowcomm.data.partition import partition, partition_summary
from lowcomm.data.spec import PartitionSpec, parse_partition_spec

SCHEMES = [
    "iid",
    "sorted",
    "classes:1",
    "classes:2",
    "classes:3",
    "dirichlet:0.05",
    "dirichlet:1",
    "dirichlet:100",
    "size-skew:0",
    "size-skew:1",
    "size-skew:2",
]
EMPTY = "must be a scheme that gives every worker at least one example"


@st.composite
def problems(draw: st.DrawFn) -> tuple[np.ndarray, int, str, int]:
    n_classes = draw(st.integers(1, 6))
    labels = draw(st.lists(st.integers(0, n_classes - 1), min_size=1, max_size=120))
    n_workers = draw(st.integers(1, 12))
    scheme = draw(st.sampled_from(SCHEMES))
    seed = draw(st.integers(0, 2**31))
    return np.array(labels, dtype=np.int64), n_workers, scheme, seed


def _expected_errors(y: np.ndarray, n_workers: int, scheme: str) -> str:
    """The partial messages a scheme may raise for these inputs (regex alternation)."""
    k = int(scheme.split(":")[1]) if scheme.startswith("classes") else 0
    n_classes = np.unique(y).size
    options = [re.escape(EMPTY)]
    if k > n_classes:
        options.append(re.escape(f"classes:K with K <= {n_classes} (the number of classes)"))
    if k * n_workers < n_classes:
        options.append(re.escape(f"classes:K with {n_workers} * K >= {n_classes}"))
    return "|".join(options)


@settings(max_examples=300, deadline=None)
@given(problems())
def test_every_example_goes_to_exactly_one_worker(problem: tuple) -> None:
    y, n_workers, scheme, seed = problem
    spec = parse_partition_spec(scheme)
    try:
        parts = partition(y, n_workers, spec, seed)
    except InvalidConfigError as err:
        assert re.search(_expected_errors(y, n_workers, scheme), str(err)), str(err)
        return
    assert len(parts) == n_workers
    assert all(p.dtype == np.int64 and p.ndim == 1 and p.size > 0 for p in parts)
    assert np.array_equal(np.sort(np.concatenate(parts)), np.arange(y.size))


@settings(max_examples=100, deadline=None)
@given(problems())
def test_iid_sorted_and_flat_size_skew_never_fail_and_are_balanced(problem: tuple) -> None:
    y, n_workers, _, seed = problem
    n_workers = min(n_workers, y.size)
    for scheme in ("iid", "sorted", "size-skew:0"):
        sizes = [p.size for p in partition(y, n_workers, parse_partition_spec(scheme), seed)]
        assert max(sizes) - min(sizes) <= 1
        assert sum(sizes) == y.size


@settings(max_examples=100, deadline=None)
@given(problems(), st.integers(1, 4))
def test_classes_k_gives_at_most_k_classes_per_worker(problem: tuple, k: int) -> None:
    y, n_workers, _, seed = problem
    try:
        parts = partition(y, n_workers, PartitionSpec("classes", float(k)), seed)
    except InvalidConfigError:
        return
    assert all(np.unique(y[p]).size <= k for p in parts)


@settings(max_examples=50, deadline=None)
@given(problems())
def test_same_seed_same_partition(problem: tuple) -> None:
    y, n_workers, scheme, seed = problem
    spec = parse_partition_spec(scheme)
    try:
        first = partition(y, n_workers, spec, seed)
    except InvalidConfigError:
        return
    second = partition(y, n_workers, spec, seed)
    assert all(np.array_equal(a, b) for a, b in zip(first, second, strict=True))


def test_seed_changes_the_partition() -> None:
    y = np.arange(100) % 4
    a = partition(y, 4, PartitionSpec("iid"), seed=0)
    b = partition(y, 4, PartitionSpec("iid"), seed=1)
    assert not all(np.array_equal(p, q) for p, q in zip(a, b, strict=True))


def test_iid_cut_sizes() -> None:
    parts = partition(np.zeros(10, dtype=np.int64), 3, PartitionSpec("iid"), seed=0)
    assert [p.size for p in parts] == [4, 3, 3]


def test_sorted_gives_label_sorted_contiguous_shards() -> None:
    y = np.repeat([2, 0, 1], 6)
    parts = partition(y, 3, PartitionSpec("sorted"), seed=3)
    assert [np.unique(y[p]).tolist() for p in parts] == [[0], [1], [2]]


def test_classes_1_gives_each_worker_one_class_and_covers_all_classes() -> None:
    y = np.repeat(np.arange(4), 25)
    parts = partition(y, 8, PartitionSpec("classes", 1.0), seed=0)
    held = [np.unique(y[p]).tolist() for p in parts]
    assert all(len(h) == 1 for h in held)
    assert sorted({h[0] for h in held}) == [0, 1, 2, 3]
    assert sorted(p.size for p in parts) == [12, 12, 12, 12, 13, 13, 13, 13]


def test_classes_k_gives_exactly_k_classes_when_classes_are_large() -> None:
    y = np.repeat(np.arange(10), 50)
    parts = partition(y, 20, PartitionSpec("classes", 2.0), seed=5)
    assert all(np.unique(y[p]).size == 2 for p in parts)


def test_size_skew_sizes_follow_the_power_rule() -> None:
    parts = partition(np.zeros(100, dtype=np.int64), 4, PartitionSpec("size-skew", 1.0), seed=0)
    assert [p.size for p in parts] == [10, 20, 30, 40]


def test_dirichlet_large_alpha_is_near_iid_and_small_alpha_is_skewed() -> None:
    y = np.repeat(np.arange(2), 2000)
    flat = partition(y, 4, PartitionSpec("dirichlet", 1000.0), seed=0)
    assert all(abs(np.mean(y[p]) - 0.5) < 0.1 for p in flat)
    skewed = partition(y, 2, PartitionSpec("dirichlet", 0.05), seed=0)
    assert max(abs(np.mean(y[p]) - 0.5) for p in skewed) > 0.3


def test_empty_worker_message_is_exact() -> None:
    y = np.zeros(10, dtype=np.int64)
    message = (
        "The 'partition' parameter of lowcomm run must be a scheme that gives every worker at "
        "least one example (worker 0 has no examples with 3 workers on 10 examples). "
        "Got 'size-skew:10'."
    )
    with pytest.raises(InvalidConfigError, match=f"^{re.escape(message)}$"):
        partition(y, 3, parse_partition_spec("size-skew:10"), seed=0)


def test_empty_worker_with_small_dirichlet_alpha() -> None:
    y = np.arange(100) % 10
    pattern = (
        r"^The 'partition' parameter of lowcomm run must be a scheme that gives every worker "
        r"at least one example \(worker \d+ has no examples with 20 workers on 100 examples\)\. "
        r"Got 'dirichlet:0\.01'\.$"
    )
    with pytest.raises(InvalidConfigError, match=pattern):
        partition(y, 20, parse_partition_spec("dirichlet:0.01"), seed=0)


def test_more_workers_than_examples_message_is_exact() -> None:
    message = (
        "The 'partition' parameter of lowcomm run must be a scheme that gives every worker at "
        "least one example (5 workers on 4 examples). Got 'iid'."
    )
    with pytest.raises(InvalidConfigError, match=f"^{re.escape(message)}$"):
        partition(np.zeros(4, dtype=np.int64), 5, PartitionSpec("iid"), seed=0)


@pytest.mark.parametrize(
    ("n_workers", "k", "allowed"),
    [
        (4, 4, "classes:K with K <= 3 (the number of classes)"),
        (1, 2, "classes:K with 1 * K >= 3 (every class needs a worker)"),
    ],
)
def test_classes_out_of_range_for_the_labels(n_workers: int, k: int, allowed: str) -> None:
    message = f"The 'partition' parameter of lowcomm run must be {allowed}. Got 'classes:{k}'."
    with pytest.raises(InvalidConfigError, match=f"^{re.escape(message)}$"):
        partition(np.arange(30) % 3, n_workers, PartitionSpec("classes", float(k)), seed=0)


def test_zero_workers_is_rejected() -> None:
    message = "The 'n_workers' parameter of partition must be an integer >= 1. Got 0."
    with pytest.raises(InvalidConfigError, match=f"^{re.escape(message)}$"):
        partition(np.zeros(4, dtype=np.int64), 0, PartitionSpec("iid"), seed=0)


def test_partition_summary_is_json_ready() -> None:
    y = np.array([0, 1, 1, 2, 2, 2])
    parts = [np.array([0, 3], dtype=np.int64), np.array([1, 2, 4, 5], dtype=np.int64)]
    summary = partition_summary(y, parts, n_classes=4)
    assert summary == {"sizes": [2, 4], "class_counts": [[1, 0, 1, 0], [0, 2, 2, 0]]}
    assert json.loads(json.dumps(summary)) == summary


def _digest(parts: list[np.ndarray]) -> str:
    """A hash of the shards' sizes and indices, in order."""
    h = hashlib.sha256()
    for part in parts:
        h.update(np.int64(part.size).tobytes())
        h.update(part.astype(np.int64).tobytes())
    return h.hexdigest()


# Assignments computed before min_size existed (labels: default_rng(7).integers(0, 10, 3000)).
PINNED = [
    ("dirichlet:0.5", 8, 0, "4e6a740fa051ec05fbbe782700041352c91dca0a3c090fb05a4f394c46f872f4"),
    ("dirichlet:0.1", 5, 3, "d7fd3cb86e365d8dda1b9bdefaa28bb832c6bf4ab7bc9aad72195d36271d46b5"),
    ("dirichlet:100", 16, 1, "a5a156ff2716297d7ccd70183c9e650596eb31fc61c3f47f321887eaa49aeb9a"),
]


@pytest.mark.parametrize(("scheme", "n_workers", "seed", "digest"), PINNED)
@pytest.mark.parametrize("suffix", ["", ",min_size=1"])
def test_dirichlet_assignments_are_those_of_before_min_size(
    scheme: str, n_workers: int, seed: int, digest: str, suffix: str
) -> None:
    y = np.random.default_rng(7).integers(0, 10, 3000)
    parts = partition(y, n_workers, parse_partition_spec(scheme + suffix), seed)
    assert _digest(parts) == digest


def test_min_size_redraws_a_split_that_left_a_worker_empty() -> None:
    y = np.arange(60) % 3
    with pytest.raises(InvalidConfigError, match="worker 1 has no examples"):
        partition(y, 6, parse_partition_spec("dirichlet:0.3"), seed=0)
    parts = partition(y, 6, parse_partition_spec("dirichlet:0.3,min_size=1"), seed=0)
    assert sorted(p.size for p in parts) == [1, 1, 7, 13, 13, 25]
    floor = partition(y, 6, parse_partition_spec("dirichlet:0.3,min_size=5"), seed=0)
    assert sorted(p.size for p in floor) == [5, 7, 7, 13, 13, 15]
    assert np.array_equal(np.sort(np.concatenate(floor)), np.arange(60))


def test_min_size_above_the_examples_per_worker_is_refused() -> None:
    message = (
        "The 'partition' parameter of lowcomm run must be a min_size with 6 * min_size <= 60 "
        "(the examples). Got 'dirichlet:0.3,min_size=11'."
    )
    with pytest.raises(InvalidConfigError, match=f"^{re.escape(message)}$"):
        partition(np.arange(60) % 3, 6, parse_partition_spec("dirichlet:0.3,min_size=11"), 0)


def test_min_size_that_no_draw_meets_names_it() -> None:
    message = (
        "The 'partition' parameter of lowcomm run must be a min_size that one of 100 draws "
        "meets (none gave every worker 10 examples; lower min_size or raise ALPHA). "
        "Got 'dirichlet:0.01,min_size=10'."
    )
    with pytest.raises(InvalidConfigError, match=f"^{re.escape(message)}$"):
        partition(np.arange(60) % 3, 6, parse_partition_spec("dirichlet:0.01,min_size=10"), 0)


@settings(max_examples=150, deadline=None)
@given(
    labels=st.lists(st.integers(0, 4), min_size=2, max_size=80),
    alpha=st.sampled_from([0.05, 0.3, 1.0, 10.0]),
    n_workers=st.integers(1, 8),
    floor=st.integers(1, 10),
    seed=st.integers(0, 2**31),
)
def test_dirichlet_min_size_never_yields_a_smaller_shard(
    labels: list[int], alpha: float, n_workers: int, floor: int, seed: int
) -> None:
    y = np.array(labels, dtype=np.int64)
    floor = min(floor, y.size // n_workers) or 1
    n_workers = min(n_workers, y.size)
    spec = parse_partition_spec(f"dirichlet:{alpha},min_size={floor}")
    try:
        parts = partition(y, n_workers, spec, seed)
    except InvalidConfigError as err:
        assert "min_size that one of 100 draws meets" in str(err), str(err)
        return
    assert min(p.size for p in parts) >= floor
    assert np.array_equal(np.sort(np.concatenate(parts)), np.arange(y.size))
    assert _digest(parts) == _digest(partition(y, n_workers, spec, seed))


def test_loose_min_size_always_succeeds_on_a_balanced_set() -> None:
    y = np.arange(400) % 4
    for seed in range(20):
        parts = partition(y, 8, parse_partition_spec("dirichlet:0.5,min_size=10"), seed)
        assert min(p.size for p in parts) >= 10


@pytest.mark.parametrize(
    ("text", "spec"),
    [
        ("dirichlet:0.5,min_size=10", PartitionSpec("dirichlet", 0.5, 10)),
        ("dirichlet:2,min_size=1", PartitionSpec("dirichlet", 2.0, 1)),
        ("dirichlet:0.5", PartitionSpec("dirichlet", 0.5)),
    ],
)
def test_min_size_spec_round_trips(text: str, spec: PartitionSpec) -> None:
    assert parse_partition_spec(text) == spec and str(spec) == text


@pytest.mark.parametrize(
    ("text", "allowed"),
    [
        ("dirichlet:0.5,min_size=0", "dirichlet:ALPHA,min_size=M with an integer M >= 1"),
        ("dirichlet:0.5,min_size=", "dirichlet:ALPHA,min_size=M with an integer M >= 1"),
        ("dirichlet:0.5,size=3", "dirichlet:ALPHA,min_size=M with an integer M >= 1"),
        ("dirichlet:0.5,min_size=2.5", "dirichlet:ALPHA,min_size=M with an integer M >= 1"),
        ("dirichlet:-1,min_size=2", "dirichlet:ALPHA with a finite number ALPHA > 0"),
        ("classes:2,min_size=3", "classes:K with an integer K >= 1"),
    ],
)
def test_malformed_min_size_is_refused(text: str, allowed: str) -> None:
    message = f"The 'partition' parameter of lowcomm run must be {allowed}. Got {text!r}."
    with pytest.raises(InvalidConfigError, match=f"^{re.escape(message)}$"):
        parse_partition_spec(text)
