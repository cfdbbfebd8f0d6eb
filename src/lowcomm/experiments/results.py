"""A run's outputs on disk: ``history.csv``, ``history.parquet``, ``run.json`` (and ``ledger.csv``).

``run.json`` holds the run's metadata (:func:`lowcomm.experiments.runner.metadata`) plus a
``summary`` of the final state. It is strict JSON: non-finite numbers (an infinite bandwidth,
the NaN loss of a diverged run) are written as the strings ``"inf"``, ``"-inf"`` and ``"nan"``.
``run.json`` is written last, so a folder with one holds a finished run (:func:`finished_run`),
unless it says ``interrupted`` (the signal and the round a stopped run ended at).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from lowcomm.core.errors import DataError, InvalidConfigError
from lowcomm.core.ledger import COUNTERS
from lowcomm.engines.session import RunResult
from lowcomm.experiments.config import RunConfig, make_config

HISTORY_CSV = "history.csv"
HISTORY_PARQUET = "history.parquet"
RUN_JSON = "run.json"
LEDGER_CSV = "ledger.csv"


def summary(history: pd.DataFrame, divergence: Exception | None) -> dict[str, Any]:
    """The final state of a run: rounds done, cumulative totals, final metrics, divergence."""
    last = history.iloc[-1]
    totals = {name: int(last[name]) for name in (*COUNTERS, "sync_rounds")}
    return {
        "rounds": int(last["round"]),
        **totals,
        "sim_time": float(last["sim_time"]),
        "wall_time": float(last["wall_time"]),
        "train_loss": float(last["train_loss"]),
        "test_metric": float(last["test_metric"]),
        "divergence": None if divergence is None else str(divergence),
    }


def _strict(value: Any) -> Any:
    """``value`` with every non-finite float replaced by its string form (strict JSON)."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {key: _strict(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_strict(item) for item in value]
    return value


def write_json(path: Path, content: dict[str, Any]) -> None:
    """Write ``content`` as indented strict JSON."""
    path.write_text(json.dumps(_strict(content), indent=2, allow_nan=False) + "\n")


def save_run(out: Path, result: RunResult, meta: dict[str, Any], ledger: bool = False) -> None:
    """Write a run's files to ``out``, ``run.json`` last.

    The files: the history (CSV and Parquet), with ``ledger`` the ledger's per-(round, worker)
    records (``ledger.csv``), then ``run.json`` (``meta`` plus the summary). The folder is created
    if needed; files already there are replaced.
    """
    out.mkdir(parents=True, exist_ok=True)
    (out / RUN_JSON).unlink(missing_ok=True)
    result.history.to_csv(out / HISTORY_CSV, index=False)
    result.history.to_parquet(out / HISTORY_PARQUET, index=False)
    if ledger:
        result.ledger.records().to_csv(out / LEDGER_CSV, index=False)
    write_json(out / RUN_JSON, {**meta, "summary": summary(result.history, result.divergence)})


def finished_run(folder: Path, config: RunConfig, version: str) -> bool:
    """Whether ``folder`` holds a finished run of ``config`` saved by lowcomm ``version``.

    The saved config is read back through :class:`RunConfig`, so a setting added since (absent
    from the file) counts at its default; a run that a signal interrupted, or that a failed
    rank ended, is not finished. This
    is what ``lowcomm reproduce --resume`` reads back instead of running again.
    """
    path = folder / RUN_JSON
    if not path.is_file() or not (folder / HISTORY_PARQUET).is_file():
        return False
    try:
        meta = read_json(path)
        saved = make_config(meta.get("config", {}))
    except (DataError, InvalidConfigError):
        return False
    same_version = meta.get("versions", {}).get("lowcomm") == version
    same_config = saved.model_dump() == config.model_dump()
    return same_version and same_config and not (meta.get("interrupted") or meta.get("failed"))


def read_json(path: Path) -> dict[str, Any]:
    """The table in a JSON file written by :func:`write_json`.

    Raises:
        DataError: the file is missing or is not a JSON table.
    """
    if not path.is_file():
        raise DataError(path, "file not found")
    try:
        content = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DataError(path, f"not valid JSON: {exc.msg}", exc.lineno) from None
    if not isinstance(content, dict):
        raise DataError(path, "expected a JSON object at the top level")
    return content


def load_history(folder: Path) -> tuple[pd.DataFrame, dict[str, Any]]:
    """A saved run's history (Parquet preferred, CSV otherwise) and its ``run.json`` ({} if none).

    Raises:
        DataError: ``folder`` is missing or holds neither ``history.parquet`` nor ``history.csv``.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(folder, "no such folder")
    if (folder / HISTORY_PARQUET).is_file():
        history = pd.read_parquet(folder / HISTORY_PARQUET)
    elif (folder / HISTORY_CSV).is_file():
        history = pd.read_csv(folder / HISTORY_CSV)
    else:
        raise DataError(
            folder, f"no {HISTORY_PARQUET} or {HISTORY_CSV} here (not a lowcomm run folder)"
        )
    meta_path = folder / RUN_JSON
    return history, read_json(meta_path) if meta_path.is_file() else {}


def stack_seeds(histories: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """Several seeds' histories in one frame, on the rounds that every seed recorded.

    A ``bytes`` column (``bytes_up + bytes_down``) is added; a diverged seed's history stops
    at its divergence, so it cuts the others to that length.
    """
    frames = [h.assign(bytes=h["bytes_up"] + h["bytes_down"]) for h in histories]
    common = set.intersection(*(set(f["round"]) for f in frames))
    stacked = pd.concat(frames, ignore_index=True)
    return stacked[stacked["round"].isin(common)]


def mean_history(histories: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """The mean over seeds of every column, round by round (see :func:`stack_seeds`)."""
    return stack_seeds(histories).groupby("round", as_index=False).mean()
