"""Word-level language-modelling text (WikiText style) as examples of next-token prediction.

Reading follows ``data.Corpus`` of PyTorch's ``word_language_model`` example, which the
CD-GraB authors train on (../shared/papers/cd-grab.md, section 5): a file is UTF-8 text (plain,
``.gz`` or ``.bz2``); every line, blank ones included, is split on white space and ends with the
token ``<eos>``. The vocabulary is the training file's words in order of first appearance, with
``<unk>`` added at the end when the file lacks it; a test word outside it becomes ``<unk>``.
(The example builds one vocabulary from its train, valid and test files together, so its test
set has no unknown word.)

Layout, as the example's ``batchify`` and ``get_batch``: the ids of a file, cut to a multiple of
S, are S streams of L = len // S consecutive tokens (stream s holds tokens s*L .. s*L+L-1);
each stream is cut into C = (L - 1) // T chunks of T (``bptt``) positions, position t of chunk c
reading token c*T + t and predicting token c*T + t + 1. The example's last, shorter chunk is
dropped, so that every example has T positions and the mean of the per-example losses is the
mean token loss. An example is G consecutive streams at one chunk: inputs ``X[G, T]`` (token ids
as floats, exact below 2^24 words) and targets ``y[G, T]`` (int64). Examples are numbered
group-major and chunk-minor (example g*C + c holds streams g*G .. g*G+G-1 at chunk c), so
``--partition contiguous`` with S/G workers gives worker w its own G streams, chunks in order.

The CD-GraB LSTM setting (16 streams, 4 per worker, per-minibatch mode) is ``streams=16,
group=4`` with 4 workers, ``contiguous``, and ``sgd`` with ``batch_size=1`` and
``unit=minibatch``: one unit is one worker's minibatch, its 4 streams at one bptt chunk
(:mod:`lowcomm.experiments.reproduce.lstm`). Without a test file, ``test_fraction`` of the
examples (chunks) is held out by the seeded split.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lowcomm.core.errors import DataError
from lowcomm.data.dataset import Dataset, TrainTest
from lowcomm.data.loaders import file_stem, read_bytes, split_train_test
from lowcomm.data.spec import DataSpec

EOS = "<eos>"
UNK = "<unk>"


def read_words(path: str | Path) -> list[str]:
    """The tokens of a text file: each line's words, then ``<eos>``.

    Raises:
        DataError: the file is missing or empty, or not UTF-8 (with the line).
    """
    data = read_bytes(Path(path))
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        problem = f"found byte 0x{data[err.start]:02x}; expected UTF-8 text"
        raise DataError(path, problem, line=line) from err
    if not text:
        raise DataError(path, "found an empty file; expected lines of text")
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    if lines[-1] == "":  # the newline ending the last line starts no new line
        lines.pop()
    return [word for line in lines for word in (*line.split(), EOS)]


def vocabulary(words: list[str]) -> dict[str, int]:
    """Word ids in order of first appearance, ``<unk>`` last unless the words hold it."""
    ids = {word: i for i, word in enumerate(dict.fromkeys(words))}
    ids.setdefault(UNK, len(ids))
    return ids


def encode(words: list[str], ids: dict[str, int]) -> np.ndarray:
    """The int64 ids of ``words``; a word outside ``ids`` gets the id of ``<unk>``."""
    unknown = ids[UNK]
    return np.array([ids.get(word, unknown) for word in words], dtype=np.int64)


def batchify(
    tokens: np.ndarray, streams: int, bptt: int, group: int
) -> tuple[np.ndarray, np.ndarray]:
    """Inputs ``X[n, group, bptt]`` (float64) and targets ``y[n, group, bptt]`` (int64).

    The layout of the module docstring: n = (streams / group) * C examples, group-major.

    Raises:
        ValueError: fewer than ``streams * (bptt + 1)`` tokens (no whole chunk), or ``group``
            does not divide ``streams``.
    """
    if streams % group:
        raise ValueError(f"group={group} does not divide streams={streams}")
    length = tokens.size // streams
    chunks = (length - 1) // bptt
    if chunks < 1:
        needed = streams * (bptt + 1)
        raise ValueError(f"found {tokens.size} tokens; expected at least {needed}")
    data = tokens[: streams * length].reshape(streams, length)
    inputs = data[:, : chunks * bptt]
    targets = data[:, 1 : chunks * bptt + 1]

    def examples(a: np.ndarray) -> np.ndarray:
        grouped = a.reshape(streams // group, group, chunks, bptt).transpose(0, 2, 1, 3)
        return grouped.reshape(-1, group, bptt)

    return examples(inputs).astype(np.float64), examples(targets)


def load_text_pair(
    train_path: str | Path,
    test_path: str | Path | None = None,
    streams: int = 16,
    bptt: int = 35,
    group: int = 1,
    seed: int = 0,
    test_fraction: float = 0.25,
) -> TrainTest:
    """A training file and its test file as next-token examples (the module docstring).

    Both files share the training file's vocabulary (``n_classes`` words). Without a test
    file, a random ``test_fraction`` of the training examples is the test set
    (``Streams(seed).numpy("split")``).

    Raises:
        DataError: a file is missing, empty, not UTF-8, or too short for one chunk.
    """
    words = read_words(train_path)
    ids = vocabulary(words)
    train = _examples(train_path, encode(words, ids), len(ids), streams, bptt, group)
    if test_path is None:
        return split_train_test(train, test_fraction, seed)
    test_tokens = encode(read_words(test_path), ids)
    return TrainTest(train, _examples(test_path, test_tokens, len(ids), streams, bptt, group))


def _examples(
    path: str | Path, tokens: np.ndarray, vocab: int, streams: int, bptt: int, group: int
) -> Dataset:
    """The examples of one file, or its :class:`DataError` when it is too short."""
    try:
        X, y = batchify(tokens, streams, bptt, group)
    except ValueError as err:
        raise DataError(path, f"{err} (streams={streams}, bptt={bptt})") from err
    return Dataset(file_stem(path), X, y, vocab)


def load_text(spec: DataSpec, seed: int, test_fraction: float) -> TrainTest:
    """The data set of a parsed ``text:`` string."""
    return load_text_pair(
        spec.path, spec.test_path, spec.streams, spec.bptt, spec.group, seed, test_fraction
    )
