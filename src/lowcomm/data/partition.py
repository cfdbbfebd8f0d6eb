"""Partitions of a data set's examples among workers (iid and the usual non-iid schemes).

Every scheme draws from ``Streams(seed).numpy("partition")`` only, so a partition is a pure
function of (labels, number of workers, scheme, seed). Every example goes to exactly one worker
and every worker gets at least one example; a scheme that would leave a worker empty raises
:class:`InvalidConfigError` instead of failing later. Labels are ``y[n]``, or ``y[n, ...]`` for
sequence targets, which only the schemes that ignore labels (``iid``, ``size-skew``,
``contiguous``) accept.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from lowcomm.core.errors import InvalidConfigError
from lowcomm.core.rng import Streams
from lowcomm.core.validate import at_least
from lowcomm.data.spec import PartitionSpec

_OWNER = "lowcomm run"
_NONEMPTY = "a scheme that gives every worker at least one example"
MAX_DRAWS = 100
"""How many Dirichlet splits ``min_size`` may draw before it gives up."""


def partition(y: np.ndarray, n_workers: int, spec: PartitionSpec, seed: int) -> list[np.ndarray]:
    """Split the indices ``0..len(y)-1`` into one int64 index array per worker.

    Schemes (``spec.kind``):

    - ``iid``: a random permutation cut into contiguous near-equal pieces (sizes differ by <= 1).
    - ``sorted``: the examples sorted by label (ties in random order) and cut into contiguous
      near-equal pieces, so each worker sees one or a few adjacent labels.
    - ``classes:K``: the classes, in random order, are dealt round-robin to K * n_workers slots:
      worker w holds the K distinct classes at slots w*K .. w*K+K-1 (mod the number of classes
      C). Each class's examples, shuffled, are cut into near-equal pieces, one per worker
      holding it. Every worker thus sees at most K classes (exactly K unless a class has fewer
      examples than holders). Requires K <= C <= K * n_workers.
    - ``dirichlet:ALPHA``: per class, worker proportions p ~ Dirichlet(ALPHA * 1); the class's
      shuffled examples are cut into pieces of sizes proportional to p (largest remainders).
      ``dirichlet:ALPHA,min_size=M``: the whole split is drawn again from the same generator
      until every worker holds at least M examples (as flwr-datasets' ``DirichletPartitioner``
      does), at most :data:`MAX_DRAWS` times. The first draw is the one without ``min_size``,
      so adding it changes nothing where every worker already had M examples.
    - ``size-skew:POWER``: a random permutation cut into pieces of sizes proportional to
      (w + 1) ** POWER (largest remainders); labels stay iid.
    - ``contiguous``: the examples in their loaded order cut into contiguous near-equal pieces
      (no randomness): worker w holds a consecutive block, e.g. its own token streams of a
      ``text:`` data set (:mod:`lowcomm.data.text`).

    Each worker's indices are in the order the scheme produced them (not sorted).

    Raises:
        InvalidConfigError: n_workers < 1, more workers than examples, a ``classes:K`` outside
            its range for these labels, a scheme that reads labels on sequence targets, a
            worker left without examples, or a ``min_size`` that no draw met.
    """
    at_least("partition", "n_workers", n_workers, 1)
    y = np.asarray(y)
    if y.ndim != 1 and spec.kind not in _LABEL_FREE:
        allowed = f"{', '.join(_LABEL_FREE)} for sequence targets (labels y[n, ...])"
        raise InvalidConfigError("partition", _OWNER, allowed, str(spec))
    if n_workers > len(y):
        detail = f"{n_workers} workers on {len(y)} examples"
        raise InvalidConfigError("partition", _OWNER, f"{_NONEMPTY} ({detail})", str(spec))
    rng = Streams(seed).numpy("partition")
    parts = [p.astype(np.int64) for p in _SCHEMES[spec.kind](y, n_workers, spec, rng)]
    for w, part in enumerate(parts):
        if part.size == 0:
            detail = f"worker {w} has no examples with {n_workers} workers on {len(y)} examples"
            raise InvalidConfigError("partition", _OWNER, f"{_NONEMPTY} ({detail})", str(spec))
    return parts


def partition_summary(
    y: np.ndarray, parts: list[np.ndarray], n_classes: int
) -> dict[str, list[int] | list[list[int]]]:
    """Every worker's shard size and class histogram, as JSON-ready lists of ints.

    For sequence targets ``y[n, ...]`` the histogram counts the target tokens.
    """
    return {
        "sizes": [int(p.size) for p in parts],
        "class_counts": [np.bincount(y[p].ravel(), minlength=n_classes).tolist() for p in parts],
    }


def _apportion(total: int, weights: np.ndarray) -> np.ndarray:
    """Integer counts summing to ``total``, proportional to ``weights`` (largest remainders).

    Ties in the remainders go to the lower index, so equal weights give ``np.array_split`` sizes.
    """
    raw = total * weights / weights.sum()
    counts = np.floor(raw).astype(np.int64)
    extra = total - int(counts.sum())
    counts[np.argsort(counts - raw, kind="stable")[:extra]] += 1
    return counts


def _param(spec: PartitionSpec) -> float:
    """The scheme's parameter; specs come from :func:`parse_partition_spec`, which sets it."""
    assert spec.param is not None, f"{spec.kind} needs a parameter"
    return spec.param


