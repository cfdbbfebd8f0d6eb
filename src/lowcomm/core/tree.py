"""Operations on states: NamedTuples whose leaves are tensors with a leading worker axis.

Engines slice worker states by worker (to host a group, or to run one worker of an
asynchronous loop) and put them back, without knowing what the state holds.
"""

from __future__ import annotations

from typing import Any, TypeVar

import torch

State = TypeVar("State")


def _map(fn: Any, state: Any, *others: Any) -> Any:
    if isinstance(state, torch.Tensor):
        return fn(state, *others)
    if isinstance(state, tuple) and hasattr(state, "_fields"):
        return type(state)(*(_map(fn, *leaves) for leaves in zip(state, *others, strict=True)))
    if state is None:
        return None
    raise TypeError(f"worker state leaves must be tensors or NamedTuples, not {type(state)}")


def take(state: State, index: torch.Tensor) -> State:
    """The rows ``index`` of every leaf."""
    result: State = _map(lambda leaf: leaf[index], state)
    return result


def put(state: State, index: torch.Tensor, rows: State) -> State:
    """A copy of ``state`` whose rows ``index`` are replaced by ``rows``."""

    def replace(leaf: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
        out = leaf.clone()
        out[index] = new
        return out

    result: State = _map(replace, state, rows)
    return result


def write(state: Any, index: torch.Tensor, rows: Any) -> None:
    """Write ``rows`` into the rows ``index`` of ``state``, leaf by leaf, in place (no copy)."""
    if isinstance(state, torch.Tensor):
        state[index] = rows
    elif state is not None:
        for leaf, new in zip(state, rows, strict=True):
            write(leaf, index, new)


def to(state: State, device: torch.device) -> State:
    """Every leaf on ``device`` (a leaf already there is kept, not copied)."""
    result: State = _map(lambda leaf: leaf.to(device), state)
    return result


def concat(states: list[State]) -> State:
    """Stack groups of workers back into one state, in the given order."""
    result: State = _map(lambda *leaves: torch.cat(leaves), *states)
    return result


def select(mask: torch.Tensor, new: State, old: State) -> State:
    """Row-wise choice: rows where ``mask[w]`` holds come from ``new``, the others from ``old``."""

    def pick(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.where(mask.reshape(-1, *([1] * (a.dim() - 1))), a, b)

    result: State = _map(pick, new, old)
    return result
