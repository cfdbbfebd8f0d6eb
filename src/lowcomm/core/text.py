"""Text read from a user's file, with an error that names the line of a byte that is not UTF-8."""

from __future__ import annotations

from pathlib import Path

from lowcomm.core.errors import DataError


def utf8_text(path: Path, data: bytes) -> str:
    """``data``, the content of ``path``, as UTF-8 text without a byte-order mark.

    Raises:
        DataError: a byte is not UTF-8; names its line.
    """
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        problem = f"found byte 0x{data[err.start]:02x}; expected UTF-8 text"
        raise DataError(path, problem, line=line) from err
