"""One run of a study, saved to its folder, or with ``--resume`` read back from it.

With ``--resume``, every run whose folder holds a finished run of exactly the same config (same
lowcomm version, :func:`finished_run`, with its ledger) is read back instead of computed again.
The simulation is deterministic, so a resumed study gives the numbers a fresh one would; the
version string does not change with every edit, so resume only across runs of the same code.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

import lowcomm
from lowcomm.experiments.config import RunConfig
from lowcomm.experiments.results import (
    HISTORY_PARQUET,
    LEDGER_CSV,
    RUN_JSON,
    finished_run,
    read_json,
    save_run,
)
from lowcomm.experiments.runner import execute, metadata, prepare


@dataclass(frozen=True)
class SavedRun:
    """A study's run as saved on disk: its folder, its history, whether it diverged."""

    folder: Path
    history: pd.DataFrame
    diverged: bool

    def ledger(self) -> pd.DataFrame:
        """The ledger's per-(round, worker) records (``ledger.csv``)."""
        return pd.read_csv(self.folder / LEDGER_CSV)


def run_or_resume(config: RunConfig, folder: Path, progress: bool, resume: bool) -> SavedRun:
    """Run ``config`` on the simulate engine and save it with its ledger in ``folder``.

    With ``resume``, a finished run of the same config already there is read back instead.
    """
    saved = finished_run(folder, config, lowcomm.__version__) and (folder / LEDGER_CSV).is_file()
    if not (resume and saved):
        prepared = prepare(config)
        result = execute(prepared, progress)
        assert result is not None, "the simulate engine always returns a result"
        save_run(folder, result, metadata(prepared), ledger=True)
    summary = read_json(folder / RUN_JSON)["summary"]
    history = pd.read_parquet(folder / HISTORY_PARQUET)
    return SavedRun(folder, history, summary["divergence"] is not None)
