"""One run from a config to its result: checkpoints, ``resume``, ``replay`` and saving.

The Python API (:func:`lowcomm.run`) and the command line both come here. A run with ``out``
writes ``history.csv``, ``history.parquet``, ``run.json`` (last) and, for asynchronous
algorithms, ``ledger.csv``; without ``out`` nothing is written. With ``checkpoint_every`` a
``run.json`` without summary is written first, so a killed run can be resumed from ``out``
alone, and only from its own checkpoints. ``out`` is locked while the run writes it and holds
this run only (:mod:`lowcomm.experiments.run_folder`). SIGINT or SIGTERM ends the run after
the round under way, saved with ``run.json`` marked interrupted, then raises
:class:`~lowcomm.experiments.interrupts.Interrupted` (:mod:`lowcomm.experiments.interrupts`).
"""

from __future__ import annotations

import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from lowcomm.algorithms.registry import registered
from lowcomm.core.device import run_device
from lowcomm.core.errors import DataError, DivergenceError, InvalidConfigError
from lowcomm.engines.asynchrony import event_order
from lowcomm.engines.ranks import RankError
from lowcomm.engines.session import (
    CHECKPOINT_NAME,
    Events,
    RunResult,
    RunState,
    load_checkpoint,
)
from lowcomm.experiments.config import (
    RESUME_MAY_CHANGE,
    RunConfig,
    make_config,
    trajectory_settings,
)
from lowcomm.experiments.interrupts import SIGNALS, Interrupted, SignalStop, stop_on_signals
from lowcomm.experiments.kept import note
from lowcomm.experiments.models import Objects, model_state
from lowcomm.experiments.results import (
    LEDGER_CSV,
    RUN_JSON,
    read_json,
    save_run,
    summary,
    write_json,
)
from lowcomm.experiments.run_folder import RUN_FILES, check_new, check_out, hold, remove
from lowcomm.experiments.runner import UNBOUNDED, Prepared, execute, metadata, prepare


@dataclass(frozen=True)
class Result:
    """A finished run.

    Attributes:
        history: one row per evaluation, the columns of ``history.csv``.
        model: the final model, a ``state_dict`` of the run's module (``{"params": x}`` for the
            built-in linear models).
        params: the final parameters as one flat vector (on the CPU, whatever the run's device).
        ledger: one row per (round, worker) with activity: messages, bytes and oracle calls.
        config: the validated settings of the run.
        metadata: what ``run.json`` holds besides the summary (versions, data, partition).
        divergence: why the run stopped early, or None.
    """

    history: pd.DataFrame
    model: dict[str, Any]
    params: torch.Tensor
    ledger: pd.DataFrame
    config: RunConfig
    metadata: dict[str, Any]
    divergence: DivergenceError | None

    @property
    def summary(self) -> dict[str, Any]:
        """The final totals and metrics, as in ``run.json``."""
        return summary(self.history, self.divergence)


def result_of(prepared: Prepared, run: RunResult) -> Result:
    """The :class:`Result` of an engine's run of ``prepared`` (its model moved to the CPU)."""
    params = run.model.cpu()
    return Result(
        history=run.history,
        model=model_state(prepared.problem, params, prepared.data),
        params=params,
        ledger=run.ledger.records(),
        config=prepared.config,
        metadata=metadata(prepared),
        divergence=run.divergence,
    )


def previous_config(out: Path) -> dict[str, Any]:
    """The config of the run saved in ``out`` ({} if none)."""
    path = out / RUN_JSON
    return dict(read_json(path).get("config", {})) if path.is_file() else {}


def _check_unchanged(previous: dict[str, Any], config: RunConfig) -> None:
    """Refuse a resume that changes the trajectory (any other setting of the saved run)."""
    before, now = make_config(previous).model_dump(), config.model_dump()
    changed = [key for key in now if key not in RESUME_MAY_CHANGE and now[key] != before[key]]
    if changed:
        allowed = (
            f"unchanged from OUT/run.json except {', '.join(RESUME_MAY_CHANGE)} "
            "(start a new run to change the others)"
        )
        raise InvalidConfigError(changed[0], "lowcomm run --resume", allowed, now[changed[0]])


def _checkpoint(out: Path, config: RunConfig) -> RunState:
    """The state saved in ``out`` on the run's device, checked before anything is written.

    ``config`` must equal ``OUT/run.json`` but for :data:`RESUME_MAY_CHANGE`, the checkpoint
    must come from a run with the same trajectory settings, and not be past ``config.rounds``.
    """
    path = out / CHECKPOINT_NAME
    if not path.is_file():
        raise DataError(path, "no checkpoint to resume from (save one with --checkpoint-every N)")
    _check_unchanged(previous_config(out), config)
    device = run_device(config.device, config.engine)
    try:
        modules = (registered(config.algorithm).factory.__module__,)  # its state classes
        state = load_checkpoint(path, device, modules)
    except Exception as exc:
        reason = str(exc) or type(exc).__name__
        raise DataError(path, f"not a readable lowcomm checkpoint ({reason})") from None
    _check_same_run(path, state.settings, trajectory_settings(config))
    if state.round > config.rounds:
        allowed = f"a number >= {state.round} (the checkpoint's round)"
        raise InvalidConfigError("rounds", "lowcomm run --resume", allowed, config.rounds)
    return state


