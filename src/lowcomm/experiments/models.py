"""The objective of a run: a built-in model, a user's ``nn.Module`` and loss, or an import path.

``model`` is ``auto`` (PCA for unlabelled data, logistic for two classes, softmax otherwise),
``logistic``, ``softmax``, ``mlp``, ``lenet``, ``lstm-lm`` (an LSTM language model over the
data's vocabulary, :mod:`lowcomm.problems.lstm`: embedding of width ``hidden[0]``, one LSTM layer
per entry of ``hidden``, initialised from the run's seed), ``pca``, or
``package.module:factory``: a callable that returns an ``nn.Module``, called with no arguments.
``loss`` (for modules) is ``cross-entropy``, ``mse`` (against the one-hot label) or
``package.module:function``, a ``loss(outputs, y)`` of any reduction. An ``nn.Module`` or loss
given to :func:`lowcomm.run` travels in :class:`Objects` instead, and the config names it
``in-memory``.
"""

from __future__ import annotations

import importlib
import math
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from lowcomm.core.errors import InvalidConfigError
from lowcomm.data.dataset import Dataset, TrainTest
from lowcomm.data.inputs import Supplied
from lowcomm.experiments.config import IN_MEMORY, RunConfig
from lowcomm.problems.base import Problem
from lowcomm.problems.logistic import LogisticRegression
from lowcomm.problems.lstm import language_model
from lowcomm.problems.pca import StreamingPCA
from lowcomm.problems.softmax import SoftmaxRegression
from lowcomm.problems.torch_model import (
    Loss,
    TorchModel,
    cross_entropy,
    lenet,
    mlp,
    per_example,
    squared_error,
)

DTYPES = {"float32": torch.float32, "float64": torch.float64}
LINEAR = ("logistic", "softmax", "pca")
MEMORY_SHARE = 8
"""The workers' copies of the model may take at most 1/MEMORY_SHARE of the device's memory.

An algorithm holds several ``[workers, d]`` tensors (models, gradients, messages): ``sgd`` over
8 workers on a LIBSVM file with 10^7 features peaks at 2.1 GB, about 5 times the 320 MB of
the copies above the 0.4 GB of an empty run. A run whose copies take more than an eighth of
the memory cannot be trusted to finish, so it is refused before anything of that size exists.
"""
_OWNER = "the run config"
_LOSSES: dict[str, Loss] = {"cross-entropy": cross_entropy, "mse": squared_error}


@dataclass(frozen=True)
class Objects:
    """What a config cannot name: data, a module and a loss given as Python objects."""

    data: Supplied | None = None
    module: nn.Module | None = None
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None


def import_object(path: str, setting: str) -> Any:
    """The object at ``package.module:name``; a clear error if it does not import.

    The working folder is searched first, as ``python -m`` does, so a user's ``models.py``
    next to their data is found by the ``lowcomm`` command too.
    """
    module_name, _, attribute = path.partition(":")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        found = getattr(importlib.import_module(module_name), attribute)
    except Exception as exc:
        allowed = f"an importable package.module:name ({type(exc).__name__}: {exc})"
        raise InvalidConfigError(setting, _OWNER, allowed, path) from None
    return found


def _factory_module(path: str) -> nn.Module:
    """Call the factory at ``path``; it must return an ``nn.Module``."""
    factory = import_object(path, "model")
    made = factory() if callable(factory) else factory
    if not isinstance(made, nn.Module):
        allowed = "a callable returning a torch.nn.Module"
        raise InvalidConfigError("model", _OWNER, allowed, f"{path} -> {made!r}")
    return made


def _loss(config: RunConfig, objects: Objects) -> Loss:
    """The per-example loss named by ``config.loss`` or given in ``objects``."""
    if config.loss == IN_MEMORY:
        if objects.loss is None:
            raise InvalidConfigError("loss", _OWNER, "given as a function", IN_MEMORY)
        return per_example(objects.loss)
    if config.loss in _LOSSES:
        return _LOSSES[config.loss]
    return per_example(import_object(config.loss, "loss"))


def _module(config: RunConfig, objects: Objects, data: TrainTest) -> nn.Module:
    """The network of a module-based run (``mlp``, ``lenet``, a factory or an object)."""
    train = data.train
    n_features = int(np.prod(train.feature_shape))
    if config.model == IN_MEMORY:
        if objects.module is None:
            raise InvalidConfigError("model", _OWNER, "given as a module", IN_MEMORY)
        return objects.module
    if config.model == "mlp":
        return mlp(n_features, config.hidden, train.n_classes)
    if config.model == "lenet":
        channels, side = image_shape(train)
        return lenet(train.n_classes, channels, side)
    if config.model == "lstm-lm":
        hidden = config.hidden
        if not hidden:
            allowed = "at least one width for lstm-lm (hidden[0] is also its embedding width)"
            raise InvalidConfigError("hidden", _OWNER, allowed, list(hidden))
        return language_model(train.n_classes, hidden[0], hidden, seed=config.seed)
    return _factory_module(config.model)


