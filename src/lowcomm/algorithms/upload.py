"""What a worker sends, compressed: the ``compressor`` and ``error_feedback`` settings.

Every algorithm that uploads one vector per worker (a gradient, a model update) sends
``C(v)`` for the compressor ``C`` its settings name (:mod:`lowcomm.compress.spec`), with error
feedback when asked (the worker keeps v - decompress(C(v)) and adds it to its next vector).
The compressor's state is the worker's state; the aggregator reads the dense rows back from
the payload, whose bytes the ledger bills.
"""

from __future__ import annotations

from typing import Any

import torch

from lowcomm.algorithms.base import Context
from lowcomm.algorithms.settings import setting
from lowcomm.compress.base import Compressor, DrawKey
from lowcomm.compress.spec import COMPRESSORS, CompressorSpec
from lowcomm.core.constraints import Flag, Text
from lowcomm.core.messages import AnyPayload
from lowcomm.problems.base import Problem

COMPRESSOR = Text(COMPRESSORS, CompressorSpec)
"""The constraint of every ``compressor`` setting."""
COMPRESSOR_MEANING = "what each upload is compressed by"


def compressor_setting(default: str = "identity") -> str:
    """The declared ``compressor`` setting of an algorithm's config."""
    return setting(default, COMPRESSOR, COMPRESSOR_MEANING)


def error_feedback_setting(default: bool = False) -> bool:
    """The declared ``error_feedback`` setting of an algorithm's config."""
    return setting(default, Flag(), "keep what compression dropped and add it to the next upload")


def compressor_of(config: Any, problem: Problem) -> Compressor:
    """The compressor ``config.compressor`` names, for the problem's parameter tensors."""
    spec = CompressorSpec(config.compressor)
    return spec.build(problem.segments, config.error_feedback)


def init_memory(config: Any, problem: Problem, workers: torch.Tensor) -> Any:
    """The compressor state of ``workers`` (their worker state), on the problem's device."""
    compressor = compressor_of(config, problem)
    return compressor.init(workers.shape[0], problem.dim, problem.dtype, problem.device)


def compress(
    config: Any, problem: Problem, values: torch.Tensor, memory: Any, ctx: Context
) -> tuple[AnyPayload, Any]:
    """The payload for ``values[w, d]`` of the workers in ``ctx`` and their new state."""
    key = DrawKey(ctx.streams, ctx.workers, ctx.round)
    payload, memory = compressor_of(config, problem).compress(values, memory, key)
    return payload, memory


def received(payload: AnyPayload) -> torch.Tensor:
    """The dense rows ``[w, d]`` an upload stands for."""
    to_dense = getattr(payload, "to_dense", None)
    if to_dense is None:
        raise TypeError(f"{type(payload).__name__} is not a vector payload")
    rows: torch.Tensor = to_dense()
    return rows