def _check_same_run(path: Path, saved: dict[str, Any], now: dict[str, Any]) -> None:
    """Refuse a checkpoint written by a run with other trajectory settings (before any write).

    Checkpoints from before settings were saved (``saved`` empty) are not checked.
    """
    changed = [key for key in saved if saved[key] != now.get(key)]
    if changed:
        listed = "; ".join(f"{key}: {saved[key]!r} there, {now.get(key)!r} here" for key in changed)
        raise DataError(path, f"was written by another run ({listed})")


def _events(folder: Path, prepared: Prepared, resume: bool) -> Events:
    """The order of the updates of the asynchronous run saved in ``folder`` (its ledger)."""
    if resume or prepared.config.checkpoint_every:
        allowed = "given without --resume and --checkpoint-every (a replay is not checkpointed)"
        raise InvalidConfigError("--replay", "lowcomm run", allowed, str(folder))
    if prepared.algorithm.synchronous:
        allowed = "used with an asynchronous algorithm (synchronous rounds have no order)"
        raise InvalidConfigError("--replay", "lowcomm run", allowed, prepared.algorithm.name)
    path = folder / LEDGER_CSV
    if not path.is_file():
        raise DataError(path, "not found (an asynchronous lowcomm run saves its ledger there)")
    return event_order(pd.read_csv(path))


def _needs_out(config: RunConfig, resume: bool) -> None:
    """Checkpoints and resumes live in a folder."""
    if config.checkpoint_every:
        raise InvalidConfigError("out", "the run", "a folder with checkpoint_every > 0", None)
    if resume:
        raise InvalidConfigError("out", "the run", "the folder of the run to resume", None)


def _start(out: Path, meta: dict[str, Any], resume: bool) -> None:
    """Before a checkpointed run: ``run.json`` without summary, and no stale checkpoint."""
    out.mkdir(parents=True, exist_ok=True)
    if not resume:
        (out / CHECKPOINT_NAME).unlink(missing_ok=True)
    write_json(out / RUN_JSON, {**meta, "summary": None})


def run_config(
    config: RunConfig,
    objects: Objects | None = None,
    out: Path | None = None,
    resume: bool = False,
    replay: Path | None = None,
    progress: bool = False,
    overwrite: bool = False,
) -> Result | None:
    """Run ``config`` (with ``objects``); save it in ``out`` if given.

    ``resume``: continue from ``out``'s checkpoint (the settings must equal the saved ones
    except :data:`RESUME_MAY_CHANGE`). ``overwrite``: replace the run saved in ``out`` (refused
    otherwise). ``replay``: an asynchronous run follows the update order of the run saved in
    that folder. Everything is validated before the first round. Training examples removed up
    front (:mod:`lowcomm.experiments.kept`) are announced in one line on stderr, whatever
    ``progress`` says.

    Returns:
        The result; None on torchdist ranks other than 0.

    Raises:
        Interrupted: SIGINT or SIGTERM stopped the run (saved in ``out`` as it was then).
    """
    rank0 = config.engine == "simulate" or os.environ.get("RANK", "0") == "0"
    mine = out if rank0 else None  # the folder this process writes: rank 0's on torchdist
    if out is None:
        _needs_out(config, resume)
    else:
        check_out(out)
    if mine is not None:
        check_new(mine, overwrite, resume)
    state = _checkpoint(out, config) if resume and out is not None else None
    prepared = prepare(config, objects)
    events = None if replay is None else _events(replay, prepared, resume)
    if rank0 and prepared.removed.ids.size:
        print(note(prepared.removed, prepared.data.train.n), file=sys.stderr)
    with hold(mine), stop_on_signals(SIGNALS if rank0 else (signal.SIGINT,)) as stop:
        if mine is not None:
            check_new(mine, overwrite, resume)  # again: another run may have ended meanwhile
            remove(mine, RUN_FILES if overwrite else ())
        run = _run(prepared, (out, mine), resume, state, events, progress, stop)
    if run is None:
        return None
    if run.stopped_at is not None and stop.received is not None:
        rounds = None if prepared.rounds >= UNBOUNDED else prepared.rounds
        resumable = out is not None and bool(config.checkpoint_every)
        raise Interrupted(stop.received, run.stopped_at, rounds, out, resumable)
    return result_of(prepared, run)


def _run(
    prepared: Prepared,
    folders: tuple[Path | None, Path | None],
    resume: bool,
    state: RunState | None,
    events: Events | None,
    progress: bool,
    stop: SignalStop,
) -> RunResult | None:
    """Run ``prepared`` and save it; ``folders``: the run's ``out`` and the one this rank writes.

    A run that ``stop`` ended early is saved with ``run.json`` saying where and why.
    """
    (out, mine), config, meta = folders, prepared.config, metadata(prepared)
    if mine is not None and config.checkpoint_every:
        _start(mine, meta, resume)
    try:
        run = execute(prepared, progress, out, state, events, stop)
    except RankError as failure:  # a torchdist rank failed: keep the run so far
        if mine is not None and failure.partial is not None:
            meta["failed"] = {"round": failure.round, "error": failure.problem}
            save_run(mine, failure.partial, meta, ledger=not prepared.algorithm.synchronous)
            failure.saved = mine
        raise
    if run is None or mine is None:
        return run
    if run.stopped_at is not None and stop.received is not None:
        name = signal.Signals(stop.received).name
        meta["interrupted"] = {"signal": name, "round": run.stopped_at}
    save_run(mine, run, meta, ledger=not prepared.algorithm.synchronous)
    if not (resume or config.checkpoint_every):
        (mine / CHECKPOINT_NAME).unlink(missing_ok=True)
    return run