def image_shape(data: Dataset) -> tuple[int, int]:
    """The channels C and side S of ``data`` as ``lenet`` images ``[C, S, S]`` (S >= 4).

    Examples of shape ``[C, S, S]``, ``[S, S]`` or ``[S * S]`` (one channel) are images.

    Raises:
        InvalidConfigError: the examples are not square images of side 4 or more.
    """
    shape = data.feature_shape
    channels = shape[0] if len(shape) == 3 else 1
    pixels = int(np.prod(shape)) // channels
    side = math.isqrt(pixels)
    square = side * side == pixels and (len(shape) == 1 or shape[-1] == shape[-2])
    if not (square and side >= 4 and len(shape) <= 3):
        found = "x".join(map(str, shape))
        allowed = (
            f"a model for non-image data such as mlp or softmax ({data.name}: examples of "
            f"shape {found}, not square images; lenet needs S x S features or C x S x S, S >= 4)"
        )
        raise InvalidConfigError("model", _OWNER, allowed, "lenet")
    return channels, side


def lenet_input(data: TrainTest) -> TrainTest:
    """Both sets with their examples as images ``[C, S, S]`` (:func:`image_shape`)."""
    channels, side = image_shape(data.train)

    def shaped(part: Dataset) -> Dataset:
        X = part.X.reshape(-1, channels, side, side)
        return Dataset(part.name, X, part.y, part.n_classes)

    return TrainTest(shaped(data.train), shaped(data.test))


def check_memory(problem: Problem, workers: int, data: str) -> None:
    """Refuse a model whose ``workers`` copies exceed :data:`MEMORY_SHARE` of the memory.

    The memory is that of the problem's device (the machine's RAM on the CPU).
    """
    itemsize = torch.empty((), dtype=problem.dtype).element_size()
    need, total = problem.dim * workers * itemsize, device_memory(problem.device)
    if need * MEMORY_SHARE > total:
        gib = 2**30
        allowed = (
            f"data whose model fits in memory: the model has {problem.dim:,} parameters, so the "
            f"{workers} workers' copies take {need / gib:.1f} GiB, over 1/{MEMORY_SHARE} of the "
            f"{total / gib:.1f} GiB memory (check the feature indices of the data, or use "
            "fewer --workers)"
        )
        raise InvalidConfigError("data", _OWNER, allowed, data)


def device_memory(device: torch.device) -> int:
    """Bytes of memory of ``device``: the GPU's own, or the machine's physical memory."""
    if device.type == "cuda":
        return int(torch.cuda.get_device_properties(device).total_memory)
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def auto_model(data: str, n_classes: int) -> str:
    """``--model auto``: logistic for 2 classes, softmax for more, PCA for ``synthetic-pca``.

    Other data with a single class are refused: they are a classification set whose labels
    went wrong far more often than a request for streaming PCA (ask with ``--model pca``).
    """
    if n_classes == 1 and not data.startswith("synthetic-pca"):
        allowed = "data with two or more classes (for streaming PCA give --model pca)"
        raise InvalidConfigError("data", _OWNER, allowed, f"{data} (one class only)")
    return {1: "pca", 2: "logistic"}.get(n_classes, "softmax")


def make_problem(
    config: RunConfig,
    data: TrainTest,
    objects: Objects | None = None,
    device: torch.device | None = None,
) -> Problem:
    """The objective for these data on ``device``: built-in, or the module and loss of the run.

    Refused when the workers' copies of its model cannot fit in memory (:func:`check_memory`).
    """
    problem = _problem(config, data, objects or Objects(), device)
    check_memory(problem, config.workers, config.data)
    return problem


def _problem(
    config: RunConfig, data: TrainTest, objects: Objects, device: torch.device | None
) -> Problem:
    """The objective of :func:`make_problem`."""
    train, dtype = data.train, DTYPES[config.dtype]
    n_features = int(np.prod(train.feature_shape))
    model = config.model
    if model == "auto":
        model = auto_model(config.data, train.n_classes)
    if model in LINEAR and config.loss != "cross-entropy":
        allowed = f"cross-entropy for the built-in {model} model (other losses need a module)"
        raise InvalidConfigError("loss", _OWNER, allowed, config.loss)
    if model == "pca":
        return StreamingPCA(n_features, dtype, device)
    if model == "logistic":
        if train.n_classes != 2:
            raise InvalidConfigError(
                "model", _OWNER, "softmax, mlp or lenet for multiclass data", model
            )
        return LogisticRegression(
            n_features, config.l2, config.intercept, dtype=dtype, device=device
        )
    if model == "softmax":
        return SoftmaxRegression(
            n_features, train.n_classes, config.l2, config.intercept, dtype=dtype, device=device
        )
    module, loss = _module(config, objects, data), _loss(config, objects)
    return TorchModel(module, loss, config.l2, dtype, device)


def model_state(problem: Problem, params: torch.Tensor, data: TrainTest) -> dict[str, Any]:
    """The final model: a module's ``state_dict``, or ``{"params": x}`` for built-in models.

    ``params`` are on the host; so is the module's ``state_dict`` (the module's own device).
    """
    if isinstance(problem, TorchModel):
        X = torch.as_tensor(data.train.X, dtype=problem.dtype, device=params.device)
        return problem.state_dict(params, X)
    return {"params": params}
