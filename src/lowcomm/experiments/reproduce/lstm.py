"""The CD-GraB authors' LSTM language model on WikiText-2 (per-minibatch mode) as one run config.

The settings (cd-grab spec, section 5) and the departures (trained on ``valid.txt``, tested on
``test.txt``) are described in ``notes/cdgrab.md``, experiment D.
"""

from __future__ import annotations

import functools
from typing import Any

from lowcomm.experiments.config import RunConfig, make_config
from lowcomm.experiments.runner import prepare

STREAMS, GROUP, BPTT, WORKERS = 16, 4, 35, 4
LR, MOMENTUM, DECAY, DECAY_EPOCHS = 5.0, 0.9, 0.1, 10


def settings(files: str, order: str = "d-rr", seed: int = 0) -> dict[str, Any]:
    """A run's settings at a constant step size; ``files``: ``text:TRAIN,TEST`` (valid, test)."""
    options = {"lr": LR, "momentum": MOMENTUM, "batch_size": 1, "unit": "minibatch"}
    values = {"algorithm": "sgd", "order": order, "options": options, "seed": seed}
    values |= {"data": f"{files},streams={STREAMS},bptt={BPTT},group={GROUP}"}
    values |= {"partition": "contiguous", "workers": WORKERS}
    return values | {"model": "lstm-lm", "hidden": (32, 32), "l2": 0.0}


@functools.cache
def steps_per_epoch(files: str) -> int:
    """Steps in one epoch of ordered SGD, as the engine counts them (388 on WikiText-2)."""
    return prepare(make_config(settings(files) | {"epochs": 1})).rounds


def lstm_config(order: str, seed: int, epochs: int, files: str) -> RunConfig:
    """One run: ``order`` (``d-rr``, ``cd-grab``, ...), evaluated at the start and the end."""
    steps = steps_per_epoch(files)
    values = settings(files, order, seed)
    values["options"]["lr"] = f"step:{LR},{DECAY},{DECAY_EPOCHS * steps}"
    return make_config(values | {"epochs": epochs, "eval_every": epochs * steps})
