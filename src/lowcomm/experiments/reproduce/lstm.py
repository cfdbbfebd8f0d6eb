"""The CD-GraB authors' LSTM language model on WikiText-2 (per-minibatch mode) as one run config.

Settings (../shared/papers/cd-grab.md, section 5): embedding 32, two LSTM layers of 32, untied
decoder, no dropout (``lstm-lm``, :mod:`lowcomm.problems.lstm`); bptt 35, 16 token streams, 4 per
worker, 4 workers (``text:...,streams=16,group=4`` with ``contiguous``, :mod:`lowcomm.data.text`);
one unit per step and worker, that worker's 4 streams at one chunk (``batch_size=1``,
``unit=minibatch``); SGD lr 5.0, momentum 0.9, lr x0.1 every 10 epochs, no clipping, no weight
decay. ``train_loss`` is the mean token cross-entropy over the training set, ``test_metric`` the
test perplexity.

Departures: the train split is not in ../shared/datasets, so the run trains on ``valid.txt``
(217,646 tokens, 13,777 words) and tests on ``test.txt`` with that vocabulary (unknown test words
become ``<unk>``); every 35-token chunk starts from a zero hidden state (the authors carry it);
each stream's last, shorter chunk is dropped; the test set is cut like the training set.
"""

from __future__ import annotations

from pathlib import Path

from lowcomm.data.text import read_words
from lowcomm.experiments.config import RunConfig, make_config

ORDERS = ("d-rr", "cd-grab")
STREAMS, GROUP, BPTT, WORKERS = 16, 4, 35, 4
LR, MOMENTUM, DECAY, DECAY_EPOCHS = 5.0, 0.9, 0.1, 10


def wikitext_spec(root: Path) -> str:
    """The ``--data`` string: ``valid.txt`` to train on, ``test.txt`` to test on."""
    folder = root / "wikitext-2"
    files = f"{folder / 'valid.txt'},{folder / 'test.txt'}"
    return f"text:{files},streams={STREAMS},bptt={BPTT},group={GROUP}"


def steps_per_epoch(root: Path) -> int:
    """Chunks per stream, cut to an even count as an epoch of ordered SGD is (388 here)."""
    tokens = len(read_words(root / "wikitext-2" / "valid.txt"))
    chunks = (tokens // STREAMS - 1) // BPTT
    return chunks // 2 * 2


def lstm_config(order: str, seed: int, epochs: int, root: Path) -> RunConfig:
    """One run: ``order`` (``d-rr``, ``cd-grab``, ...), evaluated once per epoch."""
    steps = steps_per_epoch(root)
    options = {
        "lr": f"step:{LR},{DECAY},{DECAY_EPOCHS * steps}",
        "momentum": MOMENTUM,
        "batch_size": 1,
        "unit": "minibatch",
    }
    values = {"algorithm": "sgd", "order": order, "options": options, "seed": seed}
    values |= {"data": wikitext_spec(root), "partition": "contiguous", "workers": WORKERS}
    values |= {"model": "lstm-lm", "hidden": (32, 32), "l2": 0.0}
    return make_config(values | {"epochs": epochs, "eval_every": steps})
