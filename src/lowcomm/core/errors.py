"""The library's exceptions: one base, each carrying a message meant for the user."""

from __future__ import annotations

from pathlib import Path


class LowcommError(Exception):
    """Base of every error lowcomm raises on purpose; the CLI prints its message, no traceback."""


class InvalidConfigError(LowcommError, ValueError):
    """A parameter is outside its allowed range or set; raised at construction."""

    def __init__(self, name: str, owner: str, allowed: str, got: object) -> None:
        super().__init__(f"The '{name}' parameter of {owner} must be {allowed}. Got {got!r}.")
        self.name = name


class DataError(LowcommError, ValueError):
    """A data file is missing or malformed: names the file, the line and what was expected."""

    def __init__(self, path: str | Path, problem: str, line: int | None = None) -> None:
        where = f"{path}, line {line}" if line is not None else f"{path}"
        super().__init__(f"{where}: {problem}")
        self.path = str(path)
        self.line = line


class DivergenceError(LowcommError, RuntimeError):
    """The training loss became NaN or infinite; the history up to that round is kept."""

    def __init__(self, round_: int, loss: float, checkpoint: bool = False) -> None:
        kept = "and the last good checkpoint were" if checkpoint else "was"
        super().__init__(
            f"Training diverged at round {round_}: the training loss is {loss}. "
            f"The history up to this round {kept} kept; try a smaller step size."
        )
        self.round = round_
        self.loss = loss
