"""Pickled run state read as data: checkpoints and the worker state that ranks exchange.

``torch.load(weights_only=True)`` builds tensors and plain containers only, plus the globals
allowed for the load. :func:`load_trusted` first lists the globals a file refers to, without
unpickling anything, refuses any outside :func:`trusted_global`, and allows exactly those:
a crafted pickle whose ``__reduce__`` calls ``os.system`` is refused before it is built.
"""

from __future__ import annotations

import importlib
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

NUMPY_GLOBALS = ("numpy.dtype", "numpy.ndarray", "numpy._core.multiarray._reconstruct")


def trusted_global(name: str, modules: Sequence[str] = ()) -> bool:
    """Whether run state may name ``name``.

    Trusted: lowcomm's own types, NumPy arrays and dtypes, and what the ``modules`` of a
    third-party algorithm define (its state classes).
    """
    own = name.startswith(("lowcomm.", "numpy.dtypes.")) or name in NUMPY_GLOBALS
    return own or name.rpartition(".")[0] in modules


def referred_globals(source: Path | io.BytesIO, modules: Sequence[str] = ()) -> list[Any]:
    """The classes and functions ``source`` refers to, read without unpickling anything.

    Raises:
        ValueError: it refers to something outside :func:`trusted_global`.
    """
    names = torch.serialization.get_unsafe_globals_in_checkpoint(source)
    refused = [name for name in names if not trusted_global(name, modules)]
    if refused:
        raise ValueError(f"it refers to {', '.join(refused)}, which run state never holds")
    found: list[Any] = [getattr(np.dtypes, name) for name in np.dtypes.__all__]  # dtype classes
    for name in names:
        module, _, attribute = name.rpartition(".")
        found.append(getattr(importlib.import_module(module), attribute))
    return found


def load_trusted(
    source: Path | io.BytesIO, modules: Sequence[str] = (), device: torch.device | None = None
) -> Any:
    """``torch.load`` with ``weights_only=True`` and only the trusted globals ``source`` names."""
    allowed = referred_globals(source, modules)
    if isinstance(source, io.BytesIO):
        source.seek(0)
    with torch.serialization.safe_globals(allowed):
        return torch.load(source, weights_only=True, map_location=device)


def dumps(value: Any) -> torch.Tensor:
    """``value`` as the bytes ``torch.save`` writes, in a uint8 tensor (to send between ranks)."""
    buffer = io.BytesIO()
    torch.save(value, buffer)
    return torch.frombuffer(bytearray(buffer.getvalue()), dtype=torch.uint8)


def loads(data: torch.Tensor, modules: Sequence[str] = ()) -> Any:
    """The value :func:`dumps` encoded, read as data by :func:`load_trusted`."""
    return load_trusted(io.BytesIO(data.numpy().tobytes()), modules)