def _cut(order: np.ndarray, counts: np.ndarray) -> list[np.ndarray]:
    """``order`` cut into consecutive pieces of the given sizes."""
    return np.split(order, np.cumsum(counts)[:-1])


def _iid(
    y: np.ndarray, n_workers: int, spec: PartitionSpec, rng: np.random.Generator
) -> list[np.ndarray]:
    """Random near-equal pieces."""
    return _cut(rng.permutation(len(y)), _apportion(len(y), np.ones(n_workers)))


def _contiguous(
    y: np.ndarray, n_workers: int, spec: PartitionSpec, rng: np.random.Generator
) -> list[np.ndarray]:
    """Consecutive near-equal pieces of the loaded order."""
    return _cut(np.arange(len(y)), _apportion(len(y), np.ones(n_workers)))


def _sorted(
    y: np.ndarray, n_workers: int, spec: PartitionSpec, rng: np.random.Generator
) -> list[np.ndarray]:
    """Label-sorted near-equal pieces."""
    perm = rng.permutation(y.size)
    order = perm[np.argsort(y[perm], kind="stable")]
    return _cut(order, _apportion(y.size, np.ones(n_workers)))


def _size_skew(
    y: np.ndarray, n_workers: int, spec: PartitionSpec, rng: np.random.Generator
) -> list[np.ndarray]:
    """Random pieces with sizes proportional to (w + 1) ** POWER."""
    weights = (np.arange(n_workers) + 1.0) ** _param(spec)
    return _cut(rng.permutation(len(y)), _apportion(len(y), weights))


def _dirichlet(
    y: np.ndarray, n_workers: int, spec: PartitionSpec, rng: np.random.Generator
) -> list[np.ndarray]:
    """Dirichlet splits drawn until every shard holds ``spec.min_size`` examples (one if 0)."""
    floor = spec.min_size
    if floor * n_workers > y.size:
        allowed = f"a min_size with {n_workers} * min_size <= {y.size} (the examples)"
        raise InvalidConfigError("partition", _OWNER, allowed, str(spec))
    for _ in range(MAX_DRAWS if floor else 1):
        parts = _dirichlet_draw(y, n_workers, _param(spec), rng)
        if min(p.size for p in parts) >= floor:
            return parts
    allowed = (
        f"a min_size that one of {MAX_DRAWS} draws meets (none gave every worker {floor} "
        "examples; lower min_size or raise ALPHA)"
    )
    raise InvalidConfigError("partition", _OWNER, allowed, str(spec))


def _dirichlet_draw(
    y: np.ndarray, n_workers: int, alpha: float, rng: np.random.Generator
) -> list[np.ndarray]:
    """Per-class Dirichlet(ALPHA) proportions over workers."""
    shards: list[list[np.ndarray]] = [[] for _ in range(n_workers)]
    for label in np.unique(y):
        members = rng.permutation(np.flatnonzero(y == label))
        share = rng.dirichlet(np.full(n_workers, alpha))
        for w, piece in enumerate(_cut(members, _apportion(members.size, share))):
            shards[w].append(piece)
    return [np.concatenate(s) for s in shards]


def _classes(
    y: np.ndarray, n_workers: int, spec: PartitionSpec, rng: np.random.Generator
) -> list[np.ndarray]:
    """K distinct classes per worker, each class split among the workers holding it."""
    k = int(_param(spec))
    labels = np.unique(y)
    n_classes = labels.size
    if k > n_classes:
        allowed = f"classes:K with K <= {n_classes} (the number of classes)"
        raise InvalidConfigError("partition", _OWNER, allowed, str(spec))
    if k * n_workers < n_classes:
        allowed = f"classes:K with {n_workers} * K >= {n_classes} (every class needs a worker)"
        raise InvalidConfigError("partition", _OWNER, allowed, str(spec))
    slot_class = rng.permutation(n_classes)[np.arange(k * n_workers) % n_classes]
    shards: list[list[np.ndarray]] = [[] for _ in range(n_workers)]
    for c, label in enumerate(labels):
        holders = np.flatnonzero(slot_class == c) // k
        members = rng.permutation(np.flatnonzero(y == label))
        pieces = _cut(members, _apportion(members.size, np.ones(holders.size)))
        for w, piece in zip(holders, pieces, strict=True):
            shards[w].append(piece)
    return [np.concatenate(s) for s in shards]


_Scheme = Callable[[np.ndarray, int, PartitionSpec, np.random.Generator], list[np.ndarray]]
_SCHEMES: dict[str, _Scheme] = {
    "iid": _iid,
    "sorted": _sorted,
    "classes": _classes,
    "dirichlet": _dirichlet,
    "size-skew": _size_skew,
    "contiguous": _contiguous,
}
_LABEL_FREE = ("iid", "size-skew", "contiguous")
